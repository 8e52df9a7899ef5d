//! Acceptance 6 of issue 8: provider aliases. Two Foundation documents in one workspace
//! directory, each with `alias` and its own Director and Vault simulator: `apply`
//! creates each Foundation's deployments and `db` entries on its own Director and Vault
//! only; `drift` after a change behind anvil's back on Director B reports only B's
//! address; `anvil reconcile --foundation a.yaml` touches only A's Director and Vault.
//! A `Resources` document configures a third Vault through a `providers:` entry with an
//! alias and a resource chooses it with `provider:`; that Vault's token never reaches
//! plan output or state. Bad input: two unaliased Foundations with different Directors,
//! an unconfigured `provider:` and an unknown provider setting are refused, located,
//! before any state is written.

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

const TOKEN: &str = "root";
const TOKEN_C: &str = "tok-c-5e1f9a7d3b";

const A1: &str = "6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01";
const A2: &str = "1f7e9d3c-5b2a-4c8e-a6d4-3e2f1a0b9c72";
const B1: &str = "9c3d5e7f-1a2b-4c6d-8e0f-a1b2c3d4e5f6";

const MANIFEST: &str = "name: ${plan.id}-${instance.id}\nreleases: [{name: redis, version: latest}]\nstemcells: [{alias: default, os: ubuntu-jammy, version: latest}]\nupdate: {canaries: 1, max_in_flight: 1, canary_watch_time: 1000-30000, update_watch_time: 1000-30000}\ninstance_groups:\n  - name: redis\n    instances: 1\n    azs: [z1]\n    vm_type: small\n    stemcell: default\n    networks: [{name: services}]\n    jobs: [{name: redis, release: redis, properties: {maxmemory: ${params.maxmemory}}}]\n";

fn foundation(alias: Option<&str>, bosh: &BoshSim, vault: &VaultSim, ids: &[&str]) -> String {
    let alias = alias.map(|a| format!("alias: {a}\n")).unwrap_or_default();
    let instances: String = ids
        .iter()
        .map(|id| format!("  - {{id: {id}, service: redis, plan: redis-small}}\n"))
        .collect();
    format!(
        "apiVersion: anvil/v1\nkind: Foundation\nmetadata: {{name: two}}\n{alias}\
         director: {{url: \"{}\", client: admin, client_secret: \"${{env:DIRECTOR_SECRET}}\"}}\n\
         vault: {{addr: \"{}\"}}\n\
         catalog:\n  services:\n    - id: redis\n      name: redis\n      plans:\n        - id: redis-small\n          name: small\n          manifest: redis.yml.tmpl\n          parameters: {{maxmemory: 1gb}}\n\
         instances:\n{instances}",
        bosh.url,
        vault.url()
    )
}

struct World {
    s: Scratch,
    bosh_a: BoshSim,
    bosh_b: BoshSim,
    vault_a: VaultSim,
    vault_b: VaultSim,
    vault_c: VaultSim,
}

impl World {
    fn start() -> World {
        let w = World {
            s: Scratch::new(),
            bosh_a: BoshSim::start(&[], None),
            bosh_b: BoshSim::start(&[], None),
            vault_a: VaultSim::start(TOKEN, &[]),
            vault_b: VaultSim::start(TOKEN, &[]),
            vault_c: VaultSim::start(TOKEN_C, &[]),
        };
        w.s.write("ws/redis.yml.tmpl", MANIFEST);
        w.s.write(
            "ws/a.yaml",
            &foundation(Some("a"), &w.bosh_a, &w.vault_a, &[A1, A2]),
        );
        w.s.write(
            "ws/b.yaml",
            &foundation(Some("b"), &w.bosh_b, &w.vault_b, &[B1]),
        );
        w.s.write(
            "ws/extra.yaml",
            &format!(
                "apiVersion: anvil/v1\nkind: Resources\nmetadata: {{name: two}}\n\
                 providers:\n  vault:\n    - alias: c\n      address: \"{}\"\n      token: \"${{env:VAULT_C_TOKEN}}\"\n\
                 resources:\n  - type: vault_secret\n    name: extra\n    provider: vault.c\n    attributes: {{path: extra, data: {{k: v}}}}\n",
                w.vault_c.url()
            ),
        );
        w
    }

