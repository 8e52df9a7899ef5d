//! Acceptance of `anvil reconcile` (issue 4) against the real `anvil sim bosh` and
//! `anvil sim vault`: restart recovery rebuilds a wiped `db` index with all three
//! matching strategies and leaves an unknown deployment alone; deleted deployments are
//! marked orphaned (secrets kept) and un-marked when they come back; backups are written
//! before each update and pruned to the retention, or not written when disabled;
//! settings precedence and bad settings through the binary; and SIGTERM during a
//! `--watch` run lets the run finish and exits 0.

mod common;
#[path = "sim_bosh_support/mod.rs"]
mod sim_bosh_support;
#[path = "sim_vault_support/mod.rs"]
mod sim_vault_support;

use anvil::providers::bosh::client::{Client as BoshClient, Config as BoshConfig};
use anvil::providers::vault::client::{Client as VaultClient, Config as VaultConfig};
use common::*;
use serde_json::{json, Value};
use sim_bosh_support::BoshSim;
use sim_vault_support::VaultSim;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TOKEN: &str = "root";

/// Instances of examples/foundation.
const REDIS_SMALL: &str = "6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01";
const REDIS_CLUSTER: &str = "1f7e9d3c-5b2a-4c8e-a6d4-3e2f1a0b9c72";
const PG_A: &str = "9c3d5e7f-1a2b-4c6d-8e0f-a1b2c3d4e5f6";
const PG_B: &str = "4b5c6d7e-8f9a-4b1c-9d3e-4f5a6b7c8d9e";
/// Instances deployed by hand, outside the Foundation.
const BY_METADATA: &str = "0a0b0c0d-1e1f-4a2b-8c3d-4e5f6a7b8c9d";
const BY_RELEASES: &str = "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910";

/// Both simulators, a scratch directory holding examples/foundation, and a runtime for
/// talking to the simulators with anvil's own clients.
struct Env {
    rt: tokio::runtime::Runtime,
    bosh: BoshSim,
    vault: VaultSim,
    s: Scratch,
}

