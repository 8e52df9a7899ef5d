//! The `anvil` binary: all work happens in the library; this maps the outcome to an
//! exit code.

fn main() {
    match anvil::cli::run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("Error: {}", anvil::cli::describe_error(&e));
            std::process::exit(1);
        }
    }
}
