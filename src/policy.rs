//! The policy file (`CORRAL_POLICY`, TOML; SPEC §8): who may run what, who is an admin.
//!
//! Unknown keys and bad values stop start-up with a message naming the file and key.
//! With no policy file everyone may run everything and nobody is an admin, except that
//! `--force` is then allowed to everyone (there is nobody else to ask); this is written
//! in the README.
//!
//! `[[approval]]`, `[lock]`, `[[freeze]]` and `[[digest]]` are parsed and validated here
//! at start-up; the scheduler (`app::scheduler`) acts on `[lock]`, `[[freeze]]` and
//! `[[digest]]`, the approval flow on `[[approval]]` is separate work. Schedules are
//! validated with the real cron parser and time zone database ([`crate::schedule`]):
//! bad cron strings, unknown time zones, durations of zero and freeze windows longer than
//! their period stop start-up, naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::command::Family;
pub use crate::schedule::{Digest, Freeze, Reminders};
use crate::schedule::{Schedule, ScheduleError, show_time};
use crate::text::{format_duration, parse_duration};

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
    timezone: Option<String>,
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

/// The policy in force.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: BTreeMap<String, Vec<String>>,
    permissions: BTreeMap<Family, Vec<String>>,
    pub approvals: Vec<ApprovalRule>,
    pub remind_after: Option<Duration>,
    pub remind_every: Option<Duration>,
    pub freezes: Vec<Freeze>,
    pub digests: Vec<Digest>,
    /// Whether a policy file was given at all.
    pub configured: bool,
}

impl Policy {
    /// Reads and validates a policy file.
    pub(crate) fn load(path: &Path) -> Result<Policy, PolicyError> {
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
        p.parse_roles(&raw)?;
        p.parse_permissions(&raw)?;
        p.parse_approvals(&raw)?;
        p.parse_lock(&raw)?;
        p.parse_freezes(&raw)?;
        p.parse_digests(&raw)?;
        Ok(p)
    }

    /// `[roles]`: named lists of Slack users, groups and API callers.
    fn parse_roles(&mut self, raw: &RawPolicy) -> Result<(), String> {
        for (role, members) in &raw.roles {
            if role == "everyone" {
                return Err(
                    "roles.everyone: `everyone` is built in and cannot be redefined".into(),
                );
            }
            for m in members {
                if !is_member_id(m) {
                    return Err(format!(
                        "roles.{role}: {m:?} is not a Slack user or group id (U…, W…, S…), an API caller (api:NAME) or a playground name (playground:NAME)"
                    ));
                }
            }
        }
        self.roles = raw.roles.clone();
        Ok(())
    }

    /// `[permissions]`: which roles may run each command family.
    fn parse_permissions(&mut self, raw: &RawPolicy) -> Result<(), String> {
        for (cmd, roles) in &raw.permissions {
            let fam = family(cmd).ok_or_else(|| {
                format!("permissions.{cmd}: unknown command (release, upgrade, deploy)")
            })?;
            for r in roles {
                self.check_role(r)
                    .map_err(|e| format!("permissions.{cmd}: {e}"))?;
            }
            self.permissions.insert(fam, roles.clone());
        }
        Ok(())
    }

