//! Unit tests of the capacity computation with plain data: memory from vitals (used, not
//! total), which jobs are cells, apps' memory and segments, allocation per segment, and
//! the plan-time check.

use super::*;
use serde_json::json;

fn vm(job: &str, index: u64, kb: &str, percent: &str, vm_type: &str) -> Value {
    json!({
        "job_name": job, "index": index, "vm_type": vm_type,
        "vitals": {
            "cpu": {"user": "12.5", "sys": "2.5", "wait": "0.1"},
            "mem": {"kb": kb, "percent": percent},
            "disk": {"ephemeral": {"percent": "25"}},
        },
    })
}

fn dvm(deployment: &str, v: Value) -> DirectorVm {
    DirectorVm {
        deployment: deployment.into(),
        vm: v,
    }
}

fn seg(guid: &str, name: &str) -> Segment {
    Segment {
        guid: guid.into(),
        name: name.into(),
    }
}

#[test]
fn memory_total_comes_from_used_kb_and_its_percentage() {
    // 4 GiB used at 25 % → 16 GiB total (the public analyzer took kb as the total).
    let v = json!({"mem": {"kb": "4194304", "percent": "25"}});
    assert_eq!(memory_kb(&v), Some((16_777_216, 4_194_304)));
    // Numbers instead of strings are read too.
    assert_eq!(
        memory_kb(&json!({"mem": {"kb": 1000, "percent": 50}})),
        Some((2000, 1000))
    );
    // 0 % or missing fields: the total cannot be told.
    for bad in [
        json!({"mem": {"kb": "0", "percent": "0"}}),
        json!({"mem": {"kb": "100"}}),
        json!({"mem": {"kb": "x", "percent": "5"}}),
        json!({"mem": {"kb": "100", "percent": "101"}}),
        json!(null),
    ] {
        assert_eq!(memory_kb(&bad), None, "{bad}");
    }
}

#[test]
fn only_diego_cell_and_compute_jobs_are_cells() {
    for (job, cell) in [
        ("diego_cell", true),
        ("isolated_diego_cell", true),
        ("diego_cell_large", true),
        ("compute", true),
        ("compute_worker", false),
        ("diego_brain", false),
        ("router", false),
    ] {
        assert_eq!(is_cell_job(job), cell, "{job}");
    }
    let types = VmTypes::default().with_vm_type("large", 16384, 65536);
    let vms = [
        dvm("cf", vm("diego_cell", 0, "4194304", "25", "large")),
        dvm("cf", vm("router", 0, "1000", "10", "large")),
        dvm("cf", vm("compute", 3, "2097152", "50", "other")),
    ];
    let cells = cells(&vms, &types, &[]);
    assert_eq!(cells.len(), 2);
    let c = &cells[0];
    assert_eq!(c.name, "diego_cell/0");
    assert_eq!((c.memory_mb, c.used_mb), (16384, 4096));
    assert_eq!(c.cpu_percent, 15.0);
    assert_eq!((c.disk_mb, c.disk_used_mb), (Some(65536), Some(16384)));
    assert_eq!(c.isolation_segment, SHARED);
    // compute/3: 2 GiB used at 50 % → 4 GiB; its vm_type is unknown, so no disk.
    assert_eq!(cells[1].name, "compute/3");
    assert_eq!((cells[1].memory_mb, cells[1].disk_mb), (4096, None));
}

#[test]
fn cells_belong_to_the_segment_their_deployment_or_job_names() {
    let segments = [seg("s0", "shared"), seg("s1", "prod"), seg("s2", "prod-eu")];
    let vms = [
        dvm(
            "p-isolation-segment-prod-eu",
            vm("isolated_diego_cell", 0, "1", "1", "x"),
        ),
        dvm("cf", vm("isolated_diego_cell_prod", 0, "1", "1", "x")),
        dvm("cf", vm("diego_cell", 0, "1", "1", "x")),
    ];
    let got: Vec<String> = cells(&vms, &VmTypes::default(), &segments)
        .into_iter()
        .map(|c| c.isolation_segment)
        .collect();
    assert_eq!(got, ["prod-eu", "prod", "shared"]);
}

fn cf_data() -> CfData {
    CfData {
        apps: vec![
            AppData {
                guid: "a1".into(),
                name: "web".into(),
                state: "STARTED".into(),
                space_guid: "sp-prod".into(),
                processes: vec![
                    ProcessData {
                        guid: "p1".into(),
                        instances: 2,
                        memory_in_mb: 1024,
                        used_bytes: vec![300 << 20, 200 << 20],
                    },
                    ProcessData {
                        guid: "p2".into(),
                        instances: 1,
                        memory_in_mb: 512,
                        used_bytes: vec![100 << 20],
                    },
                ],
            },
            AppData {
                guid: "a2".into(),
                name: "worker".into(),
                state: "STOPPED".into(),
                space_guid: "sp-dev".into(),
                processes: vec![ProcessData {
                    guid: "p3".into(),
                    instances: 4,
                    memory_in_mb: 256,
                    used_bytes: vec![],
                }],
            },
            AppData {
                guid: "a3".into(),
                name: "api".into(),
                state: "STARTED".into(),
                space_guid: "sp-dev".into(),
                processes: vec![ProcessData {
                    guid: "p4".into(),
                    instances: 3,
                    memory_in_mb: 1024,
                    used_bytes: vec![1 << 20; 3],
                }],
            },
        ],
        segments: vec![seg("s0", "shared"), seg("s1", "prod")],
        space_segments: [("sp-prod".to_string(), "s1".to_string())].into(),
    }
}

