//! What a catalog upgrade changes inside one stack (reference/rancher-api.md §7–§9): the
//! image of each service in `docker-compose.yml`, and the template's questions (the
//! `.catalog.questions` of `rancher-compose.yml`: variables added, removed, or with a
//! changed default), between the stack's current template version and the target's.
//!
//! The stack's own answers (its `environment`) are where they matter: images are shown
//! with `${VAR}` filled in from them (for the target: the answers, then the new
//! defaults, the order rancher-compose-executor fills them in), and a changed default
//! says whether this stack keeps its own answer. Values of `password` questions are
//! never shown. Nothing here talks to Rancher: the caller hands in the texts.

use std::collections::BTreeMap;

use serde_norway::Value as Yaml;

use crate::job::PlanDetail;

/// Longest compose text read; a longer one is reported, not parsed.
const MAX_COMPOSE: usize = 512 * 1024;
/// Longest value shown in a detail line.
const MAX_VALUE: usize = 60;

/// A version's compose files (either may be missing).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Files<'a> {
    pub docker_compose: Option<&'a str>,
    pub rancher_compose: Option<&'a str>,
}

/// One question of a template version.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Question {
    default: Option<String>,
    secret: bool,
}

fn parse(what: &str, text: &str) -> Result<Yaml, String> {
    if text.len() > MAX_COMPOSE {
        return Err(format!(
            "{what} is {} bytes, more than the {MAX_COMPOSE} read",
            text.len()
        ));
    }
    serde_norway::from_str(text).map_err(|e| {
        // Only the position: the text itself may hold anything.
        let at = e
            .location()
            .map(|l| format!(" at line {}", l.line()))
            .unwrap_or_default();
        format!("{what} is not valid YAML{at}")
    })
}

fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Service → image of a `docker-compose.yml`: version 2 (`services:`) or version 1 (every
/// top-level key a service). Services without an image (`build:` only) are left out.
pub(crate) fn images(text: &str) -> Result<BTreeMap<String, String>, String> {
    let doc = parse("docker-compose.yml", text)?;
    let Yaml::Mapping(top) = &doc else {
        return Err("docker-compose.yml is not a mapping of services".into());
    };
    let services = match top.get("services") {
        Some(Yaml::Mapping(s)) if top.contains_key("version") || !s.contains_key("image") => s,
        _ => top,
    };
    let mut out = BTreeMap::new();
    for (name, service) in services {
        let (Some(name), Yaml::Mapping(service)) = (scalar(name), service) else {
            continue;
        };
        if let Some(image) = service.get("image").and_then(scalar) {
            out.insert(name, image);
        }
    }
    Ok(out)
}

/// Variable → question of a `rancher-compose.yml` (`.catalog:` or `catalog:`).
fn questions(text: &str) -> Result<BTreeMap<String, Question>, String> {
    let doc = parse("rancher-compose.yml", text)?;
    let catalog = doc.get(".catalog").or_else(|| doc.get("catalog"));
    let mut out = BTreeMap::new();
    let Some(Yaml::Sequence(list)) = catalog.and_then(|c| c.get("questions")) else {
        return Ok(out);
    };
    for q in list {
        let Some(variable) = q.get("variable").and_then(scalar) else {
            continue;
        };
        let secret = q.get("type").and_then(scalar).as_deref() == Some("password");
        out.insert(
            variable,
            Question {
                default: q.get("default").and_then(scalar),
                secret,
            },
        );
    }
    Ok(out)
}

/// The stack's answers (`environment`: variable → value).
pub(crate) fn answers(environment: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    let Some(serde_json::Value::Object(m)) = environment else {
        return BTreeMap::new();
    };
    m.iter()
        .filter_map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => return None,
                other => other.to_string(),
            };
            Some((k.clone(), v))
        })
        .collect()
}

