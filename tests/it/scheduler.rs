//! The scheduler on a driven clock: freeze windows around `/release start`, releasestatus
//! `/start` and the job gate; lock reminders and their Stop release button; digests on
//! time, late and skipped; daylight-saving days; two processes on one store firing once.

use std::sync::Arc;
use std::time::Duration;

use corral::app::interact::Click;
use corral::app::{Outcome, Request, Source};
use corral::clock::{ManualClock, SharedClock};
use corral::lock::{Actor, LockAction};
use jiff::Timestamp;

use crate::support::TempDir;
use crate::support::corral::{CHANNEL, Corral, TOKEN};
use crate::support::fake_slack::{FakeSlack, Posted};

const ADMIN: &str = "U0ADMIN";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn policy(dir: &TempDir, text: &str) -> String {
    let path = dir.0.join("policy.toml");
    std::fs::write(&path, format!("[roles]\nadmins = [\"{ADMIN}\"]\n{text}")).unwrap();
    path.display().to_string()
}

/// corral on `clock` with this policy (and a database URL, default in memory), its
/// scheduler running.
async fn corral(dir: &TempDir, text: &str, clock: &ManualClock, db: Option<&str>) -> Corral {
    let path = policy(dir, text);
    let mut env = vec![("CORRAL_POLICY", path.as_str())];
    if let Some(db) = db {
        env.push(("CORRAL_DATABASE_URL", db));
    }
    let c = Corral::start_on(&env, clock.shared()).await;
    c.app.start_scheduler();
    c
}

async fn corral_against(
    slack: FakeSlack,
    dir: &TempDir,
    text: &str,
    clock: &ManualClock,
    db: &str,
) -> Corral {
    let path = policy(dir, text);
    let env = [
        ("CORRAL_POLICY", path.as_str()),
        ("CORRAL_DATABASE_URL", db),
    ];
    let shared: SharedClock = clock.shared();
    let c = Corral::start_against(slack, &env, shared).await;
    c.app.start_scheduler();
    c
}

/// Lets real time pass while nudging the clock by 1 ms steps (the outbox's pacing), until
/// `done` holds over what the fake Slack keeps, or 10 s of real time.
async fn until(c: &Corral, clock: &ManualClock, done: impl Fn(&[Posted]) -> bool) -> Vec<Posted> {
    for _ in 0..1000 {
        let posted = c.slack.posted();
        if done(&posted) {
            return posted;
        }
        clock.advance(Duration::from_millis(25));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "not posted in time: {:#?}\noutbox: {:?}",
        c.slack.posted(),
        c.app.store.outbox_rows(None, 50).await
    );
}

