//! Normalisation of a `Foundation` document into resources (design §1).
//!
//! Each instance becomes, with `D = {plan_id}-{instance_id}`:
//! - `bosh_deployment.D`: the plan's manifest template rendered for the instance, with
//!   `name: D` and `properties.blacksmith.{service_id,plan_id,instance_id}`;
//! - `vault_index_entry.ID`: the instance's entry in Blacksmith's `db` index;
//! - `vault_secret.ID-manifest` (`{id}/manifest`) and `vault_secret.ID-metadata`
//!   (`{id}/metadata`), kept in Vault when the instance goes (`retain_on_delete`).
//!
//! Checks, each located: instance ids are UUIDs and unique, services and plans exist,
//! service and plan ids are unique, plans and services are within their `limit`,
//! templates name only parameters the instance or plan sets, and instances set only
//! parameters the plan's template or defaults use (with a "did you mean"). No IO: templates were read
//! by the loader into [`Document::attachments`].

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

use crate::spec::{
    Document, FieldPath, FoundationDoc, InstanceSpec, Lifecycle, Location, PlanSpec, ResourceSpec,
    ServiceSpec, SpecError,
};

/// The KV v2 mount Blacksmith uses when the Foundation names none.
pub const DEFAULT_MOUNT: &str = "secret";

/// The index secret Blacksmith keeps its instances in.
pub const INDEX_PATH: &str = "db";

/// Keys of an index entry written once and then left alone by plans: creation times
/// (stamped by the provider) and the marks the reconciler keeps.
pub const INDEX_MANAGED_ELSEWHERE: &[&str] = &[
    "created",
    "created_at",
    "requested_at",
    "reconciled",
    "reconciled_at",
    "last_synced_at",
    "orphaned",
    "orphaned_at",
    "orphaned_reason",
];

/// The resources of one Foundation document, each with the index of the instance it
/// came from (for error locations). Each names the provider instance its Foundation's
/// `alias` selects (`bosh.ALIAS`, `vault.ALIAS`; the default instances without one).
#[derive(Debug, Default)]
pub struct Normalised {
    pub resources: Vec<(usize, ResourceSpec)>,
}

/// The index status of a broker-created instance once its deployment is done
/// (Blacksmith's last provisioning status); spec instances say `succeeded`.
pub const BROKER_DONE: &str = "provisioning_completed";

/// The origin mark of resources generated for a broker instance (`anvil broker`'s
/// store), shown by plans as `(broker instance)`.
pub const ORIGIN_BROKER: &str = "broker";

/// Checks one instance that is not (yet) in the document against its Foundation's
/// catalog as [`normalise`] would: a UUID id, a known service and plan, parameters the
/// plan uses, a template that renders. Limits are the caller's (it knows what else
/// counts). Returns the rendered manifest, or the problems as messages (without
/// locations: the instance has none).
///
/// # Errors
/// Each problem found, as a readable message.
pub fn check_instance(
    doc: &Document,
    f: &FoundationDoc,
    inst: &InstanceSpec,
) -> Result<String, Vec<String>> {
    if !is_uuid(&inst.id) {
        return Err(vec![format!(
            "instance id `{}` is not a UUID: expected 8-4-4-4-12 hex digits",
            inst.id
        )]);
    }
    let Some(service) = f.catalog.services.iter().find(|s| s.id == inst.service) else {
        return Err(vec![format!("unknown service `{}`", inst.service)]);
    };
    let Some(plan) = service.plans.iter().find(|p| p.id == inst.plan) else {
        return Err(vec![format!(
            "unknown plan `{}` for service `{}`",
            inst.plan, service.id
        )]);
    };
    // A position past the document's instances: messages only, no location.
    let i = f.instances.len();
    let unknown = unknown_parameters(doc, i, plan, inst);
    if !unknown.is_empty() {
        // Name the parameter the way the request does (`parameters.NAME`).
        return Err(unknown
            .into_iter()
            .map(|e| match e.path.find("parameters.") {
                Some(at) => format!("{}: {}", &e.path[at..], e.message),
                None => e.message,
            })
            .collect());
    }
    render_instance(doc, i, service, plan, inst).map_err(|e| vec![e.message])
}

