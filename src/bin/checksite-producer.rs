//! checksite-producer: wiring only. Reads the configuration, then either checks every
//! target once and prints the events (`--once`), or checks on schedule and publishes.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use checksite::producer::config::{ProducerArgs, ProducerConfig};
use checksite::producer::outbox::{self, Outbox};
use checksite::producer::probe::{self, Probe};
use checksite::producer::schedule;
use checksite::settings::Settings;
use checksite::shutdown::Shutdown;
use checksite::{EXIT_CONFIG, logging};

/// How long running checks may take after SIGINT/SIGTERM, and then the final flush.
const GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.concurrency + 4)
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
        runtime.block_on(run(config, probe))
    }
}

fn config_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("checksite-producer: {e}");
    ExitCode::from(EXIT_CONFIG)
}

/// `--once`: every target checked once, concurrently; one JSON line each, in target order.
async fn check_once(config: ProducerConfig, probe: Probe) -> ExitCode {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(config.concurrency));
    let mut checks = Vec::new();
    for target in config.targets {
        let (probe, permits) = (probe.clone(), permits.clone());
        checks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            tokio::task::spawn_blocking(move || {
                let ev = probe.check(&target, 0);
                let up = probe::is_up(&target, &ev);
                (ev, up)
            })
            .await
        }));
    }
    let mut all_up = true;
    for check in checks {
        match check.await {
            Ok(Ok((ev, up))) => {
                all_up &= up;
                println!("{}", String::from_utf8_lossy(&ev.to_json()));
            }
            _ => all_up = false,
        }
    }
    if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn run(config: ProducerConfig, probe: Probe) -> ExitCode {
    let Some(publish) = config.publish.clone() else {
        return ExitCode::FAILURE;
    };
    log::info!(
        "checking {} target(s), publishing to topic {:?} at {}",
        config.targets.len(),
        publish.kafka.topic,
        publish.kafka.servers.join(",")
    );
    let shutdown = Shutdown::on_signals();
    let outbox = Outbox::new(publish.buffer_events);
    let publisher = tokio::spawn(outbox::publish(outbox.clone(), publish, GRACE));
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let feeder = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                outbox.push(ev);
            }
        })
    };
    let running = Arc::new(AtomicU64::new(0));
    let mut stop = shutdown.clone();
    let mut checking = Box::pin(schedule::run(
        config.targets,
        probe,
        config.concurrency,
        tx,
        running.clone(),
        shutdown,
    ));
    tokio::select! {
        _ = &mut checking => {}
        _ = stop.requested() => {
            // Running checks may finish (each is bounded by its own timeout), up to GRACE.
            if tokio::time::timeout(GRACE, &mut checking).await.is_err() {
                log::warn!("checks still running after {} s: not waiting for them", GRACE.as_secs());
            }
        }
    }
    // Ends the target loops still waiting on a check, and with them the event channel.
    drop(checking);
    let _ = feeder.await;
    outbox.abandoned(running.load(Ordering::SeqCst));
    outbox.close();
    let _ = publisher.await;
    log::info!(
        "stopped: {} event(s) published, {} dropped",
        outbox.published(),
        outbox.dropped()
    );
    ExitCode::SUCCESS
}
