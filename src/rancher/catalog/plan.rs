//! The plan of a catalog upgrade: which version, where, which stacks (no request here
//! changes Rancher).
//!
//! The template is read from the global catalogs first (no environment selected: one
//! read serves every environment). When they do not have it (`404`), it is read again in
//! each environment with `X-API-Project-Id` (reference/rancher-api.md §1, §8: the
//! catalog service then answers the global catalogs plus that environment's own), so a
//! catalog added to one environment only is found there; stacks of that template in an
//! environment whose catalogs lack it are listed as skipped, with the reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use super::{Detail, PlanError, Settings, StackResult, diff, plural};
use crate::command::CatalogUpgrade;
use crate::job::{Failure, Outcome, PlanDetail, PlanGroup, PlanItem, Progress, ProgressTx};
use crate::rancher::client::{Client, Filter, RancherError};
use crate::rancher::model::{Project, Stack, Template, TemplateVersion};
use crate::rancher::version::{CatalogId, Origin, Target, Verdict, classify, origin};

/// What the plan resolved about the target version in one scope.
pub(super) struct Resolved {
    pub target: Target,
    pub docker_compose: String,
    pub rancher_compose: Option<String>,
    /// revision → link of every version of the template (to read a stack's current one).
    pub links: BTreeMap<String, String>,
}

/// Why a scope has no usable version: the failure to answer if no scope has one, and
/// the reason a stack there is skipped.
pub(super) struct Miss {
    outcome: Outcome,
    reason: String,
    /// The catalogs of this scope do not have the template at all.
    template_missing: bool,
}

/// One environment's part of the plan.
pub(super) struct EnvPlan {
    pub project: Project,
    /// The version as this environment's catalogs have it.
    pub resolved: Result<Arc<Resolved>, Miss>,
    /// Stacks in plan order with their verdicts.
    pub stacks: Vec<(Stack, Verdict)>,
    /// The environment's stacks could not be read.
    pub error: Option<RancherError>,
    /// Stack id → what changes inside it (images, questions) and the digest of the
    /// compose files it is decided on.
    pub diffs: BTreeMap<String, (Vec<PlanDetail>, String)>,
}

/// The whole plan.
pub(super) struct Plan {
    pub envs: Vec<EnvPlan>,
    /// Environments the key can see (before the filters).
    pub seen: usize,
    /// The version resolved first (global, or the first environment's), for titles.
    pub first: Arc<Resolved>,
}

/// What the plan hands to execution: the detail so far, failures so far, how many were
/// skipped, and the stacks to upgrade (environment index, stack).
pub(super) struct Start {
    pub detail: Detail,
    pub failed: Vec<Failure>,
    pub skipped: usize,
    pub work: Vec<(usize, Stack)>,
}

