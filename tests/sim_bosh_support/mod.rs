//! A real `anvil sim bosh` for black-box tests: started on 127.0.0.1:0, asked through
//! anvil's own Director client, faults set through `/_sim/faults`; killed when dropped.
#![allow(dead_code)]

use anvil::providers::bosh::client::{Client, Config};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running simulator; killed when dropped.
pub struct BoshSim {
    child: Child,
    pub url: String,
    pub ca: Option<String>,
}

impl BoshSim {
    /// Starts `anvil sim bosh --listen 127.0.0.1:0 <extra...>`; with `ca_out`, TLS with
    /// the CA written there.
    pub fn start(extra: &[&str], ca_out: Option<&Path>) -> BoshSim {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_anvil"));
        cmd.args(["sim", "bosh", "--listen", "127.0.0.1:0"])
            .args(extra);
        if let Some(p) = ca_out {
            cmd.arg("--tls").arg("--ca-out").arg(p);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start anvil sim bosh");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("anvil sim bosh printed no address line within 30s")
            });
        let url = line
            .strip_prefix("anvil sim bosh listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let ca = ca_out.map(|p| p.to_string_lossy().to_string());
        BoshSim { child, url, ca }
    }

    pub fn config(&self) -> Config {
        Config {
            url: self.url.clone(),
            client: "admin".into(),
            secret: "admin".into(),
            ca_cert: self.ca.clone(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let c = Client::connect(&self.config()).await.unwrap();
            let mut n = c.deployment_names().await.unwrap();
            n.sort();
            n
        })
    }

    pub fn manifest(&self, name: &str) -> Option<String> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let c = Client::connect(&self.config()).await.unwrap();
            c.manifest(name).await.unwrap()
        })
    }

    /// `PUT /_sim/faults` (no auth needed there).
    pub fn set_faults(&self, body: &str) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let status = rt.block_on(async {
            let mut b = reqwest::Client::builder();
            if let Some(ca) = &self.ca {
                let pem = std::fs::read(ca).unwrap();
                b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
            }
            b.build()
                .unwrap()
                .put(format!("{}/_sim/faults", self.url))
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
        });
        assert!(status.is_success(), "{status}");
    }
}

impl BoshSim {
    /// `GET /_sim/stats`: `{"tokens_issued": N, "unauthorized": N}`.
    pub fn stats(&self) -> serde_json::Value {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut b = reqwest::Client::builder();
            if let Some(ca) = &self.ca {
                let pem = std::fs::read(ca).unwrap();
                b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
            }
            b.build()
                .unwrap()
                .get(format!("{}/_sim/stats", self.url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    }
}

impl Drop for BoshSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
