//! The simulated Director's memory: deployments, tasks and their outputs, configs,
//! events, tokens and the fault settings, behind one mutex that is never held across
//! an `.await`. Task lifecycles run here as tokio tasks on tokio's clock, so tests can
//! pause time.

use super::manifest::{InstanceGroup, Manifest};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// Faults injected into answers and tasks; changeable at run time via `/_sim/faults`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Probability (0..=1) that any request outside `/_sim/` gets a simulated 500.
    pub fail_rate: f64,
    /// Probability (0..=1) that a deploy or delete task ends in `error`.
    pub fail_tasks: f64,
    /// How long a task stays `processing`, in milliseconds.
    pub task_duration_ms: u64,
    /// Extra delay before answering any request outside `/_sim/`, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_rate: 0.0,
            fail_tasks: 0.0,
            task_duration_ms: 0,
            latency_ms: 0,
        }
    }
}

impl Faults {
    /// Checks that both probabilities lie in 0..=1.
    ///
    /// # Errors
    /// A message naming the field that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("fail_rate", self.fail_rate),
            ("fail_tasks", self.fail_tasks),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        Ok(())
    }
}

/// A small deterministic generator (splitmix64): reproducible faults with `--seed`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Task states, as the Director names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Queued,
    Processing,
    /// Cancel requested while processing; the task stops at its next checkpoint.
    Cancelling,
    Cancelled,
    Done,
    Error,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Processing => "processing",
            TaskState::Cancelling => "cancelling",
            TaskState::Cancelled => "cancelled",
            TaskState::Done => "done",
            TaskState::Error => "error",
        }
    }
    pub fn active(self) -> bool {
        matches!(
            self,
            TaskState::Queued | TaskState::Processing | TaskState::Cancelling
        )
    }
}

/// What a task does when it ends `done`.
#[derive(Debug, Clone)]
pub enum Action {
    Deploy { manifest: Manifest, dry_run: bool },
    Delete,
    Vms,
}

#[derive(Debug)]
pub struct Task {
    pub id: u64,
    pub state: TaskState,
    pub description: String,
    pub timestamp: i64,
    pub started_at: Option<i64>,
    pub result: String,
    pub user: String,
    pub deployment: String,
    pub context_id: String,
    pub event_log: String,
    pub result_log: String,
    pub debug_log: String,
    pub action: Action,
    pub cancel: Arc<Notify>,
    /// The event id of the task's start, the parent of its end event.
    pub start_event: Option<u64>,
}

impl Task {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "state": self.state.as_str(),
            "description": self.description,
            "timestamp": self.timestamp,
            "started_at": self.started_at,
            "result": self.result,
            "user": self.user,
            "deployment": self.deployment,
            "context_id": self.context_id,
        })
    }
    fn event(&mut self, line: Value) {
        self.event_log.push_str(&line.to_string());
        self.event_log.push('\n');
    }
    fn debug(&mut self, msg: &str) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f");
        self.debug_log.push_str(&format!(
            "I, [{now} #1] [task:{}]  INFO -- DirectorJobRunner: {msg}\n",
            self.id
        ));
    }
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub manifest: Manifest,
    pub cloud_config_id: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    pub kind: String,
    pub name: String,
    pub content: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: u64,
    pub parent_id: Option<u64>,
    pub timestamp: i64,
    pub user: String,
    pub action: String,
    pub object_type: String,
    pub object_name: String,
    pub task: String,
    pub deployment: String,
    pub context: Value,
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct Inner {
    pub deployments: BTreeMap<String, Deployment>,
    pub tasks: BTreeMap<u64, Task>,
    pub next_task: u64,
    pub configs: Vec<Config>,
    pub next_config: u64,
    pub events: Vec<Event>,
    pub next_event: u64,
    /// Releases and stemcells ever deployed: (name, version) → operating system.
    pub releases: BTreeMap<(String, String), ()>,
    pub stemcells: BTreeMap<(String, String), String>,
    pub tokens: HashMap<String, (String, tokio::time::Instant)>,
    pub faults: Faults,
    pub rng: Rng,
    /// UAA tokens handed out and requests refused with 401, for `/_sim/stats`.
    pub tokens_issued: u64,
    pub unauthorized: u64,
    /// Requests answered outside `/_sim/` (faults included), for `/_sim/stats`.
    pub requests: u64,
    /// Vitals set through `/_sim/vitals` per VM: (deployment, group, index).
    pub vitals: HashMap<(String, String, u32), Vitals>,
    /// The seed, for dice that depend only on what they decide (a task's id), so that
    /// which tasks fail does not depend on how requests interleave.
    pub seed: u64,
}

