//! A fake Rancher 1.6 server, in process, on 127.0.0.1, built from
//! shared/reference/rancher-api.md (§ numbers below) and the shapes in
//! tests/fixtures/rancher.
//!
//! What it does like Cattle:
//! * HTTP Basic auth; a bad key gets 401 with `WWW-Authenticate` and a Cattle error (§2).
//! * `/v2-beta/projects` unpaginated (`pagination: null`), `name` filter exact and
//!   case-insensitive, other filters ignored (§4, §6).
//! * `/v2-beta/projects/{pid}/{collection}[/{id}]` for every registered kind (stacks,
//!   services, …): absolute links with the `/projects/{pid}` prefix, `limit` (default
//!   page size configurable, >3000 clamped, <=0 → 3000), `marker=m<offset>`, `partial`,
//!   `pagination.next`; filters `eq ne prefix like notlike null notnull` on the kind's
//!   filterable fields, with `_`/`%` as LIKE wildcards and unknown filters ignored (§4).
//!   Also `/v2-beta/{collection}[/{id}]` unscoped (an admin key's view of every project).
//! * State machines as data: each kind has action rules (from-states, transient state,
//!   end state); the `actions` map offers only what the current state allows (§12);
//!   POSTing anything else gets 422 `ActionNotAvailable` / `InvalidAction`; an accepted
//!   action answers 202 with the resource in its transient state, and the end state is
//!   reached after a configurable time (state transitions over time, §9, §13).
//! * Stack upgrade stores `previousExternalId`/`previousEnvironment`, and on success
//!   writes the new `externalId`, merged `environment`, compose texts (§9); rollback
//!   restores them; finishupgrade clears them.
//! * `/v1-catalog/templates/{cat}:{tpl}` and `…:{revision-or-version}`, catalog errors
//!   with a string `status` and no `code` (§5, §8). Catalogs are global or added to one
//!   environment ([`FakeRancher::add_template_in`]): a request sees the global ones plus
//!   those of the environment it selects with `X-API-Project-Id` (or `?projectId=`);
//!   without one it is the account's own view, global catalogs only; an unknown
//!   environment is 403 (§1, §2, §8).
//!
//! Test controls: per-target fault injection (an action answering 422/500 and changing
//! nothing, an action Rancher starts but answers 5xx for, an upgrade stuck in
//! `upgrading` with a `transitioningMessage`, a transition ending in
//! `transitioning: error`), per-path request faults (the next N matching requests
//! answer a status), latency per request, a request log with bodies.
//!
//! Extending: [`FakeRancher::register_kind`] adds a collection with its rules, filterable
//! fields and an [`ActionHook`] deciding what an action changes. `stacks` and `services`
//! (rules only) are registered from the start.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub const ACCESS_KEY: &str = "fake-access";
pub const SECRET_KEY: &str = "fake-secret";

/// `(revision, version, files)` of a catalog template version for [`FakeRancher::add_template`].
pub type TemplateVersionSpec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// One logged request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// Path and query as sent.
    pub uri: String,
    pub body: String,
    pub status: u16,
    pub at: Instant,
    /// The `X-API-Project-Id` header, if the request carried one.
    pub project_header: Option<String>,
}

