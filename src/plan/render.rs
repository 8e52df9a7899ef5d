//! The text form of a plan, in the shape Terraform users read every day: one block per
//! changed resource with `+`/`~`/`-`/`-/+` markers, per-attribute diffs, multi-line
//! strings (BOSH manifests) as unified diffs, `(sensitive)` for secrets, and the summary
//! line. Colour is the caller's choice (a terminal without `NO_COLOR`).

use super::{Action, Plan, ReplaceOrder, ResourceChange};
use crate::model::PValue;
use serde_json::Value;
use std::fmt::Write;

/// How to render.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub color: bool,
}

const RESET: &str = "\x1b[0m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("{code}{s}{RESET}")
        } else {
            s.to_string()
        }
    }
    fn marker(&self, m: &str) -> String {
        let code = match m.trim() {
            "+" => GREEN,
            "~" => YELLOW,
            "-" => RED,
            "-/+" | "+/-" => YELLOW,
            _ => return m.to_string(),
        };
        self.paint(code, m)
    }
}

/// Renders the whole plan, ending with the summary line.
pub fn render_plan(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    let changed: Vec<&ResourceChange> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .collect();
    if changed.is_empty() {
        out.push_str("No changes. The real world matches the spec and the state.\n");
        return out;
    }
    out.push_str("anvil will perform the following actions:\n");
    for c in changed {
        out.push('\n');
        render_change(&mut out, c, style);
    }
    let s = plan.summary();
    let mut line = format!(
        "Plan: {} to add, {} to change, {} to destroy",
        s.add, s.change, s.destroy
    );
    if s.forget > 0 {
        let _ = write!(line, ", {} to forget", s.forget);
    }
    line.push('.');
    let _ = writeln!(out, "\n{}", style.paint(BOLD, &line));
    out
}

fn render_change(out: &mut String, c: &ResourceChange, style: Style) {
    let (headline, marker) = match (c.action, c.replace_order) {
        (Action::Create, _) => ("will be created", "  +"),
        (Action::Update, _) => ("will be updated in place", "  ~"),
        (Action::Replace, Some(ReplaceOrder::CreateThenDelete)) => {
            ("must be replaced (create before destroy)", "+/-")
        }
        (Action::Replace, _) => ("must be replaced", "-/+"),
        (Action::Delete, _) => ("will be destroyed", "  -"),
        (Action::Forget, _) => ("will be removed from state; the real object is kept", "  ."),
        (Action::NoOp, _) => ("has no changes", "   "),
    };
    // A broker instance's resources say so: a GitOps reader sees they come from
    // `anvil broker`'s store, not from the spec files.
    let origin = match c.origin.as_deref() {
        Some("broker") => " (broker instance)".to_string(),
        Some(o) => format!(" (from {o})"),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "  # {}{origin} {}",
        style.paint(BOLD, &c.address),
        headline
    );
    for r in &c.reasons {
        let _ = writeln!(out, "  #   ({r})");
    }
    let _ = writeln!(out, "{} {} {{", style.marker(marker), c.address);
    let ind = "      ";
    let mut lines: Vec<Line> = Vec::new();
    let before = c.before.as_ref();
    let after = c.after.as_ref();
    let mut names: Vec<&String> = before
        .iter()
        .flat_map(|b| b.keys())
        .chain(after.iter().flat_map(|a| a.keys()))
        .collect();
    names.sort();
    names.dedup();
    // Outputs first, the way Terraform shows `id`.
    for o in &c.outputs {
        let b = c.before_outputs.get(o);
        match c.action {
            Action::Create => lines.push(Line::leaf("+", o, "(known after apply)".into())),
            Action::Replace => lines.push(Line::leaf(
                "~",
                o,
                format!(
                    "{} -> (known after apply)",
                    b.map(scalar).unwrap_or_else(|| "null".into())
                ),
            )),
            Action::Delete => {
                if let Some(b) = b {
                    lines.push(Line::leaf("-", o, format!("{} -> null", scalar(b))));
                }
            }
            _ => {
                if let Some(b) = b {
                    lines.push(Line::leaf(" ", o, scalar(b)));
                }
            }
        }
    }
    let mut hidden = 0;
    for name in names {
        let b = before.and_then(|m| m.get(name));
        let a = after.and_then(|m| m.get(name));
        let sensitive = c.sensitive.contains(name);
        let forces = c.forces_replacement.contains(name);
        let changed = match (b, a) {
            (Some(b), Some(PValue::Known(a))) => b != a,
            (None, None) => false,
            _ => true,
        };
        if !changed && matches!(c.action, Action::Update | Action::Replace) {
            hidden += 1;
            continue;
        }
        let mut line = if c.action == Action::Forget {
            Line::leaf(
                " ",
                name,
                if sensitive {
                    "(sensitive)".into()
                } else {
                    b.map(inline).unwrap_or_else(|| "null".into())
                },
            )
        } else if sensitive {
            let m = match (b, a) {
                (None, Some(_)) => "+",
                (Some(_), None) => "-",
                _ if changed => "~",
                _ => " ",
            };
            Line::leaf(m, name, "(sensitive)".into())
        } else {
            diff_value(name, b, a, c.action == Action::Delete)
        };
        if forces {
            line.note = Some("# forces replacement".into());
        }
        lines.push(line);
    }
    emit(out, &lines, ind, style);
    if hidden > 0 {
        let _ = writeln!(
            out,
            "{ind}  # ({hidden} unchanged attribute{} hidden)",
            if hidden == 1 { "" } else { "s" }
        );
    }
    let _ = writeln!(out, "    }}");
    if let Some(d) = &c.provider_diff {
        render_provider_diff(out, d, style);
    }
}

