//! Terminal presentation: progress while applying, the final report, state listings,
//! graphs, and plans read back from saved files.

use crate::apply::{Event, Op, Report};
use crate::model::{Model, PValue};
use crate::plan::json::PlanDocument;
use crate::plan::{Plan, ResourceChange};
use crate::state::{ResourceState, State};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::io::IsTerminal;
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

/// Shows apply events until the channel closes: a progress bar on a terminal, one line
/// per event otherwise.
pub async fn progress(mut rx: mpsc::UnboundedReceiver<Event>, total: usize) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
        ) {
            b.set_style(style);
        }
        b
    });
    use std::io::Write as _;
    while let Some(first) = rx.recv().await {
        // Drain what is queued and write it under one lock of stdout.
        let mut batch = vec![first];
        while let Ok(ev) = rx.try_recv() {
            batch.push(ev);
        }
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for ev in batch {
            let line = match &ev {
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
            };
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
pub fn render_graph(model: &Model, format: &str) -> String {
    let resources = model.resources();
    if format == "json" {
        let nodes: Vec<String> = resources.iter().map(|r| r.address.to_string()).collect();
        let edges: Vec<[String; 2]> = resources
            .iter()
            .flat_map(|r| {
                r.dependencies
                    .iter()
                    .map(move |d| [d.to_string(), r.address.to_string()])
            })
            .collect();
        return serde_json::to_string_pretty(
            &serde_json::json!({ "nodes": nodes, "edges": edges }),
        )
        .unwrap_or_default()
            + "\n";
    }
    let mut s = String::from("digraph anvil {\n  rankdir = \"LR\";\n");
    for r in &resources {
        let _ = writeln!(s, "  \"{}\";", r.address);
    }
    for r in &resources {
        for d in &r.dependencies {
            let _ = writeln!(s, "  \"{d}\" -> \"{}\";", r.address);
        }
    }
    s.push_str("}\n");
    s
}

/// Rebuilds a renderable plan from its JSON form (sensitive values shown redacted).
pub fn plan_from_document(doc: &PlanDocument) -> Plan {
    let changes = doc
        .resource_changes
        .iter()
        .map(|c| {
            let sensitive: BTreeSet<String> = c.sensitive_attributes.iter().cloned().collect();
            let outputs: Vec<String> = c
                .after_unknown
                .iter()
                .filter(|p| {
                    !p.contains('.')
                        && !p.contains('[')
                        && c.after.as_ref().is_none_or(|a| !a.contains_key(*p))
                })
                .cloned()
                .collect();
            let after = c.after.as_ref().map(|a| {
                let mut m: BTreeMap<String, PValue> = a
                    .iter()
                    .map(|(k, v)| (k.clone(), PValue::Known(v.clone())))
                    .collect();
                for p in &c.after_unknown {
                    mark_unknown(&mut m, p);
                }
                m
            });
            let before = c
                .before
                .as_ref()
                .map(|b| b.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
            ResourceChange {
                address: c.address.clone(),
                ty: c.ty.clone(),
                provider: c.provider.clone(),
                action: c.action,
                replace_order: c.replace_order,
                reasons: c.reasons.clone(),
                before,
                before_outputs: BTreeMap::new(),
                after,
                outputs,
                sensitive,
                forces_replacement: c.forces_replacement.iter().cloned().collect(),
                provider_diff: c.provider_diff.clone(),
            }
        })
        .collect();
    Plan { changes }
}

fn mark_unknown(m: &mut BTreeMap<String, PValue>, path: &str) {
    let mut segs = path.split('.');
    let Some(top) = segs.next() else { return };
    let rest: Vec<&str> = segs.collect();
    let Some(v) = m.get_mut(top) else { return };
    if rest.is_empty() {
        *v = PValue::Unknown;
        return;
    }
    // Turn the known object into a partially unknown one along the path.
    fn go(v: &mut PValue, rest: &[&str]) {
        let Some((first, tail)) = rest.split_first() else {
            *v = PValue::Unknown;
            return;
        };
        if let PValue::Known(Value::Object(obj)) = v {
            let mut o: BTreeMap<String, PValue> = obj
                .iter()
                .map(|(k, x)| (k.clone(), PValue::Known(x.clone())))
                .collect();
            if let Some(inner) = o.get_mut(*first) {
                go(inner, tail);
            }
            *v = PValue::Object(o);
        } else if let PValue::Object(o) = v {
            if let Some(inner) = o.get_mut(*first) {
                go(inner, tail);
            }
        }
    }
    go(v, &rest);
}