/// The shared state of one simulated Director.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    /// Woken whenever a task ends, so queued tasks re-check their deployment's lock.
    released: Notify,
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Store {
    pub fn new(faults: Faults, seed: u64) -> Self {
        Store {
            inner: Mutex::new(Inner {
                deployments: BTreeMap::new(),
                tasks: BTreeMap::new(),
                next_task: 1,
                configs: Vec::new(),
                next_config: 1,
                events: Vec::new(),
                next_event: 1,
                releases: BTreeMap::new(),
                stemcells: BTreeMap::new(),
                tokens: HashMap::new(),
                faults,
                rng: Rng::new(seed),
                tokens_issued: 0,
                unauthorized: 0,
                requests: 0,
                vitals: HashMap::new(),
                seed,
            }),
            released: Notify::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every deployment, task, config, event and token (faults are kept).
    pub fn reset(&self) {
        let mut g = self.lock();
        let faults = g.faults;
        let rng = g.rng.clone();
        let seed = g.seed;
        let next_task = g.next_task;
        for t in g.tasks.values() {
            t.cancel.notify_one();
        }
        *g = Store::new(faults, 0)
            .inner
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        g.rng = rng;
        g.seed = seed;
        g.next_task = next_task;
        drop(g);
        self.released.notify_waiters();
    }

    /// Creates a task and starts its lifecycle; returns its id.
    pub fn start_task(
        self: &Arc<Self>,
        description: String,
        deployment: &str,
        user: &str,
        context_id: String,
        action: Action,
    ) -> u64 {
        let mut g = self.lock();
        let id = g.next_task;
        g.next_task += 1;
        let task = Task {
            id,
            state: TaskState::Queued,
            description,
            timestamp: now(),
            started_at: None,
            result: String::new(),
            user: user.to_string(),
            deployment: deployment.to_string(),
            context_id,
            event_log: String::new(),
            result_log: String::new(),
            debug_log: String::new(),
            action,
            cancel: Arc::new(Notify::new()),
            start_event: None,
        };
        g.tasks.insert(id, task);
        // A free deployment starts at once, so a client sees `processing` right away.
        try_begin(&mut g, id);
        drop(g);
        let store = Arc::clone(self);
        tokio::spawn(async move { store.drive(id).await });
        id
    }

    async fn drive(self: Arc<Self>, id: u64) {
        // Wait for the deployment's lock.
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut g = self.lock();
                match g.tasks.get(&id).map(|t| t.state) {
                    Some(TaskState::Processing | TaskState::Cancelling) => break,
                    Some(TaskState::Queued) => {
                        if try_begin(&mut g, id) {
                            break;
                        }
                    }
                    _ => {
                        drop(g);
                        self.released.notify_waiters();
                        return;
                    }
                }
            }
            released.await;
        }
        let (cancel, duration) = {
            let g = self.lock();
            let Some(t) = g.tasks.get(&id) else { return };
            (
                Arc::clone(&t.cancel),
                Duration::from_millis(g.faults.task_duration_ms),
            )
        };
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            () = cancel.notified() => {}
        }
        {
            let mut g = self.lock();
            if g.tasks.get(&id).map(|t| t.state) == Some(TaskState::Cancelling) {
                mark_cancelled(&mut g, id);
            } else {
                finish(&mut g, id);
            }
        }
        self.released.notify_waiters();
    }

    /// Cancels a queued task at once, or asks a processing one to stop (it shows
    /// `cancelling` until its driver notices, then `cancelled`); `Some(false)` when the
    /// task had already ended, `None` when there is no such task.
    pub fn cancel(&self, id: u64) -> Option<bool> {
        let mut g = self.lock();
        let t = g.tasks.get_mut(&id)?;
        match t.state {
            TaskState::Queued => {
                mark_cancelled(&mut g, id);
                drop(g);
                self.released.notify_waiters();
            }
            TaskState::Processing => {
                t.state = TaskState::Cancelling;
                t.debug("cancel requested");
                t.cancel.notify_one();
            }
            TaskState::Cancelling => {}
            _ => return Some(false),
        }
        Some(true)
    }
}