/// The deployment name of an instance: `{plan_id}-{instance_id}`.
#[must_use]
pub fn deployment_name(plan_id: &str, instance_id: &str) -> String {
    format!("{plan_id}-{instance_id}")
}

fn service_path(si: usize) -> FieldPath {
    FieldPath::root().key("catalog").key("services").index(si)
}

fn plan_path(si: usize, pi: usize) -> FieldPath {
    service_path(si).key("plans").index(pi)
}

fn instance_path(i: usize) -> FieldPath {
    FieldPath::root().key("instances").index(i)
}

/// Whether `s` is a UUID in its canonical 8-4-4-4-12 hex form.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Normalises one Foundation document. Problems go to `errors`; resources are only
/// produced for instances without problems.
pub fn normalise(doc: &Document, f: &FoundationDoc, errors: &mut Vec<SpecError>) -> Normalised {
    let mut out = Normalised::default();
    let alias = f.alias.as_deref();
    let mount = f.vault.mount.as_deref().unwrap_or(DEFAULT_MOUNT);

    // The catalog: unique service ids, unique plan ids across services.
    let mut services: HashMap<&str, usize> = HashMap::new();
    let mut plans: HashMap<&str, (usize, usize)> = HashMap::new();
    for (si, s) in f.catalog.services.iter().enumerate() {
        if let Some(first) = services.get(s.id.as_str()) {
            let p = service_path(si).key("id");
            errors.push(doc.error_at(
                &p,
                format!(
                    "duplicate service id `{}` (first at {}): service ids must be unique in the catalog",
                    s.id,
                    doc.locate(&service_path(*first).key("id"))
                ),
            ));
            continue;
        }
        services.insert(&s.id, si);
        for (pi, p) in s.plans.iter().enumerate() {
            if let Some((fs, fp)) = plans.get(p.id.as_str()) {
                let at = plan_path(si, pi).key("id");
                errors.push(doc.error_at(
                    &at,
                    format!(
                        "duplicate plan id `{}` (first at {}): plan ids must be unique across the catalog",
                        p.id,
                        doc.locate(&plan_path(*fs, *fp).key("id"))
                    ),
                ));
                continue;
            }
            plans.insert(&p.id, (si, pi));
            if let Some(template) = &p.credentials {
                for (segments, problem) in super::credentials::check(template) {
                    let mut at = plan_path(si, pi).key("credentials");
                    for seg in segments {
                        at = match seg {
                            super::credentials::Segment::Key(k) => at.key(k),
                            super::credentials::Segment::Index(i) => at.index(i),
                        };
                    }
                    errors.push(doc.error_at(
                        &at,
                        format!("credentials template of plan `{}`: {problem}", p.id),
                    ));
                }
            }
        }
    }

    // Instances: UUIDs, unique, known service and plan.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut per_plan: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    let mut per_service: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut resolved: Vec<(usize, usize, usize)> = Vec::new();
    for (i, inst) in f.instances.iter().enumerate() {
        let ip = instance_path(i);
        if !is_uuid(&inst.id) {
            errors.push(doc.error_at(
                &ip.key("id"),
                format!(
                    "instance id `{}` is not a UUID: expected 8-4-4-4-12 hex digits, e.g. 6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01",
                    inst.id
                ),
            ));
            continue;
        }
        if let Some(first) = ids.get(inst.id.as_str()) {
            errors.push(doc.error_at(
                &ip.key("id"),
                format!(
                    "duplicate instance id `{}` (first at {}): each instance needs its own id",
                    inst.id,
                    doc.locate(&instance_path(*first).key("id"))
                ),
            ));
            continue;
        }
        ids.insert(&inst.id, i);
        let Some(&si) = services.get(inst.service.as_str()) else {
            let known: Vec<&str> = f.catalog.services.iter().map(|s| s.id.as_str()).collect();
            let hint = crate::spec::did_you_mean(&inst.service, known.iter().copied())
                .map(|k| format!(" (did you mean \"{k}\"?)"))
                .unwrap_or_default();
            errors.push(doc.error_at(
                &ip.key("service"),
                format!(
                    "unknown service `{}`: expected one of {}{hint}",
                    inst.service,
                    known.join(", ")
                ),
            ));
            continue;
        };
        let service = &f.catalog.services[si];
        let found = service
            .plans
            .iter()
            .position(|p| p.id == inst.plan)
            .or_else(|| service.plans.iter().position(|p| p.name == inst.plan));
        let Some(pi) = found else {
            let known: Vec<String> = service
                .plans
                .iter()
                .map(|p| format!("{} ({})", p.id, p.name))
                .collect();
            // A plan is named by id or by name: suggest from both.
            let names = service
                .plans
                .iter()
                .flat_map(|p| [p.id.as_str(), p.name.as_str()]);
            let hint = crate::spec::did_you_mean(&inst.plan, names)
                .map(|k| format!(" (did you mean \"{k}\"?)"))
                .unwrap_or_default();
            errors.push(doc.error_at(
                &ip.key("plan"),
                format!(
                    "unknown plan `{}` for service `{}`: expected one of {}{hint}",
                    inst.plan,
                    service.id,
                    known.join(", ")
                ),
            ));
            continue;
        };
        per_plan.entry((si, pi)).or_default().push(i);
        per_service.entry(si).or_default().push(i);
        resolved.push((i, si, pi));
    }

    // Limits: 0 is unlimited, negative is always over, else at most `limit`.
    let over = |limit: i64, count: usize| -> bool {
        limit < 0 || (limit > 0 && i64::try_from(count).unwrap_or(i64::MAX) > limit)
    };
    let mut limited = false;
    for ((si, pi), members) in &per_plan {
        let plan = &f.catalog.services[*si].plans[*pi];
        if over(plan.limit, members.len()) {
            limited = true;
            let first_over = usize::try_from(plan.limit.max(0)).unwrap_or(0);
            let at = instance_path(members[first_over.min(members.len() - 1)]).key("plan");
            errors.push(doc.error_at(
                &at,
                format!(
                    "plan `{}` has {} instance(s), over its limit of {} (set at {}): remove instances or raise the limit (0 = unlimited)",
                    plan.id,
                    members.len(),
                    plan.limit,
                    doc.locate(&plan_path(*si, *pi).key("limit"))
                ),
            ));
        }
    }
    for (si, members) in &per_service {
        let service = &f.catalog.services[*si];
        if over(service.limit, members.len()) {
            limited = true;
            let first_over = usize::try_from(service.limit.max(0)).unwrap_or(0);
            let at = instance_path(members[first_over.min(members.len() - 1)]).key("service");
            errors.push(doc.error_at(
                &at,
                format!(
                    "service `{}` has {} instance(s), over its limit of {} (set at {}): remove instances or raise the limit (0 = unlimited)",
                    service.id,
                    members.len(),
                    service.limit,
                    doc.locate(&service_path(*si).key("limit"))
                ),
            ));
        }
    }
    if limited {
        return out;
    }

    for (i, si, pi) in resolved {
        let service = &f.catalog.services[si];
        let plan = &service.plans[pi];
        let inst = &f.instances[i];
        let unknown = unknown_parameters(doc, i, plan, inst);
        if !unknown.is_empty() {
            errors.extend(unknown);
            continue;
        }
        match render_instance(doc, i, service, plan, inst) {
            Ok(manifest) => out.resources.extend(
                instance_resources(service, plan, inst, mount, manifest).map(|mut r| {
                    if let Some(a) = alias {
                        let provider = if r.ty.starts_with("bosh_") {
                            "bosh"
                        } else {
                            "vault"
                        };
                        r.provider = Some(format!("{provider}.{a}"));
                    }
                    (i, r)
                }),
            ),
            Err(e) => errors.push(e),
        }
    }
    out
}

