//! `anvil broker` against the real BOSH and Vault simulators (issue 9): the OSB
//! lifecycle (catalog, provision, last_operation, fetch, update with a plan change,
//! deprovision keeping `{id}/manifest` and `{id}/metadata`), a hundred concurrent
//! provisions and a SIGKILL with fifty in flight resumed without deploying anything
//! twice (acceptance 3), a GitOps `anvil apply` that keeps broker instances
//! (acceptance 4), and the refusals of bad requests with the spec's status and a
//! readable description (acceptance 5).

mod common;
#[path = "pg_support/mod.rs"]
mod pg_support;
#[path = "sim_bosh_support/mod.rs"]
mod sim_bosh_support;
#[path = "sim_vault_support/mod.rs"]
mod sim_vault_support;

use common::*;
use serde_json::{json, Value};
use sim_bosh_support::BoshSim;
use sim_vault_support::VaultSim;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

const TOKEN: &str = "root";

/// The broker's store of the local state file `state` as on disk (its snapshot and
/// journal), read as any other anvil command reads it.
fn read_store(state: &std::path::Path) -> Value {
    use anvil::state::StateBackend;
    futures::executor::block_on(anvil::state::LocalBackend::new(state).load_broker_store())
        .unwrap()
        .expect("a broker store")
}
const USER: &str = "cf";
const PASSWORD: &str = "s3cret-broker";
/// The spec's own instance (service `limited`).
const SPEC_ID: &str = "6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01";

const FOUNDATION: &str = r#"apiVersion: anvil/v1
kind: Foundation
metadata: { name: brokered }
vault: { mount: secret }
catalog:
  services:
    - id: redis
      name: redis
      description: Dedicated Redis
      tags: [redis]
      plans:
        - id: redis-small
          name: small
          description: One small node
          manifest: redis.yml.tmpl
          parameters: { maxmemory: 1gb }
          metadata: { displayName: Redis small }
          schemas:
            service_instance:
              create:
                parameters:
                  type: object
                  properties:
                    maxmemory: { type: string, pattern: "^[0-9]+[mg]b$" }
                  additionalProperties: false
        - id: redis-large
          name: large
          description: One large node
          manifest: redis.yml.tmpl
          parameters: { maxmemory: 8gb }
    - id: limited
      name: limited
      description: Two instances at most, the spec's included
      limit: 2
      plans:
        - id: limited-one
          name: one
          manifest: redis.yml.tmpl
          parameters: { maxmemory: 1gb }
        - id: limited-none
          name: none
          limit: -1
          manifest: redis.yml.tmpl
          parameters: { maxmemory: 1gb }
instances:
  - id: 6a1c2b9e-3f0d-4c7a-9b1e-2d5f8a7c4e01
    service: limited
    plan: limited-one
"#;

const TEMPLATE: &str = r"name: x
releases: [{ name: redis, version: latest }]
stemcells: [{ alias: default, os: ubuntu-jammy, version: latest }]
instance_groups:
  - name: redis
    instances: 1
    azs: [z1]
    vm_type: small
    stemcell: default
    networks: [{ name: services }]
    jobs:
      - name: redis
        release: redis
        properties: { maxmemory: ${params.maxmemory} }
";

/// The simulators, a scratch directory with the Foundation, and a runtime for HTTP.
struct World {
    s: Scratch,
    bosh: BoshSim,
    vault: VaultSim,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// A running broker; SIGKILLed when dropped.
struct Broker {
    child: Child,
    url: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// SIGTERM, and the exit code.
    fn stop(mut self) -> Option<i32> {
        let pid = i32::try_from(self.child.id()).unwrap();
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        self.child.wait().unwrap().code()
    }

    /// SIGKILL, no goodbye.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// An answer: status and JSON body (`Null` when there is none).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    request_identity: Option<String>,
}

impl World {
    fn start(bosh_args: &[&str]) -> World {
        let s = Scratch::new();
        s.write("fnd/foundation.yml", FOUNDATION);
        s.write("fnd/redis.yml.tmpl", TEMPLATE);
        World {
            s,
            bosh: BoshSim::start(bosh_args, None),
            vault: VaultSim::start(TOKEN, &[]),
            rt: tokio::runtime::Runtime::new().unwrap(),
            http: reqwest::Client::new(),
        }
    }

    fn foundation(&self) -> PathBuf {
        self.s.path().join("fnd")
    }

    fn broker(&self) -> Broker {
        self.broker_at(None)
    }

