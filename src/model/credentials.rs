//! Credentials templates: the `credentials:` map of a catalog plan, rendered for one
//! binding (design §7, issue 9).
//!
//! A template is any map whose strings may hold `${…}` expressions (see
//! [`crate::spec::PlanSpec::credentials`]): the instance, plan, service and parameters as
//! in manifest templates, `${binding.id}`, the deployment's VMs from the Director
//! (`${jobs.GROUP.ip}`, `.ips`, `.dns`, `.hosts`, `.N.ip`, `.N.dns`, `.N.ips`) and
//! `${secret.NAME}`, a secret generated once per instance by the caller. Unlike manifest
//! templates, where BOSH's and the shell's `${…}` must pass through, every `${…}` here is
//! anvil's: an unknown namespace is an error (a misspelt `${secrets.pw}` would otherwise
//! hand an application the literal text), and `$${` writes a literal `${`.
//!
//! No IO and no randomness: the VMs and the secrets are given as plain data.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::{PlanSpec, ServiceSpec};

/// The namespaces a credentials template may use.
pub const NAMESPACES: &[&str] = &[
    "instance", "plan", "service", "params", "binding", "jobs", "secret",
];

/// What the expressions of each namespace may be, for error messages.
const EXPECTED: &str = "expected instance.id|name|deployment_name|organization_guid|space_guid, \
plan.id|name, service.id|name, params.NAME, binding.id, jobs.GROUP.ip|ips|dns|hosts, \
jobs.GROUP.N.ip|ips|dns or secret.NAME (write `$${` for a literal `${`)";

/// One VM of a deployment, as the Director reports it (`vms?format=full`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    /// The instance group (`job_name`).
    pub group: String,
    /// The index within the group.
    pub index: u64,
    /// Whether the Director marks it as its group's bootstrap VM.
    pub bootstrap: bool,
    /// Its IP addresses, one per network.
    pub ips: Vec<String>,
    /// Its BOSH DNS names.
    pub dns: Vec<String>,
}

impl Vm {
    /// One VM from a line of the Director's `vms?format=full` result (`job_name`,
    /// `index`, `bootstrap`, `ips`, `dns`); `None` for a line that is not a VM.
    #[must_use]
    pub fn from_director(v: &Value) -> Option<Vm> {
        let strings = |key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(Vm {
            group: v.get("job_name")?.as_str()?.to_string(),
            index: v.get("index").and_then(Value::as_u64).unwrap_or(0),
            bootstrap: v.get("bootstrap").and_then(Value::as_bool).unwrap_or(false),
            ips: strings("ips"),
            dns: strings("dns"),
        })
    }
}

/// What one binding's credentials are rendered from.
#[derive(Debug, Clone, Copy)]
pub struct BindContext<'a> {
    pub service: &'a ServiceSpec,
    pub plan: &'a PlanSpec,
    pub instance_id: &'a str,
    pub organization_guid: &'a str,
    pub space_guid: &'a str,
    /// The plan's default parameters overridden by the instance's.
    pub params: &'a BTreeMap<String, Value>,
    pub binding_id: &'a str,
    /// The deployment's VMs.
    pub vms: &'a [Vm],
    /// The instance's generated secrets by name (every [`secret_names`] of the template).
    pub secrets: &'a BTreeMap<String, String>,
}

/// A template that cannot be rendered: which key, which expression, why, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credentials of plan `{plan}`, key `{key}`: `${{{expr}}}` {problem}")]
pub struct CredentialError {
    /// The plan whose template it is.
    pub plan: String,
    /// Where in the template, e.g. `hosts[0]` or `uri`.
    pub key: String,
    /// The expression inside `${…}`.
    pub expr: String,
    /// What is wrong and what to do.
    pub problem: String,
}

/// The names of the `${secret.NAME}` a template uses (the secrets to generate).
#[must_use]
pub fn secret_names(template: &BTreeMap<String, Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk_exprs(template, &mut |_, expr| {
        let mut parts = expr.split('.').map(str::trim);
        if parts.next() == Some("secret") {
            if let Some(name) = parts.next().filter(|n| valid_secret_name(n)) {
                out.insert(name.to_string());
            }
        }
    });
    out
}

