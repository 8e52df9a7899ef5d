//! Acceptance: SIGKILL `anvil apply` of 500 resources at random moments, 20 trials;
//! every time the state file parses, and the next apply converges with each resource
//! recorded exactly once.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// A small deterministic generator, so a failing trial can be replayed from its seed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn sigkill_at_random_moments_never_corrupts_state() {
    let s = Scratch::new();
    const N: usize = 500;
    // A little work per resource so that kills land mid-apply.
    s.write("spec.yaml", &tree_spec("crash", N, "      sleep_ms: 2\n"));
    let env = [("ANVIL_LOCK_LEASE", "1s")];

    // Calibrate: how long does a whole apply take here?
    let start = Instant::now();
    let o = s
        .cmd(&["apply", "--auto-approve", "--parallelism", "4", "spec.yaml"])
        .envs(env)
        .output()
        .unwrap();
    assert_code(&o, 0);
    let full = start.elapsed();
    assert_code(&s.run(&["destroy", "--auto-approve", "spec.yaml"]), 0);

    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = Lcg(seed);
    let state = s.state_file("crash");
    let mut mid_run = 0;
    for trial in 0..20 {
        // Alternate between building up and tearing down, so kills hit creates and deletes.
        let args: &[&str] = if trial % 4 == 3 {
            &[
                "destroy",
                "--auto-approve",
                "--parallelism",
                "4",
                "spec.yaml",
            ]
        } else {
            &["apply", "--auto-approve", "--parallelism", "4", "spec.yaml"]
        };
        let delay = Duration::from_micros(rng.next() % (full.as_micros() as u64 + 1));
        let mut child = s
            .cmd(args)
            .envs(env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        if state.exists() {
            let text = std::fs::read_to_string(&state).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("trial {trial} (seed {seed}): state does not parse: {e}")
            });
            assert!(v["resources"].is_object(), "trial {trial}");
        }
        // Every command reads what the killed run left (state + journal) without error.
        let o = s.cmd(&["state", "list"]).envs(env).output().unwrap();
        assert_code(&o, 0);
        let recorded = stdout(&o).lines().count();
        if recorded > 0 && recorded < N {
            mid_run += 1;
        }
    }
    // Guard against a vacuous test: some kills must have landed mid-run.
    assert!(
        mid_run > 0,
        "no kill landed mid-run (calibrated full run: {full:?})"
    );

    // The next apply (after the dead holder's lease) converges.
    let o = s
        .cmd(&[
            "apply",
            "--auto-approve",
            "--lock-timeout",
            "30s",
            "spec.yaml",
        ])
        .envs(env)
        .output()
        .unwrap();
    assert_code(&o, 0);
    let o = s.run(&["plan", "--detailed-exitcode", "spec.yaml"]);
    assert_code(&o, 0);
    let st = s.state_json("crash");
    let keys: Vec<&String> = st["resources"].as_object().unwrap().keys().collect();
    let listing: Vec<String> = std::fs::read_dir(s.path().join("state"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            format!("{:?} {}", e.file_name(), e.metadata().unwrap().len())
        })
        .collect();
    let listed = stdout(&s.run(&["state", "list"])).lines().count();
    assert_eq!(
        keys.len(),
        N,
        "each resource recorded exactly once; files: {listing:?}; `state list` shows {listed}"
    );
    let mut want: Vec<String> = (0..N).map(|i| format!("null_resource.r{i}")).collect();
    want.sort();
    assert_eq!(keys.into_iter().cloned().collect::<Vec<_>>(), want);
    assert!(
        st["pending"].as_array().is_none_or(|p| p.is_empty()),
        "{}",
        st["pending"]
    );
}
