//! The layer rules of ARCHITECTURE.md, enforced on the source: every `crate::` and
//! `super::` path under `src/` (in a `use` or inline in a body) must point at the same
//! module or a layer below, and the modules must not import each other in a circle.
//!
//! | rank | layer         | modules |
//! |------|---------------|---------|
//! | 4    | doors         | `api`, `slack::http`, `slack::socket`, `playground::http` (and `main.rs`) |
//! | 3    | orchestration | `app` |
//! | 2    | configuration | `config` (imported only by doors and orchestration) |
//! | 1    | domain        | `rancher`, `deploy`, `slack` (its Web API client, Block Kit rendering and signature check) and `playground` (its chat destination and Block Kit → HTML) |
//! | 0    | vocabulary    | `chat`, `clock`, `command`, `door`, `job`, `lock`, `policy`, `schedule`, `secret`, `store`, `text` |
//!
//! Within a layer a module may not import another, except that vocabulary modules may use
//! each other's nouns — but nothing in the vocabulary but the store itself may use the
//! store. Items of the crate root (`crate::http_client`) are available to every layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Where a module sits.
fn rank(module: &str) -> Option<(u8, &'static str)> {
    Some(match module {
        "api" | "slack::http" | "slack::socket" | "playground::http" => (4, "doors"),
        "app" => (3, "orchestration"),
        "config" => (2, "configuration"),
        "rancher" | "deploy" | "slack" | "playground" => (1, "domain"),
        "chat" | "clock" | "command" | "door" | "job" | "lock" | "policy" | "schedule"
        | "secret" | "store" | "text" => (0, "vocabulary"),
        _ => return None,
    })
}

/// The module a path names, as ranked above: its first segment, or the first two under
/// `slack`. `None` for the crate root's own items.
fn module_of(segments: &[String]) -> Option<String> {
    let first = segments.first()?;
    if first == "slack" {
        // The doors in are their own modules; the rest of `slack/` is one adapter.
        return Some(match segments.get(1).map(String::as_str) {
            Some(door @ ("http" | "socket")) => format!("slack::{door}"),
            _ => "slack".to_string(),
        });
    }
    if first == "playground" {
        // Likewise: the page's door, and the chat destination it shows.
        return Some(match segments.get(1).map(String::as_str) {
            Some("http") => "playground::http".to_string(),
            _ => "playground".to_string(),
        });
    }
    rank(first).map(|_| first.clone())
}

/// Why `from` may not import `to`, if it may not.
fn violation(from: &str, to: &str) -> Option<String> {
    if from == to {
        return None;
    }
    let (Some((rf, lf)), Some((rt, lt))) = (rank(from), rank(to)) else {
        return None;
    };
    if rt > rf {
        return Some(format!(
            "{lf} ({from}) may not import {lt} ({to}), a layer above it"
        ));
    }
    if rt == rf {
        if rf == 0 {
            if to == "store" {
                return Some(format!(
                    "vocabulary ({from}) may not use the store; only the store may use the vocabulary's types"
                ));
            }
            return None;
        }
        if rf == 4 {
            // Doors may mount each other's handlers; the cycle check still applies.
            return None;
        }
        return Some(format!(
            "{lf} ({from}) may not import {to}, another module of the same layer"
        ));
    }
    None
}

