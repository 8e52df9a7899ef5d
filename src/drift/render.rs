//! The text and Markdown forms of a drift report.
//!
//! Text is for terminals and logs: a section for changes made outside anvil, one for
//! differences from the spec, and a summary line with what to do. Markdown is for a CI
//! job summary or a pull-request comment: a table with a row per address, then per
//! address a table of changed attributes and the multi-line ones as ```diff blocks.
//! Sensitive values appear only as `(sensitive)`.

use super::{AttrDiff, DriftEntry, DriftReport, OutsideKind};
use crate::plan::Action;
use serde_json::Value;
use std::fmt::Write;

/// The text form, ending with the summary line. The front-end adds what to run next
/// (it knows the paths and flags the user gave).
pub fn render_text(r: &DriftReport) -> String {
    let mut out = String::new();
    if r.clean {
        let _ = writeln!(
            out,
            "No drift in workspace `{}`: the real world matches the state, and the state matches the spec.",
            r.workspace
        );
        return out;
    }
    let outside: Vec<&DriftEntry> = r.resources.iter().filter(|e| e.outside.is_some()).collect();
    let spec: Vec<&DriftEntry> = r.resources.iter().filter(|e| e.spec.is_some()).collect();
    if !outside.is_empty() {
        out.push_str("Changed outside anvil (the real world against the state):\n");
        for e in outside {
            let Some(o) = &e.outside else { continue };
            let _ = writeln!(out, "\n  # {} {}", e.address, outside_headline(o.kind));
            attr_lines(&mut out, &o.attributes, "state", "real");
        }
        out.push('\n');
    }
    if !spec.is_empty() {
        out.push_str("Differs from the spec (the spec against the state):\n");
        for e in spec {
            let Some(s) = &e.spec else { continue };
            let _ = writeln!(out, "\n  # {} {}", e.address, action_headline(s.action));
            for reason in &s.reasons {
                let _ = writeln!(out, "  #   ({reason})");
            }
            attr_lines(&mut out, &s.attributes, "state", "spec");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{}", summary_line(r));
    out
}

/// Only the changes made outside anvil, as `apply --refresh-only` shows what it records.
pub fn render_outside(r: &DriftReport) -> String {
    let mut out = String::new();
    for e in &r.resources {
        let Some(o) = &e.outside else { continue };
        let what = match o.kind {
            OutsideKind::Deleted => "will be removed from state (deleted outside anvil)",
            OutsideKind::Modified => {
                "will be recorded as the real world has it (modified outside anvil)"
            }
        };
        let _ = writeln!(out, "\n  # {} {what}", e.address);
        attr_lines(&mut out, &o.attributes, "state", "real");
    }
    out
}

fn outside_headline(kind: OutsideKind) -> &'static str {
    match kind {
        OutsideKind::Deleted => "was deleted outside anvil",
        OutsideKind::Modified => "was modified outside anvil",
    }
}

fn action_headline(a: Action) -> &'static str {
    match a {
        Action::Create => "would be created",
        Action::Update => "would be updated in place",
        Action::Replace => "would be replaced",
        Action::Delete => "would be destroyed",
        Action::Forget => "would be removed from state (the real object is kept)",
        Action::NoOp => "has no changes",
    }
}

/// The one-line summary. The spec side counts as `anvil plan` does (same words: a
/// replacement is one to add and one to destroy), so the numbers match `anvil plan
/// --refresh=false`; they differ from a refreshing `anvil plan` by exactly what changed
/// outside anvil, which is counted first.
pub fn summary_line(r: &DriftReport) -> String {
    let s = &r.summary;
    let mut line = format!(
        "Drift: {} deleted and {} modified outside anvil; the spec against the state: {} to add, {} to change, {} to destroy",
        s.deleted_outside,
        s.modified_outside,
        s.to_create + s.to_replace,
        s.to_update,
        s.to_delete + s.to_replace
    );
    if s.to_forget > 0 {
        let _ = write!(line, ", {} to forget", s.to_forget);
    }
    if s.to_replace > 0 {
        let _ = write!(
            line,
            " ({} replaced: each counted once to add and once to destroy)",
            s.to_replace
        );
    }
    line.push('.');
    line
}

