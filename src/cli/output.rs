//! Terminal presentation: progress while applying, the final report, state listings,
//! graphs, and plans read back from saved files.

use crate::ops::{ApplyEvent as Event, Graph, Op, OpsEvent, Outputs, Report, ResourceState, State};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

fn gerund(op: Op) -> &'static str {
    match op {
        Op::Create => "Creating",
        Op::Update => "Modifying",
        Op::Delete => "Destroying",
        Op::Forget => "Forgetting",
    }
}

fn noun(op: Op) -> &'static str {
    match op {
        Op::Create => "Creation",
        Op::Update => "Modifications",
        Op::Delete => "Destruction",
        Op::Forget => "Removal from state",
    }
}

/// Shows an operation's events until the channel closes: apply progress as a progress
/// bar on a terminal or one line per event otherwise (stdout), everything else as lines
/// on stderr. `draining` is set once the apply walk starts (an interrupt then drains
/// the work in flight instead of ending the process). Reconcile runs in watch mode are
/// printed as `show` asks.
pub async fn events(
    mut rx: mpsc::UnboundedReceiver<OpsEvent>,
    draining: Arc<AtomicBool>,
    show: Show,
) {
    let reconcile_json = show.reconcile_json;
    use std::io::Write as _;
    let mut bar: Option<indicatif::ProgressBar> = None;
    while let Some(first) = rx.recv().await {
        // Drain what is queued and write it under one lock of stdout.
        let mut batch = vec![first];
        while let Ok(ev) = rx.try_recv() {
            batch.push(ev);
        }
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for ev in batch {
            let ev = match ev {
                OpsEvent::Apply(e) => e,
                OpsEvent::ApplyStarting { total } => {
                    draining.store(true, Ordering::SeqCst);
                    bar = std::io::stderr().is_terminal().then(|| new_bar(total));
                    continue;
                }
                OpsEvent::ReconcileRunFinished {
                    report,
                    metrics,
                    settings,
                } => {
                    let _ = out.flush();
                    drop(out);
                    if let Err(e) = super::reconcile::print_report(
                        &report,
                        &metrics,
                        &settings,
                        reconcile_json,
                        true,
                    ) {
                        eprintln!(
                            "Warning: could not print the report of run {}: {e}",
                            report.run
                        );
                    }
                    out = std::io::BufWriter::new(std::io::stdout().lock());
                    continue;
                }
                OpsEvent::SkippedFiles(files) if !show.verbose || files.is_empty() => continue,
                other => {
                    let _ = out.flush();
                    eprintln!("{}", other_line(&other));
                    continue;
                }
            };
            let line = apply_line(&ev);
            match &bar {
                Some(b) => {
                    if matches!(
                        ev,
                        Event::Finished { .. } | Event::Failed { .. } | Event::Skipped { .. }
                    ) {
                        b.inc(1);
                    }
                    if matches!(ev, Event::Failed { .. } | Event::Skipped { .. }) {
                        b.println(&line);
                    } else {
                        b.set_message(line);
                    }
                }
                None => {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// How the events of a command are shown.
#[derive(Debug, Clone, Copy)]
pub struct Show {
    /// Reconcile runs in watch mode as JSON lines.
    pub reconcile_json: bool,
    /// `--verbose`: also the YAML files a directory scan skipped.
    pub verbose: bool,
}

fn new_bar(total: usize) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
    ) {
        b.set_style(style);
    }
    b
}

/// The stderr line for an event that is not apply progress.
fn other_line(ev: &OpsEvent) -> String {
    match ev {
        OpsEvent::LockWait { state, timeout } => format!(
            "Waiting up to {} for the state lock on {state} if another run holds it...",
            humantime::format_duration(*timeout)
        ),
        OpsEvent::Info(line) => line.clone(),
        OpsEvent::SkippedFiles(files) => {
            let list: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            format!(
                "skipped {} non-anvil YAML file(s): {}",
                list.len(),
                list.join(", ")
            )
        }
        OpsEvent::Warning(line) => format!("Warning: {line}"),
        OpsEvent::MetricsServing(addr) => format!("Serving metrics on http://{addr}/metrics"),
        OpsEvent::Watching { interval } => format!(
            "Reconciling every {} (SIGTERM or Ctrl-C stops after the current run).",
            humantime::format_duration(*interval)
        ),
        OpsEvent::ReconcileRunStarted(n) => format!("Reconcile run {n} started."),
        OpsEvent::Apply(e) => apply_line(e),
        OpsEvent::ApplyStarting { total } => format!("Applying {total} change(s)."),
        OpsEvent::ReconcileRunFinished { report, .. } => {
            format!("Reconcile run {} finished.", report.run)
        }
    }
}

fn apply_line(ev: &Event) -> String {
    match ev {
        Event::Started { address, op } => format!("{address}: {}...", gerund(*op)),
        Event::Progress { address, message } => format!("{address}: {message}"),
        Event::Finished {
            address,
            op,
            elapsed,
            id,
        } => {
            let id = id
                .as_ref()
                .map(|i| format!(" [id={i}]"))
                .unwrap_or_default();
            format!(
                "{address}: {} complete after {}s{id}",
                noun(*op),
                elapsed.as_secs()
            )
        }
        Event::Failed { address, op, error } => {
            format!("{address}: {} FAILED: {error}", noun(*op))
        }
        Event::Skipped {
            address,
            op,
            because,
        } => format!("{address}: {} skipped because {because}", noun(*op)),
    }
}

/// The closing summary: done / failed / skipped, and the counts Terraform prints.
pub fn render_report(r: &Report, what: &str) -> String {
    let mut s = String::new();
    let count = |op: Op| r.done.iter().filter(|(_, o)| *o == op).count();
    let (added, changed, destroyed, forgotten) = (
        count(Op::Create),
        count(Op::Update),
        count(Op::Delete),
        count(Op::Forget),
    );
    let mut counts = format!("{added} added, {changed} changed, {destroyed} destroyed");
    if forgotten > 0 {
        let _ = write!(counts, ", {forgotten} forgotten");
    }
    if r.success() {
        let verb = if what == "destroy" {
            "Destroy"
        } else {
            "Apply"
        };
        let _ = writeln!(s, "\n{verb} complete! Resources: {counts}.");
        return s;
    }
    let _ = writeln!(
        s,
        "\n{} did not finish: {} done, {} failed, {} skipped{}.",
        if what == "destroy" {
            "Destroy"
        } else {
            "Apply"
        },
        r.done.len(),
        r.failed.len(),
        r.skipped.len(),
        if r.not_started.is_empty() {
            String::new()
        } else {
            format!(", {} not started", r.not_started.len())
        }
    );
    let _ = writeln!(s, "Done ({counts}):");
    for (a, op) in &r.done {
        let _ = writeln!(s, "  {a} ({})", op.verb());
    }
    if !r.failed.is_empty() {
        let _ = writeln!(s, "Failed:");
        for (a, op, e) in &r.failed {
            let _ = writeln!(s, "  {a} ({}): {e}", op.verb());
        }
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(s, "Skipped:");
        for (a, op, why) in &r.skipped {
            let _ = writeln!(s, "  {a} ({}): {why}", op.verb());
        }
    }
    if !r.not_started.is_empty() {
        let _ = writeln!(s, "Not started (interrupted):");
        for (a, op) in &r.not_started {
            let _ = writeln!(s, "  {a} ({})", op.verb());
        }
    }
    let _ = writeln!(
        s,
        "State records what was done. Fix the failures and run apply again to finish."
    );
    s
}

/// `anvil show` without a plan: every recorded resource.
pub fn render_state(st: &State) -> String {
    let mut s = String::new();
    if st.resources.is_empty() {
        let _ = writeln!(
            s,
            "The state is empty (lineage {}, serial {}).",
            st.lineage, st.serial
        );
        return s;
    }
    for (a, r) in &st.resources {
        s.push_str(&render_record(a, r));
        s.push('\n');
    }
    s
}

/// One recorded resource, sensitive values redacted.
pub fn render_record(address: &str, r: &ResourceState) -> String {
    let mut s = format!(
        "# {address}:\nresource {address} (provider {}) {{\n",
        r.provider
    );
    let mut all: BTreeMap<&String, String> = BTreeMap::new();
    for (k, v) in &r.outputs {
        all.insert(k, v.to_string());
    }
    for (k, v) in &r.attributes {
        all.insert(
            k,
            serde_json::to_string_pretty(v)
                .unwrap_or_default()
                .replace('\n', "\n    "),
        );
    }
    for k in r.sensitive.keys() {
        all.insert(k, "(sensitive)".into());
    }
    let width = all.keys().map(|k| k.len()).max().unwrap_or(0);
    for (k, v) in all {
        let _ = writeln!(s, "    {k:<width$} = {v}");
    }
    if !r.dependencies.is_empty() {
        let _ = writeln!(s, "    # depends on: {}", r.dependencies.join(", "));
    }
    s.push_str("}\n");
    s
}

/// `anvil graph`: Graphviz dot, or JSON `{nodes, edges}`.
pub fn render_graph(g: &Graph, format: &str) -> String {
    if format == "json" {
        return serde_json::to_string_pretty(
            &serde_json::json!({ "nodes": g.nodes, "edges": g.edges }),
        )
        .unwrap_or_default()
            + "\n";
    }
    let mut s = String::from("digraph anvil {\n  rankdir = \"LR\";\n");
    for n in &g.nodes {
        let _ = writeln!(s, "  \"{n}\";");
    }
    for [from, to] in &g.edges {
        let _ = writeln!(s, "  \"{from}\" -> \"{to}\";");
    }
    s.push_str("}\n");
    s
}

/// Prints `anvil output`: every output (`NAME = JSON`, or one JSON object with `--json`),
/// or one output's value (a string as it is, else JSON). Outputs without a value yet are
/// named on stderr; asked for by name, that is an error. Returns the exit code.
///
/// # Errors
/// A value that cannot be written as JSON, or an output asked for by name that has no
/// value yet (the message says why and to apply).
pub fn print_outputs(found: &Outputs, name: Option<&str>, json: bool) -> anyhow::Result<i32> {
    if let Some(n) = name {
        let Some(o) = found.outputs.iter().find(|o| o.name == n) else {
            anyhow::bail!("no output `{n}` in workspace `{}`", found.workspace);
        };
        let Some(v) = &o.value else {
            anyhow::bail!(
                "output `{n}` has no value in the state at {}: {}; run `anvil apply` first",
                found.location,
                o.missing.as_deref().unwrap_or("not applied yet")
            );
        };
        match (v, json) {
            (serde_json::Value::String(s), false) => println!("{s}"),
            _ => println!("{}", serde_json::to_string_pretty(v)?),
        }
        return Ok(0);
    }
    if found.outputs.is_empty() {
        eprintln!(
            "No outputs: the spec of workspace `{}` declares none.",
            found.workspace
        );
    }
    let mut doc = serde_json::Map::new();
    for o in &found.outputs {
        match &o.value {
            Some(v) if json => {
                let mut entry = serde_json::Map::new();
                entry.insert("value".into(), v.clone());
                if !o.description.is_empty() {
                    entry.insert("description".into(), o.description.clone().into());
                }
                doc.insert(o.name.clone(), entry.into());
            }
            Some(v) => println!("{} = {}", o.name, serde_json::to_string(v)?),
            None => eprintln!(
                "Warning: output `{}` has no value in the state at {}: {}; run `anvil apply` first.",
                o.name,
                found.location,
                o.missing.as_deref().unwrap_or("not applied yet")
            ),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(0)
}
