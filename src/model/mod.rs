//! The InfraModel: every resource the spec declares, as a petgraph DAG.
//!
//! Edges run from a dependency to its dependent: implicit ones from `${TYPE.NAME.ATTR}`
//! references, explicit ones from `depends_on`. Building the model checks what needs the
//! whole picture (duplicate addresses, unknown types and attributes, dangling and
//! self-references, cycles) and reports each problem at its `file:line:column`.
//! No IO: it takes a loaded [`Spec`] and schemas, and returns data.

pub mod credentials;
pub mod environment;
pub mod expr;
pub mod foundation;
pub mod schema;

#[cfg(test)]
mod tests;

pub use expr::{Expr, Lookup, PValue, Reference};
pub use schema::{AttrKind, AttrSchema, DiffLine, ProviderDiff, ResourceSchema, Schemas};

use crate::spec::{
    DocumentBody, FieldPath, Lifecycle, Location, ResourceSpec, Spec, SpecError, SpecErrors,
};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// A resource address, `TYPE.NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub ty: String,
    pub name: String,
}

impl Address {
    pub fn new(ty: &str, name: &str) -> Address {
        Address {
            ty: ty.to_string(),
            name: name.to_string(),
        }
    }

    /// Parses `TYPE.NAME`.
    ///
    /// # Errors
    /// A string that is not two non-empty dot-separated parts of letters, digits, `_`, `-`.
    pub fn parse(s: &str) -> Result<Address, String> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        match s.split_once('.') {
            Some((t, n)) if ok(t) && ok(n) => Ok(Address::new(t, n)),
            _ => Err(format!(
                "`{s}` is not a resource address: expected TYPE.NAME, e.g. null_resource.base"
            )),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ty, self.name)
    }
}

/// One declared resource, ready to plan.
#[derive(Debug, Clone)]
pub struct Resource {
    pub address: Address,
    pub provider: String,
    pub attributes: BTreeMap<String, Expr>,
    /// Every address this resource depends on (explicit and through references), sorted.
    pub dependencies: Vec<Address>,
    pub lifecycle: Lifecycle,
    /// Where the resource comes from when not a spec file (`broker`); plans mark it.
    pub origin: Option<String>,
}

/// A provider instance the spec configures: a `providers:` entry, or a Foundation's
/// `director` (`bosh`) or `vault` block. `Debug` never shows setting values (they may be
/// secrets).
#[derive(Clone, PartialEq)]
pub struct ProviderInstance {
    /// The provider (`bosh`).
    pub provider: String,
    /// The alias (`east` in `bosh.east`); `None` for the default instance.
    pub alias: Option<String>,
    /// The provider's own settings, untyped here: the provider types them.
    pub settings: serde_json::Map<String, Value>,
    /// Where it was declared, for errors (message empty).
    pub origin: SpecError,
}

impl fmt::Debug for ProviderInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderInstance")
            .field("name", &self.name())
            .field("keys", &self.settings.keys().collect::<Vec<_>>())
            .field("origin", &self.origin.path)
            .finish()
    }
}

impl ProviderInstance {
    /// The instance name recorded with resources: `bosh` or `bosh.east`.
    #[must_use]
    pub fn name(&self) -> String {
        instance_name(&self.provider, self.alias.as_deref())
    }

    /// A located error about this instance (a setting the provider refuses).
    #[must_use]
    pub fn error(&self, message: impl Into<String>) -> SpecError {
        SpecError {
            message: format!("provider instance `{}`: {}", self.name(), message.into()),
            ..self.origin.clone()
        }
    }
}

/// `provider` or `provider.alias`.
#[must_use]
pub fn instance_name(provider: &str, alias: Option<&str>) -> String {
    match alias {
        Some(a) => format!("{provider}.{a}"),
        None => provider.to_string(),
    }
}