fn attr_lines(out: &mut String, attrs: &[AttrDiff], before_label: &str, after_label: &str) {
    let ind = "      ";
    for a in attrs {
        if a.sensitive {
            let _ = writeln!(out, "{ind}~ {}: (sensitive) changed", a.name);
            continue;
        }
        if let Some(d) = &a.diff {
            let _ = writeln!(out, "{ind}~ {}:", a.name);
            let _ = writeln!(out, "{ind}    --- {before_label}");
            let _ = writeln!(out, "{ind}    +++ {after_label}");
            for l in d.lines() {
                let _ = writeln!(out, "{ind}    {l}");
            }
            continue;
        }
        let _ = writeln!(
            out,
            "{ind}~ {}: {} -> {}",
            a.name,
            value_text(a.before.as_ref(), &[]),
            value_text(a.after.as_ref(), &a.after_unknown)
        );
    }
}

fn value_text(v: Option<&Value>, unknown: &[String]) -> String {
    if !unknown.is_empty() && matches!(v, None | Some(Value::Null)) {
        return "(known after apply)".into();
    }
    let mut s = match v {
        None => "null".to_string(),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    };
    if !unknown.is_empty() {
        s.push_str(" (parts known after apply)");
    }
    s
}

/// The Markdown form, for a CI job summary or a pull-request comment.
pub fn render_markdown(r: &DriftReport) -> String {
    let mut out = String::new();
    if r.clean {
        let _ = writeln!(out, "### anvil drift: `{}` — no drift\n", r.workspace);
        out.push_str("The real world matches the state, and the state matches the spec.\n");
        return out;
    }
    let _ = writeln!(
        out,
        "### anvil drift: `{}` — {} address(es) drifted\n",
        r.workspace,
        r.resources.len()
    );
    let _ = writeln!(out, "{}\n", summary_line(r));
    out.push_str("| address | changed outside anvil (real vs state) | differs from the spec (spec vs state) |\n");
    out.push_str("|---|---|---|\n");
    for e in &r.resources {
        let outside = match &e.outside {
            None => "—".to_string(),
            Some(o) => match o.kind {
                OutsideKind::Deleted => "**deleted**".to_string(),
                OutsideKind::Modified => format!("**modified**: {}", names(&o.attributes)),
            },
        };
        let spec = match &e.spec {
            None => "—".to_string(),
            Some(s) if s.attributes.is_empty() => format!("**{}**", action_word(s.action)),
            Some(s) => format!("**{}**: {}", action_word(s.action), names(&s.attributes)),
        };
        let _ = writeln!(out, "| `{}` | {outside} | {spec} |", e.address);
    }
    for e in &r.resources {
        let mut parts = Vec::new();
        if let Some(o) = e.outside.as_ref().filter(|o| !o.attributes.is_empty()) {
            parts.push(("changed outside anvil", "state", "real", &o.attributes));
        }
        if let Some(s) = e.spec.as_ref().filter(|s| !s.attributes.is_empty()) {
            parts.push(("differs from the spec", "state", "spec", &s.attributes));
        }
        if parts.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n#### `{}`", e.address);
        for (title, bl, al, attrs) in parts {
            let _ = writeln!(out, "\n{title}:\n");
            let _ = writeln!(out, "| attribute | {bl} | {al} |");
            out.push_str("|---|---|---|\n");
            for a in attrs.iter() {
                let (b, af) = if a.sensitive {
                    ("(sensitive)".to_string(), "(sensitive)".to_string())
                } else if a.diff.is_some() {
                    ("see diff".to_string(), "see diff".to_string())
                } else {
                    (
                        cell(&value_text(a.before.as_ref(), &[])),
                        cell(&value_text(a.after.as_ref(), &a.after_unknown)),
                    )
                };
                let _ = writeln!(out, "| `{}` | {b} | {af} |", a.name);
            }
            for a in attrs.iter() {
                if let Some(d) = &a.diff {
                    let _ = writeln!(out, "\n`{}`:\n", a.name);
                    let _ = writeln!(out, "```diff\n--- {bl}\n+++ {al}");
                    out.push_str(&d.replace("```", "`\u{200b}``"));
                    if !d.ends_with('\n') {
                        out.push('\n');
                    }
                    out.push_str("```\n");
                }
            }
        }
    }
    out
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update => "update",
        Action::Replace => "replace",
        Action::Delete => "destroy",
        Action::Forget => "forget",
        Action::NoOp => "no-op",
    }
}

fn names(attrs: &[AttrDiff]) -> String {
    attrs
        .iter()
        .map(|a| format!("`{}`", a.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table cell: code-formatted, pipes escaped, long values shortened.
fn cell(s: &str) -> String {
    const MAX: usize = 80;
    let mut t: String = s.chars().take(MAX).collect();
    if s.chars().count() > MAX {
        t.push('…');
    }
    format!("`{}`", t.replace('|', "\\|").replace('`', "'"))
}
