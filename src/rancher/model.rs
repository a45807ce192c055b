//! The Rancher 1.6 (Cattle, API `v2-beta`) resources corral reads, and the catalog
//! service's templates (reference/rancher-api.md §3–§9).
//!
//! Everything here is decoded from another system's answer, so every field is lenient:
//! `null`, a missing key and an empty value all decode to the default, and unknown keys
//! are ignored. Nothing in this module panics on a strange answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Decodes `null` (and a missing field, with `#[serde(default)]`) as `T::default()`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A string map where non-string values (a number, `null`) are dropped instead of failing
/// the whole resource: `links` and `actions` are only useful as strings.
pub(crate) fn string_map<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Option::<BTreeMap<String, Value>>::deserialize(d)?.unwrap_or_default();
    Ok(raw
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect())
}

/// The envelope of every list reply.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Collection<T> {
    #[serde(default = "Vec::new", deserialize_with = "null_default")]
    #[serde(bound(deserialize = "T: Deserialize<'de>"))]
    pub data: Vec<T>,
    /// `null` on the project list (never paginated).
    #[serde(default)]
    pub pagination: Option<Pagination>,
}

/// `pagination` of a collection: follow `next` until it is null.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Pagination {
    #[serde(default)]
    pub next: Option<String>,
}

/// What every Cattle resource has: an id, a type, links and actions.
pub trait Resource {
    fn id(&self) -> &str;
    fn links(&self) -> &BTreeMap<String, String>;
    fn actions(&self) -> &BTreeMap<String, String>;

    /// The URL of an action, if the resource offers it in its current state (§12).
    fn action(&self, name: &str) -> Option<&str> {
        self.actions().get(name).map(String::as_str)
    }

    /// The URL of a link.
    fn link(&self, name: &str) -> Option<&str> {
        self.links().get(name).map(String::as_str)
    }
}

macro_rules! resource {
    ($t:ty) => {
        impl Resource for $t {
            fn id(&self) -> &str {
                &self.id
            }
            fn links(&self) -> &BTreeMap<String, String> {
                &self.links
            }
            fn actions(&self) -> &BTreeMap<String, String> {
                &self.actions
            }
        }
    };
}

/// A project, which the UI calls an environment (§6).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub state: String,
    #[serde(default, deserialize_with = "string_map")]
    pub links: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_map")]
    pub actions: BTreeMap<String, String>,
}
resource!(Project);

/// A stack (§7). `externalId` is `catalog://<catalog>:<template>:<revision>` for stacks
/// made from a catalog template; `""` or `null` for hand-made ones.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stack {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub state: String,
    #[serde(default, deserialize_with = "null_default")]
    pub account_id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub external_id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub previous_external_id: String,
    /// The catalog answers; sent back unchanged on upgrade so they are kept.
    #[serde(default)]
    pub environment: Option<Value>,
    /// The compose texts the stack was last deployed or upgraded with (`null`/`""` for
    /// stacks built in the UI).
    #[serde(default, deserialize_with = "null_default")]
    pub docker_compose: String,
    #[serde(default, deserialize_with = "null_default")]
    pub rancher_compose: String,
    /// `yes` while a transition runs, `no` at rest, `error` when it failed (§3).
    #[serde(default, deserialize_with = "null_default")]
    pub transitioning: String,
    #[serde(default, deserialize_with = "null_default")]
    pub transitioning_message: String,
    #[serde(default, deserialize_with = "null_default")]
    pub system: bool,
    #[serde(default, deserialize_with = "string_map")]
    pub links: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_map")]
    pub actions: BTreeMap<String, String>,
}
resource!(Stack);

/// A catalog template (§8): its versions, keyed by version string.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub default_version: String,
    /// version string → absolute URL of that template version (path ends in `:<revision>`).
    #[serde(default, deserialize_with = "string_map")]
    pub version_links: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_map")]
    pub links: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_map")]
    pub actions: BTreeMap<String, String>,
}
resource!(Template);

/// One version of a catalog template (§8), with its files.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateVersion {
    /// `<catalog>:<template>:<revision>`.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// The human version (`2.0.0`).
    #[serde(default, deserialize_with = "null_default")]
    pub version: String,
    /// File name → text (`docker-compose.yml`, `rancher-compose.yml`, …).
    #[serde(default, deserialize_with = "string_map")]
    pub files: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_map")]
    pub links: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_map")]
    pub actions: BTreeMap<String, String>,
}
resource!(TemplateVersion);