    /// A broker on the state (and store) at `state`, else the default file state.
    fn broker_at(&self, state: Option<&str>) -> Broker {
        self.broker_with(state, &[])
    }

    /// A broker with `extra` flags.
    fn broker_with(&self, state: Option<&str>, extra: &[&str]) -> Broker {
        let mut args = vec!["broker", "--foundation", "fnd", "--listen", "127.0.0.1:0"];
        if let Some(url) = state {
            args.extend(["--state", url]);
        }
        args.extend(extra);
        let mut cmd = self.s.cmd(&args);
        at_simulators(&mut cmd, &self.bosh.url, &self.vault.url(), TOKEN)
            .env("ANVIL_BROKER_USERNAME", USER)
            .env("ANVIL_BROKER_PASSWORD", PASSWORD)
            // A SIGKILLed broker's lock lease runs out soon.
            .env("ANVIL_LOCK_LEASE", "2s")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start anvil broker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let Some(url) = line.strip_prefix("anvil broker listening on ") else {
            let _ = child.kill();
            panic!("unexpected first line of anvil broker: {line:?}");
        };
        Broker {
            url: url.to_string(),
            child,
        }
    }

    fn request(
        &self,
        b: &Broker,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
        auth: Option<(&str, &str)>,
    ) -> Answer {
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(method.parse().unwrap(), format!("{}{path}", b.url));
            if let Some((u, p)) = auth {
                req = req.basic_auth(u, Some(p));
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(body) = body {
                req = req.json(&body);
            }
            let resp = req.send().await.expect("broker request");
            let status = resp.status().as_u16();
            let request_identity = resp
                .headers()
                .get("x-broker-api-request-identity")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let text = resp.text().await.unwrap_or_default();
            Answer {
                status,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
                request_identity,
            }
        })
    }

    /// An OSB request with credentials and the version header.
    fn osb(&self, b: &Broker, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.request(
            b,
            method,
            path,
            body,
            &[("X-Broker-API-Version", "2.17")],
            Some((USER, PASSWORD)),
        )
    }

    fn provision(&self, b: &Broker, id: &str, plan: &str, params: Value) -> Answer {
        let service = plan.split('-').next().unwrap();
        self.osb(
            b,
            "PUT",
            &format!("/v2/service_instances/{id}?accepts_incomplete=true"),
            Some(json!({
                "service_id": service, "plan_id": plan,
                "organization_guid": "org-1", "space_guid": "space-1",
                "parameters": params,
            })),
        )
    }

