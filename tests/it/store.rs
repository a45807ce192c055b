//! The store's contract, run against every backend (`backends()`): SQLite in memory, a
//! SQLite file and a PostgreSQL database of the test's own, so the implementations
//! cannot drift apart. Each test opens fresh stores. PostgreSQL is never skipped: without
//! `CORRAL_TEST_POSTGRES_URL` (set by `./test`) these tests fail and say so.

use std::sync::Arc;

use corral::door::Source;
use corral::job::{JobKind, JobStatus, Outcome};
use corral::lock::{Actor, LockAction, LockState, Refusal};
use corral::store::{
    AuditEntry, DeployReport, Effects, LockDecision, LockHistoryEntry, NewJob, Store,
};

use crate::support::TempDir;
use crate::support::postgres::TestDb;

/// Every backend under test, each on a new, empty database: its URL, the store, and the
/// PostgreSQL database to drop afterwards.
async fn backends(dir: &TempDir) -> Vec<(String, Arc<dyn Store>, Option<TestDb>)> {
    let mut out = Vec::new();
    for url in [
        "sqlite::memory:".to_string(),
        format!("sqlite://{}/c.db", dir.0.display()),
    ] {
        let store = corral::store::open(&url).await.expect("open");
        out.push((url, store, None));
    }
    let db = TestDb::new("store").await;
    let store = corral::store::open(&db.url).await.expect("open PostgreSQL");
    out.push((db.url.clone(), store, Some(db)));
    out
}

fn actor(who: &str) -> Actor {
    Actor {
        who: who.into(),
        may_force: false,
        holder_only_stop: true,
    }
}

/// A lock change the way the app makes one: the pure table inside the transaction.
async fn change(
    s: &dyn Store,
    action: LockAction,
    who: &str,
    now: i64,
) -> Result<(LockState, LockDecision), Refusal> {
    let who = who.to_string();
    s.change_lock(Box::new(move |st| {
        let state = corral::lock::apply(st, &action, &actor(&who), now)?;
        Ok(LockDecision {
            state,
            history: LockHistoryEntry {
                at: now,
                actor: who.clone(),
                action: action.name().into(),
                reason: action.reason().into(),
                source: Source::Slack,
                forced: false,
            },
            effects: Effects {
                audit: vec![AuditEntry {
                    at: now,
                    actor: who.clone(),
                    action: format!("test {}", action.name()),
                    detail: String::new(),
                    source: Source::Slack,
                }],
                ..Effects::default()
            },
        })
    }))
    .await
    .expect("store answers")
}

fn new_job(now: i64) -> NewJob {
    NewJob {
        kind: JobKind::Deploy,
        command: "/deploy https://x/m.yml".into(),
        requested_by: "U1".into(),
        source: Source::Slack,
        channel: Some("C1".into()),
        now,
    }
}

#[tokio::test]
async fn lock_changes_write_state_history_and_effects_or_nothing() {
    let dir = TempDir::new("store-lock");
    for (url, s, _db) in backends(&dir).await {
        let s = s.as_ref();
        let start = LockAction::Start {
            reason: "1.4.0".into(),
        };
        let (before, written) = change(s, start, "U1", 100).await.expect(&url);
        assert_eq!(before, LockState::default(), "{url}");
        assert_eq!(written.state.running.as_ref().unwrap().since, 100);
        assert_eq!(s.lock_state().await.unwrap(), written.state, "{url}");
        let h = s.lock_history(10).await.unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0].action.as_str(), h[0].reason.as_str(), h[0].source),
            ("start", "1.4.0", Source::Slack)
        );
        assert_eq!(s.audit_log(10).await.unwrap()[0].action, "test start");
        // A refusal writes nothing at all.
        let again = LockAction::Start { reason: "x".into() };
        assert!(matches!(
            change(s, again, "U2", 101).await,
            Err(Refusal::AlreadyRunning(_))
        ));
        assert_eq!(s.lock_history(10).await.unwrap().len(), 1, "{url}");
        assert_eq!(s.audit_log(10).await.unwrap().len(), 1, "{url}");
    }
}

#[tokio::test]
async fn racing_starts_have_exactly_one_winner() {
    let dir = TempDir::new("store-race");
    for (url, s, _db) in backends(&dir).await {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let a = LockAction::Start {
                        reason: format!("r{i}"),
                    };
                    change(s.as_ref(), a, &format!("U{i}"), 100).await.is_ok()
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1, "{url}");
        assert_eq!(s.lock_history(100).await.unwrap().len(), 1, "{url}");
    }
}

