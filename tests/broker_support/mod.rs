//! A real `anvil broker` for black-box tests: started on 127.0.0.1:0 in a scratch
//! directory with the Foundation in `fnd/`, pointed at the simulators, basic auth from
//! the environment; killed when dropped.
#![allow(dead_code)]

use crate::common::{at_simulators, Scratch};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

/// A running `anvil broker`; killed when dropped.
pub struct Broker {
    child: Child,
    pub url: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the broker's peers are and who may call it.
pub struct Peers<'a> {
    pub bosh_url: &'a str,
    pub vault_url: &'a str,
    pub vault_token: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

/// `anvil broker --foundation fnd --listen 127.0.0.1:0 <extra...>`, waiting (up to 60 s)
/// for its `anvil broker listening on URL` line.
pub fn start(s: &Scratch, peers: &Peers<'_>, extra: &[&str]) -> Broker {
    let mut args = vec!["broker", "--foundation", "fnd", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut cmd = s.cmd(&args);
    at_simulators(&mut cmd, peers.bosh_url, peers.vault_url, peers.vault_token)
        .env_remove("CF_API")
        .env("ANVIL_BROKER_USERNAME", peers.user)
        .env("ANVIL_BROKER_PASSWORD", peers.password)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("start anvil broker");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
        for _ in lines {}
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    let Some(url) = line.strip_prefix("anvil broker listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("unexpected first line of anvil broker: {line:?}");
    };
    Broker {
        url: url.to_string(),
        child,
    }
}
