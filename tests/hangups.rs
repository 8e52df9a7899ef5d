//! Peers that hang up: a client resetting a TLS connection must not take a server
//! down (hyper and rustls write with `writev`, which raises SIGPIPE when the default
//! action is set), and a reader of stdout going away ends anvil quietly, the Unix way.

mod common;

use common::{Scratch, BIN};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;

#[path = "sim_bosh_support/mod.rs"]
mod sim_bosh_support;
use sim_bosh_support::BoshSim;

/// One TLS request to `url`, trusting the CA PEM in `ca`; with `reset`, the socket is
/// closed with SO_LINGER 0 (an RST) right after the response is read, so the server's
/// next write (its close_notify) meets a reset peer.
fn tls_get_info(url: &str, ca: &str, reset: bool) -> std::io::Result<String> {
    let addr = url.trim_start_matches("https://");
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca)?;
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).map_err(std::io::Error::other)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let ip: std::net::IpAddr = addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(addr)
        .parse()
        .map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(Arc::new(config), ip.into())
        .map_err(std::io::Error::other)?;
    let sock = std::net::TcpStream::connect(addr)?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /info HTTP/1.1\r\nHost: director\r\n\r\n")?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = tls.read(&mut buf)?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    if reset {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket this function owns, with a correctly sized
        // `linger` value.
        let rc = unsafe {
            libc::setsockopt(
                tls.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::from_ref(&linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt SO_LINGER");
    }
    Ok(text)
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("CA PEM parses")
}

#[test]
fn tls_simulator_survives_clients_that_reset_the_connection() {
    let s = Scratch::new();
    let ca = s.path().join("ca.pem");
    let sim = BoshSim::start(&[], Some(&ca));
    let ca = ca.to_string_lossy().to_string();
    for i in 0..20 {
        let got = tls_get_info(&sim.url, &ca, true)
            .unwrap_or_else(|e| panic!("request {i} to {} failed: {e}", sim.url));
        assert!(got.starts_with("HTTP/1.1 200"), "request {i}: {got}");
    }
    // Still serving after twenty hang-ups.
    let got = tls_get_info(&sim.url, &ca, false).expect("the simulator is still up");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

/// Runs anvil with its stdout a pipe whose read end is already closed.
fn run_with_closed_stdout(s: &Scratch, args: &[&str]) -> std::process::Output {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fds, which are wrapped in OwnedFd at once.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both fds were just returned by pipe(2) and are owned here only.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Command::new(BIN)
        .args(args)
        .current_dir(s.path())
        .env_remove("ANVIL_STATE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .expect("run anvil")
}

#[test]
fn a_closed_stdout_ends_anvil_quietly_by_sigpipe() {
    let s = Scratch::new();
    let mut spec = String::from(
        "apiVersion: anvil/v1\nkind: Resources\nmetadata:\n  name: pipe\nresources:\n",
    );
    for i in 0..200 {
        spec.push_str(&format!(
            "  - type: null_resource\n    name: r{i}\n    attributes:\n      triggers:\n        n: \"{i}\"\n"
        ));
    }
    s.write("spec.yaml", &spec);
    for args in [
        &["schema", "foundation"][..],
        &["plan", "spec.yaml"][..],
        &["validate", "spec.yaml"][..],
    ] {
        let o = run_with_closed_stdout(&s, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGPIPE),
            "anvil {args:?}: {:?}\n{err}",
            o.status
        );
        assert!(
            err.trim().is_empty(),
            "anvil {args:?} wrote to stderr:\n{err}"
        );
    }
}
