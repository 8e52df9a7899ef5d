//! A real `anvil sim cf` for black-box tests and benchmarks, and a Director simulator
//! seeded with a `cf` deployment whose Diego cells have vitals: started on
//! 127.0.0.1:0, killed when dropped.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `anvil sim cf`; killed when dropped.
pub struct CfSim {
    child: Child,
    pub url: String,
}

impl CfSim {
    /// `anvil sim cf --listen 127.0.0.1:0 ARGS…`, waiting for its address line.
    pub fn start(args: &[&str]) -> CfSim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_anvil"))
            .args(["sim", "cf", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start anvil sim cf");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let Some(url) = line.strip_prefix("anvil sim cf listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected first line of anvil sim cf: {line:?}");
        };
        CfSim {
            url: url.to_string(),
            child,
        }
    }

    /// Requests the simulator has answered.
    pub fn requests(&self) -> u64 {
        blocking_get(&format!("{}/_sim/stats", self.url))["requests"]
            .as_u64()
            .unwrap_or(0)
    }
}

impl Drop for CfSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// GET `url` as JSON (`Null` when the body is not JSON).
pub fn blocking_get(url: &str) -> Value {
    rt().block_on(async {
        let r = reqwest::get(url).await.expect("GET");
        r.json().await.unwrap_or(Value::Null)
    })
}

/// PUT `body` as JSON to `url`; the status.
pub fn blocking_put(url: &str, body: &Value) -> u16 {
    rt().block_on(async {
        reqwest::Client::new()
            .put(url)
            .json(body)
            .send()
            .await
            .expect("PUT")
            .status()
            .as_u16()
    })
}

/// The cloud config of [`CELLS_MANIFEST`]: 32 GiB cells with 100 GiB ephemeral disk.
pub const CLOUD_CONFIG: &str = "
vm_types:
- {name: cell, cloud_properties: {ram: 32768, ephemeral_disk: 102400}}
- {name: small, cloud_properties: {ram: 2048, ephemeral_disk: 10240}}
- {name: medium, cloud_properties: {ram: 4096, ephemeral_disk: 20480}}
";

/// A `cf` deployment with three Diego cells and a router.
pub const CELLS_MANIFEST: &str = "
name: cf
instance_groups:
- {name: diego_cell, instances: 3, vm_type: cell, azs: [z1], networks: [{name: default}], jobs: [{name: rep}]}
- {name: router, instances: 1, vm_type: small, azs: [z1], networks: [{name: default}], jobs: [{name: gorouter}]}
";

/// Seeds the Director at `bosh_url` (with `post_json`/`deploy` of the BOSH support)
/// with [`CLOUD_CONFIG`] and [`CELLS_MANIFEST`] done by the caller, then sets each
/// cell's vitals: 32 GiB, `percent[i]` % used, 40 % of the ephemeral disk.
pub fn set_cell_vitals(bosh_url: &str, percent: &[u64]) {
    for (i, p) in percent.iter().enumerate() {
        let v = json!({"mem_total_kb": 33_554_432u64, "mem_percent": p, "cpu_user": 10.0,
            "cpu_sys": 2.0, "disk_ephemeral_percent": 40, "disk_persistent_percent": 0});
        let status = blocking_put(&format!("{bosh_url}/_sim/vitals/cf/diego_cell/{i}"), &v);
        assert_eq!(status, 200, "vitals of diego_cell/{i}");
    }
}
