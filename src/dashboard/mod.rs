//! The dashboard page at `/` of `anvil serve` and `anvil broker`: one server-rendered
//! HTML page (maud templates, every value escaped; a small inline stylesheet; no
//! script, no CDN, works offline) over plain data the front-ends gather through `ops`:
//! service instances by plan against their limits ("n / limit"), environments and
//! their status, recent runs, the last drift report, and the Diego cells' memory and
//! disk with a banner when the Director did not answer (degraded mode).

use crate::ops::capacity::{Cell, DashboardData, Service};
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// Cells shown as rows; beyond this the page says how many more `/api/cells` holds
/// (a 2,000-cell foundation would make a page nobody scrolls).
pub const MAX_CELL_ROWS: usize = 200;

/// One catalog plan with how many instances use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    pub service: String,
    pub plan: String,
    pub plan_id: String,
    pub count: usize,
    /// The plan's limit: 0 unlimited, negative none allowed.
    pub limit: i64,
}

/// One service's total against its own limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub service: String,
    pub count: usize,
    /// 0 unlimited, negative none allowed.
    pub limit: i64,
}

/// One environment of `anvil serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRow {
    pub name: String,
    pub id: String,
    pub status: String,
    /// `+add ~change -destroy` of the last plan applied, if any.
    pub last_plan: Option<String>,
    pub error: Option<String>,
    pub updated_at: String,
}

/// One run: a broker operation or an environment job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub at: String,
    pub subject: String,
    pub kind: String,
    pub state: String,
    pub summary: String,
}

/// The last drift report, as key/value lines (the reconciler's last run in the broker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftView {
    pub title: String,
    pub at: Option<String>,
    pub lines: Vec<(String, String)>,
}

/// The capacity section.
#[derive(Debug, Clone, PartialEq)]
pub enum CapacityView {
    /// No CF API configured: the section says which flags turn it on.
    NotConfigured,
    /// The CF API failed (the message names its URL).
    Failed(String),
    /// The capacity service's answer; `bosh_configured` tells a Director that did not
    /// answer from one that was never given.
    Data {
        dashboard: Box<DashboardData>,
        bosh_configured: bool,
    },
}

/// The instances section: per plan, then per service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances {
    pub plans: Vec<PlanRow>,
    pub services: Vec<ServiceRow>,
}

/// Everything the page shows; `None` sections are left out (the broker has no
/// environments, `anvil serve` no catalog).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// "anvil broker — foundation" and the like.
    pub title: String,
    pub generated_at: String,
    /// Instances by plan, or why they could not be read (Vault unreachable…).
    pub plans: Option<Result<Instances, String>>,
    pub environments: Option<Result<Vec<EnvironmentRow>, String>>,
    pub runs: Vec<RunRow>,
    /// `Err`: why there is none (which flag records one).
    pub drift: Result<DriftView, String>,
    pub capacity: CapacityView,
}

/// "n / limit" as the page shows it: a limit of 0 is unlimited, a negative one allows
/// none.
#[must_use]
pub fn count_against(count: usize, limit: i64) -> String {
    match limit {
        0 => format!("{count} / unlimited"),
        l if l < 0 => format!("{count} / none allowed"),
        l => format!("{count} / {l}"),
    }
}

