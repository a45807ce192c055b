//! Services for the fake Rancher (reference/rancher-api.md §10–§12, §14 item 7), built on
//! [`FakeRancher`]'s `services` kind (whose state machine — upgrade → upgrading →
//! upgraded, finishupgrade, rollback, cancel — is the fake's) by installing the hook
//! that says what each action changes:
//!
//! * `upgrade` needs `inServiceStrategy` or `toServiceStrategy` (else 422
//!   `MissingRequired`); in-service with neither `launchConfig` nor
//!   `secondaryLaunchConfigs` → 422 `InvalidOption`; `startFirst` on a service with
//!   `retainIp` → 422 `InvalidOption` with Cattle's text in `fieldName` (real body:
//!   fixtures/rancher/issue-threads). Accepted: `upgrade` stores the strategy with
//!   `previousLaunchConfig`/`previousSecondaryLaunchConfigs`; the sent launch config
//!   replaces the service's whole launch config (fields not sent are gone, as in Cattle)
//!   with a fresh `version`; only the sidekicks sent are replaced.
//! * `rollback` restores the previous launch configs; `finishupgrade` keeps the new ones.
//!
//! Request bodies are in the fake's log byte for byte ([`FakeRancher::posts`]).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

use super::fake_rancher::{CattleError, FakeRancher};

static VERSION: AtomicU64 = AtomicU64::new(1);

/// A real 1.6 launch config with fields an old typed client does not know (`secrets`,
/// `drainTimeoutMs`, `runInit`, `instanceTriggeredStop`, …).
pub fn fixture_launch_config() -> Value {
    let text =
        include_str!("../../fixtures/rancher/kdebisschop-rundeck-rancher-node-plugin/service.json");
    let v: Value = serde_json::from_str(text).expect("fixture parses");
    v["launchConfig"].clone()
}

fn service_hook(
    action: &str,
    before: &Map<String, Value>,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>, CattleError> {
    let mut end = Map::new();
    match action {
        "upgrade" => {
            let strategy = match (body.get("inServiceStrategy"), body.get("toServiceStrategy")) {
                (Some(s), _) if s.is_object() => s.clone(),
                (_, Some(s)) if s.is_object() => {
                    return Ok(end);
                }
                _ => {
                    return Err(CattleError::new(422, "MissingRequired")
                        .message("Upgrade strategy needs to be set"));
                }
            };
            let lc = strategy.get("launchConfig").filter(|v| !v.is_null());
            let slc = strategy
                .get("secondaryLaunchConfigs")
                .filter(|v| !v.is_null());
            if lc.is_none() && slc.is_none() {
                return Err(CattleError::new(422, "InvalidOption").field("launchConfig"));
            }
            if strategy.get("startFirst") == Some(&json!(true))
                && before.get("retainIp") == Some(&json!(true))
            {
                return Err(CattleError::new(422, "InvalidOption")
                    .field("StartFirst option can't be used for service with retainIp field set"));
            }
            let mut stored = strategy.clone();
            if let Value::Object(m) = &mut stored {
                m.insert(
                    "previousLaunchConfig".into(),
                    before.get("launchConfig").cloned().unwrap_or(Value::Null),
                );
                m.insert(
                    "previousSecondaryLaunchConfigs".into(),
                    before
                        .get("secondaryLaunchConfigs")
                        .cloned()
                        .unwrap_or(json!([])),
                );
            }
            end.insert("upgrade".into(), json!({ "inServiceStrategy": stored }));
            if let Some(lc) = lc {
                let mut lc = lc.clone();
                if let Value::Object(m) = &mut lc {
                    m.insert(
                        "version".into(),
                        json!(format!(
                            "00000000-0000-0000-0000-{:012}",
                            VERSION.fetch_add(1, Ordering::Relaxed)
                        )),
                    );
                }
                end.insert("launchConfig".into(), lc);
            }
            if let Some(Value::Array(sent)) = slc {
                let mut side = before
                    .get("secondaryLaunchConfigs")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for s in sent {
                    match side.iter_mut().find(|x| x.get("name") == s.get("name")) {
                        Some(x) => *x = s.clone(),
                        None => side.push(s.clone()),
                    }
                }
                end.insert("secondaryLaunchConfigs".into(), Value::Array(side));
            }
        }
        "rollback" => {
            if let Some(prev) = before
                .get("upgrade")
                .and_then(|u| u.get("inServiceStrategy"))
                .filter(|s| s.is_object())
            {
                if let Some(lc) = prev.get("previousLaunchConfig").filter(|v| !v.is_null()) {
                    end.insert("launchConfig".into(), lc.clone());
                }
                if let Some(s) = prev
                    .get("previousSecondaryLaunchConfigs")
                    .filter(|v| !v.is_null())
                {
                    end.insert("secondaryLaunchConfigs".into(), s.clone());
                }
            }
        }
        _ => {}
    }
    Ok(end)
}

/// Installs the services hook on a fake.
pub fn install(fake: &FakeRancher) {
    fake.set_hook("services", Arc::new(service_hook));
}

/// A service in `project`, in stack `stack_id`, with this launch config and sidekicks.
pub fn add_service(
    fake: &FakeRancher,
    project: &str,
    stack_id: &str,
    name: &str,
    launch_config: Value,
    sidekicks: Value,
) -> String {
    fake.add_resource(
        project,
        "services",
        json!({
            "name": name,
            "type": "service",
            "kind": "service",
            "stackId": stack_id,
            "launchConfig": launch_config,
            "secondaryLaunchConfigs": sidekicks,
            "scale": 1,
            "currentScale": 1,
            "retainIp": false,
            "startOnCreate": true,
            "upgrade": null,
            "publicEndpoints": null,
            "metadata": {},
            "vip": null,
        }),
    )
}

/// A launch config running `image`, with the labels given (the fixture's other fields).
pub fn launch_config(image: &str, labels: &[(&str, &str)]) -> Value {
    let mut lc = fixture_launch_config();
    lc["imageUuid"] = json!(image);
    if let Some(Value::Object(l)) = lc.get_mut("labels") {
        for (k, v) in labels {
            l.insert(k.to_string(), json!(v));
        }
    }
    lc
}
