//! The outbox's nouns: what a decision asks to be said ([`NewMessage`]), and the rows the
//! sender works from ([`OutboxRow`]).
//!
//! **One row per message.** A row is the desired state of one logical message: its newest
//! content (`version`), the version last delivered (`sent_version`) and, once posted, its
//! Slack `ts`. Posting is delivering version 1; an edit bumps the version and the sender
//! sends the newest one, so a burst of edits collapses into one `chat.update`, and an edit
//! of a post still waiting simply changes what will be posted.
//!
//! **Keys.** A message may have a key (`job:12:root`) so an edit names the message it
//! edits, and a reply names its thread's root, before either has a `ts`. A keyed post is
//! idempotent: enqueueing the same key again does nothing.
//!
//! **Lanes.** Rows of one lane go out in commit order: a per-lane sequence number is
//! assigned in the inserting transaction (never the id, which does not order lanes on a
//! networked database). The lane of a post is its channel, so posts in a channel keep
//! their order and a reply (committed after its root, in the same channel) waits for it;
//! ephemeral and response_url rows have lanes of their own; edits are not in a lane.

use serde::{Deserialize, Serialize};

use crate::chat::Message;

/// The key of a job's thread root.
pub(crate) fn root_key(job: i64) -> String {
    format!("job:{job}:root")
}

/// Where a reply goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Thread {
    /// Under the message with this key (posted, or still waiting to be).
    Key(String),
    /// Under a message Slack already gave a `ts` (a user's mention).
    Ts(String),
}

/// How a message is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A new message in `channel` (in a thread when `thread` is given).
    Post {
        key: Option<String>,
        channel: String,
        thread: Option<Thread>,
    },
    /// New content for the message `key` names.
    Edit { key: String },
    /// Shown to one user (`chat.postEphemeral`); dropped if not sent within 30 minutes.
    Ephemeral {
        channel: String,
        user: String,
        thread_ts: Option<String>,
    },
    /// A `response_url` answer; valid 30 minutes from `issued_at_ms`, 5 uses.
    Respond {
        url: String,
        in_channel: bool,
        issued_at_ms: i64,
    },
}

/// What a message is for. Destinations that cannot thread or edit (an incoming webhook)
/// post only plans, outcomes, announcements and replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A job's root message, edited as the job moves.
    Root,
    Plan,
    /// One environment or host group finished.
    Group,
    Note,
    /// A job's outcome.
    Summary,
    /// A lock change or other news for the notification channels.
    Announcement,
    /// An answer to someone (a mention, a click).
    Reply,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Plan => "plan",
            Role::Group => "group",
            Role::Note => "note",
            Role::Summary => "summary",
            Role::Announcement => "announcement",
            Role::Reply => "reply",
        }
    }

    /// Whether a destination without threads still posts it.
    pub(crate) fn standalone(self) -> bool {
        matches!(
            self,
            Role::Plan | Role::Summary | Role::Announcement | Role::Reply
        )
    }
}

impl std::str::FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "root" => Role::Root,
            "plan" => Role::Plan,
            "group" => Role::Group,
            "note" => Role::Note,
            "summary" => Role::Summary,
            "announcement" => Role::Announcement,
            "reply" => Role::Reply,
            _ => return Err(()),
        })
    }
}

/// One message to write, with the decision that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub delivery: Delivery,
    pub role: Role,
    pub job: Option<i64>,
    pub message: Message,
    /// When it was wanted (Unix ms, from the app's clock): ages and give-up count from here.
    pub at_ms: i64,
}

impl NewMessage {
    /// A post in `channel`.
    pub fn post(at_ms: i64, channel: impl Into<String>, message: Message) -> NewMessage {
        NewMessage {
            delivery: Delivery::Post {
                key: None,
                channel: channel.into(),
                thread: None,
            },
            role: Role::Announcement,
            job: None,
            message,
            at_ms,
        }
    }

    /// A reply in a thread of `channel`.
    pub fn reply(
        at_ms: i64,
        channel: impl Into<String>,
        thread: Thread,
        message: Message,
    ) -> NewMessage {
        NewMessage {
            delivery: Delivery::Post {
                key: None,
                channel: channel.into(),
                thread: Some(thread),
            },
            role: Role::Reply,
            job: None,
            message,
            at_ms,
        }
    }

    /// New content for the message `key`.
    pub fn edit(at_ms: i64, key: impl Into<String>, message: Message) -> NewMessage {
        NewMessage {
            delivery: Delivery::Edit { key: key.into() },
            role: Role::Root,
            job: None,
            message,
            at_ms,
        }
    }

    /// An ephemeral message for `user` in `channel`.
    pub fn ephemeral(
        at_ms: i64,
        channel: impl Into<String>,
        user: impl Into<String>,
        message: Message,
    ) -> NewMessage {
        NewMessage {
            delivery: Delivery::Ephemeral {
                channel: channel.into(),
                user: user.into(),
                thread_ts: None,
            },
            role: Role::Reply,
            job: None,
            message,
            at_ms,
        }
    }