impl TemplateVersion {
    /// The compose text to send: the plain file first, the `.tpl` variant as fallback
    /// (the Rancher CLI's order).
    pub fn file(&self, name: &str) -> Option<&str> {
        self.files
            .get(name)
            .or_else(|| self.files.get(&format!("{name}.tpl")))
            .map(String::as_str)
            .filter(|s| !s.trim().is_empty())
    }
}

/// An error body. Cattle sends `status` as a number with a `code`; the catalog service
/// sends `status` as a string and no `code` (§5). Validation errors often carry their text
/// in `fieldName` with `message: null`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub detail: Option<Value>,
    #[serde(default)]
    pub field_name: Option<String>,
}

impl ErrorBody {
    /// The most useful human text in the body: `message`, else `fieldName`, else
    /// `detail`.
    pub(crate) fn text(&self) -> Option<String> {
        let nonempty = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        nonempty(&self.message)
            .or_else(|| nonempty(&self.field_name))
            .or_else(|| match &self.detail {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rancher");

    fn fixture(path: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{path}"))
            .unwrap_or_else(|e| panic!("fixture {path}: {e}"))
    }

    #[test]
    fn stack_with_nulls_decodes() {
        let s: Stack = serde_json::from_str(
            r#"{"id":"1st20","type":"stack","links":{"self":"x"},"actions":{"upgrade":"u","bad":3},
                "name":"teststack","state":"active","externalId":null,"environment":null,
                "transitioning":"no","transitioningMessage":null,"system":null}"#,
        )
        .unwrap();
        assert_eq!(s.external_id, "");
        assert_eq!(s.action("upgrade"), Some("u"));
        assert_eq!(s.action("bad"), None);
        assert_eq!(s.link("self"), Some("x"));
        assert!(!s.system);
    }

    #[test]
    fn real_stack_fixtures_decode() {
        for f in [
            "kdebisschop-rundeck-rancher-node-plugin/stacks.json",
            "crowdcode-rancher-maven-plugin/StackResponce.json",
            "apache-libcloud-v1/ex_list_stacks.json",
        ] {
            let text = fixture(f);
            let c: Collection<Stack> =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(!c.data.is_empty(), "{f}");
            assert!(c.data.iter().all(|s| !s.id.is_empty()), "{f}");
        }
        let c: Collection<Stack> =
            serde_json::from_str(&fixture("apache-libcloud-v1/ex_list_stacks.json")).unwrap();
        let p = c.pagination.unwrap();
        assert!(p.next.unwrap().contains("marker=m6"));
    }

    #[test]
    fn error_bodies_of_both_producers() {
        let cattle: ErrorBody = serde_json::from_str(
            r#"{"id":"1d0","type":"error","links":{},"actions":{},"status":422,"code":"ActionNotAvailable","message":null,"detail":null,"fieldName":"action","baseType":"error"}"#,
        )
        .unwrap();
        assert_eq!(cattle.code.as_deref(), Some("ActionNotAvailable"));
        assert_eq!(cattle.text().as_deref(), Some("action"));
        let catalog: ErrorBody = serde_json::from_str(
            r#"{"type":"error","status":"404","message":"Template not found","links":{"self":"u"},"actions":{}}"#,
        )
        .unwrap();
        assert_eq!(catalog.code, None);
        assert_eq!(catalog.text().as_deref(), Some("Template not found"));
        let hostile: ErrorBody =
            serde_json::from_str(r#"{"status":[1],"message":7}"#).unwrap_or_default();
        assert_eq!(hostile.text(), None);
    }

    #[test]
    fn template_version_files() {
        let tv: TemplateVersion = serde_json::from_str(
            r#"{"id":"c:t:2","version":"1.2.0","files":{"docker-compose.yml.tpl":"a","rancher-compose.yml":"b","n":null}}"#,
        )
        .unwrap();
        assert_eq!(tv.file("docker-compose.yml"), Some("a"));
        assert_eq!(tv.file("rancher-compose.yml"), Some("b"));
        assert_eq!(tv.file("README.md"), None);
    }
}
