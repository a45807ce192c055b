//! `/upgrade image <ref>`: labelled services move to a new image (rancher-service-updater's
//! job, reference/rancher-tools.md §3, done properly).
//!
//! * **Selection** — every environment whose name matches one of `CORRAL_ENVIRONMENTS`
//!   (unanchored, like the updater) and `--env` if given; in it, every service whose
//!   `launchConfig.labels` carries `CORRAL_AUTOUPDATE_LABEL` with any value but `"false"`
//!   (the updater's rule), whose `imageUuid` names the same image as the request
//!   ([`ImageRef::same_image`]); the tag rule ([`image::decide`]) then says upgrade or skip.
//! * **Upgrade** — Rancher's in-service strategy (reference/rancher-api.md §11). The
//!   launch config is sent back **exactly as Rancher gave it** except `imageUuid`: it is
//!   kept as a [`serde_json::Value`], never a struct, so every field (including 1.6
//!   fields no struct here knows: `secrets`, `drainTimeoutMs`, …) survives with its
//!   value — nulls, zeros and `false` included, which the updater's typed round-trip
//!   dropped along with the unknown fields — in Rancher's key order (serde_json's
//!   `preserve_order`). Sidekicks (`secondaryLaunchConfigs`) are not sent, so they are
//!   left untouched (only the launch configs sent are upgraded, §11). `startFirst`,
//!   `batchSize` (`CORRAL_UPGRADE_BATCH_SIZE`) and `intervalMillis`
//!   (`CORRAL_UPGRADE_INTERVAL`) are always sent.
//! * **Confirm** — the one upgrade lifecycle ([`super::upgrade`]): wait for `upgraded`
//!   (one services read per environment per `CORRAL_RANCHER_POLL`, whatever the number of
//!   services waiting there, never past the timeout), then `finishupgrade`: done once
//!   Rancher accepted it, as for stacks. A failed upgrade is undone by `CORRAL_ROLLBACK_ON_TIMEOUT` (rollback, else
//!   cancel; off: cancel) and the service is reported failed. `--no-confirm` only starts
//!   the upgrades.
//! * Services run in parallel, at most `CORRAL_UPGRADE_PARALLELISM` at once; one failing
//!   service never stops the others. Progress goes out as plain events, one group per
//!   environment.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use regex::Regex;
use serde::Serialize;
use serde_json::{Value, json};

use super::Config as RancherConfig;
use super::client::Client;
use super::image::{self, Decision, ImageRef};
use super::model::Project;
use super::upgrade::{self, Done, Item, Observed, Policy, Report, Wanted, Watchers};
use crate::command::ImageUpgrade;
use crate::job::JobError;
use crate::job::{Failure, Outcome, PlanGroup, PlanItem, Progress, ProgressTx};
use crate::text::format_duration;

/// Everything that decides what happens, from the configuration and the command.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub label: String,
    pub environments: Vec<Regex>,
    pub env_filter: Option<Regex>,
    pub parallelism: usize,
    pub batch_size: u32,
    pub interval: Duration,
    pub start_first: bool,
    pub confirm: bool,
    pub timeout: Duration,
    pub poll: Duration,
    pub rollback_on_timeout: bool,
    pub dry_run: bool,
    pub force: bool,
}

impl Settings {
    pub(crate) fn new(cfg: &RancherConfig, cmd: &ImageUpgrade) -> Result<Settings, JobError> {
        let env_filter = match &cmd.env {
            Some(e) => Some(Regex::new(e).map_err(|err| {
                JobError::new(format!("--env {e:?} is not a valid regex: {err}"))
            })?),
            None => None,
        };
        Ok(Settings {
            label: cfg.autoupdate_label.clone(),
            environments: cfg.environments.clone(),
            env_filter,
            parallelism: cfg.parallelism.max(1),
            batch_size: cfg.batch_size.max(1),
            interval: cfg.batch_interval,
            start_first: cmd.start_first,
            confirm: cmd.confirm,
            timeout: cmd.timeout.unwrap_or(cfg.upgrade_timeout),
            poll: cfg.poll_interval.max(Duration::from_millis(10)),
            rollback_on_timeout: cfg.rollback_on_timeout,
            dry_run: cmd.dry_run,
            force: cmd.force,
        })
    }