    /// An answer through a `response_url` issued at `issued_at_ms`.
    pub fn respond(
        at_ms: i64,
        url: impl Into<String>,
        in_channel: bool,
        issued_at_ms: i64,
        message: Message,
    ) -> NewMessage {
        NewMessage {
            delivery: Delivery::Respond {
                url: url.into(),
                in_channel,
                issued_at_ms,
            },
            role: Role::Reply,
            job: None,
            message,
            at_ms,
        }
    }

    /// Names this post (only posts have keys).
    pub fn keyed(mut self, name: impl Into<String>) -> NewMessage {
        if let Delivery::Post { key, .. } = &mut self.delivery {
            *key = Some(name.into());
        }
        self
    }

    pub(crate) fn role(mut self, role: Role) -> NewMessage {
        self.role = role;
        self
    }

    pub fn job(mut self, job: i64) -> NewMessage {
        self.job = Some(job);
        self
    }
}

/// What writing a [`NewMessage`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new row.
    New(i64),
    /// An edit folded into the row of its message (still to be posted, or to be edited).
    Coalesced(i64),
    /// A keyed post whose key exists: nothing written.
    Duplicate(i64),
    /// An edit of a key no row has (or whose message failed): nothing written.
    Missing,
}

/// How a row's first delivery is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    Post,
    Ephemeral,
    Respond,
}

impl RowKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RowKind::Post => "post",
            RowKind::Ephemeral => "ephemeral",
            RowKind::Respond => "respond",
        }
    }
}

impl std::str::FromStr for RowKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "post" => RowKind::Post,
            "ephemeral" => RowKind::Ephemeral,
            "respond" => RowKind::Respond,
            _ => return Err(()),
        })
    }
}

/// Where a row is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    /// Not delivered yet.
    Pending,
    /// Delivered; a newer version waits to be edited in.
    Edit,
    /// Delivered, up to date.
    Done,
    /// Refused for good (the reason is in `last_error`).
    Failed,
    /// Given up after the give-up age.
    Dead,
    /// Not delivered on purpose: expired, unsupported by the destination, or an unknown
    /// outcome that must not be repeated (at most once).
    Dropped,
}

impl RowState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RowState::Pending => "pending",
            RowState::Edit => "edit",
            RowState::Done => "done",
            RowState::Failed => "failed",
            RowState::Dead => "dead",
            RowState::Dropped => "dropped",
        }
    }
}

impl std::str::FromStr for RowState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "pending" => RowState::Pending,
            "edit" => RowState::Edit,
            "done" => RowState::Done,
            "failed" => RowState::Failed,
            "dead" => RowState::Dead,
            "dropped" => RowState::Dropped,
            _ => return Err(()),
        })
    }
}

/// One outbox row as the sender sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub key: Option<String>,
    pub kind: RowKind,
    pub lane: String,
    pub seq: i64,
    pub channel: String,
    pub thread: Option<Thread>,
    /// The thread root's `ts` and state, when `thread` is a key.
    pub root_ts: Option<String>,
    pub root_state: Option<RowState>,
    pub user: Option<String>,
    pub url: Option<String>,
    pub in_channel: bool,
    pub role: Role,
    pub job: Option<i64>,
    pub message: Message,
    pub version: i64,
    pub sent_version: i64,
    pub state: RowState,
    pub ts: Option<String>,
    pub attempts: i64,
    /// The last attempt's outcome is unknown: look before posting again.
    pub unknown: bool,
    pub not_before: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Past this (Unix ms) the row is dropped instead of sent (ephemeral, response_url).
    pub expires_at: Option<i64>,
    pub last_error: Option<String>,
}

impl OutboxRow {
    /// The key, or `outbox:<id>` for an unnamed row (logs).
    pub(crate) fn name(&self) -> String {
        self.key
            .clone()
            .unwrap_or_else(|| format!("outbox:{}", self.id))
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// `version` was delivered (`ts` for a post); still `Edit` if a newer one waits.
    Delivered {
        version: i64,
        ts: Option<String>,
    },
    /// Looked for an earlier attempt's post and it is not there: send it (clears `unknown`).
    NotFound,
    /// Try again at `not_before_ms`; `unknown`: the outcome of this attempt is unknown.
    Retry {
        not_before_ms: i64,
        error: String,
        unknown: bool,
    },
    /// An edit that cannot be made (the post is gone): the post stays, the edit is dropped.
    EditRefused {
        version: i64,
        error: String,
    },
    Failed {
        error: String,
    },
    Dead {
        error: String,
    },
    Dropped {
        reason: String,
    },
}

/// The outbox at a glance (metrics, `corral check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Rows with something left to deliver (pending or edit).
    pub depth: u64,
    /// When the oldest of them was wanted (Unix ms).
    pub oldest_ms: Option<i64>,
    pub dead: u64,
    pub failed: u64,
}
