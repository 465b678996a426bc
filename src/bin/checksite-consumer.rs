//! checksite-consumer: wiring only (the consuming loop lands with the consumer issue).

use std::process::ExitCode;

use checksite::config::{ConsumerArgs, ConsumerConfig, Settings};

fn main() -> ExitCode {
    let args: ConsumerArgs = argh::from_env();
    if args.version {
        println!("checksite-consumer {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    checksite::logging::init();
    let drain = args.drain;
    let settings = args.into_settings(Settings::from_process_env());
    if let Err(e) = ConsumerConfig::from_settings(&settings, drain) {
        eprintln!("checksite-consumer: {e}");
        return ExitCode::from(checksite::EXIT_CONFIG as u8);
    }
    eprintln!("checksite-consumer: consuming is not built yet");
    ExitCode::FAILURE
}