fn mark_cancelled(g: &mut Inner, id: u64) {
    let action = action_name(g, id);
    let Some(t) = g.tasks.get_mut(&id) else {
        return;
    };
    t.state = TaskState::Cancelled;
    t.result = "Task cancelled".into();
    t.event(json!({"time": now(), "error": {"code": 10001, "message": "Task cancelled"}}));
    t.debug("Task cancelled");
    let (user, dep, parent) = (t.user.clone(), t.deployment.clone(), t.start_event);
    if let Some(parent) = parent {
        push_event(
            g,
            Some(parent),
            &user,
            &action,
            &dep,
            id,
            Some("Task cancelled".into()),
        );
    }
}

fn action_name(g: &Inner, id: u64) -> String {
    match g.tasks.get(&id).map(|t| &t.action) {
        Some(Action::Deploy { manifest, .. }) => {
            if g.deployments.contains_key(&manifest.name) {
                "update".into()
            } else {
                "create".into()
            }
        }
        Some(Action::Delete) => "delete".into(),
        _ => "vms".into(),
    }
}

/// The deployment held by a processing task, if any: `(task id, started_at)`.
pub fn lock_holder(g: &Inner, deployment: &str) -> Option<(u64, i64)> {
    g.tasks
        .values()
        .find(|t| {
            matches!(t.state, TaskState::Processing | TaskState::Cancelling)
                && t.deployment == deployment
                && !matches!(t.action, Action::Vms)
        })
        .map(|t| (t.id, t.started_at.unwrap_or(t.timestamp)))
}

/// Moves a queued task to `processing` when no earlier task holds or waits for its
/// deployment. Vms tasks take no lock.
fn try_begin(g: &mut Inner, id: u64) -> bool {
    let Some(t) = g.tasks.get(&id) else {
        return false;
    };
    let takes_lock = !matches!(t.action, Action::Vms);
    let dep = t.deployment.clone();
    if takes_lock {
        let blocked = g.tasks.values().any(|o| {
            o.id < id && o.deployment == dep && o.state.active() && !matches!(o.action, Action::Vms)
        });
        if blocked {
            return false;
        }
    }
    let action = action_name(g, id);
    let user = g.tasks.get(&id).map(|t| t.user.clone()).unwrap_or_default();
    let parent = if matches!(action.as_str(), "vms") {
        None
    } else {
        Some(push_event(g, None, &user, &action, &dep, id, None))
    };
    let Some(t) = g.tasks.get_mut(&id) else {
        return false;
    };
    t.state = TaskState::Processing;
    t.started_at = Some(now());
    t.start_event = parent;
    t.debug(&format!("Performing task: {}", t.description));
    let time = now();
    match &t.action {
        Action::Deploy { .. } => {
            for state in ["started", "finished"] {
                t.event(json!({"time": time, "stage": "Preparing deployment", "tags": [], "total": 1,
                    "task": "Preparing deployment", "index": 1, "state": state, "progress": if state == "started" {0} else {100}}));
            }
        }
        Action::Delete => {}
        Action::Vms => {}
    }
    true
}