    /// True when an environment of this name is in scope.
    pub(crate) fn environment_matches(&self, name: &str) -> bool {
        self.environments.iter().any(|r| r.is_match(name))
            && self.env_filter.as_ref().is_none_or(|r| r.is_match(name))
    }

    /// How every service goes through the upgrade lifecycle.
    fn policy(&self) -> Policy {
        Policy {
            timeout: self.timeout,
            rollback: self.rollback_on_timeout,
            confirm: self.confirm,
            parallelism: self.parallelism,
        }
    }
}

/// True when a launch config carries the enable label with any value but `"false"`.
pub(crate) fn labelled(launch_config: &Value, label: &str) -> bool {
    match launch_config.get("labels").and_then(|l| l.get(label)) {
        None => false,
        Some(Value::String(s)) => s != "false",
        Some(Value::Bool(b)) => *b,
        Some(_) => true,
    }
}

/// The body of the in-service upgrade: the launch config as Rancher sent it with only
/// `imageUuid` replaced, and the strategy settings.
pub(crate) fn upgrade_body(launch_config: &Value, image_uuid: &str, s: &Settings) -> Value {
    let mut lc = launch_config.clone();
    if let Value::Object(m) = &mut lc {
        m.insert("imageUuid".into(), Value::String(image_uuid.to_string()));
    }
    json!({
        "inServiceStrategy": {
            "launchConfig": lc,
            "startFirst": s.start_first,
            "batchSize": s.batch_size,
            "intervalMillis": u64::try_from(s.interval.as_millis()).unwrap_or(u64::MAX),
        }
    })
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One service considered for the upgrade.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub environment: String,
    pub environment_id: String,
    /// The environment's services collection (what is read while it waits).
    pub collection: String,
    pub stack: String,
    pub service: String,
    pub service_id: String,
    /// The service as Rancher sent it.
    pub raw: Value,
    pub from: String,
    pub to: String,
    pub image_uuid: String,
    pub skip: Option<String>,
}

impl Candidate {
    fn label(&self) -> String {
        if self.stack.is_empty() {
            self.service.clone()
        } else {
            format!("{}/{}", self.stack, self.service)
        }
    }

    /// The lifecycle's view of this service, or why it cannot be upgraded.
    fn target(&self, s: &Settings) -> Result<upgrade::Target, String> {
        let Some(lc) = self.raw.get("launchConfig") else {
            return Err("the service has no launchConfig".into());
        };
        Ok(upgrade::Target {
            noun: "service",
            id: self.service_id.clone(),
            listed: Observed::new(Arc::new(self.raw.clone())),
            body: upgrade_body(lc, &self.image_uuid, s),
            wanted: Wanted::Image(self.image_uuid.clone()),
        })
    }
}

/// What happened to one service (the job's `outcome.detail.services[]`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ServiceResult {
    pub environment: String,
    pub environment_id: String,
    pub stack: String,
    pub service: String,
    pub service_id: String,
    pub from: String,
    pub to: String,
    /// `upgraded`, `upgrading` (not confirmed), `would-upgrade` (dry run), `skipped`,
    /// `failed`.
    pub result: String,
    pub reason: Option<String>,
    pub seconds: f64,
}

impl ServiceResult {
    fn of(t: &Candidate, result: &str, reason: Option<String>, took: Duration) -> ServiceResult {
        ServiceResult {
            environment: t.environment.clone(),
            environment_id: t.environment_id.clone(),
            stack: t.stack.clone(),
            service: t.service.clone(),
            service_id: t.service_id.clone(),
            from: t.from.clone(),
            to: t.to.clone(),
            result: result.into(),
            reason,
            seconds: (took.as_millis() as f64) / 1000.0,
        }
    }

