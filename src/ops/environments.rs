//! The environments of `anvil serve` as engine jobs: [`provision`] (load the submitted
//! Environment document, then lock, read, refresh, plan and apply its workspace, and
//! resolve its outputs and the EKS cluster's kubeconfig), [`bootstrap`] (run the
//! configured charts hook with that kubeconfig) and [`destroy`]. The same steps as
//! `anvil apply` / `anvil destroy`, from a document instead of spec files; the server's
//! workers call these, never a copy of them.
//!
//! A submitted document is loaded with no variables and no environment (`${env:…}`
//! resolves nothing), so a document cannot read the server's own secrets.

use super::commands::take_lock;
use super::events::EventSink;
use super::{from_spec, load_locked, make_plan, refresh, run_apply, OpsError, Workspace};
use crate::plan::{Plan, PlanOptions};
use crate::providers::Registry;
use crate::spec::{self, DocumentBody, LoadOptions};
use crate::state::State;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Lines of the hook's stderr an error quotes.
const STDERR_LINES: usize = 20;

/// One job on one environment.
#[derive(Debug, Clone)]
pub struct EnvironmentJob {
    /// The environment's id: the document is loaded as `environments/<id>.yaml`, the
    /// name its errors give.
    pub id: String,
    /// The submitted Environment document.
    pub document: Value,
    /// The state backend URL or path of its workspace (`metadata.name`).
    pub state_url: String,
    pub parallelism: usize,
    /// How long to wait for the workspace's state lock (a dead worker's lock expires by
    /// its lease).
    pub lock_timeout: Duration,
    /// Fired to stop at once (the job's lease was lost): provider calls in flight stop
    /// waiting and are recorded as failed, for the next worker to read back.
    pub abort: CancellationToken,
}

/// What a plan changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

impl ChangeCounts {
    fn of(plan: &Plan) -> ChangeCounts {
        let s = plan.summary();
        ChangeCounts {
            add: s.add,
            change: s.change,
            destroy: s.destroy,
        }
    }
}

/// What [`provision`] did.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub workspace: String,
    /// The plan it applied.
    pub changes: ChangeCounts,
    /// The outputs with a value (`vpc_id`, `cluster_endpoint`, ...).
    pub outputs: BTreeMap<String, Value>,
    /// The EKS cluster's kubeconfig (sensitive: never log it), when the environment has
    /// a cluster with an endpoint and a CA.
    pub kubeconfig: Option<String>,
}

/// What [`destroy`] did.
#[derive(Debug, Clone, Copy)]
pub struct Destroyed {
    pub changes: ChangeCounts,
}

/// Where the cluster is reached from: the document's region and role.
#[derive(Debug, Clone, Default)]
struct Access {
    region: String,
    role_arn: Option<String>,
}

/// The submitted document as a workspace, its state at `job.state_url`.
fn load_document(job: &EnvironmentJob) -> Result<(Workspace, Access), OpsError> {
    let file = PathBuf::from(format!("environments/{}.yaml", job.id));
    // JSON is YAML: the pretty form gives every field its own line for located errors.
    let text = serde_json::to_string_pretty(&job.document).map_err(|e| {
        OpsError::Usage(format!(
            "{}: the document cannot be encoded: {e}",
            file.display()
        ))
    })?;
    let opts = LoadOptions {
        vars: BTreeMap::new(),
        env: BTreeMap::new(),
    };
    let spec = spec::load_str(&file, &text, &opts)?;
    let access = spec
        .documents
        .iter()
        .find_map(|d| match &d.body {
            DocumentBody::Environment(e) => Some(Access {
                region: e.region.clone(),
                role_arn: e.role_arn.clone(),
            }),
            _ => None,
        })
        .unwrap_or_default();
    let (ws, _) = from_spec(
        spec,
        &BTreeMap::new(),
        Some(&job.state_url),
        Registry::builtin(),
        false,
    )?;
    Ok((ws, access))
}

