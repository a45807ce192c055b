//! The release lock: releasestatus's state table (reference/releasestatus.md) with an
//! owner, a reason and a start time on both the running release and the block.
//!
//! | state \ request | start    | stop      | block    | unblock  |
//! |-----------------|----------|-----------|----------|----------|
//! | idle            | → R      | refused   | → B      | refused  |
//! | running (R)     | refused  | → idle    | → R+B    | refused  |
//! | blocked (B)     | refused  | refused   | refused  | → idle   |
//! | R+B             | refused  | → B       | refused  | → R      |
//!
//! On top of the table, chat adds one rule: only the holder may stop a release, unless
//! `--force` is given by someone allowed to force. The older HTTP endpoints keep
//! releasestatus's behaviour (anyone with the API token may stop).
//!
//! Beside the table, a **freeze window** (policy `[[freeze]]`) is a condition of its own:
//! while one is open, `start` is refused as under a block (after the running and blocked
//! checks), unless an admin forces it. The window is an input ([`Frozen`]), decided by the
//! caller from the policy and the time; `block`/`unblock` never see it, so a manual block
//! made during a window outlives the window.
//!
//! This module is pure: the store runs [`apply`] inside a transaction.

use serde::{Deserialize, Serialize};

use crate::text::{person, sanitize, when};

/// Who holds the running release, or who blocked releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// A Slack user id (`U…`) or a free name (`?name=` on `/start`, `$USER` from the CLI).
    pub who: String,
    pub reason: String,
    /// Unix seconds.
    pub since: i64,
}

/// The whole lock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    pub running: Option<Holder>,
    pub blocked: Option<Holder>,
}

/// A change request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAction {
    Start { reason: String },
    Stop { force: bool },
    Block { reason: String },
    Unblock,
}

impl LockAction {
    pub fn name(&self) -> &'static str {
        match self {
            LockAction::Start { .. } => "start",
            LockAction::Stop { .. } => "stop",
            LockAction::Block { .. } => "block",
            LockAction::Unblock => "unblock",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            LockAction::Start { reason } | LockAction::Block { reason } => reason,
            _ => "",
        }
    }
}

/// Who asks, and what they may do.
#[derive(Debug, Clone)]
pub struct Actor {
    pub who: String,
    /// Whether `--force` is honoured for this actor.
    pub may_force: bool,
    /// Whether stopping needs to be the holder (chat: yes; releasestatus HTTP: no).
    pub holder_only_stop: bool,
}

/// A freeze window open at the time of a request (an input: this module reads no policy
/// and no clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frozen {
    /// The freeze's name in the policy.
    pub name: String,
    /// When the window closes, Unix seconds.
    pub until: i64,
    /// How the end is shown (in the freeze's time zone and in UTC).
    pub until_shown: String,
}

/// Why a request was refused. Each maps to releasestatus's `0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A freeze window is open.
    Frozen(Frozen),
    AlreadyRunning(Holder),
    Blocked(Holder),
    NotRunning,
    NotHolder(Holder),
    ForceNotAllowed,
    AlreadyBlocked(Holder),
    NotBlocked,
}

/// [`apply`] with the freeze window open now, if any: `start` is refused inside it
/// (after the running and blocked checks) unless `through_freeze` is asked by an actor
/// who may force. Other actions ignore the window.
pub(crate) fn apply_frozen(
    state: &LockState,
    action: &LockAction,
    actor: &Actor,
    now: i64,
    frozen: Option<&Frozen>,
    through_freeze: bool,
) -> Result<LockState, Refusal> {
    let next = apply(state, action, actor, now)?;
    if let (LockAction::Start { .. }, Some(f)) = (action, frozen) {
        if !through_freeze {
            return Err(Refusal::Frozen(f.clone()));
        }
        if !actor.may_force {
            return Err(Refusal::ForceNotAllowed);
        }
    }
    Ok(next)
}

