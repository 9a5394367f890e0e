//! The `alexnet` command line; see `alexnet::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match alexnet::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A user's error is its chain of causes, never a backtrace (anyhow's `Debug` would
            // print one whenever RUST_BACKTRACE is set): backtraces are for panics.
            eprintln!("{}", alexnet::cli::error_report(&e));
            ExitCode::FAILURE
        }
    }
}
