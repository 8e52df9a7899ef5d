//! Peer-client acceptance test: the unmodified Python `hvac` client
//! (tests/peers/hvac_check.py) against the real `anvil sim vault` binary. Needs the
//! Python of `$ANVIL_TEST_PYTHON` or `.venv/` (made by `.ci/setup-python`).

mod sim_vault_support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ANVIL_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with hvac: set ANVIL_TEST_PYTHON or run `bash .ci/setup-python` \
         (creates {}) and test again",
        venv.display()
    );
    venv
}

#[test]
fn hvac_drives_the_simulator() {
    let py = python();
    let sim = sim_vault_support::VaultSim::start("root", &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/hvac_check.py");
    let out = Command::new(&py)
        .arg(&script)
        .arg(sim.url())
        .arg("root")
        .env_remove("VAULT_NAMESPACE")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "could not run {} ({e}); run `bash .ci/setup-python`",
                py.display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hvac_check.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("hvac_check: OK"), "{stdout}\n{stderr}");
}
