//! `manifest.yml` and `manifest.socket.yml` against Slack's manifest JSON Schema
//! (`tests/fixtures/slack/manifest-schema`, draft-07), and every scope against a list of
//! real scope names (the schema takes any string as a scope).
//!
//! The schema is checked by a small validator here, not a JSON Schema crate: it handles
//! the keywords the v1 schema uses for the parts a manifest fills in — `type`,
//! `properties`, `additionalProperties` (false or a schema), `patternProperties`,
//! `required`, `minLength`/`maxLength`, `pattern`, `items`, `minItems`/`maxItems`,
//! `uniqueItems`, `enum`, `const`, local `$ref`s and `anyOf`/`oneOf`/`allOf` — and fails on
//! any other keyword it meets on the way, so nothing is skipped silently.

use regex::Regex;
use serde_json::Value;

const KNOWN: &[&str] = &[
    "type",
    "properties",
    "additionalProperties",
    "patternProperties",
    "required",
    "minLength",
    "maxLength",
    "pattern",
    // Slack's own spelling of `pattern` in a few places (background_color); checked alike.
    "regex",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "enum",
    "const",
    "$ref",
    "anyOf",
    "oneOf",
    "allOf",
    "minProperties",
    "maxProperties",
    // Annotations, no constraint.
    "description",
    "title",
    "default",
    "$comment",
    "$schema",
    "$id",
    "definitions",
    "examples",
    "format",
    "markdownDescription",
    "_note",
    "requires",
];

struct Validator<'a> {
    root: &'a Value,
}

impl Validator<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let ptr = r.trim_start_matches('#');
                let target = self
                    .root
                    .pointer(ptr)
                    .unwrap_or_else(|| panic!("unresolved $ref {r}"));
                self.resolve(target)
            }
            None => schema,
        }
    }

    fn type_ok(ty: &str, v: &Value) -> bool {
        match ty {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "null" => v.is_null(),
            other => panic!("unknown type {other}"),
        }
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let Some(obj) = schema.as_object() else {
            if schema == &Value::Bool(false) {
                errors.push(format!("{at}: not allowed"));
            }
            return;
        };
        for k in obj.keys() {
            assert!(
                KNOWN.contains(&k.as_str()),
                "{at}: schema keyword {k} not handled"
            );
        }
        if let Some(ty) = obj.get("type") {
            let ok = match ty {
                Value::String(t) => Self::type_ok(t, v),
                Value::Array(ts) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|t| Self::type_ok(t, v)),
                _ => true,
            };
            if !ok {
                errors.push(format!("{at}: not of type {ty}"));
                return;
            }
        }
        if let Some(c) = obj.get("const")
            && c != v
        {
            errors.push(format!("{at}: must be {c}"));
        }
        if let Some(Value::Array(e)) = obj.get("enum")
            && !e.contains(v)
        {
            errors.push(format!("{at}: {v} is not one of {e:?}"));
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            let Some(Value::Array(subs)) = obj.get(key) else {
                continue;
            };
            let passing = subs
                .iter()
                .filter(|s| {
                    let mut e = Vec::new();
                    self.check(s, v, at, &mut e);
                    e.is_empty()
                })
                .count();
            let ok = match key {
                "allOf" => passing == subs.len(),
                "anyOf" => passing > 0,
                _ => passing == 1,
            };
            if !ok {
                errors.push(format!(
                    "{at}: {key} fails ({passing} of {} pass)",
                    subs.len()
                ));
            }
        }
        if let Some(s) = v.as_str() {
            let n = s.chars().count() as u64;
            if obj
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
            {
                errors.push(format!("{at}: longer than {}", obj["maxLength"]));
            }
            if obj
                .get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
            {
                errors.push(format!("{at}: shorter than {}", obj["minLength"]));
            }
            for key in ["pattern", "regex"] {
                if let Some(p) = obj.get(key).and_then(Value::as_str)
                    && !Regex::new(p).expect("pattern compiles").is_match(s)
                {
                    errors.push(format!("{at}: {s:?} does not match {p}"));
                }
            }
        }
        if let Some(items) = v.as_array() {
            let n = items.len() as u64;
            if obj
                .get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
            {
                errors.push(format!("{at}: more than {} items", obj["maxItems"]));
            }
            if obj
                .get("minItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
            {
                errors.push(format!("{at}: fewer than {} items", obj["minItems"]));
            }
            if obj.get("uniqueItems") == Some(&Value::Bool(true)) {
                for (i, x) in items.iter().enumerate() {
                    if items[..i].contains(x) {
                        errors.push(format!("{at}[{i}]: repeated"));
                    }
                }
            }
            if let Some(schema) = obj.get("items") {
                for (i, x) in items.iter().enumerate() {
                    self.check(schema, x, &format!("{at}[{i}]"), errors);
                }
            }
        }
        if let Some(map) = v.as_object() {
            if let Some(Value::Array(req)) = obj.get("required") {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errors.push(format!("{at}: {r} is required"));
                    }
                }
            }
            let props = obj.get("properties").and_then(Value::as_object);
            let patterns: Vec<(Regex, &Value)> = obj
                .get("patternProperties")
                .and_then(Value::as_object)
                .map(|p| {
                    p.iter()
                        .map(|(k, s)| (Regex::new(k).expect("pattern compiles"), s))
                        .collect()
                })
                .unwrap_or_default();
            for (k, x) in map {
                let here = format!("{at}.{k}");
                let mut matched = false;
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    matched = true;
                    self.check(s, x, &here, errors);
                }
                for (re, s) in &patterns {
                    if re.is_match(k) {
                        matched = true;
                        self.check(s, x, &here, errors);
                    }
                }
                if !matched {
                    match obj.get("additionalProperties") {
                        Some(Value::Bool(false)) => errors.push(format!("{here}: unknown key")),
                        Some(s @ Value::Object(_)) => self.check(s, x, &here, errors),
                        _ => {}
                    }
                }
            }
        }
    }
}

