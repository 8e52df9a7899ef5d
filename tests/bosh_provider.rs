//! Acceptance of the `bosh` provider against the real `anvil sim bosh`: basic auth over
//! TLS with the CA pinned (apply, no-op plan, manifest diff, update, delete), a wrong CA,
//! UAA with an expiring token, and failing tasks followed by convergence.

mod common;
#[path = "sim_bosh_support/mod.rs"]
mod sim_bosh_support;

use anvil::providers::bosh::client::Client;
use common::*;
use sim_bosh_support::BoshSim;
use std::process::Output;
use std::time::Duration;

fn run(s: &Scratch, sim: &BoshSim, ca: Option<&str>, args: &[&str]) -> Output {
    let mut c = s.cmd(args);
    c.env("BOSH_ENVIRONMENT", &sim.url)
        .env("BOSH_CLIENT", "admin")
        .env("BOSH_CLIENT_SECRET", "admin");
    match ca {
        Some(ca) => c.env("BOSH_CA_CERT", ca),
        None => c.env_remove("BOSH_CA_CERT"),
    };
    c.output().expect("run anvil")
}

fn manifest(instances: u32) -> String {
    format!(
        "releases:\n- {{name: redis, version: \"15.1\"}}\nstemcells:\n- {{alias: default, os: ubuntu-jammy, version: \"1.406\"}}\ninstance_groups:\n- name: redis\n  instances: {instances}\n  vm_type: small\n  azs: [z1]\n  jobs:\n  - {{name: redis-server, release: redis}}\n"
    )
}

fn spec(deps: &[(&str, u32)]) -> String {
    let mut s = "apiVersion: anvil/v1\nkind: Resources\nmetadata:\n  name: boshws\nresources:\n"
        .to_string();
    for (name, n) in deps {
        let m: String = manifest(*n)
            .lines()
            .map(|l| format!("        {l}\n"))
            .collect();
        s.push_str(&format!(
            "  - type: bosh_deployment\n    name: {name}\n    attributes:\n      name: {name}\n      manifest: |\n{m}"
        ));
    }
    s
}

#[test]
fn basic_auth_over_tls_apply_diff_update_delete() {
    let s = Scratch::new();
    let ca = s.path().join("ca.pem");
    let sim = BoshSim::start(&["--task-duration", "100ms"], Some(&ca));
    let ca = ca.to_string_lossy().to_string();
    s.write("spec.yaml", &spec(&[("redis-a", 1), ("redis-b", 2)]));

    let o = run(
        &s,
        &sim,
        Some(&ca),
        &["apply", "--auto-approve", "spec.yaml"],
    );
    assert_code(&o, 0);
    // The stage is said once, then its task lines (the Director's stage text is not
    // repeated on every line).
    let out = stdout(&o);
    assert!(
        out.contains("bosh_deployment.redis-a: Updating instance\n")
            && out.contains("bosh_deployment.redis-a: redis/0 (started)"),
        "{out}"
    );
    assert!(
        !out.contains("Preparing deployment Preparing deployment"),
        "{out}"
    );
    assert_eq!(sim.names(), vec!["redis-a", "redis-b"]);
    let st = s.state_json("boshws");
    assert!(st.to_string().contains("task_id"), "{st}");

    let o = run(
        &s,
        &sim,
        Some(&ca),
        &["plan", "--detailed-exitcode", "spec.yaml"],
    );
    assert_code(&o, 0);

    s.write("spec.yaml", &spec(&[("redis-a", 1), ("redis-b", 3)]));
    let o = run(
        &s,
        &sim,
        Some(&ca),
        &["plan", "--detailed-exitcode", "spec.yaml"],
    );
    assert_code(&o, 2);
    let out = stdout(&o);
    assert!(out.contains("instances: 2"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with('-') && l.contains("instances: 2")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with('+') && l.contains("instances: 3")),
        "{out}"
    );
    let o = run(
        &s,
        &sim,
        Some(&ca),
        &["apply", "--auto-approve", "spec.yaml"],
    );
    assert_code(&o, 0);
    assert!(
        sim.manifest("redis-b").unwrap().contains("instances: 3"),
        "{:?}",
        sim.manifest("redis-b")
    );
    let o = run(
        &s,
        &sim,
        Some(&ca),
        &["plan", "--detailed-exitcode", "spec.yaml"],
    );
    assert_code(&o, 0);

    s.write("spec.yaml", &spec(&[("redis-a", 1)]));
    let o = run(
        &s,
        &sim,
        Some(&ca),
        &["apply", "--auto-approve", "spec.yaml"],
    );
    assert_code(&o, 0);
    assert!(stdout(&o).contains("1 destroyed"), "{}", stdout(&o));
    assert_eq!(sim.names(), vec!["redis-a"]);
}