/// Locks, reads (folding an interrupted run's journal), refreshes and plans; the plan
/// is applied when it has changes. Returns the state after it.
async fn plan_and_apply(
    ws: &Workspace,
    job: &EnvironmentJob,
    options: &PlanOptions,
    operation: &str,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<(State, ChangeCounts), OpsError> {
    let lock = take_lock(ws, operation, job.lock_timeout, sink).await?;
    let state = load_locked(ws, lock.as_ref(), sink).await?;
    let observed = tokio::select! {
        () = cancel.cancelled() => return Err(OpsError::Cancelled),
        r = refresh(&ws.registry, &state, job.parallelism) => r?,
    };
    let plan = make_plan(ws, &state, &observed, options)?;
    let counts = ChangeCounts::of(&plan);
    if !plan.has_changes() {
        return Ok((state, counts));
    }
    if cancel.is_cancelled() {
        return Err(OpsError::Cancelled);
    }
    let (state, report) = run_apply(
        ws,
        state,
        lock.as_ref(),
        &plan,
        job.parallelism,
        sink,
        cancel,
        &job.abort,
    )
    .await?;
    if report.interrupted {
        return Err(OpsError::Cancelled);
    }
    if !report.success() {
        let mut details: Vec<String> = report
            .failed
            .iter()
            .map(|(addr, _, e)| format!("{addr}: {e}"))
            .collect();
        if details.is_empty() {
            details = report
                .skipped
                .iter()
                .map(|(addr, _, why)| format!("{addr} skipped: {why}"))
                .collect();
        }
        return Err(OpsError::EnvironmentApply {
            workspace: ws.name.clone(),
            state: ws.backend.describe(),
            details: details.join("; "),
        });
    }
    if lock.is_lost() {
        return Err(OpsError::EnvironmentApply {
            workspace: ws.name.clone(),
            state: ws.backend.describe(),
            details: "the state lock was lost during the run (its lease expired and another process took it)".into(),
        });
    }
    Ok((state, counts))
}

/// Plans and applies the environment's workspace, then resolves its outputs and the
/// kubeconfig of its EKS cluster.
///
/// # Errors
/// The document (located), the lock, the state, a refresh, the plan, an apply in which
/// some change failed ([`OpsError::EnvironmentApply`]), or cancellation.
pub async fn provision(
    job: &EnvironmentJob,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<Provisioned, OpsError> {
    let (ws, access) = load_document(job)?;
    let (state, changes) =
        plan_and_apply(&ws, job, &PlanOptions::default(), "apply", sink, cancel).await?;
    let outputs = super::outputs::resolve(&ws.model, &state, None)
        .into_iter()
        .filter_map(|o| Some((o.name, o.value?)))
        .collect();
    Ok(Provisioned {
        workspace: ws.name,
        changes,
        outputs,
        kubeconfig: kubeconfig(&state, &access),
    })
}

/// Destroys everything the environment's workspace records.
///
/// # Errors
/// As [`provision`].
pub async fn destroy(
    job: &EnvironmentJob,
    sink: &EventSink,
    cancel: &CancellationToken,
) -> Result<Destroyed, OpsError> {
    let (ws, _) = load_document(job)?;
    let options = PlanOptions {
        destroy: true,
        ..PlanOptions::default()
    };
    let (_, changes) = plan_and_apply(&ws, job, &options, "destroy", sink, cancel).await?;
    Ok(Destroyed { changes })
}

/// The kubeconfig of the (first) EKS cluster in `state`, as `aws eks update-kubeconfig`
/// writes it: a token from `aws eks get-token` (with the document's role), no secret.
fn kubeconfig(state: &State, access: &Access) -> Option<String> {
    let cluster = state
        .resources
        .values()
        .find(|r| r.ty == "aws_eks_cluster")?;
    let get = |k: &str| {
        cluster
            .outputs
            .get(k)
            .or_else(|| cluster.attributes.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let name = get("name").or_else(|| get("id"))?;
    let endpoint = get("endpoint")?;
    let ca = get("certificate_authority")?;
    let id = get("arn").unwrap_or(name);
    // Every scalar is a JSON string, which is a valid YAML double-quoted scalar.
    let q = |s: &str| Value::from(s).to_string();
    let mut args = vec![
        "--region",
        access.region.as_str(),
        "eks",
        "get-token",
        "--cluster-name",
        name,
        "--output",
        "json",
    ];
    if let Some(role) = &access.role_arn {
        args.extend(["--role-arn", role.as_str()]);
    }
    let args: String = args.iter().map(|a| format!("      - {}\n", q(a))).collect();
    Some(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {endpoint}\n  name: {id}\ncontexts:\n- context:\n    cluster: {id}\n    user: {id}\n  name: {id}\ncurrent-context: {id}\npreferences: {{}}\nusers:\n- name: {id}\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: aws\n      args:\n{args}",
        ca = q(ca),
        endpoint = q(endpoint),
        id = q(id),
    ))
}

/// The charts hook of one environment.
#[derive(Debug, Clone)]
pub struct BootstrapRequest {
    /// Run with `sh -c`.
    pub hook: String,
    /// Written to a 0600 temporary file named by `KUBECONFIG`, removed afterwards.
    pub kubeconfig: String,
    pub environment_id: String,
    pub environment_name: String,
    /// Given as JSON in `ANVIL_OUTPUTS`.
    pub outputs: BTreeMap<String, Value>,
}

/// Removes the kubeconfig file however the hook ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Runs the charts hook with the kubeconfig (`KUBECONFIG`), the environment's id, name
/// and outputs (`ANVIL_ENVIRONMENT_ID`, `ANVIL_ENVIRONMENT_NAME`, `ANVIL_OUTPUTS`);
/// its exit status decides. Cancelling kills it (its whole process group).
///
/// # Errors
/// [`OpsError::Bootstrap`] when it cannot start or exits non-zero (with the exit code
/// and the last lines of its stderr), [`OpsError::Cancelled`].
pub async fn bootstrap(req: &BootstrapRequest, cancel: &CancellationToken) -> Result<(), OpsError> {
    let fail = |message: String| OpsError::Bootstrap {
        hook: req.hook.clone(),
        message,
    };
    let path = std::env::temp_dir().join(format!("anvil-kubeconfig-{}.yaml", uuid::Uuid::new_v4()));
    write_private(&path, &req.kubeconfig).map_err(|e| {
        fail(format!(
            "could not be given its kubeconfig: writing {} failed: {e}",
            path.display()
        ))
    })?;
    let file = TempFile(path);
    let outputs = serde_json::to_string(&req.outputs).unwrap_or_else(|_| "{}".into());
    let child = Command::new("sh")
        .arg("-c")
        .arg(&req.hook)
        .env("KUBECONFIG", &file.0)
        .env("ANVIL_ENVIRONMENT_ID", &req.environment_id)
        .env("ANVIL_ENVIRONMENT_NAME", &req.environment_name)
        .env("ANVIL_OUTPUTS", outputs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so cancelling kills what it started too.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("could not start (`sh -c`): {e}")))?;
    let pid = child.id();
    let mut waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    let output = tokio::select! {
        r = &mut waiting => r,
        () = cancel.cancelled() => {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill(2) on the hook's own process group; no memory is involved.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = waiting.await;
            return Err(OpsError::Cancelled);
        }
    };
    drop(file);
    let output = output
        .map_err(|e| fail(format!("could not be waited for: {e}")))?
        .map_err(|e| fail(format!("could not be waited for: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n");
    let how = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "failed".to_string(),
    };
    Err(fail(if tail.is_empty() {
        format!("{how} (no stderr); run it by hand with KUBECONFIG set to see why")
    } else {
        format!("{how}; the last lines of its stderr:\n{tail}")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(hook: &str) -> BootstrapRequest {
        BootstrapRequest {
            hook: hook.into(),
            kubeconfig: "apiVersion: v1\nkind: Config\n".into(),
            environment_id: "id-1".into(),
            environment_name: "demo".into(),
            outputs: BTreeMap::from([("vpc_id".into(), Value::from("vpc-1"))]),
        }
    }

    #[tokio::test]
    async fn the_hook_sees_a_private_kubeconfig_and_the_outputs_and_it_is_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let hook = format!(
            "stat -c %a \"$KUBECONFIG\" > {s}; cat \"$KUBECONFIG\" >> {s}; echo \"$KUBECONFIG\" >> {s}; echo \"$ANVIL_ENVIRONMENT_NAME $ANVIL_OUTPUTS\" >> {s}",
            s = seen.display()
        );
        bootstrap(&request(&hook), &CancellationToken::new())
            .await
            .unwrap();
        let text = std::fs::read_to_string(&seen).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "600", "{text}");
        assert!(text.contains("kind: Config"), "{text}");
        assert!(text.contains(r#"demo {"vpc_id":"vpc-1"}"#), "{text}");
        assert!(
            !Path::new(lines[3]).exists(),
            "the kubeconfig file was left: {text}"
        );
    }

    #[tokio::test]
    async fn a_failing_hook_reports_its_status_and_the_tail_of_its_stderr() {
        let hook = "for i in $(seq 1 30); do echo line$i >&2; done; exit 3";
        let e = bootstrap(&request(hook), &CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("exited with status 3"), "{e}");
        assert!(e.contains("line30") && e.contains("line11"), "{e}");
        assert!(!e.contains("line10\n"), "only the last lines: {e}");
        let e = bootstrap(&request("exit 4"), &CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exited with status 4") && e.contains("no stderr"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn cancelling_kills_the_hook() {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            c.cancel();
        });
        let r = bootstrap(&request("sleep 600"), &cancel).await;
        assert!(matches!(r, Err(OpsError::Cancelled)), "{r:?}");
    }

    #[test]
    fn the_kubeconfig_names_the_cluster_its_ca_and_the_token_command() {
        let mut st = State::new();
        let now = chrono::Utc::now();
        st.resources.insert(
            "aws_eks_cluster.demo".into(),
            crate::state::ResourceState {
                ty: "aws_eks_cluster".into(),
                provider: "aws.demo".into(),
                attributes: BTreeMap::from([("name".into(), Value::from("demo"))]),
                sensitive: BTreeMap::new(),
                outputs: BTreeMap::from([
                    ("endpoint".into(), Value::from("https://k.example")),
                    ("certificate_authority".into(), Value::from("Q0E=")),
                    ("arn".into(), Value::from("arn:aws:eks:r:1:cluster/demo")),
                ]),
                dependencies: Vec::new(),
                lifecycle: Default::default(),
                created_at: now,
                updated_at: now,
            },
        );
        let access = Access {
            region: "eu-central-1".into(),
            role_arn: Some("arn:aws:iam::1:role/r".into()),
        };
        let k = kubeconfig(&st, &access).unwrap();
        for want in [
            r#"certificate-authority-data: "Q0E=""#,
            r#"server: "https://k.example""#,
            r#"current-context: "arn:aws:eks:r:1:cluster/demo""#,
            r#"- "get-token""#,
            r#"- "--role-arn""#,
            r#"- "eu-central-1""#,
        ] {
            assert!(k.contains(want), "{want} in\n{k}");
        }
        // No CA recorded (an older state): no kubeconfig rather than a broken one.
        st.resources
            .get_mut("aws_eks_cluster.demo")
            .unwrap()
            .outputs
            .remove("certificate_authority");
        assert!(kubeconfig(&st, &access).is_none());
    }
}
