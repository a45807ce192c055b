//! The policy file (`CORRAL_POLICY`, TOML; SPEC §8): who may run what, who is an admin.
//!
//! Unknown keys and bad values stop start-up with a message naming the file and key.
//! With no policy file everyone may run everything and nobody is an admin, except that
//! `--force` is then allowed to everyone (there is nobody else to ask); this is written
//! in the README.
//!
//! `[[approval]]`, `[lock]`, `[[freeze]]` and `[[digest]]` are parsed and validated here
//! so a policy written for them is checked today; the scheduler and approval flow that
//! act on them are separate work (see ARCHITECTURE.md, "not yet built").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::command::Family;
use crate::text::parse_duration;

/// A policy error, naming the file and the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("CORRAL_POLICY ({path}): {reason}")]
pub struct PolicyError {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    permissions: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    approval: Vec<RawApproval>,
    lock: Option<RawLock>,
    #[serde(default)]
    freeze: Vec<RawFreeze>,
    #[serde(default)]
    digest: Vec<RawDigest>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApproval {
    commands: Vec<String>,
    environments: Option<String>,
    approvers: Vec<String>,
    #[serde(default = "one")]
    required: u32,
    expires: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    remind_after: Option<String>,
    remind_every: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreeze {
    name: String,
    cron: String,
    duration: String,
    timezone: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigest {
    cron: String,
    channel: String,
}

/// An approval rule, validated.
#[derive(Debug, Clone)]
pub struct ApprovalRule {
    pub commands: Vec<Family>,
    pub environments: Option<regex::Regex>,
    pub approvers: Vec<String>,
    pub required: u32,
    pub expires: Option<Duration>,
}

/// A freeze window, validated.
#[derive(Debug, Clone)]
pub struct Freeze {
    pub name: String,
    pub cron: String,
    pub duration: Duration,
    pub timezone: String,
}

/// The policy in force.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: BTreeMap<String, Vec<String>>,
    permissions: BTreeMap<Family, Vec<String>>,
    pub approvals: Vec<ApprovalRule>,
    pub remind_after: Option<Duration>,
    pub remind_every: Option<Duration>,
    pub freezes: Vec<Freeze>,
    pub digests: Vec<(String, String)>,
    /// Whether a policy file was given at all.
    pub configured: bool,
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let err = |reason: String| PolicyError {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Policy::parse(&text).map_err(err)
    }

    /// Parses policy text; the error names the key.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut p = Policy {
            configured: true,
            ..Policy::default()
        };
        for (role, members) in &raw.roles {
            if role == "everyone" {
                return Err(
                    "roles.everyone: `everyone` is built in and cannot be redefined".into(),
                );
            }
            for m in members {
                if !is_member_id(m) {
                    return Err(format!(
                        "roles.{role}: {m:?} is not a Slack user or group id (U…, W…, S…) or an API caller (api:NAME)"
                    ));
                }
            }
        }
        p.roles = raw.roles.clone();
        for (cmd, roles) in &raw.permissions {
            let fam = family(cmd).ok_or_else(|| {
                format!("permissions.{cmd}: unknown command (release, upgrade, deploy)")
            })?;
            for r in roles {
                p.check_role(r)
                    .map_err(|e| format!("permissions.{cmd}: {e}"))?;
            }
            p.permissions.insert(fam, roles.clone());
        }
        for (i, a) in raw.approval.iter().enumerate() {
            let key = format!("approval[{i}]");
            let commands = a
                .commands
                .iter()
                .map(|c| family(c).ok_or_else(|| format!("{key}.commands: unknown command {c:?}")))
                .collect::<Result<Vec<_>, _>>()?;
            let environments = a
                .environments
                .as_deref()
                .map(regex::Regex::new)
                .transpose()
                .map_err(|e| format!("{key}.environments: {e}"))?;
            for r in &a.approvers {
                p.check_role(r)
                    .map_err(|e| format!("{key}.approvers: {e}"))?;
            }
            if a.required == 0 {
                return Err(format!("{key}.required: must be at least 1"));
            }
            let expires = a
                .expires
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| format!("{key}.expires: {e}"))?;
            p.approvals.push(ApprovalRule {
                commands,
                environments,
                approvers: a.approvers.clone(),
                required: a.required,
                expires,
            });
        }
        if let Some(l) = &raw.lock {
            p.remind_after = l
                .remind_after
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| format!("lock.remind_after: {e}"))?;
            p.remind_every = l
                .remind_every
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| format!("lock.remind_every: {e}"))?;
        }
        for (i, f) in raw.freeze.iter().enumerate() {
            let key = format!("freeze[{i}]");
            check_cron(&f.cron).map_err(|e| format!("{key}.cron: {e}"))?;
            let duration =
                parse_duration(&f.duration).map_err(|e| format!("{key}.duration: {e}"))?;
            let timezone = f.timezone.clone().unwrap_or_else(|| "UTC".to_string());
            jiff::tz::TimeZone::get(&timezone)
                .map_err(|e| format!("{key}.timezone: {timezone:?}: {e}"))?;
            p.freezes.push(Freeze {
                name: f.name.clone(),
                cron: f.cron.clone(),
                duration,
                timezone,
            });
        }
        for (i, d) in raw.digest.iter().enumerate() {
            check_cron(&d.cron).map_err(|e| format!("digest[{i}].cron: {e}"))?;
            if d.channel.trim().is_empty() {
                return Err(format!("digest[{i}].channel: empty"));
            }
            p.digests.push((d.cron.clone(), d.channel.clone()));
        }
        Ok(p)
    }

    fn check_role(&self, r: &str) -> Result<(), String> {
        if r == "everyone" || self.roles.contains_key(r) || is_member_id(r) {
            Ok(())
        } else {
            Err(format!(
                "{r:?} is neither a role defined in [roles] nor a Slack id"
            ))
        }
    }

    /// Whether `user` is in `role` (a role name, `everyone`, or a Slack id itself).
    /// User groups (`S…`) match only when the group id is the user's own entry; resolving
    /// group membership through Slack is not built yet.
    pub fn in_role(&self, user: &str, role: &str) -> bool {
        role == "everyone"
            || (is_member_id(role) && role == user)
            || self
                .roles
                .get(role)
                .is_some_and(|members| members.iter().any(|m| m == user))
    }

    /// Whether `user` is an admin (`roles.admins`).
    pub fn is_admin(&self, user: &str) -> bool {
        self.in_role(user, "admins")
    }

    /// Whether `user` may run commands of this family.
    pub fn may_run(&self, user: &str, family: Family) -> bool {
        match self.permissions.get(&family) {
            None => true,
            Some(roles) => roles.iter().any(|r| self.in_role(user, r)) || self.is_admin(user),
        }
    }

    /// Whether `user` may use `--force`. Without a policy file there are no admins, so
    /// everyone may (and it is audited); with one, admins only.
    pub fn may_force(&self, user: &str) -> bool {
        !self.configured || self.is_admin(user)
    }
}

