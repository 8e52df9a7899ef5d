//! `anvil instances`: lists the example Foundation's spec instances (table and JSON,
//! with origin and where each is declared), and refuses a bad spec with a located error
//! and exit 1 without writing state.

mod common;
use common::*;

const IDS: [&str; 4] = [
    "1f7e9d3c-5b2a-4c8e-a6d4-3e2f1a0b9c72",
    "4b5c6d7e-8f9a-4b1c-9d3e-4f5a6b7c8d9e",
    "6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01",
    "9c3d5e7f-1a2b-4c6d-8e0f-a1b2c3d4e5f6",
];

#[test]
fn lists_spec_instances_as_table_and_json() {
    let s = Scratch::new();
    s.copy_example("foundation", "f");
    let o = s.run(&["instances", "f"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("ORIGIN"),
        "{out}"
    );
    for (line, id) in lines[1..].iter().zip(IDS) {
        assert!(line.starts_with(id), "{out}");
        assert!(line.contains(" spec "), "{out}");
    }
    // A plan named by its name (`standard`) is shown by id.
    assert!(lines[2].contains("postgresql-standard-4b5c6d7e"), "{out}");

    let o = s.run(&["instances", "f", "--json"]);
    assert_code(&o, 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["id"], IDS[0]);
    assert_eq!(rows[0]["origin"], "spec");
    assert_eq!(rows[0]["plan_id"], "redis-cluster");
    assert_eq!(rows[0]["service_id"], "redis");
    assert_eq!(
        rows[0]["deployment"],
        format!("redis-cluster-{}", IDS[0]).as_str()
    );
    let at = rows[0]["declared_at"].as_str().unwrap();
    assert!(
        at.starts_with("f/foundation.yaml:") && at.ends_with(":5"),
        "{at}"
    );
    assert!(!s.path().join("state").exists(), "instances wrote state");
}

#[test]
fn bad_spec_is_located_and_exits_1() {
    let s = Scratch::new();
    let dir = s.copy_example("foundation", "f");
    let path = dir.join("foundation.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("plan: redis-small\n", "plan: redis-smal\n", 1),
    )
    .unwrap();
    let o = s.run(&["instances", "f"]);
    assert_code(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("f/foundation.yaml:") && err.contains("unknown plan `redis-smal`"),
        "{err}"
    );
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(!s.path().join("state").exists(), "instances wrote state");
}