pub(super) fn plan_failure(
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
pub(crate) fn revision_of_link(link: &str) -> Option<String> {
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

fn miss(outcome: Outcome) -> Miss {
    Miss {
        reason: outcome.summary.clone(),
        outcome,
        template_missing: false,
    }
}

/// The link of the wanted version in a template (by version string, else by folder id)
/// and the template's revision → version map.
fn version_link(
    cmd: &CatalogUpgrade,
    template: &Template,
) -> Result<(String, BTreeMap<String, String>), Miss> {
    let name = format!("{}:{}", cmd.catalog, cmd.template);
    let mut versions = BTreeMap::new();
    for (ver, link) in &template.version_links {
        if let Some(rev) = revision_of_link(link) {
            versions.insert(rev, ver.clone());
        }
    }
    let link = template.version_links.get(&cmd.version).or_else(|| {
        template
            .version_links
            .values()
            .find(|l| revision_of_link(l).as_deref() == Some(cmd.version.as_str()))
    });
    if let Some(link) = link {
        return Ok((link.clone(), versions));
    }
    let mut known: Vec<String> = template
        .version_links
        .iter()
        .map(|(v, l)| match revision_of_link(l) {
            Some(r) => format!("{v} (id {r})"),
            None => v.clone(),
        })
        .collect();
    known.sort();
    let known = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    let reason = format!(
        "catalog template `{name}` has no version `{}`; it has: {known}",
        cmd.version
    );
    Err(miss(plan_failure(
        cmd,
        404,
        "url not found for template",
        reason,
    )))
}

/// Checks a template version's answer and takes what the upgrade sends.
fn check_version(
    cmd: &CatalogUpgrade,
    tv: TemplateVersion,
    mut versions: BTreeMap<String, String>,
) -> Result<Resolved, Miss> {
    let name = format!("{}:{}", cmd.catalog, cmd.template);
    let unusable = |reason: String| {
        Err(miss(plan_failure(
            cmd,
            404,
            "could not get template version",
            reason,
        )))
    };
    let Some(id) = CatalogId::parse(&tv.id) else {
        return unusable(format!(
            "the catalog answered a template version with an unusable id `{}`",
            tv.id
        ));
    };
    if id.catalog != cmd.catalog || id.template != cmd.template {
        return unusable(format!("the catalog answered `{}` for `{name}`", tv.id));
    }
    let Some(docker_compose) = tv.file("docker-compose.yml").map(str::to_string) else {
        return unusable(format!(
            "version `{}` of `{name}` has no docker-compose.yml",
            tv.id
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
        links: BTreeMap::new(),
    })
}

/// Resolves the wanted version in one scope: the global catalogs (`project` None) or
/// one environment's.
async fn resolve(
    client: &Client,
    cmd: &CatalogUpgrade,
    project: Option<&str>,
) -> Result<Resolved, Miss> {
    let name = format!("{}:{}", cmd.catalog, cmd.template);
    let template = match client.template(&cmd.catalog, &cmd.template, project).await {
        Ok(t) => t,
        Err(e) => {
            let outcome = rancher_plan_failure(cmd, &format!("catalog template `{name}`"), &e);
            let template_missing = e.status() == Some(404);
            return Err(Miss {
                reason: if template_missing {
                    format!("`{name}` is not in this environment's catalogs")
                } else {
                    outcome.summary.clone()
                },
                outcome,
                template_missing,
            });
        }
    };
    let (link, versions) = version_link(cmd, &template)?;
    let tv = client.template_version(&link, project).await.map_err(|e| {
        miss(rancher_plan_failure(
            cmd,
            &format!("version `{}` of `{name}`", cmd.version),
            &e,
        ))
    })?;
    let mut resolved = check_version(cmd, tv, versions)?;
    resolved.links = template
        .version_links
        .values()
        .filter_map(|l| Some((revision_of_link(l)?, l.clone())))
        .collect();
    Ok(resolved)
}

/// Whether an externalId claims to come from this catalog (parseable or not).
fn same_catalog(external_id: &str, catalog: &str) -> bool {
    external_id
        .trim()
        .strip_prefix("catalog://")
        .and_then(|rest| rest.strip_prefix(catalog))
        .is_some_and(|rest| rest.starts_with(':'))
}

/// The server-side filter for the stacks of the command's template (a LIKE prefix: the
/// answer is re-checked stack by stack).
pub(super) fn stack_filter(cmd: &CatalogUpgrade) -> Vec<Filter> {
    vec![Filter::prefix(
        "externalId",
        &format!("catalog://{}:{}:", cmd.catalog, cmd.template),
    )]
}

/// Lists one environment's stacks of the template and classifies each.
async fn env_plan(
    client: &Client,
    cmd: &CatalogUpgrade,
    project: Project,
    resolved: Result<Arc<Resolved>, Miss>,
) -> EnvPlan {
    let listed = match client.collection_url(&project, "stacks") {
        Ok(url) => {
            client
                .list_unchecked::<Stack>(&url, &stack_filter(cmd))
                .await
        }
        Err(e) => Err(e),
    };
    let mut stacks = match listed {
        Ok(s) => s,
        Err(e) => {
            return EnvPlan {
                project,
                resolved,
                stacks: Vec::new(),
                error: Some(e),
                diffs: BTreeMap::new(),
            };
        }
    };
    // The server's LIKE (or a server ignoring the filter) can return stacks of other
    // templates: the ones from the same catalog stay in the plan as skipped, with the
    // reason; the rest are not ours.
    stacks.retain(|s| same_catalog(&s.external_id, &cmd.catalog));
    stacks.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    // A stack created while the pages were read can shift the offsets and show one
    // stack twice; it is upgraded once.
    stacks.dedup_by(|a, b| a.id == b.id);
    let stacks = stacks
        .into_iter()
        .map(|s| {
            let v = match &resolved {
                Ok(r) => classify(&s.external_id, &r.target),
                Err(m) => Verdict::Skip(m.reason.clone()),
            };
            (s, v)
        })
        .collect();
    EnvPlan {
        project,
        resolved,
        stacks,
        error: None,
        diffs: BTreeMap::new(),
    }
}

/// Makes the plan, or the failure that stops the job before any stack is touched.
pub(super) async fn make(
    client: &Client,
    settings: &Settings,
    cmd: &CatalogUpgrade,
) -> Result<Plan, Outcome> {
    let env_filter = match &cmd.env {
        Some(re) => Some(Regex::new(re).map_err(|e| {
            plan_failure(
                cmd,
                400,
                "invalid environment filter",
                format!("--env {re:?}: {e}"),
            )
        })?),
        None => None,
    };
    let (global, projects) = tokio::join!(resolve(client, cmd, None), client.projects());
    // A template the global catalogs lack may be in an environment's own catalog; any
    // other failure stops the plan.
    let global = match global {
        Ok(r) => Ok(Arc::new(r)),
        Err(m) if m.template_missing => Err(m),
        Err(m) => return Err(m.outcome),
    };
    let projects = projects.map_err(|e| rancher_plan_failure(cmd, "listing environments", &e))?;
    if projects.is_empty() {
        return Err(plan_failure(
            cmd,
            500,
            "No environments could be found",
            "the Rancher key sees no environments".into(),
        ));
    }
    let seen = projects.len();
    let chosen = projects
        .into_iter()
        .filter(|p| p.state.is_empty() || p.state == "active")
        .filter(|p| settings.environments.iter().any(|r| r.is_match(&p.name)))
        .filter(|p| env_filter.as_ref().is_none_or(|r| r.is_match(&p.name)));
    let global_ref = global.as_ref().ok();
    let reads = chosen.map(|project| async move {
        let resolved = match global_ref {
            Some(r) => Ok(r.clone()),
            None => resolve(client, cmd, Some(&project.id)).await.map(Arc::new),
        };
        env_plan(client, cmd, project, resolved).await
    });
    let mut envs: Vec<EnvPlan> = futures::future::join_all(reads).await;
    add_diffs(client, &mut envs, global_ref.is_some()).await;
    let first = match global {
        Ok(r) => r,
        Err(global_miss) => first_resolved(envs.iter().map(|e| &e.resolved), global_miss)?,
    };
    Ok(Plan { envs, seen, first })
}

/// Reads the current template version of every stack to upgrade (once per revision and
/// scope: the global catalogs when the target came from them, else the environment's)
/// and works out what changes inside each stack. A version the catalog no longer has (or
/// cannot give) is replaced by the compose texts the stack itself was deployed with.
async fn add_diffs(client: &Client, envs: &mut [EnvPlan], global: bool) {
    let mut wanted: BTreeMap<(Option<String>, String), String> = BTreeMap::new();
    for e in envs.iter() {
        let Ok(r) = &e.resolved else { continue };
        let scope = (!global).then(|| e.project.id.clone());
        for (s, v) in &e.stacks {
            let Verdict::Upgrade { .. } = v else { continue };
            let Some(rev) = revision_of(&s.external_id) else {
                continue;
            };
            if let Some(link) = r.links.get(&rev) {
                wanted.insert((scope.clone(), rev), link.clone());
            }
        }
    }
    let reads = wanted.into_iter().map(|(key, link)| async move {
        let tv = client.template_version(&link, key.0.as_deref()).await;
        (key, tv.ok())
    });
    let current: BTreeMap<(Option<String>, String), Option<TemplateVersion>> =
        futures::future::join_all(reads).await.into_iter().collect();
    for e in envs.iter_mut() {
        let Ok(r) = &e.resolved else { continue };
        let scope = (!global).then(|| e.project.id.clone());
        let target = diff::Files {
            docker_compose: Some(r.docker_compose.as_str()),
            rancher_compose: r.rancher_compose.as_deref(),
        };
        for (s, v) in &e.stacks {
            let Verdict::Upgrade { .. } = v else { continue };
            let tv = revision_of(&s.external_id)
                .and_then(|rev| current.get(&(scope.clone(), rev)))
                .and_then(Option::as_ref);
            let nonempty =
                |t: &'_ str| Some(t).filter(|t| !t.trim().is_empty()).map(str::to_string);
            let (dc, rc) = match tv {
                Some(tv) => (
                    tv.file("docker-compose.yml").map(str::to_string),
                    tv.file("rancher-compose.yml").map(str::to_string),
                ),
                None => (nonempty(&s.docker_compose), nonempty(&s.rancher_compose)),
            };
            let was = diff::Files {
                docker_compose: dc.as_deref(),
                rancher_compose: rc.as_deref(),
            };
            let answers = diff::answers(s.environment.as_ref());
            e.diffs.insert(
                s.id.clone(),
                (
                    diff::diff(was, target, &answers),
                    diff::fingerprint(was, target),
                ),
            );
        }
    }
}

/// The revision of a catalog stack's externalId (`catalog://lib:web:3` → `3`).
fn revision_of(external_id: &str) -> Option<String> {
    match origin(external_id) {
        Origin::Catalog(id) => Some(id.revision),
        _ => None,
    }
}

/// The first environment's resolved version; when none has one, the failure to answer:
/// an environment's own (its catalog has the template but not the version, …), else the
/// global catalogs' `404`.
fn first_resolved<'a>(
    all: impl Iterator<Item = &'a Result<Arc<Resolved>, Miss>> + Clone,
    global_miss: Miss,
) -> Result<Arc<Resolved>, Outcome> {
    if let Some(r) = all.clone().find_map(|r| r.as_ref().ok()) {
        return Ok(r.clone());
    }
    match all
        .filter_map(|r| r.as_ref().err())
        .find(|m| !m.template_missing)
    {
        Some(m) => Err(m.outcome.clone()),
        None => Err(global_miss.outcome),
    }
}

impl Plan {
    /// Reports the plan: one group per environment with stacks (or an unreadable list).
    pub(super) fn report(&self, cmd: &CatalogUpgrade, progress: &ProgressTx) {
        let target = &self.first.target;
        let title = format!(
            "{}:{} → {} (catalog id {}) — {} of {} environments match",
            cmd.catalog,
            cmd.template,
            target.version,
            target.id,
            self.envs.len(),
            self.seen
        );
        let groups: Vec<PlanGroup> = self
            .envs
            .iter()
            .filter(|e| !e.stacks.is_empty() || e.error.is_some())
            .map(|e| PlanGroup {
                name: e.project.name.clone(),
                items: match &e.error {
                    Some(err) => vec![PlanItem {
                        target: "(stack list)".into(),
                        change: String::new(),
                        skipped: Some(format!("cannot be read: {err}")),
                        details: Vec::new(),
                        binds: String::new(),
                    }],
                    None => e.stacks.iter().map(|(s, v)| plan_item(e, s, v)).collect(),
                },
            })
            .collect();
        progress.send(Progress::Plan { title, groups });
    }

    /// The detail with every planned stack, the stack lists that failed, and the work.
    pub(super) fn start(&self, cmd: &CatalogUpgrade) -> Start {
        let mut start = Start {
            detail: Detail {
                catalog: cmd.catalog.clone(),
                template: cmd.template.clone(),
                version: cmd.version.clone(),
                template_version_id: self.first.target.id.to_string(),
                dry_run: cmd.dry_run,
                error: None,
                environments: self.envs.iter().map(|e| e.project.name.clone()).collect(),
                stacks: Vec::new(),
            },
            failed: Vec::new(),
            skipped: 0,
            work: Vec::new(),
        };
        for (i, e) in self.envs.iter().enumerate() {
            if let Some(err) = &e.error {
                start.failed.push(Failure {
                    group: e.project.name.clone(),
                    target: "(stack list)".into(),
                    reason: format!("the stacks of this environment cannot be read: {err}"),
                });
            }
            for (s, v) in &e.stacks {
                let (status, error) = match v {
                    Verdict::Skip(why) => {
                        start.skipped += 1;
                        ("skipped", why.clone())
                    }
                    Verdict::Upgrade { .. } => {
                        start.work.push((i, s.clone()));
                        ("planned", String::new())
                    }
                };
                start.detail.stacks.push(StackResult {
                    environment: e.project.name.clone(),
                    environment_id: e.project.id.clone(),
                    name: s.name.clone(),
                    id: s.id.clone(),
                    external_id: s.external_id.clone(),
                    status: status.into(),
                    upgraded_to: String::new(),
                    error,
                });
            }
        }
        start
    }

    /// The outcome of a dry run: what would be upgraded; nothing was sent.
    pub(super) fn dry_run(&self, start: Start, progress: &ProgressTx) -> Outcome {
        let version = &self.first.target.version;
        let n = start.work.len();
        let mut envs: Vec<usize> = start.work.iter().map(|(i, _)| *i).collect();
        envs.dedup();
        let envs = envs.len();
        progress.note(format!(
            "Dry run: {n} stack{} would be upgraded to {version}; nothing was sent to Rancher.",
            plural(n)
        ));
        Outcome {
            succeeded: 0,
            failed: start.failed,
            skipped: start.skipped + n,
            summary: format!(
                "dry run: {n} stack{} in {envs} environment{} would be upgraded to {version}; nothing changed",
                plural(n),
                plural(envs)
            ),
            detail: serde_json::to_value(&start.detail).unwrap_or(Value::Null),
        }
    }
}

fn plan_item(e: &EnvPlan, s: &Stack, v: &Verdict) -> PlanItem {
    match (v, &e.resolved) {
        (Verdict::Upgrade { from }, Ok(r)) => {
            let (details, binds) = e.diffs.get(&s.id).cloned().unwrap_or_default();
            PlanItem {
                target: s.name.clone(),
                change: format!("{from} → {}", r.target.version),
                skipped: None,
                details,
                binds,
            }
        }
        (Verdict::Skip(why), _) => PlanItem {
            target: s.name.clone(),
            change: String::new(),
            skipped: Some(why.clone()),
            details: Vec::new(),
            binds: String::new(),
        },
        // An upgrade verdict is only given where the version resolved.
        (Verdict::Upgrade { .. }, Err(m)) => PlanItem {
            target: s.name.clone(),
            change: String::new(),
            skipped: Some(m.reason.clone()),
            details: Vec::new(),
            binds: String::new(),
        },
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
}