    fn from_report(t: &Candidate, r: &Report) -> ServiceResult {
        let (result, reason) = match &r.result {
            Ok(Done::Finished | Done::FinishedElsewhere) => ("upgraded", None),
            Ok(Done::Started) => (
                "upgrading",
                Some("upgrade started; not confirmed (--no-confirm)".to_string()),
            ),
            Err(why) => ("failed", Some(why.clone())),
        };
        ServiceResult::of(t, result, reason, r.elapsed)
    }

    fn ok(&self) -> bool {
        matches!(self.result.as_str(), "upgraded" | "upgrading")
    }
}

/// The services of one environment that run `wanted`'s image and carry the label, each
/// with its decision. `environment` is (id, name, services collection URL).
pub(crate) fn candidates(
    environment: (&str, &str, &str),
    services: &[Value],
    stacks: &HashMap<String, String>,
    wanted: &ImageRef,
    s: &Settings,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for svc in services {
        let Some(lc) = svc.get("launchConfig").filter(|l| l.is_object()) else {
            continue;
        };
        if !labelled(lc, &s.label) {
            continue;
        }
        let Ok(current) = ImageRef::parse(text(lc, "imageUuid")) else {
            continue;
        };
        if !current.same_image(wanted) {
            continue;
        }
        let skip = match image::decide(&current, wanted, s.force) {
            Decision::Upgrade => None,
            Decision::Skip(why) => Some(why),
        };
        let stack_id = svc
            .get("stackId")
            .or_else(|| svc.get("environmentId"))
            .and_then(Value::as_str)
            .unwrap_or("");
        out.push(Candidate {
            environment: environment.1.to_string(),
            environment_id: environment.0.to_string(),
            collection: environment.2.to_string(),
            stack: stacks.get(stack_id).cloned().unwrap_or_default(),
            service: text(svc, "name").to_string(),
            service_id: text(svc, "id").to_string(),
            raw: svc.clone(),
            from: current.version_text(),
            to: wanted.version_text(),
            image_uuid: format!("docker:{}", current.retagged(wanted)),
            skip,
        });
    }
    out.sort_by_key(Candidate::label);
    out
}

/// One environment's services: its services collection URL, the services, and stack
/// names by id.
type Listing = (String, Vec<Value>, HashMap<String, String>);

/// Lists one environment's services and stack names.
async fn environment_services(client: &Client, project: &Project) -> Result<Listing, String> {
    let url = client
        .collection_url(project, "services")
        .map_err(|e| e.to_string())?;
    let (services, stacks) =
        tokio::join!(client.list::<Value>(&url, &[]), client.stacks(project, &[]));
    let services = services.map_err(|e| e.to_string())?;
    // Stack names only make the report readable; without them services are named alone.
    let stacks = stacks
        .map(|v| v.into_iter().map(|s| (s.id, s.name)).collect())
        .unwrap_or_default();
    Ok((url, services, stacks))
}