impl Env {
    fn new() -> Env {
        let s = Scratch::new();
        s.copy_example("foundation", "foundation");
        Env {
            rt: tokio::runtime::Runtime::new().unwrap(),
            bosh: BoshSim::start(&[], None),
            vault: VaultSim::start(TOKEN, &[]),
            s,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.s.cmd(args);
        at_simulators(&mut c, &self.bosh.url, &self.vault.url(), TOKEN);
        for k in anvil::reconcile::settings::keys() {
            c.env_remove(anvil::reconcile::settings::env_name(k));
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run anvil")
    }

    fn apply_foundation(&self) {
        let o = self.run(&["apply", "--auto-approve", "foundation"]);
        assert_code(&o, 0);
    }

    /// `anvil reconcile --foundation foundation --json ARGS...`, expecting `code`.
    fn reconcile(&self, extra: &[&str], code: i32) -> Value {
        let mut args = vec!["reconcile", "--foundation", "foundation", "--json"];
        args.extend_from_slice(extra);
        let o = self.run(&args);
        assert_code(&o, code);
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("--json output: {e}\n{}", stdout(&o)))
    }

    fn bosh(&self) -> BoshClient {
        self.rt
            .block_on(BoshClient::connect(&BoshConfig {
                url: self.bosh.url.clone(),
                client: "admin".into(),
                secret: "admin".into(),
                ca_cert: None,
            }))
            .unwrap()
    }

    fn vault(&self) -> VaultClient {
        self.rt
            .block_on(VaultClient::connect(&VaultConfig {
                addr: self.vault.url(),
                token: Some(TOKEN.into()),
                ..VaultConfig::default()
            }))
            .unwrap()
    }

    fn deploy(&self, name: &str, manifest: &str) {
        let c = self.bosh();
        let text = format!("name: {name}\n{manifest}");
        self.rt.block_on(async {
            let task = c
                .deploy(name, &text, |_| false, false)
                .await
                .unwrap()
                .unwrap();
            c.follow_task(task, name, &|_| {}, &Default::default())
                .await
                .unwrap();
        });
    }

    fn undeploy(&self, name: &str) {
        let c = self.bosh();
        self.rt.block_on(async {
            let task = c.delete_deployment(name).await.unwrap().unwrap();
            c.follow_task(task, name, &|_| {}, &Default::default())
                .await
                .unwrap();
        });
    }

    fn manifest(&self, name: &str) -> Option<String> {
        let c = self.bosh();
        self.rt.block_on(c.manifest(name)).unwrap()
    }

    fn names(&self) -> Vec<String> {
        let c = self.bosh();
        let mut n = self.rt.block_on(c.deployment_names()).unwrap();
        n.sort();
        n
    }

    fn read(&self, path: &str) -> Option<Value> {
        let c = self.vault();
        self.rt
            .block_on(c.read("secret", path))
            .unwrap()
            .data
            .map(Value::Object)
    }

    fn list(&self, path: &str) -> Vec<String> {
        let c = self.vault();
        self.rt.block_on(c.list("secret", path)).unwrap()
    }

    fn index(&self) -> serde_json::Map<String, Value> {
        self.read("db")
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
    }

    fn wipe_index(&self) {
        let c = self.vault();
        self.rt.block_on(c.delete_all("secret", "db")).unwrap();
        assert!(self.index().is_empty());
    }
}

fn manifest(release: &str, extra: &str) -> String {
    format!(
        "releases:\n- {{name: {release}, version: latest}}\nstemcells:\n- {{alias: default, os: ubuntu-jammy, version: latest}}\ninstance_groups:\n- name: main\n  instances: 1\n  vm_type: small\n  azs: [z1]\n  stemcell: default\n  networks: [{{name: services}}]\n  jobs:\n  - {{name: {release}, release: {release}}}\n{extra}"
    )
}

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn restart_recovery_rebuilds_the_index_with_every_strategy() {
    let e = Env::new();
    e.apply_foundation();
    // Deployed by hand: one carrying Blacksmith metadata under a free-form name, one
    // whose releases match only the postgresql plan, one matching nothing.
    e.deploy(
        "legacy-redis",
        &manifest(
            "redis",
            &format!(
                "properties:\n  blacksmith: {{service_id: redis, plan_id: redis-cluster, instance_id: {BY_METADATA}}}\n"
            ),
        ),
    );
    let by_releases = format!("pg-imported-{BY_RELEASES}");
    e.deploy(&by_releases, &manifest("postgres", ""));
    let stray = manifest("nginx", "");
    e.deploy("nginx-proxy", &stray);
    let stray_before = e.manifest("nginx-proxy");

    e.wipe_index();
    let out = e.reconcile(&[], 0);
    let r = &out["report"];
    assert_eq!(r["deployments_scanned"], 7, "{r:#}");

    let strategies: Vec<(String, String)> = r["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["instance_id"].as_str().unwrap().to_string(),
                m["strategy"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (id, want) in [
        (REDIS_SMALL, "name"),
        (REDIS_CLUSTER, "name"),
        (PG_A, "name"),
        (PG_B, "name"),
        (BY_METADATA, "metadata"),
        (BY_RELEASES, "releases"),
    ] {
        assert!(
            strategies.contains(&(id.to_string(), want.to_string())),
            "{id} by {want}: {strategies:?}"
        );
    }
    let m = r["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["strategy"] == "releases")
        .unwrap();
    assert_eq!(m["confidence"], 0.5);

    // The index is rebuilt with the right service and plan for every match.
    let idx = e.index();
    assert_eq!(idx.len(), 6, "{idx:#?}");
    for (id, service, plan, deployment) in [
        (
            REDIS_SMALL,
            "redis",
            "redis-small",
            format!("redis-small-{REDIS_SMALL}"),
        ),
        (
            REDIS_CLUSTER,
            "redis",
            "redis-cluster",
            format!("redis-cluster-{REDIS_CLUSTER}"),
        ),
        (
            PG_A,
            "postgresql",
            "postgresql-standard",
            format!("postgresql-standard-{PG_A}"),
        ),
        (
            PG_B,
            "postgresql",
            "postgresql-standard",
            format!("postgresql-standard-{PG_B}"),
        ),
        (
            BY_METADATA,
            "redis",
            "redis-cluster",
            "legacy-redis".to_string(),
        ),
        (
            BY_RELEASES,
            "postgresql",
            "postgresql-standard",
            by_releases.clone(),
        ),
    ] {
        let entry = &idx[id];
        assert_eq!(entry["service_id"], service, "{id}: {entry}");
        assert_eq!(entry["plan_id"], plan, "{id}: {entry}");
        assert_eq!(
            entry["deployment_name"],
            deployment.as_str(),
            "{id}: {entry}"
        );
        assert_eq!(entry["reconciled"], true, "{id}: {entry}");
        assert!(entry["reconciled_at"].is_string() && entry["last_synced_at"].is_string());
        let stored = e.read(&format!("{id}/manifest")).unwrap();
        assert_eq!(stored["reconciled"], true);
        assert!(stored["manifest"].as_str().unwrap().contains("releases"));
    }

    // The stray deployment is reported and left alone.
    let unmatched = r["unmatched"].as_array().unwrap();
    assert_eq!(unmatched.len(), 1, "{unmatched:?}");
    assert_eq!(unmatched[0]["deployment"], "nginx-proxy");
    assert!(unmatched[0]["reason"].as_str().unwrap().contains("nginx"));
    assert_eq!(e.manifest("nginx-proxy"), stray_before);
    assert!(!e.names().is_empty());

    // The text summary names the strategies and the stray deployment.
    let o = e.run(&["reconcile", "--foundation", "foundation"]);
    assert_code(&o, 0);
    let text = stdout(&o);
    assert!(
        text.contains("4 by name, 1 by metadata, 1 by releases"),
        "{text}"
    );
    assert!(text.contains("unmatched  nginx-proxy"), "{text}");
}

#[test]
fn orphans_are_marked_kept_and_cleared() {
    let e = Env::new();
    e.apply_foundation();
    e.reconcile(&[], 0);
    let gone = [REDIS_SMALL, PG_B];
    let names = [
        format!("redis-small-{REDIS_SMALL}"),
        format!("postgresql-standard-{PG_B}"),
    ];
    let kept_manifest = e.manifest(&names[0]).unwrap();
    let secrets_before: Vec<(String, Option<Value>)> = gone
        .iter()
        .flat_map(|id| [format!("{id}/manifest"), format!("{id}/metadata")])
        .map(|p| (p.clone(), e.read(&p)))
        .collect();
    for n in &names {
        e.undeploy(n);
    }

    let r = e.reconcile(&[], 0);
    assert_eq!(
        strings(&r["report"]["newly_orphaned"]),
        sorted(&gone),
        "{r:#}"
    );
    let idx = e.index();
    for (id, entry) in &idx {
        let orphaned = entry.get("orphaned") == Some(&json!(true));
        assert_eq!(orphaned, gone.contains(&id.as_str()), "{id}: {entry}");
        if orphaned {
            assert_eq!(entry["orphaned_reason"], "no_bosh_deployment");
            assert!(entry["orphaned_at"].is_string());
            // The entry itself is kept.
            assert!(entry["plan_id"].is_string());
        }
    }
    // Every secret of the orphans is still there (the manifest secret unchanged).
    for (path, before) in &secrets_before {
        let now = e.read(path);
        assert!(now.is_some(), "{path} was deleted");
        assert_eq!(&now, before, "{path} changed");
    }
    // Their data was backed up before the mark.
    assert!(!e.list(&format!("{REDIS_SMALL}/backups")).is_empty());

    // The deployment comes back: its mark goes, the other stays.
    e.deploy(&names[0], &kept_manifest);
    let r = e.reconcile(&[], 0);
    assert_eq!(strings(&r["report"]["cleared"]), sorted(&[REDIS_SMALL]));
    let idx = e.index();
    assert!(
        idx[REDIS_SMALL].get("orphaned").is_none(),
        "{}",
        idx[REDIS_SMALL]
    );
    assert!(idx[REDIS_SMALL].get("orphaned_at").is_none());
    assert_eq!(idx[PG_B]["orphaned"], true);
    assert_eq!(
        strings(&r["report"]["newly_orphaned"]),
        Vec::<String>::new()
    );
    assert_eq!(r["report"]["orphaned"].as_array().unwrap().len(), 1);
}

#[test]
fn backups_come_first_and_keep_the_retention() {
    let e = Env::new();
    let name = format!("redis-small-{REDIS_SMALL}");
    let mut previous: Option<String> = None;
    for run in 0..5 {
        // Each run sees a changed instance: a new manifest on the Director.
        let m = manifest("redis", &format!("properties: {{generation: {run}}}\n"));
        e.deploy(&name, &m);
        let r = e.reconcile(&["--backup-retention", "3"], 0);
        assert_eq!(r["report"]["backups_written"], 1, "{r:#}");
        let keys = e.list(&format!("{REDIS_SMALL}/backups"));
        let newest = keys
            .iter()
            .max_by_key(|k| k.parse::<i64>().unwrap())
            .unwrap()
            .clone();
        let backup = e.read(&format!("{REDIS_SMALL}/backups/{newest}")).unwrap();
        // The backup holds the Vault data as it was before this run's update.
        match &previous {
            None => assert_eq!(backup["manifest"], Value::Null, "{backup:#}"),
            Some(prev) => assert_eq!(backup["manifest"]["manifest"], prev.as_str(), "{backup:#}"),
        }
        previous = e.read(&format!("{REDIS_SMALL}/manifest")).unwrap()["manifest"]
            .as_str()
            .map(str::to_string);
        assert!(previous
            .as_deref()
            .unwrap()
            .contains(&format!("generation: {run}")));
    }
    let keys = e.list(&format!("{REDIS_SMALL}/backups"));
    assert_eq!(keys.len(), 3, "{keys:?}");

    // With backups disabled, none are written.
    let other = format!("redis-cluster-{REDIS_CLUSTER}");
    e.deploy(&other, &manifest("redis", ""));
    let r = e.reconcile(&["--backup-enabled", "false"], 0);
    assert_eq!(r["report"]["backups_written"], 0);
    assert!(e.list(&format!("{REDIS_CLUSTER}/backups")).is_empty());
    assert_eq!(e.index()[REDIS_CLUSTER]["reconciled"], true);
    assert_eq!(e.list(&format!("{REDIS_SMALL}/backups")).len(), 3);
}

#[test]
fn settings_come_from_flags_then_env_then_file_then_defaults() {
    let e = Env::new();
    e.s.write(
        "reconciler.yml",
        "# reconciler settings\nbatch_size: 4\nmax_concurrency: 3\nbackup_retention: 2\ncache_ttl: 1m\n",
    );
    let o = e
        .cmd(&[
            "reconcile",
            "--foundation",
            "foundation",
            "--json",
            "--config",
            "reconciler.yml",
            "--max-concurrency",
            "1",
        ])
        .env("ANVIL_RECONCILER_BATCH_SIZE", "6")
        .env("ANVIL_RECONCILER_MAX_CONCURRENCY", "2")
        .output()
        .unwrap();
    assert_code(&o, 0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let (s, src) = (&v["settings"], &v["sources"]);
    assert_eq!(s["max_concurrency"], 1);
    assert_eq!(src["max_concurrency"], "flag --max-concurrency");
    assert_eq!(s["batch_size"], 6);
    assert_eq!(
        src["batch_size"],
        "environment variable ANVIL_RECONCILER_BATCH_SIZE"
    );
    assert_eq!(s["backup"]["retention"], 2);
    assert_eq!(src["backup_retention"], "reconciler.yml:4");
    assert_eq!(s["cache_ttl"], "1m");
    assert_eq!(s["retry_attempts"], 3);
    assert_eq!(src["retry_attempts"], "default");

    // Bad values name their source and what is expected; nothing is touched.
    let o = e
        .cmd(&["reconcile", "--foundation", "foundation"])
        .env("ANVIL_RECONCILER_INTERVAL", "soon")
        .output()
        .unwrap();
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("environment variable ANVIL_RECONCILER_INTERVAL")
            && stderr(&o).contains("expected e.g. 30s"),
        "{}",
        stderr(&o)
    );
    e.s.write("bad.yml", "interval: 1h\nbackup_enabled: sometimes\n");
    let o = e.run(&[
        "reconcile",
        "--foundation",
        "foundation",
        "--config",
        "bad.yml",
    ]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("bad.yml:2: backup_enabled"),
        "{}",
        stderr(&o)
    );
    let o = e.run(&[
        "reconcile",
        "--foundation",
        "foundation",
        "--batch-size",
        "0",
    ]);
    assert_code(&o, 1);
    assert!(stderr(&o).contains("flag --batch-size"), "{}", stderr(&o));
    assert!(e.index().is_empty());

    // Disabled: nothing to do.
    let o = e
        .cmd(&["reconcile", "--foundation", "foundation"])
        .env("ANVIL_RECONCILER_ENABLED", "false")
        .output()
        .unwrap();
    assert_code(&o, 0);
    assert!(stdout(&o).contains("disabled"), "{}", stdout(&o));
}

#[test]
fn a_foundation_path_without_a_foundation_is_explained() {
    let e = Env::new();
    e.s.write("other/r.yaml", &tree_spec("other", 1, ""));
    let o = e.run(&["reconcile", "--foundation", "other"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("no `kind: Foundation` document"),
        "{}",
        stderr(&o)
    );
    let o = e
        .cmd(&["reconcile", "--foundation", "foundation"])
        .env_remove("VAULT_ADDR")
        .output()
        .unwrap();
    assert_code(&o, 1);
    assert!(stderr(&o).contains("VAULT_ADDR"), "{}", stderr(&o));
}

#[test]
fn sigterm_during_a_watch_run_lets_it_finish_and_exits_0() {
    let e = Env::new();
    e.apply_foundation();
    e.wipe_index();
    // Slow Director answers, so the run is still going when the signal arrives.
    let rt = &e.rt;
    let status = rt.block_on(async {
        reqwest::Client::new()
            .put(format!("{}/_sim/faults", e.bosh.url))
            .header("Content-Type", "application/json")
            .body(r#"{"latency_ms": 300}"#)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success());

    let mut child = e
        .cmd(&[
            "reconcile",
            "--foundation",
            "foundation",
            "--watch",
            "--interval",
            "1h",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(out), &mut s);
        s
    });
    let (tx, rx) = mpsc::channel::<String>();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut metrics_url = None;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no run started; stderr so far: {seen:#?}"));
        if let Some(url) = line.strip_prefix("Serving metrics on ") {
            metrics_url = Some(url.to_string());
        }
        let started = line.starts_with("Reconcile run 1 started");
        seen.push(line);
        if started {
            break;
        }
    }
    let metrics_url = metrics_url.expect("the metrics address is printed");
    let text = rt.block_on(async {
        reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        text.contains("# TYPE anvil_reconciler_runs_total counter"),
        "{text}"
    );

    // SAFETY: sending a signal to our own child process by its pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    let stdout_text = out_t.join().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(
        status.code(),
        Some(0),
        "stderr: {seen:#?} {rest:#?}\nstdout: {stdout_text}"
    );
    assert!(stdout_text.contains("Reconcile run 1:"), "{stdout_text}");
    assert!(
        rest.iter().any(|l| l.contains("stopped after 1 run(s)")),
        "{rest:#?}"
    );
    // The run finished its work: the whole index is back.
    assert_eq!(e.index().len(), 4);
}

#[test]
fn reconcile_and_apply_leave_each_other_alone() {
    let e = Env::new();
    e.apply_foundation();
    e.reconcile(&[], 0);
    // The reconciler's marks are neither a plan nor drift.
    let o = e.run(&["plan", "--detailed-exitcode", "foundation"]);
    assert_code(&o, 0);
    let o = e.run(&["drift", "foundation"]);
    assert_code(&o, 0);
    // An apply that does change an index entry keeps the marks.
    let spec = e.s.path().join("foundation/foundation.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let old_org = "organization_guid: 0d4bde2a-6b2e-4a52-9b3b-5f0e1c7a9d11";
    let changed = text.replacen(
        old_org,
        "organization_guid: 11111111-2222-4333-8444-555555555555",
        1,
    );
    assert_ne!(text, changed);
    std::fs::write(&spec, changed).unwrap();
    let o = e.run(&["apply", "--auto-approve", "foundation"]);
    assert_code(&o, 0);
    let entry = e.index()[REDIS_SMALL].clone();
    assert_eq!(
        entry["organization_guid"], "11111111-2222-4333-8444-555555555555",
        "{entry}"
    );
    assert_eq!(entry["reconciled"], true, "{entry}");
    assert!(entry["reconciled_at"].is_string(), "{entry}");
    assert!(entry["created_at"].is_string(), "{entry}");
    let o = e.run(&["plan", "--detailed-exitcode", "foundation"]);
    assert_code(&o, 0);
}
