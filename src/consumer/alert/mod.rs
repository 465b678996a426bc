//! Alerting: a URL going down, coming back, or its certificate about to expire is
//! decided once (`decide`, in the writer's transaction, with the event that decides it)
//! and delivered at least once to each receiver that wants it (`receivers`: routing;
//! `format`: each service's body; `sender`: from the outbox, a task and a connection per
//! receiver; `webhook` and `smtp`: one delivery).
//!
//! This module owns the rules ([`AlertRules`]), the payload ([`Notification`]) and the
//! delivery. It must never make the writer wait on a receiver: the writer only adds rows
//! to the outbox; a slow or absent receiver delays notifications, never events.

pub(crate) mod decide;
pub(crate) mod format;
pub mod receivers;
pub(crate) mod sender;
pub(crate) mod smtp;
pub(crate) mod webhook;

use std::time::Duration;

pub use decide::{AlertKind, AlertRules, Notification};
pub use format::Format;
pub use receivers::Receiver;

use crate::settings::{ConfigError, Settings, err};

/// Alerting's settings; present when `CK_ALERT_RECEIVERS` or `CK_ALERT_WEBHOOK_URL` is set.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// When to decide.
    pub rules: AlertRules,
    /// Where to deliver, each with its routing (a notification goes to every receiver
    /// that wants it, independently).
    pub receivers: Vec<Receiver>,
    /// A notification not delivered this long after its decision is given up (logged and
    /// marked): `CK_ALERT_GIVE_UP_HOURS`.
    pub give_up_after: Duration,
}

impl AlertConfig {
    /// Alerting's settings, or None when no receiver is set.
    pub fn from_settings(s: &Settings) -> Result<Option<AlertConfig>, ConfigError> {
        let receivers = receivers::from_settings(s)?;
        if receivers.is_empty() {
            return Ok(None);
        }
        let rules = AlertRules {
            quorum: s.parse("CK_ALERT_QUORUM", 1, "a count of vantage points, 1 or more")?,
            after: s.parse("CK_ALERT_AFTER", 3, "a count of checks, 1 or more")?,
            recover_after: s.parse("CK_ALERT_RECOVER_AFTER", 2, "a count of checks, 1 or more")?,
            cert_days: s.parse("CK_ALERT_CERT_DAYS", 14, "a number of days")?,
            stale_after_s: stale_after_s(s)?,
        };
        for (var, value) in [
            ("CK_ALERT_QUORUM", rules.quorum as u64),
            ("CK_ALERT_AFTER", u64::from(rules.after)),
            ("CK_ALERT_RECOVER_AFTER", u64::from(rules.recover_after)),
        ] {
            if !(1..=1000).contains(&value) {
                return err(format!("{var}={value} is out of range: give 1 to 1000"));
            }
        }
        let hours: u64 = s.parse("CK_ALERT_GIVE_UP_HOURS", 24, "a number of hours")?;
        if hours == 0 {
            return err("CK_ALERT_GIVE_UP_HOURS=0: give 1 or more hours");
        }
        Ok(Some(AlertConfig {
            rules,
            receivers,
            give_up_after: Duration::from_secs(hours * 3600),
        }))
    }
}

/// `CK_ALERT_STALE_AFTER` (seconds, default 600): a vantage point whose newest check is
/// this much older than another's stops counting; on the status page, a series whose
/// newest check is this old is shown stale. Read whether alerting is on or not.
pub fn stale_after_s(s: &Settings) -> Result<i64, ConfigError> {
    let seconds: i64 = s.parse("CK_ALERT_STALE_AFTER", 600, "a number of seconds")?;
    if !(1..=30 * 86_400).contains(&seconds) {
        return err(format!(
            "CK_ALERT_STALE_AFTER={seconds} is out of range: give 1 to 2592000 seconds (30 days)"
        ));
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        Settings::new(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn no_webhook_no_alerting_and_bad_values_say_what_to_fix() {
        assert!(
            AlertConfig::from_settings(&settings(&[]))
                .unwrap()
                .is_none()
        );
        let ok = AlertConfig::from_settings(&settings(&[(
            "CK_ALERT_WEBHOOK_URL",
            "https://hooks.example/T1/secret-token",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(ok.rules, AlertRules::default());
        assert_eq!(ok.give_up_after, Duration::from_secs(24 * 3600));
        let cases = [
            (("CK_ALERT_WEBHOOK_URL", "ftp://x/"), "http:// or https://"),
            (
                ("CK_ALERT_QUORUM", "0"),
                "CK_ALERT_QUORUM=0 is out of range",
            ),
            (
                ("CK_ALERT_AFTER", "many"),
                "CK_ALERT_AFTER=\"many\" is not valid",
            ),
            (("CK_ALERT_FORMAT", "teams"), "give one of json, slack"),
            (
                ("CK_ALERT_STALE_AFTER", "0"),
                "CK_ALERT_STALE_AFTER=0 is out of range",
            ),
            (("CK_ALERT_CA", "/nonexistent/ca.pem"), "CK_ALERT_CA"),
        ];
        for ((var, value), expected) in cases {
            let mut vars = vec![(
                "CK_ALERT_WEBHOOK_URL",
                "https://hooks.example/T1/secret-token",
            )];
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let e = AlertConfig::from_settings(&settings(&vars)).unwrap_err();
            assert!(e.0.contains(expected), "{var}={value}: {e}");
            assert!(!e.0.contains("secret-token"), "{e}");
        }
    }
}