#[test]
fn apps_sum_their_processes_and_take_their_space_segment() {
    let apps = apps(&cf_data());
    assert_eq!(apps[0].instances, 3);
    assert_eq!(apps[0].requested_mb, 2 * 1024 + 512);
    assert_eq!(apps[0].actual_mb, 600);
    assert_eq!(apps[0].isolation_segment, "prod");
    assert_eq!(apps[1].requested_mb, 1024);
    assert_eq!(apps[1].actual_mb, 0);
    assert_eq!(apps[1].isolation_segment, SHARED);
}

#[test]
fn dashboard_spreads_started_apps_over_their_segment_cells() {
    let vms = [
        dvm("cf", vm("diego_cell", 0, "4194304", "25", "x")),
        dvm("cf", vm("diego_cell", 1, "4194304", "25", "x")),
        dvm(
            "iso",
            vm("isolated_diego_cell_prod", 0, "1048576", "10", "x"),
        ),
    ];
    let types = VmTypes::default();
    let d = dashboard(&cf_data(), Some((&vms, &types)), "t".into());
    assert!(d.metadata.bosh_available);
    // shared: only the started app a3 (3 × 1024), over two cells; the stopped a2 not.
    assert_eq!(d.cells[0].allocated_mb, 1536);
    assert_eq!(d.cells[1].allocated_mb, 1536);
    assert_eq!(d.cells[2].allocated_mb, 2560);
    assert_eq!(d.segments.len(), 2);

    let degraded = dashboard(&cf_data(), None, "t".into());
    assert!(!degraded.metadata.bosh_available);
    assert!(degraded.cells.is_empty());
    assert_eq!(degraded.apps.len(), 3);
}

const CLOUD: &str = "
vm_types:
- name: small
  cloud_properties: {ram: 2048, ephemeral_disk: 10240, cpu: 1}
- name: medium
  cloud_properties: {ram: 4096, ephemeral_disk: 20480}
- name: opaque
  cloud_properties: {instance_type: m5.large}
disk_types:
- name: ten
  disk_size: 10240
";

#[test]
fn manifests_need_instances_times_their_vm_type() {
    let types = VmTypes::from_cloud_config(CLOUD).unwrap();
    let m = "
name: redis-1
instance_groups:
- name: redis
  instances: 3
  vm_type: medium
  persistent_disk_type: ten
- name: sentinel
  instances: 1
  vm_type: small
  persistent_disk: 1024
- name: mystery
  instances: 2
  vm_type: opaque
- name: missing
  instances: 1
  vm_type: nope
- name: sized
  instances: 1
  vm_resources: {cpu: 2, ram: 1024, ephemeral_disk_size: 2048}
- name: off
  instances: 0
  vm_type: nope
";
    let r = manifest_requirement(m, &types).unwrap();
    assert_eq!(r.memory_mb, 3 * 4096 + 2048 + 1024);
    assert_eq!(r.disk_mb, 3 * (20480 + 10240) + (10240 + 1024) + 2048);
    assert_eq!(r.unknown, ["redis-1/mystery", "redis-1/missing"]);
    assert!(manifest_requirement("a: [", &types).is_err());
    assert!(VmTypes::from_cloud_config("vm_types: [").is_err());
    // No instance groups: nothing needed.
    assert_eq!(
        manifest_requirement("name: x", &types).unwrap(),
        Requirement::default()
    );
}

fn cell(memory_mb: u64, used_mb: u64, disk: Option<(u64, u64)>) -> Cell {
    Cell {
        name: "diego_cell/0".into(),
        deployment: "cf".into(),
        isolation_segment: SHARED.into(),
        memory_mb,
        allocated_mb: 0,
        used_mb,
        cpu_percent: 0.0,
        disk_mb: disk.map(|d| d.0),
        disk_used_mb: disk.map(|d| d.1),
    }
}

#[test]
fn the_check_warns_with_both_numbers_only_when_short() {
    let free = Free::of(&[
        cell(16384, 12288, None),
        cell(16384, 12288, Some((10240, 2048))),
    ]);
    assert_eq!(free.memory_mb, 8192);
    assert_eq!(free.disk_mb, Some(8192));
    let need = Requirement {
        memory_mb: 12288,
        disk_mb: 1024,
        unknown: vec![],
    };
    assert_eq!(
        Check::of(&need, &free),
        Check::Short(vec![
            "this plan needs 12 GiB of memory; cells have 8 GiB free".into()
        ])
    );
    let need = Requirement {
        memory_mb: 8192,
        disk_mb: 9000,
        unknown: vec![],
    };
    assert_eq!(
        Check::of(&need, &free),
        Check::Short(vec![
            "this plan needs 8.8 GiB of disk; cells have 8 GiB free".into()
        ])
    );
    let fits = Requirement {
        memory_mb: 8192,
        disk_mb: 8192,
        unknown: vec![],
    };
    assert_eq!(Check::of(&fits, &free), Check::Fits);
    // No cells: nothing to compare with.
    assert_eq!(Check::of(&need, &Free::of(&[])), Check::Fits);
}

#[test]
fn growth_is_what_an_update_needs() {
    let new = Requirement {
        memory_mb: 8192,
        disk_mb: 100,
        unknown: vec![],
    };
    let old = Requirement {
        memory_mb: 4096,
        disk_mb: 200,
        unknown: vec![],
    };
    let grown = new.beyond(&old);
    assert_eq!((grown.memory_mb, grown.disk_mb), (4096, 0));
    assert_eq!(grown.plus(old).memory_mb, 8192);
}
