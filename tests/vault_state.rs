//! Acceptance: bad `vault://` state URLs and Vault settings — unreachable Vault, a wrong
//! token, a mount that does not exist or is not KV v2, malformed URLs, missing
//! `VAULT_ADDR`/`VAULT_TOKEN` — make `anvil` exit 1 naming the URL and what to do, never
//! print the token, never panic, and write nothing (no secret in Vault, no local state).

mod common;
mod sim_vault_support;

use common::*;
use sim_vault_support::VaultSim;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Output;

const TOKEN: &str = "hvs.the-real-token";
const WRONG: &str = "hvs.WRONG-TOKEN-must-not-leak";

const SPEC: &str = "apiVersion: anvil/v1\nkind: Resources\nmetadata: { name: demo }\nresources:\n  - type: null_resource\n    name: one\n    attributes: { triggers: { a: \"1\" } }\n";

fn run(s: &Scratch, state: &str, addr: &str, token: &str, args: &[&str]) -> Output {
    let mut c = s.cmd(args);
    c.env("ANVIL_STATE", state)
        .env("VAULT_ADDR", addr)
        .env("VAULT_TOKEN", token)
        .env_remove("VAULT_NAMESPACE")
        .env_remove("VAULT_CACERT");
    let o = c.output().expect("run anvil");
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!all.contains("panicked"), "{all}");
    o
}

/// Exit 1, the message names `must` (each), never the tokens; nothing local written.
fn refused(s: &Scratch, o: &Output, must: &[&str]) {
    assert_code(o, 1);
    let err = stderr(o);
    for m in must {
        assert!(err.contains(m), "missing {m:?} in:\n{err}");
    }
    for secret in [TOKEN, WRONG] {
        assert!(!err.contains(secret), "token printed:\n{err}");
        assert!(!stdout(o).contains(secret), "token printed:\n{}", stdout(o));
    }
    assert!(!s.path().join("state").exists(), "local state written");
}

/// No secret at all under the simulator's `secret/` mount.
fn nothing_in(v: &VaultSim) {
    let r = v.req("GET", "/v1/secret/metadata/?list=true", Some(TOKEN), None);
    assert_eq!(r.status, 404, "something was written: {}", r.body);
}

#[test]
fn unreachable_vault_names_the_url_and_vault_addr() {
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let addr = format!("http://127.0.0.1:{port}");
    for cmd in [&["apply", "--auto-approve"][..], &["plan"][..]] {
        let o = run(&s, "vault://secret/anvil/state", &addr, TOKEN, cmd);
        refused(
            &s,
            &o,
            &[
                "vault://secret/anvil/state/demo",
                &addr,
                "cannot reach Vault",
                "check that VAULT_ADDR is right",
            ],
        );
    }
}

#[test]
fn wrong_token_is_denied_without_printing_it_and_writes_nothing() {
    let v = VaultSim::start(TOKEN, &[]);
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    let o = run(
        &s,
        "vault://secret/anvil/state",
        &v.url(),
        WRONG,
        &["apply", "--auto-approve"],
    );
    refused(
        &s,
        &o,
        &[
            "vault://secret/anvil/state/demo",
            "permission denied",
            "VAULT_TOKEN",
            "secret/data/anvil/state/*",
        ],
    );
    nothing_in(&v);
}

#[test]
fn unknown_mount_is_not_kv2_and_names_the_fix() {
    let v = VaultSim::start(TOKEN, &[]);
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    let o = run(
        &s,
        "vault://nosuch/anvil",
        &v.url(),
        TOKEN,
        &["apply", "--auto-approve"],
    );
    refused(
        &s,
        &o,
        &[
            "vault://nosuch/anvil/demo",
            "no mount `nosuch`",
            "KV version 2",
            "vault secrets enable -path=nosuch kv-v2",
        ],
    );
    nothing_in(&v);
    // System paths are refused before anything is asked.
    let o = run(
        &s,
        "vault://cubbyhole/anvil",
        &v.url(),
        TOKEN,
        &["apply", "--auto-approve"],
    );
    refused(&s, &o, &["vault://cubbyhole/anvil", "not a KV v2 mount"]);
}

/// A one-thread fake Vault whose `kv1` mount is KV version 1 (the simulator only has KV
/// v2 mounts): answers lookup-self and the mount query, 404 for anything else.
fn fake_vault_with_kv1() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let path = line.split(' ').nth(1).unwrap_or("");
            let (status, body) = if path.starts_with("/v1/auth/token/lookup-self") {
                ("200 OK", r#"{"data":{"policies":["default"]}}"#)
            } else if path.starts_with("/v1/sys/internal/ui/mounts/kv1") {
                (
                    "200 OK",
                    r#"{"data":{"path":"kv1/","type":"kv","options":{"version":"1"}}}"#,
                )
            } else {
                ("404 Not Found", r#"{"errors":[]}"#)
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn kv_version_1_mount_is_refused() {
    let addr = fake_vault_with_kv1();
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    let o = run(
        &s,
        "vault://kv1/anvil",
        &addr,
        TOKEN,
        &["apply", "--auto-approve"],
    );
    refused(
        &s,
        &o,
        &[
            "vault://kv1/anvil/demo",
            "is KV version 1, not KV version 2",
            "vault kv enable-versioning kv1/",
        ],
    );
}

#[test]
fn malformed_urls_and_missing_settings_are_refused() {
    let v = VaultSim::start(TOKEN, &[]);
    let s = Scratch::new();
    s.write("spec.yaml", SPEC);
    for (url, says) in [
        ("vault://", "the mount is missing"),
        ("vault://secret//x", "empty path segment"),
        ("vault://secret/../x", "`..`"),
        ("vault://secret/x?version=1", "query"),
    ] {
        let o = run(&s, url, &v.url(), TOKEN, &["apply", "--auto-approve"]);
        refused(&s, &o, &[url, says, "vault://MOUNT/PATH"]);
    }
    // A token in the URL is refused and not echoed.
    let o = run(
        &s,
        &format!("vault://{WRONG}@secret/x"),
        &v.url(),
        TOKEN,
        &["apply", "--auto-approve"],
    );
    refused(&s, &o, &["vault://***@secret/x", "credentials"]);

    let mut c = s.cmd(&["apply", "--auto-approve"]);
    c.env("ANVIL_STATE", "vault://secret/anvil")
        .env_remove("VAULT_ADDR")
        .env("VAULT_TOKEN", TOKEN);
    let o = c.output().expect("run");
    refused(&s, &o, &["vault://secret/anvil", "VAULT_ADDR is not set"]);

    let mut c = s.cmd(&["apply", "--auto-approve"]);
    c.env("ANVIL_STATE", "vault://secret/anvil")
        .env("VAULT_ADDR", v.url())
        .env_remove("VAULT_TOKEN");
    let o = c.output().expect("run");
    refused(&s, &o, &["vault://secret/anvil", "VAULT_TOKEN is not set"]);
    nothing_in(&v);
}