#[tokio::test]
async fn jobs_pass_the_gate_in_one_transaction() {
    let dir = TempDir::new("store-jobs");
    for (url, s, _db) in backends(&dir).await {
        // Refused by the gate: no job, no audit line.
        let refused = s
            .create_job(new_job(10), Box::new(|_| Err("blocked".to_string())))
            .await
            .unwrap();
        assert_eq!(refused, Err("blocked".to_string()), "{url}");
        assert!(s.jobs(10).await.unwrap().is_empty());
        assert!(s.audit_log(10).await.unwrap().is_empty());
        // The gate sees the lock as it is inside the transaction.
        change(
            s.as_ref(),
            LockAction::Block { reason: "b".into() },
            "U9",
            5,
        )
        .await
        .unwrap();
        let j = s
            .create_job(
                new_job(10),
                Box::new(|lock| {
                    assert!(lock.blocked.is_some());
                    Ok(Effects {
                        audit: vec![AuditEntry {
                            at: 10,
                            actor: "U1".into(),
                            action: "lock-gate --force".into(),
                            detail: "forced".into(),
                            source: Source::Slack,
                        }],
                        ..Effects::default()
                    })
                }),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (j.kind, j.source, j.status, j.created_at),
            (JobKind::Deploy, Source::Slack, JobStatus::Queued, 10)
        );
        let actions: Vec<String> = s
            .audit_log(10)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        assert!(actions.contains(&"lock-gate --force".to_string()), "{url}");
        assert!(actions.contains(&format!("job {} created", j.id)), "{url}");
        assert_eq!(s.unfinished_jobs().await.unwrap().len(), 1);
        s.set_job_status(j.id, JobStatus::Running, 11)
            .await
            .unwrap();
        s.set_job_progress(j.id, 1, 0, 2, 12).await.unwrap();
        // A job has one thread root (an outbox row keyed job:N:root): the newest wins.
        s.set_message(j.id, "C1", "1.1").await.unwrap();
        s.set_message(j.id, "C1", "1.2").await.unwrap();
        assert_eq!(
            s.messages(j.id).await.unwrap(),
            vec![("C1".into(), "1.2".into())]
        );
        s.set_message(j.id, "C2", "2.1").await.unwrap();
        assert_eq!(
            s.messages(j.id).await.unwrap(),
            vec![("C2".into(), "2.1".into())]
        );
        let out = Outcome {
            succeeded: 2,
            summary: "done".into(),
            ..Outcome::default()
        };
        s.finish_job(j.id, JobStatus::Succeeded, &out, 13)
            .await
            .unwrap();
        let j = s.job(j.id).await.unwrap().unwrap();
        assert_eq!(j.status, JobStatus::Succeeded);
        assert_eq!((j.done, j.total, j.updated_at), (1, 2, 13));
        assert_eq!(j.outcome.unwrap().succeeded, 2);
        assert!(s.unfinished_jobs().await.unwrap().is_empty(), "{url}");
        assert!(s.job(j.id + 100).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn deliveries_are_seen_once_until_pruned() {
    let dir = TempDir::new("store-dedupe");
    for (url, s, _db) in backends(&dir).await {
        assert!(s.first_delivery("Ev1", 100).await.unwrap(), "{url}");
        assert!(!s.first_delivery("Ev1", 101).await.unwrap(), "{url}");
        assert!(s.first_delivery("hook:Ev1", 101).await.unwrap(), "{url}");
        // Remembered until pruned: pruning keys seen before 101 forgets Ev1 only.
        assert!(!s.first_delivery("Ev1", 100 + 25 * 3600 + 1).await.unwrap());
        let pruned = s.prune(0, 101).await.unwrap();
        assert_eq!(pruned.seen, 1, "{url}");
        assert!(!s.first_delivery("hook:Ev1", 200).await.unwrap(), "{url}");
        assert!(s.first_delivery("Ev1", 201).await.unwrap(), "{url}");
    }
}

#[tokio::test]
async fn a_hosts_first_deploy_report_wins() {
    let dir = TempDir::new("store-reports");
    for (url, s, _db) in backends(&dir).await {
        let job = s
            .create_job(new_job(10), Box::new(|_| Ok(Effects::default())))
            .await
            .unwrap()
            .unwrap();
        let r = |host: &str, ok: bool, at: i64| DeployReport {
            job_id: job.id,
            host: host.into(),
            ok,
            duration_ms: 1200,
            log_tail: "tail".into(),
            error: (!ok).then(|| "exit status 1".into()),
            event_id: None,
            at,
        };
        assert!(s.add_deploy_report(&r("web-2", false, 20)).await.unwrap());
        assert!(s.add_deploy_report(&r("web-1", true, 21)).await.unwrap());
        assert!(!s.add_deploy_report(&r("web-2", true, 22)).await.unwrap());
        let got = s.deploy_reports(job.id).await.unwrap();
        assert_eq!(
            got,
            vec![r("web-2", false, 20), r("web-1", true, 21)],
            "{url}"
        );
        assert!(s.deploy_reports(job.id + 1).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_deploy_jobs_expected_hosts() {
    let dir = TempDir::new("store-hosts");
    for (url, s, _db) in backends(&dir).await {
        let job = s
            .create_job(new_job(10), Box::new(|_| Ok(Effects::default())))
            .await
            .unwrap()
            .unwrap();
        // No set recorded yet: the store cannot say.
        assert_eq!(
            s.deploy_host_expected(job.id, "web-1").await.unwrap(),
            None,
            "{url}"
        );
        let hosts: Vec<String> = vec!["web-1".into(), "web-2".into()];
        s.expect_deploy_hosts(job.id, &hosts).await.unwrap();
        // Idempotent, and hosts are only added.
        s.expect_deploy_hosts(job.id, &hosts[..1]).await.unwrap();
        for (host, want) in [
            ("web-1", true),
            ("web-2", true),
            ("web-3", false),
            ("WEB-1", false),
            ("web-1 ", false),
            ("", false),
            ("%", false),
        ] {
            assert_eq!(
                s.deploy_host_expected(job.id, host).await.unwrap(),
                Some(want),
                "{url}: {host:?}"
            );
        }
        // Another job's set is its own.
        assert_eq!(
            s.deploy_host_expected(job.id + 1, "web-1").await.unwrap(),
            None,
            "{url}"
        );
        // Only jobs that exist can have hosts.
        assert!(
            s.expect_deploy_hosts(job.id + 99, &hosts).await.is_err(),
            "{url}"
        );
    }
}

#[tokio::test]
async fn state_survives_reopening_the_file() {
    let dir = TempDir::new("store-reopen");
    let url = format!("sqlite://{}/c.db", dir.0.display());
    {
        let s = corral::store::open(&url).await.unwrap();
        let a = LockAction::Start {
            reason: "1.4.0".into(),
        };
        change(s.as_ref(), a, "U1", 100).await.unwrap();
    }
    let s = corral::store::open(&url).await.unwrap();
    assert_eq!(
        s.lock_state().await.unwrap().running.unwrap().reason,
        "1.4.0"
    );
    assert_eq!(s.lock_history(10).await.unwrap()[0].action, "start");
}

#[tokio::test]
async fn a_database_from_the_first_release_upgrades_in_place() {
    let dir = TempDir::new("store-v01");
    let path = dir.0.join("corral.db");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/store/corral-v0.1.db"
    );
    std::fs::copy(fixture, &path).unwrap();
    let url = format!("sqlite://{}", path.display());
    let s = corral::store::open(&url).await.expect("old database opens");
    let lock = s.lock_state().await.unwrap();
    let holder = lock.running.expect("the release left running");
    assert_eq!(
        (holder.who.as_str(), holder.reason.as_str()),
        ("cli:alice", "left running at upgrade")
    );
    let history = s.lock_history(10).await.unwrap();
    assert_eq!(history.len(), 5);
    assert!(history.iter().all(|h| h.source == Source::Cli));
    let jobs = s.jobs(10).await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        (jobs[1].kind, jobs[1].status),
        (JobKind::UpgradeCatalog, JobStatus::Failed)
    );
    assert!(
        jobs[1]
            .outcome
            .as_ref()
            .unwrap()
            .summary
            .contains("Rancher is not configured")
    );
    assert_eq!(
        (jobs[0].kind, jobs[0].status),
        (JobKind::Deploy, JobStatus::Running)
    );
    assert_eq!(s.unfinished_jobs().await.unwrap().len(), 1);
    assert_eq!(
        s.messages(jobs[0].id).await.unwrap(),
        vec![("cli".to_string(), "0.000001".to_string())]
    );
    assert_eq!(s.audit_log(10).await.unwrap().len(), 2);
    // It is written to after the upgrade like a new one, and reopens.
    change(
        s.as_ref(),
        LockAction::Stop { force: false },
        "cli:alice",
        2_000_000_000,
    )
    .await
    .unwrap();
    drop(s);
    let s = corral::store::open(&url).await.expect("reopens");
    assert!(s.lock_state().await.unwrap().running.is_none());
}

// PostgreSQL only: what several processes on one database need.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_starting_at_once_migrate_once_and_share_state() {
    let db = TestDb::new("migrate").await;
    let opens: Vec<_> = (0..3)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { corral::store::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().expect("every replica opens"));
    }
    let info = stores[0].info().await.unwrap();
    assert_eq!(info.backend, corral::store::Backend::Postgres);
    assert_eq!(info.schema_version, info.known_version);
    assert!(info.known_version >= 2);
    let applied: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM corral_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        applied,
        i64::from(info.known_version),
        "each migration once"
    );

    let a = LockAction::Start {
        reason: "1.4.0".into(),
    };
    change(stores[0].as_ref(), a, "U1", 100).await.unwrap();
    assert_eq!(
        stores[2].lock_state().await.unwrap().running.unwrap().who,
        "U1"
    );
    assert!(stores[1].first_delivery("Ev9", 100).await.unwrap());
    assert!(!stores[2].first_delivery("Ev9", 101).await.unwrap());
    drop(stores);
    let s = corral::store::open(&db.url).await.unwrap();
    assert_eq!(
        s.lock_state().await.unwrap().running.unwrap().reason,
        "1.4.0"
    );
    assert_eq!(s.lock_history(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_replica_one_schema_version_behind_keeps_working() {
    let db = TestDb::new("behind").await;
    let s = corral::store::open(&db.url).await.unwrap();
    let known = s.info().await.unwrap().known_version;
    drop(s);
    // What a newer replica's additive migration leaves behind: a version this build does
    // not know, a new nullable column, a new table.
    db.client()
        .await
        .batch_execute(&format!(
            "INSERT INTO corral_schema (version, name) VALUES ({}, 'from_the_future');
             ALTER TABLE jobs ADD COLUMN from_the_future TEXT;
             CREATE TABLE outbox_future (id BIGINT PRIMARY KEY);",
            known + 1
        ))
        .await
        .unwrap();
    let s = corral::store::open(&db.url)
        .await
        .expect("an older replica opens");
    let info = s.info().await.unwrap();
    assert_eq!(
        (info.schema_version, info.known_version),
        (known + 1, known)
    );
    let j = s
        .create_job(new_job(10), Box::new(|_| Ok(Effects::default())))
        .await
        .unwrap()
        .unwrap();
    s.set_job_status(j.id, JobStatus::Running, 11)
        .await
        .unwrap();
    assert_eq!(s.jobs(5).await.unwrap()[0].status, JobStatus::Running);
    change(
        s.as_ref(),
        LockAction::Block { reason: "x".into() },
        "U1",
        12,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_first_release_moves_to_postgres_row_for_row() {
    let dir = TempDir::new("store-copy");
    let path = dir.0.join("corral.db");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/store/corral-v0.1.db"
    );
    std::fs::copy(fixture, &path).unwrap();
    let from = format!("sqlite://{}", path.display());
    let db = TestDb::new("copy").await;
    let settings = corral::store::Settings::default();
    let report = corral::store::copy(&from, &db.url, &settings)
        .await
        .expect("copies");
    assert_eq!(
        (
            report.lock_history,
            report.jobs,
            report.messages,
            report.audit,
            report.deploy_reports
        ),
        (5, 2, 2, 2, 0)
    );
    assert_eq!(report.lock.running.as_ref().unwrap().who, "cli:alice");
    // The source is read, not changed (not even migrated).
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(fixture).unwrap()
    );

    // Both stores read back the same rows.
    let pg = corral::store::open(&db.url).await.unwrap();
    let lite = corral::store::open(&from).await.unwrap();
    assert_eq!(
        pg.lock_state().await.unwrap(),
        lite.lock_state().await.unwrap()
    );
    assert_eq!(
        pg.lock_history(100).await.unwrap(),
        lite.lock_history(100).await.unwrap()
    );
    let jobs = pg.jobs(100).await.unwrap();
    assert_eq!(jobs, lite.jobs(100).await.unwrap());
    for j in &jobs {
        assert_eq!(
            pg.messages(j.id).await.unwrap(),
            lite.messages(j.id).await.unwrap(),
            "job {}: the bot keeps editing the same thread",
            j.id
        );
    }
    assert_eq!(
        pg.audit_log(100).await.unwrap(),
        lite.audit_log(100).await.unwrap()
    );
    assert_eq!(pg.unfinished_jobs().await.unwrap().len(), 1);
    // New rows continue after the copied ids.
    let next = pg
        .create_job(new_job(2_000_000_000), Box::new(|_| Ok(Effects::default())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.id, 3);
    change(
        pg.as_ref(),
        LockAction::Stop { force: false },
        "cli:alice",
        2_000_000_001,
    )
    .await
    .unwrap();

    // A second copy into the now non-empty target is refused and changes nothing.
    let e = corral::store::copy(&from, &db.url, &settings)
        .await
        .unwrap_err();
    assert!(e.contains("not empty") && e.contains("3 jobs"), "{e}");
    assert_eq!(pg.jobs(100).await.unwrap().len(), 3);
    // Only SQLite → PostgreSQL.
    let e = corral::store::copy(&db.url, &from, &settings)
        .await
        .unwrap_err();
    assert!(e.contains("SQLite to PostgreSQL"), "{e}");
    let e = corral::store::copy("sqlite::memory:", &db.url, &settings)
        .await
        .unwrap_err();
    assert!(e.contains("nothing to copy"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_gives_bounded_errors_and_comes_back() {
    use crate::support::tcp_proxy::{Mode, TcpProxy, upstream_of};
    use std::time::{Duration, Instant};
    let db = TestDb::new("away").await;
    let proxy = TcpProxy::start(upstream_of(&db.url)).await;
    let settings = corral::store::Settings {
        pool_size: 4,
        connect_timeout: Duration::from_secs(1),
        pool_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(1),
    };
    let s = corral::store::open_with(&proxy.url_through(&db.url), &settings)
        .await
        .unwrap();
    s.ping().await.unwrap();

    // Down: connections cut, new ones refused.
    proxy.set(Mode::Closed);
    let t = Instant::now();
    let e = s.ping().await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        matches!(e, corral::store::StoreError::Unavailable(_)),
        "{e}"
    );
    let t = Instant::now();
    assert!(s.lock_state().await.is_err());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // Back: the pool reconnects by itself.
    proxy.set(Mode::Open);
    let mut back = false;
    for _ in 0..50 {
        if s.ping().await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the store recovers without a restart");

    // A network that stops passing bytes mid-request: the call ends within the statement
    // timeout (plus a second), with a clear error, and nothing half-done is kept.
    proxy.set(Mode::Stalled);
    let t = Instant::now();
    let r = s
        .change_lock(Box::new(|st| {
            let state = corral::lock::apply(
                st,
                &LockAction::Block { reason: "b".into() },
                &actor("U1"),
                5,
            )?;
            Ok(LockDecision {
                state,
                history: LockHistoryEntry {
                    at: 5,
                    actor: "U1".into(),
                    action: "block".into(),
                    reason: "b".into(),
                    source: Source::Slack,
                    forced: false,
                },
                effects: Effects::default(),
            })
        }))
        .await;
    let e = r.expect_err("a stalled database is an error").to_string();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(e.contains("did not answer within 1s"), "{e}");
    proxy.set(Mode::Open);
    let mut state = None;
    for _ in 0..50 {
        if let Ok(st) = s.lock_state().await {
            state = Some(st);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = state.expect("recovers after the stall");
    assert!(
        state.blocked.is_none(),
        "the stalled change never reached the database"
    );
    assert!(s.lock_history(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn sslmodes_against_a_real_tls_server() {
    let db = TestDb::new("tls").await;
    let ca = std::env::var("CORRAL_TEST_POSTGRES_CA").unwrap_or_else(|_| {
        panic!("CORRAL_TEST_POSTGRES_CA is not set: run ./test, which gives its PostgreSQL a TLS certificate")
    });
    let mut base = url::Url::parse(&db.url).unwrap();
    base.set_query(None);
    let with = |q: &str| format!("{base}?{q}");
    let tls_sessions = || async {
        db.client()
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE s.ssl AND a.datname = $1 AND a.application_name = 'corral'",
                &[&db.name],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // require: encrypted, the certificate not checked.
    let s = corral::store::open(&with("sslmode=require"))
        .await
        .expect("require");
    s.ping().await.unwrap();
    assert!(tls_sessions().await > 0, "the session is TLS");
    drop(s);
    // verify-full with the CA that signed the server's certificate (it names 127.0.0.1).
    let ca_q: String = url::form_urlencoded::byte_serialize(ca.as_bytes()).collect();
    let s = corral::store::open(&with(&format!("sslmode=verify-full&sslrootcert={ca_q}")))
        .await
        .expect("verify-full with the right CA");
    s.ping().await.unwrap();
    drop(s);
    let s = corral::store::open(&with(&format!("sslmode=verify-ca&sslrootcert={ca_q}")))
        .await
        .expect("verify-ca with the right CA");
    s.ping().await.unwrap();
    drop(s);
    // verify-full against the system's roots: the throwaway CA is not among them.
    let e = corral::store::open(&with("sslmode=verify-full"))
        .await
        .err()
        .expect("an unknown CA is refused")
        .to_string();
    assert!(e.contains("certificate") || e.contains("root"), "{e}");
    // A CA file that is not a certificate is named.
    let e = corral::store::open(&with("sslmode=verify-full&sslrootcert=%2Fdev%2Fnull"))
        .await
        .err()
        .expect("an empty CA file is refused")
        .to_string();
    assert!(e.contains("/dev/null"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialisation_failures_are_decided_again() {
    // Under SERIALIZABLE, racing lock changes fail with 40001 instead of waiting their
    // turn: the store must roll back and decide again, so every caller gets an answer
    // and exactly one wins.
    let db = TestDb::new("serial").await;
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET default_transaction_isolation TO 'serializable'",
            db.name
        ))
        .await
        .unwrap();
    let s = corral::store::open(&db.url).await.unwrap();
    for round in 0..5 {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let a = LockAction::Start {
                        reason: format!("r{i}"),
                    };
                    change(s.as_ref(), a, &format!("U{i}"), 100).await.is_ok()
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.expect("every caller gets an answer"));
        }
        assert_eq!(winners, 1, "round {round}");
        let holder = s.lock_state().await.unwrap().running.unwrap().who;
        change(s.as_ref(), LockAction::Stop { force: false }, &holder, 101)
            .await
            .unwrap();
    }
    assert_eq!(s.lock_history(100).await.unwrap().len(), 10);
}

/// What a channel shows (the playground's history): the newest delivered posts of that
/// channel only, oldest first, replies knowing their root's ts.
#[tokio::test]
async fn a_channels_delivered_posts_newest_last() {
    use corral::chat::Message;
    use corral::store::{Enqueued, NewMessage, Settle, Thread};
    let dir = TempDir::new("store-channel");
    for (url, s, _db) in backends(&dir).await {
        let m = |t: &str| Message::text(t);
        let out = s
            .enqueue(vec![
                NewMessage::post(1, "P", m("root")).keyed("r"),
                NewMessage::post(2, "OTHER", m("elsewhere")),
                NewMessage::ephemeral(3, "P", "playground:a", m("just you")),
                NewMessage::reply(4, "P", Thread::Key("r".into()), m("reply")),
                NewMessage::post(5, "P", m("never delivered")),
            ])
            .await
            .unwrap();
        let ids: Vec<i64> = out
            .iter()
            .map(|e| match e {
                Enqueued::New(id) => *id,
                other => panic!("{other:?}"),
            })
            .collect();
        for (i, id) in ids.iter().enumerate().take(4) {
            s.outbox_claim(*id, "a", 10, 1000).await.unwrap().unwrap();
            let ts = (i != 2).then(|| format!("1.{i}"));
            s.outbox_settle(*id, "a", Settle::Delivered { version: 1, ts }, 20)
                .await
                .unwrap();
        }
        let rows = s.outbox_channel("P", 10).await.unwrap();
        let texts: Vec<&str> = rows.iter().map(|r| r.message.text.as_str()).collect();
        assert_eq!(texts, vec!["root", "reply"], "{url}");
        assert_eq!(rows[1].root_ts.as_deref(), Some("1.0"), "{url}");
        let newest = s.outbox_channel("P", 1).await.unwrap();
        assert_eq!(newest.len(), 1, "{url}");
        assert_eq!(newest[0].message.text, "reply", "{url}");
        assert!(s.outbox_channel("nope", 10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn the_outbox_orders_lanes_coalesces_edits_and_leases_rows() {
    use corral::chat::Message;
    use corral::store::{Enqueued, NewMessage, RowState, Settle, Thread};
    let dir = TempDir::new("store-outbox");
    for (url, s, _db) in backends(&dir).await {
        let m = |t: &str| Message::text(t);
        let out = s
            .enqueue(vec![
                NewMessage::post(1, "C1", m("root")).keyed("k1"),
                NewMessage::post(2, "C1", m("second")),
                NewMessage::post(3, "C2", m("other channel")),
                NewMessage::reply(4, "C1", Thread::Key("k1".into()), m("reply")),
            ])
            .await
            .unwrap();
        let Enqueued::New(k1) = out[0] else {
            panic!("{out:?}")
        };
        // Only each lane's head is work.
        let names = |rows: Vec<corral::store::OutboxRow>| {
            rows.into_iter().map(|r| r.message.text).collect::<Vec<_>>()
        };
        assert_eq!(
            names(s.outbox_work(10, 10).await.unwrap()),
            vec!["root", "other channel"],
            "{url}"
        );
        // An edit of a post still waiting changes what will be posted.
        let e = s
            .enqueue(vec![NewMessage::edit(5, "k1", m("root v2"))])
            .await
            .unwrap();
        assert_eq!(e, vec![Enqueued::Coalesced(k1)], "{url}");
        let again = s
            .enqueue(vec![
                NewMessage::post(6, "C1", m("dup")).keyed("k1"),
                NewMessage::edit(6, "nope", m("x")),
            ])
            .await
            .unwrap();
        assert_eq!(again, vec![Enqueued::Duplicate(k1), Enqueued::Missing]);
        let row = s.outbox_get("k1").await.unwrap().unwrap();
        assert_eq!((row.version, row.state), (2, RowState::Pending));
        assert_eq!(row.message.text, "root v2");
        // A lease keeps other senders off the row and blocks its lane.
        let claimed = s.outbox_claim(k1, "a", 100, 1000).await.unwrap().unwrap();
        assert_eq!(claimed.attempts, 1);
        assert!(s.outbox_claim(k1, "b", 200, 1000).await.unwrap().is_none());
        assert_eq!(
            names(s.outbox_work(200, 10).await.unwrap()),
            vec!["other channel"]
        );
        s.outbox_settle(
            k1,
            "a",
            Settle::Delivered {
                version: 2,
                ts: Some("1.1".into()),
            },
            300,
        )
        .await
        .unwrap();
        let row = s.outbox_get("k1").await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.ts.as_deref()),
            (RowState::Done, Some("1.1"))
        );
        // The lane moves on; the reply now knows its root's ts.
        let work = s.outbox_work(300, 10).await.unwrap();
        assert_eq!(names(work.clone()), vec!["second", "other channel"]);
        // An edit of a delivered message is work of its own, outside the lanes.
        s.enqueue(vec![NewMessage::edit(400, "k1", m("root v3"))])
            .await
            .unwrap();
        let work = s.outbox_work(400, 10).await.unwrap();
        assert!(
            work.iter()
                .any(|r| r.state == RowState::Edit && r.version == 3)
        );
        // A lease never settled (the process died mid-call): the next claim knows.
        s.outbox_claim(k1, "a", 500, 1000).await.unwrap().unwrap();
        let taken = s.outbox_claim(k1, "b", 1501, 1000).await.unwrap().unwrap();
        assert!(taken.unknown, "{url}");
        s.outbox_settle(
            k1,
            "b",
            Settle::Delivered {
                version: 3,
                ts: None,
            },
            1600,
        )
        .await
        .unwrap();
        let row = s.outbox_get("k1").await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.ts.as_deref()),
            (RowState::Done, Some("1.1"))
        );
        let second = s.outbox_work(1600, 10).await.unwrap()[0].clone();
        s.outbox_claim(second.id, "b", 1600, 1000).await.unwrap();
        s.outbox_settle(
            second.id,
            "b",
            Settle::Delivered {
                version: 1,
                ts: Some("1.2".into()),
            },
            1700,
        )
        .await
        .unwrap();
        let reply = s.outbox_work(1700, 10).await.unwrap();
        let reply = reply.iter().find(|r| r.message.text == "reply").unwrap();
        assert_eq!(reply.root_ts.as_deref(), Some("1.1"));
        // Pacing only moves forward.
        s.push_pacing("chat.update", 10).await.unwrap();
        s.push_pacing("chat.update", 5).await.unwrap();
        assert_eq!(
            s.pacing().await.unwrap(),
            vec![("chat.update".to_string(), 10)]
        );
        let stats = s.outbox_stats().await.unwrap();
        assert_eq!((stats.depth, stats.dead, stats.failed), (2, 0, 0), "{url}");
        assert_eq!(stats.oldest_ms, Some(3));
    }
}

#[tokio::test]
async fn roots_posted_before_the_outbox_are_still_edited_after_the_upgrade() {
    let dir = TempDir::new("store-v2");
    let path = dir.0.join("v2.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/store/migrations/0001_init.sql"
        )))
        .unwrap();
        c.execute_batch(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/store/migrations/0002_deploy.sql"
        )))
        .unwrap();
        c.execute_batch(
            "INSERT INTO jobs (kind, command, requested_by, source, channel, status, created_at, updated_at)
             VALUES ('upgrade-catalog', '/upgrade library:web:12', 'U1', 'slack', 'C1', 'running', 1, 1);
             INSERT INTO messages (job_id, channel, ts) VALUES (1, 'C1', '1699999999.000001');
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let s = corral::store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(
        s.messages(1).await.unwrap(),
        vec![("C1".to_string(), "1699999999.000001".to_string())]
    );
    let out = s
        .enqueue(vec![corral::store::NewMessage::edit(
            5,
            "job:1:root",
            corral::chat::Message::text("⚠ interrupted"),
        )])
        .await
        .unwrap();
    assert!(matches!(out[0], corral::store::Enqueued::Coalesced(_)));
    let work = s.outbox_work(10, 10).await.unwrap();
    assert_eq!(work.len(), 1);
    assert_eq!(work[0].ts.as_deref(), Some("1699999999.000001"));
    assert_eq!(s.job(1).await.unwrap().unwrap().delivery, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pacing_slot_is_granted_once_however_many_senders_ask() {
    let dir = TempDir::new("store-slots");
    for (url, s, _db) in backends(&dir).await {
        let slots = || {
            vec![
                ("chat.postMessage".to_string(), 200),
                ("chat.postMessage:C1".to_string(), 1000),
            ]
        };
        let asks: Vec<_> = (0..20)
            .map(|_| {
                let s = s.clone();
                let want = slots();
                tokio::spawn(async move { s.take_pacing(want, 10_000).await.unwrap() })
            })
            .collect();
        let mut granted = 0;
        for a in asks {
            match a.await.unwrap() {
                Ok(()) => granted += 1,
                Err(until) => assert_eq!(until, 11_000, "{url}: the channel's slot frees last"),
            }
        }
        assert_eq!(granted, 1, "{url}");
        // Another channel still waits for the workspace-wide slot, and nothing moved.
        let other = vec![
            ("chat.postMessage".to_string(), 200),
            ("chat.postMessage:C2".to_string(), 1000),
        ];
        assert_eq!(
            s.take_pacing(other.clone(), 10_100).await.unwrap(),
            Err(10_200)
        );
        assert_eq!(s.take_pacing(other, 10_200).await.unwrap(), Ok(()), "{url}");
        // A Retry-After pushed by anyone blocks every sender until it has passed.
        s.push_pacing("chat.postMessage", 30_000).await.unwrap();
        assert_eq!(s.take_pacing(slots(), 20_000).await.unwrap(), Err(30_000));
        assert_eq!(
            s.take_pacing(slots(), 30_000).await.unwrap(),
            Ok(()),
            "{url}"
        );
        let pacing: std::collections::HashMap<_, _> =
            s.pacing().await.unwrap().into_iter().collect();
        assert_eq!(pacing["chat.postMessage"], 30_200, "{url}");
        assert_eq!(pacing["chat.postMessage:C1"], 31_000, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_three_replicas_give_a_lane_one_sequence() {
    use corral::chat::Message;
    use corral::store::{Enqueued, NewMessage, Thread};
    // Three stores on one database (three replicas), each writing posts and replies into
    // one channel at once, plus a job-thread reply that waits for its root.
    let db = TestDb::new("lanes").await;
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(corral::store::open(&db.url).await.unwrap());
    }
    stores[0]
        .enqueue(vec![
            NewMessage::post(1, "C1", Message::text("root")).keyed("job:1:root"),
        ])
        .await
        .unwrap();
    let writes: Vec<_> = (0..60)
        .map(|i| {
            let s = stores[i % 3].clone();
            tokio::spawn(async move {
                let m = if i % 2 == 0 {
                    NewMessage::post(2, "C1", Message::text(format!("m{i}")))
                } else {
                    NewMessage::reply(
                        2,
                        "C1",
                        Thread::Key("job:1:root".into()),
                        Message::text(format!("m{i}")),
                    )
                };
                // Two messages in one transaction land next to each other.
                s.enqueue(vec![
                    m,
                    NewMessage::post(2, "C1", Message::text(format!("m{i}+"))),
                ])
                .await
                .unwrap()
            })
        })
        .collect();
    for w in writes {
        let out = w.await.unwrap();
        assert!(out.iter().all(|e| matches!(e, Enqueued::New(_))), "{out:?}");
    }
    let rows = stores[1].outbox_rows(None, 1000).await.unwrap();
    assert_eq!(rows.len(), 121);
    let mut seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (1..=121).collect::<Vec<_>>(),
        "one number per row, no gaps"
    );
    let seq_of = |text: &str| rows.iter().find(|r| r.message.text == text).unwrap().seq;
    for i in 0..60 {
        assert_eq!(
            seq_of(&format!("m{i}+")),
            seq_of(&format!("m{i}")) + 1,
            "m{i}"
        );
    }
    // Only the lane's head is work, whichever replica asks.
    for s in &stores {
        let work = s.outbox_work(10, 100).await.unwrap();
        assert_eq!(work.len(), 1);
        assert_eq!(work[0].message.text, "root");
    }
    // A keyed post written on two replicas at once is written once.
    let both: Vec<_> = (0..2)
        .map(|i| {
            let s = stores[i].clone();
            tokio::spawn(async move {
                s.enqueue(vec![
                    NewMessage::post(3, "C9", Message::text("once")).keyed("job:9:root"),
                ])
                .await
                .unwrap()[0]
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for b in both {
        outcomes.push(b.await.unwrap());
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|e| matches!(e, Enqueued::New(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|e| matches!(e, Enqueued::Duplicate(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
}

mod approvals {
    //! Approvals and votes: one decision per approval, in one transaction, on every backend.

    use super::*;
    use corral::app::approval::{Cast, Open, decide_open, decide_sweep, decide_vote};
    use corral::app::card::Plan;
    use corral::job::approval::{ApprovalState, VoteKind};
    use corral::job::{PlanGroup, PlanItem};
    use corral::store::Decided;

    fn plan() -> Plan {
        Plan {
            title: "library:web:2.0.0".into(),
            groups: vec![PlanGroup {
                name: "prod".into(),
                items: vec![PlanItem {
                    target: "web".into(),
                    change: "1.0.0 → 2.0.0".into(),
                    skipped: None,
                    details: Vec::new(),
                    binds: String::new(),
                }],
            }],
        }
    }

    /// A job awaiting `required` approvals that expire at 100 + 3600.
    async fn awaiting(s: &dyn Store, required: u32) -> i64 {
        let j = s
            .create_job(new_job(100), Box::new(|_| Ok(Effects::default())))
            .await
            .unwrap()
            .unwrap();
        let open = Open {
            rule: "approval[0]".into(),
            required,
            approvers: vec!["approvers".into()],
            expires: Some(std::time::Duration::from_secs(3600)),
            targets: vec!["prod".into()],
            plan: plan(),
            now: 100,
            now_ms: 100_000,
        };
        s.decide_approval(j.id, Box::new(move |b| decide_open(b, &open)))
            .await
            .unwrap()
            .unwrap();
        j.id
    }

    async fn vote(
        s: &dyn Store,
        job: i64,
        voter: &str,
        kind: VoteKind,
        eligible: bool,
        now: i64,
    ) -> Result<Decided, String> {
        let cast = Cast {
            voter: voter.into(),
            kind,
            note: String::new(),
            source: Source::Slack,
            eligible: if eligible {
                Ok(())
            } else {
                Err(format!("{voter} is not an approver"))
            },
            targets: Vec::new(),
            frozen: None,
            now,
            now_ms: now * 1000,
        };
        s.decide_approval(job, Box::new(move |b| decide_vote(b, &cast)))
            .await
            .expect("store answers")
    }

    fn completed(d: &Decided) -> bool {
        d.before.approval.as_ref().map(|a| a.state) == Some(ApprovalState::Pending)
            && d.decision.approval.state == ApprovalState::Approved
    }

    #[tokio::test]
    async fn votes_are_judged_in_one_transaction_and_complete_once() {
        let dir = TempDir::new("store-approvals");
        for (url, s, _db) in backends(&dir).await {
            let s = s.as_ref();
            let job = awaiting(s, 2).await;
            let j = s.job(job).await.unwrap().unwrap();
            assert_eq!(j.status, JobStatus::AwaitingApproval, "{url}");
            let (a, votes) = s.approval(job).await.unwrap().unwrap();
            assert_eq!(
                (a.state, a.round, a.required, votes.len()),
                (ApprovalState::Pending, 1, 2, 0)
            );
            assert_eq!(a.expires_at, Some(3700));
            assert_eq!(s.pending_approvals().await.unwrap().len(), 1, "{url}");
            // The card is the job's root; the plan is in its thread.
            let rows = s.outbox_rows(Some(job), 10).await.unwrap();
            assert!(
                rows.iter()
                    .any(|r| r.key.as_deref() == Some(&format!("job:{job}:root"))),
                "{url}: {rows:?}"
            );
            // The requester (U1), an outsider and a repeat are refused; nothing is written.
            let e = vote(s, job, "U1", VoteKind::Approve, true, 110)
                .await
                .unwrap_err();
            assert!(e.contains("requester"), "{url}: {e}");
            let e = vote(s, job, "U9", VoteKind::Approve, false, 110)
                .await
                .unwrap_err();
            assert!(e.contains("not an approver"), "{url}: {e}");
            let first = vote(s, job, "U2", VoteKind::Approve, true, 111)
                .await
                .unwrap();
            assert!(!completed(&first));
            let e = vote(s, job, "U2", VoteKind::Approve, true, 112)
                .await
                .unwrap_err();
            assert!(e.contains("already voted"), "{url}: {e}");
            assert_eq!(s.approval(job).await.unwrap().unwrap().1.len(), 1, "{url}");
            // One self-named identity counts; a second does not.
            let api = vote(s, job, "api:ci", VoteKind::Approve, true, 113)
                .await
                .unwrap();
            assert!(completed(&api), "{url}");
            assert_eq!(s.job(job).await.unwrap().unwrap().status, JobStatus::Queued);
            // A vote on a decided approval changes nothing.
            let e = vote(s, job, "U3", VoteKind::Deny, true, 114)
                .await
                .unwrap_err();
            assert!(e.contains("already approved"), "{url}: {e}");
            let (a, votes) = s.approval(job).await.unwrap().unwrap();
            assert_eq!(
                (a.state, votes.len()),
                (ApprovalState::Approved, 2),
                "{url}"
            );
            assert!(s.pending_approvals().await.unwrap().is_empty());
            let bob = s.audit_query(0, Some("U2".into()), 50).await.unwrap();
            assert!(
                !bob.is_empty() && bob.iter().all(|a| a.actor == "U2"),
                "{url}: {bob:?}"
            );
            assert!(
                s.audit_query(10_000, None, 50).await.unwrap().is_empty(),
                "{url}"
            );
            assert_eq!(s.audit_query(0, None, 2).await.unwrap().len(), 2, "{url}");
            let audit: Vec<String> = s
                .audit_log(20)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.action)
                .collect();
            assert!(
                audit.contains(&format!("vote approve job {job}")),
                "{url}: {audit:?}"
            );

            // Deny cancels.
            let denied = awaiting(s, 1).await;
            let d = vote(s, denied, "U2", VoteKind::Deny, true, 120)
                .await
                .unwrap();
            assert_eq!(d.decision.approval.state, ApprovalState::Denied);
            let j = s.job(denied).await.unwrap().unwrap();
            assert_eq!(j.status, JobStatus::Cancelled, "{url}");
            assert!(j.outcome.unwrap().summary.contains("denied by U2"));

            // Two self-named identities never make two approvals.
            let two = awaiting(s, 2).await;
            vote(s, two, "api:a", VoteKind::Approve, true, 130)
                .await
                .unwrap();
            let d = vote(s, two, "api:b", VoteKind::Approve, true, 131)
                .await
                .unwrap();
            assert!(!completed(&d) && !d.decision.vote.unwrap().counted, "{url}");

            // Expiry: the sweep at 80 % reminds once, at the deadline cancels; a late vote
            // changes nothing.
            let late = awaiting(s, 1).await;
            assert!(
                s.decide_approval(late, Box::new(|b| decide_sweep(b, 200, 0)))
                    .await
                    .unwrap()
                    .is_err()
            );
            let r = s
                .decide_approval(late, Box::new(|b| decide_sweep(b, 100 + 2880, 0)))
                .await
                .unwrap()
                .unwrap();
            assert!(r.decision.approval.reminded);
            assert!(
                s.decide_approval(late, Box::new(|b| decide_sweep(b, 100 + 2881, 0)))
                    .await
                    .unwrap()
                    .is_err()
            );
            let x = s
                .decide_approval(late, Box::new(|b| decide_sweep(b, 3700, 0)))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(x.decision.approval.state, ApprovalState::Expired);
            assert_eq!(
                s.job(late).await.unwrap().unwrap().status,
                JobStatus::Cancelled
            );
            let e = vote(s, late, "U2", VoteKind::Approve, true, 3701)
                .await
                .unwrap_err();
            assert!(e.contains("already expired"), "{url}: {e}");
            // No such job.
            let e = vote(s, 9999, "U2", VoteKind::Approve, true, 1)
                .await
                .unwrap_err();
            assert!(e.contains("no job #9999"), "{url}: {e}");
        }
    }

    #[tokio::test]
    async fn many_simultaneous_votes_complete_an_approval_exactly_once() {
        let dir = TempDir::new("store-votes-race");
        for (url, s, _db) in backends(&dir).await {
            let job = awaiting(s.as_ref(), 3).await;
            let tasks: Vec<_> = (0..40)
                .map(|i| {
                    let s = s.clone();
                    tokio::spawn(async move {
                        vote(
                            s.as_ref(),
                            job,
                            &format!("U{}", i + 10),
                            VoteKind::Approve,
                            true,
                            150,
                        )
                        .await
                    })
                })
                .collect();
            let (mut completions, mut recorded, mut attempts) = (0, 0, 0);
            for t in tasks {
                if let Ok(d) = t.await.unwrap() {
                    recorded += 1;
                    attempts += d.attempts;
                    completions += usize::from(completed(&d));
                }
            }
            assert_eq!(completions, 1, "{url}");
            assert_eq!(recorded, 3, "{url}: votes after the third find it decided");
            assert!(attempts >= 3, "{url}");
            eprintln!(
                "{url}: 40 simultaneous votes, {attempts} transaction attempts for 3 recorded"
            );
            let (a, votes) = s.approval(job).await.unwrap().unwrap();
            assert_eq!(
                (a.state, votes.len()),
                (ApprovalState::Approved, 3),
                "{url}"
            );
            assert_eq!(s.job(job).await.unwrap().unwrap().status, JobStatus::Queued);
        }
    }

    /// `corral migrate` from a store of this version: an approval halfway through its
    /// votes, the outbox (a delivered root, a message not sent yet, one a sender was in
    /// the middle of), the pacing and a digest already sent all arrive, so after the move
    /// the vote goes on counting, nothing is said twice and nothing is lost.
    #[tokio::test]
    async fn a_store_of_this_version_moves_to_postgres_with_approvals_outbox_and_firings() {
        use corral::chat::Message;
        use corral::store::{Claimed, NewMessage};
        let dir = TempDir::new("store-copy-now");
        let from = format!("sqlite://{}/now.db", dir.0.display());
        let lite = corral::store::open(&from).await.unwrap();
        let job = awaiting(lite.as_ref(), 2).await;
        vote(lite.as_ref(), job, "U0BOB", VoteKind::Approve, true, 110)
            .await
            .unwrap();
        lite.set_message(job, "C1", "1700000000.000100")
            .await
            .unwrap();
        lite.enqueue(vec![
            NewMessage::post(1_000, "C2", Message::text("not sent yet")),
            NewMessage::post(1_001, "C3", Message::text("being sent when it stopped")),
        ])
        .await
        .unwrap();
        let mid_call = lite
            .outbox_rows(None, 100)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.message.text.contains("being sent"))
            .unwrap();
        assert!(
            lite.outbox_claim(mid_call.id, "old:1:1", 2_000, 1_000)
                .await
                .unwrap()
                .is_some()
        );
        lite.push_pacing("chat.postMessage", 5_000).await.unwrap();
        lite.expect_deploy_hosts(job, &["web-1".into(), "web-2".into()])
            .await
            .unwrap();
        let sent = || {
            firing(
                "digest:C1:0 9 * * *@UTC:86400",
                "digest:C1:0 9 * * *@UTC",
                86_400,
                "sent",
            )
        };
        assert_eq!(
            lite.claim_firing(sent(), Box::new(|_| Ok(Effects::default())))
                .await
                .unwrap(),
            Claimed::Now
        );
        let rows = lite.outbox_rows(None, 1000).await.unwrap();

        let db = TestDb::new("copynow").await;
        let report = corral::store::copy(&from, &db.url, &corral::store::Settings::default())
            .await
            .expect("copies");
        assert_eq!(
            (
                report.approvals,
                report.votes,
                report.firings,
                report.jobs,
                report.deploy_hosts
            ),
            (1, 1, 1, 1, 2)
        );
        assert_eq!(report.outbox, rows.len());
        assert!(report.outbox_pending >= 2, "{report:?}");
        let text = report.to_string();
        for line in [
            "approvals: 1",
            "votes: 1",
            "scheduled firings: 1",
            "not copied",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }

        let pg = corral::store::open(&db.url).await.unwrap();
        assert_eq!(
            pg.approval(job).await.unwrap(),
            lite.approval(job).await.unwrap()
        );
        assert_eq!(
            pg.pending_approvals().await.unwrap(),
            lite.pending_approvals().await.unwrap()
        );
        assert_eq!(pg.outbox_rows(None, 1000).await.unwrap(), rows);
        assert_eq!(
            pg.messages(job).await.unwrap(),
            lite.messages(job).await.unwrap()
        );
        assert_eq!(pg.pacing().await.unwrap(), lite.pacing().await.unwrap());
        // A fan-out deploy still refuses hosts it did not name.
        assert_eq!(
            pg.deploy_host_expected(job, "web-2").await.unwrap(),
            Some(true)
        );
        assert_eq!(
            pg.deploy_host_expected(job, "evil").await.unwrap(),
            Some(false)
        );
        assert_eq!(
            pg.latest_firing("digest:C1:0 9 * * *@UTC").await.unwrap(),
            Some(sent())
        );
        // The digest sent before the move is not sent again after it.
        assert_eq!(
            pg.claim_firing(sent(), Box::new(|_| Ok(Effects::default())))
                .await
                .unwrap(),
            Claimed::Before
        );
        // The row a sender held when the old process stopped comes back "unknown": the
        // next sender looks for it in Slack before posting it again.
        let row = pg
            .outbox_claim(mid_call.id, "new:1:1", 10_000, 1_000)
            .await
            .unwrap()
            .expect("claimable once the old lease is over");
        assert!(row.unknown, "{row:?}");
        // The votes carried count: Bob again is refused, Carol completes it.
        assert!(
            vote(pg.as_ref(), job, "U0BOB", VoteKind::Approve, true, 120)
                .await
                .is_err()
        );
        let d = vote(pg.as_ref(), job, "U0CAROL", VoteKind::Approve, true, 121)
            .await
            .unwrap();
        assert!(completed(&d));
        // New rows continue after the copied ids.
        let max = rows.iter().map(|r| r.id).max().unwrap();
        let after = pg
            .enqueue(vec![NewMessage::post(20_000, "C2", Message::text("after"))])
            .await
            .unwrap();
        assert!(
            matches!(after[..], [corral::store::Enqueued::New(id)] if id > max),
            "{after:?} after {max}"
        );
    }
}

/// The single-statement calls of the ack path (the lock read, the command limit, event
/// dedupe) share one pipelined connection on PostgreSQL: many at once all answer, and
/// agree with a change committed before they were asked; a shared connection the server
/// cut is forgotten, and the next call takes a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_statement_calls_share_a_connection_and_survive_losing_it() {
    let db = TestDb::new("shared").await;
    let s = corral::store::open(&db.url).await.unwrap();
    change(
        s.as_ref(),
        LockAction::Start { reason: "r".into() },
        "U1",
        10,
    )
    .await
    .unwrap();
    let reads: Vec<_> = (0..200)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let lock = s.lock_state().await.unwrap();
                let fresh = s.first_delivery(&format!("ev{i}"), 10).await.unwrap();
                let again = s.first_delivery(&format!("ev{i}"), 10).await.unwrap();
                (lock, fresh, again)
            })
        })
        .collect();
    for r in reads {
        let (lock, fresh, again) = r.await.unwrap();
        assert_eq!(lock.running.map(|h| h.who).as_deref(), Some("U1"));
        assert!(fresh && !again);
    }
    // The server ends every session of this database but the test's own.
    let admin = db.client().await;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    // A call that meets a dead connection fails and says so, and that connection is
    // never used again: the shared one is forgotten, and so is each pooled one a fresh
    // take finds dead (the pool's cheap recycling check may not have seen the server end
    // it yet). So within one failure per connection the pool held, a fresh one answers.
    let mut failures = 0;
    let lock = loop {
        match s.lock_state().await {
            Ok(lock) => break lock,
            Err(e) => {
                assert!(e.to_string().contains("connection"), "{e}");
                failures += 1;
                assert!(failures <= 16, "still failing after {failures} calls: {e}");
            }
        }
    };
    assert_eq!(lock.running.map(|h| h.who).as_deref(), Some("U1"));
    assert_eq!(
        s.lock_state()
            .await
            .unwrap()
            .running
            .map(|h| h.who)
            .as_deref(),
        Some("U1")
    );
    assert!(s.first_delivery("after", 11).await.unwrap());
}

/// A replica cut off from the database for longer than its job's lease comes back after
/// another replica has reported the job interrupted: its late writes (progress, the final
/// outcome, the root edit, the summary) are refused in the store and change nothing,
/// while the writes of the replica holding a lease go through and nobody else's do. Time
/// is a driven clock.
#[tokio::test]
async fn a_replica_back_after_its_lease_cannot_overwrite_interrupted() {
    use corral::chat::Message;
    use corral::clock::ManualClock;
    use corral::store::{JobChange, NewMessage, Replica, Thread};
    use std::time::Duration;
    let dir = TempDir::new("store-lease-guard");
    for (url, s, _db) in backends(&dir).await {
        let clock = ManualClock::at_unix(1_700_000_000);
        let c = clock.shared();
        let lease = 30_000;
        let a = Replica::this_process(c.unix_ms());
        let j = s
            .create_job(new_job(c.unix()), Box::new(|_| Ok(Effects::default())))
            .await
            .unwrap()
            .unwrap();
        // The thread root's key, as the reporter writes it.
        let key = format!("job:{}:root", j.id);
        let root =
            |text: &str| NewMessage::edit(c.unix_ms(), key.clone(), Message::text(text)).job(j.id);
        s.enqueue(vec![
            NewMessage::post(c.unix_ms(), "C1", Message::text("queued"))
                .keyed(key.clone())
                .job(j.id),
        ])
        .await
        .unwrap();
        assert!(s.claim_job(j.id, &a.id, c.unix_ms() + lease).await.unwrap());
        // While A holds the lease its writes go through; another replica's do not.
        let progress = JobChange::Progress {
            done: 1,
            failed: 0,
            total: 3,
        };
        assert!(
            s.change_leased_job(
                j.id,
                &a.id,
                JobChange::Status(JobStatus::Running),
                c.unix(),
                Effects::messages(vec![root("running")])
            )
            .await
            .unwrap(),
            "{url}"
        );
        assert!(
            s.change_leased_job(
                j.id,
                &a.id,
                progress.clone(),
                c.unix(),
                Effects::messages(vec![root("running 1/3")])
            )
            .await
            .unwrap(),
            "{url}"
        );
        assert!(
            !s.change_leased_job(
                j.id,
                "other:9:9",
                progress.clone(),
                c.unix(),
                Effects::messages(vec![root("not mine")])
            )
            .await
            .unwrap(),
            "{url}: only the lease holder writes"
        );
        // A is cut off: no heartbeat. Past the lease another replica ends the job.
        clock.advance(Duration::from_millis(lease as u64 + 1));
        let expired = s.expired_jobs(c.unix_ms(), lease).await.unwrap();
        assert_eq!(
            expired.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![j.id],
            "{url}"
        );
        let outcome = Outcome {
            summary: "corral stopped while this job ran".into(),
            ..Outcome::default()
        };
        let told = Effects::messages(vec![
            root("⚠ interrupted"),
            NewMessage::reply(
                c.unix_ms(),
                "C1",
                Thread::Key(key.clone()),
                Message::text("Interrupted"),
            )
            .job(j.id),
        ]);
        assert!(
            s.interrupt_job(j.id, c.unix_ms(), lease, outcome, told)
                .await
                .unwrap()
        );
        // A comes back: its heartbeat renews nothing, and its final write, root edit and
        // summary are refused, all or nothing.
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            s.heartbeat(&a, c.unix_ms(), c.unix_ms() + lease)
                .await
                .unwrap(),
            0,
            "{url}"
        );
        let rows_before = s.outbox_rows(Some(j.id), 100).await.unwrap();
        let audit_before = s.audit_log(100).await.unwrap();
        let finish = JobChange::Finish {
            status: JobStatus::Succeeded,
            outcome: Outcome {
                succeeded: 3,
                summary: "3 stacks upgraded".into(),
                ..Outcome::default()
            },
        };
        let late = Effects {
            audit: vec![AuditEntry {
                at: c.unix(),
                actor: "corral".into(),
                action: format!("job {} succeeded", j.id),
                detail: String::new(),
                source: Source::Slack,
            }],
            messages: vec![
                root("✅ succeeded"),
                NewMessage::reply(
                    c.unix_ms(),
                    "C1",
                    Thread::Key(key.clone()),
                    Message::text("Summary: 3 stacks upgraded"),
                )
                .job(j.id),
            ],
        };
        assert!(
            !s.change_leased_job(j.id, &a.id, finish, c.unix(), late)
                .await
                .unwrap(),
            "{url}: the late final write is refused"
        );
        assert!(
            !s.change_leased_job(
                j.id,
                &a.id,
                progress,
                c.unix(),
                Effects::messages(vec![root("running 2/3")])
            )
            .await
            .unwrap(),
            "{url}"
        );
        let job = s.job(j.id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Interrupted, "{url}");
        assert_eq!(
            job.outcome.unwrap().summary,
            "corral stopped while this job ran"
        );
        assert_eq!(
            s.outbox_rows(Some(j.id), 100).await.unwrap(),
            rows_before,
            "{url}"
        );
        let root_now = s.outbox_get(&key).await.unwrap().unwrap();
        assert_eq!(root_now.message.text, "⚠ interrupted", "{url}");
        assert_eq!(s.audit_log(100).await.unwrap(), audit_before, "{url}");
        // Nor can A take it again.
        assert!(!s.claim_job(j.id, &a.id, c.unix_ms() + lease).await.unwrap());

        // A lease that ran out with nobody ending the job yet is still A's: a replica
        // back in time finishes its own job (better than an interruption).
        let k = s
            .create_job(new_job(c.unix()), Box::new(|_| Ok(Effects::default())))
            .await
            .unwrap()
            .unwrap();
        assert!(s.claim_job(k.id, &a.id, c.unix_ms() + lease).await.unwrap());
        clock.advance(Duration::from_secs(60));
        assert!(
            s.change_leased_job(
                k.id,
                &a.id,
                JobChange::Finish {
                    status: JobStatus::Succeeded,
                    outcome: Outcome::default(),
                },
                c.unix(),
                Effects::default(),
            )
            .await
            .unwrap(),
            "{url}"
        );
        assert_eq!(
            s.job(k.id).await.unwrap().unwrap().status,
            JobStatus::Succeeded
        );
        assert!(s.expired_jobs(c.unix_ms(), lease).await.unwrap().is_empty());
    }
}

/// Job leases (issue 13): a claimed job is renewed by its replica's heartbeat; once the
/// heartbeats stop and the lease runs out it is expired, and of two replicas ending it
/// one does, with its thread note, in one transaction. A job without a lease (an older
/// replica's) counts from its last change.
#[tokio::test]
async fn job_leases_are_renewed_by_heartbeats_and_expire_once() {
    use corral::chat::Message;
    use corral::store::{NewMessage, Replica};
    let dir = TempDir::new("store-leases");
    for (url, s, _db) in backends(&dir).await {
        let a = Replica::this_process(1_000);
        let b = Replica {
            id: "other:2:1000".into(),
            ..Replica::this_process(1_000)
        };
        let lease = 30_000;
        let j = s
            .create_job(new_job(1), Box::new(|_| Ok(Effects::default())))
            .await
            .unwrap()
            .unwrap();
        assert!(
            s.claim_job(j.id, &a.id, 1_000 + lease).await.unwrap(),
            "{url}"
        );
        assert!(
            !s.claim_job(j.id, &b.id, 1_000 + lease).await.unwrap(),
            "{url}: held by a"
        );
        assert!(
            s.claim_job(j.id, &a.id, 1_000 + lease).await.unwrap(),
            "{url}: a again"
        );
        s.set_job_status(j.id, JobStatus::Running, 2).await.unwrap();
        // Heartbeats renew it; while they come nothing expires.
        assert_eq!(s.heartbeat(&a, 20_000, 20_000 + lease).await.unwrap(), 1);
        assert_eq!(s.heartbeat(&b, 20_000, 20_000 + lease).await.unwrap(), 0);
        assert!(
            s.expired_jobs(45_000, lease).await.unwrap().is_empty(),
            "{url}"
        );
        // A's heartbeats stop: at 50 s + 1 ms its lease is over.
        let expired = s.expired_jobs(50_001, lease).await.unwrap();
        assert_eq!(expired.iter().map(|j| j.id).collect::<Vec<_>>(), vec![j.id]);
        let note = |t: &str| {
            Effects::messages(vec![
                NewMessage::post(50_001, "C1", Message::text(t)).job(j.id),
            ])
        };
        let outcome = Outcome {
            summary: "interrupted".into(),
            ..Outcome::default()
        };
        // Two replicas end it at once: one does, one finds it done.
        let (x, y) = tokio::join!(
            s.interrupt_job(j.id, 50_001, lease, outcome.clone(), note("from b")),
            s.interrupt_job(j.id, 50_002, lease, outcome.clone(), note("from c")),
        );
        assert_eq!(
            [x.unwrap(), y.unwrap()].iter().filter(|w| **w).count(),
            1,
            "{url}"
        );
        let done = s.job(j.id).await.unwrap().unwrap();
        assert_eq!(done.status, JobStatus::Interrupted, "{url}");
        assert_eq!(done.outcome.unwrap().summary, "interrupted");
        let notes = s.outbox_rows(Some(j.id), 10).await.unwrap();
        assert_eq!(
            notes.len(),
            1,
            "{url}: one note, from the winner: {notes:?}"
        );
        assert!(s.expired_jobs(60_000, lease).await.unwrap().is_empty());
        // A lease renewed in time is not ended, even if it had been found expired.
        let k = s
            .create_job(new_job(3), Box::new(|_| Ok(Effects::default())))
            .await
            .unwrap()
            .unwrap();
        assert!(s.claim_job(k.id, &b.id, 10_000).await.unwrap());
        assert_eq!(s.expired_jobs(10_001, lease).await.unwrap().len(), 1);
        s.heartbeat(&b, 10_002, 40_002).await.unwrap();
        assert!(
            !s.interrupt_job(k.id, 10_003, lease, outcome.clone(), note("late"))
                .await
                .unwrap(),
            "{url}"
        );
        assert_eq!(
            s.job(k.id).await.unwrap().unwrap().status,
            JobStatus::Queued
        );
        // Without a lease (written by an older replica): expired `lease` after its last
        // change (updated_at 5 s).
        let old = s
            .create_job(new_job(5), Box::new(|_| Ok(Effects::default())))
            .await
            .unwrap()
            .unwrap();
        let ids =
            |v: Vec<corral::store::JobRecord>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
        assert!(!ids(s.expired_jobs(35_000, lease).await.unwrap()).contains(&old.id));
        assert!(ids(s.expired_jobs(35_001, lease).await.unwrap()).contains(&old.id));
        // Awaiting approval and finished jobs never expire.
        s.set_job_status(old.id, JobStatus::AwaitingApproval, 5)
            .await
            .unwrap();
        assert!(!ids(s.expired_jobs(99_000_000, lease).await.unwrap()).contains(&old.id));
        // The replicas seen since a time, newest first.
        s.heartbeat(&a, 21_000, 21_000).await.unwrap();
        let seen = s.replicas(15_000).await.unwrap();
        assert_eq!(
            seen.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            vec![a.id.as_str(), b.id.as_str()],
            "{url}"
        );
        assert_eq!(
            (seen[0].last_seen_ms, seen[1].last_seen_ms),
            (21_000, 20_000)
        );
        assert_eq!(seen[0].pid, a.pid);
        assert!(s.replicas(21_001).await.unwrap().is_empty());
    }
}

/// The per-user command limit is the store's, so two processes spend one budget.
#[tokio::test]
async fn the_command_limit_is_one_budget_for_every_process() {
    use corral::store::Admission;
    let dir = TempDir::new("store-rate");
    for (url, s, db) in backends(&dir).await {
        // A second handle on the same database (PostgreSQL: another pool; SQLite memory
        // databases are private to their handle, so the same one).
        let other = match &db {
            Some(db) => corral::store::open(&db.url).await.unwrap(),
            None => s.clone(),
        };
        let take = |st: &Arc<dyn Store>, now: i64| {
            let st = st.clone();
            async move { st.take_rate("user:U1", now, 20_000, 3).await.unwrap() }
        };
        assert_eq!(take(&s, 0).await, Admission::Allowed, "{url}");
        assert_eq!(take(&other, 0).await, Admission::Allowed);
        assert_eq!(take(&s, 1).await, Admission::Allowed);
        assert_eq!(take(&other, 2).await, Admission::Refused, "{url}");
        assert_eq!(take(&s, 3).await, Admission::Silent);
        assert_eq!(
            s.take_rate("user:U2", 3, 20_000, 3).await.unwrap(),
            Admission::Allowed
        );
        // 20 s later one command is free again, then the flood is told again.
        assert_eq!(take(&other, 20_000).await, Admission::Allowed, "{url}");
        assert_eq!(take(&s, 20_001).await, Admission::Refused);
        // Simultaneous takes on a fresh budget of 3: exactly 3 pass.
        let racers = (0..8).map(|i| {
            let st = if i % 2 == 0 { s.clone() } else { other.clone() };
            async move { st.take_rate("user:U3", 50_000, 20_000, 3).await.unwrap() }
        });
        let got = futures::future::join_all(racers).await;
        assert_eq!(
            got.iter().filter(|a| **a == Admission::Allowed).count(),
            3,
            "{url}: {got:?}"
        );
        assert_eq!(got.iter().filter(|a| **a == Admission::Refused).count(), 1);
    }
}

/// Retention: delivered and finished unkeyed rows older than the cut are deleted; roots
/// (keyed rows), pending rows and newer rows stay.
#[tokio::test]
async fn pruning_deletes_old_finished_rows_and_keeps_roots_and_pending() {
    use corral::chat::Message;
    use corral::store::{Enqueued, NewMessage, Settle};
    let dir = TempDir::new("store-prune");
    for (url, s, _db) in backends(&dir).await {
        let m = |t: &str| Message::text(t);
        let out = s
            .enqueue(vec![
                NewMessage::post(1_000, "C1", m("root")).keyed("job:1:root"),
                NewMessage::post(1_000, "C2", m("old announcement")),
                NewMessage::post(1_000, "C3", m("waiting")),
            ])
            .await
            .unwrap();
        let ids: Vec<i64> = out
            .iter()
            .map(|e| match e {
                Enqueued::New(id) | Enqueued::Coalesced(id) => *id,
                other => panic!("{other:?}"),
            })
            .collect();
        for id in &ids[..2] {
            let row = s
                .outbox_claim(*id, "me", 2_000, 10_000)
                .await
                .unwrap()
                .unwrap();
            s.outbox_settle(
                *id,
                "me",
                Settle::Delivered {
                    version: row.version,
                    ts: Some("1.1".into()),
                },
                2_000,
            )
            .await
            .unwrap();
        }
        s.take_rate("user:old", 1_000, 1_000, 1).await.unwrap();
        s.heartbeat(&corral::store::Replica::this_process(1_000), 1_000, 2_000)
            .await
            .unwrap();
        // A cut before they were written deletes nothing.
        assert_eq!(s.prune(1_000, 0).await.unwrap().messages, 0, "{url}");
        let p = s.prune(5_000, 0).await.unwrap();
        assert_eq!((p.messages, p.other), (1, 2), "{url}");
        let left: Vec<String> = s
            .outbox_rows(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.message.text)
            .collect();
        assert_eq!(left, vec!["root", "waiting"], "{url}");
        assert!(s.outbox_get("job:1:root").await.unwrap().is_some());
    }
}

fn firing(key: &str, schedule: &str, at: i64, outcome: &str) -> corral::store::FiringClaim {
    corral::store::FiringClaim {
        key: key.into(),
        schedule: schedule.into(),
        at,
        outcome: outcome.into(),
        claimed_at: at,
    }
}

#[tokio::test]
async fn a_firing_is_claimed_once_with_its_messages_however_many_ask() {
    use corral::store::{Claimed, NewMessage};
    let dir = TempDir::new("store-firings");
    for (url, s, _db) in backends(&dir).await {
        assert_eq!(s.latest_firing("digest:C1").await.unwrap(), None, "{url}");
        // Twenty claims of one key at once: one writes its message, the others nothing.
        let asks: Vec<_> = (0..20)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let claim = firing("digest:C1:100", "digest:C1", 100, "sent");
                    s.claim_firing(
                        claim,
                        Box::new(move |_| {
                            Ok(Effects::messages(vec![NewMessage::post(
                                1,
                                "C1",
                                corral::chat::Message::text(format!("digest from {i}")),
                            )]))
                        }),
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut now = 0;
        for a in asks {
            match a.await.unwrap() {
                Claimed::Now => now += 1,
                Claimed::Before => {}
                other => panic!("{url}: {other:?}"),
            }
        }
        assert_eq!(now, 1, "{url}");
        let rows = s.outbox_rows(None, 100).await.unwrap();
        assert_eq!(rows.len(), 1, "{url}: {rows:?}");
        // A declining decider writes neither the claim nor its messages; it sees the lock.
        let got = s
            .claim_firing(
                firing("remind:5:0", "remind:5", 200, "reminded"),
                Box::new(|lock: &LockState| match &lock.running {
                    None => Err("no release".to_string()),
                    Some(_) => Ok(Effects::default()),
                }),
            )
            .await
            .unwrap();
        assert_eq!(got, Claimed::Declined("no release".into()), "{url}");
        assert_eq!(s.latest_firing("remind:5").await.unwrap(), None, "{url}");
        assert_eq!(s.outbox_rows(None, 100).await.unwrap().len(), 1, "{url}");
        // The latest firing of a schedule: greatest time; enter before exit at a tie.
        let ok = |_: &LockState| Ok(Effects::default());
        for (key, at, outcome) in [
            ("freeze:w:10:enter", 10, "enter"),
            ("freeze:w:10:exit", 20, "exit"),
            ("freeze:w:20:enter", 20, "enter"),
        ] {
            let got = s
                .claim_firing(firing(key, "freeze:w", at, outcome), Box::new(ok))
                .await
                .unwrap();
            assert_eq!(got, Claimed::Now, "{url} {key}");
        }
        let latest = s.latest_firing("freeze:w").await.unwrap().unwrap();
        assert_eq!(
            (latest.key.as_str(), latest.at, latest.outcome.as_str()),
            ("freeze:w:20:enter", 20, "enter"),
            "{url}"
        );
        assert_eq!(
            s.latest_firing("digest:C1").await.unwrap().unwrap().outcome,
            "sent",
            "{url}"
        );
        // Hostile keys are data.
        let hostile = "digest:'; DROP TABLE firings; --:1";
        let got = s
            .claim_firing(firing(hostile, "x'y", 1, "sent"), Box::new(ok))
            .await
            .unwrap();
        assert_eq!(got, Claimed::Now, "{url}");
        assert_eq!(
            s.latest_firing("x'y").await.unwrap().unwrap().key,
            hostile,
            "{url}"
        );
    }
}
