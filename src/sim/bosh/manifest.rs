//! Deployment manifests as the simulated Director reads them: the name, releases,
//! stemcells and instance groups (which become simulated VMs), and the line diff of
//! `POST /deployments/{name}/diff`.

use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

/// Why a manifest was refused, with the Director's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub code: u32,
    pub description: String,
}

/// One instance group of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceGroup {
    pub name: String,
    pub instances: u32,
    pub vm_type: String,
    pub azs: Vec<String>,
    pub jobs: Vec<String>,
    /// The first network's name (`default` when none is named), for BOSH DNS names.
    pub network: String,
}

/// What the simulator keeps of a parsed manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub text: String,
    pub releases: Vec<(String, String)>,
    /// (name, version, operating system)
    pub stemcells: Vec<(String, String, String)>,
    pub instance_groups: Vec<InstanceGroup>,
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Option<Yaml>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().next())
}

/// Parses a manifest the way `POST /deployments` does.
///
/// # Errors
/// 440001 for an empty or unparsable manifest, 40001 for one without a `name`.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let empty = || ManifestError {
        code: 440001,
        description: "Manifest should not be empty".into(),
    };
    if text.trim().is_empty() {
        return Err(empty());
    }
    let doc = load(text)
        .map_err(|e| ManifestError {
            code: 440001,
            description: format!("Incorrect YAML structure of the uploaded manifest: {e}"),
        })?
        .ok_or_else(empty)?;
    if matches!(doc, Yaml::Null) {
        return Err(empty());
    }
    let name = match doc["name"].clone() {
        y @ (Yaml::String(_) | Yaml::Integer(_) | Yaml::Real(_)) => scalar(&y).unwrap_or_default(),
        _ => String::new(),
    };
    if name.is_empty() {
        return Err(ManifestError {
            code: 40001,
            description: "Deployment manifest must have a 'name' key".into(),
        });
    }
    let list = |key: &str| doc[key].as_vec().cloned().unwrap_or_default();
    let releases = list("releases")
        .iter()
        .filter_map(|r| {
            Some((
                scalar(&r["name"])?,
                scalar(&r["version"]).unwrap_or_else(|| "latest".into()),
            ))
        })
        .collect();
    let stemcells = list("stemcells")
        .iter()
        .filter_map(|s| {
            let os = scalar(&s["os"]).unwrap_or_else(|| "ubuntu-jammy".into());
            let name =
                scalar(&s["name"]).unwrap_or_else(|| format!("bosh-warden-boshlite-{os}-go_agent"));
            let version = scalar(&s["version"]).unwrap_or_else(|| "latest".into());
            (!name.is_empty()).then_some((name, version, os))
        })
        .collect();
    let instance_groups = list("instance_groups")
        .iter()
        .filter_map(|g| {
            let name = scalar(&g["name"])?;
            let instances = g["instances"].as_i64().unwrap_or(0).clamp(0, 10_000) as u32;
            let strings = |y: &Yaml| {
                y.as_vec()
                    .map(|v| v.iter().filter_map(scalar).collect())
                    .unwrap_or_default()
            };
            let jobs = g["jobs"]
                .as_vec()
                .map(|v| v.iter().filter_map(|j| scalar(&j["name"])).collect())
                .unwrap_or_default();
            Some(InstanceGroup {
                name,
                instances,
                vm_type: scalar(&g["vm_type"]).unwrap_or_default(),
                azs: strings(&g["azs"]),
                jobs,
                network: g["networks"]
                    .as_vec()
                    .and_then(|n| n.first())
                    .and_then(|n| scalar(&n["name"]))
                    .unwrap_or_else(|| "default".into()),
            })
        })
        .collect();
    Ok(Manifest {
        name,
        text: text.to_string(),
        releases,
        stemcells,
        instance_groups,
    })
}

/// The value the Director shows instead of a redacted property.
const REDACTED: &str = "<redacted>";

fn redact(y: &Yaml, under_properties: bool) -> Yaml {
    match y {
        Yaml::Hash(h) => Yaml::Hash(
            h.iter()
                .map(|(k, v)| {
                    let props =
                        under_properties || matches!(k.as_str(), Some("properties" | "env"));
                    (k.clone(), redact(v, props))
                })
                .collect(),
        ),
        Yaml::Array(a) => Yaml::Array(a.iter().map(|v| redact(v, under_properties)).collect()),
        _ if under_properties => Yaml::String(REDACTED.into()),
        other => other.clone(),
    }
}

fn canonical(text: &str, redacted: bool) -> Result<Vec<String>, String> {
    let Some(doc) = load(text)? else {
        return Ok(Vec::new());
    };
    if matches!(doc, Yaml::Null) {
        return Ok(Vec::new());
    }
    let doc = if redacted { redact(&doc, false) } else { doc };
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(&doc)
        .map_err(|e| format!("{e:?}"))?;
    Ok(out
        .lines()
        .skip_while(|l| *l == "---")
        .map(str::to_string)
        .collect())
}

/// The `diff` array of `POST /deployments/{name}/diff`: the old and new manifests are
/// normalised (parsed and re-emitted, properties redacted when asked) and compared line
/// by line; every line is listed, unchanged ones with `null`.
///
/// # Errors
/// The text of the parse error when either manifest is not YAML.
pub fn diff(old: &str, new: &str, redacted: bool) -> Result<Vec<Value>, String> {
    let old = canonical(old, redacted)?;
    let new = canonical(new, redacted)?;
    let ops = similar::capture_diff_slices(similar::Algorithm::Myers, &old, &new);
    let mut out = Vec::new();
    for op in ops {
        for change in op.iter_changes(&old, &new) {
            let tag = match change.tag() {
                similar::ChangeTag::Equal => Value::Null,
                similar::ChangeTag::Delete => json!("removed"),
                similar::ChangeTag::Insert => json!("added"),
            };
            out.push(json!([change.value(), tag]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups_releases_stemcells() {
        let m = parse(
            "name: redis\nreleases:\n- {name: redis, version: 1.2}\nstemcells:\n- {alias: default, os: ubuntu-jammy, version: latest}\ninstance_groups:\n- name: redis\n  instances: 3\n  vm_type: small\n  azs: [z1, z2]\n  jobs:\n  - {name: redis-server, release: redis}\n",
        )
        .unwrap();
        assert_eq!(m.name, "redis");
        assert_eq!(m.releases, vec![("redis".into(), "1.2".into())]);
        assert_eq!(m.stemcells[0].2, "ubuntu-jammy");
        assert_eq!(m.instance_groups[0].instances, 3);
        assert_eq!(m.instance_groups[0].jobs, vec!["redis-server".to_string()]);
    }

    #[test]
    fn refuses_like_the_director() {
        assert_eq!(parse("").unwrap_err().code, 440001);
        assert_eq!(parse("  \n").unwrap_err().code, 440001);
        assert_eq!(parse("releases: []\n").unwrap_err().code, 40001);
        assert_eq!(parse("name: [\n").unwrap_err().code, 440001);
    }

    #[test]
    fn diff_marks_lines_and_redacts() {
        let d = diff(
            "name: a\nproperties: {pw: x}\n",
            "name: a\nproperties: {pw: y}\nfoo: 1\n",
            true,
        )
        .unwrap();
        assert!(d.iter().all(|l| l[0] != "pw: y"));
        assert!(d.contains(&json!(["foo: 1", "added"])));
        assert!(d.contains(&json!(["name: a", null])));
        assert!(diff("", "name: a\n", true)
            .unwrap()
            .contains(&json!(["name: a", "added"])));
        assert!(diff("", "name: [\n", true).is_err());
    }
}