/// The provider's own diff under a change, the way `bosh deploy` shows it: changed lines
/// with two lines of context, `...` between hunks.
fn render_provider_diff(out: &mut String, d: &crate::model::ProviderDiff, style: Style) {
    const CONTEXT: usize = 2;
    let _ = writeln!(out, "    # {}:", d.source);
    if let Some(e) = &d.error {
        let _ = writeln!(out, "    #   (no diff: {e})");
    }
    let changed: Vec<usize> = d
        .lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.change.is_some())
        .map(|(i, _)| i)
        .collect();
    if changed.is_empty() && d.error.is_none() {
        let _ = writeln!(
            out,
            "    #   (no differences the provider shows; values it redacts are not compared)"
        );
        return;
    }
    // Lines within CONTEXT of a change, marked in one pass.
    let mut near = vec![false; d.lines.len()];
    for &c in &changed {
        let end = (c + CONTEXT + 1).min(near.len());
        for flag in &mut near[c.saturating_sub(CONTEXT)..end] {
            *flag = true;
        }
    }
    let shown = |i: usize| near[i];
    let mut last: Option<usize> = None;
    for (i, l) in d.lines.iter().enumerate() {
        if !shown(i) {
            continue;
        }
        if last.is_some_and(|p| p + 1 != i) {
            let _ = writeln!(out, "        ...");
        }
        last = Some(i);
        let (m, code) = match l.change.as_deref() {
            Some("added") => ("+", GREEN),
            Some("removed") => ("-", RED),
            _ => (" ", ""),
        };
        let line = format!("      {m} {}", l.text);
        let line = line.trim_end();
        let _ = writeln!(
            out,
            "{}",
            if code.is_empty() {
                line.to_string()
            } else {
                style.paint(code, line)
            }
        );
    }
}

/// One rendered attribute: a marker, a key, and either a value or nested lines.
struct Line {
    marker: &'static str,
    key: String,
    body: Body,
    note: Option<String>,
}

enum Body {
    Text(String),
    Nested {
        open: &'static str,
        close: &'static str,
        lines: Vec<Line>,
        hidden: usize,
    },
    Heredoc(Vec<(char, String)>),
}

impl Line {
    fn leaf(marker: &'static str, key: &str, text: String) -> Line {
        Line {
            marker,
            key: key.to_string(),
            body: Body::Text(text),
            note: None,
        }
    }
}

fn emit(out: &mut String, lines: &[Line], ind: &str, style: Style) {
    let width = lines
        .iter()
        .filter(|l| {
            matches!(
                l.body,
                Body::Text(_) | Body::Nested { .. } | Body::Heredoc(_)
            )
        })
        .map(|l| l.key.chars().count())
        .max()
        .unwrap_or(0);
    for l in lines {
        let key = if l.key.is_empty() {
            String::new()
        } else {
            format!("{:<width$} = ", l.key, width = width)
        };
        let note = l.note.as_ref().map(|n| format!(" {n}")).unwrap_or_default();
        let m = style.marker(l.marker);
        match &l.body {
            Body::Text(t) => {
                let _ = writeln!(out, "{ind}{m} {key}{t}{note}");
            }
            Body::Nested {
                open,
                close,
                lines,
                hidden,
            } => {
                let _ = writeln!(out, "{ind}{m} {key}{open}{note}");
                let inner = format!("{ind}    ");
                emit(out, lines, &inner, style);
                if *hidden > 0 {
                    let _ = writeln!(
                        out,
                        "{inner}  # ({hidden} unchanged element{} hidden)",
                        if *hidden == 1 { "" } else { "s" }
                    );
                }
                let _ = writeln!(out, "{ind}  {close}");
            }
            Body::Heredoc(diff) => {
                let _ = writeln!(out, "{ind}{m} {key}<<-EOT{note}");
                for (tag, text) in diff {
                    let mark = match tag {
                        '+' => style.paint(GREEN, "+"),
                        '-' => style.paint(RED, "-"),
                        _ => " ".to_string(),
                    };
                    let _ = writeln!(out, "{ind}    {mark} {text}");
                }
                let _ = writeln!(out, "{ind}  EOT");
            }
        }
    }
}