/// The candidates of every matching environment, the plan groups, and the
/// environments whose services could not be listed.
async fn select(
    client: &Client,
    s: &Settings,
    wanted: &ImageRef,
) -> Result<(Vec<Candidate>, Vec<PlanGroup>, Vec<Failure>), JobError> {
    let projects = client
        .projects()
        .await
        .map_err(|e| JobError::new(format!("cannot list Rancher environments: {e}")))?;
    let projects: Vec<_> = projects
        .into_iter()
        .filter(|p| s.environment_matches(&p.name))
        .collect();
    // Futures own what they use (no borrowed closures in the stream): the job future
    // must stay `Send` for the runner's `tokio::spawn`.
    let listed: Vec<_> = futures::stream::iter(projects.into_iter().map(|p| {
        let client = client.clone();
        async move {
            let r = environment_services(&client, &p).await;
            (p, r)
        }
    }))
    .buffered(s.parallelism.min(16))
    .collect()
    .await;
    let (mut found, mut groups, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for (p, r) in listed {
        match r {
            Ok((url, services, stacks)) => {
                let here = candidates((&p.id, &p.name, &url), &services, &stacks, wanted, s);
                if here.is_empty() {
                    continue;
                }
                groups.push(PlanGroup {
                    name: p.name.clone(),
                    items: here.iter().map(plan_item).collect(),
                });
                found.extend(here);
            }
            Err(e) => failed.push(Failure {
                group: p.name.clone(),
                target: "(services)".into(),
                reason: format!("cannot list services: {e}"),
            }),
        }
    }
    Ok((found, groups, failed))
}

fn plan_item(t: &Candidate) -> PlanItem {
    PlanItem {
        target: t.label(),
        change: if t.skip.is_none() {
            format!("{} → {}", t.from, t.to)
        } else {
            String::new()
        },
        skipped: t.skip.clone(),
        details: Vec::new(),
        binds: String::new(),
    }
}

/// Upgrades the chosen services through the lifecycle.
async fn execute(
    client: &Client,
    s: &Settings,
    chosen: Vec<Candidate>,
    progress: &ProgressTx,
) -> Vec<ServiceResult> {
    let watchers = Watchers::new(client, s.poll);
    let items = chosen
        .into_iter()
        .map(|c| Item {
            group: c.environment.clone(),
            label: c.label(),
            plan: c
                .target(s)
                .map(|t| (t, watchers.collection(&c.collection, &[]))),
            tag: c,
        })
        .collect();
    upgrade::execute(client, &s.policy(), items, progress)
        .await
        .into_iter()
        .map(|(c, report)| ServiceResult::from_report(&c, &report))
        .collect()
}

/// Runs `/upgrade image <ref>` end to end.
pub(crate) async fn run(
    client: &Client,
    cmd: &ImageUpgrade,
    s: &Settings,
    progress: ProgressTx,
) -> Result<Outcome, JobError> {
    let wanted = ImageRef::parse(&cmd.image).map_err(|e| JobError::new(format!("image: {e}")))?;
    let (targets, groups, mut failed) = select(client, s, &wanted).await?;
    let mode = if s.dry_run {
        "dry run, nothing will change".to_string()
    } else if s.confirm {
        format!(
            "confirm: wait up to {} for `upgraded`, then finish",
            format_duration(s.timeout)
        )
    } else {
        "not confirmed: upgrades are started and left `upgraded`".to_string()
    };
    progress.send(Progress::Plan {
        title: format!("Upgrade labelled services to `{}` ({mode})", cmd.image),
        groups,
    });
    for f in &failed {
        progress.note(format!("⚠ {}: {}", f.group, f.reason));
    }
    let (skipped, active): (Vec<Candidate>, Vec<Candidate>) =
        targets.into_iter().partition(|t| t.skip.is_some());
    let mut results: Vec<ServiceResult> = skipped
        .iter()
        .map(|t| ServiceResult::of(t, "skipped", t.skip.clone(), Duration::ZERO))
        .collect();
    if s.dry_run {
        results.extend(
            active
                .iter()
                .map(|t| ServiceResult::of(t, "would-upgrade", None, Duration::ZERO)),
        );
    } else {
        for r in execute(client, s, active, &progress).await {
            if !r.ok() {
                failed.push(Failure {
                    group: r.environment.clone(),
                    target: if r.stack.is_empty() {
                        r.service.clone()
                    } else {
                        format!("{}/{}", r.stack, r.service)
                    },
                    reason: r.reason.clone().unwrap_or_default(),
                });
            }
            results.push(r);
        }
    }
    results.sort_by(|a, b| {
        (&a.environment, &a.stack, &a.service).cmp(&(&b.environment, &b.stack, &b.service))
    });
    Ok(outcome(cmd, s, &wanted, results, failed))
}

/// The outcome of a run: counts, the summary line, the per-service detail.
fn outcome(
    cmd: &ImageUpgrade,
    s: &Settings,
    wanted: &ImageRef,
    results: Vec<ServiceResult>,
    failed: Vec<Failure>,
) -> Outcome {
    let count = |what: &str| results.iter().filter(|r| r.result == what).count();
    let succeeded = results.iter().filter(|r| r.ok()).count();
    let envs = results
        .iter()
        .filter(|r| r.ok())
        .map(|r| r.environment.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    let summary = if s.dry_run {
        format!(
            "Dry run: {} service(s) would move to `{}`, {} skipped; nothing changed",
            count("would-upgrade"),
            cmd.image,
            count("skipped")
        )
    } else if results.is_empty() && failed.is_empty() {
        format!(
            "No service labelled `{}` runs `{}` in the matching environments",
            s.label, wanted
        )
    } else {
        let verb = if s.confirm {
            "upgraded"
        } else {
            "started upgrading"
        };
        let mut text = format!(
            "{succeeded} service(s) {verb} to `{}` in {envs} environment(s)",
            cmd.image
        );
        if !failed.is_empty() {
            text.push_str(&format!(", {} failed", failed.len()));
        }
        if count("skipped") > 0 {
            text.push_str(&format!(", {} skipped", count("skipped")));
        }
        text
    };
    Outcome {
        succeeded: if s.dry_run { 0 } else { succeeded },
        skipped: count("skipped") + count("would-upgrade"),
        summary,
        detail: json!({
            "image": wanted.to_string(),
            "requested": cmd.image,
            "dry_run": s.dry_run,
            "confirm": s.confirm,
            "start_first": s.start_first,
            "timeout_seconds": s.timeout.as_secs_f64(),
            "services": results,
        }),
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            label: "autoupdate.enable".into(),
            environments: vec![Regex::new(".*").expect("regex")],
            env_filter: None,
            parallelism: 4,
            batch_size: 2,
            interval: Duration::from_millis(1500),
            start_first: true,
            confirm: true,
            timeout: Duration::from_secs(30),
            poll: Duration::from_secs(2),
            rollback_on_timeout: true,
            dry_run: false,
            force: false,
        }
    }

    #[test]
    fn label_values() {
        for (labels, want) in [
            (json!({"autoupdate.enable": "true"}), true),
            (json!({"autoupdate.enable": ""}), true),
            (json!({"autoupdate.enable": "no"}), true),
            (json!({"autoupdate.enable": "0"}), true),
            (json!({"autoupdate.enable": "false"}), false),
            (json!({"autoupdate.enable": "FALSE"}), true),
            (json!({"other": "true"}), false),
            (json!(null), false),
            (json!("x"), false),
        ] {
            assert_eq!(
                labelled(&json!({"labels": labels}), "autoupdate.enable"),
                want,
                "{labels}"
            );
        }
        assert!(!labelled(&json!({}), "autoupdate.enable"));
    }

    #[test]
    fn environment_filter() {
        let mut s = settings();
        s.environments = vec![
            Regex::new("dev").expect("r"),
            Regex::new("^stage$").expect("r"),
        ];
        assert!(s.environment_matches("mydevbox"));
        assert!(s.environment_matches("stage"));
        assert!(!s.environment_matches("staged"));
        assert!(!s.environment_matches("prod"));
        s.env_filter = Some(Regex::new("box").expect("r"));
        assert!(s.environment_matches("mydevbox"));
        assert!(!s.environment_matches("dev"));
    }

    #[test]
    fn body_keeps_everything_but_the_image() {
        let raw = r#"{"zeta":1,"imageUuid":"docker:myorg/app:1.0","secrets":[{"secretId":"1se1"}],"drainTimeoutMs":0,"labels":{"b":"1","a":"2"},"alpha":null,"ratio":0.1234567890123456789,"tiny":2.2250738585072014e-308,"big":18446744073709551615,"neg":-9223372036854775808,"off":false}"#;
        let lc: Value = serde_json::from_str(raw).expect("json");
        let body = upgrade_body(&lc, "docker:myorg/app:2.0", &settings());
        let sent = &body["inServiceStrategy"]["launchConfig"];
        let want: Value =
            serde_json::from_str(&raw.replace("myorg/app:1.0", "myorg/app:2.0")).expect("json");
        assert_eq!(sent, &want);
        // Integers at the edges of their range keep every digit; floats parse exactly
        // (serde_json's `float_roundtrip`), so they are sent with the same value.
        assert_eq!(sent["ratio"].as_f64(), Some(0.123_456_789_012_345_68));
        assert_eq!(sent["tiny"].as_f64(), Some(f64::MIN_POSITIVE));
        let text = serde_json::to_string(sent).expect("ser");
        assert!(
            text.contains("18446744073709551615") && text.contains("-9223372036854775808"),
            "{text}"
        );
        assert!(
            text.contains(r#""alpha":null"#)
                && text.contains(r#""off":false"#)
                && text.contains(r#""drainTimeoutMs":0"#)
        );
        let st = &body["inServiceStrategy"];
        assert_eq!(st["startFirst"], json!(true));
        assert_eq!(st["batchSize"], json!(2));
        assert_eq!(st["intervalMillis"], json!(1500));
        assert!(st.get("secondaryLaunchConfigs").is_none());
        assert!(body.get("toServiceStrategy").is_none());
    }

    #[test]
    fn selection() {
        let svc = |name: &str, image: &str, label: Option<&str>| {
            let mut labels = serde_json::Map::new();
            if let Some(v) = label {
                labels.insert("autoupdate.enable".into(), json!(v));
            }
            json!({"id": format!("1s{name}"), "name": name, "stackId": "1st1", "state": "active",
                   "launchConfig": {"imageUuid": image, "labels": labels}})
        };
        let services = vec![
            svc("a", "docker:myorg/app:1.0", Some("true")),
            svc("b", "docker:myorg/app:3.0", Some("true")),
            svc("c", "docker:myorg/app:1.0", None),
            svc("d", "docker:myorg/app:1.0", Some("false")),
            svc("e", "docker:myorg/apx:1.0", Some("true")),
            svc("f", "docker:docker.io/myorg/app:abc", Some("")),
            svc("g", "not an image", Some("true")),
            json!({"id": "1sh", "name": "h", "launchConfig": null}),
            json!({"id": "1si", "name": "i"}),
            // Hostile shapes: wrong types are skipped, never a panic.
            json!({"id": 7, "name": ["j"], "launchConfig": {"imageUuid": 5, "labels": {"autoupdate.enable": "true"}}}),
            json!({"launchConfig": {"imageUuid": "docker:myorg/app:1.0", "labels": ["autoupdate.enable"]}}),
            json!("not a service"),
        ];
        let stacks = HashMap::from([("1st1".to_string(), "web".to_string())]);
        let wanted = ImageRef::parse("myorg/app:2.0").expect("ref");
        let found = candidates(
            ("1a5", "dev", "http://r/v2-beta/projects/1a5/services"),
            &services,
            &stacks,
            &wanted,
            &settings(),
        );
        let names: Vec<_> = found
            .iter()
            .map(|t| (t.label(), t.skip.is_none()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("web/a".to_string(), true),
                ("web/b".to_string(), false),
                ("web/f".to_string(), false)
            ]
        );
        assert_eq!(found[0].image_uuid, "docker:myorg/app:2.0");
        assert_eq!(found[2].image_uuid, "docker:docker.io/myorg/app:2.0");
        assert!(
            found[2]
                .skip
                .as_deref()
                .is_some_and(|w| w.contains("cannot compare"))
        );
    }
}
