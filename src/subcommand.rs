//! The binaries' admin subcommands (`checksite-producer targets …`, `checksite-consumer
//! maintenance …`): parse the arguments, run once on a small runtime, print the answer, and
//! exit 0 (done), 1 (a service could not be used) or [`EXIT_CONFIG`] (bad input). It owns
//! that contract, never what a subcommand does.

use std::fmt::Display;
use std::process::ExitCode;

use crate::EXIT_CONFIG;

/// Run `program command ARGS…` (`args` after the command's name): `run` does the work;
/// `bad_input` says which of its errors are the user's to fix (exit 2, else 1).
pub fn run<A, E, F>(
    program: &str,
    command: &str,
    args: &[String],
    run: impl FnOnce(A) -> F,
    bad_input: impl Fn(&E) -> bool,
) -> ExitCode
where
    A: argh::FromArgs,
    E: Display,
    F: Future<Output = Result<String, E>>,
{
    let rest: Vec<&str> = args.iter().map(String::as_str).collect();
    let name = format!("{program} {command}");
    let parsed = match A::from_args(&[&name], &rest) {
        Ok(a) => a,
        Err(early) if early.status.is_ok() => {
            println!("{}", early.output); // --help
            return ExitCode::SUCCESS;
        }
        Err(early) => {
            eprintln!("{}", early.output);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    crate::logging::init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(parsed)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: {e}");
            if bad_input(&e) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
