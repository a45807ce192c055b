//! Read-only: the catalog stacks behind their template's newest version, for the digest.
//!
//! The same rule as `/upgrade <catalog>:<template>:<version>` ([`super::version::classify`]
//! against the template's newest version): a stack from the same catalog and template at
//! a lower version is behind. Costs one environment list, one stack list per environment
//! (every page) and one template read per distinct template, all through the client's
//! rate limit, so the time grows with environments and templates, not with stacks.
//! Environments are those `CORRAL_ENVIRONMENTS` matches; templates are read from the
//! global catalogs (a template only an environment's own catalog has is not reported).

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

use super::catalog::revision_of_link;
use super::client::{Client, Filter, RancherError};
use super::model::{Project, Stack, Template};
use super::version::{CatalogId, Origin, Target, Verdict, classify, compare, origin};

/// A stack behind its template's newest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outdated {
    /// `catalog:template`.
    pub template: String,
    pub environment: String,
    pub stack: String,
    /// The version the stack runs (the catalog's version string when known).
    pub version: String,
    /// The template's newest version string.
    pub newest: String,
}

/// The template's newest version as an upgrade target: greatest by [`compare`].
fn newest(catalog: &str, name: &str, t: &Template) -> Option<Target> {
    let mut versions = BTreeMap::new();
    for (ver, link) in &t.version_links {
        if let Some(rev) = revision_of_link(link) {
            versions.insert(rev, ver.clone());
        }
    }
    let mut best: Option<(&String, &String)> = None;
    for (rev, ver) in &versions {
        best = match best {
            None => Some((rev, ver)),
            Some((brev, bver)) => match compare(rev, Some(ver), brev, Some(bver)) {
                Some(std::cmp::Ordering::Greater) => Some((rev, ver)),
                _ => Some((brev, bver)),
            },
        };
    }
    let (rev, ver) = best?;
    Some(Target {
        id: CatalogId {
            catalog: catalog.to_string(),
            template: name.to_string(),
            revision: rev.clone(),
        },
        version: ver.clone(),
        versions: versions.clone(),
    })
}

/// Every stack behind its template's newest version in the environments `environments`
/// match, sorted by template, environment and stack. An error when Rancher cannot be
/// asked (a template the global catalogs do not have is left out, not an error).
pub async fn outdated_stacks(
    client: &Client,
    environments: &[Regex],
) -> Result<Vec<Outdated>, RancherError> {
    let projects: Vec<Project> = client
        .projects()
        .await?
        .into_iter()
        .filter(|p| p.state.is_empty() || p.state == "active")
        .filter(|p| environments.iter().any(|r| r.is_match(&p.name)))
        .collect();
    let filter = [Filter::prefix("externalId", "catalog://")];
    let lists = futures::future::join_all(projects.iter().map(|p| client.stacks(p, &filter))).await;
    let mut stacks: Vec<(&Project, Stack, CatalogId)> = Vec::new();
    for (p, list) in projects.iter().zip(lists) {
        for s in list? {
            if let Origin::Catalog(id) = origin(&s.external_id) {
                stacks.push((p, s, id));
            }
        }
    }
    let templates: BTreeSet<(String, String)> = stacks
        .iter()
        .map(|(_, _, id)| (id.catalog.clone(), id.template.clone()))
        .collect();
    let reads = templates.iter().map(|(c, t)| async move {
        match client.template(c, t, None).await {
            Ok(tpl) => Ok(newest(c, t, &tpl).map(|target| ((c.clone(), t.clone()), target))),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    });
    let mut targets = BTreeMap::new();
    for r in futures::future::join_all(reads).await {
        if let Some((k, target)) = r? {
            targets.insert(k, target);
        }
    }
    let mut out = Vec::new();
    for (p, s, id) in &stacks {
        let Some(target) = targets.get(&(id.catalog.clone(), id.template.clone())) else {
            continue;
        };
        if let Verdict::Upgrade { from } = classify(&s.external_id, target) {
            out.push(Outdated {
                template: format!("{}:{}", id.catalog, id.template),
                environment: p.name.clone(),
                stack: s.name.clone(),
                version: from,
                newest: target.version.clone(),
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.template, &a.environment, &a.stack).cmp(&(&b.template, &b.environment, &b.stack))
    });
    Ok(out)
}
