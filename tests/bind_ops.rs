//! `ops::broker_bind` against the real simulators (`anvil sim bosh`, `anvil sim vault`)
//! after `anvil apply` of the example Foundation: a bind renders the VM's IP and DNS
//! name and a password generated once per instance (kept at `{id}/credentials`, the
//! same for a second binding); `{id}/bindings/{bid}` holds the binding; the same bind
//! again is `Existing`, another on the same id `Conflict`; unbind removes only the
//! binding; the state directory never holds the password; a non-bindable service, an
//! unknown plan and an undeployed instance are refused with messages naming them.

mod common;
mod sim_bosh_support;
mod sim_vault_support;

use anvil::ops::broker_bind::{
    load_foundation, BindError, BindOutcome, BindRequest, BindTarget, Clients,
};
use anvil::ops::CancellationToken;
use common::*;
use serde_json::Value;
use sim_bosh_support::BoshSim;
use sim_vault_support::VaultSim;

const TOKEN: &str = "root";
const REDIS: &str = "6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01";

fn target(id: &str, service: &str, plan: &str) -> BindTarget {
    BindTarget {
        instance_id: id.into(),
        service_id: service.into(),
        plan_id: plan.into(),
        ..BindTarget::default()
    }
}

fn request(bid: &str, app: &str) -> BindRequest {
    BindRequest {
        binding_id: bid.into(),
        service_id: "redis".into(),
        plan_id: "redis-small".into(),
        app_guid: Some(app.into()),
        ..BindRequest::default()
    }
}

fn all_text(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[test]
fn bind_renders_vms_and_one_password_per_instance() {
    let s = Scratch::new();
    let dir = s.copy_example("foundation", "f");
    let path = dir.join("foundation.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "description: Dedicated PostgreSQL servers\n      bindable: true",
        "description: Dedicated PostgreSQL servers\n      bindable: false",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let bosh = BoshSim::start(&[], None);
    let vault = VaultSim::start(TOKEN, &[]);
    let o = at_simulators(
        &mut s.cmd(&["apply", "--auto-approve", "f"]),
        &bosh.url,
        &vault.url(),
        TOKEN,
    )
    .output()
    .unwrap();
    assert_code(&o, 0);
    let deployment = format!("redis-small-{REDIS}");
    let (status, _, vms) = bosh.http("GET", &format!("/deployments/{deployment}/vms"), None);
    assert_eq!(status, 200, "{vms}");
    let vms: Value = serde_json::from_str(&vms).unwrap();
    let ip = vms[0]["ips"][0].as_str().unwrap().to_string();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bosh_url, vault_url) = (bosh.url.clone(), vault.url());
    let env = move |name: &str| -> Option<String> {
        match name {
            "BOSH_ENVIRONMENT" => Some(bosh_url.clone()),
            "BOSH_CLIENT" | "BOSH_CLIENT_SECRET" => Some("admin".into()),
            "VAULT_ADDR" => Some(vault_url.clone()),
            "VAULT_TOKEN" => Some(TOKEN.into()),
            _ => None,
        }
    };
    let password = rt.block_on(async {
        let (f, file) = load_foundation(&dir).unwrap();
        let c = Clients::connect(&f, &file, env).await.unwrap();
        let cancel = CancellationToken::new();
        let t = target(REDIS, "redis", "redis-small");

        let BindOutcome::Created(first) =
            c.bind(&t, &request("b1", "app-1"), &cancel).await.unwrap()
        else {
            panic!("first bind did not create")
        };
        assert_eq!(first["host"], ip.as_str());
        let hostname = first["hostname"].as_str().unwrap();
        assert!(
            hostname.ends_with(&format!(".redis.services.{deployment}.bosh")),
            "{hostname}"
        );
        let password = first["password"].as_str().unwrap().to_string();
        assert_eq!(password.len(), 32);
        assert_eq!(
            first["uri"],
            format!("redis://:{password}@{hostname}:6379").as_str()
        );
        assert_eq!(
            c.bind(&t, &request("b1", "app-1"), &cancel).await.unwrap(),
            BindOutcome::Existing(first.clone())
        );
        assert_eq!(
            c.bind(&t, &request("b1", "app-2"), &cancel).await.unwrap(),
            BindOutcome::Conflict
        );
        let BindOutcome::Created(second) =
            c.bind(&t, &request("b2", "app-2"), &cancel).await.unwrap()
        else {
            panic!("second bind did not create")
        };
        assert_eq!(second["password"], password.as_str());
        assert_eq!(
            c.binding(REDIS, "b1").await.unwrap().unwrap().credentials,
            first
        );

        // Refusals name what is wrong.
        let e = c
            .bind(
                &target(
                    "9c3d5e7f-1a2b-4c6d-8e0f-a1b2c3d4e5f6",
                    "postgresql",
                    "standard",
                ),
                &request("x", "a"),
                &cancel,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, BindError::NotBindable { .. }) && e.to_string().contains("postgresql"),
            "{e}"
        );
        let e = c
            .bind(
                &target(REDIS, "redis", "redis-huge"),
                &request("x", "a"),
                &cancel,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("redis-huge"), "{e}");
        let gone = "00000000-0000-4000-8000-000000000000";
        let e = c
            .bind(
                &target(gone, "redis", "redis-small"),
                &request("x", "a"),
                &cancel,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, BindError::NoDeployment { .. }) && e.to_string().contains(gone),
            "{e}"
        );

        assert!(c.unbind(REDIS, "b1").await.unwrap());
        assert!(!c.unbind(REDIS, "b1").await.unwrap());
        assert_eq!(c.binding(REDIS, "b1").await.unwrap(), None);
        password
    });
    let secrets = vault
        .kv_read(&format!("{REDIS}/credentials"), TOKEN)
        .unwrap();
    assert_eq!(secrets["password"], password.as_str());
    assert_eq!(vault.kv_read(&format!("{REDIS}/bindings/b1"), TOKEN), None);
    let b2 = vault
        .kv_read(&format!("{REDIS}/bindings/b2"), TOKEN)
        .unwrap();
    assert_eq!(b2["credentials"]["password"], password.as_str());
    assert_eq!(b2["app_guid"], "app-2");
    assert_eq!(
        vault.kv_read("00000000-0000-4000-8000-000000000000/credentials", TOKEN),
        None
    );
    let state = all_text(&s.path().join("state"));
    assert!(!state.is_empty());
    assert!(!state.contains(&password), "the state holds the password");
}