/// The typed-settings maps of a Foundation's `director` and `vault` blocks, as the
/// `bosh` and `vault` providers read them (`environment`, `client`, `client_secret`,
/// `ca_cert`; `address`, `cacert`, `namespace`). Blank fields are left out, so they fall
/// back to the environment.
#[must_use]
pub fn provider_settings(
    f: &FoundationDoc,
) -> (
    serde_json::Map<String, Value>,
    serde_json::Map<String, Value>,
) {
    fn put(m: &mut serde_json::Map<String, Value>, k: &str, v: &Option<String>) {
        if let Some(v) = v.as_ref().filter(|v| !v.trim().is_empty()) {
            m.insert(k.to_string(), Value::String(v.clone()));
        }
    }
    let (mut bosh, mut vault) = (serde_json::Map::new(), serde_json::Map::new());
    put(&mut bosh, "environment", &f.director.url);
    put(&mut bosh, "ca_cert", &f.director.ca_cert);
    put(&mut bosh, "client", &f.director.client);
    put(&mut bosh, "client_secret", &f.director.client_secret);
    put(&mut vault, "address", &f.vault.addr);
    put(&mut vault, "cacert", &f.vault.ca_cert);
    put(&mut vault, "namespace", &f.vault.namespace);
    (bosh, vault)
}