    /// `[[approval]]`: which jobs wait for whom.
    fn parse_approvals(&mut self, raw: &RawPolicy) -> Result<(), String> {
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
                self.check_role(r)
                    .map_err(|e| format!("{key}.approvers: {e}"))?;
            }
            if a.required == 0 {
                return Err(format!("{key}.required: must be at least 1"));
            }
            let expires = a
                .expires
                .as_deref()
                .map(|raw| positive_duration(&format!("{key}.expires"), raw))
                .transpose()?;
            self.approvals.push(ApprovalRule {
                commands,
                environments,
                approvers: a.approvers.clone(),
                required: a.required,
                expires,
            });
        }
        Ok(())
    }

    /// `[lock]`: when a forgotten release is pointed out.
    fn parse_lock(&mut self, raw: &RawPolicy) -> Result<(), String> {
        if let Some(l) = &raw.lock {
            self.remind_after = l
                .remind_after
                .as_deref()
                .map(|raw| positive_duration("lock.remind_after", raw))
                .transpose()?;
            self.remind_every = l
                .remind_every
                .as_deref()
                .map(|raw| positive_duration("lock.remind_every", raw))
                .transpose()?;
        }
        Ok(())
    }

    /// `[[freeze]]`: the windows in which releases are refused; names are unique.
    fn parse_freezes(&mut self, raw: &RawPolicy) -> Result<(), String> {
        for (i, f) in raw.freeze.iter().enumerate() {
            let key = format!("freeze[{i}]");
            let schedule = schedule(&key, &f.cron, f.timezone.as_deref())?;
            let duration = positive_duration(&format!("{key}.duration"), &f.duration)?;
            let freeze = Freeze::new(&f.name, schedule, duration)
                .map_err(|e| format!("{key}.{}: {e}", e.field()))?;
            if let Some(j) = self.freezes.iter().position(|g| g.name == freeze.name) {
                return Err(format!(
                    "{key}.name: `{}` is the name of freeze[{j}] too; names must differ",
                    freeze.name
                ));
            }
            self.freezes.push(freeze);
        }
        Ok(())
    }

    /// `[[digest]]`: the morning summaries; one per schedule and channel.
    fn parse_digests(&mut self, raw: &RawPolicy) -> Result<(), String> {
        for (i, d) in raw.digest.iter().enumerate() {
            let key = format!("digest[{i}]");
            let schedule = schedule(&key, &d.cron, d.timezone.as_deref())?;
            let digest =
                Digest::new(schedule, &d.channel).map_err(|e| format!("{key}.channel: {e}"))?;
            if let Some(j) = self.digests.iter().position(|g| g.id() == digest.id()) {
                return Err(format!(
                    "{key}: the same schedule and channel as digest[{j}]"
                ));
            }
            self.digests.push(digest);
        }
        Ok(())
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
    pub(crate) fn in_role(&self, user: &str, role: &str) -> bool {
        role == "everyone"
            || (is_member_id(role) && role == user)
            || self
                .roles
                .get(role)
                .is_some_and(|members| members.iter().any(|m| m == user))
    }

    /// Whether `role` is `id` itself or a role in `[roles]` that lists `id` by that exact
    /// entry (no `everyone`, no groups): how self-named identities are allowed.
    pub(crate) fn lists(&self, role: &str, id: &str) -> bool {
        role == id
            || self
                .roles
                .get(role)
                .is_some_and(|members| members.iter().any(|m| m == id))
    }

    /// Whether `user` is an admin (`roles.admins`).
    pub(crate) fn is_admin(&self, user: &str) -> bool {
        self.in_role(user, "admins")
    }

    /// The Slack user groups (`S…`) whose members are in `role` (the role's own id, or
    /// the groups a `[roles]` entry lists). Membership of these is asked of Slack.
    pub(crate) fn groups_of(&self, role: &str) -> Vec<String> {
        let is_group = |m: &str| m.starts_with('S') && is_member_id(m) && !m.contains(':');
        if is_group(role) {
            return vec![role.to_string()];
        }
        self.roles
            .get(role)
            .map(|ms| ms.iter().filter(|m| is_group(m)).cloned().collect())
            .unwrap_or_default()
    }

    /// The roles `[permissions]` allows for a family (`None`: everyone).
    pub(crate) fn permitted(&self, family: Family) -> Option<&[String]> {
        self.permissions.get(&family).map(Vec::as_slice)
    }

    /// Whether `user` may run commands of this family.
    pub(crate) fn may_run(&self, user: &str, family: Family) -> bool {
        match self.permissions.get(&family) {
            None => true,
            Some(roles) => roles.iter().any(|r| self.in_role(user, r)) || self.is_admin(user),
        }
    }

    /// Whether `user` may use `--force`. Without a policy file there are no admins, so
    /// everyone may (and it is audited); with one, admins only.
    pub(crate) fn may_force(&self, user: &str) -> bool {
        !self.configured || self.is_admin(user)
    }

    /// The lock reminders `[lock]` asks for, if any.
    pub(crate) fn reminders(&self) -> Option<Reminders> {
        Reminders::from_policy(self.remind_after, self.remind_every)
    }

    /// What `corral schedule` prints: for every freeze, digest and the lock reminders,
    /// the next `count` firings after `now`, in the schedule's time zone and in UTC.
    pub fn schedule_report(&self, now: jiff::Timestamp, count: usize) -> String {
        use std::fmt::Write;
        let utc = jiff::tz::TimeZone::UTC;
        let mut out = String::new();
        if !self.configured {
            out.push_str("No policy file (CORRAL_POLICY is not set): there are no schedules.\n");
            return out;
        }
        let reminders = self.reminders();
        if self.freezes.is_empty() && self.digests.is_empty() && reminders.is_none() {
            out.push_str(
                "The policy has no schedules (no [[freeze]], no [[digest]], no [lock] reminders).\n",
            );
            return out;
        }
        let _ = writeln!(out, "Next firings after {}:", show_time(now, &utc));
        for (i, f) in self.freezes.iter().enumerate() {
            let tz = f.schedule.time_zone();
            let _ = writeln!(
                out,
                "\nfreeze[{i}] \"{}\": {}, windows of {}",
                f.name,
                f.schedule,
                format_duration(f.duration)
            );
            if let Some(w) = f.window_at(now) {
                let _ = writeln!(
                    out,
                    "  active now: since {}, until {}",
                    show_time(w.start, tz),
                    show_time(w.end, tz)
                );
            }
            let mut from = now;
            for _ in 0..count {
                let Some(w) = f.next_window_after(from) else {
                    break;
                };
                let _ = writeln!(
                    out,
                    "  {}  until  {}",
                    show_time(w.start, tz),
                    show_time(w.end, tz)
                );
                from = w.start;
            }
        }
        for (i, d) in self.digests.iter().enumerate() {
            let _ = writeln!(out, "\ndigest[{i}] to {}: {}", d.channel, d.schedule);
            for t in d.schedule.firings_after(now).take(count) {
                let _ = writeln!(out, "  {}", show_time(t, d.schedule.time_zone()));
            }
        }
        if let Some(r) = reminders {
            let every = match r.every {
                Some(e) => format!(", then every {}", format_duration(e)),
                None => ", once".to_string(),
            };
            let _ = writeln!(
                out,
                "\nlock reminders: after {}{every}; for a release started now:",
                format_duration(r.after)
            );
            for n in 0..count as u32 {
                let Some(t) = r.at(now, n) else { break };
                let _ = writeln!(out, "  {}", show_time(t, &utc));
            }
        }
        out
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
/// A Slack id, an API caller (`api:NAME`) or a playground name (`playground:NAME`).
fn is_member_id(s: &str) -> bool {
    is_slack_id(s)
        || ["api:", "playground:"].iter().any(|door| {
            s.strip_prefix(door).is_some_and(|n| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            })
        })
}

fn is_slack_id(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(['U', 'W', 'S'])
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// A schedule from a policy section; the error names `<key>.cron` or `<key>.timezone`.
fn schedule(key: &str, cron: &str, timezone: Option<&str>) -> Result<Schedule, String> {
    Schedule::parse(cron, timezone).map_err(|e| match e {
        ScheduleError::Cron(m) => format!("{key}.cron: {m}"),
        ScheduleError::TimeZone(m) => format!("{key}.timezone: {m}"),
    })
}

/// A duration that must be above zero; the error names the key.
fn positive_duration(key: &str, raw: &str) -> Result<Duration, String> {
    let d = parse_duration(raw).map_err(|e| format!("{key}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{key}: must be longer than 0"));
    }
    Ok(d)
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
        assert_eq!(p.freezes[0].name, "weekend");
        assert_eq!(p.freezes[0].schedule.expr(), "0 16 * * FRI");
        assert_eq!(p.freezes[0].schedule.time_zone_name(), "Europe/Berlin");
        assert_eq!(p.digests[0].channel, "C0RELEASES");
        assert_eq!(p.digests[0].schedule.time_zone_name(), "UTC");
        assert_eq!(
            p.reminders(),
            Some(Reminders {
                after: Duration::from_secs(2 * 3600),
                every: Some(Duration::from_secs(1800))
            })
        );
    }

    #[test]
    fn digests_take_a_time_zone() {
        let p = Policy::parse(
            "[[digest]]\ncron=\"0 9 * * MON-FRI\"\nchannel=\"C1\"\ntimezone=\"America/New_York\"\n\
             [[digest]]\ncron=\"0 9 * * MON-FRI\"\nchannel=\"C1\"",
        )
        .unwrap();
        assert_eq!(p.digests[0].schedule.time_zone_name(), "America/New_York");
        assert_eq!(p.digests[1].schedule.time_zone_name(), "UTC");
        assert_ne!(p.digests[0].id(), p.digests[1].id());
    }

    #[test]
    fn schedule_report_lists_every_schedule() {
        let p = Policy::parse(SPEC_EXAMPLE).unwrap();
        // Thursday 2025-03-27 12:00 UTC: the next weekend freeze is the one the clocks
        // go forward in.
        let now: jiff::Timestamp = "2025-03-27T12:00:00Z".parse().unwrap();
        let out = p.schedule_report(now, 2);
        let expected = "Next firings after Thu 2025-03-27 12:00 UTC:

freeze[0] \"weekend\": `0 16 * * FRI` in Europe/Berlin, windows of 2d16h
  Fri 2025-03-28 16:00 CET (15:00 UTC)  until  Mon 2025-03-31 09:00 CEST (07:00 UTC)
  Fri 2025-04-04 16:00 CEST (14:00 UTC)  until  Mon 2025-04-07 08:00 CEST (06:00 UTC)

digest[0] to C0RELEASES: `0 9 * * MON-FRI` in UTC
  Fri 2025-03-28 09:00 UTC
  Mon 2025-03-31 09:00 UTC

lock reminders: after 2h, then every 30m; for a release started now:
  Thu 2025-03-27 14:00 UTC
  Thu 2025-03-27 14:30 UTC
";
        assert_eq!(out, expected);
        // Inside a window it says so.
        let sat: jiff::Timestamp = "2025-03-29T12:00:00Z".parse().unwrap();
        assert!(
            p.schedule_report(sat, 1).contains(
                "  active now: since Fri 2025-03-28 16:00 CET (15:00 UTC), until Mon 2025-03-31 09:00 CEST (07:00 UTC)\n"
            ),
            "{}",
            p.schedule_report(sat, 1)
        );
        assert!(
            Policy::default()
                .schedule_report(now, 5)
                .contains("there are no schedules")
        );
        assert!(
            Policy::parse("[roles]\nadmins=[\"U1\"]")
                .unwrap()
                .schedule_report(now, 5)
                .contains("no schedules")
        );
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
            // Schedules: the real cron parser, the time zone database, durations above
            // zero, windows no longer than their period.
            (
                "[[freeze]]\nname=\"x\"\ncron=\"61 16 * * FRI\"\nduration=\"1h\"",
                "freeze[0].cron: `61 16 * * FRI` is not a cron schedule",
            ),
            (
                "[[freeze]]\nname=\"x\"\ncron=\"0 0 30 2 *\"\nduration=\"1h\"",
                "freeze[0].cron: `0 0 30 2 *` never fires",
            ),
            (
                "[[freeze]]\nname=\"x\"\ncron=\"@weekly\"\nduration=\"1h\"",
                "freeze[0].cron",
            ),
            (
                "[[freeze]]\nname=\"x\"\ncron=\"0 16 * * FRI\"\nduration=\"0\"",
                "freeze[0].duration: must be longer than 0",
            ),
            (
                "[[freeze]]\nname=\"x\"\ncron=\"0 16 * * FRI\"\nduration=\"0s\"",
                "freeze[0].duration: must be longer than 0",
            ),
            (
                "[[freeze]]\nname=\"x\"\ncron=\"0 16 * * FRI\"\nduration=\"8d\"",
                "freeze[0].duration: 8d is longer than the shortest time between two starts of `0 16 * * FRI` in UTC, 7d",
            ),
            (
                "[[freeze]]\nname=\"x\"\ncron=\"0 22 * * *\"\nduration=\"24h\"\ntimezone=\"Europe/Berlin\"",
                "freeze[0].duration: 1d is longer than the shortest time between two starts of `0 22 * * *` in Europe/Berlin, 23h",
            ),
            (
                "[[freeze]]\nname=\"x\"\ncron=\"0 16 * * FRI\"\nduration=\"forever\"",
                "freeze[0].duration",
            ),
            (
                "[[freeze]]\nname=\"<!here>\"\ncron=\"0 16 * * FRI\"\nduration=\"1h\"",
                "freeze[0].name",
            ),
            (
                "[[freeze]]\nname=\"a\"\ncron=\"0 16 * * FRI\"\nduration=\"1h\"\n\
                 [[freeze]]\nname=\"a\"\ncron=\"0 9 * * MON\"\nduration=\"1h\"",
                "freeze[1].name: `a` is the name of freeze[0] too",
            ),
            (
                "[[freeze]]\nname=\"x\"\ncron=\"0 16 * * FRI\"\nduration=\"1h\"\ntimezone=\"\"",
                "freeze[0].timezone: empty",
            ),
            (
                "[[freeze]]\nname=\"x\"\ncron=\"0 16 * * FRI\"\nduration=\"1h\"\ntimezone=\"CEST\"",
                "freeze[0].timezone: unknown time zone `CEST`",
            ),
            ("[[freeze]]\nname=\"x\"\ncron=\"0 16 * * FRI\"", "duration"),
            (
                "[lock]\nremind_after = \"0\"",
                "lock.remind_after: must be longer than 0",
            ),
            (
                "[lock]\nremind_every = \"0m\"",
                "lock.remind_every: must be longer than 0",
            ),
            (
                "[[approval]]\ncommands=[\"upgrade\"]\napprovers=[\"everyone\"]\nexpires=\"0s\"",
                "approval[0].expires: must be longer than 0",
            ),
            (
                "[[digest]]\ncron=\"0 9 * * MON-FRY\"\nchannel=\"C1\"",
                "digest[0].cron",
            ),
            (
                "[[digest]]\ncron=\"0 9 * * MON-FRI\"\nchannel=\"C1\"\ntimezone=\"Europe/Berlim\"",
                "digest[0].timezone",
            ),
            (
                "[[digest]]\ncron=\"0 9 * * MON-FRI\"\nchannel=\"C 1\"",
                "digest[0].channel",
            ),
            (
                "[[digest]]\ncron=\"0 9 * * MON-FRI\"\nchannel=\"C1\"\n\
                 [[digest]]\ncron=\"0 9 * * mon-fri\"\nchannel=\"C1\"",
                "digest[1]: the same schedule and channel as digest[0]",
            ),
            (
                "[[digest]]\ncron=\"0 9 * * *\"\nchannel=\"C1\"\ntz=\"UTC\"",
                "tz",
            ),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