fn push_event(
    g: &mut Inner,
    parent_id: Option<u64>,
    user: &str,
    action: &str,
    deployment: &str,
    task: u64,
    error: Option<String>,
) -> u64 {
    let id = g.next_event;
    g.next_event += 1;
    g.events.push(Event {
        id,
        parent_id,
        timestamp: now(),
        user: user.to_string(),
        action: action.to_string(),
        object_type: "deployment".into(),
        object_name: deployment.to_string(),
        task: task.to_string(),
        deployment: deployment.to_string(),
        context: json!({}),
        error,
    });
    id
}

fn instances(groups: &[InstanceGroup]) -> Vec<(String, u32)> {
    groups
        .iter()
        .flat_map(|g| (0..g.instances).map(move |i| (g.name.clone(), i)))
        .collect()
}

fn stage_lines(t: &mut Task, stage: &str, list: &[(String, u32)], fail_at: Option<usize>) {
    let total = list.len();
    let time = now();
    for (n, (group, idx)) in list.iter().enumerate() {
        let base = json!({"time": time, "stage": stage, "tags": [group], "total": total,
            "task": format!("{group}/{idx}"), "index": n + 1});
        let line = |state: &str, progress: u32| {
            let mut l = base.clone();
            l["state"] = json!(state);
            l["progress"] = json!(progress);
            l
        };
        t.event(line("started", 0));
        if fail_at == Some(n) {
            let mut l = line("failed", 100);
            l["data"] = json!({"error": "simulated failure"});
            t.event(l);
            return;
        }
        t.event(line("finished", 100));
    }
}

/// Ends a processing task: `error` by the fault dice, otherwise `done` with its change
/// applied.
fn finish(g: &mut Inner, id: u64) {
    let fail_tasks = g.faults.fail_tasks;
    let Some(t) = g.tasks.get(&id) else { return };
    if t.state != TaskState::Processing {
        return;
    }
    let action = t.action.clone();
    let dep = t.deployment.clone();
    // Task `n` fails by its own die: the same tasks fail on every run with one seed.
    let failing = !matches!(action, Action::Vms)
        && Rng::new(g.seed ^ id.wrapping_mul(0xD6E8_FEB8_6659_FD93)).chance(fail_tasks);
    let action_label = action_name(g, id);
    let old_groups = g
        .deployments
        .get(&dep)
        .map(|d| d.manifest.instance_groups.clone())
        .unwrap_or_default();
    let cloud_config_id = latest_config(g, "cloud", "default").map(|c| c.id);
    let vm_lines: Vec<String> = if matches!(action, Action::Vms) {
        vms_with(&old_groups, &dep, &g.vitals)
            .iter()
            .map(|v| v.to_string())
            .collect()
    } else {
        Vec::new()
    };
    let Some(t) = g.tasks.get_mut(&id) else {
        return;
    };
    let time = now();
    let error = if failing {
        let (stage, list) = match &action {
            Action::Deploy { manifest, .. } => {
                ("Updating instance", instances(&manifest.instance_groups))
            }
            _ => ("Deleting instances", instances(&old_groups)),
        };
        let fail_at = if list.is_empty() {
            None
        } else {
            Some(list.len() / 2)
        };
        stage_lines(t, stage, &list, fail_at);
        let msg = format!(
            "Simulated failure: task {id} for deployment '{dep}' failed (anvil sim bosh --fail-tasks)"
        );
        t.event(json!({"time": time, "error": {"code": 100, "message": msg}}));
        t.debug(&msg);
        t.state = TaskState::Error;
        t.result = msg.clone();
        Some(msg)
    } else {
        match &action {
            Action::Deploy { manifest, .. } => {
                stage_lines(
                    t,
                    "Updating instance",
                    &instances(&manifest.instance_groups),
                    None,
                );
                t.result = format!("/deployments/{dep}");
            }
            Action::Delete => {
                stage_lines(t, "Deleting instances", &instances(&old_groups), None);
                for s in [
                    "Removing deployment artifacts",
                    "Detaching stemcells",
                    "Destroying deployment",
                ] {
                    for state in ["started", "finished"] {
                        t.event(json!({"time": time, "stage": "Deleting deployment", "tags": [], "total": 3,
                            "task": s, "index": 1, "state": state, "progress": if state == "started" {0} else {100}}));
                    }
                }
                t.result = format!("/deployments/{dep}");
            }
            Action::Vms => {
                for l in &vm_lines {
                    t.result_log.push_str(l);
                    t.result_log.push('\n');
                }
                t.result = format!("Retrieved vm-stats for {dep}");
            }
        }
        t.debug("Task finished");
        t.state = TaskState::Done;
        None
    };
    let (user, parent) = (t.user.clone(), t.start_event);
    if error.is_none() {
        match action {
            Action::Deploy {
                manifest,
                dry_run: false,
            } => {
                for r in &manifest.releases {
                    g.releases.insert(r.clone(), ());
                }
                for (name, version, os) in &manifest.stemcells {
                    g.stemcells
                        .insert((name.clone(), version.clone()), os.clone());
                }
                g.deployments.insert(
                    dep.clone(),
                    Deployment {
                        manifest,
                        cloud_config_id,
                    },
                );
            }
            Action::Delete => {
                g.deployments.remove(&dep);
            }
            _ => {}
        }
    }
    if let Some(parent) = parent {
        push_event(g, Some(parent), &user, &action_label, &dep, id, error);
    }
}

