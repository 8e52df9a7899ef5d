//! Matching a Director deployment to a catalog plan, as Blacksmith's reconciler does.
//!
//! Three strategies, tried in order; the first that matches decides:
//! 1. **name** (confidence 1.0): the deployment is named `{plan_id}-{instance_id}` for a
//!    catalog plan and a UUID;
//! 2. **metadata** (0.9): the manifest carries `properties.blacksmith.plan_id` of a
//!    catalog plan and an `instance_id` (or the name ends in `-{uuid}`);
//! 3. **releases** (0.5): the manifest's release names are exactly those of one plan's
//!    manifest template (and of no other plan), and the name ends in `-{uuid}`.
//!
//! Pure: the catalog is built from a loaded Foundation document and matching takes the
//! deployment's name and parsed manifest.

use std::collections::BTreeSet;

use serde::Serialize;
use yaml_rust2::{Yaml, YamlLoader};

use crate::spec::{Document, FoundationDoc};

/// How a deployment was matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Name,
    Metadata,
    Releases,
}

impl Strategy {
    /// How sure the match is: name 1.0, metadata 0.9, releases 0.5.
    #[must_use]
    pub fn confidence(self) -> f64 {
        match self {
            Strategy::Name => 1.0,
            Strategy::Metadata => 0.9,
            Strategy::Releases => 0.5,
        }
    }

    /// The strategy's name as reports show it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Name => "name",
            Strategy::Metadata => "metadata",
            Strategy::Releases => "releases",
        }
    }
}

/// One plan of the catalog, with the release names of its manifest template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPlan {
    pub service_id: String,
    pub plan_id: String,
    /// `None` when the template could not be read as YAML or lists no releases.
    pub releases: Option<BTreeSet<String>>,
}

/// The plans deployments are matched against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub plans: Vec<CatalogPlan>,
}

impl Catalog {
    /// The catalog of a Foundation document; templates come from its attachments.
    #[must_use]
    pub fn from_foundation(doc: &Document, f: &FoundationDoc) -> Catalog {
        let mut plans = Vec::new();
        for s in &f.catalog.services {
            for p in &s.plans {
                let releases = doc
                    .attachments
                    .get(&p.manifest)
                    .and_then(|a| YamlLoader::load_from_str(&a.text).ok())
                    .and_then(|docs| docs.into_iter().next())
                    .map(|y| release_names(&y))
                    .filter(|r| !r.is_empty());
                plans.push(CatalogPlan {
                    service_id: s.id.clone(),
                    plan_id: p.id.clone(),
                    releases,
                });
            }
        }
        Catalog::new(plans)
    }

    /// A catalog of these plans.
    #[must_use]
    pub fn new(mut plans: Vec<CatalogPlan>) -> Catalog {
        // Longest plan id first, so `redis-small-x` never matches plan `redis`.
        plans.sort_by(|a, b| {
            b.plan_id
                .len()
                .cmp(&a.plan_id.len())
                .then(a.plan_id.cmp(&b.plan_id))
        });
        Catalog { plans }
    }

    fn plan(&self, id: &str) -> Option<&CatalogPlan> {
        self.plans.iter().find(|p| p.plan_id == id)
    }
}

/// A deployment matched to a plan and an instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    pub deployment: String,
    pub instance_id: String,
    pub service_id: String,
    pub plan_id: String,
    pub strategy: Strategy,
    pub confidence: f64,
}

/// Whether `s` is a UUID in its canonical 8-4-4-4-12 hex form.
#[must_use]
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The UUID a deployment name ends with (`anything-{uuid}`), if any.
#[must_use]
pub fn trailing_uuid(name: &str) -> Option<&str> {
    let cut = name.len().checked_sub(37)?;
    if !name.is_char_boundary(cut) {
        return None;
    }
    let (head, tail) = name.split_at(cut);
    let id = tail.strip_prefix('-')?;
    (!head.is_empty() && is_uuid(id)).then_some(id)
}