#[test]
fn wrong_ca_names_the_url_and_variable() {
    let s = Scratch::new();
    let ca = s.path().join("ca.pem");
    let other = s.path().join("other-ca.pem");
    let sim = BoshSim::start(&[], Some(&ca));
    let _other_sim = BoshSim::start(&[], Some(&other));
    s.write("spec.yaml", &spec(&[("redis-a", 1)]));
    let o = run(
        &s,
        &sim,
        Some(&other.to_string_lossy()),
        &["apply", "--auto-approve", "spec.yaml"],
    );
    assert_code(&o, 1);
    let err = format!("{}{}", stdout(&o), stderr(&o));
    assert!(err.contains("BOSH_CA_CERT"), "{err}");
    assert!(err.contains(&sim.url), "{err}");
}

#[test]
fn uaa_token_is_refreshed_after_expiry() {
    let s = Scratch::new();
    // Tasks outlive the token, so following one needs a refresh within one run.
    let sim = BoshSim::start(
        &[
            "--auth",
            "uaa",
            "--token-ttl",
            "1s",
            "--task-duration",
            "1500ms",
        ],
        None,
    );
    s.write("spec.yaml", &spec(&[("redis-a", 1)]));
    let o = run(&s, &sim, None, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    std::thread::sleep(Duration::from_millis(1500));
    s.write("spec.yaml", &spec(&[("redis-a", 2)]));
    let o = run(&s, &sim, None, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    // The expiry was met by a 401 and exactly one new token for it, per refusal: each
    // run logs in once, and every refused request led to one refresh. (Read before the
    // test's own client below logs in.)
    let stats = sim.stats();
    let refused = stats["unauthorized"].as_u64().unwrap();
    assert!(
        refused >= 1,
        "the token never expired under the client: {stats}"
    );
    assert_eq!(
        stats["tokens_issued"].as_u64().unwrap(),
        2 + refused,
        "{stats}"
    );
    assert!(sim.manifest("redis-a").unwrap().contains("instances: 2"));
}

#[test]
fn failed_tasks_name_deployment_and_task_then_converge() {
    let s = Scratch::new();
    let sim = BoshSim::start(&["--fail-tasks", "1", "--seed", "7"], None);
    s.write("spec.yaml", &spec(&[("redis-a", 1), ("redis-b", 1)]));
    let o = run(&s, &sim, None, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 1);
    let err = format!("{}{}", stdout(&o), stderr(&o));
    assert!(err.contains("redis-a") || err.contains("redis-b"), "{err}");
    assert!(err.contains("BOSH task "), "{err}");
    assert!(err.contains("error"), "{err}");

    sim.set_faults(r#"{"fail_rate":0.0,"fail_tasks":0.0,"task_duration_ms":0}"#);
    let o = run(&s, &sim, None, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert_eq!(sim.names(), vec!["redis-a", "redis-b"]);
    let o = run(
        &s,
        &sim,
        None,
        &["plan", "--detailed-exitcode", "spec.yaml"],
    );
    assert_code(&o, 0);
}

#[test]
fn configs_apply_read_and_forget() {
    let s = Scratch::new();
    let sim = BoshSim::start(&[], None);
    let spec = |azs: &str| {
        format!(
            "apiVersion: anvil/v1\nkind: Resources\nmetadata:\n  name: cfgws\nresources:\n  - type: bosh_config\n    name: cloud\n    attributes:\n      type: cloud\n      content: |\n        azs: [{azs}]\n"
        )
    };
    s.write("spec.yaml", &spec("{name: z1}"));
    let o = run(&s, &sim, None, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    let latest = || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let c = Client::connect(&sim.config()).await.unwrap();
            c.latest_config("cloud", "default").await.unwrap()
        })
    };
    assert!(latest().unwrap().1.contains("z1"));
    let o = run(
        &s,
        &sim,
        None,
        &["plan", "--detailed-exitcode", "spec.yaml"],
    );
    assert_code(&o, 0);
    s.write("spec.yaml", &spec("{name: z1}, {name: z2}"));
    let o = run(
        &s,
        &sim,
        None,
        &["plan", "--detailed-exitcode", "spec.yaml"],
    );
    assert_code(&o, 2);
    let o = run(&s, &sim, None, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    assert!(latest().unwrap().1.contains("z2"));
    let o = run(
        &s,
        &sim,
        None,
        &["plan", "--detailed-exitcode", "spec.yaml"],
    );
    assert_code(&o, 0);
}

#[test]
fn flaky_director_converges_with_each_deployment_once() {
    let s = Scratch::new();
    let sim = BoshSim::start(&["--fail-rate", "0.2", "--seed", "11"], None);
    s.write(
        "spec.yaml",
        &spec(&[("redis-a", 1), ("redis-b", 1), ("redis-c", 1)]),
    );
    let o = run(&s, &sim, None, &["apply", "--auto-approve", "spec.yaml"]);
    assert_code(&o, 0);
    sim.set_faults(r#"{"fail_rate":0.0}"#);
    assert_eq!(sim.names(), vec!["redis-a", "redis-b", "redis-c"]);
    let o = run(
        &s,
        &sim,
        None,
        &["plan", "--detailed-exitcode", "spec.yaml"],
    );
    assert_code(&o, 0);
}
