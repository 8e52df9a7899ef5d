//! AWS environment benchmark (issue 10, acceptance 7): `cargo bench --bench environment`.
//!
//! Starts moto (`.venv/bin/moto_server`, see tests/moto_support) on a loopback port and,
//! with the binary built for the bench (release under `cargo bench`) and local state in
//! a scratch directory, times:
//! 1. `apply` of `examples/environment/` (34 resources) from empty, then a no-op `plan`
//!    (which refreshes: reads every object back; goal < 1 s).
//! 2. 20 environments in one workspace (the example with distinct names, CIDRs and
//!    buckets: 680 resources): `apply` from empty, then a no-op `plan` (goal < 1 s).
//!
//! moto answers every waiter at once (NAT available, EKS ACTIVE, RDS available), so the
//! "critical path of waits" cannot be read off AWS's clocks. It is computed from this
//! apply instead: each resource's create duration is measured from its `Creating...` to
//! its `Creation complete` line (stdout is read line by line and time-stamped here), and
//! the critical path is the longest dependency chain (dependencies as the state records
//! them) weighted by those durations — the shortest time any schedule of this graph with
//! these per-resource costs could take. The apply's wall time is reported against it
//! (goal ≤ 1.2×), with the work bound (sum of durations / `--parallelism`) beside it,
//! which is the other lower bound when the graph is wide.
//!
//! moto is the third bound: it answers on one Python interpreter, one request at a time
//! under the GIL. The bench reads moto's CPU time (`/proc/PID/stat`) around the apply and
//! the plan: a run cannot take less wall time than moto spent serving it. And after the
//! plan it times the read floor: every object read once from boto3 (one unfiltered
//! `Describe*` per type, plus the per-object calls AWS has no list form for), the least
//! moto work any refresh of this workspace needs.
//!
//! `ANVIL_BENCH_BIN=path/to/anvil` runs that binary instead of the one built with the
//! bench. Pass `-- --parallelism N` to set the apply and plan parallelism (default anvil's, 10),
//! `-- example` or `-- many` to run one case only. The no-op plan runs with
//! `ANVIL_LOG=anvil=debug`, and its refresh (the AWS reads) is reported apart from the
//! whole plan (spec load, schema check, model, plan).
//! Results go to stdout as Markdown rows for docs/benchmarks.md.

#[path = "../tests/moto_support/mod.rs"]
mod moto_support;

use moto_support::Moto;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_anvil");
const EXAMPLE: &str = include_str!("../examples/environment/environment.yaml");
const ENVIRONMENTS: usize = 20;

/// The example as environment `env{i}` of workspace `bench`: its own name (which every
/// AWS name carries), a /16 of its own and its own bucket.
fn environment(i: usize) -> String {
    EXAMPLE
        .replace(
            "metadata:\n  name: demo\n",
            &format!("metadata:\n  name: bench\nname: env{i:02}\n"),
        )
        .replace("10.20.0.0/16", &format!("10.{}.0.0/16", 100 + i))
        .replace("demo-artifacts-", &format!("env{i:02}-artifacts-"))
}

/// What one `anvil` run took, and per address when its operation started and ended
/// (offsets from the process start, as its stdout lines arrived).
struct Run {
    wall: Duration,
    code: i32,
    started: HashMap<String, Duration>,
    finished: HashMap<String, Duration>,
    /// What `ANVIL_LOG=anvil=debug` said the refresh took, if it was asked.
    refreshed: Option<Duration>,
}

/// A `Duration`'s `Debug` form (`4.69s`, `812.3ms`, `95µs`, `10ns`).
fn parse_debug_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "µs" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(n * scale))
}

/// The refresh time in anvil's debug log (`… refreshed elapsed=4.69s resources=34 …`).
fn refresh_time(log: &str) -> Option<Duration> {
    log.lines()
        .filter(|l| l.contains(" refreshed "))
        .find_map(|l| {
            let v = l.split_once("elapsed=")?.1.split_whitespace().next()?;
            parse_debug_duration(v)
        })
}

