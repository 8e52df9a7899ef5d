//! The README's first command, `bash examples/quickstart.sh`, run from a copy of the
//! examples with the test build of anvil: it starts both simulators, applies both
//! examples, finds nothing left to do on the second plan, and stops the simulators.

mod common;
use common::*;

#[test]
fn quickstart_script_applies_the_examples_against_the_simulators() {
    let s = Scratch::new();
    s.copy_example("", "examples");
    let o = std::process::Command::new("bash")
        .arg("examples/quickstart.sh")
        .current_dir(s.path())
        .env("ANVIL", BIN)
        .env("NO_COLOR", "1")
        .output()
        .expect("run bash");
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "quickstart failed:\n{out}\n{}",
        stderr(&o)
    );
    assert_eq!(out.matches("No changes.").count(), 2, "{out}");
    assert!(out.matches("bosh_deployment.").count() >= 4, "{out}");
    for f in ["state/quickstart.json", "state/foundation.json"] {
        assert!(s.path().join(f).exists(), "{f} missing");
    }
}