/// The provider instances a Foundation configures: `bosh.ALIAS` and `vault.ALIAS` with
/// an `alias` (even with no settings: then all from the environment), else the default
/// `bosh` and `vault` instances when its blocks set anything. `origin` is left for the
/// caller to locate.
#[must_use]
pub fn provider_instances(f: &FoundationDoc) -> Vec<super::ProviderInstance> {
    let (bosh, vault) = provider_settings(f);
    [("bosh", bosh), ("vault", vault)]
        .into_iter()
        .filter(|(_, s)| f.alias.is_some() || !s.is_empty())
        .map(|(p, settings)| super::ProviderInstance {
            provider: p.to_string(),
            alias: f.alias.clone(),
            settings,
            origin: SpecError {
                location: None,
                file: None,
                path: String::new(),
                message: String::new(),
            },
        })
        .collect()
}

/// A string attribute value that the model reads back literally (`${` escaped).
fn lit(s: &str) -> Value {
    Value::String(s.replace("${", "$${"))
}

fn instance_resources(
    service: &ServiceSpec,
    plan: &PlanSpec,
    inst: &InstanceSpec,
    mount: &str,
    manifest: String,
) -> impl Iterator<Item = ResourceSpec> {
    let deployment = deployment_name(&plan.id, &inst.id);
    let id = &inst.id;
    let origin = inst.from_broker.then(|| ORIGIN_BROKER.to_string());
    let bosh = ResourceSpec {
        ty: "bosh_deployment".into(),
        name: deployment.clone(),
        attributes: BTreeMap::from([
            ("name".to_string(), lit(&deployment)),
            ("manifest".to_string(), lit(&manifest)),
        ]),
        depends_on: Vec::new(),
        lifecycle: Lifecycle::default(),
        provider: None,
        origin: origin.clone(),
    };
    let index = ResourceSpec {
        ty: "vault_index_entry".into(),
        name: id.clone(),
        attributes: BTreeMap::from([
            ("mount".to_string(), lit(mount)),
            ("path".to_string(), lit(INDEX_PATH)),
            ("key".to_string(), lit(id)),
            (
                "value".to_string(),
                json!({
                    "service_id": lit(&service.id),
                    "plan_id": lit(&plan.id),
                    "deployment_name": lit(&deployment),
                    "organization_guid": lit(&inst.organization_guid),
                    "space_guid": lit(&inst.space_guid),
                    "status": if inst.from_broker { BROKER_DONE } else { "succeeded" },
                }),
            ),
            (
                "stamp_on_create".to_string(),
                json!({"created": "unix", "created_at": "rfc3339", "requested_at": "rfc3339"}),
            ),
            ("preserve_keys".to_string(), json!(INDEX_MANAGED_ELSEWHERE)),
        ]),
        depends_on: vec![format!("bosh_deployment.{deployment}")],
        lifecycle: Lifecycle {
            ignore_changes: INDEX_MANAGED_ELSEWHERE
                .iter()
                .map(|k| format!("value.{k}"))
                .collect(),
            ..Lifecycle::default()
        },
        provider: None,
        origin: origin.clone(),
    };
    // Kept in Vault when the instance goes. `{id}/manifest` is written at creation and
    // from then on kept in step with the Director by `anvil reconcile` (as Blacksmith's
    // reconciler does, adding its `reconciled*` marks), so plans leave its data alone.
    let kept = Lifecycle {
        retain_on_delete: true,
        ..Lifecycle::default()
    };
    let kept_synced = Lifecycle {
        ignore_changes: vec!["data".to_string()],
        ..kept.clone()
    };
    let manifest_secret = ResourceSpec {
        ty: "vault_secret".into(),
        name: format!("{id}-manifest"),
        attributes: BTreeMap::from([
            ("mount".to_string(), lit(mount)),
            ("path".to_string(), lit(&format!("{id}/manifest"))),
            ("data".to_string(), json!({ "manifest": lit(&manifest) })),
        ]),
        depends_on: vec![format!("bosh_deployment.{deployment}")],
        lifecycle: kept_synced,
        provider: None,
        origin: origin.clone(),
    };
    let metadata_secret = ResourceSpec {
        ty: "vault_secret".into(),
        name: format!("{id}-metadata"),
        attributes: BTreeMap::from([
            ("mount".to_string(), lit(mount)),
            ("path".to_string(), lit(&format!("{id}/metadata"))),
            (
                "data".to_string(),
                json!({
                    "instance_id": lit(id),
                    "service_id": lit(&service.id),
                    "service_name": lit(&service.name),
                    "plan_id": lit(&plan.id),
                    "plan_name": lit(&plan.name),
                    "deployment_name": lit(&deployment),
                    "organization_guid": lit(&inst.organization_guid),
                    "space_guid": lit(&inst.space_guid),
                }),
            ),
        ]),
        depends_on: Vec::new(),
        lifecycle: kept,
        provider: None,
        origin: origin.clone(),
    };
    [bosh, index, manifest_secret, metadata_secret].into_iter()
}

