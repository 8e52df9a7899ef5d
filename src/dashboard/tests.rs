//! Unit tests of the dashboard page: counts against limits, escaping, the degraded
//! banner, the cell bars and the row cap.

use super::*;
use crate::ops::capacity::{AppReport, Metadata};

fn cell(i: usize, used: u64) -> Cell {
    Cell {
        name: format!("diego_cell/{i}"),
        deployment: "cf".into(),
        isolation_segment: "default".into(),
        memory_mb: 1000,
        allocated_mb: 100,
        used_mb: used,
        cpu_percent: 12.5,
        disk_mb: Some(2000),
        disk_used_mb: Some(500),
    }
}

fn data(cells: Vec<Cell>, bosh_available: bool) -> CapacityView {
    CapacityView::Data {
        dashboard: Box::new(DashboardData {
            cells,
            apps: vec![AppReport {
                guid: "g".into(),
                name: "app".into(),
                state: "STARTED".into(),
                instances: 2,
                requested_mb: 512,
                actual_mb: 300,
                isolation_segment: "default".into(),
            }],
            segments: Vec::new(),
            metadata: Metadata {
                timestamp: "2026-12-01T00:00:00Z".into(),
                cached: false,
                bosh_available,
            },
        }),
        bosh_configured: true,
    }
}

fn page(capacity: CapacityView) -> Page {
    Page {
        title: "anvil broker — <f>".into(),
        generated_at: "now".into(),
        plans: Some(Ok(Instances {
            plans: vec![
                PlanRow {
                    service: "redis".into(),
                    plan: "small".into(),
                    plan_id: "redis-small".into(),
                    count: 1,
                    limit: 5,
                },
                PlanRow {
                    service: "redis".into(),
                    plan: "cluster".into(),
                    plan_id: "redis-cluster".into(),
                    count: 2,
                    limit: 2,
                },
            ],
            services: vec![ServiceRow {
                service: "redis".into(),
                count: 3,
                limit: 0,
            }],
        })),
        environments: None,
        runs: vec![RunRow {
            at: "t".into(),
            subject: "<script>alert(1)</script>".into(),
            kind: "provision".into(),
            state: "succeeded".into(),
            summary: "a & b".into(),
        }],
        drift: Err("no drift report".into()),
        capacity,
    }
}

#[test]
fn counts_against_limits_read_as_the_catalog_says() {
    assert_eq!(count_against(1, 5), "1 / 5");
    assert_eq!(count_against(2, 0), "2 / unlimited");
    assert_eq!(count_against(0, -1), "0 / none allowed");
    assert!(at_limit(2, 2) && at_limit(0, -1) && !at_limit(1, 5) && !at_limit(9, 0));
}

#[test]
fn the_page_shows_plans_and_escapes_every_value() {
    let html = render(&page(data(vec![cell(0, 400)], true)));
    assert!(html.contains(">1 / 5<"), "{html}");
    assert!(
        html.contains(">2 / 2<") && html.contains("class=\"full\""),
        "{html}"
    );
    assert!(html.contains(">3 / unlimited<"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("a &amp; b") && html.contains("&lt;f&gt;"),
        "{html}"
    );
    assert!(!html.contains("id=\"degraded\""), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resource: {html}"
    );
    assert!(html.contains("width:40.0%"), "the memory bar: {html}");
}

#[test]
fn degraded_mode_shows_the_banner() {
    let html = render(&page(data(Vec::new(), false)));
    assert!(html.contains("id=\"degraded\""), "{html}");
    assert!(html.contains("BOSH Director did not answer"), "{html}");
    let html = render(&page(CapacityView::Failed(
        "the CF API http://x failed".into(),
    )));
    assert!(
        html.contains("id=\"capacity-error\"") && html.contains("http://x"),
        "{html}"
    );
    let html = render(&page(CapacityView::NotConfigured));
    assert!(
        html.contains("--cf-api") && !html.contains("id=\"degraded\""),
        "{html}"
    );
}

#[test]
fn many_cells_are_capped_with_a_note() {
    let cells: Vec<Cell> = (0..MAX_CELL_ROWS + 5).map(|i| cell(i, 950)).collect();
    let html = render(&page(data(cells, true)));
    assert_eq!(html.matches("data-cell=").count(), MAX_CELL_ROWS);
    assert!(html.contains("5 more cells"), "{html}");
    assert!(html.contains("bar hot"), "95 % is hot: {html}");
}