fn family(name: &str) -> Option<Family> {
    match name {
        "release" => Some(Family::Release),
        "upgrade" => Some(Family::Upgrade),
        "deploy" => Some(Family::Deploy),
        _ => None,
    }
}

/// A role member: a Slack id, or an API caller as corral names it (`api:ci-bot`).
fn is_member_id(s: &str) -> bool {
    is_slack_id(s)
        || s.strip_prefix("api:").is_some_and(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
}

fn is_slack_id(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(['U', 'W', 'S'])
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Checks a 5-field cron expression's shape (minute hour day-of-month month day-of-week).
fn check_cron(expr: &str) -> Result<(), String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("{expr:?} must have 5 fields, has {}", fields.len()));
    }
    let ok = |f: &str| {
        f.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/'))
    };
    match fields.iter().find(|f| !ok(f)) {
        Some(bad) => Err(format!("{expr:?}: field {bad:?} is not cron syntax")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"
[roles]
admins    = ["U0ADMIN"]
deployers = ["U0ALICE", "S0DEVS"]
approvers = ["U0BOB", "U0CAROL"]

[permissions]
release = ["everyone"]
upgrade = ["deployers", "admins"]
deploy  = ["deployers", "admins"]

[[approval]]
commands     = ["upgrade", "deploy"]
environments = "^prod"
approvers    = ["approvers"]
required     = 1
expires      = "1h"

[lock]
remind_after = "2h"
remind_every = "30m"

[[freeze]]
name     = "weekend"
cron     = "0 16 * * FRI"
duration = "64h"
timezone = "Europe/Berlin"

[[digest]]
cron    = "0 9 * * MON-FRI"
channel = "C0RELEASES"
"#;

    #[test]
    fn spec_example_parses() {
        let p = Policy::parse(SPEC_EXAMPLE).unwrap();
        assert!(p.is_admin("U0ADMIN"));
        assert!(!p.is_admin("U0ALICE"));
        assert!(p.may_run("U0ALICE", Family::Upgrade));
        assert!(p.may_run("U0ADMIN", Family::Deploy));
        assert!(!p.may_run("U0BOB", Family::Upgrade));
        assert!(p.may_run("U0BOB", Family::Release));
        assert!(p.may_force("U0ADMIN") && !p.may_force("U0ALICE"));
        assert_eq!(p.approvals[0].expires, Some(Duration::from_secs(3600)));
        assert_eq!(p.freezes[0].duration, Duration::from_secs(64 * 3600));
    }

    #[test]
    fn role_names_are_not_identities() {
        let p = Policy::parse(SPEC_EXAMPLE).unwrap();
        // Somebody calling themselves after a role gets nothing from it.
        assert!(!p.is_admin("admins"));
        assert!(!p.may_run("deployers", Family::Upgrade));
        let p = Policy::parse("[roles]\nadmins = [\"api:ci-bot\"]").unwrap();
        assert!(p.is_admin("api:ci-bot"));
        assert!(!p.is_admin("ci-bot"));
    }

    #[test]
    fn no_policy_lets_everyone() {
        let p = Policy::default();
        assert!(p.may_run("U1", Family::Deploy));
        assert!(p.may_force("U1"));
        assert!(!p.is_admin("U1"));
    }

    #[test]
    fn bad_policies_name_the_key() {
        for (text, needle) in [
            ("[roles]\nadmins = [\"bob\"]", "roles.admins"),
            ("[permisions]\nrelease = []", "permisions"),
            (
                "[permissions]\nlaunch = [\"everyone\"]",
                "permissions.launch",
            ),
            (
                "[permissions]\nupgrade = [\"ghosts\"]",
                "permissions.upgrade",
            ),
            (
                "[[approval]]\ncommands=[\"upgrade\"]\napprovers=[\"everyone\"]\nenvironments=\"(\"",
                "approval[0].environments",
            ),
            (
                "[[approval]]\ncommands=[\"upgrade\"]\napprovers=[\"everyone\"]\nrequired=0",
                "approval[0].required",
            ),
            (
                "[[approval]]\ncommands=[\"upgrade\"]\napprovers=[\"everyone\"]\nexpires=\"soon\"",
                "approval[0].expires",
            ),
            ("[lock]\nremind_after = \"2 hours\"", "lock.remind_after"),
            (
                "[[freeze]]\nname=\"x\"\ncron=\"0 16 * *\"\nduration=\"1h\"",
                "freeze[0].cron",
            ),
            (
                "[[freeze]]\nname=\"x\"\ncron=\"0 16 * * FRI\"\nduration=\"1h\"\ntimezone=\"Mars/Base\"",
                "freeze[0].timezone",
            ),
            (
                "[[digest]]\ncron=\"0 9 * * *\"\nchannel=\"\"",
                "digest[0].channel",
            ),
            ("[lock]\nremind = \"1h\"", "remind"),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
