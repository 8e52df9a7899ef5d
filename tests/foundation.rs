//! Acceptance of the Foundation kind against the real simulators (issue 3, tests 1 and
//! 3): `examples/foundation` deploys exactly its four instances with Blacksmith's Vault
//! layout, plans empty afterwards, a parameter change plans one update showing both the
//! manifest diff and the Director's own diff, and removing an instance deletes its
//! deployment and index entry but keeps its Vault secrets. With a flaky Director (5xx
//! and failing tasks), 20 instances converge within three applies, each deployed once.

mod common;
#[path = "sim_bosh_support/mod.rs"]
mod sim_bosh_support;
#[path = "sim_vault_support/mod.rs"]
mod sim_vault_support;

use common::*;
use serde_json::Value;
use sim_bosh_support::BoshSim;
use sim_vault_support::VaultSim;
use std::process::Output;
use yaml_rust2::{Yaml, YamlLoader};

const TOKEN: &str = "root";

const A: &str = "6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01";
const B: &str = "1f7e9d3c-5b2a-4c8e-a6d4-3e2f1a0b9c72";
const C: &str = "9c3d5e7f-1a2b-4c6d-8e0f-a1b2c3d4e5f6";
const D: &str = "4b5c6d7e-8f9a-4b1c-9d3e-4f5a6b7c8d9e";

struct World {
    s: Scratch,
    bosh: BoshSim,
    vault: VaultSim,
}