fn fixture(rel: &str) -> String {
    let path = format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn errors_of(manifest: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(&fixture(
        "tests/fixtures/slack/manifest-schema/schemas/manifest.schema.1.0.0.json",
    ))
    .unwrap();
    let v = Validator { root: &schema };
    let mut errors = Vec::new();
    v.check(&schema, manifest, "$", &mut errors);
    errors
}

fn scopes() -> Vec<String> {
    fixture("tests/fixtures/slack/scopes.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn load(name: &str) -> Value {
    serde_norway::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn both_manifests_validate_against_slacks_schema_with_real_scopes() {
    let known = scopes();
    for name in ["manifest.yml", "manifest.socket.yml"] {
        let m = load(name);
        let errors = errors_of(&m);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        let bot = m["oauth_config"]["scopes"]["bot"]
            .as_array()
            .expect("bot scopes");
        for s in bot {
            let s = s.as_str().unwrap();
            assert!(
                known.iter().any(|k| k == s),
                "{name}: {s} is not a Slack scope"
            );
        }
        // What the buttons and the approval flow need.
        assert_eq!(m["settings"]["interactivity"]["is_enabled"], true, "{name}");
        for needed in [
            "commands",
            "chat:write",
            "app_mentions:read",
            "usergroups:read",
        ] {
            assert!(bot.iter().any(|s| s == needed), "{name} lacks {needed}");
        }
    }
    let http = load("manifest.yml");
    assert_eq!(
        http["settings"]["interactivity"]["request_url"],
        "https://corral.example.com/slack/interactions"
    );
    let socket = load("manifest.socket.yml");
    assert_eq!(socket["settings"]["socket_mode_enabled"], true);
    assert!(!fixture("manifest.socket.yml").contains("https://corral.example.com"));
}

#[test]
fn the_check_catches_what_it_claims_to() {
    let good = load("manifest.yml");
    let mut unknown = good.clone();
    unknown["settings"]["interactivity"]["is_enabeld"] = true.into();
    assert!(
        errors_of(&unknown)
            .iter()
            .any(|e| e.contains("unknown key")),
        "{:?}",
        errors_of(&unknown)
    );
    let mut no_slash = good.clone();
    no_slash["features"]["slash_commands"][0]["command"] = "release".into();
    assert!(!errors_of(&no_slash).is_empty(), "a command without /");
    let mut long = good.clone();
    long["display_information"]["name"] = "x".repeat(100).into();
    assert!(!errors_of(&long).is_empty(), "a name over the limit");
    assert!(
        !scopes().iter().any(|s| s == "usergroup:read"),
        "a misspelt scope is not in the list"
    );
}
