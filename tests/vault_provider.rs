//! Acceptance of the `vault` provider against the real `anvil sim vault`: apply secrets
//! and index entries, no plaintext in state, no-op plans, sensitive diffs, targeted index
//! deletes, drift through read; 50 concurrent index writers lose nothing; a missing
//! `VAULT_ADDR` is reported only when a vault resource is used.

mod common;
#[path = "sim_vault_support/mod.rs"]
mod sim_vault_support;

use anvil::providers::vault::client::Config;
use anvil::providers::vault::VaultProvider;
use anvil::providers::{ChangeRequest, Provider};
use common::*;
use serde_json::{json, Value};
use sim_vault_support::VaultSim;
use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Arc;

const TOKEN: &str = "root";

fn run_env(s: &Scratch, sim: &VaultSim, args: &[&str]) -> Output {
    s.cmd(args)
        .env("VAULT_ADDR", sim.url())
        .env("VAULT_TOKEN", TOKEN)
        .env_remove("VAULT_ROLE_ID")
        .env_remove("VAULT_SECRET_ID")
        .env_remove("VAULT_CACERT")
        .env_remove("VAULT_NAMESPACE")
        .output()
        .expect("run anvil")
}

fn run_no_vault(s: &Scratch, args: &[&str]) -> Output {
    s.cmd(args)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .expect("run anvil")
}

/// `GET data/<path>` through the simulator's HTTP API: the data, or None on 404.
fn sim_read(sim: &VaultSim, path: &str) -> Option<Value> {
    sim.kv_read(path, TOKEN)
}

fn spec(app_password: &str, index_keys: &[&str]) -> String {
    let mut s = format!(
        "apiVersion: anvil/v1
kind: Resources
metadata:
  name: vaultws
resources:
  - type: vault_secret
    name: app
    attributes:
      path: app/creds
      data:
        user: app
        password: {app_password}
  - type: vault_secret
    name: other
    attributes:
      path: other/creds
      mount: secret
      data:
        token: plaintext-other-token
"
    );
    for k in index_keys {
        s.push_str(&format!(
            "  - type: vault_index_entry
    name: {k}
    attributes:
      path: db
      key: {k}
      value:
        plan: small
        name: instance-{k}
"
        ));
    }
    s
}