impl World {
    fn start(bosh_args: &[&str]) -> World {
        World {
            s: Scratch::new(),
            bosh: BoshSim::start(bosh_args, None),
            vault: VaultSim::start(TOKEN, &[]),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        at_simulators(
            &mut self.s.cmd(args),
            &self.bosh.url,
            &self.vault.url(),
            TOKEN,
        )
        .output()
        .expect("run anvil")
    }

    /// The data of a KV v2 secret under `secret/`, `None` when absent.
    fn secret(&self, path: &str) -> Option<Value> {
        self.vault.kv_read(path, TOKEN)
    }

    fn manifest(&self, name: &str) -> Yaml {
        let text = self
            .bosh
            .manifest(name)
            .unwrap_or_else(|| panic!("no deployment {name}"));
        YamlLoader::load_from_str(&text)
            .unwrap()
            .into_iter()
            .next()
            .unwrap()
    }

    /// Deploy tasks of one deployment that ended `done`.
    fn done_deploys(&self, name: &str) -> usize {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tasks: Vec<Value> = rt.block_on(async {
            reqwest::Client::new()
                .get(format!("{}/tasks?deployment={name}", self.bosh.url))
                .basic_auth("admin", Some("admin"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        tasks
            .iter()
            .filter(|t| t["state"] == "done" && t["description"] == "create deployment")
            .count()
    }
}

fn y<'a>(doc: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(doc, |d, k| &d[*k])
}

#[test]
fn example_foundation_applies_updates_and_removes_instances() {
    let w = World::start(&[]);
    w.s.copy_example("foundation", "foundation");
    let o = w.run(&["apply", "--auto-approve", "foundation"]);
    assert_code(&o, 0);

    // The Director holds exactly the four deployments, named {plan_id}-{instance_id}.
    let (dep_a, dep_b, dep_c, dep_d) = (
        format!("redis-small-{A}"),
        format!("redis-cluster-{B}"),
        format!("postgresql-standard-{C}"),
        format!("postgresql-standard-{D}"),
    );
    let mut expected = vec![dep_a.clone(), dep_b.clone(), dep_c.clone(), dep_d.clone()];
    expected.sort();
    assert_eq!(w.bosh.names(), expected);
    for (name, service, plan, id) in [
        (&dep_c, "postgresql", "postgresql-standard", C),
        (&dep_d, "postgresql", "postgresql-standard", D),
        (&dep_b, "redis", "redis-cluster", B),
        (&dep_a, "redis", "redis-small", A),
    ] {
        let m = w.manifest(name);
        assert_eq!(m["name"].as_str(), Some(name.as_str()));
        let bs = y(&m, &["properties", "blacksmith"]);
        assert_eq!(bs["service_id"].as_str(), Some(service), "{name}");
        assert_eq!(bs["plan_id"].as_str(), Some(plan), "{name}");
        assert_eq!(bs["instance_id"].as_str(), Some(id), "{name}");
    }
    // Parameters: plan defaults, overridden per instance; BOSH vars and shell pass through.
    let b = w.manifest(&dep_b);
    let group = &b["instance_groups"][0];
    assert_eq!(group["instances"].as_i64(), Some(3));
    assert_eq!(group["vm_type"].as_str(), Some("medium"));
    let props = y(&group["jobs"][0], &["properties", "redis"]);
    assert_eq!(props["maxmemory"].as_str(), Some("8gb"));
    assert_eq!(props["password"].as_str(), Some("((redis_password))"));
    let pre_start = y(&group["jobs"][0], &["properties", "pre_start"])
        .as_str()
        .unwrap();
    assert!(
        pre_start.contains(&format!("for {B} in ${{HOME:-/var/vcap}}")),
        "{pre_start}"
    );
    let d = w.manifest(&dep_d);
    assert_eq!(
        d["instance_groups"][0]["persistent_disk"].as_i64(),
        Some(51200)
    );
    let c = w.manifest(&dep_c);
    assert_eq!(
        c["instance_groups"][0]["persistent_disk"].as_i64(),
        Some(20480)
    );

    // Vault: Blacksmith's `db` index with the four entries, and each instance's secrets.
    let db = w.secret("db").expect("db index");
    let db = db.as_object().unwrap();
    assert_eq!(db.len(), 4, "{db:?}");
    for (id, service, plan, deployment) in [
        (A, "redis", "redis-small", &dep_a),
        (B, "redis", "redis-cluster", &dep_b),
        (C, "postgresql", "postgresql-standard", &dep_c),
        (D, "postgresql", "postgresql-standard", &dep_d),
    ] {
        let e = &db[id];
        assert_eq!(e["service_id"], service, "{e}");
        assert_eq!(e["plan_id"], plan, "{e}");
        assert_eq!(e["deployment_name"], deployment.as_str(), "{e}");
        assert_eq!(e["status"], "succeeded", "{e}");
        assert!(
            e["created"].as_i64().is_some_and(|t| t > 1_600_000_000),
            "{e}"
        );
        for k in [
            "created_at",
            "requested_at",
            "organization_guid",
            "space_guid",
        ] {
            assert!(e[k].as_str().is_some_and(|v| !v.is_empty()), "{k} in {e}");
        }
        let m = w
            .secret(&format!("{id}/manifest"))
            .expect("manifest secret");
        assert!(m["manifest"]
            .as_str()
            .unwrap()
            .contains(deployment.as_str()));
        let meta = w
            .secret(&format!("{id}/metadata"))
            .expect("metadata secret");
        assert_eq!(meta["plan_id"], plan);
    }

    // A second plan is empty.
    let o = w.run(&["plan", "--detailed-exitcode", "foundation"]);
    assert_code(&o, 0);

    // One parameter changes: one update, showing the manifest diff and the Director's.
    let spec_path = w.s.path().join("foundation/foundation.yaml");
    let text = std::fs::read_to_string(&spec_path).unwrap();
    let changed = text.replace(
        "parameters: { maxmemory: 8gb }",
        "parameters: { maxmemory: 16gb }",
    );
    assert_ne!(text, changed);
    std::fs::write(&spec_path, &changed).unwrap();
    let o = w.run(&["plan", "--detailed-exitcode", "foundation"]);
    assert_code(&o, 2);
    let out = stdout(&o);
    assert!(
        out.contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "# bosh_deployment.redis-cluster-{B} will be updated in place"
        )),
        "{out}"
    );
    let minus = out
        .lines()
        .any(|l| l.trim_start().starts_with('-') && l.ends_with("maxmemory: 8gb"));
    let plus = out
        .lines()
        .any(|l| l.trim_start().starts_with('+') && l.ends_with("maxmemory: 16gb"));
    assert!(minus && plus, "no manifest diff in:\n{out}");
    assert!(
        out.contains(&format!(
            "# BOSH Director (POST /deployments/redis-cluster-{B}/diff?redact=true):"
        )),
        "no Director diff in:\n{out}"
    );
    let o = w.run(&["apply", "--auto-approve", "foundation"]);
    assert_code(&o, 0);
    let b = w.manifest(&dep_b);
    let props = y(
        &b["instance_groups"][0]["jobs"][0],
        &["properties", "redis"],
    );
    assert_eq!(props["maxmemory"].as_str(), Some("16gb"));
    let o = w.run(&["plan", "--detailed-exitcode", "foundation"]);
    assert_code(&o, 0);

    // Instance A goes: its deployment and index entry are deleted, its secrets kept.
    let without_a = changed.replace(
        &format!("  - id: {A}\n    service: redis\n    plan: redis-small\n"),
        "  - id: REMOVED\n",
    );
    let start = without_a.find("  - id: REMOVED\n").unwrap();
    let end = without_a[start..].find("  - id: 1f7e").unwrap() + start;
    let without_a = format!("{}{}", &without_a[..start], &without_a[end..]);
    std::fs::write(&spec_path, &without_a).unwrap();
    let o = w.run(&["plan", "--detailed-exitcode", "foundation"]);
    assert_code(&o, 2);
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "# bosh_deployment.redis-small-{A} will be destroyed"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("# vault_index_entry.{A} will be destroyed")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "# vault_secret.{A}-manifest will be removed from state; the real object is kept"
        )),
        "{out}"
    );
    let o = w.run(&["apply", "--auto-approve", "foundation"]);
    assert_code(&o, 0);
    expected.retain(|n| *n != dep_a);
    assert_eq!(w.bosh.names(), expected);
    let db = w.secret("db").expect("db index");
    assert_eq!(db.as_object().unwrap().len(), 3);
    assert!(db.get(A).is_none(), "{db}");
    assert!(
        w.secret(&format!("{A}/manifest")).is_some(),
        "{A}/manifest was deleted"
    );
    assert!(
        w.secret(&format!("{A}/metadata")).is_some(),
        "{A}/metadata was deleted"
    );
    let o = w.run(&["plan", "--detailed-exitcode", "foundation"]);
    assert_code(&o, 0);
}