fn anvil(dir: &Path, moto: &Moto, args: &[&str], debug_log: bool) -> Run {
    // `ANVIL_BENCH_BIN` runs another build of anvil (a release binary at hand, when this
    // bench was built in the dev profile to save the release build's time).
    let bin = std::env::var_os("ANVIL_BENCH_BIN").unwrap_or_else(|| BIN.into());
    let mut cmd = Command::new(bin);
    if debug_log {
        cmd.env("ANVIL_LOG", "anvil=debug");
    }
    cmd.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    moto.apply_env(&mut cmd);
    let start = Instant::now();
    let mut child = cmd.spawn().expect("start anvil");
    let stderr = child.stderr.take().expect("stderr");
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let mut started = HashMap::new();
    let mut finished = HashMap::new();
    let mut tail = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let Ok(line) = line else { break };
        let at = start.elapsed();
        // `ADDR: Creating...` / `ADDR: Creation complete after 0s [id=…]` (and the same
        // for other operations); addresses hold no ": ".
        if let Some((addr, rest)) = line.split_once(": ") {
            if rest.ends_with("...") {
                started.insert(addr.to_string(), at);
            } else if rest.contains(" complete after ") {
                finished.insert(addr.to_string(), at);
            }
        }
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
    }
    let status = child.wait().expect("wait for anvil");
    let wall = start.elapsed();
    let code = status.code().unwrap_or(-1);
    let err = err.join().unwrap_or_default();
    if code != 0 {
        eprintln!(
            "anvil {} exited {code}:\n{}\n{err}",
            args.join(" "),
            tail.join("\n")
        );
    }
    Run {
        wall,
        code,
        started,
        finished,
        refreshed: refresh_time(&err),
    }
}

