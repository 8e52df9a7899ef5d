//! A spec directory that also holds YAML not meant for anvil (a CI pipeline, a BOSH
//! manifest): `validate`, `plan` and `apply` load only the anvil files, `--verbose` lists
//! the skipped ones, and a foreign file named explicitly, or a directory with nothing but
//! foreign YAML, is still an error that says where and what to do, without writing state.

mod common;
use common::*;

const PIPELINE: &str = "stages: [test]\ntest:\n  stage: test\n  script: [cargo test]\n";
const CONCOURSE: &str =
    "resources:\n  - name: repo\n    type: git\njobs:\n  - name: unit\n    plan: [{get: repo}]\n";
const BOSH_MANIFEST: &str = "name: redis\nreleases: [{name: redis, version: latest}]\nstemcells: [{alias: default, os: ubuntu-jammy, version: latest}]\ninstance_groups:\n  - name: redis\n    instances: 1\n";

/// examples/quickstart plus a GitLab pipeline, a Concourse pipeline and a BOSH manifest.
fn mixed_dir(s: &Scratch) {
    s.copy_example("quickstart", "spec");
    s.write("spec/.gitlab-ci.yml", PIPELINE);
    s.write("spec/ci/pipeline.yml", CONCOURSE);
    s.write("spec/manifests/redis.yml", BOSH_MANIFEST);
}

#[test]
fn a_directory_scan_skips_foreign_yaml_and_lists_it_with_verbose() {
    let s = Scratch::new();
    mixed_dir(&s);
    let o = s.run(&["validate", "spec"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("workspace `quickstart`"),
        "{}",
        stdout(&o)
    );
    // Without --verbose, nothing is said about them.
    assert!(!stderr(&o).contains("skipped"), "{}", stderr(&o));

    let o = s.run(&["validate", "--verbose", "spec"]);
    assert_code(&o, 0);
    let err = stderr(&o);
    assert!(
        err.contains(
            "skipped 2 non-anvil YAML file(s): spec/ci/pipeline.yml, spec/manifests/redis.yml"
        ),
        "{err}"
    );

    let o = s.run(&["plan", "-v", "--refresh=false", "spec"]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("skipped 2 non-anvil YAML file(s)"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("to add"), "{}", stdout(&o));

    let o = s.run(&["apply", "--auto-approve", "--verbose", "spec"]);
    assert_code(&o, 0);
    assert!(
        stderr(&o).contains("spec/manifests/redis.yml"),
        "{}",
        stderr(&o)
    );
    assert!(s.state_file("quickstart").exists());
}

#[test]
fn foreign_yaml_named_explicitly_is_a_located_error() {
    let s = Scratch::new();
    mixed_dir(&s);
    for cmd in [
        &["validate", "spec/main.yaml", "spec/manifests/redis.yml"][..],
        &["apply", "--auto-approve", "spec/manifests/redis.yml"][..],
    ] {
        let o = s.run(cmd);
        assert_code(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains(
                "spec/manifests/redis.yml:1:1: missing field `apiVersion`: expected `anvil/v1`"
            ),
            "{cmd:?}: {err}"
        );
        assert!(
            err.contains("name only spec files, or their directory"),
            "{cmd:?}: {err}"
        );
    }
    assert!(!s.path().join("state").exists());
}

#[test]
fn an_anvil_kind_with_a_wrong_api_version_is_still_an_error_in_a_scan() {
    let s = Scratch::new();
    mixed_dir(&s);
    s.write(
        "spec/old.yaml",
        "apiVersion: anvil/v0\nkind: Resources\nmetadata: {name: quickstart}\nresources: []\n",
    );
    s.write(
        "spec/typo.yaml",
        "apiVersion: v1\nkind: Resources\nmetadata: {name: quickstart}\nresources: []\n",
    );
    let o = s.run(&["apply", "--auto-approve", "spec"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("spec/old.yaml:1:1: apiVersion: unsupported apiVersion `anvil/v0`"),
        "{err}"
    );
    assert!(
        err.contains("spec/typo.yaml:1:1: apiVersion: unsupported apiVersion `v1`"),
        "{err}"
    );
    assert!(!s.path().join("state").exists());
}

#[test]
fn a_directory_of_only_foreign_yaml_says_how_many_were_skipped() {
    let s = Scratch::new();
    s.write("ci/pipeline.yml", CONCOURSE);
    s.write("ci/redis.yml", BOSH_MANIFEST);
    for cmd in [
        &["validate", "ci"][..],
        &["apply", "--auto-approve", "ci"][..],
    ] {
        let o = s.run(cmd);
        assert_code(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains("ci: directory has no spec files: 2 YAML file(s) below it were skipped"),
            "{cmd:?}: {err}"
        );
    }
    assert!(!s.path().join("state").exists());
}