/// The plan's default parameters overridden by the instance's.
fn merged_params(plan: &PlanSpec, inst: &InstanceSpec) -> BTreeMap<String, Value> {
    merge_params(plan, &inst.parameters)
}

/// The plan's default parameters overridden by `given` (an instance's parameters).
#[must_use]
pub fn merge_params(plan: &PlanSpec, given: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let mut p = plan.parameters.clone();
    for (k, v) in given {
        p.insert(k.clone(), v.clone());
    }
    p
}

/// An error for each instance parameter that neither the plan's defaults nor its
/// template uses: it would be accepted and silently do nothing (a misspelt `maxmemroy`
/// leaves the default `maxmemory` in place). Each is located at the parameter's key and
/// offers the nearest name the plan knows.
fn unknown_parameters(
    doc: &Document,
    i: usize,
    plan: &PlanSpec,
    inst: &InstanceSpec,
) -> Vec<SpecError> {
    // A template that was not loaded is reported when rendering.
    let Some(template) = doc.attachments.get(&plan.manifest) else {
        return Vec::new();
    };
    let mut used = template_params(&template.text);
    if let Some(c) = &plan.credentials {
        used.extend(super::credentials::param_names(c));
    }
    let mut out = Vec::new();
    for key in inst.parameters.keys() {
        if used.contains(key) || plan.parameters.contains_key(key) {
            continue;
        }
        let list = |names: &mut dyn Iterator<Item = &String>| {
            let v: Vec<&str> = names.map(String::as_str).collect();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let known = format!(
            "the plan's template uses: {}; its defaults set: {}",
            list(&mut used.iter()),
            list(&mut plan.parameters.keys())
        );
        let candidates = used
            .iter()
            .chain(plan.parameters.keys())
            .map(String::as_str);
        let message = match crate::spec::did_you_mean(key, candidates) {
            Some(near) => format!(
                "unknown parameter for plan {}; did you mean \"{near}\"? ({known})",
                plan.id
            ),
            None => format!(
                "unknown parameter for plan {}: neither its template ({}) nor its defaults use it; remove it, or use it in the template as ${{params.{key}}} ({known})",
                plan.id, plan.manifest
            ),
        };
        out.push(doc.error_at(
            &instance_path(i).key("parameters").key(key.as_str()),
            message,
        ));
    }
    out
}

/// The parameter names a template substitutes (`${params.NAME...}`, first segment), on
/// the lines it renders (whole comment lines are left as written, so they use nothing).
fn template_params(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                break;
            };
            let mut parts = after[..end].trim().split('.');
            if parts.next() == Some("params") {
                if let Some(name) = parts.next().filter(|n| !n.is_empty()) {
                    out.insert(name.to_string());
                }
            }
            rest = &after[end + 1..];
        }
    }
    out
}

