//! The throwaway PostgreSQL harness (`tests/pg_support`) works: a cluster starts, accepts
//! the trusted superuser, checks other roles' passwords, enforces "may not create
//! tables", and leaves no server process or directory behind when dropped.

mod pg_support;
use pg_support::PgCluster;

#[test]
fn cluster_starts_answers_and_is_gone_after_drop() {
    let pg = PgCluster::start();
    assert_eq!(pg.psql("postgres", "SELECT 40 + 2").trim(), "42");
    pg.create_db("anvil_test");
    pg.psql(
        "anvil_test",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (7)",
    );
    assert_eq!(pg.psql("anvil_test", "SELECT x FROM t").trim(), "7");
    assert!(pg
        .url("anvil_test")
        .starts_with("postgres://postgres@127.0.0.1:"));
    assert!(pg.url("anvil_test").ends_with("/anvil_test"));

    let pid = pg.pid().expect("running");
    let root = pg.socket_dir().to_path_buf();
    let port = pg.port;
    drop(pg);
    // SAFETY: kill(pid, 0) only probes for existence.
    let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    assert!(!alive, "postmaster {pid} still running after drop");
    assert!(!root.exists(), "{} left behind", root.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections"
    );
}

#[test]
fn roles_need_their_password_and_may_be_denied_create() {
    let pg = PgCluster::start();
    pg.create_db("app");
    pg.create_role("writer", "s3cret", true);
    pg.create_role("reader", "r3ad", false);

    let ok = pg.try_psql_as("writer", "s3cret", "app", "CREATE TABLE w (x int)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let bad = pg.try_psql_as("writer", "wrong", "app", "SELECT 1");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let connects = pg.try_psql_as("reader", "r3ad", "app", "SELECT 1");
    assert!(
        connects.status.success(),
        "{}",
        String::from_utf8_lossy(&connects.stderr)
    );
    let denied = pg.try_psql_as("reader", "r3ad", "app", "CREATE TABLE r (x int)");
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
}

#[test]
fn shared_cluster_is_one_per_binary() {
    let a = PgCluster::shared();
    let b = PgCluster::shared();
    assert_eq!(a.port, b.port);
    assert_eq!(a.psql("postgres", "SELECT 1").trim(), "1");
}