pub fn latest_config<'a>(g: &'a Inner, kind: &str, name: &str) -> Option<&'a Config> {
    g.configs
        .iter()
        .filter(|c| c.kind == kind && c.name == name)
        .max_by_key(|c| c.id)
}

fn hash(parts: &[&str]) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn uuid_from(parts: &[&str]) -> String {
    let a = hash(parts);
    let b = hash(&[&a.to_string()]);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// A Diego cell's vitals as the simulator reports them: set per VM through
/// `PUT /_sim/vitals/{deployment}/{group}/{index}`, else derived from the VM's key.
/// Real agents report memory *used* (`mem.kb`) and its percentage; the simulator derives
/// `mem.kb` from the total given here, so clients must compute the total back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vitals {
    /// The VM's total memory in KiB.
    pub mem_total_kb: u64,
    /// Memory used, in percent of the total (0..=100).
    pub mem_percent: u64,
    /// CPU time in user and system mode, in percent.
    pub cpu_user: f64,
    pub cpu_sys: f64,
    /// Ephemeral and persistent disk used, in percent.
    pub disk_ephemeral_percent: u64,
    pub disk_persistent_percent: u64,
}

impl Vitals {
    /// A cell's default: 16 GiB, 20–59 % memory used, derived from the key `h`.
    fn cell_default(h: u64) -> Vitals {
        Vitals {
            mem_total_kb: 16 * 1024 * 1024,
            mem_percent: h % 40 + 20,
            cpu_user: ((h >> 8) % 500) as f64 / 10.0,
            cpu_sys: ((h >> 16) % 100) as f64 / 10.0,
            disk_ephemeral_percent: (h >> 24) % 50 + 10,
            disk_persistent_percent: 0,
        }
    }

    /// Checks the percentages.
    ///
    /// # Errors
    /// A message naming the field out of 0..=100.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("mem_percent", self.mem_percent),
            ("disk_ephemeral_percent", self.disk_ephemeral_percent),
            ("disk_persistent_percent", self.disk_persistent_percent),
        ] {
            if v > 100 {
                return Err(format!("{name} must be between 0 and 100, got {v}"));
            }
        }
        for (name, v) in [("cpu_user", self.cpu_user), ("cpu_sys", self.cpu_sys)] {
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 100, got {v}"));
            }
        }
        Ok(())
    }
}