#[test]
fn apply_plan_drift_and_index_deletes() {
    let sim = VaultSim::start(TOKEN, &[]);
    let s = Scratch::new();
    s.write("spec.yaml", &spec("plaintext-pw-one", &["i1", "i2", "i3"]));

    let o = run_env(&s, &sim, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("5 added"), "{}", stdout(&o));

    let app = sim_read(&sim, "app/creds").expect("app secret written");
    assert_eq!(app, json!({"user": "app", "password": "plaintext-pw-one"}));
    let other = sim_read(&sim, "other/creds").expect("other secret written");
    assert_eq!(other["token"], "plaintext-other-token");
    let db = sim_read(&sim, "db").expect("index written");
    for k in ["i1", "i2", "i3"] {
        assert_eq!(db[k]["name"], format!("instance-{k}"), "{db}");
    }

    let raw = std::fs::read_to_string(s.state_file("vaultws")).unwrap();
    for secret in ["plaintext-pw-one", "plaintext-other-token"] {
        assert!(!raw.contains(secret), "secret in state: {raw}");
    }
    assert!(raw.contains("sha256:"));

    let o = run_env(&s, &sim, &["plan", "--detailed-exitcode", "spec.yaml"]);
    assert_code(&o, 0);

    // A changed secret: a change, shown as (sensitive), never the value.
    s.write("spec.yaml", &spec("plaintext-pw-two", &["i1", "i2", "i3"]));
    let o = run_env(&s, &sim, &["plan", "--detailed-exitcode", "spec.yaml"]);
    assert_code(&o, 2);
    let out = stdout(&o);
    assert!(out.contains("vault_secret.app"), "{out}");
    assert!(out.contains("(sensitive)"), "{out}");
    assert!(
        !out.contains("plaintext-pw") && !stderr(&o).contains("plaintext-pw"),
        "{out}"
    );
    let o = run_env(&s, &sim, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert_eq!(
        sim_read(&sim, "app/creds").unwrap()["password"],
        "plaintext-pw-two"
    );

    // Removing one index entry deletes just that key.
    s.write("spec.yaml", &spec("plaintext-pw-two", &["i1", "i3"]));
    let o = run_env(&s, &sim, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("1 destroyed"), "{}", stdout(&o));
    let db = sim_read(&sim, "db").unwrap();
    let keys: Vec<&String> = db.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["i1", "i3"], "{db}");
    assert!(sim_read(&sim, "other/creds").is_some());
    let o = run_env(&s, &sim, &["plan", "--detailed-exitcode", "spec.yaml"]);
    assert_code(&o, 0);

    // A secret changed outside anvil shows up as drift.
    let r = sim.req(
        "POST",
        "/v1/secret/data/other/creds",
        Some(TOKEN),
        Some(r#"{"data":{"token":"changed-outside"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let o = run_env(&s, &sim, &["plan", "--detailed-exitcode", "spec.yaml"]);
    assert_code(&o, 2);
    assert!(stdout(&o).contains("vault_secret.other"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("changed-outside"), "{}", stdout(&o));

    // An index entry removed outside anvil is recreated.
    let r = sim.req(
        "POST",
        "/v1/secret/data/db",
        Some(TOKEN),
        Some(&json!({"data": {"i1": db["i1"].clone()}}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let o = run_env(&s, &sim, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    let db = sim_read(&sim, "db").unwrap();
    assert_eq!(db["i3"]["name"], "instance-i3", "{db}");
    // The stale record of the entry deleted outside anvil is replaced, not kept aside as
    // `#deposed` (whose delete would remove the key just written again).
    let st = s.state_json("vaultws");
    assert!(
        !st["resources"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("#deposed")),
        "{st}"
    );
    assert_eq!(
        sim_read(&sim, "other/creds").unwrap()["token"],
        "plaintext-other-token"
    );
    let o = run_env(&s, &sim, &["plan", "--detailed-exitcode", "spec.yaml"]);
    assert_code(&o, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_index_writers_lose_nothing() {
    let sim = VaultSim::start(TOKEN, &[]);
    let config = Config {
        addr: sim.url(),
        token: Some(TOKEN.to_string()),
        ..Config::default()
    };
    // Separate providers (separate clients), as separate anvil runs would be.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let provider = Arc::new(VaultProvider::with_config(config.clone()));
        tasks.push(tokio::spawn(async move {
            let mut attrs = BTreeMap::new();
            attrs.insert("path".to_string(), json!("db"));
            attrs.insert("key".to_string(), json!(format!("k{i:02}")));
            attrs.insert("value".to_string(), json!({ "n": i }));
            let address = format!("vault_index_entry.k{i:02}");
            provider
                .create(ChangeRequest {
                    address: &address,
                    ty: "vault_index_entry",
                    attributes: &attrs,
                    prior: None,
                    lineage: "00000000-0000-0000-0000-000000000000",
                    progress: Arc::new(|_| {}),
                    cancel: Default::default(),
                    resumed: false,
                })
                .await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("create");
    }
    let db = tokio::task::spawn_blocking(move || {
        let db = sim_read(&sim, "db").expect("index written");
        drop(sim);
        db
    })
    .await
    .unwrap();
    let index = db.as_object().unwrap();
    assert_eq!(index.len(), 50, "{db}");
    for i in 0..50 {
        assert_eq!(index[&format!("k{i:02}")]["n"], i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_in_one_run_commit_as_a_group() {
    let sim = VaultSim::start(TOKEN, &[]);
    let config = Config {
        addr: sim.url(),
        token: Some(TOKEN.to_string()),
        ..Config::default()
    };
    // One provider, as in one anvil run: 200 entries written at once.
    let provider = Arc::new(VaultProvider::with_config(config));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let provider = provider.clone();
        tasks.push(tokio::spawn(async move {
            let value = json!({ "n": i });
            provider
                .index_set("secret", "db", &format!("k{i:03}"), Some(&value))
                .await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("index write");
    }
    let (db, meta) = tokio::task::spawn_blocking(move || {
        let db = sim_read(&sim, "db").expect("index written");
        let meta = sim
            .req("GET", "/v1/secret/metadata/db", Some(TOKEN), None)
            .json();
        drop(sim);
        (db, meta)
    })
    .await
    .unwrap();
    let index = db.as_object().unwrap();
    assert_eq!(index.len(), 200);
    for i in 0..200 {
        assert_eq!(index[&format!("k{i:03}")]["n"], i);
    }
    // Far fewer writes than entries: the queued changes were applied together.
    let versions = meta["data"]["current_version"].as_u64().unwrap();
    assert!(
        versions < 200,
        "{versions} versions for 200 entries: no group commit"
    );
    eprintln!("200 entries in {versions} index versions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_keeps_the_fields_other_writers_own() {
    let sim = VaultSim::start(TOKEN, &[]);
    let provider = VaultProvider::with_config(Config {
        addr: sim.url(),
        token: Some(TOKEN.to_string()),
        ..Config::default()
    });
    let attrs = |plan: &str| {
        let mut a = BTreeMap::new();
        a.insert("path".to_string(), json!("db"));
        a.insert("key".to_string(), json!("i1"));
        a.insert("value".to_string(), json!({ "plan_id": plan }));
        a.insert(
            "preserve_keys".to_string(),
            json!(["reconciled", "orphaned"]),
        );
        a
    };
    fn req(a: &BTreeMap<String, Value>) -> ChangeRequest<'_> {
        ChangeRequest {
            address: "vault_index_entry.i1",
            ty: "vault_index_entry",
            attributes: a,
            prior: None,
            lineage: "00000000-0000-0000-0000-000000000000",
            progress: Arc::new(|_| {}),
            cancel: Default::default(),
            resumed: false,
        }
    }
    let first = attrs("small");
    provider.create(req(&first)).await.expect("create");
    // Another writer (the reconciler) marks the entry; an unrelated key comes too.
    let (sim, status) = tokio::task::spawn_blocking(move || {
        let body = r#"{"data":{"i1":{"plan_id":"small","reconciled":true,"stray":1}}}"#;
        let r = sim.req("POST", "/v1/secret/data/db", Some(TOKEN), Some(body));
        (sim, r.status)
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    let second = attrs("large");
    provider.update(req(&second)).await.expect("update");
    let db = tokio::task::spawn_blocking(move || sim_read(&sim, "db").unwrap())
        .await
        .unwrap();
    // The planned value wins; the preserved mark stays; anything else does not.
    assert_eq!(
        db["i1"],
        json!({"plan_id": "large", "reconciled": true}),
        "{db}"
    );
}

#[test]
fn missing_vault_addr_is_reported_only_when_vault_is_used() {
    let s = Scratch::new();
    s.write("vault/spec.yaml", &spec("pw", &["i1"]));
    let o = run_no_vault(&s, &["apply", "--auto-approve", "vault/spec.yaml"]);
    assert_code(&o, 1);
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("VAULT_ADDR"), "{all}");

    s.write("null/spec.yaml", &tree_spec("nullonly", 3, ""));
    let o = run_no_vault(&s, &["validate", "null/spec.yaml"]);
    assert_code(&o, 0);
    let o = run_no_vault(&s, &["plan", "null/spec.yaml"]);
    assert_code(&o, 0);
    let o = run_no_vault(&s, &["apply", "--auto-approve", "null/spec.yaml"]);
    assert_code(&o, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_mount_and_bad_token_are_explained() {
    let sim = VaultSim::start(TOKEN, &[]);
    let create = |provider: VaultProvider, mount: &'static str| async move {
        let mut attrs = BTreeMap::new();
        attrs.insert("path".to_string(), json!("x"));
        attrs.insert("mount".to_string(), json!(mount));
        attrs.insert("data".to_string(), json!({"a": "b"}));
        provider
            .create(ChangeRequest {
                address: "vault_secret.x",
                ty: "vault_secret",
                attributes: &attrs,
                prior: None,
                lineage: "00000000-0000-0000-0000-000000000000",
                progress: Arc::new(|_| {}),
                cancel: Default::default(),
                resumed: false,
            })
            .await
            .expect_err("must fail")
            .message
    };
    let config = Config {
        addr: sim.url(),
        token: Some(TOKEN.to_string()),
        ..Config::default()
    };
    let msg = create(VaultProvider::with_config(config.clone()), "nope").await;
    assert!(
        msg.contains("`nope`") && msg.contains("VAULT_ADDR"),
        "{msg}"
    );
    let bad = Config {
        token: Some("wrong".to_string()),
        ..config
    };
    let msg = create(VaultProvider::with_config(bad), "secret").await;
    assert!(
        msg.contains("permission denied: check VAULT_TOKEN / AppRole for"),
        "{msg}"
    );
    assert!(
        msg.contains("GET /v1/sys/internal/ui/mounts/secret"),
        "{msg}"
    );
    tokio::task::spawn_blocking(move || drop(sim))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_login_is_used_without_a_token() {
    let sim = VaultSim::start(TOKEN, &["--approle", "role-1:secret-1"]);
    let config = Config {
        addr: sim.url(),
        approle: Some(("role-1".to_string(), "secret-1".to_string())),
        ..Config::default()
    };
    let provider = VaultProvider::with_config(config);
    let mut attrs = BTreeMap::new();
    attrs.insert("path".to_string(), json!("via/approle"));
    attrs.insert("data".to_string(), json!({"k": "v"}));
    let applied = provider
        .create(ChangeRequest {
            address: "vault_secret.a",
            ty: "vault_secret",
            attributes: &attrs,
            prior: None,
            lineage: "00000000-0000-0000-0000-000000000000",
            progress: Arc::new(|_| {}),
            cancel: Default::default(),
            resumed: false,
        })
        .await
        .expect("create with AppRole");
    assert_eq!(applied.outputs["version"], 1);
    let data = tokio::task::spawn_blocking(move || sim_read(&sim, "via/approle"))
        .await
        .unwrap();
    assert_eq!(data, Some(json!({"k": "v"})));
}