/// The release names a manifest lists under `releases:`.
#[must_use]
pub fn release_names(manifest: &Yaml) -> BTreeSet<String> {
    match &manifest["releases"] {
        Yaml::Array(list) => list
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// Parses a manifest's text (the first document); `Yaml::BadValue` when it is not YAML.
#[must_use]
pub fn parse_manifest(text: &str) -> Yaml {
    YamlLoader::load_from_str(text)
        .ok()
        .and_then(|d| d.into_iter().next())
        .unwrap_or(Yaml::BadValue)
}

/// Matches one deployment. `Err` says why no strategy matched.
///
/// # Errors
/// No plan matches; the message lists what each strategy found.
pub fn match_deployment(catalog: &Catalog, name: &str, manifest: &Yaml) -> Result<Match, String> {
    let found = |p: &CatalogPlan, instance_id: &str, strategy: Strategy| Match {
        deployment: name.to_string(),
        instance_id: instance_id.to_string(),
        service_id: p.service_id.clone(),
        plan_id: p.plan_id.clone(),
        strategy,
        confidence: strategy.confidence(),
    };
    // 1. By name.
    for p in &catalog.plans {
        if let Some(id) = name
            .strip_prefix(p.plan_id.as_str())
            .and_then(|r| r.strip_prefix('-'))
        {
            if is_uuid(id) {
                return Ok(found(p, id, Strategy::Name));
            }
        }
    }
    // 2. By `properties.blacksmith` metadata.
    let meta = &manifest["properties"]["blacksmith"];
    let mut why = Vec::new();
    if let Some(plan_id) = meta["plan_id"].as_str() {
        match catalog.plan(plan_id) {
            Some(p) => {
                let service_ok = meta["service_id"]
                    .as_str()
                    .is_none_or(|s| s == p.service_id);
                let given = meta["instance_id"]
                    .as_str()
                    .filter(|s| !s.trim().is_empty());
                // The id becomes part of Vault paths (`{id}/manifest`): only a
                // canonical UUID is taken, never a path-like string.
                let id = match given {
                    Some(g) if !is_uuid(g) => {
                        why.push(format!(
                            "metadata names plan `{plan_id}` but its instance_id `{}` is not \
                             a UUID (8-4-4-4-12 hex); set properties.blacksmith.instance_id \
                             to the instance's UUID",
                            g.escape_debug()
                        ));
                        None
                    }
                    Some(g) => Some(g),
                    None => trailing_uuid(name),
                };
                match (service_ok, id) {
                    (true, Some(id)) => return Ok(found(p, id, Strategy::Metadata)),
                    (false, _) => why.push(format!(
                        "metadata names plan `{plan_id}` but service `{}` (the catalog has it under `{}`)",
                        meta["service_id"].as_str().unwrap_or_default(),
                        p.service_id
                    )),
                    (true, None) if given.is_none() => why.push(format!(
                        "metadata names plan `{plan_id}` but no instance_id"
                    )),
                    (true, None) => {}
                }
            }
            None => why.push(format!(
                "metadata names plan `{plan_id}`, which is not in the catalog"
            )),
        }
    }
    // 3. By releases.
    let releases = release_names(manifest);
    if !releases.is_empty() {
        let same: Vec<&CatalogPlan> = catalog
            .plans
            .iter()
            .filter(|p| p.releases.as_ref() == Some(&releases))
            .collect();
        let list = releases.iter().cloned().collect::<Vec<_>>().join(", ");
        match (same.as_slice(), trailing_uuid(name)) {
            ([p], Some(id)) => return Ok(found(p, id, Strategy::Releases)),
            ([p], None) => why.push(format!(
                "its releases ({list}) match plan `{}` but the name carries no instance id (`…-{{uuid}}`)",
                p.plan_id
            )),
            ([], _) => why.push(format!("no plan's template has exactly the releases {list}")),
            (many, _) => why.push(format!(
                "its releases ({list}) match {} plans ({}), so they do not decide",
                many.len(),
                many.iter()
                    .map(|p| p.plan_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    } else if matches!(manifest, Yaml::BadValue) {
        why.push("its manifest could not be read as YAML".into());
    } else {
        why.push("its manifest lists no releases".into());
    }
    Err(format!(
        "matches no catalog plan: the name is not `{{plan_id}}-{{uuid}}`; {}",
        why.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01";

    fn catalog() -> Catalog {
        let r = |names: &[&str]| Some(names.iter().map(|s| s.to_string()).collect());
        Catalog::new(vec![
            CatalogPlan {
                service_id: "redis".into(),
                plan_id: "redis".into(),
                releases: r(&["redis"]),
            },
            CatalogPlan {
                service_id: "redis".into(),
                plan_id: "redis-small".into(),
                releases: r(&["redis"]),
            },
            CatalogPlan {
                service_id: "postgresql".into(),
                plan_id: "postgresql-standard".into(),
                releases: r(&["postgres", "bpm"]),
            },
        ])
    }

    fn check(name: &str, manifest: &str) -> Result<(String, String, Strategy), String> {
        match_deployment(&catalog(), name, &parse_manifest(manifest))
            .map(|m| (m.plan_id, m.instance_id, m.strategy))
    }

    #[test]
    fn by_name_prefers_the_longest_plan_id() {
        let got = check(&format!("redis-small-{A}"), "").unwrap();
        assert_eq!(got, ("redis-small".into(), A.into(), Strategy::Name));
        let got = check(&format!("redis-{A}"), "").unwrap();
        assert_eq!(got.0, "redis");
    }

    #[test]
    fn by_metadata_then_by_releases() {
        let m = format!(
            "properties:\n  blacksmith: {{service_id: postgresql, plan_id: postgresql-standard, instance_id: {A}}}\n"
        );
        let got = check("legacy-pg", &m).unwrap();
        assert_eq!(
            got,
            ("postgresql-standard".into(), A.into(), Strategy::Metadata)
        );
        let m = "releases: [{name: bpm, version: '1'}, {name: postgres, version: latest}]\n";
        let got = check(&format!("pg-old-{A}"), m).unwrap();
        assert_eq!(
            got,
            ("postgresql-standard".into(), A.into(), Strategy::Releases)
        );
        assert!((Strategy::Releases.confidence() - 0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn explains_what_did_not_match() {
        let e = check(&format!("cache-{A}"), "releases: [{name: redis}]\n").unwrap_err();
        assert!(e.contains("match 2 plans"), "{e}");
        let e = check("pg-old", "releases: [{name: postgres}, {name: bpm}]\n").unwrap_err();
        assert!(e.contains("no instance id"), "{e}");
        let e = check("x", "properties: {blacksmith: {plan_id: gone}}\n").unwrap_err();
        assert!(e.contains("not in the catalog"), "{e}");
        let e = check("x", "releases: [{name: nginx}]\n").unwrap_err();
        assert!(e.contains("exactly the releases nginx"), "{e}");
        let e = check("x", ": : :\n  - [").unwrap_err();
        assert!(e.contains("could not be read"), "{e}");
        let m = format!("properties: {{blacksmith: {{service_id: redis, plan_id: postgresql-standard, instance_id: {A}}}}}\n");
        let e = check("x", &m).unwrap_err();
        assert!(e.contains("service `redis`"), "{e}");
    }

    #[test]
    fn trailing_uuids() {
        assert_eq!(trailing_uuid(&format!("a-{A}")), Some(A));
        assert_eq!(trailing_uuid(A), None);
        assert_eq!(trailing_uuid(&format!("-{A}")), None);
        assert_eq!(trailing_uuid("short"), None);
        assert_eq!(trailing_uuid(&"é".repeat(40)), None);
    }
}
