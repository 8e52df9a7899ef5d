//! A real `anvil sim bosh` for black-box tests: started on 127.0.0.1:0, asked through
//! anvil's own Director client, faults set through `/_sim/faults`; killed when dropped.
#![allow(dead_code)]

use anvil::providers::bosh::client::{Client, Config};
use serde_json::Value;
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

/// Changes behind anvil's back, through the Director API with basic auth admin/admin.
impl BoshSim {
    /// One request to the Director API, redirects not followed: (status, Location, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        yaml: Option<&str>,
    ) -> (u16, Option<String>, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let mut req = client
                .request(method.parse().unwrap(), format!("{}{path}", self.url))
                .basic_auth("admin", Some("admin"));
            if let Some(y) = yaml {
                req = req.header("Content-Type", "text/yaml").body(y.to_string());
            }
            let resp = req.send().await.expect("Director request");
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (status, location, resp.text().await.unwrap_or_default())
        })
    }

    /// Follows a task to its end (a hang guard, not a timing assertion).
    pub fn wait_task(&self, location: &str) {
        for _ in 0..3000 {
            let (status, _, body) = self.http("GET", location, None);
            assert_eq!(status, 200, "{body}");
            let task: Value = serde_json::from_str(&body).unwrap();
            match task["state"].as_str() {
                Some("done") => return,
                Some("queued" | "processing") => std::thread::sleep(Duration::from_millis(10)),
                other => panic!("task {location} ended {other:?}: {body}"),
            }
        }
        panic!("task {location} did not finish");
    }

    /// `DELETE /deployments/NAME?force=true`, behind anvil's back.
    pub fn delete(&self, name: &str) {
        let (status, location, body) =
            self.http("DELETE", &format!("/deployments/{name}?force=true"), None);
        assert_eq!(status, 302, "{body}");
        self.wait_task(&location.unwrap());
    }

    /// `POST /deployments` with a manifest (that names its deployment), behind anvil's back.
    pub fn deploy(&self, manifest: &str) {
        let (status, location, body) = self.http("POST", "/deployments", Some(manifest));
        assert_eq!(status, 302, "{body}");
        self.wait_task(&location.unwrap());
    }

    /// `POST PATH` with a JSON body (e.g. `/configs`), behind anvil's back.
    pub fn post_json(&self, path: &str, body: &Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let status = rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{}{path}", self.url))
                .basic_auth("admin", Some("admin"))
                .json(body)
                .send()
                .await
                .expect("Director request")
                .status()
        });
        assert!(status.is_success(), "{status}");
    }
}

impl Drop for BoshSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
