//! Black-box tests of `anvil capacity` against `anvil sim cf` and `anvil sim bosh`:
//! cells only from `diego_cell`/`compute` jobs with the vitals the simulator was given,
//! apps with their processes' memory, segments, a second run within the TTL served from
//! the cache (counted by both simulators' request stats), degraded mode when the
//! Director fails, an error naming the CF API URL when it is down, and bad input.

mod common;
mod sim_bosh_support;

use common::{assert_code, stderr, stdout, Scratch};
use serde_json::{json, Value};
use sim_bosh_support::BoshSim;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `anvil sim cf`; killed when dropped.
struct CfSim {
    child: Child,
    url: String,
}

impl CfSim {
    fn start(args: &[&str]) -> CfSim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_anvil"))
            .args(["sim", "cf", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start anvil sim cf");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(url) = line.strip_prefix("anvil sim cf listening on ") else {
            let _ = child.kill();
            panic!("unexpected first line: {line:?}");
        };
        CfSim {
            url: url.to_string(),
            child,
        }
    }

    fn requests(&self) -> u64 {
        get_json(&format!("{}/_sim/stats", self.url))["requests"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for CfSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn get_json(url: &str) -> Value {
    rt().block_on(async { reqwest::get(url).await.unwrap().json().await.unwrap() })
}

fn put_json(url: &str, body: &Value) -> u16 {
    rt().block_on(async {
        reqwest::Client::new()
            .put(url)
            .json(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

const SEED: &str = r#"{
  "isolation_segments": [{"guid": "seg-prod", "name": "prod"}],
  "spaces": [
    {"guid": "sp-dev", "name": "dev"},
    {"guid": "sp-prod", "name": "prod", "isolation_segment": "seg-prod"}
  ],
  "apps": [
    {"guid": "app-web", "name": "web", "space": "sp-prod", "processes": [
      {"guid": "p-web", "instances": 2, "memory_in_mb": 1024, "mem_used_mb": 300},
      {"guid": "p-worker", "type": "worker", "instances": 1, "memory_in_mb": 512, "mem_used_mb": 100}
    ]},
    {"guid": "app-api", "name": "api", "space": "sp-dev", "processes": [
      {"guid": "p-api", "instances": 3, "memory_in_mb": 256, "mem_used_mb": 128}
    ]},
    {"guid": "app-off", "name": "off", "space": "sp-dev", "state": "STOPPED", "processes": [
      {"guid": "p-off", "instances": 1, "memory_in_mb": 2048}
    ]}
  ]
}"#;

const CF_MANIFEST: &str = "
name: cf
instance_groups:
- {name: diego_cell, instances: 2, vm_type: cell, azs: [z1], networks: [{name: default}], jobs: [{name: rep}]}
- {name: router, instances: 1, vm_type: small, azs: [z1], networks: [{name: default}], jobs: [{name: gorouter}]}
- {name: compute, instances: 1, vm_type: cell, azs: [z1], networks: [{name: default}], jobs: [{name: rep}]}
";

const CLOUD_CONFIG: &str = "
vm_types:
- {name: cell, cloud_properties: {ram: 32768, ephemeral_disk: 102400}}
- {name: small, cloud_properties: {ram: 2048, ephemeral_disk: 10240}}
";

/// A Director with a `cf` deployment (two diego cells, a router, a compute VM), the
/// vitals of `diego_cell/0` and `compute/0` set, and a cloud config.
fn director(extra: &[&str]) -> BoshSim {
    let bosh = BoshSim::start(extra, None);
    bosh.post_json(
        "/configs",
        &json!({"type": "cloud", "name": "default", "content": CLOUD_CONFIG}),
    );
    bosh.deploy(CF_MANIFEST);
    for (vm, v) in [
        (
            "diego_cell/0",
            json!({"mem_total_kb": 33554432, "mem_percent": 25, "cpu_user": 30.0,
            "cpu_sys": 5.0, "disk_ephemeral_percent": 40, "disk_persistent_percent": 0}),
        ),
        (
            "compute/0",
            json!({"mem_total_kb": 8388608, "mem_percent": 50, "cpu_user": 1.0,
            "cpu_sys": 1.0, "disk_ephemeral_percent": 10, "disk_persistent_percent": 0}),
        ),
    ] {
        let status = put_json(&format!("{}/_sim/vitals/cf/{vm}", bosh.url), &v);
        assert_eq!(status, 200, "{vm}");
    }
    bosh
}

fn capacity(s: &Scratch, cf: &str, bosh: Option<&str>, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["capacity", "--cf-api", cf, "--cf-password", "admin"];
    args.extend_from_slice(extra);
    let mut c = s.cmd(&args);
    c.env_remove("CF_API")
        .env_remove("BOSH_CA_CERT")
        .env("BOSH_CLIENT", "admin")
        .env("BOSH_CLIENT_SECRET", "admin");
    match bosh {
        Some(u) => c.env("BOSH_ENVIRONMENT", u),
        None => c.env_remove("BOSH_ENVIRONMENT"),
    };
    c.output().unwrap()
}

#[test]
fn reports_cells_apps_and_segments_and_serves_a_second_run_from_the_cache() {
    let s = Scratch::new();
    let seed = s.write("seed.json", SEED);
    let cf = CfSim::start(&["--seed-file", seed.to_str().unwrap()]);
    let bosh = director(&[]);
    let out = capacity(
        &s,
        &cf.url,
        Some(&bosh.url),
        &["--json", "--cache", "cache.json"],
    );
    assert_code(&out, 0);
    let d: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(d["metadata"]["bosh_available"], true);
    assert_eq!(d["metadata"]["cached"], false);
    let cells = d["cells"].as_array().unwrap();
    let names: Vec<&str> = cells.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["diego_cell/0", "diego_cell/1", "compute/0"],
        "no router"
    );
    // diego_cell/0: 32 GiB total (the simulator reports 8 GiB used at 25 %).
    let c0 = &cells[0];
    assert_eq!(c0["memory_mb"], 32768);
    assert_eq!(c0["used_mb"], 8192);
    assert_eq!(c0["cpu_percent"], 35.0);
    assert_eq!(c0["disk_mb"], 102400);
    assert_eq!(c0["disk_used_mb"], 40960);
    assert_eq!(c0["isolation_segment"], "shared");
    assert_eq!(
        (cells[2]["memory_mb"].clone(), cells[2]["used_mb"].clone()),
        (json!(8192), json!(4096))
    );
    // Started shared apps (api: 3 × 256) spread over the three shared cells.
    assert_eq!(c0["allocated_mb"], 256);

    let apps = d["apps"].as_array().unwrap();
    let web = apps.iter().find(|a| a["name"] == "web").unwrap();
    assert_eq!(web["instances"], 3);
    assert_eq!(web["requested_mb"], 2 * 1024 + 512);
    assert_eq!(web["actual_mb"], 2 * 300 + 100);
    assert_eq!(web["isolation_segment"], "prod");
    let api = apps.iter().find(|a| a["name"] == "api").unwrap();
    assert_eq!(
        (
            api["requested_mb"].clone(),
            api["isolation_segment"].clone()
        ),
        (json!(768), json!("shared"))
    );
    let off = apps.iter().find(|a| a["name"] == "off").unwrap();
    assert_eq!(off["actual_mb"], 0);
    let segments: Vec<&str> = d["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(segments, ["shared", "prod"]);

    // Second run within the TTL: from the cache file, no request to either API.
    let (cf_n, bosh_n) = (cf.requests(), bosh.stats()["requests"].as_u64().unwrap());
    let again = capacity(
        &s,
        &cf.url,
        Some(&bosh.url),
        &["--json", "--cache", "cache.json"],
    );
    assert_code(&again, 0);
    let d2: Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(d2["metadata"]["cached"], true);
    assert_eq!(d2["cells"], d["cells"]);
    assert_eq!(d2["apps"], d["apps"]);
    assert_eq!(cf.requests(), cf_n);
    assert_eq!(bosh.stats()["requests"].as_u64().unwrap(), bosh_n);

    // With a zero TTL the APIs are asked again.
    let fresh = capacity(
        &s,
        &cf.url,
        Some(&bosh.url),
        &["--json", "--cache", "cache.json", "--ttl", "0s"],
    );
    assert_code(&fresh, 0);
    let d3: Value = serde_json::from_str(&stdout(&fresh)).unwrap();
    assert_eq!(d3["metadata"]["cached"], false);
    assert!(cf.requests() > cf_n);

    // The text form names the cells and the totals.
    let text = capacity(&s, &cf.url, Some(&bosh.url), &[]);
    assert_code(&text, 0);
    let t = stdout(&text);
    assert!(
        t.contains("cf/diego_cell/0") && t.contains("3 apps") && t.contains("3 cells"),
        "{t}"
    );
}

#[test]
fn a_failing_director_gives_apps_only_within_the_retry_budget() {
    let s = Scratch::new();
    let cf = CfSim::start(&["--apps", "4", "--segments", "1"]);
    let bosh = BoshSim::start(&["--fail-rate", "1"], None);
    let out = capacity(
        &s,
        &cf.url,
        Some(&bosh.url),
        &["--json", "--bosh-backoff", "10ms"],
    );
    assert_code(&out, 0);
    let d: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(d["metadata"]["bosh_available"], false);
    assert_eq!(d["cells"], json!([]));
    assert_eq!(d["apps"].as_array().unwrap().len(), 4);
    // The first attempt and three retries, one request each (`/info` fails first).
    assert_eq!(bosh.stats()["requests"], 4);

    // A Director that is not there at all: the same.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", port.local_addr().unwrap());
    drop(port);
    let out = capacity(
        &s,
        &cf.url,
        Some(&gone),
        &["--json", "--bosh-backoff", "10ms"],
    );
    assert_code(&out, 0);
    let d: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(d["metadata"]["bosh_available"], false);
    let text = capacity(&s, &cf.url, Some(&gone), &["--bosh-backoff", "10ms"]);
    assert!(stdout(&text).contains("Degraded"), "{}", stdout(&text));
}

#[test]
fn a_cf_api_that_is_down_or_refuses_fails_naming_its_url() {
    let s = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", port.local_addr().unwrap());
    drop(port);
    let out = capacity(&s, &gone, None, &["--json"]);
    assert_code(&out, 1);
    assert!(stdout(&out).is_empty());
    let e = stderr(&out);
    assert!(e.contains(&format!("the CF API {gone} failed")), "{e}");

    // Wrong password: the UAA's refusal, naming the API and what to check.
    let cf = CfSim::start(&["--apps", "1"]);
    let out = s
        .cmd(&["capacity", "--cf-api", &cf.url, "--cf-password", "wrong"])
        .env_remove("BOSH_ENVIRONMENT")
        .output()
        .unwrap();
    assert_code(&out, 1);
    let e = stderr(&out);
    assert!(e.contains(&cf.url) && e.contains("password"), "{e}");

    // A CF API failing every request: an error, not a partial answer.
    assert_eq!(
        put_json(
            &format!("{}/_sim/faults", cf.url),
            &json!({"fail_rate": 1.0})
        ),
        200
    );
    let out = capacity(&s, &cf.url, None, &["--json"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains(&cf.url), "{}", stderr(&out));
}

#[test]
fn bad_input_is_refused_with_what_to_do() {
    let s = Scratch::new();
    let out = s.cmd(&["capacity"]).env_remove("CF_API").output().unwrap();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("--cf-api"), "{}", stderr(&out));

    // A seed file that is not JSON, or whose references dangle: the simulator says which.
    let bad = s.write("bad.json", "{\"apps\": [");
    let out = s
        .cmd(&[
            "sim",
            "cf",
            "--listen",
            "127.0.0.1:0",
            "--seed-file",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(stderr(&out).contains("bad.json"), "{}", stderr(&out));
    let dangling = s.write(
        "dangling.json",
        r#"{"apps": [{"guid": "a", "name": "a", "space": "nowhere"}]}"#,
    );
    let out = s
        .cmd(&[
            "sim",
            "cf",
            "--listen",
            "127.0.0.1:0",
            "--seed-file",
            dangling.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("names space nowhere"),
        "{}",
        stderr(&out)
    );

    // Vitals out of range, or for a VM that is not a cell, are refused by the simulator.
    let bosh = BoshSim::start(&[], None);
    let v = json!({"mem_total_kb": 1, "mem_percent": 101, "cpu_user": 1.0, "cpu_sys": 1.0,
        "disk_ephemeral_percent": 1, "disk_persistent_percent": 1});
    assert_eq!(
        put_json(&format!("{}/_sim/vitals/cf/diego_cell/0", bosh.url), &v),
        400
    );
    let mut ok = v.clone();
    ok["mem_percent"] = json!(10);
    assert_eq!(
        put_json(&format!("{}/_sim/vitals/cf/router/0", bosh.url), &ok),
        400
    );
    assert_eq!(
        put_json(&format!("{}/_sim/vitals/cf/diego_cell/0", bosh.url), &ok),
        200
    );
}

/// Acceptance 3: `anvil plan` of the example Foundation (22 GiB of memory: one small
/// and three medium Redis VMs, two medium PostgreSQL VMs) against a Director whose two
/// cells have 8 GiB free warns with both numbers; `--capacity-check=error` exits 1; with
/// enough room nothing is said.
#[test]
fn a_foundation_plan_is_checked_against_the_cells_free_capacity() {
    let s = Scratch::new();
    s.copy_example("foundation", "foundation");
    let bosh = BoshSim::start(&[], None);
    let cloud = "
vm_types:
- {name: small, cloud_properties: {ram: 2048}}
- {name: medium, cloud_properties: {ram: 4096}}
- {name: cell, cloud_properties: {ram: 16384, ephemeral_disk: 102400}}
";
    bosh.post_json(
        "/configs",
        &json!({"type": "cloud", "name": "default", "content": cloud}),
    );
    bosh.deploy(
        "name: cf\ninstance_groups:\n- {name: diego_cell, instances: 2, vm_type: cell, networks: [{name: default}], jobs: [{name: rep}]}\n",
    );
    let set = |total_kb: u64, percent: u64| {
        for i in 0..2 {
            let v = json!({"mem_total_kb": total_kb, "mem_percent": percent, "cpu_user": 1.0,
                "cpu_sys": 1.0, "disk_ephemeral_percent": 40, "disk_persistent_percent": 0});
            assert_eq!(
                put_json(&format!("{}/_sim/vitals/cf/diego_cell/{i}", bosh.url), &v),
                200
            );
        }
    };
    let vault = s.path().to_path_buf();
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", "foundation"];
        args.extend_from_slice(extra);
        s.cmd(&args)
            .env("BOSH_ENVIRONMENT", &bosh.url)
            .env("BOSH_CLIENT", "admin")
            .env("BOSH_CLIENT_SECRET", "admin")
            .env_remove("BOSH_CA_CERT")
            // Planning a Foundation with an empty state reads nothing from Vault.
            .env("VAULT_ADDR", "http://127.0.0.1:9")
            .env("VAULT_TOKEN", "unused")
            .current_dir(&vault)
            .output()
            .unwrap()
    };
    // 16 GiB cells at 75 %: 4 GiB free each.
    set(16 * 1024 * 1024, 75);
    let o = plan(&[]);
    assert_code(&o, 0);
    let e = stderr(&o);
    assert!(
        e.contains("this plan needs 22 GiB of memory; cells have 8 GiB free"),
        "{e}"
    );
    assert!(!e.contains("of disk"), "enough disk: {e}");
    assert!(stdout(&o).contains("Plan:"), "{}", stdout(&o));

    let o = plan(&["--capacity-check=error"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("this plan needs 22 GiB of memory; cells have 8 GiB free"),
        "{}",
        stderr(&o)
    );

    let o = plan(&["--capacity-check=off"]);
    assert_code(&o, 0);
    assert!(!stderr(&o).contains("this plan needs"), "{}", stderr(&o));

    // 64 GiB cells at 10 %: 115.2 GiB free; nothing said, even with error.
    set(64 * 1024 * 1024, 10);
    let o = plan(&["--capacity-check=error"]);
    assert_code(&o, 0);
    assert!(!stderr(&o).contains("capacity"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("this plan needs"), "{}", stderr(&o));
}