    /// Runs anvil with no BOSH_*/VAULT_* address in the environment: every Director
    /// and Vault comes from the spec. Only the token the Foundations' Vaults share and
    /// the secrets the spec reads with `${env:…}` are given.
    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.s.cmd(args);
        for v in [
            "BOSH_ENVIRONMENT",
            "BOSH_CLIENT",
            "BOSH_CLIENT_SECRET",
            "BOSH_CA_CERT",
            "VAULT_ADDR",
            "VAULT_ROLE_ID",
            "VAULT_SECRET_ID",
            "VAULT_CACERT",
            "VAULT_NAMESPACE",
        ] {
            c.env_remove(v);
        }
        c.env("VAULT_TOKEN", TOKEN)
            .env("DIRECTOR_SECRET", "admin")
            .env("VAULT_C_TOKEN", TOKEN_C)
            .output()
            .expect("run anvil")
    }

    fn index(vault: &VaultSim) -> Vec<String> {
        vault
            .kv_read("db", TOKEN)
            .and_then(|v| v.as_object().map(|m| m.keys().cloned().collect()))
            .unwrap_or_default()
    }
}

fn dep(id: &str) -> String {
    format!("redis-small-{id}")
}

#[test]
fn two_foundations_reach_their_own_director_and_vault() {
    let w = World::start();
    let o = w.run(&["apply", "--auto-approve", "ws"]);
    assert_code(&o, 0);
    let out = stdout(&o);

    // Each Director and Vault holds exactly its own Foundation's objects.
    let mut a = vec![dep(A1), dep(A2)];
    a.sort();
    assert_eq!(w.bosh_a.names(), a);
    assert_eq!(w.bosh_b.names(), vec![dep(B1)]);
    let mut ia = vec![A1.to_string(), A2.to_string()];
    ia.sort();
    assert_eq!(World::index(&w.vault_a), ia);
    assert_eq!(World::index(&w.vault_b), vec![B1.to_string()]);
    assert!(w
        .vault_a
        .kv_read(&format!("{A1}/manifest"), TOKEN)
        .is_some());
    assert!(w
        .vault_b
        .kv_read(&format!("{A1}/manifest"), TOKEN)
        .is_none());
    assert!(w
        .vault_a
        .kv_read(&format!("{B1}/manifest"), TOKEN)
        .is_none());
    // The aliased Vault of the Resources document got its secret, the others did not.
    assert_eq!(
        w.vault_c.kv_read("extra", TOKEN_C),
        Some(serde_json::json!({"k": "v"}))
    );
    assert!(w.vault_a.kv_read("extra", TOKEN).is_none());

    // State records which instance manages each resource; no secret is kept.
    let st = w.s.state_json("two");
    let provider = |addr: &str| st["resources"][addr]["provider"].clone();
    assert_eq!(provider(&format!("bosh_deployment.{}", dep(A1))), "bosh.a");
    assert_eq!(provider(&format!("vault_index_entry.{B1}")), "vault.b");
    assert_eq!(provider("vault_secret.extra"), "vault.c");
    let state_text = std::fs::read_to_string(w.s.state_file("two")).unwrap();
    assert!(
        !state_text.contains(TOKEN_C),
        "a provider token reached state"
    );
    assert!(
        !out.contains(TOKEN_C),
        "a provider token reached output: {out}"
    );

    // Nothing left to do.
    let o = w.run(&["plan", "--detailed-exitcode", "ws"]);
    assert_code(&o, 0);
    assert!(!stdout(&o).contains(TOKEN_C));

    // A change behind anvil's back on Director B is drift of B's address only.
    let changed = w
        .bosh_b
        .manifest(&dep(B1))
        .unwrap()
        .replace("maxmemory: 1gb", "maxmemory: 9gb");
    w.bosh_b.deploy(&changed);
    let o = w.run(&["drift", "ws"]);
    let report = stdout(&o);
    assert_code(&o, 2);
    assert!(
        report.contains(&format!("bosh_deployment.{}", dep(B1))),
        "{report}"
    );
    for other in [dep(A1), dep(A2)] {
        assert!(!report.contains(&other), "{report}");
    }

    // Reconciling Foundation A touches A's Director and Vault only.
    let before_b: Vec<Option<Value>> = [format!("{B1}/manifest"), "db".to_string()]
        .iter()
        .map(|p| w.vault_b.kv_read(p, TOKEN))
        .collect();
    let o = w.run(&["reconcile", "--foundation", "ws/a.yaml", "--json"]);
    assert_code(&o, 0);
    let a_manifest = w.vault_a.kv_read(&format!("{A1}/manifest"), TOKEN).unwrap();
    assert_eq!(a_manifest["reconciled"], true, "{a_manifest}");
    let after_b: Vec<Option<Value>> = [format!("{B1}/manifest"), "db".to_string()]
        .iter()
        .map(|p| w.vault_b.kv_read(p, TOKEN))
        .collect();
    assert_eq!(before_b, after_b, "reconcile of A wrote to B's Vault");
    assert_eq!(w.bosh_b.names(), vec![dep(B1)]);

    // Dropping Foundation B from the spec leaves its recorded resources with no Director
    // to reach: said, nothing touched.
    std::fs::remove_file(w.s.path().join("ws/b.yaml")).unwrap();
    let o = w.run(&["plan", "ws"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("is not configured") && err.contains("alias: b"),
        "{err}"
    );
    assert_eq!(w.bosh_b.names(), vec![dep(B1)]);
}

#[test]
fn instances_that_cannot_be_told_apart_are_refused_located() {
    let w = World::start();
    // Without aliases, two Foundations with different Directors would both be `bosh`.
    w.s.write("ws/a.yaml", &foundation(None, &w.bosh_a, &w.vault_a, &[A1]));
    w.s.write("ws/b.yaml", &foundation(None, &w.bosh_b, &w.vault_a, &[B1]));
    let o = w.run(&["apply", "--auto-approve", "ws"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("b.yaml:")
            && err.contains("provider instance `bosh`")
            && err.contains("`alias`"),
        "{err}"
    );
    assert!(!w.s.state_file("two").exists(), "bad input wrote state");

    // A resource naming an instance nobody configures, and a misspelt setting.
    w.s.write(
        "ws/b.yaml",
        &foundation(Some("b"), &w.bosh_b, &w.vault_b, &[B1]),
    );
    w.s.write(
        "ws/a.yaml",
        &foundation(Some("a"), &w.bosh_a, &w.vault_a, &[A1]),
    );
    w.s.write(
        "ws/extra.yaml",
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: two}\n\
         resources:\n  - type: vault_secret\n    name: extra\n    provider: vault.nope\n    attributes: {path: extra, data: {k: v}}\n",
    );
    let o = w.run(&["plan", "ws"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("extra.yaml:7:5") && err.contains("no provider instance `vault.nope`"),
        "{err}"
    );
    assert!(
        err.contains("vault.a") && err.contains("vault.b"),
        "lists the configured ones: {err}"
    );

    // A misspelt provider name gets a suggestion.
    w.s.write(
        "ws/extra.yaml",
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: two}\n\
         providers:\n  valt: {alias: c}\n",
    );
    let o = w.run(&["plan", "ws"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("extra.yaml:5:")
            && err.contains("unknown provider `valt`")
            && err.contains("did you mean \"vault\""),
        "{err}"
    );

    w.s.write(
        "ws/extra.yaml",
        "apiVersion: anvil/v1\nkind: Resources\nmetadata: {name: two}\n\
         providers:\n  vault: {alias: c, adress: \"http://127.0.0.1:1\"}\n",
    );
    let o = w.run(&["plan", "ws"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("extra.yaml:5:") && err.contains("vault.c") && err.contains("adress"),
        "{err}"
    );
    assert!(!w.s.state_file("two").exists(), "bad input wrote state");
}