/// The state of workspace `ws` in `dir`: address → recorded dependencies.
fn dependencies(dir: &Path, ws: &str) -> BTreeMap<String, Vec<String>> {
    let path = dir.join("state").join(format!("{ws}.json"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let st: Value = serde_json::from_str(&text).expect("state JSON");
    let resources = st["resources"].as_object().expect("state.resources");
    resources
        .iter()
        .map(|(addr, r)| {
            let deps = r["dependencies"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (addr.clone(), deps)
        })
        .collect()
}

/// The longest chain of `deps` weighted by `cost` (a DAG): its length and addresses,
/// first dependency first.
fn critical_path(
    deps: &BTreeMap<String, Vec<String>>,
    cost: &HashMap<String, Duration>,
) -> (Duration, Vec<String>) {
    fn longest(
        a: &str,
        deps: &BTreeMap<String, Vec<String>>,
        cost: &HashMap<String, Duration>,
        memo: &mut HashMap<String, (Duration, Option<String>)>,
    ) -> Duration {
        if let Some((d, _)) = memo.get(a) {
            return *d;
        }
        let mut best = (Duration::ZERO, None);
        for d in deps.get(a).into_iter().flatten() {
            let l = longest(d, deps, cost, memo);
            if l > best.0 {
                best = (l, Some(d.clone()));
            }
        }
        let total = best.0 + cost.get(a).copied().unwrap_or_default();
        memo.insert(a.to_string(), (total, best.1));
        total
    }
    let mut memo = HashMap::new();
    let mut end = (Duration::ZERO, String::new());
    for a in deps.keys() {
        let l = longest(a, deps, cost, &mut memo);
        if l > end.0 {
            end = (l, a.clone());
        }
    }
    let mut chain = vec![end.1.clone()];
    while let Some((_, Some(prev))) = memo.get(chain.last().map_or("", String::as_str)) {
        chain.push(prev.clone());
    }
    chain.reverse();
    (end.0, chain)
}

/// moto's CPU time since `before`, in seconds for the table (`?` when unreadable).
fn busy(moto: &Moto, before: Option<Duration>) -> String {
    moto.busy_since(before)
        .map_or_else(|| "?".to_string(), |d| format!("{:.2}", secs(d)))
}

/// The least moto time any refresh of these environments needs: every object read once,
/// from boto3 (no anvil), one after the other — one unfiltered `Describe*` per EC2 and
/// RDS type (moto renders each object once), and the per-object calls AWS has no list
/// form for (EKS clusters and node groups, the VPC DNS attributes, the bucket settings).
/// moto serves requests one at a time under the GIL, so no client, however parallel,
/// refreshes faster than this.
fn read_floor(moto: &Moto) -> Duration {
    let v = moto.python(
        "import time\n\
         kw = dict(endpoint_url=ENDPOINT, region_name='eu-central-1', \
         aws_access_key_id='testing', aws_secret_access_key='testing')\n\
         ec2, eks, rds, s3 = (boto3.client(n, **kw) for n in ('ec2', 'eks', 'rds', 's3'))\n\
         ec2.describe_availability_zones(); eks.list_clusters(); \
         rds.describe_db_instances(); s3.list_buckets()\n\
         start = time.perf_counter()\n\
         vpcs = ec2.describe_vpcs()['Vpcs']\n\
         for f in (ec2.describe_subnets, ec2.describe_internet_gateways, \
         ec2.describe_addresses, ec2.describe_nat_gateways, ec2.describe_route_tables, \
         ec2.describe_security_groups, rds.describe_db_instances, \
         rds.describe_db_subnet_groups):\n    f()\n\
         for v in vpcs:\n    \
         for a in ('enableDnsSupport', 'enableDnsHostnames'):\n        \
         ec2.describe_vpc_attribute(VpcId=v['VpcId'], Attribute=a)\n\
         for c in eks.list_clusters()['clusters']:\n    \
         eks.describe_cluster(name=c)\n    \
         for g in eks.list_nodegroups(clusterName=c)['nodegroups']:\n        \
         eks.describe_nodegroup(clusterName=c, nodegroupName=g)\n\
         for b in s3.list_buckets()['Buckets']:\n    \
         n = b['Name']\n    \
         s3.get_bucket_versioning(Bucket=n); s3.get_public_access_block(Bucket=n)\n    \
         s3.get_bucket_lifecycle_configuration(Bucket=n); s3.get_bucket_tagging(Bucket=n)\n\
         result = time.perf_counter() - start\n",
    );
    Duration::from_secs_f64(v.as_f64().expect("the floor snippet returns seconds"))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Applies the files `docs` (name → YAML) as workspace `ws` from empty, then plans again;
/// prints the rows.
fn case(moto: &Moto, label: &str, ws: &str, docs: &[(String, String)], parallelism: &str) {
    moto.reset();
    // moto imports a service's code and builds a region's backend on its first request
    // (seconds on this machine): done here, so that the first create of the timed apply
    // does not pay it and lengthen the critical path.
    moto.warm_up();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("env")).expect("mkdir");
    for (name, yaml) in docs {
        std::fs::write(dir.path().join("env").join(name), yaml).expect("write");
    }
    let moto_before_apply = moto.cpu_time();
    let apply = anvil(
        dir.path(),
        moto,
        &[
            "apply",
            "--auto-approve",
            "--parallelism",
            parallelism,
            "env",
        ],
        false,
    );
    assert_eq!(apply.code, 0, "{label}: apply exited {}", apply.code);
    let moto_apply = busy(moto, moto_before_apply);
    let deps = dependencies(dir.path(), ws);
    let cost: HashMap<String, Duration> = apply
        .finished
        .iter()
        .filter_map(|(a, end)| Some((a.clone(), end.saturating_sub(*apply.started.get(a)?))))
        .collect();
    assert_eq!(
        cost.len(),
        deps.len(),
        "{label}: every recorded resource should have printed a start and an end"
    );
    let (cp, chain) = critical_path(&deps, &cost);
    let work: Duration = cost.values().sum();
    let p: u32 = parallelism.parse().expect("parallelism");
    let work_bound = work / p;
    // When the first create started and the last ended: the walk without process start,
    // spec load, plan and the final state write.
    let first = apply.started.values().min().copied().unwrap_or_default();
    let last = apply.finished.values().max().copied().unwrap_or_default();
    let moto_before_plan = moto.cpu_time();
    let plan = anvil(
        dir.path(),
        moto,
        &[
            "plan",
            "--detailed-exitcode",
            "--parallelism",
            parallelism,
            "env",
        ],
        true,
    );
    assert_eq!(plan.code, 0, "{label}: the plan after apply is not empty");
    let moto_plan = busy(moto, moto_before_plan);
    let floor = read_floor(moto);
    // The engine alone: the same plan without reading the real world (Terraform's
    // `-refresh=false`), so moto's per-object cost is out of it.
    let offline = anvil(
        dir.path(),
        moto,
        &["plan", "--detailed-exitcode", "--refresh=false", "env"],
        false,
    );
    assert_eq!(
        offline.code, 0,
        "{label}: the --refresh=false plan is not empty"
    );
    println!(
        "| {label} | {} | {parallelism} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.2}× | {:.2} | {} | {} | {:.2} | {:.2} |",
        deps.len(),
        secs(apply.wall),
        moto_apply,
        secs(last.saturating_sub(first)),
        secs(cp),
        secs(work_bound),
        secs(apply.wall) / secs(cp.max(work_bound)),
        secs(plan.wall),
        plan.refreshed
            .map_or_else(|| "?".to_string(), |d| format!("{:.2}", secs(d))),
        moto_plan,
        secs(floor),
        secs(offline.wall),
    );
    let weighted: Vec<String> = chain
        .iter()
        .map(|a| format!("{a} ({:.0} ms)", cost[a].as_secs_f64() * 1000.0))
        .collect();
    eprintln!("{label}: critical path {}", weighted.join(" → "));
    let mut slowest: Vec<(&String, &Duration)> = cost.iter().collect();
    slowest.sort_by(|a, b| b.1.cmp(a.1));
    let top: Vec<String> = slowest
        .iter()
        .take(5)
        .map(|(a, d)| format!("{a} {:.0} ms", d.as_secs_f64() * 1000.0))
        .collect();
    eprintln!(
        "{label}: slowest creates {}; sum of creates {:.2} s",
        top.join(", "),
        secs(work)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("environment: a benchmark; run it with `cargo bench --bench environment`");
        return;
    }
    let parallelism = args
        .iter()
        .position(|a| a == "--parallelism")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "10".to_string());
    let only = |case: &str| {
        let picked: Vec<&String> = args
            .iter()
            .filter(|a| *a == "example" || *a == "many")
            .collect();
        picked.is_empty() || picked.iter().any(|a| *a == case)
    };
    let moto = Moto::start();
    println!(
        "| workspace | resources | parallelism | apply (s) | moto CPU in apply (s) | first create → last done (s) | critical path (s) | work / parallelism (s) | apply ÷ max(bounds) | no-op plan (s) | its refresh (s) | moto CPU in plan (s) | read floor (s) | plan --refresh=false (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if only("example") {
        case(
            &moto,
            "examples/environment",
            "demo",
            &[("environment.yaml".to_string(), EXAMPLE.to_string())],
            &parallelism,
        );
    }
    if !only("many") {
        return;
    }
    let docs: Vec<(String, String)> = (0..ENVIRONMENTS)
        .map(|i| (format!("env{i:02}.yaml"), environment(i)))
        .collect();
    case(
        &moto,
        &format!("{ENVIRONMENTS} environments"),
        "bench",
        &docs,
        &parallelism,
    );
}