/// Whether `count` reached the limit (the row is highlighted).
fn at_limit(count: usize, limit: i64) -> bool {
    limit < 0 || (limit > 0 && i64::try_from(count).unwrap_or(i64::MAX) >= limit)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#fafbfc}\
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #d8dde6}\
table{border-collapse:collapse;font-size:.9rem;min-width:40rem}th,td{padding:.25rem .6rem;text-align:left;border-bottom:1px solid #e6e9ef}\
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.full td{background:#fff2e0}\
.muted{color:#687385;font-size:.85rem}.banner{padding:.6rem .9rem;border-radius:4px;margin:1rem 0;font-weight:600}\
.degraded{background:#fde8e8;border:1px solid #e0a0a0;color:#7a1010}.error{background:#fff4e5;border:1px solid #e8c080}\
.bar{display:inline-block;width:10rem;height:.7rem;background:#e6e9ef;border-radius:2px;vertical-align:middle;margin-right:.4rem}\
.bar span{display:block;height:100%;background:#3d7bd9;border-radius:2px}.bar.hot span{background:#d9533d}\
.status-ready{color:#16702e}.status-failed{color:#a31515}";

/// The page as an HTML document.
#[must_use]
pub fn render(page: &Page) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (page.title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (page.title) }
                p.muted { "Generated at " (page.generated_at) ". Reload the page to refresh it." }
                (capacity_banner(&page.capacity))
                @if let Some(plans) = &page.plans { (plans_section(plans)) }
                @if let Some(envs) = &page.environments { (environments_section(envs)) }
                (runs_section(&page.runs))
                (drift_section(&page.drift))
                (capacity_section(&page.capacity))
            }
        }
    }
    .into_string()
}

fn capacity_banner(c: &CapacityView) -> Markup {
    html! {
        @match c {
            CapacityView::Data { dashboard, bosh_configured } if !dashboard.metadata.bosh_available => {
                div.banner.degraded id="degraded" role="alert" {
                    @if *bosh_configured {
                        "Degraded mode: the BOSH Director did not answer (after its retries); cells are unknown, apps only."
                    } @else {
                        "Degraded mode: no BOSH Director is configured; cells are unknown, apps only."
                    }
                }
            }
            CapacityView::Failed(why) => {
                div.banner.error id="capacity-error" role="alert" { "Capacity unavailable: " (why) }
            }
            _ => {}
        }
    }
}

fn plans_section(plans: &Result<Instances, String>) -> Markup {
    html! {
        section id="instances" {
            h2 { "Service instances" }
            @match plans {
                Err(why) => div.banner.error { "Instances unavailable: " (why) },
                Ok(Instances { plans: rows, services }) => {
                    table id="plans" {
                        thead { tr { th { "Service" } th { "Plan" } th { "Plan ID" } th { "Instances" } } }
                        tbody {
                            @for r in rows {
                                tr.full[at_limit(r.count, r.limit)] data-plan=(r.plan_id) {
                                    td { (r.service) } td { (r.plan) } td { code { (r.plan_id) } }
                                    td.num.count { (count_against(r.count, r.limit)) }
                                }
                            }
                        }
                    }
                    h2 { "Services" }
                    table id="services" {
                        thead { tr { th { "Service" } th { "Instances" } } }
                        tbody {
                            @for s in services {
                                tr.full[at_limit(s.count, s.limit)] data-service=(s.service) {
                                    td { (s.service) } td.num.count { (count_against(s.count, s.limit)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn environments_section(envs: &Result<Vec<EnvironmentRow>, String>) -> Markup {
    html! {
        section id="environments" {
            h2 { "Environments" }
            @match envs {
                Err(why) => div.banner.error { "Environments unavailable: " (why) },
                Ok(rows) if rows.is_empty() => p.muted { "No environments yet (POST /api/v1/environments)." },
                Ok(rows) => table id="environment-list" {
                    thead { tr { th { "Name" } th { "Status" } th { "Last plan" } th { "Updated" } th { "Error" } } }
                    tbody {
                        @for e in rows {
                            tr data-environment=(e.name) {
                                td { (e.name) br; span.muted { (e.id) } }
                                td class={ "status status-" (e.status) } { (e.status) }
                                td { (e.last_plan.as_deref().unwrap_or("—")) }
                                td { (e.updated_at) }
                                td { (e.error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                },
            }
        }
    }
}

fn runs_section(runs: &[RunRow]) -> Markup {
    html! {
        section id="runs" {
            h2 { "Recent runs" }
            @if runs.is_empty() {
                p.muted { "No runs recorded yet." }
            } @else {
                table id="run-list" {
                    thead { tr { th { "When" } th { "Subject" } th { "Kind" } th { "State" } th { "Summary" } } }
                    tbody {
                        @for r in runs {
                            tr { td { (r.at) } td { (r.subject) } td { (r.kind) } td { (r.state) } td { (r.summary) } }
                        }
                    }
                }
            }
        }
    }
}

fn drift_section(drift: &Result<DriftView, String>) -> Markup {
    html! {
        section id="drift" {
            h2 { "Last drift report" }
            @match drift {
                Err(why) => p.muted { (why) },
                Ok(d) => {
                    p { strong { (d.title) } @if let Some(at) = &d.at { " — " (at) } }
                    table {
                        tbody { @for (k, v) in &d.lines { tr { th { (k) } td { (v) } } } }
                    }
                }
            }
        }
    }
}

/// A bar `used` of `total`, red from 90 %.
fn bar(used: u64, total: u64) -> Markup {
    #[allow(clippy::cast_precision_loss)]
    let pct = if total == 0 {
        0.0
    } else {
        (used as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
    };
    html! {
        span.bar.hot[pct >= 90.0] title={ (format!("{pct:.0} %")) } {
            span style={ "width:" (format!("{pct:.1}")) "%" } {}
        }
        (used) " / " (total) " MB"
    }
}

fn cell_row(c: &Cell) -> Markup {
    html! {
        tr data-cell=(c.name) {
            td { (c.deployment) "/" (c.name) } td { (c.isolation_segment) }
            td { (bar(c.used_mb, c.memory_mb)) }
            td.num { (c.allocated_mb) " MB" }
            td { @match (c.disk_used_mb, c.disk_mb) {
                (Some(u), Some(t)) => (bar(u, t)),
                _ => span.muted { "unknown (no vm_type disk)" },
            } }
            td.num { (format!("{:.1}", c.cpu_percent)) }
        }
    }
}

fn capacity_section(c: &CapacityView) -> Markup {
    html! {
        section id="capacity" {
            h2 { "Diego cells" }
            @match c {
                CapacityView::NotConfigured => p.muted {
                    "Capacity is not configured: start with --cf-api (and --bosh-environment for cells)."
                },
                CapacityView::Failed(why) => p.muted { (why) },
                CapacityView::Data { dashboard, .. } => {
                    @let d = dashboard;
                    @let total: u64 = d.cells.iter().map(|c| c.memory_mb).sum();
                    @let used: u64 = d.cells.iter().map(|c| c.used_mb).sum();
                    @let requested: u64 = d.apps.iter().map(|a| a.requested_mb).sum();
                    p.muted {
                        "Fetched " (d.metadata.timestamp)
                        @if d.metadata.cached { " (cached)" }
                        ". " (d.apps.len()) " apps requesting " (requested) " MB; "
                        (d.segments.len()) " isolation segments."
                    }
                    @if d.cells.is_empty() {
                        p.muted { "No cells known." }
                    } @else {
                        p id="cells-total" { (d.cells.len()) " cells: " (bar(used, total)) " used" }
                        table id="cells" {
                            thead { tr { th { "Cell" } th { "Segment" } th { "Memory used" } th { "Allocated" } th { "Ephemeral disk" } th { "CPU %" } } }
                            tbody { @for cell in d.cells.iter().take(MAX_CELL_ROWS) { (cell_row(cell)) } }
                        }
                        @if d.cells.len() > MAX_CELL_ROWS {
                            p.muted { (d.cells.len() - MAX_CELL_ROWS) " more cells: `anvil capacity --json` (or /api/cells of anvil serve) lists them all." }
                        }
                    }
                }
            }
        }
    }
}

/// The capacity section from the service (`None`: not configured). A Director that
/// does not answer still gives a page (degraded mode); a CF API failure is shown.
pub async fn capacity_view(service: Option<&Service>) -> CapacityView {
    let Some(service) = service else {
        return CapacityView::NotConfigured;
    };
    match service.dashboard().await {
        Ok(d) => CapacityView::Data {
            dashboard: Box::new(d),
            bosh_configured: service.settings().bosh.is_some(),
        },
        Err(e) => CapacityView::Failed(e.to_string()),
    }
}

/// The time now, as the page's "generated at".
#[must_use]
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests;
