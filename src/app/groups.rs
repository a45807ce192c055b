//! Slack user groups (`S…`) in roles: members asked of Slack (`usergroups.users.list`),
//! kept for a while on the app's clock.
//!
//! The cache is only a cache: an answer Slack gave within the last [`TTL`] seconds is
//! used again, nothing else is remembered, and each process asks on its own. When Slack
//! cannot be asked (no bot token, a missing `usergroups:read` scope, Slack down) the group
//! grants nothing and the caller says why.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::chat::Directory;
use crate::clock::SharedClock;

/// How long a group's members are reused (seconds).
pub const TTL: i64 = 300;

pub struct Groups {
    directory: Option<Arc<dyn Directory>>,
    clock: SharedClock,
    cache: Mutex<HashMap<String, (i64, Vec<String>)>>,
}

impl Groups {
    pub fn new(directory: Option<Arc<dyn Directory>>, clock: SharedClock) -> Groups {
        Groups {
            directory,
            clock,
            cache: Mutex::default(),
        }
    }

    /// The group's members, or why Slack could not say.
    pub async fn members(&self, group: &str) -> Result<Vec<String>, String> {
        let now = self.clock.unix();
        if let Some((at, members)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            && now - at < TTL
        {
            return Ok(members.clone());
        }
        let Some(d) = &self.directory else {
            return Err(format!(
                "the user group {group} cannot be read: Slack's Web API is not configured (SLACK_BOT_TOKEN)"
            ));
        };
        match d.group_members(group).await {
            Ok(members) => {
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(group.to_string(), (now, members.clone()));
                Ok(members)
            }
            Err(e) => {
                tracing::warn!(group, error = %e, "user group not read");
                Err(format!(
                    "the user group {group} could not be read from Slack ({e}), so it grants nothing"
                ))
            }
        }
    }

    /// Whether `user` is in any of `groups`; the reasons of groups that could not be read.
    pub async fn any_has(&self, groups: &[String], user: &str) -> (bool, Vec<String>) {
        let mut failed = Vec::new();
        for g in groups {
            match self.members(g).await {
                Ok(m) if m.iter().any(|u| u == user) => return (true, failed),
                Ok(_) => {}
                Err(why) => failed.push(why),
            }
        }
        (false, failed)
    }
}