/// Source text with comments, string and char literals blanked out (same length, so
/// positions and line numbers stay true).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in out.iter_mut().take(to).skip(from) {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = src[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
                blank(&mut out, i, end);
                i = end;
            }
            b'r' if matches!(b.get(i + 1), Some(b'#') | Some(b'"'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                let end = src[start..]
                    .find(&close)
                    .map_or(b.len(), |n| start + n + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i, (j + 1).min(b.len()));
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{1F600}'), not a lifetime ('a).
                let rest = &src[i + 1..];
                let len = if rest.starts_with('\\') {
                    rest.find('\'').map(|n| n + 2)
                } else {
                    rest.chars()
                        .next()
                        .filter(|_| rest.chars().nth(1) == Some('\''))
                        .map(|c| c.len_utf8() + 2)
                };
                match len {
                    Some(l) => {
                        blank(&mut out, i, i + l);
                        i += l;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths that start at `code[at..]` after a `crate::`/`super::` head: one path, or
/// one per item of a `{…}` group (nested groups flattened to their first segments).
fn paths_after(code: &str, mut at: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut segs = prefix;
    loop {
        let rest = &code[at..];
        let trimmed = rest.trim_start();
        at += rest.len() - trimmed.len();
        if trimmed.starts_with('{') {
            // A group: split its items at depth 1.
            let mut depth = 0;
            let mut item_start = at + 1;
            for (k, c) in code[at..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        let item = code[item_start..at + k].trim();
                        if !item.is_empty() {
                            let mut inner = Vec::new();
                            let item_at = item_start
                                + (code[item_start..].len()
                                    - code[item_start..].trim_start().len());
                            paths_after(code, item_at, segs.clone(), &mut inner);
                            out.extend(inner);
                        }
                        item_start = at + k + 1;
                        if c == '}' {
                            return;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            return;
        }
        let ident: String = trimmed
            .chars()
            .take_while(|c| is_ident(*c) || *c == '*')
            .collect();
        if ident.is_empty() {
            break;
        }
        segs.push(ident.clone());
        at += ident.len();
        if code[at..].starts_with("::") {
            at += 2;
        } else {
            break;
        }
    }
    if !segs.is_empty() {
        out.push(segs);
    }
}

/// The module path of a file under `src/` (`app/runner.rs` → `["app", "runner"]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Every `crate::`/`super::` path of one file, resolved from the crate root, with the
/// line it is on.
fn imports(rel: &Path, src: &str) -> Vec<(usize, Vec<String>)> {
    let code = code_only(src);
    let here = module_path(rel);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    for head in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(n) = code[from..].find(head) {
            let at = from + n;
            from = at + head.len();
            if at > 0
                && code[..at]
                    .chars()
                    .last()
                    .is_some_and(|c| is_ident(c) || c == ':')
            {
                continue; // `x::super::`, `my_crate::`
            }
            let mut base = here.clone();
            let mut after = at + head.len();
            if head == "super::" {
                base.pop();
                while code[after..].starts_with("super::") {
                    base.pop();
                    after += "super::".len();
                }
            } else {
                base.clear();
            }
            let mut paths = Vec::new();
            paths_after(&code, after, base, &mut paths);
            found.extend(paths.into_iter().map(|p| (line_of(at), p)));
        }
    }
    found
}

/// The layer breaks of one file: `path:line: \`crate::…\` — why`.
fn check_file(rel: &Path, src: &str) -> Vec<String> {
    let Some(from) = module_of(&module_path(rel)) else {
        return Vec::new();
    };
    imports(rel, src)
        .into_iter()
        .filter_map(|(line, path)| {
            let to = module_of(&path)?;
            let why = violation(&from, &to)?;
            Some(format!(
                "src/{}:{line}: `crate::{}` — {why}",
                rel.display(),
                path.join("::")
            ))
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A circle among modules, if the import graph has one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn every_import_respects_the_layers_and_no_modules_form_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut breaks = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        if rel == Path::new("main.rs") {
            continue; // the binary: a door, it may use everything
        }
        let text = std::fs::read_to_string(file).expect("read");
        breaks.extend(check_file(rel, &text));
        if let Some(from) = module_of(&module_path(rel)) {
            for (_, path) in imports(rel, &text) {
                if let Some(to) = module_of(&path).filter(|to| *to != from) {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    assert!(
        files.len() > 40,
        "src/ was not read ({} files)",
        files.len()
    );
    assert!(
        breaks.is_empty(),
        "layer rules broken:\n{}",
        breaks.join("\n")
    );
    if let Some(cycle) = find_cycle(&edges) {
        panic!(
            "modules import each other in a circle: {}",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_checker_catches_wrong_imports() {
    let bad = [
        (
            "rancher/catalog.rs",
            "use crate::app::App;",
            "domain (rancher) may not import orchestration (app)",
        ),
        (
            "deploy/mod.rs",
            "fn f() { crate::rancher::run(); }",
            "another module of the same layer",
        ),
        (
            "job/mod.rs",
            "use crate::store::{Store, JobRecord};",
            "may not use the store",
        ),
        (
            "lock.rs",
            "use crate::{text::when, config::Config};",
            "vocabulary (lock) may not import configuration",
        ),
        (
            "app/runner.rs",
            "use super::super::api::router;",
            "orchestration (app) may not import doors (api)",
        ),
        (
            "store/sqlite.rs",
            "let x = crate::slack::web::SlackChat::new();",
            "vocabulary (store) may not import domain (slack)",
        ),
        (
            "slack/web.rs",
            "use crate::slack::{blocks, http::commands};",
            "domain (slack) may not import doors (slack::http)",
        ),
    ];
    for (file, src, why) in bad {
        let found = check_file(Path::new(file), src);
        assert!(
            found.iter().any(|f| f.contains(why)),
            "{file}: {src}: {found:?}"
        );
    }
    let good = [
        (
            "app/runner.rs",
            "use super::reporter::Reporter;\nuse crate::store::Store;",
        ),
        (
            "store/sqlite.rs",
            "use crate::{job::JobKind, lock::LockState};",
        ),
        (
            "rancher/x.rs",
            "// use crate::app::App;\nlet s = \"crate::app::App\"; let c = 'x';",
        ),
        (
            "api/mod.rs",
            "use crate::slack::http::commands; use crate::app::App;",
        ),
        (
            "slack/web.rs",
            "use crate::chat::{Chat, Message};\nuse super::blocks::blocks;",
        ),
        (
            "deploy/agent.rs",
            "let v = r#\"crate::app\"#; crate::http_client();",
        ),
    ];
    for (file, src) in good {
        assert_eq!(
            check_file(Path::new(file), src),
            Vec::<String>::new(),
            "{file}: {src}"
        );
    }
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
