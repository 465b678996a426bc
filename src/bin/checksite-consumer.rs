//! checksite-consumer: wiring only. Reads the configuration and runs the consuming loop.

use std::process::ExitCode;

use checksite::consumer::config::{ConsumerArgs, ConsumerConfig};
use checksite::consumer::consume;
use checksite::consumer::maintenance::cli::{MaintenanceArgs, MaintenanceError};
use checksite::settings::Settings;
use checksite::shutdown::Shutdown;
use checksite::{EXIT_CONFIG, logging, subcommand};

#[global_allocator]
static ALLOCATOR: checksite::memory::CachingDlmalloc = checksite::memory::CachingDlmalloc;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("maintenance") {
        return maintenance(&argv);
    }
    let args: ConsumerArgs = argh::from_env();
    if args.version {
        println!("checksite-consumer {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    logging::init();
    let drain = args.drain;
    let settings = args.into_settings(Settings::from_process_env());
    let config = match ConsumerConfig::from_settings(&settings, drain) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("checksite-consumer: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Bound before anything starts: a busy address is a configuration error.
    let http = match config.listeners() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("checksite-consumer: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("checksite-consumer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _blocks = checksite::memory::ThreadBlockCache::start();
    runtime.block_on(async {
        match consume::run(config, Shutdown::on_signals(), http).await {
            Ok(summary) => {
                if drain {
                    println!(
                        "{} event(s) written, {} already stored, {} rejected",
                        summary.written, summary.already_stored, summary.rejected
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("checksite-consumer: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `checksite-consumer maintenance ...`: exit 0 done, 1 PostgreSQL could not be used, 2 bad input.
fn maintenance(argv: &[String]) -> ExitCode {
    subcommand::run(
        "checksite-consumer",
        "maintenance",
        &argv[2..],
        |args: MaintenanceArgs| args.run(Settings::from_process_env()),
        |e| matches!(e, MaintenanceError::Invalid(_)),
    )
}
