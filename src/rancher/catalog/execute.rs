//! Executing a catalog plan: every planned stack through the one upgrade lifecycle
//! ([`crate::rancher::upgrade`]), then the results folded into the outcome.

use std::sync::Arc;

use serde_json::{Value, json};

use super::plan::{EnvPlan, Plan, Resolved, Start, stack_filter};
use super::{Settings, StackResult, plural};
use crate::command::CatalogUpgrade;
use crate::job::{Failure, Outcome, ProgressTx};
use crate::rancher::client::Client;
use crate::rancher::model::Stack;
use crate::rancher::upgrade::{self, Item, Observed, Policy, Report, Wanted, Watchers};

/// The stack-upgrade request (reference/rancher-api.md §9): the version's compose files
/// and the stack's own answers (`environment`), so they are kept.
fn upgrade_body(resolved: &Resolved, stack: &Stack) -> Value {
    let mut body = json!({
        "externalId": resolved.target.id.external_id(),
        "dockerCompose": resolved.docker_compose,
    });
    if let Some(rc) = &resolved.rancher_compose {
        body["rancherCompose"] = json!(rc);
    }
    if let Some(env @ Value::Object(_)) = &stack.environment {
        body["environment"] = env.clone();
    }
    body
}

/// One stack's lifecycle item: its environment's watcher, its upgrade request.
fn item(
    client: &Client,
    watchers: &Watchers,
    cmd: &CatalogUpgrade,
    env: &EnvPlan,
    stack: Stack,
) -> Item<StackResult> {
    let plan = client
        .collection_url(&env.project, "stacks")
        .map_err(|e| e.to_string())
        .and_then(|url| {
            let resolved = env
                .resolved
                .as_ref()
                .map_err(|_| "internal: no version resolved for this environment".to_string())?;
            let listed = serde_json::to_value(&stack).map_err(|e| e.to_string())?;
            let target = upgrade::Target {
                noun: "stack",
                id: stack.id.clone(),
                listed: Observed::new(Arc::new(listed)),
                body: upgrade_body(resolved, &stack),
                wanted: Wanted::ExternalId(resolved.target.id.external_id()),
            };
            Ok((target, watchers.collection(&url, &stack_filter(cmd))))
        });
    Item {
        group: env.project.name.clone(),
        label: stack.name.clone(),
        plan,
        tag: StackResult {
            environment: env.project.name.clone(),
            environment_id: env.project.id.clone(),
            name: stack.name.clone(),
            id: stack.id.clone(),
            external_id: stack.external_id.clone(),
            status: "failed".into(),
            upgraded_to: String::new(),
            error: String::new(),
        },
    }
}

/// Fills a stack's result from its lifecycle report.
fn result(mut r: StackResult, report: &Report, version: &str) -> StackResult {
    if report.reached {
        r.upgraded_to = version.to_string();
    }
    match &report.result {
        Ok(_) => {
            r.status = "upgraded".into();
            r.upgraded_to = version.to_string();
        }
        Err(why) => r.error = why.clone(),
    }
    r
}

/// Upgrades the planned stacks and folds the results into the outcome.
pub(super) async fn run(
    client: &Client,
    settings: &Settings,
    cmd: &CatalogUpgrade,
    plan: &Plan,
    start: Start,
    progress: &ProgressTx,
) -> Outcome {
    let Start {
        mut detail,
        mut failed,
        skipped,
        work,
    } = start;
    let policy = Policy {
        timeout: settings.upgrade_timeout,
        rollback: settings.rollback_on_timeout,
        confirm: true,
        parallelism: settings.parallelism,
    };
    let watchers = Watchers::new(client, settings.poll_interval);
    let versions: Vec<String> = work
        .iter()
        .map(|(i, _)| match &plan.envs[*i].resolved {
            Ok(r) => r.target.version.clone(),
            Err(_) => String::new(),
        })
        .collect();
    let items = work
        .into_iter()
        .map(|(i, stack)| item(client, &watchers, cmd, &plan.envs[i], stack))
        .collect();
    let reports = upgrade::execute(client, &policy, items, progress).await;
    let mut ok = 0usize;
    let mut ok_envs: Vec<String> = Vec::new();
    for ((r, report), version) in reports.into_iter().zip(versions) {
        let res = result(r, &report, &version);
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
    let summary = summary(cmd, &plan.first.target.version, ok, ok_envs.len(), &failed);
    Outcome {
        succeeded: ok,
        failed,
        skipped,
        summary,
        detail: serde_json::to_value(&detail).unwrap_or(Value::Null),
    }
}

fn summary(
    cmd: &CatalogUpgrade,
    version: &str,
    ok: usize,
    ok_envs: usize,
    failed: &[Failure],
) -> String {
    let total = ok + failed.iter().filter(|f| f.target != "(stack list)").count();
    if total == 0 && failed.is_empty() {
        format!(
            "no stack of {}:{} needed an upgrade to {version}",
            cmd.catalog, cmd.template
        )
    } else if failed.is_empty() {
        format!(
            "{ok} stack{} upgraded to {version} in {ok_envs} environment{}",
            plural(ok),
            plural(ok_envs)
        )
    } else {
        format!(
            "{ok} of {total} stack{} upgraded to {version}; {} failed",
            plural(total),
            failed.len()
        )
    }
}
