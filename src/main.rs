//! The `anvil` binary: all work happens in the library; this maps the outcome to an
//! exit code.

/// Plans of 100,000 resources allocate millions of small values; mimalloc keeps that
/// cheap (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Like other Unix tools (and Terraform), end quietly when the reader of stdout goes
    // away (`anvil plan | head`) instead of failing on every later write.
    // SAFETY: called before any thread starts; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match anvil::cli::run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // One `Error:` per problem, as spec errors come several at a time.
            for line in anvil::cli::describe_error(&e).lines() {
                eprintln!("Error: {line}");
            }
            std::process::exit(1);
        }
    }
}
