//! Bad requests to `anvil serve` (issue 11, acceptance 4), against the real binary with
//! `--no-workers` (embedded file queue): malformed JSON and YAML, schema and model
//! violations, unknown and malformed ids, DELETE of a destroyed environment, missing and
//! wrong tokens, oversized bodies, wrong media types, routes and methods — each the
//! right 4xx with a JSON body naming the field, never a 5xx. Also the good paths the bad
//! ones are measured against (201, idempotency, list, events as JSON and SSE), the
//! correlation id in responses and JSON logs, and startup refusals (no token, a bad
//! token file).

mod common;
mod serve_support;

use anvil::server::queue::file::FileQueue;
use anvil::server::queue::{JobOutcome, JobQueue, NewEnvironment, Status};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;
use serve_support::{environment_yaml, Serve, TOKEN};
use std::path::Path;
use std::time::Duration;

fn start(dir: &Path, args: &[&str]) -> Serve {
    let mut all = vec!["--no-workers"];
    all.extend_from_slice(args);
    Serve::start(common::BIN, &dir.join("data"), &all, &dir.join("serve.log"))
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn post(s: &Serve, content_type: &str, body: impl Into<reqwest::Body>) -> Response {
    client()
        .post(format!("{}/api/v1/environments", s.url))
        .bearer_auth(TOKEN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn get(s: &Serve, path: &str) -> Response {
    client()
        .get(format!("{}{path}", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

/// The status must be `want` and the body a JSON error naming `field`; returns the body.
async fn refused(resp: Response, want: StatusCode, field: &str) -> Value {
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.unwrap();
    assert_eq!(status, want, "{text}");
    assert!(
        ct.starts_with("application/json"),
        "content-type {ct}: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    if field.is_empty() {
        assert!(body["field"].is_null(), "{text}");
    } else {
        assert_eq!(body["field"], field, "{text}");
    }
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{text}"
    );
    body
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let b = refused(
        post(&s, "application/json", "{\n  \"kind\": Environment\n}").await,
        StatusCode::BAD_REQUEST,
        "body",
    )
    .await;
    assert_eq!(b["error"], "malformed_document");
    assert_eq!(b["errors"][0]["line"], 2, "{b}");
    assert_eq!(b["errors"][0]["file"], "environments/request.json", "{b}");
    let b = refused(
        post(
            &s,
            "application/yaml",
            "kind: [Environment\nmetadata: {name: x",
        )
        .await,
        StatusCode::BAD_REQUEST,
        "body",
    )
    .await;
    assert!(b["message"].as_str().unwrap().contains("YAML"), "{b}");
    refused(
        post(&s, "application/json", vec![0xff_u8, 0xfe, b'{']).await,
        StatusCode::BAD_REQUEST,
        "body",
    )
    .await;
    refused(
        post(&s, "application/json", "").await,
        StatusCode::BAD_REQUEST,
        "body",
    )
    .await;
}

#[tokio::test]
async fn schema_and_model_violations_are_422_naming_each_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let good = environment_yaml("shape");
    // A wrong type, an unknown field and a bad CIDR: the first two from the schema.
    let bad = good
        .replace("az_count: 2", "az_count: two")
        .replace("size: small", "size: small\ncolour: blue");
    let b = refused(
        post(&s, "application/yaml", bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "network.az_count",
    )
    .await;
    assert_eq!(b["error"], "invalid_document");
    let errors = b["errors"].as_array().unwrap();
    let az = errors
        .iter()
        .find(|e| e["path"] == "network.az_count")
        .unwrap_or_else(|| panic!("{b}"));
    assert_eq!(az["line"], 12, "{b}");
    assert!(az["column"].as_u64().is_some(), "{b}");
    assert!(
        errors
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("colour")),
        "{b}"
    );
    // The model's checks, as for a spec file.
    let b = refused(
        post(&s, "application/yaml", good.replace("/16", "/33")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "network.cidr",
    )
    .await;
    assert_eq!(b["errors"][0]["path"], "network.cidr", "{b}");
    // JSON bodies are located too.
    let json = r#"{"apiVersion": "anvil/v1", "kind": "Environment",
 "metadata": {"name": "UPPER"}}"#;
    let b = refused(
        post(&s, "application/json", json).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "metadata.name",
    )
    .await;
    assert!(
        b["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "metadata.name" && e["line"] == 2),
        "{b}"
    );
    // Other kinds, and the server's environment is not readable.
    let b = refused(
        post(
            &s,
            "application/yaml",
            "apiVersion: anvil/v1\nkind: Resources\nmetadata:\n  name: r\nresources: []\n",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "kind",
    )
    .await;
    assert!(
        b["message"].as_str().unwrap().contains("Environment"),
        "{b}"
    );
    let leak = good.replace(
        "size: small",
        "size: small\ntags:\n  t: ${env:ANVIL_SERVE_TOKEN}",
    );
    let b = refused(
        post(&s, "application/yaml", leak).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "tags.t",
    )
    .await;
    assert!(!b.to_string().contains(TOKEN), "{b}");
    // Nothing was recorded.
    let list: Value = get(&s, "/api/v1/environments").await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
}

#[tokio::test]
async fn headers_media_types_sizes_routes_and_methods_are_refused_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let good = environment_yaml("headers");
    refused(
        post(&s, "text/plain", good.clone()).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Content-Type",
    )
    .await;
    let resp = client()
        .post(format!("{}/api/v1/environments", s.url))
        .bearer_auth(TOKEN)
        .body(good.clone())
        .send()
        .await
        .unwrap();
    refused(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type").await;
    // 2 MiB of a valid-looking document.
    let big = format!("{good}# {}\n", "x".repeat(2 * 1024 * 1024));
    refused(
        post(&s, "application/yaml", big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body",
    )
    .await;
    let resp = client()
        .post(format!("{}/api/v1/environments", s.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/yaml")
        .header("idempotency-key", "")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    refused(resp, StatusCode::BAD_REQUEST, "Idempotency-Key").await;
    let b = refused(get(&s, "/api/v2/nothing").await, StatusCode::NOT_FOUND, "").await;
    assert_eq!(b["error"], "not_found");
    let resp = client()
        .put(format!("{}/api/v1/environments", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let b: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{b}");
    assert_eq!(b["error"], "method_not_allowed", "{b}");
    // Query parameters.
    refused(
        get(&s, "/api/v1/environments?status=sleeping").await,
        StatusCode::BAD_REQUEST,
        "status",
    )
    .await;
    refused(
        get(&s, "/api/v1/environments?limit=-1").await,
        StatusCode::BAD_REQUEST,
        "limit",
    )
    .await;
    refused(
        get(&s, "/api/v1/environments?cursor=not-a-cursor").await,
        StatusCode::BAD_REQUEST,
        "cursor",
    )
    .await;
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404_and_400() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let unknown = "4b0f3c2e-5a7d-4e0a-9d8b-2f1e6c3a9b71";
    for path in [
        format!("/api/v1/environments/{unknown}"),
        format!("/api/v1/environments/{unknown}/events"),
    ] {
        let b = refused(get(&s, &path).await, StatusCode::NOT_FOUND, "id").await;
        assert!(b["message"].as_str().unwrap().contains(unknown), "{b}");
    }
    let resp = client()
        .delete(format!("{}/api/v1/environments/{unknown}", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    refused(resp, StatusCode::NOT_FOUND, "id").await;
    let resp = client()
        .post(format!("{}/api/v1/environments/{unknown}/refresh", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    refused(resp, StatusCode::NOT_FOUND, "id").await;
    for path in [
        "/api/v1/environments/not-a-uuid",
        "/api/v1/environments/12345/events",
    ] {
        refused(get(&s, path).await, StatusCode::BAD_REQUEST, "id").await;
    }
}

#[tokio::test]
async fn tokens_are_required_except_on_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    let url = format!("{}/api/v1/environments", s.url);
    for (name, req) in [
        ("none", client().get(&url)),
        (
            "wrong",
            client()
                .get(&url)
                .bearer_auth("serve-test-token-0123456789abcdeX"),
        ),
        (
            "basic",
            client().get(&url).basic_auth("default", Some(TOKEN)),
        ),
        (
            "post",
            client()
                .post(&url)
                .header("content-type", "application/yaml")
                .body(environment_yaml("anon")),
        ),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{name}"
        );
        let b = refused(resp, StatusCode::UNAUTHORIZED, "Authorization").await;
        assert_eq!(b["error"], "unauthorized", "{name}: {b}");
    }
    let health = client()
        .get(format!("{}/health", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let h: Value = health.json().await.unwrap();
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["queue_depth"], 0, "{h}");
    assert_eq!(h["local_workers"], 0, "{h}");
    let metrics = client()
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            "api_requests_total{endpoint=\"/api/v1/environments\",method=\"GET\",status=\"401\"} 3"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_good_post_is_201_then_idempotent_listed_and_a_taken_name_is_409() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--log-format", "json"]);
    let send = |key: &'static str, body: String| {
        client()
            .post(format!("{}/api/v1/environments", s.url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/yaml")
            .header("idempotency-key", key)
            .header("x-request-id", "corr-test-1")
            .body(body)
            .send()
    };
    let resp = send("k1", environment_yaml("alpha")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["x-request-id"], "corr-test-1");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/environments/{id}"));
    assert_eq!(created["status"], "queued");
    assert_eq!(created["name"], "alpha");
    assert_eq!(created["user_id"], "default");
    // The same key and document: the same environment, 200.
    let again = send("k1", environment_yaml("alpha")).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], created["id"]);
    // The same key with another document, and the same name without a key: 409.
    refused(
        send("k1", environment_yaml("beta")).await.unwrap(),
        StatusCode::CONFLICT,
        "Idempotency-Key",
    )
    .await;
    refused(
        send("k2", environment_yaml("alpha")).await.unwrap(),
        StatusCode::CONFLICT,
        "metadata.name",
    )
    .await;
    // A queued environment cannot be refreshed.
    let resp = client()
        .post(format!("{}{location}/refresh", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    refused(resp, StatusCode::CONFLICT, "status").await;
    // JSON is accepted too; then list, filter and page.
    let json = serde_json::to_string(&created["document"])
        .unwrap()
        .replace("\"alpha\"", "\"gamma\"");
    assert_eq!(
        post(&s, "application/json", json).await.status(),
        StatusCode::CREATED
    );
    let page: Value = get(&s, "/api/v1/environments?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["name"], "alpha", "{page}");
    let next = page["next"].as_str().unwrap().to_string();
    let page2: Value = get(&s, &next).await.json().await.unwrap();
    assert_eq!(page2["items"][0]["name"], "gamma", "{page2}");
    let queued: Value = get(&s, "/api/v1/environments?status=queued&limit=100000")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(queued["items"].as_array().unwrap().len(), 2, "{queued}");
    let ready: Value = get(&s, "/api/v1/environments?status=ready")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ready["items"].as_array().unwrap().len(), 0, "{ready}");
    // Events as JSON.
    let evs: Value = get(&s, &format!("{location}/events"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(evs["environment_id"], id.as_str());
    assert_eq!(evs["status"], "queued");
    // The request span's fields are in the JSON log lines.
    let _ = get(&s, &location).await;
    let logs = s.logs();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["span"]["correlation_id"] == "corr-test-1"
                && l["span"]["environment_id"] == id.as_str()
        })
        .unwrap_or_else(|| panic!("no JSON log line with both ids:\n{logs}"));
    assert!(line["fields"]["message"].is_string(), "{line}");
    assert!(!logs.contains(TOKEN), "a token reached the log");
}

/// A destroyed environment, made by driving the file queue as a worker would.
async fn destroyed_environment(data: &Path) -> uuid::Uuid {
    let q = FileQueue::open(&data.join("queue")).await.unwrap();
    let doc: Value = serde_yaml_doc(&environment_yaml("gone"));
    let env = q
        .submit(NewEnvironment {
            name: "gone".into(),
            user_id: "default".into(),
            document: doc,
            idempotency_key: None,
        })
        .await
        .unwrap()
        .environment;
    let lease = Duration::from_secs(60);
    let job = q.take("test-worker", lease).await.unwrap().unwrap();
    q.record_event(&job, "progress", "applied").await.unwrap();
    q.finish(
        &job,
        JobOutcome::Ready {
            outputs: Default::default(),
            last_plan: None,
        },
    )
    .await
    .unwrap();
    q.request_destroy(env.id).await.unwrap();
    let job = q.take("test-worker", lease).await.unwrap().unwrap();
    q.finish(&job, JobOutcome::Destroyed).await.unwrap();
    assert_eq!(q.get(env.id).await.unwrap().status, Status::Destroyed);
    env.id
}

/// The recorded form of a document, as the API would record it.
fn serde_yaml_doc(yaml: &str) -> Value {
    anvil::ops::environment_doc::check(
        Path::new("environments/test.yaml"),
        yaml,
        anvil::ops::environment_doc::BodyFormat::Yaml,
    )
    .unwrap()
    .document
}

#[tokio::test]
async fn deleting_a_destroyed_environment_is_409_and_its_events_stream_ends() {
    let dir = tempfile::tempdir().unwrap();
    let id = destroyed_environment(&dir.path().join("data")).await;
    let s = start(dir.path(), &[]);
    let url = format!("{}/api/v1/environments/{id}", s.url);
    let resp = client()
        .delete(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let b = refused(resp, StatusCode::CONFLICT, "status").await;
    assert!(b["message"].as_str().unwrap().contains("destroyed"), "{b}");
    let resp = client()
        .post(format!("{url}/refresh"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    refused(resp, StatusCode::CONFLICT, "status").await;
    // Its name is free again.
    assert_eq!(
        post(&s, "application/yaml", environment_yaml("gone"))
            .await
            .status(),
        StatusCode::CREATED
    );
    // SSE: every event, then the stream ends (the environment is settled).
    let resp = client()
        .get(format!("{url}/events"))
        .bearer_auth(TOKEN)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: progress"), "{text}");
    assert!(text.contains("data: {"), "{text}");
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && !ids.is_empty(),
        "{text}"
    );
    // Resuming after the last id sends nothing more.
    let last = ids.last().unwrap().to_string();
    let resp = client()
        .get(format!("{url}/events"))
        .bearer_auth(TOKEN)
        .header("accept", "text/event-stream")
        .header("last-event-id", last)
        .send()
        .await
        .unwrap();
    let rest = resp.text().await.unwrap();
    assert!(!rest.contains("id: "), "{rest}");
    refused(
        get(&s, &format!("/api/v1/environments/{id}/events?after=x")).await,
        StatusCode::BAD_REQUEST,
        "after",
    )
    .await;
    assert_eq!(s.stop(), Some(0), "SIGTERM must stop the server gracefully");
}

#[test]
fn startup_refuses_no_token_and_bad_token_files() {
    let scratch = common::Scratch::new();
    let out = scratch
        .cmd(&["serve", "--listen", "127.0.0.1:0", "--no-workers"])
        .env_remove("ANVIL_SERVE_TOKEN")
        .output()
        .unwrap();
    common::assert_code(&out, 1);
    assert!(
        common::stderr(&out).contains("ANVIL_SERVE_TOKEN"),
        "{}",
        common::stderr(&out)
    );
    let file = scratch.write("tokens", "alice:aaaaaaaaaaaaaaaaaaaa\nbob\n");
    let out = scratch
        .cmd(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-workers",
            "--token-file",
        ])
        .arg(&file)
        .env_remove("ANVIL_SERVE_TOKEN")
        .output()
        .unwrap();
    common::assert_code(&out, 1);
    let err = common::stderr(&out);
    assert!(err.contains(&format!("{}:2:", file.display())), "{err}");
    let out = scratch
        .cmd(&["serve", "--no-api", "--no-workers"])
        .output()
        .unwrap();
    common::assert_code(&out, 1);
    assert!(
        common::stderr(&out).contains("--no-api"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn print_openapi_prints_the_checked_in_document() {
    let scratch = common::Scratch::new();
    let out = scratch.run(&["serve", "--print-openapi"]);
    common::assert_code(&out, 0);
    let want = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/openapi-environments.json"
    ))
    .unwrap();
    assert_eq!(common::stdout(&out), want);
}

/// The workers are wired: with a worker and an AWS endpoint nobody listens on, a posted
/// environment ends `failed` in `provisioning` with the error, and the metrics count it.
#[tokio::test]
async fn a_failed_job_is_reported_by_status_events_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::start_with(
        common::BIN,
        &dir.path().join("data"),
        &["--workers", "1", "--lease", "5s"],
        &dir.path().join("serve.log"),
        |c| {
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("AWS_") {
                    c.env_remove(k);
                }
            }
            c.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_CONFIG_FILE", "/dev/null")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
                .env("AWS_EC2_METADATA_DISABLED", "true");
        },
    );
    let resp = post(&s, "application/yaml", environment_yaml("doomed")).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A hang guard, not a timing assertion: the AWS calls fail on a closed port.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let env = loop {
        let env: Value = get(&s, &format!("/api/v1/environments/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if env["status"] == "failed" {
            break env;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {env} after 300s; log:\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(env["failed_step"], "provisioning", "{env}");
    assert!(
        env["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{env}"
    );
    let evs: Value = get(&s, &format!("/api/v1/environments/{id}/events"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        evs["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("provisioning")),
        "{evs}"
    );
    let text = client()
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("provisioning_errors_total 1"), "{text}");
    assert!(
        text.contains("provisioning_environments_total{status=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("provisioning_duration_seconds_count{kind=\"provision\"} 1"),
        "{text}"
    );
    let h: Value = client()
        .get(format!("{}/health", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["local_workers"], 1, "{h}");
    assert_eq!(s.stop(), Some(0));
}
