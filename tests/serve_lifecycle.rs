//! The environments lifecycle of `anvil serve` against moto (issue 11), with the real
//! binary in embedded mode (no database: file queue, local state; acceptance 5):
//!
//! - acceptance 1: POST an environment → polling `GET /{id}` and the events endpoint see
//!   queued, provisioning, bootstrapping, ready in that order; outputs are present, the
//!   kubeconfig reached the bootstrap hook but no GET body or log; DELETE → destroy_queued,
//!   destroying, destroyed, and nothing tagged with the workspace's lineage is left.
//! - acceptance 3: moto refusing the EKS cluster's creation (through a refusing proxy in
//!   front of it) ends the environment `failed` at `provisioning` with the error; once
//!   the proxy lets it through, `POST /{id}/refresh` continues from the recorded state
//!   (the plan adds only what is missing) and reaches ready.
#![cfg(feature = "aws")]

mod common;
mod moto_support;
mod serve_support;

use moto_support::Moto;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use serve_support::{environment_yaml, Serve, TOKEN};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn call(
    s: &Serve,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
) -> (StatusCode, Value) {
    let mut req = client()
        .request(method, format!("{}{path}", s.url))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.header("content-type", "application/yaml").body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls the environment until `until` (or `failed`), recording every status seen, in
/// order, each once; panics with the log after `limit`.
async fn poll(
    s: &Serve,
    id: &str,
    first: &str,
    until: &str,
    limit: Duration,
) -> (Vec<String>, Value) {
    let mut seen = vec![first.to_string()];
    let t = Instant::now();
    loop {
        let (code, body) = call(
            s,
            reqwest::Method::GET,
            &format!("/api/v1/environments/{id}"),
            None,
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let st = body["status"].as_str().unwrap().to_string();
        if seen.last() != Some(&st) {
            seen.push(st.clone());
        }
        if st == until || st == "failed" {
            return (seen, body);
        }
        assert!(
            t.elapsed() < limit,
            "{id} not {until} after {limit:?}: seen {seen:?}; log:\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// The statuses the events endpoint recorded (first word of each `status` event).
async fn event_statuses(s: &Serve, id: &str) -> Vec<String> {
    let (code, body) = call(
        s,
        reqwest::Method::GET,
        &format!("/api/v1/environments/{id}/events"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .or_else(|| body.as_array())
        .unwrap_or_else(|| panic!("no events in {body}"))
        .clone();
    events
        .iter()
        .filter(|e| e["kind"] == "status")
        .map(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Objects on moto tagged with `lineage`, per kind (EC2 kinds, EKS clusters).
fn tagged(moto: &Moto, lineage: &str) -> Value {
    moto.python(&format!(
        r#"
LIN = {lineage:?}
ec2 = boto3.client('ec2', endpoint_url=ENDPOINT, region_name='eu-central-1', aws_access_key_id='testing', aws_secret_access_key='testing')
f = [{{'Name': 'tag:anvil:lineage', 'Values': [LIN]}}]
r = {{}}
r['vpc'] = len(ec2.describe_vpcs(Filters=f)['Vpcs'])
r['subnet'] = len(ec2.describe_subnets(Filters=f)['Subnets'])
r['igw'] = len(ec2.describe_internet_gateways(Filters=f)['InternetGateways'])
r['eip'] = len(ec2.describe_addresses(Filters=f)['Addresses'])
r['nat'] = len([n for n in ec2.describe_nat_gateways(Filter=f)['NatGateways'] if n['State'] in ('pending', 'available')])
r['rtb'] = len(ec2.describe_route_tables(Filters=f)['RouteTables'])
r['sg'] = len(ec2.describe_security_groups(Filters=f)['SecurityGroups'])
eks = boto3.client('eks', endpoint_url=ENDPOINT, region_name='eu-central-1', aws_access_key_id='testing', aws_secret_access_key='testing')
r['eks'] = len([c for c in eks.list_clusters()['clusters'] if eks.describe_cluster(name=c)['cluster'].get('tags', {{}}).get('anvil:lineage') == LIN])
result = r
"#
    ))
}

fn lineage(data: &Path, name: &str) -> String {
    let p = data.join("state").join(format!("{name}.json"));
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    st["lineage"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_lifecycle_on_moto_queued_to_ready_then_destroyed_leaving_nothing() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seen_by_hook = dir.path().join("hook-saw");
    // The hook checks it got the kubeconfig, and takes a moment so polling sees
    // `bootstrapping`.
    let hook = format!(
        "grep -q certificate-authority-data \"$KUBECONFIG\" && grep -q get-token \"$KUBECONFIG\" && echo \"$ANVIL_ENVIRONMENT_NAME\" > {} && sleep 1",
        seen_by_hook.display()
    );
    let s = Serve::start_with(
        common::BIN,
        &data,
        &[
            "--workers",
            "1",
            "--lease",
            "20s",
            "--bootstrap-hook",
            &hook,
        ],
        &dir.path().join("serve.log"),
        |cmd| {
            moto.apply_env(cmd);
        },
    );
    let name = "life1";
    let (code, body) = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/environments",
        Some(environment_yaml(name)),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "queued", "{body}");
    let id = body["id"].as_str().unwrap().to_string();

    let (seen, env) = poll(&s, &id, "queued", "ready", Duration::from_secs(300)).await;
    assert_eq!(
        seen,
        ["queued", "provisioning", "bootstrapping", "ready"],
        "{env}\n{}",
        s.logs()
    );
    assert_eq!(
        event_statuses(&s, &id).await,
        ["queued", "provisioning", "bootstrapping", "ready"]
    );
    for o in ["vpc_id", "cluster_name", "cluster_endpoint"] {
        assert!(
            env["outputs"][o].as_str().is_some_and(|v| !v.is_empty()),
            "output {o}: {env}"
        );
    }
    assert!(env["last_plan"]["add"].as_u64().unwrap() > 10, "{env}");
    assert_eq!(std::fs::read_to_string(&seen_by_hook).unwrap().trim(), name);
    // The kubeconfig is a sensitive output: not in the body, not in the logs.
    assert!(
        !env.to_string().contains("certificate-authority-data"),
        "{env}"
    );
    assert!(!s.logs().contains("certificate-authority-data"));

    let lin = lineage(&data, name);
    let before = tagged(&moto, &lin);
    assert_eq!(before["vpc"], 1, "{before}");
    assert_eq!(before["eks"], 1, "{before}");

    let (code, body) = call(
        &s,
        reqwest::Method::DELETE,
        &format!("/api/v1/environments/{id}"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "destroy_queued", "{body}");
    let (seen, env) = poll(
        &s,
        &id,
        "destroy_queued",
        "destroyed",
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(
        seen,
        ["destroy_queued", "destroying", "destroyed"],
        "{env}\n{}",
        s.logs()
    );
    let all = event_statuses(&s, &id).await;
    assert_eq!(
        all[4..],
        ["destroy_queued", "destroying", "destroyed"],
        "{all:?}"
    );
    let left = tagged(&moto, &lin);
    assert!(
        left.as_object().unwrap().values().all(|v| v == 0),
        "left after destroy: {left}"
    );
    assert_eq!(s.stop(), Some(0));
}

/// A proxy in front of moto that refuses EKS `CreateCluster` while `refuse` is set.
async fn refusing_proxy(moto: String, refuse: Arc<AtomicBool>) -> String {
    use axum::body::{to_bytes, Body};
    use axum::extract::Request;
    use axum::response::Response;
    let http = Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let http = http.clone();
        let moto = moto.clone();
        let refuse = refuse.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = to_bytes(body, 64 << 20).await.unwrap_or_default();
            if refuse.load(Ordering::SeqCst)
                && parts.method == axum::http::Method::POST
                && parts.uri.path() == "/clusters"
            {
                return Response::builder()
                    .status(400)
                    .header("content-type", "application/json")
                    .header("x-amzn-errortype", "InvalidParameterException")
                    .body(Body::from(
                        r#"{"message":"refused by the test proxy: no EKS today"}"#,
                    ))
                    .unwrap();
            }
            let url = format!(
                "{moto}{}",
                parts.uri.path_and_query().map_or("/", |p| p.as_str())
            );
            let mut fwd = http.request(parts.method.clone(), url).body(bytes.to_vec());
            for (k, v) in &parts.headers {
                if k != "host" && k != "content-length" {
                    fwd = fwd.header(k, v);
                }
            }
            let got = fwd.send().await.unwrap();
            let mut resp = Response::builder().status(got.status().as_u16());
            for (k, v) in got.headers() {
                if k != "content-length" && k != "transfer-encoding" {
                    resp = resp.header(k, v);
                }
            }
            resp.body(Body::from(got.bytes().await.unwrap_or_default()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_apply_fails_at_provisioning_and_a_refresh_continues_to_ready() {
    let moto = Moto::start();
    let refuse = Arc::new(AtomicBool::new(true));
    let proxy = refusing_proxy(moto.endpoint(), refuse.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Serve::start_with(
        common::BIN,
        &data,
        &["--workers", "1", "--lease", "20s"],
        &dir.path().join("serve.log"),
        |cmd| {
            moto.apply_env(cmd);
            cmd.env("AWS_ENDPOINT_URL", &proxy);
        },
    );
    let (code, body) = call(
        &s,
        reqwest::Method::POST,
        "/api/v1/environments",
        Some(environment_yaml("fail1")),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (seen, env) = poll(&s, &id, "queued", "ready", Duration::from_secs(300)).await;
    assert_eq!(
        seen,
        ["queued", "provisioning", "failed"],
        "{env}\n{}",
        s.logs()
    );
    assert_eq!(env["failed_step"], "provisioning", "{env}");
    let error = env["error"].as_str().unwrap();
    assert!(
        error.contains("aws_eks_cluster.") && error.contains("no EKS today"),
        "{error}"
    );
    let first_add = env["last_plan"]["add"].as_u64();
    assert!(first_add.is_none(), "no plan was applied whole: {env}");

    // The same refresh while the job cannot run would change nothing: let EKS through.
    refuse.store(false, Ordering::SeqCst);
    let (code, body) = call(
        &s,
        reqwest::Method::POST,
        &format!("/api/v1/environments/{id}/refresh"),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued", "{body}");
    let (seen, env) = poll(&s, &id, "queued", "ready", Duration::from_secs(300)).await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("ready"),
        "{seen:?} {env}\n{}",
        s.logs()
    );
    assert!(env["error"].is_null(), "{env}");
    // Only what the failed run did not make: the cluster and its node group.
    assert_eq!(env["last_plan"]["add"], 2, "{env}");
    let lin = lineage(&data, "fail1");
    let made = tagged(&moto, &lin);
    assert_eq!(made["vpc"], 1, "{made}");
    assert_eq!(made["eks"], 1, "{made}");
    assert_eq!(s.stop(), Some(0));
}