/// The namespaces a manifest template substitutes; any other `${...}` passes through.
const NAMESPACES: &[&str] = &["instance", "plan", "service", "params"];

/// Renders the plan's template for one instance and stamps the deployment name and the
/// Blacksmith metadata into it.
fn render_instance(
    doc: &Document,
    i: usize,
    service: &ServiceSpec,
    plan: &PlanSpec,
    inst: &InstanceSpec,
) -> Result<String, SpecError> {
    let ip = instance_path(i);
    let Some(template) = doc.attachments.get(&plan.manifest) else {
        return Err(doc.error_at(
            &ip,
            format!("manifest template `{}` was not loaded", plan.manifest),
        ));
    };
    let deployment = deployment_name(&plan.id, &inst.id);
    let params = merged_params(plan, inst);
    let lookup = |ns: &str, path: &[&str]| -> Option<Value> {
        let field = |v: &str| Some(Value::String(v.to_string()));
        match (ns, path) {
            ("instance", ["id"]) => field(&inst.id),
            ("instance", ["name" | "deployment_name"]) => field(&deployment),
            ("instance", ["organization_guid"]) => field(&inst.organization_guid),
            ("instance", ["space_guid"]) => field(&inst.space_guid),
            ("plan", ["id"]) => field(&plan.id),
            ("plan", ["name"]) => field(&plan.name),
            ("service", ["id"]) => field(&service.id),
            ("service", ["name"]) => field(&service.name),
            ("params", [first, rest @ ..]) => {
                let mut cur = params.get(*first)?;
                for seg in rest {
                    cur = cur.get(*seg)?;
                }
                Some(cur.clone())
            }
            _ => None,
        }
    };
    let at = |offset: usize| {
        let (line, column) = line_col(&template.text, offset);
        Location {
            file: template.path.clone(),
            line,
            column,
        }
    };
    let rendered = render(&template.text, &lookup).map_err(|(offset, expr)| {
        let hint = if expr.starts_with("params.") {
            format!(
                "set it in the instance's parameters ({}) or as a default in plan `{}`",
                doc.locate(&ip),
                plan.id
            )
        } else {
            "expected instance.id|name|organization_guid|space_guid, plan.id|name, service.id|name or params.NAME"
                .to_string()
        };
        SpecError::at(
            at(offset),
            &ip,
            format!(
                "`${{{expr}}}` has no value for instance {}: {hint}",
                inst.id
            ),
        )
    })?;
    stamp_manifest(&rendered, &deployment, service, plan, inst).map_err(|m| {
        SpecError::at(
            at(0),
            &ip,
            format!("manifest template rendered for instance {}: {m}", inst.id),
        )
    })
}