/// The diff of one value; `deleting` renders removals as `-> null`.
fn diff_value(key: &str, before: Option<&Value>, after: Option<&PValue>, deleting: bool) -> Line {
    match (before, after) {
        (None, Some(a)) => added(key, a),
        (Some(b), None) => {
            let mut l = removed(key, b);
            if !deleting {
                l.marker = "-";
            }
            l
        }
        (None, None) => Line::leaf(" ", key, "null".into()),
        (Some(b), Some(a)) => {
            if let PValue::Known(av) = a {
                if av == b {
                    return unchanged(key, b);
                }
            }
            match (b, a) {
                (Value::Object(bm), PValue::Known(Value::Object(am))) => {
                    let am: std::collections::BTreeMap<String, PValue> = am
                        .iter()
                        .map(|(k, v)| (k.clone(), PValue::Known(v.clone())))
                        .collect();
                    nested_map(key, bm, &am)
                }
                (Value::Object(bm), PValue::Object(am)) => nested_map(key, bm, am),
                (Value::String(bs), PValue::Known(Value::String(as_)))
                    if bs.contains('\n') || as_.contains('\n') =>
                {
                    let diff = similar::TextDiff::from_lines(bs.as_str(), as_.as_str());
                    let mut rows = Vec::new();
                    for ch in diff.iter_all_changes() {
                        let tag = match ch.tag() {
                            similar::ChangeTag::Insert => '+',
                            similar::ChangeTag::Delete => '-',
                            similar::ChangeTag::Equal => ' ',
                        };
                        rows.push((tag, ch.value().trim_end_matches('\n').to_string()));
                    }
                    Line {
                        marker: "~",
                        key: key.into(),
                        body: Body::Heredoc(rows),
                        note: None,
                    }
                }
                _ => Line::leaf("~", key, format!("{} -> {}", inline(b), pinline(a))),
            }
        }
    }
}

fn nested_map(
    key: &str,
    bm: &serde_json::Map<String, Value>,
    am: &std::collections::BTreeMap<String, PValue>,
) -> Line {
    let mut keys: Vec<&String> = bm.keys().chain(am.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut lines = Vec::new();
    let mut hidden = 0;
    for k in keys {
        let (b, a) = (bm.get(k), am.get(k));
        if let (Some(b), Some(PValue::Known(a))) = (b, a) {
            if a == b {
                hidden += 1;
                continue;
            }
        }
        lines.push(diff_value(k, b, a, false));
    }
    Line {
        marker: "~",
        key: key.into(),
        body: Body::Nested {
            open: "{",
            close: "}",
            lines,
            hidden,
        },
        note: None,
    }
}

fn added(key: &str, v: &PValue) -> Line {
    match v {
        PValue::Known(Value::Object(m)) if !m.is_empty() => Line {
            marker: "+",
            key: key.into(),
            body: Body::Nested {
                open: "{",
                close: "}",
                lines: m
                    .iter()
                    .map(|(k, v)| added(k, &PValue::Known(v.clone())))
                    .collect(),
                hidden: 0,
            },
            note: None,
        },
        PValue::Object(m) => Line {
            marker: "+",
            key: key.into(),
            body: Body::Nested {
                open: "{",
                close: "}",
                lines: m.iter().map(|(k, v)| added(k, v)).collect(),
                hidden: 0,
            },
            note: None,
        },
        PValue::Known(Value::String(s)) if s.contains('\n') => Line {
            marker: "+",
            key: key.into(),
            body: Body::Heredoc(s.lines().map(|l| (' ', l.to_string())).collect()),
            note: None,
        },
        other => Line::leaf("+", key, pinline(other)),
    }
}

fn removed(key: &str, v: &Value) -> Line {
    match v {
        Value::Object(m) if !m.is_empty() => Line {
            marker: "-",
            key: key.into(),
            body: Body::Nested {
                open: "{",
                close: "}",
                lines: m.iter().map(|(k, v)| removed(k, v)).collect(),
                hidden: 0,
            },
            note: None,
        },
        Value::String(s) if s.contains('\n') => Line {
            marker: "-",
            key: key.into(),
            body: Body::Heredoc(s.lines().map(|l| (' ', l.to_string())).collect()),
            note: None,
        },
        other => Line::leaf("-", key, format!("{} -> null", inline(other))),
    }
}

fn unchanged(key: &str, v: &Value) -> Line {
    Line::leaf(" ", key, inline(v))
}

fn scalar(v: &Value) -> String {
    inline(v)
}

/// A value on one line: JSON, with strings quoted.
fn inline(v: &Value) -> String {
    match v {
        Value::String(s) if s.contains('\n') => format!("<<{} lines>>", s.lines().count()),
        other => other.to_string(),
    }
}

fn pinline(v: &PValue) -> String {
    match v {
        PValue::Known(v) => inline(v),
        PValue::Unknown => "(known after apply)".into(),
        PValue::Array(items) => format!(
            "[{}]",
            items.iter().map(pinline).collect::<Vec<_>>().join(", ")
        ),
        PValue::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k:?}: {}", pinline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