/// Lets the scheduler and the outbox do whatever they would (real time), moving the
/// clock only by the outbox's pacing.
async fn settle(c: &Corral, clock: &ManualClock) {
    for _ in 0..40 {
        clock.advance(Duration::from_millis(25));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = c;
}

/// Drives the clock by the outbox's pacing until everything written is delivered (before
/// a test lets a process go).
async fn drained(c: &Corral, clock: &ManualClock) {
    for _ in 0..1000 {
        let rows = c.app.store.outbox_rows(None, 1000).await.unwrap();
        if rows.iter().all(|r| {
            !matches!(
                r.state,
                corral::store::RowState::Pending | corral::store::RowState::Edit
            )
        }) {
            return;
        }
        clock.advance(Duration::from_millis(25));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("outbox not drained");
}

fn with(posted: &[Posted], needle: &str) -> usize {
    posted.iter().filter(|p| p.text.contains(needle)).count()
}

async fn run(c: &Corral, text: &str, user: &str) -> corral::app::Reply {
    let (family, rest) = text.split_once(' ').unwrap_or((text, ""));
    let command = corral::command::parse_slash(&format!("/{family}"), rest).unwrap();
    c.app
        .handle(Request {
            command,
            user: user.into(),
            source: Source::Slack,
            channel: Some("C0TEAM".into()),
        })
        .await
}

async fn releasestatus(c: &Corral, path: &str) -> String {
    c.http
        .post(format!("{}{path}", c.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

const WEEKEND: &str = r#"
[[freeze]]
name     = "weekend"
cron     = "0 16 * * FRI"
duration = "64h"
timezone = "Europe/Berlin"
"#;

#[tokio::test]
async fn a_freeze_window_refuses_start_http_start_and_jobs_until_it_closes() {
    let dir = TempDir::new("sched-freeze");
    // Friday 2025-03-28, 15:59 in Berlin (CET); the clocks go forward on Sunday.
    let clock = ManualClock::new(ts("2025-03-28T14:59:00Z"));
    let c = corral(&dir, WEEKEND, &clock, None).await;
    settle(&c, &clock).await;
    assert_eq!(with(&c.slack.posted(), "Freeze window"), 0);
    let status = run(&c, "release status", "U1").await.text;
    assert!(
        status.contains("Next freeze window: `weekend` from Fri 2025-03-28 16:00 CET"),
        "{status}"
    );

    clock.set(ts("2025-03-28T15:00:00Z"));
    let posted = until(&c, &clock, |p| {
        with(p, "Freeze window `weekend` is open") == 1
    })
    .await;
    let entry = posted.iter().find(|p| p.text.contains("is open")).unwrap();
    assert_eq!(entry.channel, CHANNEL);
    // 64 hours later is Monday 09:00 CEST: the spring-forward weekend is an hour shorter
    // on the wall clock.
    assert!(
        entry
            .text
            .contains("until Mon 2025-03-31 09:00 CEST (07:00 UTC)"),
        "{}",
        entry.text
    );
    assert!(!entry.text.contains("not running"), "{}", entry.text);

    // Chat, releasestatus and the job gate refuse, naming the window and its end.
    let r = run(&c, "release start 1.4", "U1").await;
    assert_eq!(r.outcome, Outcome::Refused, "{}", r.text);
    assert!(
        r.text
            .contains("`weekend` is open until Mon 2025-03-31 09:00 CEST"),
        "{}",
        r.text
    );
    assert_eq!(releasestatus(&c, "/start?name=bob").await, "0");
    let r = run(&c, "upgrade image registry.example/app:2.0", "U1").await;
    assert_eq!(r.outcome, Outcome::Refused, "{}", r.text);
    assert!(r.text.contains("weekend"), "{}", r.text);
    assert!(c.app.store.jobs(5).await.unwrap().is_empty());
    let status = run(&c, "release status", "U1").await.text;
    assert!(
        status.contains("Freeze window `weekend` is open until Mon"),
        "{status}"
    );
    assert!(c.lock().await.running.is_none());

    // block / unblock keep touching only the manual block, with today's bytes.
    assert_eq!(releasestatus(&c, "/block").await, "1");
    assert_eq!(releasestatus(&c, "/block").await, "0");
    assert_eq!(releasestatus(&c, "/unblock").await, "1");
    assert_eq!(releasestatus(&c, "/unblock").await, "0");

    // A non-admin's --force is refused; an admin's passes, audited.
    let r = run(&c, "release start --force hotfix", "U1").await;
    assert_eq!(r.outcome, Outcome::Refused, "{}", r.text);
    let r = run(&c, "release start --force hotfix", ADMIN).await;
    assert_eq!(r.outcome, Outcome::Ok, "{}", r.text);
    let audit = c.app.store.audit_log(10).await.unwrap();
    assert!(
        audit.iter().any(|a| a.action == "release.start --force"
            && a.actor == ADMIN
            && a.detail.contains("freeze window weekend")),
        "{audit:?}"
    );
    assert!(c.app.store.lock_history(1).await.unwrap()[0].forced);
    assert_eq!(run(&c, "release stop", ADMIN).await.outcome, Outcome::Ok);
    // A job's --force by an admin passes the window too, audited.
    let r = run(&c, "upgrade image registry.example/app:2.0 --force", ADMIN).await;
    assert_eq!(r.outcome, Outcome::Ok, "{}", r.text);
    let audit = c.app.store.audit_log(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "lock-gate --force" && a.detail.contains("weekend")),
        "{audit:?}"
    );

    // A manual block made during the window outlives it.
    assert_eq!(releasestatus(&c, "/block").await, "1");
    clock.set(ts("2025-03-31T07:00:00Z"));
    let posted = until(&c, &clock, |p| with(p, "has closed") == 1).await;
    let exit = posted
        .iter()
        .find(|p| p.text.contains("has closed"))
        .unwrap();
    assert!(exit.text.contains("still blocked"), "{}", exit.text);
    assert_eq!(releasestatus(&c, "/start?name=bob").await, "0");
    assert_eq!(releasestatus(&c, "/unblock").await, "1");
    assert_eq!(releasestatus(&c, "/start?name=bob").await, "1");
    settle(&c, &clock).await;
    let posted = c.slack.posted();
    assert_eq!(with(&posted, "is open"), 1, "announced once");
    assert_eq!(with(&posted, "has closed"), 1, "announced once");
}

#[tokio::test]
async fn a_window_that_began_while_corral_was_down_is_active_at_start() {
    let dir = TempDir::new("sched-down");
    // Saturday noon: the window opened on Friday at 16:00 Berlin time.
    let clock = ManualClock::new(ts("2025-03-29T12:00:00Z"));
    let c = corral(&dir, WEEKEND, &clock, None).await;
    // Refused from the first request, before any announcement.
    assert_eq!(releasestatus(&c, "/start?name=bob").await, "0");
    let posted = until(&c, &clock, |p| with(p, "is open") == 1).await;
    let entry = posted.iter().find(|p| p.text.contains("is open")).unwrap();
    assert!(
        entry.text.contains(
            "It began at Fri 2025-03-28 16:00 CET (15:00 UTC), while corral was not running"
        ),
        "{}",
        entry.text
    );
}

const REMIND: &str = "[lock]\nremind_after = \"2h\"\nremind_every = \"30m\"\n";

fn stop_click(user: &str, value: &str) -> Click {
    Click {
        action_id: "release.stop".into(),
        block_id: "b".into(),
        value: value.into(),
        user: user.into(),
        source: Source::Slack,
        channel: Some(CHANNEL.into()),
        message_ts: Some("1.1".into()),
        response_url: None,
        trigger_id: None,
    }
}

#[tokio::test]
async fn reminders_thread_under_the_announcement_and_end_with_the_button() {
    let dir = TempDir::new("sched-remind");
    let start = ts("2025-06-06T10:00:00Z");
    let clock = ManualClock::new(start);
    let c = corral(&dir, REMIND, &clock, None).await;
    // Started over the HTTP API: corral announces it, and reminders thread under that.
    let actor = Actor {
        who: "api:bob".into(),
        may_force: false,
        holder_only_stop: false,
    };
    let started = c
        .app
        .change_lock(
            LockAction::Start {
                reason: "1.4 rollout".into(),
            },
            actor,
            Source::Api,
        )
        .await
        .unwrap();
    assert!(started.is_ok());
    let since = start.as_second().to_string();
    let posted = until(&c, &clock, |p| with(p, "started a release") == 1).await;
    let announce = posted
        .iter()
        .find(|p| p.text.contains("started a release"))
        .unwrap()
        .clone();

    // Nothing before two hours.
    clock.set(ts("2025-06-06T11:59:00Z"));
    settle(&c, &clock).await;
    assert_eq!(with(&c.slack.posted(), "⏰"), 0);
    clock.set(ts("2025-06-06T12:00:00Z"));
    let posted = until(&c, &clock, |p| with(p, "⏰") == 1).await;
    let first = posted.iter().find(|p| p.text.contains("⏰")).unwrap();
    assert_eq!(first.thread_ts.as_deref(), Some(announce.ts.as_str()));
    assert!(first.text.contains("api:bob"), "{}", first.text);
    assert!(
        first.text.contains("(1.4 rollout) has been running for 2h"),
        "{}",
        first.text
    );
    let call = c
        .slack
        .calls_to("chat.postMessage")
        .into_iter()
        .find(|k| k.text().contains("⏰"))
        .unwrap();
    let button = &call.body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .unwrap()["elements"][0];
    assert_eq!(button["action_id"], "release.stop");
    assert_eq!(button["value"], since.as_str());
    assert_eq!(button["text"]["text"], "Stop release");

    clock.set(ts("2025-06-06T12:30:00Z"));
    let posted = until(&c, &clock, |p| with(p, "⏰") == 2).await;
    assert!(
        posted
            .iter()
            .filter(|p| p.text.contains("⏰"))
            .all(|p| p.thread_ts.as_deref() == Some(announce.ts.as_str())),
        "one thread: {posted:#?}"
    );
    assert!(posted.iter().any(|p| p.text.contains("running for 2h30m")));

    // Someone else's click is refused, ephemerally; the release keeps running.
    let ack = c.app.click(stop_click("U0MALLORY", &since)).await;
    assert!(
        ack.text.contains("Only api:bob or an admin"),
        "{}",
        ack.text
    );
    assert!(c.lock().await.running.is_some());
    let mut eph = Vec::new();
    for _ in 0..300 {
        eph = c.slack.calls_to("chat.postEphemeral");
        if !eph.is_empty() {
            break;
        }
        clock.advance(Duration::from_millis(25));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        eph.iter()
            .any(|e| e.body["user"] == "U0MALLORY" && e.text().contains("Only api:bob")),
        "{eph:?}"
    );
    // A button that is not a number, or for another release, changes nothing.
    assert!(
        c.app
            .click(stop_click(ADMIN, "x'1"))
            .await
            .text
            .contains("could not be read")
    );
    assert!(
        c.app
            .click(stop_click(ADMIN, "12"))
            .await
            .text
            .contains("already stopped")
    );
    assert!(c.lock().await.running.is_some());
    // An admin's click stops it (audited as a forced stop).
    let ack = c.app.click(stop_click(ADMIN, &since)).await;
    assert_eq!(ack.text, "The release is stopped.");
    assert!(c.lock().await.running.is_none());
    let audit = c.app.store.audit_log(5).await.unwrap();
    assert!(
        audit.iter().any(|a| a.action == "release.stop --force"),
        "{audit:?}"
    );
    let posted = until(&c, &clock, |p| with(p, "Stop release button") == 1).await;
    assert!(posted.iter().any(|p| p.text.contains("force-stopped")
        && p.thread_ts.as_deref() == Some(announce.ts.as_str())));

    // No reminder after the stop.
    clock.set(ts("2025-06-06T15:00:00Z"));
    settle(&c, &clock).await;
    assert_eq!(with(&c.slack.posted(), "⏰"), 2);
}

#[tokio::test]
async fn reminders_of_a_release_started_in_slack_thread_under_the_first_and_stop_on_stop() {
    let dir = TempDir::new("sched-remind-slack");
    let start = ts("2025-06-06T10:00:00Z");
    let clock = ManualClock::new(start);
    let c = corral(&dir, REMIND, &clock, None).await;
    assert_eq!(
        run(&c, "release start", "U0ALICE").await.outcome,
        Outcome::Ok
    );
    clock.set(ts("2025-06-06T12:00:00Z"));
    let posted = until(&c, &clock, |p| with(p, "⏰") == 1).await;
    let first = posted
        .iter()
        .find(|p| p.text.contains("⏰"))
        .unwrap()
        .clone();
    assert_eq!(
        first.thread_ts, None,
        "the first reminder starts the thread"
    );
    assert!(first.text.contains("<@U0ALICE>"), "{}", first.text);
    clock.set(ts("2025-06-06T12:30:00Z"));
    let posted = until(&c, &clock, |p| with(p, "⏰") == 2).await;
    let second = posted
        .iter()
        .filter(|p| p.text.contains("⏰"))
        .nth(1)
        .unwrap();
    assert_eq!(second.thread_ts.as_deref(), Some(first.ts.as_str()));
    // The holder's own click stops it.
    let ack = c
        .app
        .click(stop_click("U0ALICE", &start.as_second().to_string()))
        .await;
    assert_eq!(ack.text, "The release is stopped.");
    // A new release by someone else is not stopped by the old button.
    assert_eq!(run(&c, "release start", "U0BOB").await.outcome, Outcome::Ok);
    let ack = c
        .app
        .click(stop_click("U0BOB", &start.as_second().to_string()))
        .await;
    assert!(ack.text.contains("already stopped"), "{}", ack.text);
    assert_eq!(c.lock().await.running.unwrap().who, "U0BOB");
    // Stopped through the chat: the reminders of that release stop.
    assert_eq!(run(&c, "release stop", "U0BOB").await.outcome, Outcome::Ok);
    clock.set(ts("2025-06-06T18:00:00Z"));
    settle(&c, &clock).await;
    assert_eq!(with(&c.slack.posted(), "⏰"), 2);
}

const DIGEST: &str = "[[digest]]\ncron = \"0 9 * * MON-FRI\"\nchannel = \"C0DIGEST\"\n";

#[tokio::test]
async fn a_digest_reports_lock_and_jobs_on_time_late_once_and_skips_old_misses() {
    let dir = TempDir::new("sched-digest");
    let db = format!("sqlite://{}/c.db", dir.0.display());
    // Thursday 08:59:30.
    let clock = ManualClock::new(ts("2025-06-05T08:59:30Z"));
    {
        let c = corral(&dir, DIGEST, &clock, Some(&db)).await;
        assert_eq!(
            run(&c, "release start 1.4", "U0ALICE").await.outcome,
            Outcome::Ok
        );
        clock.set(ts("2025-06-05T09:00:00Z"));
        let posted = until(&c, &clock, |p| with(p, "Release digest") == 1).await;
        let d = posted
            .iter()
            .find(|p| p.text.contains("Release digest"))
            .unwrap();
        assert_eq!(d.channel, "C0DIGEST");
        assert!(d.text.contains("Thu 2025-06-05 09:00 UTC"), "{}", d.text);
        assert!(
            d.text.contains("Release held by <@U0ALICE> for 30s (1.4)"),
            "{}",
            d.text
        );
        assert!(d.text.contains("*Awaiting approval* (0)"), "{}", d.text);
        assert!(d.text.contains("*Running jobs* (0)"), "{}", d.text);
        assert!(!d.text.contains("late"), "{}", d.text);
        drained(&c, &clock).await;
    }
    // Down from Thursday until Monday 10:00: Friday's is skipped, Monday's sent late.
    let clock = ManualClock::new(ts("2025-06-09T10:00:00Z"));
    let c = corral(&dir, DIGEST, &clock, Some(&db)).await;
    let posted = until(&c, &clock, |p| with(p, "Release digest") == 1).await;
    let d = posted
        .iter()
        .find(|p| p.text.contains("Release digest"))
        .unwrap();
    assert!(d.text.contains("Mon 2025-06-09 09:00 UTC"), "{}", d.text);
    assert!(d.text.contains("Sent 1h late"), "{}", d.text);
    settle(&c, &clock).await;
    assert_eq!(with(&c.slack.posted(), "Release digest"), 1, "sent once");
    drained(&c, &clock).await;
    drop(c);
    // Down from Monday until Wednesday 09:30 a day later than Tuesday's: Tuesday's was
    // missed by more than the period; Wednesday's is only 30 minutes late.
    let clock = ManualClock::new(ts("2025-06-11T09:30:00Z"));
    let c = corral(&dir, DIGEST, &clock, Some(&db)).await;
    let posted = until(&c, &clock, |p| with(p, "Release digest") == 1).await;
    assert!(posted[0].text.contains("Wed 2025-06-11") && posted[0].text.contains("30m late"));
    drained(&c, &clock).await;
    drop(c);
    // Down from Wednesday until Saturday: Friday's digest is 25 hours old, more than a
    // period: nothing is sent.
    let clock = ManualClock::new(ts("2025-06-14T10:00:00Z"));
    let c = corral(&dir, DIGEST, &clock, Some(&db)).await;
    settle(&c, &clock).await;
    assert_eq!(
        with(&c.slack.posted(), "Release digest"),
        0,
        "{:#?}",
        c.slack.posted()
    );
    let store = corral::store::open(&db).await.unwrap();
    let latest = store
        .latest_firing("digest:C0DIGEST:0 9 * * MON-FRI@UTC")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (latest.outcome.as_str(), latest.at),
        ("skipped", ts("2025-06-13T09:00:00Z").as_second())
    );
}

/// Drives `fire_due` minute by minute over `[from, to)` and returns the times at which a
/// digest row was written.
async fn firings_between(c: &Corral, clock: &ManualClock, from: &str, to: &str) -> Vec<Timestamp> {
    let (mut t, end) = (ts(from), ts(to));
    let mut out = Vec::new();
    let mut seen = 0;
    while t < end {
        clock.set(t);
        c.app.fire_due().await.unwrap();
        let n = c
            .app
            .store
            .outbox_rows(None, 1000)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.channel == "C0DST")
            .count();
        if n > seen {
            out.push(t);
            seen = n;
        }
        t = t.checked_add(jiff::SignedDuration::from_mins(1)).unwrap();
    }
    out
}

async fn dst_corral(dir: &TempDir, cron: &str, zone: &str, clock: &ManualClock) -> Corral {
    let text =
        format!("[[digest]]\ncron = \"{cron}\"\nchannel = \"C0DST\"\ntimezone = \"{zone}\"\n");
    // No scheduler loop here: the test calls fire_due itself, minute by minute.
    let path = policy(dir, &text);
    Corral::start_on(&[("CORRAL_POLICY", path.as_str())], clock.shared()).await
}

#[tokio::test]
async fn spring_forward_and_fall_back_fire_once_in_berlin_and_new_york() {
    for (zone, cron, from, to, want) in [
        // Spring forward: 02:30 does not exist; it fires once, at 03:00 local.
        (
            "Europe/Berlin",
            "30 2 * * *",
            "2025-03-30T00:00:00Z",
            "2025-03-30T03:00:00Z",
            "2025-03-30T01:00:00Z",
        ),
        (
            "America/New_York",
            "30 2 * * *",
            "2025-03-09T06:00:00Z",
            "2025-03-09T09:00:00Z",
            "2025-03-09T07:00:00Z",
        ),
        // Fall back: 02:30 (Berlin) and 01:30 (New York) happen twice; fired once, in the
        // earlier offset.
        (
            "Europe/Berlin",
            "30 2 * * *",
            "2025-10-25T23:00:00Z",
            "2025-10-26T03:00:00Z",
            "2025-10-26T00:30:00Z",
        ),
        (
            "America/New_York",
            "30 1 * * *",
            "2025-11-02T04:00:00Z",
            "2025-11-02T08:00:00Z",
            "2025-11-02T05:30:00Z",
        ),
    ] {
        let dir = TempDir::new(&format!("sched-dst-{}", from.replace(':', "")));
        let clock = ManualClock::new(ts(from));
        let c = dst_corral(&dir, cron, zone, &clock).await;
        let got = firings_between(&c, &clock, from, to).await;
        assert_eq!(got, vec![ts(want)], "{zone} {cron} from {from}");
    }
}

#[tokio::test]
async fn two_processes_on_one_sqlite_store_fire_once() {
    let dir = TempDir::new("sched-two");
    let db = format!("sqlite://{}/c.db", dir.0.display());
    two_processes_fire_once(&dir, &db).await;
}

#[tokio::test]
async fn two_processes_on_one_postgres_store_fire_once() {
    let dir = TempDir::new("sched-two-pg");
    let db = crate::support::postgres::TestDb::new("sched").await;
    two_processes_fire_once(&dir, &db.url).await;
}

async fn two_processes_fire_once(dir: &TempDir, db: &str) {
    let policy = format!("{WEEKEND}{DIGEST}{REMIND}");
    let clock = ManualClock::new(ts("2025-06-06T08:59:00Z"));
    let slack = FakeSlack::start_with_clock(clock.shared()).await;
    let a = corral_against(slack.clone(), dir, &policy, &clock, db).await;
    let b = corral_against(slack.clone(), dir, &policy, &clock, db).await;
    assert_eq!(
        run(&a, "release start", "U0ALICE").await.outcome,
        Outcome::Ok
    );
    for t in [
        "2025-06-06T09:00:00Z",
        "2025-06-06T11:00:00Z",
        "2025-06-06T14:00:00Z",
    ] {
        clock.set(ts(t));
        for _ in 0..30 {
            clock.advance(Duration::from_millis(25));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Both processes have seen the digest at 09:00, the reminder at 11:00 and the freeze
    // opening at 16:00 Berlin (14:00 UTC); each was sent once.
    until(&a, &clock, |p| {
        with(p, "Release digest") >= 1 && with(p, "⏰") >= 2 && with(p, "is open") >= 1
    })
    .await;
    settle(&b, &clock).await;
    let posted = slack.posted();
    assert_eq!(with(&posted, "Release digest"), 1, "{posted:#?}");
    // Reminder 0 at 11:00, and at 14:00 only the latest due (reminder 6), once each.
    assert_eq!(with(&posted, "⏰"), 2, "{posted:#?}");
    assert_eq!(with(&posted, "is open"), 1, "{posted:#?}");
    let _keep: Arc<corral::app::App> = b.app.clone();
}

#[tokio::test]
async fn a_restart_in_the_same_second_loses_no_announcement() {
    let dir = TempDir::new("sched-same-second");
    let clock = ManualClock::new(ts("2025-06-06T10:00:00Z"));
    let c = corral(&dir, REMIND, &clock, None).await;
    for path in ["/start?name=bob", "/stop", "/start?name=bob"] {
        assert_eq!(releasestatus(&c, path).await, "1", "{path}");
    }
    let posted = until(&c, &clock, |p| with(p, "started a release") == 2).await;
    assert_eq!(with(&posted, "finished the release"), 1);
    // The reminders of the second release thread under the first announcement of that
    // second (the one keyed for it).
    clock.set(ts("2025-06-06T12:00:00Z"));
    let posted = until(&c, &clock, |p| with(p, "⏰") == 1).await;
    let first = posted
        .iter()
        .find(|p| p.text.contains("started a release"))
        .unwrap();
    let reminder = posted.iter().find(|p| p.text.contains("⏰")).unwrap();
    assert_eq!(reminder.thread_ts.as_deref(), Some(first.ts.as_str()));
}

#[tokio::test]
async fn a_digest_lists_stacks_behind_their_catalog_and_says_when_rancher_is_unreachable() {
    use crate::support::fake_rancher::{ACCESS_KEY, FakeRancher, SECRET_KEY};
    let f = FakeRancher::start().await;
    let files: &[(&str, &str)] = &[("docker-compose.yml", "x")];
    f.add_template(
        "library",
        "my_web",
        &[
            ("1", "1.0.0", files),
            ("9", "1.9.0", files),
            ("11", "2.1.0", files),
        ],
    );
    f.add_template("library", "db", &[("1", "1.0", files), ("2", "2.0", files)]);
    let prod = f.add_project("prod");
    let staging = f.add_project("staging");
    f.add_stack(&prod, "a", "catalog://library:my_web:1");
    f.add_stack(&prod, "b-newest", "catalog://library:my_web:11");
    f.add_stack(&staging, "c", "catalog://library:my_web:9");
    f.add_stack(&prod, "d", "catalog://library:db:1");
    f.add_stack(&staging, "handmade", "");
    f.add_stack(&staging, "other", "catalog://library:gone:1");

    let dir = TempDir::new("sched-digest-rancher");
    let path = policy(&dir, DIGEST);
    let url = format!("{}/v1", f.url);
    let env = [
        ("CORRAL_POLICY", path.as_str()),
        ("RANCHER_URL", url.as_str()),
        ("RANCHER_ACCESS_KEY", ACCESS_KEY),
        ("RANCHER_SECRET_KEY", SECRET_KEY),
        ("CORRAL_RANCHER_RATE", "2000"),
    ];
    let clock = ManualClock::new(ts("2025-06-05T08:59:00Z"));
    let c = Corral::start_on(&env, clock.shared()).await;
    c.app.start_scheduler();
    clock.set(ts("2025-06-05T09:00:00Z"));
    let posted = until(&c, &clock, |p| with(p, "Release digest") == 1).await;
    let d = &posted
        .iter()
        .find(|p| p.text.contains("Release digest"))
        .unwrap()
        .text;
    let want = "*Stacks behind their catalog* (3)\n\
                `library:db` (newest 2.0):\n\
                • prod / d at 1.0\n\
                `library:my_web` (newest 2.1.0):\n\
                • prod / a at 1.0.0\n\
                • staging / c at 1.9.0";
    assert!(d.contains(want), "{d}");
    assert!(
        !d.contains("b-newest") && !d.contains("handmade") && !d.contains("gone"),
        "{d}"
    );
    // Read-only: nothing but GETs reached Rancher.
    assert!(f.posts().is_empty(), "{:?}", f.posts());

    // Rancher down: the next digest says so and still reports the rest.
    f.fail_requests(None, "projects", 503, 1000);
    clock.set(ts("2025-06-06T09:00:00Z"));
    let posted = until(&c, &clock, |p| with(p, "Release digest") == 2).await;
    let d = &posted
        .iter()
        .filter(|p| p.text.contains("Release digest"))
        .nth(1)
        .unwrap()
        .text;
    assert!(d.contains("Rancher could not be reached"), "{d}");
    assert!(d.contains("*Lock*") && d.contains("*Running jobs*"), "{d}");
}
