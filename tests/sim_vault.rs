//! Black-box tests of `anvil sim vault`: the real binary on a loopback port, driven over
//! HTTP/1.1 and checked against the KV v2 contract (../shared/fixtures/vault-kv2-api.md).

mod sim_vault_support;

use serde_json::{json, Value};
use sim_vault_support::VaultSim;

const T: Option<&str> = Some("root");

fn start() -> VaultSim {
    VaultSim::start("root", &["--mount", "kv", "--approle", "role-1:secret-1"])
}

fn write(sim: &VaultSim, path: &str, body: Value) -> (u16, Value) {
    let r = sim.req("POST", path, T, Some(&body.to_string()));
    let j = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, j)
}

#[test]
fn auth_is_required_except_for_health() {
    let sim = start();
    for (m, p) in [
        ("GET", "/v1/secret/data/a"),
        ("GET", "/v1/sys/mounts"),
        ("GET", "/v1/nowhere"),
        ("LIST", "/v1/secret/metadata/"),
    ] {
        let r = sim.req(m, p, None, None);
        assert_eq!(r.status, 403, "{m} {p}");
        assert_eq!(r.json(), json!({"errors": ["permission denied"]}));
        let r = sim.req(m, p, Some("wrong"), None);
        assert_eq!(r.status, 403, "{m} {p} with a wrong token");
    }
    // A namespace header is accepted and ignored.
    let r = sim.req_with(
        "GET",
        "/v1/sys/mounts",
        T,
        None,
        &[
            ("X-Vault-Namespace", "team-a/"),
            ("X-Vault-Request", "true"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[test]
fn health_needs_no_token() {
    let sim = start();
    let r = sim.req("GET", "/v1/sys/health", None, None);
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["initialized"], true);
    assert_eq!(j["sealed"], false);
    assert_eq!(j["standby"], false);
    assert_eq!(j["version"], "1.15.0-anvil-sim");
}

#[test]
fn write_read_versions_and_cas() {
    let sim = start();
    // cas 0 on a new key
    let (s, j) = write(
        &sim,
        "/v1/secret/data/app/db",
        json!({"options": {"cas": 0}, "data": {"user": "u1"}}),
    );
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["data"]["version"], 1);
    assert_eq!(j["data"]["deletion_time"], "");
    assert_eq!(j["data"]["destroyed"], false);
    let created = j["data"]["created_time"].as_str().unwrap().to_string();
    assert!(
        created.ends_with('Z') && created.contains('T') && created.len() >= 20,
        "{created}"
    );

    // cas 0 again: the key exists now
    let (s, j) = write(
        &sim,
        "/v1/secret/data/app/db",
        json!({"options": {"cas": 0}, "data": {"user": "x"}}),
    );
    assert_eq!(s, 400);
    assert_eq!(
        j,
        json!({"errors": ["check-and-set parameter did not match the current version"]})
    );
    // right cas, PUT works like POST
    let r = sim.req(
        "PUT",
        "/v1/secret/data/app/db",
        T,
        Some(r#"{"options":{"cas":1},"data":{"user":"u2"}}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["version"], 2);
    // no cas: fine without cas_required
    let (s, j) = write(
        &sim,
        "/v1/secret/data/app/db",
        json!({"data": {"user": "u3"}}),
    );
    assert_eq!((s, j["data"]["version"].clone()), (200, json!(3)));

    let r = sim.req("GET", "/v1/secret/data/app/db", T, None);
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["data"]["data"], json!({"user": "u3"}));
    assert_eq!(j["data"]["metadata"]["version"], 3);
    assert_eq!(j["data"]["metadata"]["deletion_time"], "");
    assert_eq!(j["data"]["metadata"]["custom_metadata"], Value::Null);
    let r = sim.req("GET", "/v1/secret/data/app/db?version=1", T, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["data"], json!({"user": "u1"}));
    assert_eq!(r.json()["data"]["metadata"]["version"], 1);
    // a version that never was
    let r = sim.req("GET", "/v1/secret/data/app/db?version=9", T, None);
    assert_eq!((r.status, r.json()), (404, json!({"errors": []})));
    // a key never written
    let r = sim.req("GET", "/v1/secret/data/nope", T, None);
    assert_eq!((r.status, r.json()), (404, json!({"errors": []})));
    // a second mount is separate
    let r = sim.req("GET", "/v1/kv/data/app/db", T, None);
    assert_eq!(r.status, 404);
    let (s, _) = write(&sim, "/v1/kv/data/app/db", json!({"data": {"k": "v"}}));
    assert_eq!(s, 200);
}

#[test]
fn cas_required_on_key_and_mount() {
    let sim = start();
    let r = sim.req(
        "POST",
        "/v1/secret/metadata/locked",
        T,
        Some(r#"{"cas_required":true,"max_versions":3,"custom_metadata":{"owner":"ops"}}"#),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let (s, j) = write(&sim, "/v1/secret/data/locked", json!({"data": {"a": 1}}));
    assert_eq!(s, 400);
    assert_eq!(
        j,
        json!({"errors": ["check-and-set parameter required for this call"]})
    );
    let (s, j) = write(
        &sim,
        "/v1/secret/data/locked",
        json!({"options": {"cas": 0}, "data": {"a": 1}}),
    );
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["data"]["custom_metadata"], json!({"owner": "ops"}));

    // mount-level config
    let r = sim.req("POST", "/v1/kv/config", T, Some(r#"{"cas_required":true}"#));
    assert_eq!(r.status, 204);
    let r = sim.req("GET", "/v1/kv/config", T, None);
    assert_eq!(r.json()["data"]["cas_required"], true);
    let (s, j) = write(&sim, "/v1/kv/data/x", json!({"data": {"a": 1}}));
    assert_eq!(s, 400);
    assert_eq!(
        j["errors"][0],
        "check-and-set parameter required for this call"
    );
}

#[test]
fn soft_delete_undelete_destroy() {
    let sim = start();
    for i in 1..=3 {
        let (s, _) = write(&sim, "/v1/secret/data/k", json!({"data": {"i": i}}));
        assert_eq!(s, 200);
    }
    // soft-delete the latest
    let r = sim.req("DELETE", "/v1/secret/data/k", T, None);
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let r = sim.req("GET", "/v1/secret/data/k", T, None);
    assert_eq!(r.status, 404);
    let j = r.json();
    assert_eq!(j["data"]["data"], Value::Null);
    assert_eq!(j["data"]["metadata"]["version"], 3);
    assert_ne!(j["data"]["metadata"]["deletion_time"], "");
    assert_eq!(j["data"]["metadata"]["destroyed"], false);
    // a soft-deleted key keeps its current version for cas
    let (s, _) = write(
        &sim,
        "/v1/secret/data/k",
        json!({"options": {"cas": 2}, "data": {}}),
    );
    assert_eq!(s, 400);
    // older versions still readable
    let r = sim.req("GET", "/v1/secret/data/k?version=2", T, None);
    assert_eq!(r.status, 200);
    // undelete
    let r = sim.req(
        "POST",
        "/v1/secret/undelete/k",
        T,
        Some(r#"{"versions":[3]}"#),
    );
    assert_eq!(r.status, 204);
    let r = sim.req("GET", "/v1/secret/data/k", T, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["data"], json!({"i": 3}));
    // delete versions
    let r = sim.req(
        "POST",
        "/v1/secret/delete/k",
        T,
        Some(r#"{"versions":[1,2]}"#),
    );
    assert_eq!(r.status, 204);
    let r = sim.req("GET", "/v1/secret/data/k?version=1", T, None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["data"]["metadata"]["version"], 1);
    // no versions
    let r = sim.req("POST", "/v1/secret/delete/k", T, Some("{}"));
    assert_eq!(r.status, 400);
    // destroy
    let r = sim.req(
        "POST",
        "/v1/secret/destroy/k",
        T,
        Some(r#"{"versions":[2]}"#),
    );
    assert_eq!(r.status, 204);
    let r = sim.req("GET", "/v1/secret/data/k?version=2", T, None);
    assert_eq!(r.status, 404);
    let j = r.json();
    assert_eq!(j["data"]["data"], Value::Null);
    assert_eq!(j["data"]["metadata"]["destroyed"], true);
    // destroyed versions cannot be undeleted
    sim.req(
        "POST",
        "/v1/secret/undelete/k",
        T,
        Some(r#"{"versions":[2]}"#),
    );
    assert_eq!(
        sim.req("GET", "/v1/secret/data/k?version=2", T, None)
            .status,
        404
    );
    // metadata shows it all
    let r = sim.req("GET", "/v1/secret/metadata/k", T, None);
    assert_eq!(r.status, 200);
    let m = r.json()["data"].clone();
    assert_eq!(m["current_version"], 3);
    assert_eq!(m["oldest_version"], 0);
    assert_eq!(m["max_versions"], 0);
    assert_eq!(m["cas_required"], false);
    assert_eq!(m["delete_version_after"], "0s");
    assert_eq!(m["custom_metadata"], Value::Null);
    assert_eq!(m["versions"]["2"]["destroyed"], true);
    assert_ne!(m["versions"]["1"]["deletion_time"], "");
    assert_eq!(m["versions"]["3"]["deletion_time"], "");
    assert!(m["created_time"].is_string() && m["updated_time"].is_string());
}

#[test]
fn max_versions_trims_oldest() {
    let sim = start();
    sim.req(
        "POST",
        "/v1/secret/metadata/t",
        T,
        Some(r#"{"max_versions":2}"#),
    );
    for i in 1..=4 {
        write(&sim, "/v1/secret/data/t", json!({"data": {"i": i}}));
    }
    let m = sim.req("GET", "/v1/secret/metadata/t", T, None).json();
    assert_eq!(m["data"]["current_version"], 4);
    assert_eq!(m["data"]["oldest_version"], 3);
    let mut keys: Vec<String> = m["data"]["versions"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(keys, ["3", "4"]);
    let r = sim.req("GET", "/v1/secret/data/t?version=1", T, None);
    assert_eq!((r.status, r.json()), (404, json!({"errors": []})));
}

#[test]
fn delete_metadata_then_cas_zero_works_again() {
    let sim = start();
    write(&sim, "/v1/secret/data/gone", json!({"data": {"a": 1}}));
    let r = sim.req("DELETE", "/v1/secret/metadata/gone", T, None);
    assert_eq!(r.status, 204);
    assert_eq!(
        sim.req("GET", "/v1/secret/metadata/gone", T, None).status,
        404
    );
    let r = sim.req("GET", "/v1/secret/data/gone", T, None);
    assert_eq!((r.status, r.json()), (404, json!({"errors": []})));
    let (s, j) = write(
        &sim,
        "/v1/secret/data/gone",
        json!({"options": {"cas": 0}, "data": {"a": 2}}),
    );
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["data"]["version"], 1);
}

#[test]
fn list_directories_sorted_and_404_when_empty() {
    let sim = start();
    let r = sim.req("LIST", "/v1/secret/metadata/", T, None);
    assert_eq!((r.status, r.json()), (404, json!({"errors": []})));
    for p in ["b", "a/x", "a/y/z", "c/d", "a/w"] {
        write(&sim, &format!("/v1/secret/data/{p}"), json!({"data": {}}));
    }
    let r = sim.req("LIST", "/v1/secret/metadata/", T, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"], json!({"keys": ["a/", "b", "c/"]}));
    let r = sim.req("GET", "/v1/secret/metadata/a?list=true", T, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"], json!({"keys": ["w", "x", "y/"]}));
    let r = sim.req("LIST", "/v1/secret/metadata/a/", T, None);
    assert_eq!(r.json()["data"], json!({"keys": ["w", "x", "y/"]}));
    let r = sim.req("LIST", "/v1/secret/metadata/nothing/", T, None);
    assert_eq!(r.status, 404);
    // soft-deleted keys keep their metadata and are still listed
    sim.req("DELETE", "/v1/secret/data/b", T, None);
    let r = sim.req("LIST", "/v1/secret/metadata", T, None);
    assert_eq!(r.json()["data"], json!({"keys": ["a/", "b", "c/"]}));
    // LIST on data/ is not an operation
    let r = sim.req("LIST", "/v1/secret/data/a", T, None);
    assert_eq!(r.status, 405);
}

#[test]
fn patch_merges_and_needs_an_existing_key() {
    let sim = start();
    let mp = [("Content-Type", "application/merge-patch+json")];
    let r = sim.req_with(
        "PATCH",
        "/v1/secret/data/p",
        T,
        Some(r#"{"data":{"a":"1"}}"#),
        &mp,
    );
    assert_eq!(r.status, 404);
    write(
        &sim,
        "/v1/secret/data/p",
        json!({"data": {"a": "1", "b": "2", "n": {"x": 1}}}),
    );
    let r = sim.req_with(
        "PATCH",
        "/v1/secret/data/p",
        T,
        Some(r#"{"options":{"cas":1},"data":{"b":null,"c":"3","n":{"y":2}}}"#),
        &mp,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["version"], 2);
    let j = sim.req("GET", "/v1/secret/data/p", T, None).json();
    assert_eq!(
        j["data"]["data"],
        json!({"a": "1", "c": "3", "n": {"x": 1, "y": 2}})
    );
    // wrong cas on patch
    let r = sim.req_with(
        "PATCH",
        "/v1/secret/data/p",
        T,
        Some(r#"{"options":{"cas":1},"data":{"a":"9"}}"#),
        &mp,
    );
    assert_eq!(r.status, 400);
    // wrong content type
    let r = sim.req(
        "PATCH",
        "/v1/secret/data/p",
        T,
        Some(r#"{"data":{"a":"9"}}"#),
    );
    assert_eq!(r.status, 415);
}

#[test]
fn mounts_and_ui_mounts() {
    let sim = start();
    let j = sim.req("GET", "/v1/sys/mounts", T, None).json();
    for body in [&j, &j["data"]] {
        assert_eq!(body["secret/"]["type"], "kv");
        assert_eq!(body["secret/"]["options"]["version"], "2");
        assert_eq!(body["kv/"]["options"]["version"], "2");
        assert_eq!(body["sys/"]["type"], "system");
    }
    let r = sim.req("GET", "/v1/sys/internal/ui/mounts/secret/app/db", T, None);
    assert_eq!(r.status, 200);
    let d = r.json()["data"].clone();
    assert_eq!(d["path"], "secret/");
    assert_eq!(d["type"], "kv");
    assert_eq!(d["options"], json!({"version": "2"}));
    let r = sim.req("GET", "/v1/sys/internal/ui/mounts/nope/x", T, None);
    assert_eq!(r.status, 403);
}

#[test]
fn approle_login_issues_a_working_token() {
    let sim = start();
    let r = sim.req(
        "POST",
        "/v1/auth/approle/login",
        None,
        Some(r#"{"role_id":"role-1","secret_id":"bad"}"#),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"errors": ["invalid role or secret ID"]}));
    let r = sim.req(
        "POST",
        "/v1/auth/approle/login",
        None,
        Some(r#"{"role_id":"role-1","secret_id":"secret-1"}"#),
    );
    assert_eq!(r.status, 200);
    let auth = r.json()["auth"].clone();
    assert_eq!(auth["renewable"], true);
    assert!(auth["lease_duration"].as_u64().unwrap() > 0);
    let tok = auth["client_token"].as_str().unwrap().to_string();
    let r = sim.req(
        "POST",
        "/v1/secret/data/by-approle",
        Some(&tok),
        Some(r#"{"data":{"a":1}}"#),
    );
    assert_eq!(r.status, 200);
    let r = sim.req("GET", "/v1/auth/token/lookup-self", Some(&tok), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["id"], tok.as_str());
}

#[test]
fn unknown_paths_and_methods() {
    let sim = start();
    let r = sim.req("GET", "/v1/nowhere/data/x", T, None);
    assert_eq!((r.status, r.json()), (404, json!({"errors": []})));
    let r = sim.req("GET", "/v1/secret/whatever/x", T, None);
    assert_eq!((r.status, r.json()), (404, json!({"errors": []})));
    let r = sim.req("GET", "/not-v1", T, None);
    assert_eq!(r.status, 404);
    let r = sim.req("GET", "/v1/secret/delete/x", T, None);
    assert_eq!(r.status, 405);
    assert_eq!(
        r.json(),
        json!({"errors": ["1 error occurred:\n\t* unsupported operation\n\n"]})
    );
    let r = sim.req("POST", "/v1/sys/health", None, None);
    assert_eq!(r.status, 405);
    // bad JSON
    let r = sim.req("POST", "/v1/secret/data/x", T, Some("{nope"));
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"][0]
        .as_str()
        .unwrap()
        .starts_with("failed to parse JSON input"));
    // no data
    let r = sim.req("POST", "/v1/secret/data/x", T, Some("{}"));
    assert_eq!(r.status, 400);
}

#[cfg(unix)]
#[test]
fn sigterm_stops_it_cleanly() {
    let mut sim = start();
    let pid = sim.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = sim.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn concurrent_cas_zero_writes_let_exactly_one_win() {
    let sim = std::sync::Arc::new(start());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let sim = sim.clone();
            std::thread::spawn(move || {
                let body = json!({"options": {"cas": 0}, "data": {"writer": i}}).to_string();
                sim.req("POST", "/v1/secret/data/race", T, Some(&body))
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        7,
        "{statuses:?}"
    );
    let m = sim.req("GET", "/v1/secret/metadata/race", T, None).json();
    assert_eq!(m["data"]["current_version"], 1);
}