/// The parameter names a template uses (`${params.NAME…}`, first segment), so instance
/// parameters used only by the credentials are not reported as unused.
#[must_use]
pub fn param_names(template: &BTreeMap<String, Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk_exprs(template, &mut |_, expr| {
        let mut parts = expr.split('.').map(str::trim);
        if parts.next() == Some("params") {
            if let Some(name) = parts.next().filter(|n| !n.is_empty()) {
                out.insert(name.to_string());
            }
        }
    });
    out
}

/// Checks what can be checked without an instance: every expression has a known
/// namespace and shape. Returns `(key path, message)` per problem, the key path as
/// segments (map keys and list indices) so the caller can locate it in the spec.
#[must_use]
pub fn check(template: &BTreeMap<String, Value>) -> Vec<(Vec<Segment>, String)> {
    let mut out = Vec::new();
    walk_exprs(template, &mut |path, expr| {
        if let Err(problem) = check_expr(expr) {
            out.push((path.to_vec(), format!("`${{{expr}}}` {problem}")));
        }
    });
    out
}

/// One step of a path into a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

fn path_text(path: &[Segment]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Segment::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn valid_secret_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The shape check of one expression (no data needed).
fn check_expr(expr: &str) -> Result<(), String> {
    let parts: Vec<&str> = expr.split('.').map(str::trim).collect();
    let ok = match parts.as_slice() {
        ["instance", "id" | "name" | "deployment_name" | "organization_guid" | "space_guid"]
        | ["plan" | "service", "id" | "name"]
        | ["binding", "id"] => true,
        ["params", name, ..] => !name.is_empty(),
        ["secret", name] => valid_secret_name(name),
        ["jobs", group, "ip" | "ips" | "dns" | "hosts"] => !group.is_empty(),
        ["jobs", group, n, "ip" | "ips" | "dns"] => !group.is_empty() && n.parse::<u64>().is_ok(),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let hint = match parts.first() {
        Some(ns) if NAMESPACES.contains(ns) => format!("is not a valid `{ns}` expression"),
        Some(ns) => match crate::spec::did_you_mean(ns, NAMESPACES.iter().copied()) {
            Some(near) => format!("uses the unknown namespace `{ns}` (did you mean \"{near}\"?)"),
            None => format!("uses the unknown namespace `{ns}`"),
        },
        None => "is empty".to_string(),
    };
    Err(format!("{hint}: {EXPECTED}"))
}

/// Renders the plan's credentials template for one binding.
///
/// # Errors
/// An expression that is malformed or has no value (a parameter nobody set, an instance
/// group the deployment lacks, a VM index out of range, a VM without DNS names, a secret
/// not given); the error names the key, the expression and what to do.
pub fn render(
    template: &BTreeMap<String, Value>,
    ctx: &BindContext<'_>,
) -> Result<Map<String, Value>, CredentialError> {
    let mut out = Map::new();
    let mut path = Vec::new();
    for (k, v) in template {
        path.push(Segment::Key(k.clone()));
        out.insert(k.clone(), render_value(v, ctx, &mut path)?);
        path.pop();
    }
    Ok(out)
}

fn render_value(
    v: &Value,
    ctx: &BindContext<'_>,
    path: &mut Vec<Segment>,
) -> Result<Value, CredentialError> {
    Ok(match v {
        Value::String(s) => {
            render_str(s, &|expr| resolve(expr, ctx)).map_err(|(expr, problem)| {
                CredentialError {
                    plan: ctx.plan.id.clone(),
                    key: path_text(path),
                    expr,
                    problem,
                }
            })?
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(Segment::Index(i));
                out.push(render_value(item, ctx, path)?);
                path.pop();
            }
            Value::Array(out)
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, item) in m {
                path.push(Segment::Key(k.clone()));
                out.insert(k.clone(), render_value(item, ctx, path)?);
                path.pop();
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// One piece of a template string.
enum Piece<'a> {
    Text(&'a str),
    Expr(&'a str),
}

/// Splits a string into text and `${…}` expressions; `$${` is text `${`, and an
/// unterminated `${` is text.
fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(found) = s[pos..].find("${") {
        let start = pos + found;
        if start > 0 && s.as_bytes()[start - 1] == b'$' {
            // `$${`: the text before the first `$`, then a literal `${`.
            out.push(Piece::Text(&s[pos..start - 1]));
            out.push(Piece::Text("${"));
            pos = start + 2;
            continue;
        }
        let Some(end) = s[start + 2..].find('}') else {
            break;
        };
        out.push(Piece::Text(&s[pos..start]));
        out.push(Piece::Expr(s[start + 2..start + 2 + end].trim()));
        pos = start + 2 + end + 1;
    }
    out.push(Piece::Text(&s[pos..]));
    out.retain(|p| !matches!(p, Piece::Text("")));
    out
}

fn walk_exprs(template: &BTreeMap<String, Value>, f: &mut dyn FnMut(&[Segment], &str)) {
    fn walk(v: &Value, path: &mut Vec<Segment>, f: &mut dyn FnMut(&[Segment], &str)) {
        match v {
            Value::String(s) => {
                for p in pieces(s) {
                    if let Piece::Expr(e) = p {
                        f(path, e);
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Segment::Index(i));
                    walk(item, path, f);
                    path.pop();
                }
            }
            Value::Object(m) => {
                for (k, item) in m {
                    path.push(Segment::Key(k.clone()));
                    walk(item, path, f);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut path = Vec::new();
    for (k, v) in template {
        path.push(Segment::Key(k.clone()));
        walk(v, &mut path, f);
        path.pop();
    }
}

/// Renders one string: a string that is a single expression takes the value's own type;
/// otherwise values are written into the text (lists joined with `,`).
fn render_str(
    s: &str,
    resolve: &dyn Fn(&str) -> Result<Value, String>,
) -> Result<Value, (String, String)> {
    let parts = pieces(s);
    if let [Piece::Expr(e)] = parts.as_slice() {
        return resolve(e).map_err(|p| ((*e).to_string(), p));
    }
    let mut out = String::with_capacity(s.len());
    for p in parts {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Expr(e) => match resolve(e).map_err(|p| (e.to_string(), p))? {
                Value::String(v) => out.push_str(&v),
                Value::Array(items) => out.push_str(
                    &items
                        .iter()
                        .map(|i| match i {
                            Value::String(v) => v.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Ok(Value::String(out))
}

/// The value of one expression.
fn resolve(expr: &str, ctx: &BindContext<'_>) -> Result<Value, String> {
    check_expr(expr)?;
    let deployment = super::foundation::deployment_name(&ctx.plan.id, ctx.instance_id);
    let parts: Vec<&str> = expr.split('.').map(str::trim).collect();
    let s = |v: &str| Ok(Value::String(v.to_string()));
    match parts.as_slice() {
        ["instance", "id"] => s(ctx.instance_id),
        ["instance", "name" | "deployment_name"] => s(&deployment),
        ["instance", "organization_guid"] => s(ctx.organization_guid),
        ["instance", "space_guid"] => s(ctx.space_guid),
        ["plan", "id"] => s(&ctx.plan.id),
        ["plan", "name"] => s(&ctx.plan.name),
        ["service", "id"] => s(&ctx.service.id),
        ["service", "name"] => s(&ctx.service.name),
        ["binding", "id"] => s(ctx.binding_id),
        ["params", first, rest @ ..] => {
            let mut cur = ctx.params.get(*first).ok_or_else(|| {
                format!(
                    "has no value: set parameter `{first}` on the instance or as a default in plan `{}`",
                    ctx.plan.id
                )
            })?;
            for seg in rest {
                cur = cur.get(*seg).ok_or_else(|| {
                    format!("has no value: parameter `{first}` has no `{seg}` inside")
                })?;
            }
            Ok(cur.clone())
        }
        ["secret", name] => ctx
            .secrets
            .get(*name)
            .map(|v| Value::String(v.clone()))
            .ok_or_else(|| format!("has no value: secret `{name}` was not generated")),
        ["jobs", group, rest @ ..] => jobs(ctx, &deployment, group, rest),
        _ => Err(format!("cannot be resolved: {EXPECTED}")),
    }
}

fn jobs(
    ctx: &BindContext<'_>,
    deployment: &str,
    group: &str,
    rest: &[&str],
) -> Result<Value, String> {
    let mut vms: Vec<&Vm> = ctx.vms.iter().filter(|v| v.group == group).collect();
    if vms.is_empty() {
        let mut groups: Vec<&str> = ctx.vms.iter().map(|v| v.group.as_str()).collect();
        groups.dedup();
        let groups = if groups.is_empty() {
            "none".to_string()
        } else {
            groups.join(", ")
        };
        return Err(format!(
            "has no value: deployment {deployment} has no VMs in instance group `{group}` (its groups: {groups}); fix the group name in the plan's credentials"
        ));
    }
    vms.sort_by_key(|v| v.index);
    let first_of = |vm: &Vm, what: &str, list: &[String]| {
        list.first()
            .map(|x| Value::String(x.clone()))
            .ok_or_else(|| {
                format!(
                    "has no value: the Director reports no {what} for {group}/{} of deployment {deployment}",
                    vm.index
                )
            })
    };
    let strings = |xs: Vec<String>| Value::Array(xs.into_iter().map(Value::String).collect());
    let bootstrap = vms.iter().find(|v| v.bootstrap).copied().unwrap_or(vms[0]);
    match rest {
        ["ip"] => first_of(bootstrap, "IP address", &bootstrap.ips),
        ["dns"] => first_of(bootstrap, "DNS name", &bootstrap.dns),
        ["ips"] => Ok(strings(vms.iter().flat_map(|v| v.ips.clone()).collect())),
        ["hosts"] => {
            let mut out = Vec::new();
            for vm in &vms {
                if let Value::String(d) = first_of(vm, "DNS name", &vm.dns)? {
                    out.push(d);
                }
            }
            Ok(strings(out))
        }
        [n, what] => {
            let n: u64 = n
                .parse()
                .map_err(|_| format!("cannot be resolved: {EXPECTED}"))?;
            let vm = vms.iter().find(|v| v.index == n).ok_or_else(|| {
                format!(
                    "has no value: instance group `{group}` of deployment {deployment} has no VM with index {n} (indices {})",
                    vms.iter().map(|v| v.index.to_string()).collect::<Vec<_>>().join(", ")
                )
            })?;
            match *what {
                "ip" => first_of(vm, "IP address", &vm.ips),
                "dns" => first_of(vm, "DNS name", &vm.dns),
                _ => Ok(strings(vm.ips.clone())),
            }
        }
        _ => Err(format!("cannot be resolved: {EXPECTED}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(credentials: Value) -> PlanSpec {
        serde_json::from_value(json!({
            "id": "redis-small", "name": "small", "manifest": "m.yml",
            "parameters": {"port": 6379},
            "credentials": credentials,
        }))
        .unwrap()
    }

    fn service() -> ServiceSpec {
        serde_json::from_value(json!({"id": "redis", "name": "Redis", "plans": []})).unwrap()
    }

    fn vms() -> Vec<Vm> {
        vec![
            Vm {
                group: "redis".into(),
                index: 1,
                bootstrap: false,
                ips: vec!["10.0.0.3".into()],
                dns: vec!["b.redis.default.d.bosh".into()],
            },
            Vm {
                group: "redis".into(),
                index: 0,
                bootstrap: true,
                ips: vec!["10.0.0.2".into(), "10.1.0.2".into()],
                dns: vec!["a.redis.default.d.bosh".into()],
            },
            Vm {
                group: "sentinel".into(),
                index: 0,
                bootstrap: true,
                ips: vec!["10.0.0.9".into()],
                dns: vec![],
            },
        ]
    }

    fn render_with(template: Value) -> Result<Map<String, Value>, CredentialError> {
        let p = plan(template);
        let s = service();
        let params = BTreeMap::from([
            ("port".to_string(), json!(6379)),
            ("tls".to_string(), json!({"enabled": true})),
        ]);
        let secrets = BTreeMap::from([("password".to_string(), "s3cr3t".to_string())]);
        let vms = vms();
        let ctx = BindContext {
            service: &s,
            plan: &p,
            instance_id: "i-1",
            organization_guid: "org",
            space_guid: "space",
            params: &params,
            binding_id: "b-1",
            vms: &vms,
            secrets: &secrets,
        };
        render(p.credentials.as_ref().unwrap(), &ctx)
    }

    #[test]
    fn renders_vms_params_secrets_and_ids() {
        let out = render_with(json!({
            "host": "${jobs.redis.ip}",
            "hostname": "${jobs.redis.dns}",
            "hosts": "${jobs.redis.hosts}",
            "ips": "${jobs.redis.ips}",
            "second": "${jobs.redis.1.ip}",
            "port": "${params.port}",
            "tls": "${params.tls.enabled}",
            "password": "${secret.password}",
            "uri": "redis://:${secret.password}@${jobs.redis.ip}:${params.port}/0",
            "list": "${jobs.redis.ips}!",
            "names": ["${instance.id}", "${instance.name}", "${plan.name}", "${service.name}", "${binding.id}"],
            "nested": {"org": "${instance.organization_guid}", "n": 5, "literal": "$${HOME} and $${x}"},
        }))
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({
                "host": "10.0.0.2",
                "hostname": "a.redis.default.d.bosh",
                "hosts": ["a.redis.default.d.bosh", "b.redis.default.d.bosh"],
                "ips": ["10.0.0.2", "10.1.0.2", "10.0.0.3"],
                "second": "10.0.0.3",
                "port": 6379,
                "tls": true,
                "password": "s3cr3t",
                "uri": "redis://:s3cr3t@10.0.0.2:6379/0",
                "list": "10.0.0.2,10.1.0.2,10.0.0.3!",
                "names": ["i-1", "redis-small-i-1", "small", "Redis", "b-1"],
                "nested": {"org": "org", "n": 5, "literal": "${HOME} and ${x}"},
            })
        );
    }

    #[test]
    fn missing_values_name_the_key_and_what_to_do() {
        let cases = [
            (
                json!({"a": "${params.nope}"}),
                "a",
                "params.nope",
                "set parameter `nope`",
            ),
            (
                json!({"a": {"b": ["x", "${jobs.web.ip}"]}}),
                "a.b[1]",
                "jobs.web.ip",
                "its groups: redis, sentinel",
            ),
            (
                json!({"a": "${jobs.redis.7.ip}"}),
                "a",
                "jobs.redis.7.ip",
                "no VM with index 7 (indices 0, 1)",
            ),
            (
                json!({"a": "${jobs.sentinel.dns}"}),
                "a",
                "jobs.sentinel.dns",
                "no DNS name for sentinel/0",
            ),
            (
                json!({"a": "${secret.other}"}),
                "a",
                "secret.other",
                "secret `other` was not generated",
            ),
            (
                json!({"a": "x${secrets.pw}"}),
                "a",
                "secrets.pw",
                "did you mean \"secret\"",
            ),
            (
                json!({"a": "${instance.bogus}"}),
                "a",
                "instance.bogus",
                "not a valid `instance` expression",
            ),
        ];
        for (template, key, expr, hint) in cases {
            let e = render_with(template).unwrap_err();
            assert_eq!((e.key.as_str(), e.expr.as_str()), (key, expr));
            let text = e.to_string();
            assert!(text.contains(hint), "{text}");
            assert!(
                text.starts_with("credentials of plan `redis-small`"),
                "{text}"
            );
        }
    }

    #[test]
    fn check_finds_malformed_expressions_without_data() {
        let t: BTreeMap<String, Value> = serde_json::from_value(json!({
            "ok": "${jobs.redis.0.dns} ${secret.pw} ${params.x.y}",
            "bad": ["${jobs.redis}", "${secret.}", "${vms.redis.ip}"],
            "unterminated": "${oops",
        }))
        .unwrap();
        let problems = check(&t);
        let keys: Vec<String> = problems.iter().map(|(p, _)| path_text(p)).collect();
        assert_eq!(keys, ["bad[0]", "bad[1]", "bad[2]"]);
        assert!(
            problems[2].1.contains("unknown namespace `vms`"),
            "{}",
            problems[2].1
        );
    }

    #[test]
    fn secret_and_param_names() {
        let t: BTreeMap<String, Value> = serde_json::from_value(json!({
            "a": "${secret.password}:${secret.admin-token}",
            "b": ["${secret.password}", "${params.port}", "$${secret.literal}", "${secret.}"],
            "c": {"d": "${ params.tls.enabled }"},
        }))
        .unwrap();
        assert_eq!(
            secret_names(&t).into_iter().collect::<Vec<_>>(),
            ["admin-token", "password"]
        );
        assert_eq!(
            param_names(&t).into_iter().collect::<Vec<_>>(),
            ["port", "tls"]
        );
    }

    #[test]
    fn vms_from_director_lines() {
        let v = json!({"job_name": "redis", "index": 2, "bootstrap": false, "ips": ["10.0.0.4"], "dns": ["x.bosh"], "id": "u"});
        assert_eq!(
            Vm::from_director(&v),
            Some(Vm {
                group: "redis".into(),
                index: 2,
                bootstrap: false,
                ips: vec!["10.0.0.4".into()],
                dns: vec!["x.bosh".into()],
            })
        );
        assert_eq!(Vm::from_director(&json!({"index": 0})), None);
    }
}