/// Substitutes `${ns.path}` for the namespaces above; leaves everything else as written,
/// including whole comment lines (the manifest is re-emitted without them anyway).
/// On a missing value, returns the byte offset of the `${` and the expression.
fn render(
    text: &str,
    lookup: &dyn Fn(&str, &[&str]) -> Option<Value>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            render_line(line, offset, lookup, &mut out)?;
        }
        offset += line.len();
    }
    Ok(out)
}

fn render_line(
    text: &str,
    offset: usize,
    lookup: &dyn Fn(&str, &[&str]) -> Option<Value>,
    out: &mut String,
) -> Result<(), (usize, String)> {
    let mut pos = 0;
    while let Some(found) = text[pos..].find("${") {
        let start = pos + found;
        out.push_str(&text[pos..start]);
        let Some(end) = text[start + 2..].find('}') else {
            out.push_str(&text[start..]);
            return Ok(());
        };
        let expr = text[start + 2..start + 2 + end].trim();
        let next = start + 2 + end + 1;
        let mut parts = expr.split('.');
        let ns = parts.next().unwrap_or("");
        if NAMESPACES.contains(&ns) {
            let path: Vec<&str> = parts.collect();
            let Some(value) = lookup(ns, &path) else {
                return Err((offset + start, expr.to_string()));
            };
            if is_whole_value(&text[..start], &text[next..]) {
                out.push_str(&yaml_scalar(&value));
            } else {
                match value {
                    Value::String(s) => out.push_str(&s),
                    v => out.push_str(&v.to_string()),
                }
            }
        } else {
            out.push_str(&text[start..next]);
        }
        pos = next;
    }
    out.push_str(&text[pos..]);
    Ok(())
}

/// Whether a placeholder is a whole YAML value on its line: after `key:` or `- `, with
/// nothing but blanks (or a comment) after it.
fn is_whole_value(before: &str, after: &str) -> bool {
    let b = before.trim_end();
    let lead_ok = b.ends_with(':') || b.trim_start() == "-" || b.ends_with(" -");
    let rest = after.trim();
    lead_ok
        && before.ends_with(' ')
        && (rest.is_empty() || rest.starts_with(" #") || rest.starts_with('#'))
}

