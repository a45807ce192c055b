//! `/upgrade <catalog>:<template>:<version>`: go-cowpoke's job, done properly
//! (reference/cowpoke.md §5, reference/rancher-api.md §7–§9, §13).
//!
//! 1. **Plan.** Resolve the template and the wanted version (by its version string, as
//!    go-cowpoke's `templateVersion`, or by catalog folder id), fetch its compose files
//!    once; in every environment the key can see that matches `CORRAL_ENVIRONMENTS`
//!    and `--env`, list the stacks of that template (every page) and classify each
//!    ([`super::version::classify`]). The plan is the first thing reported.
//! 2. **Execute.** Stacks are upgraded with bounded parallelism: upgrade → wait for
//!    `upgraded` → finishupgrade, each under its own deadline. Waiting reads one stack
//!    collection per environment per poll interval, shared by every stack waiting there,
//!    instead of one read per stack. A stack that fails (refused action, `transitioning:
//!    error`, deadline passed) is rolled back (or its upgrade cancelled) when Rancher
//!    offers it, and reported with Rancher's message; the others go on.
//!
//! `--dry-run` stops after the plan: nothing that changes Rancher is sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

use super::client::{Client, Filter, RancherError};
use super::model::{Project, Resource, Stack, TemplateVersion};
use super::version::{CatalogId, Target, Verdict, classify};
use crate::command::CatalogUpgrade;
use crate::job::{Failure, Outcome, PlanGroup, PlanItem, Progress, ProgressTx};

/// Settings of one run (from [`super::Config`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Environments whose name matches one of these (CORRAL_ENVIRONMENTS).
    pub environments: Vec<Regex>,
    /// Stacks upgraded at once, over all environments.
    pub parallelism: usize,
    /// How long one stack may take from its upgrade request to `upgraded`.
    pub upgrade_timeout: Duration,
    /// How often a waiting environment is read.
    pub poll_interval: Duration,
}

/// One stack's line in the result (`Outcome.detail.stacks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackResult {
    pub environment: String,
    pub environment_id: String,
    pub name: String,
    pub id: String,
    /// The stack's externalId before the run.
    pub external_id: String,
    /// `planned` (dry run), `skipped`, `upgraded`, `failed`.
    pub status: String,
    /// The version string reached (go-cowpoke's `upgradedTo`): set once the stack is
    /// `upgraded`, even if finishing it then failed.
    pub upgraded_to: String,
    /// Why it failed or was skipped; empty when upgraded.
    pub error: String,
}

/// A failure before any stack was touched, with the HTTP status the go-cowpoke endpoint
/// answers for it (`Outcome.detail.error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanError {
    pub status: u16,
    pub msg: String,
}

/// `Outcome.detail` of a catalog upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    pub catalog: String,
    pub template: String,
    /// The version asked for.
    pub version: String,
    /// The template-version id resolved (`library:web:12`).
    pub template_version_id: String,
    pub dry_run: bool,
    pub error: Option<PlanError>,
    /// Environments that matched the filters.
    pub environments: Vec<String>,
    pub stacks: Vec<StackResult>,
}

impl Detail {
    pub fn from_outcome(o: &Outcome) -> Option<Detail> {
        serde_json::from_value(o.detail.clone()).ok()
    }
}

/// What the plan resolved about the target version.
struct Resolved {
    target: Target,
    docker_compose: String,
    rancher_compose: Option<String>,
}

fn plan_failure(
    cmd: &CatalogUpgrade,
    status: u16,
    msg: impl Into<String>,
    reason: String,
) -> Outcome {
    let detail = Detail {
        catalog: cmd.catalog.clone(),
        template: cmd.template.clone(),
        version: cmd.version.clone(),
        dry_run: cmd.dry_run,
        error: Some(PlanError {
            status,
            msg: msg.into(),
        }),
        ..Detail::default()
    };
    Outcome {
        succeeded: 0,
        failed: vec![Failure {
            group: String::new(),
            target: format!("{}:{}:{}", cmd.catalog, cmd.template, cmd.version),
            reason: reason.clone(),
        }],
        skipped: 0,
        summary: reason,
        detail: serde_json::to_value(detail).unwrap_or(Value::Null),
    }
}

