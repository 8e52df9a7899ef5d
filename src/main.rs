//! The `anvil` binary: all work happens in the library; this maps the outcome to an
//! exit code.

/// Plans of 100,000 resources allocate millions of small values; mimalloc keeps that
/// cheap (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // SIGPIPE stays ignored (Rust's default): with the default action, a write to a
    // socket the peer has closed (hyper and rustls write with `writev`, which has no
    // MSG_NOSIGNAL) kills the whole process, so a simulator, broker or server died
    // when a client hung up mid-response. Only a closed stdout ends anvil the Unix way
    // (`anvil plan | head`), as Go programs such as Terraform do: see `stdout_gone`.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.to_string();
        if msg.contains("failed printing to stdout") && is_broken_pipe_text(&msg) {
            stdout_gone();
        }
        default_hook(info);
    }));
    match anvil::cli::run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                stdout_gone();
            }
            // One `Error:` per problem, as spec errors come several at a time.
            for line in anvil::cli::describe_error(&e).lines() {
                eprintln!("Error: {line}");
            }
            std::process::exit(1);
        }
    }
}

fn is_broken_pipe_text(msg: &str) -> bool {
    msg.contains("Broken pipe") || msg.contains("os error 32")
}

/// The reader of stdout went away: end quietly, killed by SIGPIPE like other Unix
/// tools, so the shell sees status 141 and prints nothing.
fn stdout_gone() -> ! {
    // SAFETY: restoring the default disposition and raising a signal at ourselves;
    // no memory is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}
