//! checksite-producer: wiring only. Reads the configuration, then either checks every
//! target once and prints the events (`--once`), or checks on schedule and publishes.

use std::process::ExitCode;

use checksite::observe::HttpListener;
use checksite::producer;
use checksite::producer::config::{ProducerArgs, ProducerConfig};
use checksite::producer::probe::Probe;
use checksite::producer::spool::Spool;
use checksite::producer::targets::cli::{TargetsArgs, TargetsError};
use checksite::settings::Settings;
use checksite::shutdown::Shutdown;
use checksite::{EXIT_CONFIG, logging, subcommand};

// musl's allocator hands freed memory back to the kernel eagerly: at thousands of checks a
// second its mmap/munmap pairs (and the TLB shootdowns they cost a threaded process) were
// the largest part of the producer's CPU. dlmalloc keeps it (pure Rust, as the consumer).
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("targets") {
        return targets(&argv);
    }
    let args: ProducerArgs = argh::from_env();
    if args.version {
        println!("checksite-producer {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    logging::init();
    let once = args.once;
    let settings = args.into_settings(Settings::from_process_env());
    let config = match ProducerConfig::from_settings(&settings, once) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let probe = match Probe::new(config.probe.clone(), config.producer_id.clone()) {
        Ok(p) => p,
        Err(e) => return config_error(&e),
    };
    // Bound before anything starts: a busy address is a configuration error.
    let web = config.http_config.clone();
    let http = match config
        .http_addr
        .map(|addr| HttpListener::bind(addr).map(|l| l.with(web)))
        .transpose()
    {
        Ok(h) => h,
        Err(e) => return config_error(&e),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("checksite-producer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if once {
        runtime.block_on(check_once(config, probe))
    } else {
        runtime.block_on(run(config, probe, http))
    }
}

/// `checksite-producer targets ...`: exit 0 done, 1 Kafka could not be used, 2 bad input.
fn targets(argv: &[String]) -> ExitCode {
    subcommand::run(
        "checksite-producer",
        "targets",
        &argv[2..],
        |args: TargetsArgs| args.run(Settings::from_process_env()),
        |e| matches!(e, TargetsError::Invalid(_)),
    )
}

fn config_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("checksite-producer: {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// `--once`: one JSON line per target, in target order; exit 0 if all are up, 1 if not.
async fn check_once(config: ProducerConfig, probe: Probe) -> ExitCode {
    let mut all_up = true;
    for checked in producer::check_once(config, probe).await {
        match checked {
            Some((ev, up)) => {
                all_up &= up;
                println!("{}", String::from_utf8_lossy(&ev.to_json()));
            }
            None => all_up = false,
        }
    }
    if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn run(config: ProducerConfig, probe: Probe, http: Option<HttpListener>) -> ExitCode {
    let Some(publish) = config.publish.clone() else {
        return ExitCode::FAILURE;
    };
    // Taken before anything starts: a spool another producer holds is a configuration error.
    let spool = match publish.spool.clone().map(Spool::open).transpose() {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    producer::run(config, publish, probe, Shutdown::on_signals(), http, spool).await;
    ExitCode::SUCCESS
}