/// A Rancher error during planning: go-cowpoke answered with Rancher's status and message.
fn rancher_plan_failure(cmd: &CatalogUpgrade, what: &str, e: &RancherError) -> Outcome {
    let status = e.status().filter(|s| (400..600).contains(s)).unwrap_or(500);
    let msg = match e {
        RancherError::Api { message, .. } => message.clone(),
        _ => "an unexpected error occurred".to_string(),
    };
    plan_failure(cmd, status, msg, format!("{what}: {e}"))
}

/// The last `:`-separated part of a version link's path (`…/templates/lib:web:12` → `12`).
fn revision_of_link(link: &str) -> Option<String> {
    let path = url::Url::parse(link)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| link.split(['?', '#']).next().unwrap_or("").to_string());
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let decoded = percent_decode(last);
    decoded
        .rsplit(':')
        .next()
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

async fn resolve(client: &Client, cmd: &CatalogUpgrade) -> Result<Resolved, Outcome> {
    let name = format!("{}:{}", cmd.catalog, cmd.template);
    let template = client
        .template(&cmd.catalog, &cmd.template)
        .await
        .map_err(|e| rancher_plan_failure(cmd, &format!("catalog template `{name}`"), &e))?;
    // revision → version string, for labels and non-integer comparisons.
    let mut versions = BTreeMap::new();
    for (ver, link) in &template.version_links {
        if let Some(rev) = revision_of_link(link) {
            versions.insert(rev, ver.clone());
        }
    }
    let link = template
        .version_links
        .get(&cmd.version)
        .cloned()
        .or_else(|| {
            template
                .version_links
                .values()
                .find(|l| revision_of_link(l).as_deref() == Some(cmd.version.as_str()))
                .cloned()
        });
    let Some(link) = link else {
        let mut known: Vec<String> = template
            .version_links
            .iter()
            .map(|(v, l)| match revision_of_link(l) {
                Some(r) => format!("{v} (id {r})"),
                None => v.clone(),
            })
            .collect();
        known.sort();
        let reason = format!(
            "catalog template `{name}` has no version `{}`; it has: {}",
            cmd.version,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
        return Err(plan_failure(cmd, 404, "url not found for template", reason));
    };
    let tv: TemplateVersion = client.template_version(&link).await.map_err(|e| {
        rancher_plan_failure(cmd, &format!("version `{}` of `{name}`", cmd.version), &e)
    })?;
    let Some(id) = CatalogId::parse(&tv.id) else {
        return Err(plan_failure(
            cmd,
            404,
            "could not get template version",
            format!(
                "the catalog answered a template version with an unusable id `{}`",
                tv.id
            ),
        ));
    };
    if id.catalog != cmd.catalog || id.template != cmd.template {
        return Err(plan_failure(
            cmd,
            404,
            "could not get template version",
            format!("the catalog answered `{}` for `{name}`", tv.id),
        ));
    }
    let Some(docker_compose) = tv.file("docker-compose.yml").map(str::to_string) else {
        return Err(plan_failure(
            cmd,
            404,
            "could not get template version",
            format!("version `{}` of `{name}` has no docker-compose.yml", tv.id),
        ));
    };
    let version = if tv.version.trim().is_empty() {
        versions
            .get(&id.revision)
            .cloned()
            .unwrap_or_else(|| cmd.version.clone())
    } else {
        tv.version.clone()
    };
    versions.insert(id.revision.clone(), version.clone());
    Ok(Resolved {
        target: Target {
            id,
            version,
            versions,
        },
        docker_compose,
        rancher_compose: tv.file("rancher-compose.yml").map(str::to_string),
    })
}

/// One environment's part of the plan.
struct EnvPlan {
    project: Project,
    /// Stacks in plan order with their verdicts.
    stacks: Vec<(Stack, Verdict)>,
    /// The environment's stacks could not be read.
    error: Option<RancherError>,
}

/// Whether an externalId claims to come from this catalog (parseable or not).
fn same_catalog(external_id: &str, catalog: &str) -> bool {
    external_id
        .trim()
        .strip_prefix("catalog://")
        .and_then(|rest| rest.strip_prefix(catalog))
        .is_some_and(|rest| rest.starts_with(':'))
}

fn stack_filter(cmd: &CatalogUpgrade) -> Vec<Filter> {
    vec![Filter::prefix(
        "externalId",
        &format!("catalog://{}:{}:", cmd.catalog, cmd.template),
    )]
}

/// Runs one catalog upgrade: plans, reports the plan, and (unless dry run) executes it.
pub async fn run(
    client: &Client,
    settings: &Settings,
    cmd: &CatalogUpgrade,
    progress: &ProgressTx,
) -> Outcome {
    let env_filter = match &cmd.env {
        Some(re) => match Regex::new(re) {
            Ok(r) => Some(r),
            Err(e) => {
                return plan_failure(
                    cmd,
                    400,
                    "invalid environment filter",
                    format!("--env {re:?}: {e}"),
                );
            }
        },
        None => None,
    };
    let resolved = match resolve(client, cmd).await {
        Ok(r) => r,
        Err(o) => return o,
    };
    let projects = match client.projects().await {
        Ok(p) => p,
        Err(e) => return rancher_plan_failure(cmd, "listing environments", &e),
    };
    if projects.is_empty() {
        return plan_failure(
            cmd,
            500,
            "No environments could be found",
            "the Rancher key sees no environments".into(),
        );
    }
    let seen = projects.len();
    let chosen: Vec<Project> = projects
        .into_iter()
        .filter(|p| p.state.is_empty() || p.state == "active")
        .filter(|p| settings.environments.iter().any(|r| r.is_match(&p.name)))
        .filter(|p| env_filter.as_ref().is_none_or(|r| r.is_match(&p.name)))
        .collect();

    let filters = stack_filter(cmd);
    let reads = chosen.into_iter().map(|project| {
        let filters = filters.clone();
        let target = &resolved.target;
        async move {
            let listed = match client.collection_url(&project, "stacks") {
                Ok(url) => client.list_unchecked::<Stack>(&url, &filters).await,
                Err(e) => Err(e),
            };
            match listed {
                Ok(mut stacks) => {
                    // The server's LIKE (or a server ignoring the filter) can return
                    // stacks of other templates: the ones from the same catalog stay
                    // in the plan as skipped, with the reason; the rest are not ours.
                    stacks.retain(|s| same_catalog(&s.external_id, &cmd.catalog));
                    stacks.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
                    // A stack created while the pages were read can shift the offsets
                    // and show one stack twice; it is upgraded once.
                    stacks.dedup_by(|a, b| a.id == b.id);
                    let stacks = stacks
                        .into_iter()
                        .map(|s| {
                            let v = classify(&s.external_id, target);
                            (s, v)
                        })
                        .collect();
                    EnvPlan {
                        project,
                        stacks,
                        error: None,
                    }
                }
                Err(e) => EnvPlan {
                    project,
                    stacks: Vec::new(),
                    error: Some(e),
                },
            }
        }
    });
    let envs: Vec<EnvPlan> = futures::future::join_all(reads).await;

    let target = &resolved.target;
    let title = format!(
        "{}:{} → {} (catalog id {}) — {} of {} environments match",
        cmd.catalog,
        cmd.template,
        target.version,
        target.id,
        envs.len(),
        seen
    );
    let groups: Vec<PlanGroup> = envs
        .iter()
        .filter(|e| !e.stacks.is_empty() || e.error.is_some())
        .map(|e| PlanGroup {
            name: e.project.name.clone(),
            items: match &e.error {
                Some(err) => vec![PlanItem {
                    target: "(stack list)".into(),
                    change: String::new(),
                    skipped: Some(format!("cannot be read: {err}")),
                }],
                None => e
                    .stacks
                    .iter()
                    .map(|(s, v)| match v {
                        Verdict::Upgrade { from } => PlanItem {
                            target: s.name.clone(),
                            change: format!("{from} → {}", target.version),
                            skipped: None,
                        },
                        Verdict::Skip(why) => PlanItem {
                            target: s.name.clone(),
                            change: String::new(),
                            skipped: Some(why.clone()),
                        },
                    })
                    .collect(),
            },
        })
        .collect();
    progress.send(Progress::Plan { title, groups });

    let mut detail = Detail {
        catalog: cmd.catalog.clone(),
        template: cmd.template.clone(),
        version: cmd.version.clone(),
        template_version_id: target.id.to_string(),
        dry_run: cmd.dry_run,
        error: None,
        environments: envs.iter().map(|e| e.project.name.clone()).collect(),
        stacks: Vec::new(),
    };
    let mut failed: Vec<Failure> = Vec::new();
    let mut skipped = 0usize;
    let mut work: Vec<(usize, Stack)> = Vec::new(); // (env index, stack)
    for (i, e) in envs.iter().enumerate() {
        if let Some(err) = &e.error {
            failed.push(Failure {
                group: e.project.name.clone(),
                target: "(stack list)".into(),
                reason: format!("the stacks of this environment cannot be read: {err}"),
            });
        }
        for (s, v) in &e.stacks {
            let mut r = StackResult {
                environment: e.project.name.clone(),
                environment_id: e.project.id.clone(),
                name: s.name.clone(),
                id: s.id.clone(),
                external_id: s.external_id.clone(),
                status: String::new(),
                upgraded_to: String::new(),
                error: String::new(),
            };
            match v {
                Verdict::Skip(why) => {
                    skipped += 1;
                    r.status = "skipped".into();
                    r.error = why.clone();
                }
                Verdict::Upgrade { .. } => {
                    r.status = "planned".into();
                    work.push((i, s.clone()));
                }
            }
            detail.stacks.push(r);
        }
    }

    if cmd.dry_run {
        let n = work.len();
        let envs_with = {
            let mut idx: Vec<usize> = work.iter().map(|(i, _)| *i).collect();
            idx.dedup();
            idx.len()
        };
        progress.note(format!(
            "Dry run: {n} stack{} would be upgraded to {}; nothing was sent to Rancher.",
            plural(n),
            target.version
        ));
        return Outcome {
            succeeded: 0,
            failed,
            skipped: skipped + n,
            summary: format!(
                "dry run: {n} stack{} in {envs_with} environment{} would be upgraded to {}; nothing changed",
                plural(n),
                plural(envs_with),
                target.version
            ),
            detail: serde_json::to_value(&detail).unwrap_or(Value::Null),
        };
    }

    let results = execute(client, settings, &resolved, &envs, work, progress).await;
    let mut ok = 0usize;
    let mut ok_envs: Vec<String> = Vec::new();
    for res in results {
        let Some(slot) = detail
            .stacks
            .iter_mut()
            .find(|r| r.id == res.id && r.environment_id == res.environment_id)
        else {
            continue;
        };
        if res.status == "upgraded" {
            ok += 1;
            if !ok_envs.contains(&res.environment_id) {
                ok_envs.push(res.environment_id.clone());
            }
        } else {
            failed.push(Failure {
                group: res.environment.clone(),
                target: res.name.clone(),
                reason: res.error.clone(),
            });
        }
        *slot = res;
    }
    let total = ok + failed.iter().filter(|f| f.target != "(stack list)").count();
    let summary = if total == 0 && failed.is_empty() {
        format!(
            "no stack of {}:{} needed an upgrade to {}",
            cmd.catalog, cmd.template, target.version
        )
    } else if failed.is_empty() {
        format!(
            "{ok} stack{} upgraded to {} in {} environment{}",
            plural(ok),
            target.version,
            ok_envs.len(),
            plural(ok_envs.len())
        )
    } else {
        format!(
            "{ok} of {total} stack{} upgraded to {}; {} failed",
            plural(total),
            target.version,
            failed.len()
        )
    };
    Outcome {
        succeeded: ok,
        failed,
        skipped,
        summary,
        detail: serde_json::to_value(&detail).unwrap_or(Value::Null),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One read of an environment's stacks.
struct Snapshot {
    /// When the read was sent: a stack only trusts reads sent after its upgrade was
    /// accepted (an earlier read shows the state before it).
    sent: Instant,
    stacks: HashMap<String, Stack>,
}

/// Shared view of one environment's stacks while stacks there wait.
struct Watcher {
    snapshot: watch::Sender<Arc<Snapshot>>,
    waiting: AtomicUsize,
    wake: Notify,
}

/// Decrements `waiting` however the wait ends.
struct WaitGuard<'a>(&'a Watcher);

impl<'a> WaitGuard<'a> {
    fn new(w: &'a Watcher) -> Self {
        w.waiting.fetch_add(1, Ordering::SeqCst);
        w.wake.notify_one();
        WaitGuard(w)
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads one environment's stacks every `interval` while any stack there waits.
async fn poll_env(
    client: Client,
    project: Project,
    filters: Vec<Filter>,
    w: Arc<Watcher>,
    interval: Duration,
) {
    loop {
        while w.waiting.load(Ordering::SeqCst) == 0 {
            w.wake.notified().await;
        }
        tokio::time::sleep(interval).await;
        if w.waiting.load(Ordering::SeqCst) == 0 {
            continue;
        }
        let sent = Instant::now();
        match client.stacks(&project, &filters).await {
            Ok(stacks) => {
                let stacks: HashMap<String, Stack> =
                    stacks.into_iter().map(|s| (s.id.clone(), s)).collect();
                w.snapshot.send_replace(Arc::new(Snapshot { sent, stacks }));
            }
            // Transient: the GET was already retried; the next interval tries again and
            // each stack's deadline bounds the wait.
            Err(e) => {
                tracing::warn!(environment = %project.name, error = %e, "reading stacks failed")
            }
        }
    }
}

async fn execute(
    client: &Client,
    settings: &Settings,
    resolved: &Resolved,
    envs: &[EnvPlan],
    work: Vec<(usize, Stack)>,
    progress: &ProgressTx,
) -> Vec<StackResult> {
    if work.is_empty() {
        return Vec::new();
    }
    let filters = {
        let t = &resolved.target.id;
        vec![Filter::prefix(
            "externalId",
            &format!("catalog://{}:{}:", t.catalog, t.template),
        )]
    };
    let mut watchers: HashMap<usize, Arc<Watcher>> = HashMap::new();
    let mut remaining: HashMap<usize, usize> = HashMap::new();
    let mut pollers = tokio::task::JoinSet::new();
    for (i, _) in &work {
        *remaining.entry(*i).or_default() += 1;
        watchers.entry(*i).or_insert_with(|| {
            let (tx, _rx) = watch::channel(Arc::new(Snapshot {
                sent: Instant::now(),
                stacks: HashMap::new(),
            }));
            let w = Arc::new(Watcher {
                snapshot: tx,
                waiting: AtomicUsize::new(0),
                wake: Notify::new(),
            });
            pollers.spawn(poll_env(
                client.clone(),
                envs[*i].project.clone(),
                filters.clone(),
                w.clone(),
                // A zero interval (CORRAL_RANCHER_POLL=0) must not become a busy loop.
                settings.poll_interval.max(Duration::from_millis(10)),
            ));
            w
        });
    }
    let remaining = std::sync::Mutex::new(remaining);
    let permits = Semaphore::new(settings.parallelism.max(1));
    let tasks = work.into_iter().map(|(i, stack)| {
        let env = &envs[i].project;
        let watcher = watchers.get(&i).cloned();
        let permits = &permits;
        let remaining = &remaining;
        async move {
            let _permit = permits.acquire().await.ok();
            progress.send(Progress::TargetStarted {
                group: env.name.clone(),
                target: stack.name.clone(),
            });
            let mut r = StackResult {
                environment: env.name.clone(),
                environment_id: env.id.clone(),
                name: stack.name.clone(),
                id: stack.id.clone(),
                external_id: stack.external_id.clone(),
                status: "failed".into(),
                upgraded_to: String::new(),
                error: String::new(),
            };
            match watcher {
                Some(w) => upgrade_one(client, settings, resolved, &stack, &w, &mut r).await,
                None => r.error = "internal: no watcher for this environment".into(),
            }
            progress.send(Progress::TargetFinished {
                group: env.name.clone(),
                target: stack.name.clone(),
                ok: r.status == "upgraded",
                detail: r.error.clone(),
            });
            let left = {
                let mut m = remaining.lock().unwrap_or_else(|p| p.into_inner());
                let n = m.entry(i).or_insert(1);
                *n = n.saturating_sub(1);
                *n
            };
            if left == 0 {
                progress.send(Progress::GroupFinished {
                    group: env.name.clone(),
                });
            }
            r
        }
    });
    let results = futures::future::join_all(tasks).await;
    pollers.abort_all();
    results
}

/// Upgrade → wait for `upgraded` → finishupgrade, for one stack. Fills `r`.
async fn upgrade_one(
    client: &Client,
    settings: &Settings,
    resolved: &Resolved,
    stack: &Stack,
    w: &Watcher,
    r: &mut StackResult,
) {
    let deadline = Instant::now() + settings.upgrade_timeout;
    let target = &resolved.target;
    let Some(link) = stack.action("upgrade") else {
        r.error = format!(
            "the stack is not in an upgradeable state (state `{}`)",
            stack.state
        );
        return;
    };
    let mut body = json!({
        "externalId": target.id.external_id(),
        "dockerCompose": resolved.docker_compose,
    });
    if let Some(rc) = &resolved.rancher_compose {
        body["rancherCompose"] = json!(rc);
    }
    if let Some(env @ Value::Object(_)) = &stack.environment {
        body["environment"] = env.clone();
    }
    // Subscribe before asking, so no snapshot taken after the request is missed.
    let mut rx = w.snapshot.subscribe();
    let guard = WaitGuard::new(w);
    let mut latest: Stack =
        match tokio::time::timeout_at(deadline, client.post::<Stack>(link, &body)).await {
            Err(_) => {
                drop(guard);
                r.error = format!(
                    "the upgrade request got no answer within {}",
                    crate::text::format_duration(settings.upgrade_timeout)
                );
                return;
            }
            // A 2xx whose body is not a stack: the upgrade was accepted all the same.
            Ok(Err(RancherError::Decode { .. })) => stack.clone(),
            Ok(Err(e)) => {
                drop(guard);
                r.error = format!("upgrade refused: {}", rancher_text(&e));
                return;
            }
            Ok(Ok(s)) if !s.id.is_empty() => s,
            Ok(Ok(_)) => stack.clone(),
        };
    let accepted = Instant::now();
    let want = target.id.external_id();
    // Reads in a row that no longer list the stack.
    let mut missing = 0u32;
    let outcome = loop {
        // Decisions come only from reads sent after the upgrade was accepted; the
        // action's own reply may still show the old state (§13).
        let mut fresh = false;
        {
            let snap = rx.borrow_and_update();
            if snap.sent >= accepted {
                match snap.stacks.get(&stack.id) {
                    Some(s) => {
                        latest = s.clone();
                        missing = 0;
                        fresh = true;
                    }
                    None => missing += 1,
                }
            }
        }
        if missing >= 3 {
            break Err(
                "the stack is no longer listed in its environment (removed, or its externalId changed)"
                    .to_string(),
            );
        }
        if !fresh {
            // Nothing new about this stack: wait for the next read.
        } else if latest.transitioning == "error" {
            break Err(format!(
                "the upgrade failed in Rancher: {}",
                nonempty(&latest.transitioning_message, "no message")
            ));
        } else if latest.state == "upgraded" && latest.transitioning != "yes" {
            break Ok(true);
        } else if latest.state == "active"
            && latest.transitioning != "yes"
            && latest.external_id == want
        {
            // Finished by someone else already.
            break Ok(false);
        } else if latest.state == "canceled-upgrade" {
            break Err("the upgrade was cancelled in Rancher".to_string());
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break Err("internal: the environment watcher stopped".into()),
            Err(_) => {
                let msg = nonempty(&latest.transitioning_message, "");
                break Err(format!(
                    "did not reach `upgraded` within {} (state `{}`{})",
                    crate::text::format_duration(settings.upgrade_timeout),
                    latest.state,
                    if msg.is_empty() || msg == "In Progress" {
                        String::new()
                    } else {
                        format!(", Rancher says: {msg}")
                    }
                ));
            }
        }
    };
    drop(guard);
    match outcome {
        Ok(needs_finish) => {
            r.upgraded_to = target.version.clone();
            if needs_finish {
                match client
                    .action::<_, Value>(
                        &latest,
                        &format!("stack {}", stack.name),
                        &latest.state,
                        "finishupgrade",
                        &json!({}),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) => {
                        r.error = format!(
                            "the upgrade succeeded but could not be finished: {}",
                            rancher_text(&e)
                        );
                        return;
                    }
                }
            }
            r.status = "upgraded".into();
        }
        Err(reason) => {
            r.error = format!("{reason}; {}", recover(client, &latest).await);
        }
    }
}

/// Undoes a failed upgrade as far as Rancher allows: rollback (restores the previous
/// version), else cancel. Says what it did.
async fn recover(client: &Client, latest: &Stack) -> String {
    for (action, done) in [
        ("rollback", "rolled back"),
        ("cancelupgrade", "upgrade cancelled"),
    ] {
        if latest.action(action).is_some() {
            return match client
                .action::<_, Value>(latest, "stack", &latest.state, action, &json!({}))
                .await
            {
                Ok(_) => done.to_string(),
                Err(e) => format!("{action} failed too: {}", rancher_text(&e)),
            };
        }
    }
    format!(
        "Rancher offers no rollback in state `{}`; left as is",
        latest.state
    )
}

/// Rancher's words for an error: `422 ActionNotAvailable: action`.
fn rancher_text(e: &RancherError) -> String {
    match e {
        RancherError::Api {
            status,
            code,
            message,
            ..
        } if message != code => format!("Rancher {status} {code}: {message}"),
        RancherError::Api { status, code, .. } => format!("Rancher {status} {code}"),
        other => other.to_string(),
    }
}

fn nonempty(s: &str, default: &str) -> String {
    let t = s.trim();
    if t.is_empty() {
        default.to_string()
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_of_external_ids() {
        assert!(same_catalog("catalog://library:web:1", "library"));
        assert!(same_catalog("catalog://library:web", "library"));
        assert!(!same_catalog("catalog://library2:web:1", "library"));
        assert!(!same_catalog("catalog://librar:web:1", "library"));
        assert!(!same_catalog("", "library"));
        assert!(!same_catalog("system://library:x", "library"));
    }

    #[test]
    fn revision_from_links() {
        assert_eq!(
            revision_of_link("http://r:8080/v1-catalog/templates/library:web:12").as_deref(),
            Some("12")
        );
        assert_eq!(
            revision_of_link("http://r/v1-catalog/templates/library:infra*ipsec:v0.0.3?x=1")
                .as_deref(),
            Some("v0.0.3")
        );
        assert_eq!(
            revision_of_link("http://r/v1-catalog/templates/lib%3Aweb%3A3").as_deref(),
            Some("3")
        );
        assert_eq!(revision_of_link("").as_deref(), None);
    }

    #[test]
    fn rancher_words() {
        let e = RancherError::Api {
            status: 422,
            code: "ActionNotAvailable".into(),
            message: "action".into(),
            method: "POST",
            path: "/x".into(),
        };
        assert_eq!(rancher_text(&e), "Rancher 422 ActionNotAvailable: action");
    }
}
