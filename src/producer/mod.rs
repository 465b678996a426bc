//! checksite-producer: check each target on its schedule and publish one event per check.
//!
//! [`config`] turns settings into targets; [`schedule`] runs the checks ([`probe`]) on a
//! fixed rate; [`outbox`] buffers the events and publishes them to Kafka; [`run`] wires
//! these together until shutdown, and [`check_once`] is `--once`.

pub(crate) mod cert_expiry;
pub mod config;
pub mod outbox;
pub mod probe;
pub mod schedule;