/// Whether an instance group runs Diego cells (its name is or contains `diego_cell`, or
/// is `compute`, as in TAS and Small Footprint TAS).
pub fn is_cell_group(name: &str) -> bool {
    name.contains("diego_cell") || name == "compute"
}

/// The simulated VMs of a deployment, in the `format=full` shape (vitals as strings).
pub fn vms(groups: &[InstanceGroup], deployment: &str) -> Vec<Value> {
    vms_with(groups, deployment, &HashMap::new())
}

/// [`vms`] with the vitals set per VM (cells without an entry get their defaults).
pub fn vms_with(
    groups: &[InstanceGroup],
    deployment: &str,
    set: &HashMap<(String, String, u32), Vitals>,
) -> Vec<Value> {
    let net = hash(&[deployment]) % 250 + 1;
    let mut out = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        for i in 0..g.instances {
            let idx = i.to_string();
            let key = [deployment, g.name.as_str(), idx.as_str()];
            let h = hash(&key);
            let az = if g.azs.is_empty() {
                Value::Null
            } else {
                json!(g.azs[i as usize % g.azs.len()])
            };
            let cpu_user = format!("{:.1}", (h % 900) as f64 / 10.0);
            let mem_pct = (h >> 8) % 90 + 5;
            let id = uuid_from(&key);
            out.push(json!({
                "agent_id": uuid_from(&[deployment, &g.name, &idx, "agent"]),
                "job_name": g.name,
                // BOSH DNS: {instance id}.{group}.{network}.{deployment}.bosh
                "dns": [format!("{id}.{}.{}.{deployment}.bosh", g.name, g.network)],
                "id": id,
                "index": i,
                "job_state": "running",
                "bootstrap": i == 0,
                "ips": [format!("10.{net}.{}.{}", gi % 250, i + 2)],
                "az": az,
                "vm_cid": format!("vm-{}", uuid_from(&[deployment, &g.name, &idx, "cid"])),
                "vm_type": g.vm_type,
                "processes": g.jobs.iter().map(|j| json!({"name": j, "state": "running"})).collect::<Vec<_>>(),
                "vitals": {
                    "cpu": {"sys": format!("{:.1}", ((h >> 16) % 100) as f64 / 10.0), "user": cpu_user, "wait": "0.8"},
                    "mem": {"kb": ((h >> 24) % 4_000_000 + 100_000).to_string(), "percent": mem_pct.to_string()},
                    "swap": {"kb": "0", "percent": "0"},
                    "load": ["0.20", "0.13", "0.05"],
                    "uptime": {"secs": 10020},
                    "disk": {
                        "system": {"percent": "47", "inode_percent": "19"},
                        "ephemeral": {"percent": "12", "inode_percent": "3"},
                        "persistent": {"percent": "5", "inode_percent": "1"},
                    },
                },
                "resurrection_paused": false,
            }));
            if is_cell_group(&g.name) {
                let v = set
                    .get(&(deployment.to_string(), g.name.clone(), i))
                    .copied()
                    .unwrap_or_else(|| Vitals::cell_default(h));
                let used_kb = v.mem_total_kb * v.mem_percent / 100;
                if let Some(last) = out.last_mut() {
                    last["vitals"]["mem"] =
                        json!({"kb": used_kb.to_string(), "percent": v.mem_percent.to_string()});
                    last["vitals"]["cpu"] = json!({"sys": format!("{:.1}", v.cpu_sys), "user": format!("{:.1}", v.cpu_user), "wait": "0.1"});
                    last["vitals"]["disk"]["ephemeral"]["percent"] =
                        json!(v.disk_ephemeral_percent.to_string());
                    last["vitals"]["disk"]["persistent"]["percent"] =
                        json!(v.disk_persistent_percent.to_string());
                }
            }
        }
    }
    out
}