    /// Polls last_operation until it is no longer `in progress` (a hang guard, not a
    /// timing assertion), and returns the last answer.
    fn wait(&self, b: &Broker, id: &str, op: &str) -> Answer {
        for _ in 0..6000 {
            let a = self.osb(
                b,
                "GET",
                &format!("/v2/service_instances/{id}/last_operation?operation={op}"),
                None,
            );
            if a.status != 200 || a.body["state"] != "in progress" {
                return a;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("operation {op} of {id} did not finish");
    }

    fn index(&self) -> serde_json::Map<String, Value> {
        self.vault
            .kv_read("db", TOKEN)
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()
    }

    /// Every task of the simulated Director.
    fn tasks(&self) -> Vec<Value> {
        let url = format!("{}/tasks", self.bosh.url);
        self.rt.block_on(async {
            self.http
                .get(url)
                .basic_auth("admin", Some("admin"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }

    fn anvil(&self, args: &[&str]) -> std::process::Output {
        at_simulators(
            &mut self.s.cmd(args),
            &self.bosh.url,
            &self.vault.url(),
            TOKEN,
        )
        .output()
        .expect("run anvil")
    }
}

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[test]
fn full_lifecycle_catalog_provision_fetch_update_deprovision() {
    let w = World::start(&[]);
    let b = w.broker();

    let cat = w.osb(&b, "GET", "/v2/catalog", None);
    assert_eq!(cat.status, 200, "{:?}", cat.body);
    let services = cat.body["services"].as_array().unwrap();
    assert_eq!(services.len(), 2);
    let redis = &services[0];
    assert_eq!(redis["id"], "redis");
    assert_eq!(redis["plan_updateable"], true);
    assert_eq!(redis["bindable"], true);
    assert_eq!(redis["tags"], json!(["redis"]));
    assert_eq!(redis["instances_retrievable"], true);
    assert_eq!(redis["bindings_retrievable"], true);
    assert_eq!(redis["plans"][0]["metadata"]["displayName"], "Redis small");
    assert_eq!(
        redis["plans"][0]["schemas"]["service_instance"]["create"]["parameters"]["type"],
        "object"
    );

    let id = uuid(1);
    let dep = format!("redis-small-{id}");
    let a = w.request(
        &b,
        "PUT",
        &format!("/v2/service_instances/{id}?accepts_incomplete=true"),
        Some(json!({"service_id": "redis", "plan_id": "redis-small",
            "organization_guid": "org-1", "space_guid": "space-1",
            "parameters": {"maxmemory": "2gb"}})),
        &[
            ("X-Broker-API-Version", "2.17"),
            ("X-Broker-API-Request-Identity", "req-42"),
            (
                "X-Broker-API-Originating-Identity",
                "cloudfoundry eyJ1c2VyX2lkIjoiYWJjIn0=",
            ),
        ],
        Some((USER, PASSWORD)),
    );
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(a.request_identity.as_deref(), Some("req-42"));
    let op = a.body["operation"].as_str().unwrap().to_string();
    // Recorded durably before the 202, with the originating identity.
    let store = read_store(&w.s.path().join("state/brokered.json"));
    assert_eq!(
        store["instances"][&id]["operation"]["originating_identity"],
        "cloudfoundry eyJ1c2VyX2lkIjoiYWJjIn0="
    );

    // The same request again while (or after) it runs: the same operation or 200.
    let again = w.provision(&b, &id, "redis-small", json!({"maxmemory": "2gb"}));
    assert!(
        (again.status == 202 && again.body["operation"] == op.as_str()) || again.status == 200,
        "{again:?}"
    );

    let done = w.wait(&b, &id, &op);
    assert_eq!(done.body["state"], "succeeded", "{:?}", done.body);
    let description = done.body["description"].as_str().unwrap();
    assert!(
        description.contains(&dep) && description.contains("BOSH task"),
        "{description}"
    );
    assert!(w.bosh.names().contains(&dep), "{:?}", w.bosh.names());
    assert!(w.bosh.manifest(&dep).unwrap().contains("maxmemory: 2gb"));
    let entry = &w.index()[&id];
    assert_eq!(entry["status"], "provisioning_completed");
    assert_eq!(entry["deployment_name"], dep.as_str());
    assert_eq!(entry["plan_id"], "redis-small");
    // Only the broker's instance was applied, not the spec's.
    assert!(!w.bosh.names().iter().any(|n| n.contains(SPEC_ID)));

    let got = w.osb(&b, "GET", &format!("/v2/service_instances/{id}"), None);
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.body["plan_id"], "redis-small");
    assert_eq!(got.body["parameters"]["maxmemory"], "2gb");
    let identical = w.provision(&b, &id, "redis-small", json!({"maxmemory": "2gb"}));
    assert_eq!(identical.status, 200, "{identical:?}");

    // PATCH parameters: the manifest is rendered again and deployed.
    let patch = w.osb(
        &b,
        "PATCH",
        &format!("/v2/service_instances/{id}?accepts_incomplete=true"),
        Some(json!({"service_id": "redis", "parameters": {"maxmemory": "3gb"}})),
    );
    assert_eq!(patch.status, 202, "{:?}", patch.body);
    let op2 = patch.body["operation"].as_str().unwrap().to_string();
    assert_eq!(w.wait(&b, &id, &op2).body["state"], "succeeded");
    assert!(w.bosh.manifest(&dep).unwrap().contains("maxmemory: 3gb"));

    // PATCH to another plan: its deployment replaces the old one.
    let patch = w.osb(
        &b,
        "PATCH",
        &format!("/v2/service_instances/{id}?accepts_incomplete=true"),
        Some(json!({"service_id": "redis", "plan_id": "redis-large"})),
    );
    assert_eq!(patch.status, 202, "{:?}", patch.body);
    let op3 = patch.body["operation"].as_str().unwrap().to_string();
    assert_eq!(w.wait(&b, &id, &op3).body["state"], "succeeded");
    let large = format!("redis-large-{id}");
    let names = w.bosh.names();
    assert!(names.contains(&large) && !names.contains(&dep), "{names:?}");
    assert_eq!(w.index()[&id]["plan_id"], "redis-large");

    // Deprovision: deployment and index entry go, manifest and metadata stay.
    let del = w.osb(
        &b,
        "DELETE",
        &format!(
            "/v2/service_instances/{id}?accepts_incomplete=true&service_id=redis&plan_id=redis-large"
        ),
        None,
    );
    assert_eq!(del.status, 202, "{:?}", del.body);
    let op4 = del.body["operation"].as_str().unwrap().to_string();
    let gone = w.wait(&b, &id, &op4);
    assert_eq!(gone.body["state"], "succeeded", "{:?}", gone.body);
    assert!(!w.bosh.names().contains(&large));
    assert!(!w.index().contains_key(&id), "{:?}", w.index());
    assert!(w.vault.kv_read(&format!("{id}/manifest"), TOKEN).is_some());
    assert!(w.vault.kv_read(&format!("{id}/metadata"), TOKEN).is_some());
    // Gone for good: 410 on last_operation without an operation, on a second DELETE;
    // 404 on fetch.
    let lo = w.osb(
        &b,
        "GET",
        &format!("/v2/service_instances/{id}/last_operation"),
        None,
    );
    assert_eq!(lo.status, 410, "{:?}", lo.body);
    let del = w.osb(
        &b,
        "DELETE",
        &format!(
            "/v2/service_instances/{id}?accepts_incomplete=true&service_id=redis&plan_id=redis-large"
        ),
        None,
    );
    assert_eq!(del.status, 410, "{:?}", del.body);
    let got = w.osb(&b, "GET", &format!("/v2/service_instances/{id}"), None);
    assert_eq!(got.status, 404, "{:?}", got.body);
    assert_eq!(b.stop(), Some(0), "SIGTERM stops the broker gracefully");
}

#[test]
fn bad_requests_get_the_spec_status_and_a_readable_description() {
    let w = World::start(&[]);
    let b = w.broker();
    let put = |id: &str, body: Value| {
        w.osb(
            &b,
            "PUT",
            &format!("/v2/service_instances/{id}?accepts_incomplete=true"),
            Some(body),
        )
    };
    let body = |service: &str, plan: &str, params: Value| {
        json!({"service_id": service, "plan_id": plan, "organization_guid": "o",
               "space_guid": "s", "parameters": params})
    };

    // (what, answer, status, error code, words the description must hold)
    let mut cases: Vec<(&str, Answer, u16, &str, Vec<&str>)> = Vec::new();
    cases.push((
        "missing version header",
        w.request(&b, "GET", "/v2/catalog", None, &[], Some((USER, PASSWORD))),
        412,
        "PreconditionFailed",
        vec!["X-Broker-API-Version", "missing"],
    ));
    cases.push((
        "too old a version",
        w.request(
            &b,
            "GET",
            "/v2/catalog",
            None,
            &[("X-Broker-API-Version", "2.12")],
            Some((USER, PASSWORD)),
        ),
        412,
        "PreconditionFailed",
        vec!["2.12", "2.13"],
    ));
    cases.push((
        "wrong credentials",
        w.request(
            &b,
            "GET",
            "/v2/catalog",
            None,
            &[("X-Broker-API-Version", "2.17")],
            Some((USER, "wrong")),
        ),
        401,
        "Unauthorized",
        vec!["basic-auth"],
    ));
    cases.push((
        "no credentials",
        w.request(
            &b,
            "GET",
            "/v2/catalog",
            None,
            &[("X-Broker-API-Version", "2.17")],
            None,
        ),
        401,
        "Unauthorized",
        vec!["credentials"],
    ));
    cases.push((
        "unknown plan",
        put(&uuid(10), body("redis", "redis-smal", json!({}))),
        400,
        "BadRequest",
        vec!["redis-smal", "redis-small"],
    ));
    cases.push((
        "unknown service",
        put(&uuid(11), body("mongo", "redis-small", json!({}))),
        400,
        "BadRequest",
        vec!["mongo"],
    ));
    cases.push((
        "parameters failing the plan's schema",
        put(
            &uuid(12),
            body("redis", "redis-small", json!({"maxmemory": 5})),
        ),
        400,
        "BadRequest",
        vec!["schema", "maxmemory"],
    ));
    cases.push((
        "a parameter the plan does not use",
        put(
            &uuid(13),
            body("redis", "redis-large", json!({"maxmemroy": "1gb"})),
        ),
        400,
        "BadRequest",
        vec!["maxmemroy", "maxmemory"],
    ));
    cases.push((
        "parameters not an object",
        put(&uuid(14), body("redis", "redis-large", json!([1]))),
        400,
        "BadRequest",
        vec!["parameters"],
    ));
    cases.push((
        "malformed body",
        put(&uuid(15), json!({"service_id": "redis"})),
        400,
        "BadRequest",
        vec!["plan_id"],
    ));
    cases.push((
        "plan allowing none (limit -1)",
        put(&uuid(16), body("limited", "limited-none", json!({}))),
        422,
        "LimitReached",
        vec!["limited-none", "no instances"],
    ));
    cases.push((
        "without accepts_incomplete",
        w.osb(
            &b,
            "PUT",
            &format!("/v2/service_instances/{}", uuid(17)),
            Some(body("redis", "redis-large", json!({}))),
        ),
        422,
        "AsyncRequired",
        vec!["accepts_incomplete=true"],
    ));
    cases.push((
        "an id the spec declares",
        put(SPEC_ID, body("limited", "limited-one", json!({}))),
        409,
        "Conflict",
        vec![SPEC_ID, "spec"],
    ));
    // The service's limit of 2 counts the spec's instance: one more fits, then not.
    let fits = put(&uuid(18), body("limited", "limited-one", json!({})));
    assert_eq!(fits.status, 202, "{fits:?}");
    cases.push((
        "service over its limit (spec and broker instances together)",
        put(&uuid(19), body("limited", "limited-one", json!({}))),
        422,
        "LimitReached",
        vec!["limited", "limit of 2"],
    ));
    // An id reused with another plan.
    let uuid20 = uuid(20);
    let first = put(&uuid(20), body("redis", "redis-large", json!({})));
    assert_eq!(first.status, 202, "{first:?}");
    cases.push((
        "id reused with a different plan",
        put(&uuid(20), body("redis", "redis-small", json!({}))),
        409,
        "Conflict",
        vec![&uuid20, "redis-large"],
    ));
    let uuid21 = uuid(21);
    cases.push((
        "deprovision of an unknown instance",
        w.osb(
            &b,
            "DELETE",
            &format!(
                "/v2/service_instances/{uuid21}?accepts_incomplete=true&service_id=redis&plan_id=redis-large"
            ),
            None,
        ),
        410,
        "Gone",
        vec![&uuid21],
    ));
    cases.push((
        "last_operation of an unknown instance",
        w.osb(
            &b,
            "GET",
            &format!("/v2/service_instances/{uuid21}/last_operation"),
            None,
        ),
        410,
        "Gone",
        vec![&uuid21],
    ));
    cases.push((
        "last_operation of another operation",
        w.osb(
            &b,
            "GET",
            &format!(
                "/v2/service_instances/{}/last_operation?operation=nope",
                uuid(20)
            ),
            None,
        ),
        400,
        "BadRequest",
        vec!["nope"],
    ));
    cases.push((
        "deprovision without service_id and plan_id",
        w.osb(
            &b,
            "DELETE",
            &format!("/v2/service_instances/{}?accepts_incomplete=true", uuid(20)),
            None,
        ),
        400,
        "BadRequest",
        vec!["service_id"],
    ));

    let mut failures = Vec::new();
    for (what, a, status, code, words) in &cases {
        let description = a.body["description"].as_str().unwrap_or_default();
        if a.status != *status
            || a.body["error"] != *code
            || !words.iter().all(|w| description.contains(w))
        {
            failures.push(format!(
                "{what}: got {} {}, expected {status} {code} mentioning {words:?}",
                a.status, a.body
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing refused was recorded.
    let store = read_store(&w.s.path().join("state/brokered.json"));
    let mut ids: Vec<&String> = store["instances"].as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, vec![&uuid(18), &uuid(20)]);
}

#[test]
fn gitops_apply_after_broker_provisions_deletes_no_broker_instance() {
    let w = World::start(&[]);
    let b = w.broker();
    let ids = [uuid(31), uuid(32)];
    for id in &ids {
        let a = w.provision(&b, id, "redis-small", json!({}));
        assert_eq!(a.status, 202, "{a:?}");
        let op = a.body["operation"].as_str().unwrap().to_string();
        assert_eq!(w.wait(&b, id, &op).body["state"], "succeeded");
    }
    assert_eq!(b.stop(), Some(0));

    let plan = w.anvil(&["plan", "--json", "fnd"]);
    assert_code(&plan, 0);
    let doc: Value = serde_json::from_str(&stdout(&plan)).unwrap();
    let changes = doc["resource_changes"].as_array().unwrap();
    for c in changes {
        let addr = c["address"].as_str().unwrap();
        if ids.iter().any(|id| addr.contains(id.as_str())) {
            assert_eq!(c["action"], "no-op", "{c}");
        }
    }
    let text = stdout(&w.anvil(&["plan", "fnd"]));
    assert!(text.contains("0 to destroy"), "{text}");
    // The plan marks which resources are the broker's: in JSON every one of them, in
    // the text each one that changes (a deployment deleted behind anvil's back).
    for c in changes {
        let addr = c["address"].as_str().unwrap();
        let broker = ids.iter().any(|id| addr.contains(id.as_str()));
        let expected = if broker { json!("broker") } else { Value::Null };
        assert_eq!(c["origin"], expected, "{c}");
    }
    let gone = format!("redis-small-{}", ids[0]);
    w.bosh.delete(&gone);
    let text = stdout(&w.anvil(&["plan", "fnd"]));
    assert!(
        text.contains(&format!(
            "# bosh_deployment.{gone} (broker instance) will be created"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "# bosh_deployment.limited-one-{SPEC_ID} will be created"
        )),
        "{text}"
    );

    let apply = w.anvil(&["apply", "--auto-approve", "fnd"]);
    assert_code(&apply, 0);
    let names = w.bosh.names();
    for id in &ids {
        assert!(names.contains(&format!("redis-small-{id}")), "{names:?}");
        assert!(w.index().contains_key(id.as_str()));
    }
    // The deleted broker deployment was deployed again: one more deploy task.
    assert_eq!(deploys_per_deployment(&w.tasks())[&gone], 2);
    // The spec's own instance was deployed by the GitOps apply.
    assert!(
        names.contains(&format!("limited-one-{SPEC_ID}")),
        "{names:?}"
    );
    let _ = w.foundation();
}

#[test]
fn hundred_concurrent_provisions_then_a_sigkill_with_fifty_in_flight_resumes_each_once() {
    // Tasks take a while, so the SIGKILL finds deploys in flight.
    let w = World::start(&["--task-duration", "300ms"]);
    let b = w.broker();
    let provision_all = |b: &Broker, ids: &[String]| -> Vec<(String, Answer)> {
        let url = b.url.clone();
        w.rt.block_on(async {
            let calls = ids.iter().map(|id| {
                let req = w
                    .http
                    .put(format!(
                        "{url}/v2/service_instances/{id}?accepts_incomplete=true"
                    ))
                    .basic_auth(USER, Some(PASSWORD))
                    .header("X-Broker-API-Version", "2.17")
                    .json(&json!({"service_id": "redis", "plan_id": "redis-large",
                        "organization_guid": "o", "space_guid": "s"}));
                let id = id.clone();
                async move {
                    let resp = req.send().await.expect("provision");
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    (
                        id,
                        Answer {
                            status,
                            body,
                            request_identity: None,
                        },
                    )
                }
            });
            futures::future::join_all(calls).await
        })
    };
    let first: Vec<String> = (100..200).map(uuid).collect();
    let answers = provision_all(&b, &first);
    for (id, a) in &answers {
        assert_eq!(a.status, 202, "{id}: {a:?}");
    }
    for (id, a) in &answers {
        let op = a.body["operation"].as_str().unwrap();
        assert_eq!(w.wait(&b, id, op).body["state"], "succeeded", "{id}");
    }
    let names = w.bosh.names();
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("redis-large-"))
            .count(),
        100
    );
    let index = w.index();
    assert_eq!(
        first
            .iter()
            .filter(|id| index.contains_key(id.as_str()))
            .count(),
        100
    );

    // Fifty more; SIGKILL once all are accepted (recorded) and the Director runs some
    // of their deploys (started, not yet recorded by the broker).
    let second: Vec<String> = (200..250).map(uuid).collect();
    let answers = provision_all(&b, &second);
    for (id, a) in &answers {
        assert_eq!(a.status, 202, "{id}: {a:?}");
    }
    let mut running = 0;
    for _ in 0..3000 {
        running = w
            .tasks()
            .iter()
            .filter(|t| t["state"] == "processing" || t["state"] == "queued")
            .count();
        if running > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(running > 0, "no deploy of the second wave ever ran");
    b.kill();
    let b = w.broker();
    for (id, a) in &answers {
        let op = a.body["operation"].as_str().unwrap();
        let done = w.wait(&b, id, op);
        assert_eq!(done.body["state"], "succeeded", "{id}: {:?}", done.body);
    }
    let names = w.bosh.names();
    let index = w.index();
    for id in first.iter().chain(&second) {
        assert!(names.contains(&format!("redis-large-{id}")), "{id}");
        assert_eq!(
            index[id.as_str()]["status"],
            "provisioning_completed",
            "{id}"
        );
    }
    // None deployed twice: one deploy task per deployment.
    let per = deploys_per_deployment(&w.tasks());
    assert_eq!(per.len(), 150, "{per:?}");
    let twice: Vec<_> = per.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "deployed more than once: {twice:?}");
    assert_eq!(b.stop(), Some(0));
}

/// Deploy tasks per deployment in the simulated Director.
fn deploys_per_deployment(tasks: &[Value]) -> std::collections::BTreeMap<String, usize> {
    let mut per = std::collections::BTreeMap::new();
    for t in tasks {
        if t["description"] == "create deployment" {
            *per.entry(t["deployment"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    per
}

/// The broker lifecycle on a store kept by the state backend at `state`: provisions
/// recorded there (no local store file), a SIGKILL while deploys run and a restart that
/// resumes every unfinished provision from that store (each deployment deployed once),
/// `anvil plan` on the same state seeing the broker's instances, and a deprovision.
fn store_survives_a_sigkill(w: &World, state: &str) {
    let b = w.broker_at(Some(state));
    let ids: Vec<String> = (300..310).map(uuid).collect();
    let mut ops = Vec::new();
    for id in &ids {
        let a = w.provision(&b, id, "redis-large", json!({}));
        assert_eq!(a.status, 202, "{id}: {a:?}");
        ops.push(a.body["operation"].as_str().unwrap().to_string());
    }
    // The store lives in the backend, not in a file beside a local state.
    assert!(
        !w.s.path().join("state").exists(),
        "a local state directory was written with --state {state}"
    );
    let mut running = 0;
    for _ in 0..3000 {
        running = w
            .tasks()
            .iter()
            .filter(|t| t["state"] == "processing" || t["state"] == "queued")
            .count();
        if running > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(running > 0, "no deploy ever ran");
    b.kill();

    let b = w.broker_at(Some(state));
    for (id, op) in ids.iter().zip(&ops) {
        let done = w.wait(&b, id, op);
        assert_eq!(done.body["state"], "succeeded", "{id}: {:?}", done.body);
        assert_eq!(w.index()[id.as_str()]["status"], "provisioning_completed");
    }
    let per = deploys_per_deployment(&w.tasks());
    assert_eq!(per.len(), ids.len(), "{per:?}");
    let twice: Vec<_> = per.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "deployed more than once: {twice:?}");

    // Deprovision one: its deployment goes, the others stay.
    let gone = &ids[0];
    let del = w.osb(
        &b,
        "DELETE",
        &format!(
            "/v2/service_instances/{gone}?accepts_incomplete=true&service_id=redis&plan_id=redis-large"
        ),
        None,
    );
    assert_eq!(del.status, 202, "{del:?}");
    let op = del.body["operation"].as_str().unwrap().to_string();
    assert_eq!(w.wait(&b, gone, &op).body["state"], "succeeded");
    assert!(!w.bosh.names().contains(&format!("redis-large-{gone}")));
    assert_eq!(b.stop(), Some(0));

    // A GitOps plan on the same state sees the broker's instances: nothing to destroy.
    let plan = w.anvil(&["plan", "--state", state, "fnd"]);
    assert_code(&plan, 0);
    let text = stdout(&plan);
    assert!(text.contains("0 to destroy"), "{text}");
    // A restarted broker reads the finished operations back from the store.
    let b = w.broker_at(Some(state));
    let lo = w.osb(
        &b,
        "GET",
        &format!("/v2/service_instances/{}/last_operation", ids[1]),
        None,
    );
    assert_eq!(lo.body["state"], "succeeded", "{lo:?}");
    let lo = w.osb(
        &b,
        "GET",
        &format!("/v2/service_instances/{gone}/last_operation"),
        None,
    );
    assert_eq!(lo.status, 410, "{lo:?}");
    assert_eq!(b.stop(), Some(0));
}

#[test]
fn store_on_postgres_resumes_after_a_sigkill() {
    let pg = pg_support::PgCluster::shared();
    pg.create_db("broker_store");
    let w = World::start(&["--task-duration", "300ms"]);
    let url = pg.url("broker_store");
    store_survives_a_sigkill(&w, &url);
    let rows = pg.psql(
        "broker_store",
        "SELECT workspace, length(doc) > 0 FROM anvil_broker_store",
    );
    assert!(rows.contains("brokered"), "{rows}");
}

#[test]
fn store_on_vault_resumes_after_a_sigkill() {
    let w = World::start(&["--task-duration", "300ms"]);
    store_survives_a_sigkill(&w, "vault://secret/anvil/state");
    let store = w
        .vault
        .kv_read("anvil/state/brokered.broker", TOKEN)
        .expect("the broker store secret");
    assert_eq!(store["format"], "anvil-broker-store");
    assert_eq!(
        store["instances"][uuid(300).as_str()]["operation"]["kind"],
        "deprovision"
    );
}

#[test]
fn reconciler_endpoints_report_and_trigger_runs_only_with_an_interval() {
    let w = World::start(&[]);
    let admin = Some((USER, PASSWORD));
    // Without --reconcile-interval: 404 saying how to turn it on.
    let b = w.broker();
    for (method, path) in [
        ("GET", "/b/reconciler/status"),
        ("POST", "/b/reconciler/run"),
    ] {
        let a = w.request(&b, method, path, None, &[], admin);
        assert_eq!(a.status, 404, "{method} {path}: {a:?}");
        assert_eq!(a.body["error"], "NotFound");
        let d = a.body["description"].as_str().unwrap();
        assert!(d.contains("--reconcile-interval"), "{d}");
    }
    assert_eq!(b.stop(), Some(0));

    // A provisioned instance for the reconciler to find.
    let b = w.broker_with(None, &["--reconcile-interval", "1h"]);
    let id = uuid(400);
    let a = w.provision(&b, &id, "redis-small", json!({}));
    assert_eq!(a.status, 202, "{a:?}");
    let op = a.body["operation"].as_str().unwrap().to_string();
    assert_eq!(w.wait(&b, &id, &op).body["state"], "succeeded");

    // Behind the same auth.
    for (method, path) in [
        ("GET", "/b/reconciler/status"),
        ("POST", "/b/reconciler/run"),
    ] {
        let a = w.request(&b, method, path, None, &[], Some((USER, "wrong")));
        assert_eq!(a.status, 401, "{method} {path}: {a:?}");
    }
    let status = |w: &World| w.request(&b, "GET", "/b/reconciler/status", None, &[], admin);
    // The first run starts with the broker; wait for it (a hang guard, not timing).
    let mut st = status(&w);
    for _ in 0..3000 {
        if st.body["runs"].as_u64().unwrap_or(0) >= 1 && st.body["running"] == false {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        st = status(&w);
    }
    assert_eq!(st.status, 200, "{st:?}");
    assert_eq!(st.body["runs"], 1, "{st:?}");
    assert_eq!(st.body["interval_seconds"], 3600.0);
    assert!(st.body["next_run_at"].is_string(), "{st:?}");
    let last = &st.body["last_run"];
    assert!(
        last["started_at"].is_string() && last["duration_seconds"].is_number(),
        "{last}"
    );
    assert_eq!(last["result"]["ok"], true, "{last}");

    // A trigger runs it again now (202), not in an hour.
    let t = w.request(&b, "POST", "/b/reconciler/run", None, &[], admin);
    assert_eq!(t.status, 202, "{t:?}");
    let mut st = status(&w);
    for _ in 0..3000 {
        if st.body["runs"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        // While it runs, another trigger is refused with 409.
        let again = w.request(&b, "POST", "/b/reconciler/run", None, &[], admin);
        if st.body["running"] == true {
            assert!(again.status == 409 || again.status == 202, "{again:?}");
            if again.status == 409 {
                assert!(again.body["description"]
                    .as_str()
                    .unwrap()
                    .contains("already running"));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        st = status(&w);
    }
    assert!(st.body["runs"].as_u64().unwrap() >= 2, "{st:?}");
    // The triggered run found the broker's deployment.
    let mut st = status(&w);
    for _ in 0..3000 {
        if st.body["running"] == false {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        st = status(&w);
    }
    let last = &st.body["last_run"];
    assert_eq!(last["result"]["deployments_scanned"], 1, "{last}");
    assert_eq!(last["result"]["matched"], 1, "{last}");
    assert_eq!(b.stop(), Some(0));

    // A zero interval is refused at start.
    let o = w.anvil(&[
        "broker",
        "--foundation",
        "fnd",
        "--listen",
        "127.0.0.1:0",
        "--reconcile-interval",
        "0s",
        "--username",
        "u",
        "--password",
        "p",
    ]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("--reconcile-interval"),
        "{}",
        stderr(&o)
    );
}