impl Logged {
    pub fn is_post(&self) -> bool {
        self.method == "POST"
    }
    /// The `action` query parameter, if any.
    pub fn action(&self) -> Option<String> {
        let q = self.uri.split_once('?')?.1;
        q.split('&')
            .find_map(|kv| kv.strip_prefix("action="))
            .map(str::to_string)
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// How an action on one target misbehaves.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The action POST answers this status with a Cattle error body (`code`, and the text
    /// in `message`); nothing changes.
    Reject {
        status: u16,
        code: String,
        message: String,
    },
    /// The action is accepted (202) but the resource stays in the transient state with
    /// `transitioning: yes` and this `transitioningMessage`, forever (§9 step 5).
    Stuck { message: String },
    /// The action is accepted, then the transition fails: `transitioning: error`.
    Error { message: String },
    /// Rancher starts the action (the state moves on as for an accepted one) but the
    /// answer is this status with a Cattle error body: a proxy timing out, a server
    /// failing after its transaction (§3, the case a client must settle by reading).
    StartedThenFailed { status: u16 },
}

impl Fault {
    pub fn reject_422(code: &str, message: &str) -> Fault {
        Fault::Reject {
            status: 422,
            code: code.into(),
            message: message.into(),
        }
    }
    pub fn server_error() -> Fault {
        Fault::Reject {
            status: 500,
            code: "Internal Server Error".into(),
            message: "Internal Server Error".into(),
        }
    }
    /// The action starts in Rancher, but the answer is a 500.
    pub fn started_then_500() -> Fault {
        Fault::StartedThenFailed { status: 500 }
    }
    pub fn stuck(message: &str) -> Fault {
        Fault::Stuck {
            message: message.into(),
        }
    }
}

/// One rule of a kind's state machine (§9, §11).
#[derive(Debug, Clone)]
pub struct ActionRule {
    pub name: String,
    pub from: Vec<String>,
    pub transient: String,
    pub end: String,
}

impl ActionRule {
    pub fn new(name: &str, from: &[&str], transient: &str, end: &str) -> ActionRule {
        ActionRule {
            name: name.into(),
            from: from.iter().map(|s| s.to_string()).collect(),
            transient: transient.into(),
            end: end.into(),
        }
    }
}

/// An error an action hook or the server answers with (Cattle shape).
#[derive(Debug, Clone)]
pub struct CattleError {
    pub status: u16,
    pub code: String,
    pub message: Option<String>,
    pub field_name: Option<String>,
}

impl CattleError {
    pub fn new(status: u16, code: &str) -> CattleError {
        CattleError {
            status,
            code: code.into(),
            message: None,
            field_name: None,
        }
    }
    pub fn field(mut self, f: &str) -> Self {
        self.field_name = Some(f.into());
        self
    }
    pub fn message(mut self, m: &str) -> Self {
        self.message = Some(m.into());
        self
    }
}

/// Decides what an accepted action does: may reject it, may change the resource at once
/// (`now`), and returns the fields written when the transition completes.
pub type ActionHook = Arc<
    dyn Fn(
            &str,
            &Map<String, Value>,
            &Map<String, Value>,
        ) -> Result<Map<String, Value>, CattleError>
        + Send
        + Sync,
>;

/// A collection type: `stacks` → type `stack`, id prefix `1st`, its rules.
#[derive(Clone)]
pub struct KindSpec {
    pub type_name: String,
    pub id_prefix: String,
    pub rules: Vec<ActionRule>,
    /// Actions offered in the listed states without a state change (decoration:
    /// `exportconfig`, `addoutputs`, …). POSTing them answers 202 and changes nothing.
    pub static_actions: Vec<(String, Vec<String>)>,
    /// Fields a collection filter may use; others are ignored (§4).
    pub filterable: Vec<String>,
    /// Extra links (name → sub-path under the resource).
    pub links: Vec<String>,
    /// `(action, resource before, request body) → fields set when the transition ends`.
    pub hook: Option<ActionHook>,
}

struct Res {
    id: String,
    project: String,
    collection: String,
    body: Map<String, Value>,
    pending: Option<(Instant, Map<String, Value>)>,
}

struct Template {
    /// `None`: a global catalog; else the environment it was added to.
    project: Option<String>,
    catalog: String,
    folder: String,
    name: String,
    /// (revision, version, files)
    versions: Vec<(String, String, BTreeMap<String, String>)>,
}

struct RequestFault {
    method: Option<String>,
    contains: String,
    status: u16,
    /// A raw body instead of a Cattle error.
    body: Option<String>,
    remaining: usize,
}

struct State {
    base: String,
    page_size: i64,
    latency: Duration,
    action_time: HashMap<String, Duration>,
    default_action_time: Duration,
    ignore_filters: bool,
    projects: Vec<Map<String, Value>>,
    kinds: BTreeMap<String, KindSpec>,
    resources: Vec<Res>,
    templates: Vec<Template>,
    faults: HashMap<(String, String), Fault>,
    request_faults: Vec<RequestFault>,
    log: Vec<Logged>,
    next_id: u64,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeRancher {
    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub url: String,
    state: Arc<Mutex<State>>,
}

/// The upgrade state machine stacks and services share (reference/rancher-api.md §9, §11):
/// they differ only in the states `upgrade` is offered in.
fn upgrade_rules(upgrade_from: &[&str]) -> Vec<ActionRule> {
    vec![
        ActionRule::new("upgrade", upgrade_from, "upgrading", "upgraded"),
        ActionRule::new(
            "finishupgrade",
            &["upgraded"],
            "finishing-upgrade",
            "active",
        ),
        ActionRule::new(
            "rollback",
            &["upgrading", "upgraded", "canceled-upgrade"],
            "rolling-back",
            "active",
        ),
        ActionRule::new(
            "cancelupgrade",
            &["upgrading", "finishing-upgrade"],
            "canceling-upgrade",
            "canceled-upgrade",
        ),
    ]
}

fn stack_kind() -> KindSpec {
    KindSpec {
        type_name: "stack".into(),
        id_prefix: "1st".into(),
        rules: upgrade_rules(&["active", "canceled-upgrade"])
            .into_iter()
            .chain([
                ActionRule::new("activateservices", &["active"], "active", "active"),
                ActionRule::new("deactivateservices", &["active"], "active", "active"),
            ])
            .collect(),
        static_actions: ["addoutputs", "exportconfig", "update", "remove"]
            .iter()
            .map(|a| (a.to_string(), vec!["active".to_string()]))
            .collect(),
        filterable: [
            "name",
            "externalId",
            "state",
            "accountId",
            "system",
            "kind",
            "healthState",
            "removed",
            "id",
            "uuid",
            "group",
            "description",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        links: ["services", "account", "composeConfig"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        hook: Some(Arc::new(stack_hook)),
    }
}

/// What stack actions change (§9).
fn stack_hook(
    action: &str,
    before: &Map<String, Value>,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>, CattleError> {
    let mut end = Map::new();
    match action {
        "upgrade" => {
            for f in ["externalId", "dockerCompose", "rancherCompose"] {
                if let Some(v) = body.get(f)
                    && !v.is_null()
                    && !v.is_string()
                {
                    return Err(CattleError::new(422, "InvalidFormat").field(f));
                }
            }
            // The executor starts from the current answers and overlays the request's.
            let mut env = before
                .get("environment")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if let Some(Value::Object(e)) = body.get("environment") {
                for (k, v) in e {
                    env.insert(k.clone(), v.clone());
                }
            }
            end.insert(
                "previousExternalId".into(),
                before.get("externalId").cloned().unwrap_or(Value::Null),
            );
            end.insert(
                "previousEnvironment".into(),
                before.get("environment").cloned().unwrap_or(Value::Null),
            );
            if let Some(x) = body.get("externalId").filter(|v| v.is_string()) {
                end.insert("externalId".into(), x.clone());
            }
            end.insert("environment".into(), Value::Object(env));
            for f in ["dockerCompose", "rancherCompose"] {
                if let Some(v) = body.get(f).filter(|v| v.is_string()) {
                    end.insert(f.into(), v.clone());
                }
            }
        }
        "rollback" => {
            if let Some(prev) = before.get("previousExternalId").filter(|v| !v.is_null()) {
                end.insert("externalId".into(), prev.clone());
                end.insert(
                    "environment".into(),
                    before
                        .get("previousEnvironment")
                        .cloned()
                        .unwrap_or(Value::Null),
                );
            }
            end.insert("previousExternalId".into(), Value::Null);
            end.insert("previousEnvironment".into(), Value::Null);
        }
        "finishupgrade" => {
            end.insert("previousExternalId".into(), Value::Null);
            end.insert("previousEnvironment".into(), Value::Null);
        }
        _ => {}
    }
    Ok(end)
}

fn service_kind() -> KindSpec {
    KindSpec {
        type_name: "service".into(),
        id_prefix: "1s".into(),
        rules: upgrade_rules(&["active", "activating", "inactive", "updating-active"])
            .into_iter()
            .chain([
                ActionRule::new(
                    "continueupgrade",
                    &["canceled-upgrade"],
                    "upgrading",
                    "upgraded",
                ),
                ActionRule::new("restart", &["active"], "restarting", "active"),
            ])
            .collect(),
        static_actions: vec![],
        filterable: [
            "name",
            "externalId",
            "stackId",
            "state",
            "accountId",
            "kind",
            "system",
            "healthState",
            "vip",
            "selectorContainer",
            "id",
            "uuid",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        links: ["stack", "instances", "account"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        hook: None,
    }
}

impl FakeRancher {
    /// Starts a fake with no projects on 127.0.0.1 (random port).
    pub async fn start() -> FakeRancher {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let url = format!("http://{addr}");
        let mut kinds = BTreeMap::new();
        kinds.insert("stacks".to_string(), stack_kind());
        kinds.insert("services".to_string(), service_kind());
        let state = Arc::new(Mutex::new(State {
            base: url.clone(),
            page_size: 100,
            latency: Duration::ZERO,
            action_time: HashMap::new(),
            default_action_time: Duration::from_millis(30),
            ignore_filters: false,
            projects: Vec::new(),
            kinds,
            resources: Vec::new(),
            templates: Vec::new(),
            faults: HashMap::new(),
            request_faults: Vec::new(),
            log: Vec::new(),
            next_id: 5,
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeRancher { url, state }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- configuration ----

    /// The default `limit` of collections (Rancher: 100).
    pub fn set_page_size(&self, n: i64) {
        self.st().page_size = n;
    }
    /// Added to every request before it is answered.
    pub fn set_latency(&self, d: Duration) {
        self.st().latency = d;
    }
    /// How long an action's transition takes (`upgrade`, `finishupgrade`, …).
    pub fn set_action_time(&self, action: &str, d: Duration) {
        self.st().action_time.insert(action.into(), d);
    }
    /// How long transitions without their own time take (default 30 ms).
    pub fn set_default_action_time(&self, d: Duration) {
        self.st().default_action_time = d;
    }
    /// Ignore every collection filter (as Rancher does for unknown fields).
    pub fn set_ignore_filters(&self, yes: bool) {
        self.st().ignore_filters = yes;
    }
    /// Makes `action` on the resource with this id or name misbehave.
    pub fn fail(&self, target: &str, action: &str, fault: Fault) {
        self.st()
            .faults
            .insert((target.into(), action.into()), fault);
    }
    /// The next `times` requests whose path-and-query contains `contains` (and whose
    /// method is `method`, if given) answer `status` with a Cattle error body.
    pub fn fail_requests(&self, method: Option<&str>, contains: &str, status: u16, times: usize) {
        self.st().request_faults.push(RequestFault {
            method: method.map(str::to_string),
            contains: contains.into(),
            status,
            body: None,
            remaining: times,
        });
    }
    /// The next `times` matching requests get this status and raw body (hostile answers:
    /// not JSON, a `pagination.next` that loops, …).
    pub fn answer_requests(
        &self,
        method: Option<&str>,
        contains: &str,
        status: u16,
        body: &str,
        times: usize,
    ) {
        self.st().request_faults.push(RequestFault {
            method: method.map(str::to_string),
            contains: contains.into(),
            status,
            body: Some(body.into()),
            remaining: times,
        });
    }
    /// Adds or replaces a collection kind.
    pub fn register_kind(&self, collection: &str, spec: KindSpec) {
        self.st().kinds.insert(collection.into(), spec);
    }
    /// Replaces the action hook of a kind.
    pub fn set_hook(&self, collection: &str, hook: ActionHook) {
        if let Some(k) = self.st().kinds.get_mut(collection) {
            k.hook = Some(hook);
        }
    }

    // ---- data ----

    /// Adds an environment; returns its id (`1a5`, `1a6`, …).
    pub fn add_project(&self, name: &str) -> String {
        let mut st = self.st();
        let id = format!("1a{}", st.next_id);
        st.next_id += 1;
        let mut p = Map::new();
        p.insert("id".into(), json!(id));
        p.insert("name".into(), json!(name));
        p.insert("state".into(), json!("active"));
        p.insert("orchestration".into(), json!("cattle"));
        p.insert("kind".into(), json!("project"));
        p.insert("healthState".into(), json!("healthy"));
        st.projects.push(p);
        id
    }

    /// Adds a resource of a registered collection with these fields (state defaults to
    /// `active`, `transitioning` to `no`); returns its id.
    pub fn add_resource(&self, project: &str, collection: &str, fields: Value) -> String {
        let mut st = self.st();
        let prefix = st
            .kinds
            .get(collection)
            .map(|k| k.id_prefix.clone())
            .unwrap_or_else(|| panic!("unregistered collection {collection}"));
        let id = format!("{prefix}{}", st.next_id);
        st.next_id += 1;
        let mut body = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        body.insert("id".into(), json!(id));
        body.insert("accountId".into(), json!(project));
        body.entry("state").or_insert(json!("active"));
        body.entry("transitioning").or_insert(json!("no"));
        body.entry("transitioningMessage").or_insert(Value::Null);
        body.entry("transitioningProgress").or_insert(Value::Null);
        body.entry("healthState").or_insert(json!("healthy"));
        body.entry("system").or_insert(json!(false));
        body.entry("uuid").or_insert(json!(format!("uuid-{id}")));
        st.resources.push(Res {
            id: id.clone(),
            project: project.into(),
            collection: collection.into(),
            body,
            pending: None,
        });
        id
    }

    /// Adds a stack made from a catalog template (`externalId` as given: `catalog://…`,
    /// `""`, anything).
    pub fn add_stack(&self, project: &str, name: &str, external_id: &str) -> String {
        self.add_resource(
            project,
            "stacks",
            json!({
                "name": name,
                "kind": "stack",
                "externalId": external_id,
                "environment": {"PORT": "80"},
                "dockerCompose": "web:\n  image: nginx:1\n",
                "rancherCompose": "",
                "previousExternalId": null,
                "previousEnvironment": null,
                "serviceIds": [],
                "description": null,
                "group": null,
                "startOnCreate": true,
            }),
        )
    }

    /// Sets fields of a resource directly (e.g. a state).
    pub fn patch(&self, id: &str, fields: Value) {
        let mut st = self.st();
        if let Some(r) = st.resources.iter_mut().find(|r| r.id == id)
            && let Value::Object(m) = fields
        {
            for (k, v) in m {
                r.body.insert(k, v);
            }
        }
    }

    /// Adds a catalog template with versions `(revision, version, files)`, in a global
    /// catalog.
    pub fn add_template(&self, catalog: &str, folder: &str, versions: &[TemplateVersionSpec]) {
        self.push_template(None, catalog, folder, versions);
    }

    /// Replaces (or adds) one file of a template version, as a catalog refresh would.
    pub fn set_template_file(
        &self,
        catalog: &str,
        folder: &str,
        revision: &str,
        name: &str,
        text: &str,
    ) {
        let mut st = self.st();
        for t in st
            .templates
            .iter_mut()
            .filter(|t| t.catalog == catalog && t.folder == folder)
        {
            for (r, _, files) in t.versions.iter_mut().filter(|(r, _, _)| r == revision) {
                let _ = r;
                files.insert(name.to_string(), text.to_string());
            }
        }
    }

    /// Adds a template in a catalog added to one environment only: seen by requests that
    /// select that environment, by no other.
    pub fn add_template_in(
        &self,
        project: &str,
        catalog: &str,
        folder: &str,
        versions: &[TemplateVersionSpec],
    ) {
        self.push_template(Some(project), catalog, folder, versions);
    }

    fn push_template(
        &self,
        project: Option<&str>,
        catalog: &str,
        folder: &str,
        versions: &[TemplateVersionSpec],
    ) {
        let mut st = self.st();
        st.templates.push(Template {
            project: project.map(str::to_string),
            catalog: catalog.into(),
            folder: folder.into(),
            name: folder.into(),
            versions: versions
                .iter()
                .map(|(rev, ver, files)| {
                    (
                        rev.to_string(),
                        ver.to_string(),
                        files
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    )
                })
                .collect(),
        });
    }

    // ---- inspection ----

    /// A resource's current fields (transitions that are due applied), as stored.
    pub fn resource(&self, id: &str) -> Option<Value> {
        let mut st = self.st();
        tick(&mut st);
        st.resources
            .iter()
            .find(|r| r.id == id)
            .map(|r| Value::Object(r.body.clone()))
    }

    /// A resource's `state`.
    pub fn state_of(&self, id: &str) -> String {
        self.resource(id)
            .and_then(|v| v.get("state").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.st().log.clone()
    }
    /// Every POST so far.
    pub fn posts(&self) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(Logged::is_post)
            .collect()
    }
    /// Requests whose method is `method` and path-and-query contains `contains`.
    pub fn count(&self, method: &str, contains: &str) -> usize {
        self.st()
            .log
            .iter()
            .filter(|l| l.method == method && l.uri.contains(contains))
            .count()
    }
    pub fn clear_log(&self) {
        self.st().log.clear();
    }
}

// ---- the server ----

fn action_time(st: &State, action: &str) -> Duration {
    st.action_time
        .get(action)
        .copied()
        .unwrap_or(st.default_action_time)
}

/// Applies transitions whose time has come.
fn tick(st: &mut State) {
    let now = Instant::now();
    for r in &mut st.resources {
        if let Some((due, _)) = &r.pending
            && *due <= now
            && let Some((_, fields)) = r.pending.take()
        {
            for (k, v) in fields {
                r.body.insert(k, v);
            }
        }
    }
}

fn cattle_error(e: &CattleError) -> Response {
    let body = json!({
        "id": format!("err-{}", e.status),
        "type": "error",
        "links": {},
        "actions": {},
        "status": e.status,
        "code": e.code,
        "message": e.message,
        "detail": null,
        "fieldName": e.field_name,
        "baseType": "error",
    });
    reply(e.status, body)
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method not allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn plain_error(status: u16) -> Response {
    let t = status_text(status);
    cattle_error(&CattleError::new(status, t).message(t))
}

fn catalog_error(status: u16, message: &str, url: &str) -> Response {
    reply(
        status,
        json!({"type": "error", "status": status.to_string(), "message": message,
               "links": {"self": url}, "actions": {}}),
    )
}

fn reply(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        "x-api-schemas",
        axum::http::HeaderValue::from_static("/v2-beta/schemas"),
    );
    resp
}

fn authorized(headers: &HeaderMap) -> bool {
    use base64::Engine;
    let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(b64) = v.strip_prefix("Basic ") else {
        return false;
    };
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .is_ok_and(|d| d == format!("{ACCESS_KEY}:{SECRET_KEY}").into_bytes())
}

async fn handle(
    AxState(state): AxState<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = state.lock().unwrap_or_else(|p| p.into_inner()).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let uri_text = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let resp = route(&mut st, &method, &uri, &headers, &body);
    st.log.push(Logged {
        method: method.to_string(),
        uri: uri_text,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: resp.status().as_u16(),
        at: Instant::now(),
        project_header: headers
            .get("x-api-project-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    resp
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn route(st: &mut State, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    if uri.path() == "/ping" {
        return (StatusCode::OK, "pong").into_response();
    }
    if !authorized(headers) {
        let mut r = cattle_error(&CattleError::new(401, "Unauthorized").message("Unauthorized"));
        if headers.get("x-api-no-challenge").is_none() {
            r.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static(
                    "Basic realm=\"Enter API access key and secret key as username and password\"",
                ),
            );
        }
        return r;
    }
    let uri_text = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    if let Some(f) = st.request_faults.iter_mut().find(|f| {
        f.remaining > 0
            && uri_text.contains(&f.contains)
            && f.method.as_deref().is_none_or(|m| m == method.as_str())
    }) {
        f.remaining -= 1;
        let status = f.status;
        if let Some(body) = f.body.clone() {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (code, [("content-type", "application/json")], body).into_response();
        }
        return plain_error(status);
    }
    tick(st);
    let query = query_pairs(uri);
    let segs: Vec<String> = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get = *method == Method::GET;
    let post = *method == Method::POST;
    match segs.as_slice() {
        ["v2-beta", "projects"] if get => list_projects(st, &query),
        ["v2-beta", "projects", pid] if get => match st.projects.iter().find(|p| p["id"] == *pid) {
            Some(p) => reply(200, render_project(&st.base, p)),
            None => plain_error(404),
        },
        ["v2-beta", "projects", pid, coll] if get => {
            if !st.projects.iter().any(|p| p["id"] == *pid) {
                return plain_error(403);
            }
            list_collection(st, Some(pid), coll, &query, uri.path(), None)
        }
        ["v2-beta", coll] if get && st.kinds.contains_key(*coll) => {
            list_collection(st, None, coll, &query, uri.path(), None)
        }
        ["v2-beta", "projects", pid, coll, id] => {
            one_resource(st, Some(pid), coll, id, get, post, &query, body)
        }
        ["v2-beta", coll, id] if st.kinds.contains_key(*coll) => {
            one_resource(st, None, coll, id, get, post, &query, body)
        }
        // A resource's link to its children: `/stacks/{id}/services` lists the services
        // whose `stackId` is that stack.
        ["v2-beta", "projects", pid, coll, id, sub] if get && st.kinds.contains_key(*sub) => {
            let Some(parent_type) = st.kinds.get(*coll).map(|k| format!("{}Id", k.type_name))
            else {
                return plain_error(404);
            };
            list_collection(
                st,
                Some(pid),
                sub,
                &query,
                uri.path(),
                Some((&parent_type, id)),
            )
        }
        ["v1-catalog", "templates" | "templateversions", id] if get => {
            // The environment a catalog request selects (§2): the header, else the
            // query parameter; none is the account's own view (global catalogs).
            let scope = headers
                .get("x-api-project-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or_else(|| {
                    query
                        .iter()
                        .find(|(k, _)| k == "projectId")
                        .map(|(_, v)| v.clone())
                });
            if let Some(p) = &scope
                && !st.projects.iter().any(|x| x["id"] == p.as_str())
            {
                return plain_error(403);
            }
            catalog(st, id, uri, scope.as_deref())
        }
        _ => plain_error(404),
    }
}

fn list_projects(st: &State, query: &[(String, String)]) -> Response {
    let name = query
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.to_lowercase());
    let data: Vec<Value> = st
        .projects
        .iter()
        .filter(|p| {
            name.as_ref()
                .is_none_or(|n| p["name"].as_str().is_some_and(|pn| pn.to_lowercase() == *n))
        })
        .map(|p| render_project(&st.base, p))
        .collect();
    reply(
        200,
        json!({"type": "collection", "resourceType": "project",
               "links": {"self": format!("{}/v2-beta/projects/", st.base)},
               "createTypes": {}, "actions": {}, "data": data, "sortLinks": {},
               "pagination": null, "sort": null, "filters": {}, "createDefaults": {}}),
    )
}

fn render_project(base: &str, p: &Map<String, Value>) -> Value {
    let mut v = p.clone();
    let id = p["id"].as_str().unwrap_or_default();
    let me = format!("{base}/v2-beta/projects/{id}");
    v.insert("type".into(), json!("project"));
    v.insert("baseType".into(), json!("account"));
    v.insert(
        "links".into(),
        json!({"self": me, "stacks": format!("{me}/stacks"), "services": format!("{me}/services"),
               "schemas": format!("{me}/schemas")}),
    );
    v.insert(
        "actions".into(),
        json!({"deactivate": format!("{me}/?action=deactivate")}),
    );
    Value::Object(v)
}

fn render(st: &State, r: &Res) -> Value {
    let Some(kind) = st.kinds.get(&r.collection) else {
        return Value::Object(r.body.clone());
    };
    let me = format!(
        "{}/v2-beta/projects/{}/{}/{}",
        st.base, r.project, r.collection, r.id
    );
    let state = r.body.get("state").and_then(Value::as_str).unwrap_or("");
    let mut actions = Map::new();
    for rule in &kind.rules {
        if rule.from.iter().any(|s| s == state) {
            actions.insert(
                rule.name.clone(),
                json!(format!("{me}/?action={}", rule.name)),
            );
        }
    }
    for (a, states) in &kind.static_actions {
        if states.iter().any(|s| s == state) {
            actions.insert(a.clone(), json!(format!("{me}/?action={a}")));
        }
    }
    let mut links = Map::new();
    links.insert("self".into(), json!(me));
    for l in &kind.links {
        links.insert(l.clone(), json!(format!("{me}/{}", l.to_lowercase())));
    }
    let mut v = r.body.clone();
    v.insert("type".into(), json!(kind.type_name));
    v.insert("baseType".into(), json!(kind.type_name));
    v.insert("links".into(), Value::Object(links));
    v.insert("actions".into(), Value::Object(actions));
    Value::Object(v)
}

/// SQL LIKE with `%` and `_`, case-insensitive (MySQL's default collation).
fn like(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('%') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
            Some('_') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some(c) => t.first().is_some_and(|x| x == c) && go(&p[1..], &t[1..]),
        }
    }
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    go(&p, &t)
}

fn field_text(v: Option<&Value>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(o) => Some(o.to_string()),
    }
}

fn filter_ok(kind: &KindSpec, body: &Map<String, Value>, key: &str, value: &str) -> bool {
    let (field, modifier) = match key.rsplit_once('_') {
        Some((f, m))
            if matches!(
                m,
                "eq" | "ne"
                    | "lt"
                    | "lte"
                    | "gt"
                    | "gte"
                    | "prefix"
                    | "like"
                    | "notlike"
                    | "null"
                    | "notnull"
            ) =>
        {
            (f, m)
        }
        _ => (key, "eq"),
    };
    if !kind.filterable.iter().any(|f| f == field) {
        return true; // unknown filters are silently ignored (§4)
    }
    let have = field_text(body.get(field));
    match modifier {
        "null" => have.is_none(),
        "notnull" => have.is_some(),
        _ => {
            let Some(h) = have else { return false };
            match modifier {
                "eq" => h.to_lowercase() == value.to_lowercase(),
                "ne" => h.to_lowercase() != value.to_lowercase(),
                "prefix" => like(&format!("{value}%"), &h),
                "like" => like(value, &h),
                "notlike" => !like(value, &h),
                "lt" => h.as_str() < value,
                "lte" => h.as_str() <= value,
                "gt" => h.as_str() > value,
                "gte" => h.as_str() >= value,
                _ => true,
            }
        }
    }
}

fn list_collection(
    st: &State,
    pid: Option<&str>,
    coll: &str,
    query: &[(String, String)],
    path: &str,
    parent: Option<(&str, &str)>,
) -> Response {
    let Some(kind) = st.kinds.get(coll) else {
        return plain_error(404);
    };
    let reserved = [
        "limit",
        "marker",
        "sort",
        "order",
        "projectId",
        "_removed",
        "include",
    ];
    let filters: Vec<&(String, String)> = query
        .iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .collect();
    let mut limit = query
        .iter()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse::<i64>().ok())
        .unwrap_or(st.page_size);
    if limit <= 0 || limit > 3000 {
        limit = 3000;
    }
    let offset = query
        .iter()
        .find(|(k, _)| k == "marker")
        .and_then(|(_, v)| v.strip_prefix('m'))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let rows: Vec<&Res> = st
        .resources
        .iter()
        .filter(|r| r.collection == coll && pid.is_none_or(|p| r.project == p))
        .filter(|r| {
            parent.is_none_or(|(field, id)| r.body.get(field).and_then(Value::as_str) == Some(id))
        })
        .filter(|r| r.body.get("state").and_then(Value::as_str) != Some("removed"))
        .filter(|r| {
            st.ignore_filters || filters.iter().all(|(k, v)| filter_ok(kind, &r.body, k, v))
        })
        .collect();
    let end = (offset + limit as usize).min(rows.len());
    let page: Vec<Value> = rows
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .map(|r| render(st, r))
        .collect();
    let partial = end < rows.len();
    let mut keep: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "marker" && k != "limit")
        .cloned()
        .collect();
    keep.push(("limit".into(), limit.to_string()));
    let self_q = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query.iter())
        .finish();
    let next = partial.then(|| {
        let mut q = keep.clone();
        q.push(("marker".into(), format!("m{end}")));
        let qs = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(q.iter())
            .finish();
        format!("{}{path}?{qs}", st.base)
    });
    let mut filters_echo = Map::new();
    for f in &kind.filterable {
        let given: Vec<Value> = filters
            .iter()
            .filter(|(k, _)| k == f || k.starts_with(&format!("{f}_")))
            .map(|(k, v)| {
                let m = k.strip_prefix(&format!("{f}_")).unwrap_or("eq");
                json!({"modifier": m, "value": v})
            })
            .collect();
        filters_echo.insert(
            f.clone(),
            if given.is_empty() {
                Value::Null
            } else {
                json!(given)
            },
        );
    }
    reply(
        200,
        json!({
            "type": "collection",
            "resourceType": kind.type_name,
            "links": {"self": if self_q.is_empty() { format!("{}{path}", st.base) } else { format!("{}{path}?{self_q}", st.base) }},
            "createTypes": {},
            "actions": {},
            "data": page,
            "sortLinks": {},
            "pagination": {"first": null, "previous": null, "next": next, "limit": limit, "total": null, "partial": partial},
            "sort": null,
            "filters": filters_echo,
            "createDefaults": {},
        }),
    )
}

#[allow(clippy::too_many_arguments)]
fn one_resource(
    st: &mut State,
    pid: Option<&str>,
    coll: &str,
    id: &str,
    get: bool,
    post: bool,
    query: &[(String, String)],
    body: &[u8],
) -> Response {
    let Some(idx) = st
        .resources
        .iter()
        .position(|r| r.id == id && r.collection == coll && pid.is_none_or(|p| r.project == p))
    else {
        return plain_error(404);
    };
    if get {
        return reply(200, render(st, &st.resources[idx]));
    }
    if !post {
        return plain_error(405);
    }
    let Some(action) = query
        .iter()
        .find(|(k, _)| k == "action")
        .map(|(_, v)| v.clone())
    else {
        return plain_error(405);
    };
    let Some(kind) = st.kinds.get(coll).cloned() else {
        return plain_error(404);
    };
    let state = st.resources[idx]
        .body
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some((_, states)) = kind.static_actions.iter().find(|(a, _)| *a == action) {
        if !states.contains(&state) {
            return cattle_error(&CattleError::new(422, "ActionNotAvailable").field("action"));
        }
        return reply(202, render(st, &st.resources[idx]));
    }
    let Some(rule) = kind.rules.iter().find(|r| r.name == action).cloned() else {
        return cattle_error(&CattleError::new(422, "InvalidAction").field("action"));
    };
    if !rule.from.contains(&state) {
        return cattle_error(&CattleError::new(422, "ActionNotAvailable").field("action"));
    }
    // A body that is valid JSON but not an object is treated as empty; invalid JSON is 400.
    let req: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => Map::new(),
            Err(_) => return cattle_error(&CattleError::new(400, "InvalidBodyContent")),
        }
    };
    let name = st.resources[idx]
        .body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let fault = st
        .faults
        .get(&(id.to_string(), action.clone()))
        .or_else(|| st.faults.get(&(name, action.clone())))
        .cloned();
    if let Some(Fault::Reject {
        status,
        code,
        message,
    }) = &fault
    {
        return cattle_error(&CattleError::new(*status, code).message(message));
    }
    let answer_error = match &fault {
        Some(Fault::StartedThenFailed { status }) => Some(*status),
        _ => None,
    };
    let end_fields = match &kind.hook {
        Some(h) => match h(&action, &st.resources[idx].body, &req) {
            Ok(f) => f,
            Err(e) => return cattle_error(&e),
        },
        None => Map::new(),
    };
    let duration = action_time(st, &action);
    let r = &mut st.resources[idx];
    r.body.insert("state".into(), json!(rule.transient));
    r.body.insert("transitioning".into(), json!("yes"));
    r.body
        .insert("transitioningMessage".into(), json!("In Progress"));
    match fault {
        Some(Fault::Stuck { message }) => {
            r.body.insert("transitioningMessage".into(), json!(message));
            r.pending = None;
        }
        Some(Fault::Error { message }) => {
            r.body.insert("transitioning".into(), json!("error"));
            r.body.insert("transitioningMessage".into(), json!(message));
            r.pending = None;
        }
        _ => {
            let mut end = end_fields;
            end.insert("state".into(), json!(rule.end));
            end.insert("transitioning".into(), json!("no"));
            end.insert("transitioningMessage".into(), Value::Null);
            r.pending = Some((Instant::now() + duration, end));
        }
    }
    if let Some(status) = answer_error {
        let t = status_text(status);
        return cattle_error(&CattleError::new(status, t).message(t));
    }
    reply(202, render(st, &st.resources[idx]))
}

fn catalog(st: &State, id: &str, uri: &Uri, scope: Option<&str>) -> Response {
    let me = format!("{}{}", st.base, uri.path());
    let parts: Vec<&str> = id.split(':').collect();
    let (cat, folder, rev) = match parts.as_slice() {
        [c, f] => (*c, *f, None),
        [c, f, r] => (*c, *f, Some(*r)),
        _ => return catalog_error(404, "Template not found", &me),
    };
    let Some(t) = st.templates.iter().find(|t| {
        t.catalog == cat
            && t.folder == folder
            && t.project.as_deref().is_none_or(|p| Some(p) == scope)
    }) else {
        return catalog_error(404, "Template not found", &me);
    };
    let tid = format!("{cat}:{folder}");
    let link = |r: &str| format!("{}/v1-catalog/templates/{tid}:{r}", st.base);
    let Some(rev) = rev else {
        let version_links: Map<String, Value> = t
            .versions
            .iter()
            .map(|(r, v, _)| (v.clone(), json!(link(r))))
            .collect();
        let (def_rev, def_ver) = t
            .versions
            .last()
            .map(|(r, v, _)| (r.clone(), v.clone()))
            .unwrap_or_default();
        return reply(
            200,
            json!({"id": tid, "type": "template",
                   "links": {"self": format!("{}/v1-catalog/templates/{tid}", st.base),
                             "icon": format!("{}/v1-catalog/templates/{tid}?image", st.base)},
                   "actions": {}, "catalogId": cat, "folderName": folder, "templateBase": "",
                   "name": t.name, "defaultVersion": def_ver,
                   "defaultTemplateVersionId": format!("{tid}:{def_rev}"),
                   "categories": [], "labels": {}, "versionLinks": version_links}),
        );
    };
    // The third part is tried as a revision first, then as a version string.
    let found = t
        .versions
        .iter()
        .find(|(r, _, _)| r == rev)
        .or_else(|| t.versions.iter().find(|(_, v, _)| v == rev));
    let Some((r, v, files)) = found else {
        return catalog_error(404, "Version not found", &me);
    };
    let later: Map<String, Value> = t
        .versions
        .iter()
        .skip_while(|(x, _, _)| x != r)
        .skip(1)
        .map(|(r2, v2, _)| (v2.clone(), json!(link(r2))))
        .collect();
    let revision = r.parse::<i64>().map(Value::from).unwrap_or(Value::Null);
    reply(
        200,
        json!({"id": format!("{tid}:{r}"), "type": "templateVersion",
               "links": {"self": link(r), "template": format!("{}/v1-catalog/templates/{tid}", st.base)},
               "actions": {}, "templateId": tid, "revision": revision, "version": v,
               "minimumRancherVersion": "", "maximumRancherVersion": "", "upgradeFrom": "",
               "labels": {}, "files": files, "questions": questions(files), "bindings": {},
               "upgradeVersionLinks": later}),
    )
}

/// The `questions` of a template version as the catalog service builds them: the
/// `.catalog:` (or `catalog:`) section's `questions` of its `rancher-compose.yml`, every
/// default as a string (reference/rancher-api.md §8; the legacy capture's shape).
fn questions(files: &BTreeMap<String, String>) -> Value {
    let text = files
        .get("rancher-compose.yml")
        .or_else(|| files.get("rancher-compose.yml.tpl"))
        .map_or("", String::as_str);
    let Ok(doc) = serde_norway::from_str::<serde_norway::Value>(text) else {
        return json!([]);
    };
    let catalog = doc.get(".catalog").or_else(|| doc.get("catalog"));
    let Some(serde_norway::Value::Sequence(list)) = catalog.and_then(|c| c.get("questions")) else {
        return json!([]);
    };
    let text_of = |v: Option<&serde_norway::Value>| match v {
        Some(serde_norway::Value::String(s)) => s.clone(),
        Some(serde_norway::Value::Number(n)) => n.to_string(),
        Some(serde_norway::Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    };
    let list: Vec<Value> = list
        .iter()
        .map(|q| {
            json!({
                "variable": text_of(q.get("variable")),
                "label": text_of(q.get("label")),
                "description": text_of(q.get("description")),
                "type": match text_of(q.get("type")) { t if t.is_empty() => "string".to_string(), t => t },
                "required": q.get("required").and_then(serde_norway::Value::as_bool).unwrap_or(false),
                "default": text_of(q.get("default")),
                "group": "", "invalidChars": "", "validChars": "",
                "max": 0, "maxLength": 0, "min": 0, "minLength": 0, "options": null,
            })
        })
        .collect();
    Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("catalog://lib:my_app:%", "catalog://lib:myXapp:3"));
        assert!(like("a%", "ABC"));
        assert!(!like("a_", "a"));
        assert!(like("%b%", "abc"));
    }
}
