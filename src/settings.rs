//! Where settings come from: `CK_*` environment variables (the Python checksite's names)
//! and command-line flags, which override them ([`Settings`]); and [`ConfigError`], the
//! one-line message a setting that cannot be used produces.
//!
//! This module owns only the reading of raw values. The rules of each program's settings
//! live with the program ([`crate::producer::config`], [`crate::consumer::config`]) and
//! Kafka's with Kafka ([`crate::kafka::settings`]). It never connects to anything.

use std::collections::HashMap;

/// A setting that cannot be used: the message says which and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Where settings come from: flags first, then the environment. Empty values count as unset.
pub struct Settings {
    flags: HashMap<&'static str, String>,
    env: HashMap<String, String>,
}

impl Settings {
    /// Settings from these environment variables, with no flags yet.
    pub fn new(env: impl IntoIterator<Item = (String, String)>) -> Settings {
        Settings {
            flags: HashMap::new(),
            env: env.into_iter().collect(),
        }
    }

    /// Settings from the process's environment.
    pub fn from_process_env() -> Settings {
        Settings::new(std::env::vars())
    }

    /// A flag's value, recorded under the name of the variable it overrides.
    pub fn flag(&mut self, var: &'static str, value: Option<impl ToString>) {
        if let Some(v) = value {
            self.flags.insert(var, v.to_string());
        }
    }

    /// A setting's value, the flag first; empty or blank counts as unset.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.flags
            .get(var)
            .or_else(|| self.env.get(var))
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    pub(crate) fn parse<T: std::str::FromStr>(
        &self,
        var: &str,
        default: T,
        what: &str,
    ) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .or_else(|_| err(format!("{var}={raw:?} is not valid: expected {what}"))),
        }
    }
}