/// `${NAME}`, `${NAME:-default}`, `${NAME-default}` and `$NAME` filled in from `vars`
/// (`$$` is a literal `$`); a name with no value is left as written.
pub(crate) fn interpolate(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
        {
            let inner = &body[..end];
            let (name, fallback) = match inner.split_once(":-").or_else(|| inner.split_once('-')) {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match vars(name).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(&v),
                None => match fallback {
                    Some(d) => out.push_str(d),
                    None => out.push_str(&rest[i..i + 2 + end + 1]),
                },
            }
            rest = &body[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            match (len, vars(&after[..len])) {
                (0, _) | (_, None) => out.push_str(&rest[i..i + 1 + len]),
                (_, Some(v)) => out.push_str(&v),
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

fn shown(v: &str, secret: bool) -> String {
    if secret {
        return "•••".into();
    }
    let mut s: String = v.chars().take(MAX_VALUE).collect();
    if v.chars().count() > MAX_VALUE {
        s.push('…');
    }
    format!("'{s}'")
}

fn detail(what: &str, change: &str, text: String) -> PlanDetail {
    PlanDetail {
        what: what.into(),
        change: change.into(),
        text,
    }
}

/// The images and variables that differ from `current` to `target` for a stack with
/// these answers. A file that cannot be read is one line saying so.
pub(crate) fn diff(
    current: Files<'_>,
    target: Files<'_>,
    answers: &BTreeMap<String, String>,
) -> Vec<PlanDetail> {
    let empty = BTreeMap::new;
    let read_q = |f: Option<&str>, which: &str, out: &mut Vec<PlanDetail>| match f {
        None => empty(),
        Some(t) => questions(t).unwrap_or_else(|e| {
            out.push(detail("variable", "unknown", format!("{which} {e}")));
            empty()
        }),
    };
    let mut out = Vec::new();
    let old_q = read_q(current.rancher_compose, "the current", &mut out);
    let new_q = read_q(target.rancher_compose, "the target's", &mut out);
    let old_vars = |n: &str| {
        answers
            .get(n)
            .cloned()
            .or_else(|| old_q.get(n)?.default.clone())
    };
    let new_vars = |n: &str| {
        answers
            .get(n)
            .cloned()
            .or_else(|| new_q.get(n)?.default.clone())
    };
    image_diff(current, target, &old_vars, &new_vars, &mut out);
    variable_diff(&old_q, &new_q, answers, &mut out);
    out
}

fn image_diff(
    current: Files<'_>,
    target: Files<'_>,
    old_vars: &dyn Fn(&str) -> Option<String>,
    new_vars: &dyn Fn(&str) -> Option<String>,
    out: &mut Vec<PlanDetail>,
) {
    let read = |f: Option<&str>, which: &str, out: &mut Vec<PlanDetail>| match f.map(images) {
        None => None,
        Some(Ok(i)) => Some(i),
        Some(Err(e)) => {
            out.push(detail("image", "unknown", format!("{which} {e}")));
            None
        }
    };
    let old = read(current.docker_compose, "the current", out);
    let Some(new) = read(target.docker_compose, "the target's", out) else {
        return;
    };
    let Some(old) = old else {
        if current.docker_compose.is_none() {
            out.push(detail(
                "image",
                "unknown",
                "the current compose files are unknown: the images cannot be compared".into(),
            ));
        }
        return;
    };
    for (service, image) in &new {
        let to = interpolate(image, new_vars);
        match old.get(service) {
            Some(was) => {
                let from = interpolate(was, old_vars);
                if from != to {
                    out.push(detail(
                        "image",
                        "changed",
                        format!("{service}: {} → {}", shown(&from, false), shown(&to, false)),
                    ));
                }
            }
            None => out.push(detail(
                "image",
                "added",
                format!("{service}: new service, {}", shown(&to, false)),
            )),
        }
    }
    for (service, was) in old.iter().filter(|(s, _)| !new.contains_key(*s)) {
        out.push(detail(
            "image",
            "removed",
            format!(
                "{service}: service removed (was {})",
                shown(&interpolate(was, old_vars), false)
            ),
        ));
    }
}

fn variable_diff(
    old: &BTreeMap<String, Question>,
    new: &BTreeMap<String, Question>,
    answers: &BTreeMap<String, String>,
    out: &mut Vec<PlanDetail>,
) {
    let default_of = |q: &Question| {
        q.default
            .as_deref()
            .map_or_else(|| "no default".to_string(), |d| shown(d, q.secret))
    };
    for (name, q) in new {
        let answer = answers.get(name);
        match old.get(name) {
            None => {
                let kept = match answer {
                    Some(a) => format!("; this stack already answers {}", shown(a, q.secret)),
                    None => String::new(),
                };
                out.push(detail(
                    "variable",
                    "added",
                    format!("{name}: new question, default {}{kept}", default_of(q)),
                ));
            }
            Some(was) if was.default != q.default => {
                let effect = match answer {
                    Some(a) => format!("this stack keeps its answer {}", shown(a, q.secret)),
                    None => "this stack gets the new default".into(),
                };
                out.push(detail(
                    "variable",
                    "changed",
                    format!(
                        "{name}: default {} → {} ({effect})",
                        default_of(was),
                        default_of(q)
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    for (name, q) in old.iter().filter(|(n, _)| !new.contains_key(*n)) {
        let dropped = match answers.get(name) {
            Some(a) => format!(
                "; this stack's answer {} is no longer asked for",
                shown(a, q.secret)
            ),
            None => String::new(),
        };
        out.push(detail(
            "variable",
            "removed",
            format!("{name}: question removed{dropped}"),
        ));
    }
}

/// SHA-256 (hex, first 16) of the texts a stack's upgrade is decided on: the plan is
/// bound to it, so a changed compose file is a changed plan even where no image or
/// question moved.
pub(crate) fn fingerprint(current: Files<'_>, target: Files<'_>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for f in [
        current.docker_compose,
        current.rancher_compose,
        target.docker_compose,
        target.rancher_compose,
    ] {
        let t = f.unwrap_or("");
        h.update((t.len() as u64).to_be_bytes());
        h.update(t.as_bytes());
    }
    hex::encode(h.finalize())[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(m: &[(&str, &str)]) -> BTreeMap<String, String> {
        m.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn images_of_both_compose_versions() {
        let v2 =
            "version: '2'\nservices:\n  web:\n    image: myorg/web:1.2.0\n  db:\n    build: .\n";
        assert_eq!(images(v2).unwrap(), vars(&[("web", "myorg/web:1.2.0")]));
        let v1 = "CMSMysql:\n    image: mysql\nConcrete5App:\n    image: opensaas/concrete5\n";
        assert_eq!(
            images(v1).unwrap(),
            vars(&[
                ("CMSMysql", "mysql"),
                ("Concrete5App", "opensaas/concrete5")
            ])
        );
        assert!(images("old").unwrap_err().contains("not a mapping"));
        assert!(images("a: [").unwrap_err().contains("not valid YAML"));
        assert!(
            images(&"x".repeat(MAX_COMPOSE + 1))
                .unwrap_err()
                .contains("bytes")
        );
    }

    #[test]
    fn interpolation_forms() {
        let v = vars(&[("TAG", "2.1"), ("EMPTY", "")]);
        let f = |n: &str| v.get(n).cloned();
        assert_eq!(interpolate("web:${TAG}", &f), "web:2.1");
        assert_eq!(interpolate("web:$TAG-x", &f), "web:2.1-x");
        assert_eq!(interpolate("web:${NOPE:-1.0}", &f), "web:1.0");
        assert_eq!(interpolate("web:${EMPTY:-1.0}", &f), "web:1.0");
        assert_eq!(interpolate("web:${NOPE}", &f), "web:${NOPE}");
        assert_eq!(interpolate("a$$b $", &f), "a$b $");
        assert_eq!(interpolate("${unclosed", &f), "${unclosed");
    }

    #[test]
    fn images_and_questions_that_differ_with_the_stacks_answers() {
        let old = Files {
            docker_compose: Some(
                "version: '2'\nservices:\n  web:\n    image: myorg/web:${TAG}\n  cron:\n    image: myorg/cron:1\n  same:\n    image: redis:6\n",
            ),
            rancher_compose: Some(
                ".catalog:\n  version: 1.0.0\n  questions:\n  - variable: TAG\n    default: '1.0'\n  - variable: PORT\n    type: int\n    default: 80\n  - variable: OLD\n  - variable: PASS\n    type: password\n    default: hunter2\n",
            ),
        };
        let new = Files {
            docker_compose: Some(
                "version: '2'\nservices:\n  web:\n    image: myorg/web:${TAG}\n  worker:\n    image: myorg/worker:2\n  same:\n    image: redis:6\n",
            ),
            rancher_compose: Some(
                "catalog:\n  version: 2.0.0\n  questions:\n  - variable: TAG\n    default: '2.0'\n  - variable: PORT\n    default: 8080\n  - variable: NEW\n    default: x\n  - variable: PASS\n    type: password\n    default: hunter3\n",
            ),
        };
        // This stack answered TAG itself, so its image does not move; PORT keeps 80.
        let d = diff(
            old,
            new,
            &vars(&[
                ("TAG", "1.5"),
                ("PORT", "80"),
                ("OLD", "y"),
                ("PASS", "s3cret"),
            ]),
        );
        let text: Vec<String> = d
            .iter()
            .map(|d| format!("{} {}: {}", d.what, d.change, d.text))
            .collect();
        let all = text.join("\n");
        assert!(!all.contains("web:"), "{all}");
        assert!(
            all.contains("image added: worker: new service, 'myorg/worker:2'"),
            "{all}"
        );
        assert!(
            all.contains("image removed: cron: service removed (was 'myorg/cron:1')"),
            "{all}"
        );
        assert!(
            all.contains(
                "variable changed: PORT: default '80' → '8080' (this stack keeps its answer '80')"
            ),
            "{all}"
        );
        assert!(
            all.contains("variable added: NEW: new question, default 'x'"),
            "{all}"
        );
        assert!(all.contains("variable removed: OLD: question removed; this stack's answer 'y' is no longer asked for"), "{all}");
        assert!(all.contains("PASS: default ••• → •••"), "{all}");
        assert!(!all.contains("hunter") && !all.contains("s3cret"), "{all}");
        assert!(
            !all.contains("redis"),
            "unchanged images are not listed: {all}"
        );
        // Without its own answer the stack follows the defaults.
        let d = diff(old, new, &BTreeMap::new());
        assert!(
            d.iter()
                .any(|d| d.text == "web: 'myorg/web:1.0' → 'myorg/web:2.0'"),
            "{d:?}"
        );
        assert_ne!(fingerprint(old, new), fingerprint(new, old));
        assert_eq!(fingerprint(old, new).len(), 16);
    }

    #[test]
    fn unreadable_or_unknown_current_files_say_so() {
        let new = Files {
            docker_compose: Some("web:\n  image: a:2\n"),
            rancher_compose: None,
        };
        let d = diff(Files::default(), new, &BTreeMap::new());
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].text.contains("unknown"), "{d:?}");
        let bad = Files {
            docker_compose: Some("old"),
            rancher_compose: Some("a: ["),
        };
        let d = diff(bad, new, &BTreeMap::new());
        assert!(
            d.iter().any(|d| d
                .text
                .contains("the current docker-compose.yml is not a mapping")),
            "{d:?}"
        );
        assert!(
            d.iter().any(|d| d
                .text
                .contains("the current rancher-compose.yml is not valid YAML")),
            "{d:?}"
        );
    }
}