const SMALL_TEMPLATE: &str = "releases: [{name: redis, version: latest}]\nstemcells: [{alias: default, os: ubuntu-jammy, version: latest}]\ninstance_groups:\n- name: redis\n  instances: 1\n  vm_type: small\n  azs: [z1]\n  stemcell: default\n  networks: [{name: services}]\n  jobs: [{name: redis, release: redis, properties: {port: ${params.port}}}]\n";

fn twenty_instances() -> (String, Vec<String>) {
    let ids: Vec<String> = (0..20)
        .map(|i| format!("00000000-0000-4000-8000-{i:012x}"))
        .collect();
    let mut s = String::from(
        "apiVersion: anvil/v1\nkind: Foundation\nmetadata: { name: flaky }\ncatalog:\n  services:\n    - id: redis\n      name: redis\n      plans:\n        - id: redis-small\n          name: small\n          manifest: small.yml.tmpl\n          parameters: { port: 6379 }\ninstances:\n",
    );
    for id in &ids {
        s.push_str(&format!(
            "  - {{ id: {id}, service: redis, plan: small }}\n"
        ));
    }
    (s, ids)
}

#[test]
fn flaky_director_converges_within_three_applies_deploying_each_instance_once() {
    let w = World::start(&["--fail-rate", "0.2", "--fail-tasks", "0.1", "--seed", "3"]);
    let (spec, ids) = twenty_instances();
    w.s.write("flaky/foundation.yaml", &spec);
    w.s.write("flaky/small.yml.tmpl", SMALL_TEMPLATE);
    let mut runs = 0;
    let mut failures = Vec::new();
    loop {
        runs += 1;
        let o = w.run(&["apply", "--auto-approve", "--parallelism", "20", "flaky"]);
        if o.status.code() == Some(0) {
            break;
        }
        assert_code(&o, 1);
        // The failure summary: one line per failed resource, after `Failed:`; a run that
        // failed before applying (a refresh read that ran out of retries) says so on
        // stderr instead.
        let out = stdout(&o);
        let mut failed: Vec<String> = out
            .lines()
            .skip_while(|l| *l != "Failed:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(String::from)
            .collect();
        failed.extend(
            stderr(&o)
                .lines()
                .filter(|l| l.starts_with("Error:"))
                .map(String::from),
        );
        assert!(
            !failed.is_empty(),
            "apply failed without naming failures:\n{out}"
        );
        failures.extend(failed);
        assert!(runs < 3, "not converged after {runs} applies:\n{out}");
    }
    // Every failure names the deployment, and a failed task its id (a request that ran
    // out of retries names its endpoint instead).
    for f in &failures {
        assert!(
            f.contains("redis-small-00000000-0000-4000-8000-"),
            "unnamed failure: {f}"
        );
        let task_named = f.contains("BOSH task ") && f.contains("ended in state `error`");
        let endpoint_named = f.contains("/deployments") || f.contains("/tasks/");
        assert!(
            task_named || endpoint_named,
            "failure names neither task nor endpoint: {f}"
        );
    }
    w.bosh.set_faults(r#"{"fail_rate":0.0,"fail_tasks":0.0}"#);
    let names: Vec<String> = ids.iter().map(|id| format!("redis-small-{id}")).collect();
    assert_eq!(w.bosh.names(), names);
    for n in &names {
        assert_eq!(
            w.done_deploys(n),
            1,
            "{n} deployed more than once (or never)"
        );
    }
    assert_eq!(w.secret("db").unwrap().as_object().unwrap().len(), 20);
    let o = w.run(&["plan", "--detailed-exitcode", "flaky"]);
    assert_code(&o, 0);
    eprintln!("converged after {runs} apply run(s); failures seen: {failures:#?}");
}

#[test]
fn director_and_vault_blocks_stand_in_for_the_environment() {
    let w = World::start(&[]);
    let spec = format!(
        "apiVersion: anvil/v1\nkind: Foundation\nmetadata: {{ name: blocks }}\ndirector: {{ url: \"{}\", client: admin, client_secret: admin }}\nvault: {{ addr: \"{}\", mount: secret }}\ncatalog:\n  services:\n    - id: redis\n      name: redis\n      plans:\n        - {{ id: redis-small, name: small, manifest: small.yml.tmpl, parameters: {{ port: 6379 }} }}\ninstances:\n  - {{ id: {A}, service: redis, plan: small }}\n",
        w.bosh.url,
        w.vault.url()
    );
    w.s.write("blocks/foundation.yaml", &spec);
    w.s.write("blocks/small.yml.tmpl", SMALL_TEMPLATE);
    let o =
        w.s.cmd(&["apply", "--auto-approve", "blocks"])
            .env_remove("BOSH_ENVIRONMENT")
            .env_remove("BOSH_CLIENT")
            .env_remove("BOSH_CLIENT_SECRET")
            .env_remove("BOSH_CA_CERT")
            .env_remove("VAULT_ADDR")
            .env("VAULT_TOKEN", TOKEN)
            .output()
            .unwrap();
    assert_code(&o, 0);
    assert_eq!(w.bosh.names(), [format!("redis-small-{A}")]);
    assert!(w.secret("db").unwrap().get(A).is_some());
}
