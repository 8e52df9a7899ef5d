//! Saved plans on disk: recognising `apply FILE` as a plan file, reading one back with
//! its format and version checked, writing one for `plan --out`, and turning its JSON
//! form back into a plan that can be rendered (`show FILE`).

use super::OpsError;
use crate::model::PValue;
use crate::plan::json::{self as pjson, PlanDocument};
use crate::plan::{Plan, ResourceChange};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `apply FILE` where FILE is a saved plan (JSON naming the `anvil-plan` format, not
/// YAML); `None` for spec paths.
#[must_use]
pub fn planfile_arg(paths: &[PathBuf]) -> Option<PathBuf> {
    let [p] = paths else { return None };
    if !p.is_file() || p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        return None;
    }
    let head = std::fs::read(p).ok()?;
    let text = String::from_utf8_lossy(&head[..head.len().min(4096)]);
    text.contains("\"anvil-plan\"").then(|| p.clone())
}

fn planfile_error(path: &Path, message: String) -> OpsError {
    OpsError::PlanFile {
        path: path.display().to_string(),
        message,
    }
}

/// Reads a saved plan and checks that this anvil understands its format and version.
///
/// # Errors
/// [`OpsError::PlanFile`]: the file cannot be read, is not a plan file (with the line
/// and column where parsing failed), or has another format or version.
pub fn read_planfile(path: &Path) -> Result<PlanDocument, OpsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| planfile_error(path, format!("could not read the plan file: {e}")))?;
    let doc: PlanDocument = serde_json::from_str(&text).map_err(|e| OpsError::PlanFile {
        path: format!("{}:{}:{}", path.display(), e.line(), e.column()),
        message: format!("not an anvil plan file: {e}; make one with `anvil plan --out FILE`"),
    })?;
    if doc.format != pjson::FORMAT || doc.format_version != pjson::FORMAT_VERSION {
        return Err(planfile_error(
            path,
            format!(
                "plan format {} v{} is not supported by anvil {} (expected {} v{}); make the plan again with this anvil: `anvil plan --out {}`",
                doc.format,
                doc.format_version,
                env!("CARGO_PKG_VERSION"),
                pjson::FORMAT,
                pjson::FORMAT_VERSION,
                path.display()
            ),
        ));
    }
    Ok(doc)
}

/// Writes `doc` to `path` for `anvil apply FILE`.
///
/// # Errors
/// [`OpsError::PlanFile`] when the file cannot be written.
pub fn write_planfile(path: &Path, doc: &PlanDocument) -> Result<(), OpsError> {
    let body = serde_json::to_string_pretty(doc)
        .map_err(|e| planfile_error(path, format!("could not encode the plan: {e}")))?
        + "\n";
    std::fs::write(path, body).map_err(|e| {
        planfile_error(
            path,
            format!("could not write the plan file: {e}; check that its directory exists and is writable"),
        )
    })
}

/// A saved plan, read and checked, with the plan rebuilt from it for display.
pub struct SavedPlan {
    pub document: PlanDocument,
    pub plan: Plan,
}

/// `anvil show FILE`: reads a saved plan and rebuilds a renderable plan from it.
///
/// # Errors
/// As [`read_planfile`].
pub fn show_planfile(path: &Path) -> Result<SavedPlan, OpsError> {
    let document = read_planfile(path)?;
    let plan = plan_from_document(&document);
    Ok(SavedPlan { document, plan })
}

/// Rebuilds a renderable plan from its JSON form (sensitive values shown redacted).
#[must_use]
pub fn plan_from_document(doc: &PlanDocument) -> Plan {
    let changes = doc
        .resource_changes
        .iter()
        .map(|c| {
            let sensitive: BTreeSet<String> = c.sensitive_attributes.iter().cloned().collect();
            let outputs: Vec<String> = c
                .after_unknown
                .iter()
                .filter(|p| {
                    !p.contains('.')
                        && !p.contains('[')
                        && c.after.as_ref().is_none_or(|a| !a.contains_key(*p))
                })
                .cloned()
                .collect();
            let after = c.after.as_ref().map(|a| {
                let mut m: BTreeMap<String, PValue> = a
                    .iter()
                    .map(|(k, v)| (k.clone(), PValue::Known(v.clone())))
                    .collect();
                for p in &c.after_unknown {
                    mark_unknown(&mut m, p);
                }
                m
            });
            let before = c
                .before
                .as_ref()
                .map(|b| b.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
            ResourceChange {
                address: c.address.clone(),
                ty: c.ty.clone(),
                provider: c.provider.clone(),
                action: c.action,
                replace_order: c.replace_order,
                reasons: c.reasons.clone(),
                before,
                before_outputs: BTreeMap::new(),
                after,
                outputs,
                sensitive,
                forces_replacement: c.forces_replacement.iter().cloned().collect(),
                provider_diff: c.provider_diff.clone(),
                origin: c.origin.clone(),
            }
        })
        .collect();
    Plan { changes }
}

fn mark_unknown(m: &mut BTreeMap<String, PValue>, path: &str) {
    let mut segs = path.split('.');
    let Some(top) = segs.next() else { return };
    let rest: Vec<&str> = segs.collect();
    let Some(v) = m.get_mut(top) else { return };
    if rest.is_empty() {
        *v = PValue::Unknown;
        return;
    }
    // Turn the known object into a partially unknown one along the path.
    fn go(v: &mut PValue, rest: &[&str]) {
        let Some((first, tail)) = rest.split_first() else {
            *v = PValue::Unknown;
            return;
        };
        if let PValue::Known(Value::Object(obj)) = v {
            let mut o: BTreeMap<String, PValue> = obj
                .iter()
                .map(|(k, x)| (k.clone(), PValue::Known(x.clone())))
                .collect();
            if let Some(inner) = o.get_mut(*first) {
                go(inner, tail);
            }
            *v = PValue::Object(o);
        } else if let PValue::Object(o) = v {
            if let Some(inner) = o.get_mut(*first) {
                go(inner, tail);
            }
        }
    }
    go(v, &rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_plan_is_a_located_plan_file_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        std::fs::write(&p, "{\n  \"format\": \"anvil-plan\",\n  oops\n}").unwrap();
        let e = read_planfile(&p).unwrap_err();
        let OpsError::PlanFile { path, message } = &e else {
            panic!("{e:?}")
        };
        assert!(path.ends_with("p.json:3:3"), "{path}");
        assert!(message.contains("anvil plan --out FILE"), "{message}");
    }

    #[test]
    fn plan_file_detection_and_unreadable_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        let mut doc = serde_json::json!({});
        doc["format"] = "anvil-plan".into();
        std::fs::write(&p, doc.to_string()).unwrap();
        // Missing fields: not a plan file (serde), still a PlanFile error.
        assert!(matches!(read_planfile(&p), Err(OpsError::PlanFile { .. })));
        assert!(planfile_arg(std::slice::from_ref(&p)).is_some());
        let yaml = dir.path().join("p.yaml");
        std::fs::write(&yaml, "\"anvil-plan\"").unwrap();
        assert!(planfile_arg(&[yaml]).is_none());
        assert!(read_planfile(&dir.path().join("missing.json")).is_err());
    }
}