/// Applies `action` to `state`; returns the new state or why not.
pub fn apply(
    state: &LockState,
    action: &LockAction,
    actor: &Actor,
    now: i64,
) -> Result<LockState, Refusal> {
    let mut next = state.clone();
    match action {
        LockAction::Start { reason } => {
            // releasestatus checks Running before Blocked.
            if let Some(h) = &state.running {
                return Err(Refusal::AlreadyRunning(h.clone()));
            }
            if let Some(b) = &state.blocked {
                return Err(Refusal::Blocked(b.clone()));
            }
            next.running = Some(Holder {
                who: actor.who.clone(),
                reason: reason.clone(),
                since: now,
            });
        }
        LockAction::Stop { force } => {
            let Some(h) = &state.running else {
                return Err(Refusal::NotRunning);
            };
            if actor.holder_only_stop && h.who != actor.who {
                if !force {
                    return Err(Refusal::NotHolder(h.clone()));
                }
                if !actor.may_force {
                    return Err(Refusal::ForceNotAllowed);
                }
            }
            // Stop keeps Blocked as it was.
            next.running = None;
        }
        LockAction::Block { reason } => {
            if let Some(b) = &state.blocked {
                return Err(Refusal::AlreadyBlocked(b.clone()));
            }
            next.blocked = Some(Holder {
                who: actor.who.clone(),
                reason: reason.clone(),
                since: now,
            });
        }
        LockAction::Unblock => {
            if state.blocked.is_none() {
                return Err(Refusal::NotBlocked);
            }
            next.blocked = None;
        }
    }
    Ok(next)
}

fn with_reason(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", sanitize(reason))
    }
}

impl Refusal {
    /// The sentence shown to the person whose request was refused.
    pub(crate) fn explain(&self) -> String {
        match self {
            Refusal::AlreadyRunning(h) => format!(
                "A release is already running, started by {} at {}{}.",
                person(&h.who),
                when(h.since),
                with_reason(&h.reason)
            ),
            Refusal::Blocked(b) => format!(
                "Releases are blocked by {} since {}{}.",
                person(&b.who),
                when(b.since),
                with_reason(&b.reason)
            ),
            Refusal::Frozen(f) => format!(
                "Releases are frozen: the freeze window `{}` is open until {} (an admin can add `--force`).",
                sanitize(&f.name),
                f.until_shown
            ),
            Refusal::NotRunning => "No release is running.".to_string(),
            Refusal::NotHolder(h) => format!(
                "The release was started by {} at {}; only they can stop it (an admin can add `--force`).",
                person(&h.who),
                when(h.since)
            ),
            Refusal::ForceNotAllowed => "Only admins may use `--force`.".to_string(),
            Refusal::AlreadyBlocked(b) => format!(
                "Releases are already blocked by {} since {}{}.",
                person(&b.who),
                when(b.since),
                with_reason(&b.reason)
            ),
            Refusal::NotBlocked => "Releases are not blocked.".to_string(),
        }
    }
}

