//! Acceptance 2 of issue 11: two real `anvil serve` processes on one PostgreSQL
//! (throwaway cluster) and one moto. Twenty environments are posted across both; one
//! server is SIGKILLed while one of its workers is mid-apply (some resources already
//! created). Checks: the other server takes the killed server's jobs after their lease
//! (attempt 2, its own worker) and finishes them; every environment reaches `ready`;
//! exactly once — the job table holds one provision job per environment, ended `ready`
//! once, and moto holds each environment's resources once (one VPC, one EKS cluster,
//! 2 × az_count subnets per lineage; as many tagged VPCs as environments).

#![cfg(feature = "aws")]

mod common;
mod moto_support;
mod pg_support;
mod serve_support;

use moto_support::Moto;
use pg_support::PgCluster;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use serve_support::{environment_yaml, Serve, TOKEN};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const ENVIRONMENTS: usize = 20;
/// Short, so the take-over comes soon after the kill; heartbeats every third of it.
const LEASE: &str = "8s";

async fn call(
    s: &Serve,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
) -> (StatusCode, Value) {
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client
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

fn start(pg_url: &str, moto: &Moto, dir: &std::path::Path, name: &str) -> Serve {
    Serve::start_with(
        common::BIN,
        &dir.join(name),
        &[
            "--database",
            pg_url,
            "--workers",
            "2",
            "--lease",
            LEASE,
            "--parallelism",
            "4",
        ],
        &dir.join(format!("{name}.log")),
        |cmd| {
            moto.apply_env(cmd);
            // A killed worker's state lock expires this soon too, so the worker that
            // takes its job over does not wait the default 30 s for it.
            cmd.env("ANVIL_LOCK_LEASE", LEASE);
        },
    )
}

/// Rows of `sql` (psql unaligned: `|` between columns).
fn rows(pg: &PgCluster, sql: &str) -> Vec<Vec<String>> {
    pg.psql("serve", sql)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_ready_each_environment_once_and_take_over_a_killed_one() {
    let pg = PgCluster::start();
    pg.create_db("serve");
    let url = format!("{}?schema=anvil", pg.url("serve"));
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let a = start(&url, &moto, dir.path(), "a");
    let b = start(&url, &moto, dir.path(), "b");

    let mut ids = BTreeMap::new();
    for i in 0..ENVIRONMENTS {
        let s = if i % 2 == 0 { &a } else { &b };
        let name = format!("pg{i:02}");
        let (code, body) = call(
            s,
            reqwest::Method::POST,
            "/api/v1/environments",
            Some(environment_yaml(&name)),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
        ids.insert(body["id"].as_str().unwrap().to_string(), name);
    }

    // Wait until one of a's workers is mid-apply: its job has created something.
    let a_workers = format!("%-{}-%", a.child.id());
    let t = Instant::now();
    let killed_jobs: Vec<String> = loop {
        let mid = rows(
            &pg,
            &format!(
                "SELECT j.id FROM anvil.anvil_jobs j WHERE j.state = 'running' \
                 AND j.worker LIKE '{a_workers}' AND EXISTS (SELECT 1 FROM anvil.anvil_job_events e \
                 WHERE e.environment_id = j.environment_id AND e.kind = 'progress' \
                 AND e.message LIKE '%create done in%')"
            ),
        );
        if !mid.is_empty() {
            break rows(
                &pg,
                &format!(
                    "SELECT id FROM anvil.anvil_jobs WHERE state = 'running' AND worker LIKE '{a_workers}'"
                ),
            )
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "server a never got mid-apply; its log:\n{}",
            a.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // SIGKILL: no graceful shutdown, no lease handed back.
    let mut a = a;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let a_log = a.logs();
    drop(a);

    // Every environment reaches ready, seen through the surviving server.
    let t = Instant::now();
    for (id, name) in &ids {
        loop {
            let (code, env) = call(
                &b,
                reqwest::Method::GET,
                &format!("/api/v1/environments/{id}"),
                None,
            )
            .await;
            assert_eq!(code, StatusCode::OK, "{env}");
            let status = env["status"].as_str().unwrap().to_string();
            assert_ne!(
                status,
                "failed",
                "{name}: {env}\nb's log:\n{}\na's log:\n{a_log}",
                b.logs()
            );
            if status == "ready" {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(1200),
                "{name} not ready: {env}\nb's log:\n{}",
                b.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    // The killed server's jobs were taken over by b after their lease and finished.
    assert!(!killed_jobs.is_empty());
    let b_workers = format!("%-{}-%", b.child.id());
    for job in &killed_jobs {
        let r = rows(
            &pg,
            &format!(
                "SELECT attempt, worker LIKE '{b_workers}', state, outcome \
                 FROM anvil.anvil_jobs WHERE id = '{job}'"
            ),
        );
        assert_eq!(r.len(), 1, "{job}");
        assert!(r[0][0].parse::<u32>().unwrap() >= 2, "{job}: {:?}", r[0]);
        assert_eq!(r[0][1..], ["t", "done", "ready"], "{job}");
    }

    // Exactly once, in the job table: one provision job per environment, ended ready.
    let per_env = rows(
        &pg,
        "SELECT e.name, count(j.id), count(j.id) FILTER (WHERE j.outcome = 'ready') \
         FROM anvil.anvil_environments e LEFT JOIN anvil.anvil_jobs j ON j.environment_id = e.id \
         GROUP BY e.name ORDER BY e.name",
    );
    assert_eq!(per_env.len(), ENVIRONMENTS, "{per_env:?}");
    for r in &per_env {
        assert_eq!(r[1..], ["1", "1"], "{r:?}");
    }

    // Exactly once, in moto: each lineage's resources once.
    let lineages: Vec<String> = rows(
        &pg,
        "SELECT lineage FROM anvil.anvil_state ORDER BY workspace",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    assert_eq!(lineages.len(), ENVIRONMENTS, "{lineages:?}");
    let counts = moto.python(
        r#"
REGION = 'eu-central-1'  # the environments' region (environment_yaml)
ec2 = client('ec2')
eks = client('eks')
def lin(tags):
    return {t['Key']: t['Value'] for t in (tags or [])}.get('anvil:lineage')
r = {}
def add(l, k):
    if l is not None:
        r.setdefault(l, {}).setdefault(k, 0)
        r[l][k] += 1
for v in ec2.describe_vpcs()['Vpcs']:
    add(lin(v.get('Tags')), 'vpc')
for s in ec2.describe_subnets()['Subnets']:
    add(lin(s.get('Tags')), 'subnet')
for c in eks.list_clusters()['clusters']:
    add(eks.describe_cluster(name=c)['cluster'].get('tags', {}).get('anvil:lineage'), 'eks')
result = r
"#,
    );
    let counts = counts.as_object().unwrap();
    assert_eq!(counts.len(), ENVIRONMENTS, "{counts:?}");
    for l in &lineages {
        let c = &counts[l];
        assert_eq!(
            (&c["vpc"], &c["eks"], &c["subnet"]),
            (&Value::from(1), &Value::from(1), &Value::from(4)),
            "lineage {l}: {c}"
        );
    }
    assert_eq!(b.stop(), Some(0));
}