/// Whether `a` is a usable alias: lowercase letters, digits, `_` and `-`.
fn valid_alias(a: &str) -> bool {
    a.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && a.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A named value computed from applied resources (`outputs:` of a `Resources` document,
/// or an Environment's `vpc_id`, `cluster_endpoint`, ...), read by `anvil output`.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    /// Its value: references resolve against what the state records.
    pub value: Expr,
    pub description: String,
}

/// The resource graph. Edges run dependency → dependent.
#[derive(Debug, Default)]
pub struct Model {
    pub graph: DiGraph<Resource, ()>,
    index: HashMap<Address, NodeIndex>,
    /// The provider instances the spec configures (`providers:` blocks, Foundations'
    /// `director`/`vault`, Environments' `aws.NAME`), each once.
    pub providers: Vec<ProviderInstance>,
    /// The outputs, sorted by name.
    pub outputs: Vec<Output>,
}

impl Model {
    pub fn get(&self, addr: &Address) -> Option<&Resource> {
        self.index.get(addr).map(|i| &self.graph[*i])
    }

    pub fn contains(&self, addr: &Address) -> bool {
        self.index.contains_key(addr)
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Resources sorted by address.
    pub fn resources(&self) -> Vec<&Resource> {
        let mut v: Vec<&Resource> = self.graph.node_weights().collect();
        v.sort_by(|a, b| a.address.cmp(&b.address));
        v
    }

    /// Resources in dependency order (dependencies first); among independent resources
    /// the order of declaration, so the order is deterministic.
    pub fn topo_order(&self) -> Vec<&Resource> {
        let mut indeg: Vec<usize> = self
            .graph
            .node_indices()
            .map(|n| self.graph.neighbors_directed(n, petgraph::Incoming).count())
            .collect();
        let mut ready: std::collections::VecDeque<NodeIndex> = self
            .graph
            .node_indices()
            .filter(|n| indeg[n.index()] == 0)
            .collect();
        let mut out = Vec::with_capacity(self.len());
        while let Some(n) = ready.pop_front() {
            out.push(&self.graph[n]);
            for m in self.graph.neighbors_directed(n, petgraph::Outgoing) {
                indeg[m.index()] -= 1;
                if indeg[m.index()] == 0 {
                    ready.push_back(m);
                }
            }
        }
        out
    }

    /// Addresses that depend on `addr`, directly.
    pub fn dependents(&self, addr: &Address) -> Vec<&Address> {
        match self.index.get(addr) {
            Some(i) => self
                .graph
                .neighbors_directed(*i, petgraph::Outgoing)
                .map(|n| &self.graph[n].address)
                .collect(),
            None => vec![],
        }
    }

    /// Builds a model from already-built resources (e.g. from a saved plan), checking
    /// only that dependencies exist and the graph is acyclic.
    ///
    /// # Errors
    /// A duplicate address, a dangling dependency or a cycle.
    pub fn from_resources(resources: Vec<Resource>) -> Result<Model, String> {
        let mut model = Model::default();
        for r in resources {
            if model.index.contains_key(&r.address) {
                return Err(format!("duplicate address {}", r.address));
            }
            let a = r.address.clone();
            let i = model.graph.add_node(r);
            model.index.insert(a, i);
        }
        model.link().map_err(|e| e.join("; "))?;
        Ok(model)
    }

    fn link(&mut self) -> Result<(), Vec<String>> {
        let mut edges = Vec::new();
        let mut errs = Vec::new();
        for n in self.graph.node_indices() {
            for d in &self.graph[n].dependencies {
                match self.index.get(d) {
                    Some(&di) => edges.push((di, n)),
                    None => errs.push(format!(
                        "{} depends on {d}, which is not declared",
                        self.graph[n].address
                    )),
                }
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        for (a, b) in edges {
            self.graph.add_edge(a, b, ());
        }
        let cycles = self.cycles();
        if cycles.is_empty() {
            Ok(())
        } else {
            Err(cycles.iter().map(|c| describe_cycle(c)).collect())
        }
    }

    /// Every dependency cycle, each as the addresses along it (first repeated at the end
    /// is implied).
    fn cycles(&self) -> Vec<Vec<Address>> {
        let mut out = Vec::new();
        for scc in petgraph::algo::tarjan_scc(&self.graph) {
            if scc.len() < 2 {
                continue;
            }
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let start = *scc
                .iter()
                .min_by_key(|n| &self.graph[**n].address)
                .unwrap_or(&scc[0]);
            // Breadth-first from `start` back to `start` inside the component.
            let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
            let mut queue = std::collections::VecDeque::from([start]);
            let mut end = None;
            'bfs: while let Some(n) = queue.pop_front() {
                for e in self.graph.edges_directed(n, petgraph::Outgoing) {
                    let m = e.target();
                    if !members.contains(&m) {
                        continue;
                    }
                    if m == start {
                        end = Some(n);
                        break 'bfs;
                    }
                    if let std::collections::hash_map::Entry::Vacant(v) = prev.entry(m) {
                        v.insert(n);
                        queue.push_back(m);
                    }
                }
            }
            let mut path = Vec::new();
            let mut cur = end;
            while let Some(n) = cur {
                path.push(self.graph[n].address.clone());
                cur = if n == start {
                    None
                } else {
                    prev.get(&n).copied()
                };
            }
            path.reverse();
            out.push(path);
        }
        out.sort();
        out
    }
}

/// Describes a cycle found along dependency → dependent edges as a chain of
/// "depends on" arrows, starting at its first address.
fn describe_cycle(c: &[Address]) -> String {
    let mut chain: Vec<String> = Vec::with_capacity(c.len() + 1);
    if let Some((first, rest)) = c.split_first() {
        chain.push(first.to_string());
        chain.extend(rest.iter().rev().map(|a| a.to_string()));
        chain.push(first.to_string());
    }
    format!(
        "dependency cycle ({} addresses; `->` means \"depends on\"): {}; break it by removing one of these references or depends_on entries",
        c.len(),
        chain.join(" -> ")
    )
}

/// Where a resource came from in its document: `resources[i]` written by hand, or
/// generated from a Foundation's `instances[i]`.
#[derive(Debug, Clone, Copy)]
enum Origin {
    Resource(usize),
    Instance(usize),
    /// Generated from an Environment document as a whole.
    Environment,
}

impl Origin {
    fn path(self) -> FieldPath {
        match self {
            Origin::Resource(i) => FieldPath::root().key("resources").index(i),
            Origin::Instance(i) => FieldPath::root().key("instances").index(i),
            Origin::Environment => FieldPath::root(),
        }
    }
}

/// Where a reference or `depends_on` entry was written: (resource, what).
enum Site {
    Attr(Origin, String),
    Dep(Origin, usize),
}

impl Site {
    fn path(&self) -> FieldPath {
        match self {
            Site::Attr(o, name) => o.path().key("attributes").key(name.as_str()),
            Site::Dep(o, j) => o.path().key("depends_on").index(*j),
        }
    }
}

/// A field path built only when an error needs it.
struct Lazy<F>(F);

impl<F: Fn() -> FieldPath> Lazy<F> {
    fn get(&self) -> FieldPath {
        (self.0)()
    }
}

/// Collects the provider instances of every document: `providers:` entries and each
/// Foundation's `director`/`vault` blocks. The same instance configured twice with the
/// same settings counts once; with different settings it is an error naming both places.
fn collect_providers(
    spec: &Spec,
    schemas: &Schemas,
    out: &mut Vec<ProviderInstance>,
    errors: &mut Vec<SpecError>,
) {
    let known: BTreeSet<&str> = schemas.values().map(|s| s.provider.as_str()).collect();
    let mut add = |inst: ProviderInstance, errors: &mut Vec<SpecError>, hint: &str| match out
        .iter()
        .find(|o| o.name() == inst.name())
    {
        Some(first) if first.settings != inst.settings => {
            let at = first
                .origin
                .location
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            errors.push(SpecError {
                message: format!(
                    "provider instance `{}` is configured differently at {at}: {hint}",
                    inst.name()
                ),
                ..inst.origin
            });
        }
        Some(_) => {}
        None => out.push(inst),
    };
    for doc in &spec.documents {
        let empty = BTreeMap::new();
        let block = match &doc.body {
            DocumentBody::Resources(r) => &r.providers,
            DocumentBody::Foundation(f) => &f.providers,
            DocumentBody::Environment(_) => &empty,
        };
        for (name, entries) in block {
            let ppath = FieldPath::root().key("providers").key(name);
            if !known.contains(name.as_str()) {
                errors.push(doc.error_at(
                    &ppath,
                    format!(
                        "unknown provider `{name}`: {}expected one of {}",
                        crate::spec::did_you_mean_hint(name, known.iter().copied()),
                        known.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                ));
                continue;
            }
            for (j, entry) in entries.entries() {
                let epath = match j {
                    Some(j) => ppath.index(j),
                    None => ppath.clone(),
                };
                let mut settings: serde_json::Map<String, Value> =
                    entry.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let alias = match settings.remove("alias") {
                    None => None,
                    Some(Value::String(a)) if valid_alias(&a) => Some(a),
                    Some(other) => {
                        let apath = epath.key("alias");
                        errors.push(doc.error_at(
                            &apath,
                            format!("alias {other} is not usable: write lowercase letters, digits, `_` and `-`, e.g. `east`"),
                        ));
                        continue;
                    }
                };
                add(
                    ProviderInstance {
                        provider: name.clone(),
                        alias,
                        settings,
                        origin: doc.error_at(&epath, ""),
                    },
                    errors,
                    "give each entry its own `alias`",
                );
            }
        }
        if let DocumentBody::Foundation(f) = &doc.body {
            for inst in foundation::provider_instances(f) {
                let path = FieldPath::root().key(if inst.provider == "bosh" {
                    "director"
                } else {
                    "vault"
                });
                add(
                    ProviderInstance {
                        origin: doc.error_at(&path, ""),
                        ..inst
                    },
                    errors,
                    "several Foundations in one workspace with different Directors or Vaults each need an `alias` (their resources then use `bosh.ALIAS` and `vault.ALIAS`)",
                );
            }
        }
        if let DocumentBody::Environment(e) = &doc.body {
            if let Some((alias, settings)) = environment::provider_instance(e) {
                let path = FieldPath::root().key("region");
                add(
                    ProviderInstance {
                        provider: "aws".into(),
                        alias: Some(alias),
                        settings,
                        origin: doc.error_at(&path, ""),
                    },
                    errors,
                    "two Environments of one workspace have the same name: give each its own `name:`",
                );
            }
        }
    }
}

/// Builds and checks the model of a loaded spec.
///
/// # Errors
/// Every problem found, each located at its `file:line:column`.
pub fn build(spec: &Spec, schemas: &Schemas) -> Result<Model, SpecErrors> {
    let mut errors: Vec<SpecError> = Vec::new();
    let t0 = std::time::Instant::now();
    let mut model = Model::default();
    // Where each address was declared: (document index, field path). Locations are
    // computed only for errors, which keeps big specs fast.
    let mut seen: HashMap<Address, (usize, Origin)> = HashMap::new();
    // Per node: where its depends_on entries and references were written, for errors.
    let mut sites: Vec<Vec<(Address, usize, Site)>> = Vec::new();

    let err = |loc: Option<Location>, path: &FieldPath, message: String| SpecError {
        file: loc.as_ref().map(|l| l.file.clone()),
        location: loc,
        path: path.to_string(),
        message,
    };

    collect_providers(spec, schemas, &mut model.providers, &mut errors);
    let instances: BTreeSet<String> = model.providers.iter().map(ProviderInstance::name).collect();

    // Outputs with where they were declared: (document, field path, value).
    let mut outputs: Vec<(usize, FieldPath, String, Value, String)> = Vec::new();
    for (di, doc) in spec.documents.iter().enumerate() {
        let generated: Vec<(usize, ResourceSpec)>;
        let generated_env: Vec<ResourceSpec>;
        let list: Box<dyn Iterator<Item = (Origin, &ResourceSpec)>> = match &doc.body {
            DocumentBody::Resources(body) => {
                for (name, o) in &body.outputs {
                    let p = FieldPath::root().key("outputs").key(name.as_str());
                    outputs.push((di, p, name.clone(), o.value.clone(), o.description.clone()));
                }
                Box::new(
                    body.resources
                        .iter()
                        .enumerate()
                        .map(|(i, r)| (Origin::Resource(i), r)),
                )
            }
            DocumentBody::Foundation(f) => {
                let n = foundation::normalise(doc, f, &mut errors);
                generated = n.resources;
                Box::new(generated.iter().map(|(i, r)| (Origin::Instance(*i), r)))
            }
            DocumentBody::Environment(e) => {
                let n = environment::normalise(doc, e, &mut errors);
                for (name, value, description) in n.outputs {
                    outputs.push((
                        di,
                        FieldPath::root(),
                        name,
                        Value::String(value),
                        description.to_string(),
                    ));
                }
                generated_env = n.resources;
                Box::new(generated_env.iter().map(|r| (Origin::Environment, r)))
            }
        };
        for (i, rs) in list {
            let rpath = i.path();
            let address = Address::new(&rs.ty, &rs.name);
            if let Some((fd, fp)) = seen.get(&address) {
                let at = format!(
                    " (first declared at {})",
                    spec.documents[*fd].locate(&fp.path())
                );
                errors.push(err(Some(doc.locate(&rpath.key("name"))), &rpath.key("name"), format!("duplicate address {address}{at}: give each resource of a type a distinct name")));
                continue;
            }
            seen.insert(address.clone(), (di, i));
            let Some(schema) = schemas.get(&rs.ty) else {
                let known: Vec<&str> = schemas.keys().map(String::as_str).collect();
                errors.push(err(
                    Some(doc.locate(&rpath.key("type"))),
                    &rpath.key("type"),
                    format!(
                        "unknown resource type `{}`: {}expected one of {}",
                        rs.ty,
                        crate::spec::did_you_mean_hint(&rs.ty, known.iter().copied()),
                        known.join(", ")
                    ),
                ));
                continue;
            };
            let provider = match &rs.provider {
                None => schema.provider.clone(),
                Some(p) => {
                    let (kind, alias) = match p.split_once('.') {
                        Some((k, a)) => (k, Some(a)),
                        None => (p.as_str(), None),
                    };
                    let ppath = rpath.key("provider");
                    if kind != schema.provider {
                        errors.push(err(
                            Some(doc.locate(&ppath)),
                            &ppath,
                            format!(
                                "{} is managed by the `{}` provider: write `provider: {}` or `provider: {}.ALIAS`, not `{p}`",
                                rs.ty, schema.provider, schema.provider, schema.provider
                            ),
                        ));
                        continue;
                    }
                    if alias.is_some() && !instances.contains(p) {
                        let known: Vec<&str> = instances
                            .iter()
                            .filter(|n| n.starts_with(&format!("{kind}.")))
                            .map(String::as_str)
                            .collect();
                        errors.push(err(
                            Some(doc.locate(&ppath)),
                            &ppath,
                            format!(
                                "no provider instance `{p}` is configured{}: {}add an entry with `alias: {}` under `providers: {{ {kind}: [...] }}` in a document of this workspace",
                                if known.is_empty() { String::new() } else { format!(" (configured: {})", known.join(", ")) },
                                crate::spec::did_you_mean_hint(p, known.iter().copied()),
                                alias.unwrap_or_default()
                            ),
                        ));
                        continue;
                    }
                    p.clone()
                }
            };
            let mut attributes = BTreeMap::new();
            let mut site = Vec::new();
            let apath = rpath.key("attributes");
            for (name, value) in &rs.attributes {
                let p = Lazy(|| apath.key(name));
                let Some(a) = schema.attributes.get(name) else {
                    let known: Vec<&str> = schema.attributes.keys().map(String::as_str).collect();
                    errors.push(err(
                        Some(doc.locate(&p.get())),
                        &p.get(),
                        format!(
                            "unknown attribute `{name}` for {}: {}expected one of {}",
                            rs.ty,
                            crate::spec::did_you_mean_hint(name, known.iter().copied()),
                            known.join(", ")
                        ),
                    ));
                    continue;
                };
                if !a.kind.accepts(value) {
                    errors.push(err(
                        Some(doc.locate(&p.get())),
                        &p.get(),
                        format!("expected {}, found {}", a.kind.describe(), json_kind(value)),
                    ));
                    continue;
                }
                match Expr::parse(value) {
                    Ok(e) => {
                        let mut refs = Vec::new();
                        e.references(&mut refs);
                        for r in refs {
                            check_ref_attr(&r, schemas, &mut errors, doc, &p);
                            site.push((r.target, di, Site::Attr(i, name.clone())));
                        }
                        attributes.insert(name.clone(), e);
                    }
                    Err((sub, e)) => {
                        let p = p.get();
                        let full = if sub.is_empty() {
                            p.to_string()
                        } else if sub.starts_with('[') {
                            format!("{p}{sub}")
                        } else {
                            format!("{p}.{sub}")
                        };
                        errors.push(SpecError {
                            file: Some(doc.file.clone()),
                            location: Some(doc.locate(&p)),
                            path: full,
                            message: e.0,
                        });
                    }
                }
            }
            for (name, a) in &schema.attributes {
                if a.required && !rs.attributes.contains_key(name) {
                    errors.push(err(
                        Some(doc.locate(&apath)),
                        &apath,
                        format!("missing required attribute `{name}` for {}", rs.ty),
                    ));
                }
            }
            for (j, ic) in rs.lifecycle.ignore_changes.iter().enumerate() {
                let top = ic.split('.').next().unwrap_or(ic);
                if ic != "all" && !schema.attributes.contains_key(top) {
                    let p = rpath.key("lifecycle").key("ignore_changes").index(j);
                    errors.push(err(
                        Some(doc.locate(&p)),
                        &p,
                        format!(
                            "unknown attribute `{ic}` for {}: {}name an attribute, or `all`",
                            rs.ty,
                            crate::spec::did_you_mean_hint(
                                top,
                                schema.attributes.keys().map(String::as_str)
                            )
                        ),
                    ));
                }
            }
            let mut deps = BTreeSet::new();
            for (j, d) in rs.depends_on.iter().enumerate() {
                let p = rpath.key("depends_on").index(j);
                match Address::parse(d) {
                    Ok(a) => {
                        site.push((a.clone(), di, Site::Dep(i, j)));
                        deps.insert(a);
                    }
                    Err(m) => errors.push(err(Some(doc.locate(&p)), &p, m)),
                }
            }
            for (a, _, _) in &site {
                deps.insert(a.clone());
            }
            let node = model.graph.add_node(Resource {
                address: address.clone(),
                provider,
                attributes,
                dependencies: deps.into_iter().collect(),
                lifecycle: rs.lifecycle.clone(),
                origin: rs.origin.clone(),
            });
            model.index.insert(address, node);
            sites.push(site);
        }
    }

    model.outputs = build_outputs(spec, &outputs, &seen, &mut errors);
    tracing::debug!(elapsed = ?t0.elapsed(), "model: resources read");
    // Dangling and self references, located where they were written. Suggestions scan
    // every declared address, so only the first few dangling ones get one (a spec with
    // thousands of them would otherwise cost thousands of full scans).
    let mut suggestions_left = MAX_SUGGESTIONS;
    for n in model.graph.node_indices() {
        let me = model.graph[n].address.clone();
        let mut ok = Vec::new();
        for (target, di, what) in &sites[n.index()] {
            let what = &what.path();
            let loc = || Some(spec.documents[*di].locate(what));
            if *target == me {
                errors.push(err(loc(), what, format!("{me} depends on itself: a resource cannot reference or depend on its own address")));
            } else if !model.index.contains_key(target) && !seen.contains_key(target) {
                let hint = if suggestions_left > 0 {
                    suggestions_left -= 1;
                    nearest_address(target, seen.keys())
                        .map(|a| format!(" (did you mean \"{a}\"?)"))
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                errors.push(err(
                    loc(),
                    what,
                    format!("{target} is not declared{hint}: declare it, or fix the address"),
                ));
            } else {
                ok.push(target.clone());
            }
        }
        let r = &mut model.graph[n];
        r.dependencies.retain(|d| ok.contains(d));
    }
    if !errors.is_empty() {
        // Report in the order the user reads the files.
        errors.sort_by_key(|e| {
            e.location
                .as_ref()
                .map(|l| (l.file.clone(), l.line, l.column))
        });
        return Err(SpecErrors(errors));
    }
    tracing::debug!(elapsed = ?t0.elapsed(), "model: references checked");
    if let Err(cycles) = model.link() {
        for c in cycles {
            // Locate the cycle at its first member.
            let first = c
                .split(": ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|a| Address::parse(a).ok());
            let loc = first
                .and_then(|a| seen.get(&a))
                .map(|(d, i)| spec.documents[*d].locate(&i.path()));
            errors.push(SpecError {
                file: loc.as_ref().map(|l| l.file.clone()),
                location: loc,
                path: String::new(),
                message: c,
            });
        }
        return Err(SpecErrors(errors));
    }
    Ok(model)
}

/// Checks and parses the outputs: names usable on a command line and unique, values
/// that parse and reference declared resources. Sorted by name.
fn build_outputs<T>(
    spec: &Spec,
    decls: &[(usize, FieldPath, String, Value, String)],
    seen: &HashMap<Address, T>,
    errors: &mut Vec<SpecError>,
) -> Vec<Output> {
    let mut out: Vec<Output> = Vec::new();
    let mut first: HashMap<&str, (usize, &FieldPath)> = HashMap::new();
    for (di, path, name, value, description) in decls {
        let doc = &spec.documents[*di];
        let ok_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok_name {
            errors.push(doc.error_at(
                path,
                format!("output name `{name}`: use letters, digits, `_`, `-` and `.`, starting with a letter or `_`"),
            ));
            continue;
        }
        if let Some((fd, fp)) = first.get(name.as_str()) {
            errors.push(doc.error_at(
                path,
                format!(
                    "duplicate output `{name}` (first declared at {}): output names are unique in a workspace (Environments with their own `name:` prefix theirs with it)",
                    spec.documents[*fd].locate(fp)
                ),
            ));
            continue;
        }
        first.insert(name, (*di, path));
        let vpath = if path.is_empty() {
            path.clone()
        } else {
            path.key("value")
        };
        let expr = match Expr::parse(value) {
            Ok(e) => e,
            Err((_, e)) => {
                errors.push(doc.error_at(&vpath, e.0));
                continue;
            }
        };
        let mut refs = Vec::new();
        expr.references(&mut refs);
        let mut dangling = false;
        for r in refs {
            if !seen.contains_key(&r.target) {
                let hint = nearest_address(&r.target, seen.keys())
                    .map(|a| format!(" (did you mean \"{a}\"?)"))
                    .unwrap_or_default();
                errors.push(doc.error_at(
                    &vpath,
                    format!(
                        "output `{name}`: {} is not declared{hint}: declare it, or fix the address",
                        r.target
                    ),
                ));
                dangling = true;
            }
        }
        if !dangling {
            out.push(Output {
                name: name.clone(),
                value: expr,
                description: description.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// How many dangling references get a "did you mean" (each costs a scan of all addresses).
const MAX_SUGGESTIONS: usize = 20;

/// The declared address nearest to an undeclared one: by name among addresses of the
/// same type (`null_resource.bsae` → `null_resource.base`); when no address has that
/// type, by name among the addresses of the nearest declared type
/// (`null_resourse.base` → `null_resource.base`). Names are compared alone, so a shared
/// type prefix never makes unrelated names look alike.
fn nearest_address<'a>(
    target: &Address,
    declared: impl Iterator<Item = &'a Address> + Clone,
) -> Option<String> {
    let ty = if declared.clone().any(|a| a.ty == target.ty) {
        target.ty.as_str()
    } else {
        let types: BTreeSet<&str> = declared.clone().map(|a| a.ty.as_str()).collect();
        crate::spec::did_you_mean(&target.ty, types)?
    };
    let names: Vec<&str> = declared
        .filter(|a| a.ty == ty)
        .map(|a| a.name.as_str())
        .collect();
    let name = if ty != target.ty && names.contains(&target.name.as_str()) {
        target.name.as_str()
    } else {
        crate::spec::did_you_mean(&target.name, names)?
    };
    Some(format!("{ty}.{name}"))
}

fn check_ref_attr<F: Fn() -> FieldPath>(
    r: &Reference,
    schemas: &Schemas,
    errors: &mut Vec<SpecError>,
    doc: &crate::spec::Document,
    path: &Lazy<F>,
) {
    let Some(ts) = schemas.get(&r.target.ty) else {
        return;
    };
    let attr = &r.attr[0];
    if ts.outputs.contains_key(attr) {
        return;
    }
    if ts.attributes.get(attr).is_some_and(|a| !a.sensitive) {
        return;
    }
    let p = &path.get();
    let loc = doc.locate(p);
    match ts.attributes.get(attr) {
        Some(a) if a.sensitive => errors.push(SpecError {
            file: Some(loc.file.clone()),
            location: Some(loc),
            path: p.to_string(),
            message: format!("${{{r}}}: `{attr}` of {} is sensitive and is not kept in state, so it cannot be referenced", r.target.ty),
        }),
        Some(_) => {}
        None => {
            let mut known: Vec<&str> = ts.attributes.keys().map(String::as_str).collect();
            known.extend(ts.outputs.keys().map(String::as_str));
            known.sort();
            errors.push(SpecError {
                file: Some(loc.file.clone()),
                location: Some(loc),
                path: p.to_string(),
                message: format!(
                    "${{{r}}}: {} has no attribute `{attr}`: {}expected one of {}",
                    r.target.ty,
                    crate::spec::did_you_mean_hint(attr, known.iter().copied()),
                    known.join(", ")
                ),
            });
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}