impl LockState {
    /// The status lines shown for `/release status`.
    pub(crate) fn describe(&self) -> String {
        let mut out = match &self.running {
            Some(h) => format!(
                "🚀 A release is running: started by {} at {}{}.",
                person(&h.who),
                when(h.since),
                with_reason(&h.reason)
            ),
            None => "No release is running.".to_string(),
        };
        match &self.blocked {
            Some(b) => out.push_str(&format!(
                "\n⛔ Releases are blocked by {} since {}{}.",
                person(&b.who),
                when(b.since),
                with_reason(&b.reason)
            )),
            None => out.push_str("\nReleases are not blocked."),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(who: &str) -> Actor {
        Actor {
            who: who.into(),
            may_force: false,
            holder_only_stop: true,
        }
    }

    fn held(who: &str) -> Option<Holder> {
        Some(Holder {
            who: who.into(),
            reason: String::new(),
            since: 1,
        })
    }

    fn st(r: bool, b: bool) -> LockState {
        LockState {
            running: if r { held("U1") } else { None },
            blocked: if b { held("U1") } else { None },
        }
    }

    #[test]
    fn the_whole_state_table() {
        use LockAction::*;
        let start = Start {
            reason: String::new(),
        };
        let block = Block {
            reason: String::new(),
        };
        let stop = Stop { force: false };
        // (state, action, Some((R, B)) if accepted)
        type Row<'a> = ((bool, bool), &'a LockAction, Option<(bool, bool)>);
        let table: [Row; 16] = [
            ((false, false), &start, Some((true, false))),
            ((false, false), &stop, None),
            ((false, false), &block, Some((false, true))),
            ((false, false), &Unblock, None),
            ((true, false), &start, None),
            ((true, false), &stop, Some((false, false))),
            ((true, false), &block, Some((true, true))),
            ((true, false), &Unblock, None),
            ((false, true), &start, None),
            ((false, true), &stop, None),
            ((false, true), &block, None),
            ((false, true), &Unblock, Some((false, false))),
            ((true, true), &start, None),
            ((true, true), &stop, Some((false, true))),
            ((true, true), &block, None),
            ((true, true), &Unblock, Some((true, false))),
        ];
        for ((r, b), action, want) in table {
            let got = apply(&st(r, b), action, &actor("U1"), 5)
                .ok()
                .map(|s| (s.running.is_some(), s.blocked.is_some()));
            assert_eq!(got, want, "state R={r} B={b}, {action:?}");
        }
    }

    #[test]
    fn running_checked_before_blocked() {
        let e = apply(
            &st(true, true),
            &LockAction::Start { reason: "".into() },
            &actor("U2"),
            5,
        );
        assert!(matches!(e, Err(Refusal::AlreadyRunning(_))));
    }

    #[test]
    fn only_the_holder_stops_unless_forced_by_admin() {
        let s = st(true, false);
        let stop = |force| LockAction::Stop { force };
        assert!(matches!(
            apply(&s, &stop(false), &actor("U2"), 5),
            Err(Refusal::NotHolder(_))
        ));
        assert_eq!(
            apply(&s, &stop(true), &actor("U2"), 5),
            Err(Refusal::ForceNotAllowed)
        );
        let admin = Actor {
            may_force: true,
            ..actor("U2")
        };
        assert_eq!(apply(&s, &stop(true), &admin, 5).unwrap().running, None);
        let http = Actor {
            holder_only_stop: false,
            ..actor("anyone")
        };
        assert_eq!(apply(&s, &stop(false), &http, 5).unwrap().running, None);
    }

    #[test]
    fn a_freeze_refuses_only_start_and_admins_pass_it() {
        let f = Frozen {
            name: "weekend".into(),
            until: 100,
            until_shown: "Mon 08:00".into(),
        };
        let start = LockAction::Start { reason: "".into() };
        let idle = st(false, false);
        let e = apply_frozen(&idle, &start, &actor("U1"), 5, Some(&f), false).unwrap_err();
        assert_eq!(e, Refusal::Frozen(f.clone()));
        assert!(e.explain().contains("`weekend` is open until Mon 08:00"));
        // Running and blocked are reported first, as without a freeze.
        assert!(matches!(
            apply_frozen(&st(true, false), &start, &actor("U1"), 5, Some(&f), false),
            Err(Refusal::AlreadyRunning(_))
        ));
        assert!(matches!(
            apply_frozen(&st(false, true), &start, &actor("U1"), 5, Some(&f), true),
            Err(Refusal::Blocked(_))
        ));
        // Forcing needs an admin.
        assert_eq!(
            apply_frozen(&idle, &start, &actor("U1"), 5, Some(&f), true),
            Err(Refusal::ForceNotAllowed)
        );
        let admin = Actor {
            may_force: true,
            ..actor("U1")
        };
        assert!(
            apply_frozen(&idle, &start, &admin, 5, Some(&f), true)
                .unwrap()
                .running
                .is_some()
        );
        // Block, unblock and stop do not see the window.
        let block = LockAction::Block { reason: "".into() };
        assert!(apply_frozen(&idle, &block, &actor("U1"), 5, Some(&f), false).is_ok());
        assert!(
            apply_frozen(
                &st(false, true),
                &LockAction::Unblock,
                &actor("U1"),
                5,
                Some(&f),
                false
            )
            .is_ok()
        );
        assert!(
            apply_frozen(
                &st(true, false),
                &LockAction::Stop { force: false },
                &actor("U1"),
                5,
                Some(&f),
                false
            )
            .is_ok()
        );
        // No window: as apply.
        assert!(apply_frozen(&idle, &start, &actor("U1"), 5, None, false).is_ok());
    }

    #[test]
    fn people_and_times() {
        assert_eq!(person("U0ALICE"), "<@U0ALICE>");
        assert_eq!(person("Jörg <X>"), "Jörg &lt;X&gt;");
        assert!(when(1531420618).contains("2018-07-12 18:36 UTC"));
    }
}