/// A value written where YAML reads a whole scalar: strings stay plain when YAML would
/// read them back as the same string, and are double-quoted otherwise (`#`, `: `, `~`,
/// `true`, `123`, newlines...); other values as JSON, which YAML reads as flow.
fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let plain = YamlLoader::load_from_str(&format!("k: {s}"))
                .ok()
                .and_then(|d| d.into_iter().next())
                .is_some_and(|d| d["k"].as_str() == Some(s.as_str()));
            if plain && !s.contains('\n') {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        other => other.to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// Parses the rendered manifest, sets `name` (first key) and merges
/// `properties.blacksmith`, and writes it back as YAML.
fn stamp_manifest(
    text: &str,
    deployment: &str,
    service: &ServiceSpec,
    plan: &PlanSpec,
    inst: &InstanceSpec,
) -> Result<String, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| {
        format!("not valid YAML after rendering: {e} (lines counted in the rendered manifest)")
    })?;
    let Some(Yaml::Hash(h)) = docs.into_iter().next() else {
        return Err("expected a YAML map at the top (a BOSH deployment manifest)".into());
    };
    let s = |v: &str| Yaml::String(v.to_string());
    let mut out = yaml_rust2::yaml::Hash::new();
    out.insert(s("name"), s(deployment));
    for (k, v) in h {
        if k != s("name") {
            out.insert(k, v);
        }
    }
    let mut blacksmith = yaml_rust2::yaml::Hash::new();
    blacksmith.insert(s("service_id"), s(&service.id));
    blacksmith.insert(s("plan_id"), s(&plan.id));
    blacksmith.insert(s("instance_id"), s(&inst.id));
    let props = out
        .entry(s("properties"))
        .or_insert_with(|| Yaml::Hash(yaml_rust2::yaml::Hash::new()));
    match props {
        Yaml::Hash(p) => {
            p.insert(s("blacksmith"), Yaml::Hash(blacksmith));
        }
        _ => return Err("top-level `properties` must be a map".into()),
    }
    let mut text = String::new();
    YamlEmitter::new(&mut text)
        .dump(&Yaml::Hash(out))
        .map_err(|e| format!("cannot write it back as YAML: {e}"))?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(ns: &str, path: &[&str]) -> Option<Value> {
        match (ns, path) {
            ("instance", ["id"]) => Some(json!("abc")),
            ("params", ["size"]) => Some(json!(3)),
            ("params", ["name"]) => Some(json!("x")),
            _ => None,
        }
    }

    #[test]
    fn render_substitutes_only_its_namespaces() {
        let t = "a: ${instance.id}\nb: ${params.size}\nc: ((password))\nd: ${HOME} ${1}\ne: ${params.name}-${ instance.id }\n";
        let r = render(t, &lookup).unwrap();
        assert_eq!(
            r,
            "a: abc\nb: 3\nc: ((password))\nd: ${HOME} ${1}\ne: x-abc\n"
        );
    }

    #[test]
    fn whole_values_keep_their_meaning() {
        let look = |_: &str, path: &[&str]| -> Option<Value> {
            Some(match path {
                ["hash"] => json!("abc #123"),
                ["tilde"] => json!("~"),
                ["multi"] => json!("x\nvariables: []"),
                ["word"] => json!("redis"),
                ["num"] => json!("6379"),
                _ => return None,
            })
        };
        let t = "a: ${params.hash}\nb: ${params.tilde}\nc: ${params.multi}\nd: ${params.word}\ne: ${params.num}\n- ${params.hash}\nf: x-${params.hash}\n";
        let r = render(t, &look).unwrap();
        assert_eq!(
            r,
            "a: \"abc #123\"\nb: \"~\"\nc: \"x\\nvariables: []\"\nd: redis\ne: \"6379\"\n- \"abc #123\"\nf: x-abc #123\n"
        );
        let doc = &YamlLoader::load_from_str(&r.replace("- \"abc #123\"\n", "")).unwrap()[0];
        assert_eq!(doc["a"].as_str(), Some("abc #123"));
        assert_eq!(doc["b"].as_str(), Some("~"));
        assert_eq!(doc["c"].as_str(), Some("x\nvariables: []"));
        assert_eq!(doc["e"].as_str(), Some("6379"));
    }

    #[test]
    fn render_reports_missing_values_with_offsets() {
        let t = "a: 1\nb: ${params.nope}\n";
        let (off, expr) = render(t, &lookup).unwrap_err();
        assert_eq!(expr, "params.nope");
        assert_eq!(line_col(t, off), (2, 4));
        let (_, expr) = render("${plan.bogus}", &lookup).unwrap_err();
        assert_eq!(expr, "plan.bogus");
    }

    #[test]
    fn render_leaves_unterminated_text_and_comments() {
        assert_eq!(
            render("x ${instance.id", &lookup).unwrap(),
            "x ${instance.id"
        );
        assert_eq!(
            render("  # see ${params.nope}\na: ${instance.id}", &lookup).unwrap(),
            "  # see ${params.nope}\na: abc"
        );
    }

    #[test]
    fn template_params_are_the_names_rendered_lines_use() {
        let t = "a: ${params.maxmemory}\nb: ${ params.net.name }-${params.port}\n# ${params.commented}\nc: ${instance.id} ${params.}\nd: ${params.open\n";
        let used: Vec<String> = template_params(t).into_iter().collect();
        assert_eq!(used, ["maxmemory", "net", "port"]);
    }

    #[test]
    fn uuids() {
        assert!(is_uuid("6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01"));
        assert!(!is_uuid("6a1c2b9e3f0d4c7a9b1e2d5f8a7c4e01"));
        assert!(!is_uuid("6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e0z"));
        assert!(!is_uuid("not-a-uuid"));
    }
}
