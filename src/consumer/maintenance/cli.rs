//! `checksite-consumer maintenance add|list|end`: maintenance windows, kept in the
//! consumer's database (`CK_POSTGRESQL_URL`), in force on every consumer within 5 s.

use argh::FromArgs;
use chrono::{DateTime, TimeDelta, Utc};

use crate::consumer::store::{self, MaintenanceWindow, PostgresSettings, StoreError};
use crate::secret::Secret;
use crate::settings::{ConfigError, Settings, err};

/// `checksite-consumer maintenance`.
#[derive(FromArgs, Debug)]
#[argh(
    description = "Maintenance windows: checks made in one notify nothing and count apart \
(kept in CK_POSTGRESQL_URL's database; every consumer applies them within 5 s)."
)]
pub struct MaintenanceArgs {
    /// postgres:// URL (CK_POSTGRESQL_URL)
    #[argh(option)]
    pub postgresql_url: Option<Secret>,
    /// what to do
    #[argh(subcommand)]
    pub command: MaintenanceCommand,
}

/// What `maintenance` does.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum MaintenanceCommand {
    /// Declare a window.
    Add(AddArgs),
    /// Print the windows going on and to come.
    List(ListArgs),
    /// End a window now.
    End(EndArgs),
}

/// `maintenance add`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "add", description = "declare a maintenance window")]
pub struct AddArgs {
    /// a URL in the window, as checked (may repeat)
    #[argh(option)]
    pub url: Vec<String>,
    /// the URLs matching this regular expression (PostgreSQL's syntax)
    #[argh(option, long = "match")]
    pub matches: Option<String>,
    /// every URL
    #[argh(switch)]
    pub all: bool,
    /// start: RFC 3339 (2026-12-01T02:00:00Z) or now
    #[argh(option)]
    pub from: Option<String>,
    /// end: RFC 3339 or now
    #[argh(option)]
    pub until: Option<String>,
    /// length, from --from (default now): 30m, 2h, 90s, 1d
    #[argh(option, long = "for")]
    pub duration: Option<String>,
    /// why (shown on the status page)
    #[argh(option)]
    pub reason: String,
}

/// `maintenance list`.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "list",
    description = "print the windows going on and to come"
)]
pub struct ListArgs {}

/// `maintenance end ID`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "end", description = "end a window now")]
pub struct EndArgs {
    /// the window's id (see list)
    #[argh(positional)]
    pub id: i64,
}

/// Why a `maintenance` command failed: bad input (exit 2) or PostgreSQL (exit 1).
#[derive(Debug)]
pub enum MaintenanceError {
    /// An argument or setting is invalid; nothing was written.
    Invalid(ConfigError),
    /// PostgreSQL could not be used.
    Store(StoreError),
}

impl std::fmt::Display for MaintenanceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaintenanceError::Invalid(e) => e.fmt(f),
            MaintenanceError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for MaintenanceError {}

impl From<ConfigError> for MaintenanceError {
    fn from(e: ConfigError) -> MaintenanceError {
        MaintenanceError::Invalid(e)
    }
}

impl From<StoreError> for MaintenanceError {
    fn from(e: StoreError) -> MaintenanceError {
        match e {
            // A pattern PostgreSQL cannot read is the user's to fix.
            StoreError::Url(m) => MaintenanceError::Invalid(ConfigError(m)),
            other => MaintenanceError::Store(other),
        }
    }
}

impl MaintenanceArgs {
    /// Run the command over `settings`; what to print on success.
    pub async fn run(self, mut settings: Settings) -> Result<String, MaintenanceError> {
        settings.flag(
            "CK_POSTGRESQL_URL",
            self.postgresql_url.as_ref().map(Secret::expose),
        );
        let Some(url) = settings.get("CK_POSTGRESQL_URL") else {
            return Err(ConfigError(
                "CK_POSTGRESQL_URL is not set: give the consumer's database".into(),
            )
            .into());
        };
        let postgres = PostgresSettings::parse(url)
            .map_err(|e| ConfigError(format!("CK_POSTGRESQL_URL: {e}")))?;
        let window = match &self.command {
            MaintenanceCommand::Add(add) => Some(window_of(add, Utc::now())?),
            _ => None,
        };
        let mut db = postgres.connect(std::time::Duration::from_secs(10)).await?;
        let done = self.apply(&mut db, window).await;
        drop(db);
        store::connections_closed().await;
        done
    }

    /// Carry out the command on `db`, migrated first (`window`: the one `add` asks for).
    async fn apply(
        self,
        db: &mut tokio_postgres::Client,
        window: Option<MaintenanceWindow>,
    ) -> Result<String, MaintenanceError> {
        store::migrate(db).await?;
        let db = &*db;
        match self.command {
            MaintenanceCommand::Add(_) => {
                let Some(w) = window else {
                    return Ok(String::new());
                };
                let id = store::add_window(db, &w).await?;
                Ok(format!(
                    "maintenance window {id}: {} to {}, {}: {}\n",
                    time(&w.starts_at),
                    time(&w.ends_at),
                    what(&w),
                    w.reason
                ))
            }
            MaintenanceCommand::List(_) => {
                let windows = store::windows_after(db, Utc::now()).await?;
                Ok(list(&windows, Utc::now()))
            }
            MaintenanceCommand::End(end) => {
                if store::end_window(db, end.id).await? {
                    Ok(format!("maintenance window {} ended\n", end.id))
                } else {
                    Err(ConfigError(format!(
                        "no maintenance window {} going on or to come (see `maintenance list`)",
                        end.id
                    ))
                    .into())
                }
            }
        }
    }
}

/// The window `add` asks for, its times read against `now`.
fn window_of(add: &AddArgs, now: DateTime<Utc>) -> Result<MaintenanceWindow, ConfigError> {
    let chosen = [!add.url.is_empty(), add.matches.is_some(), add.all];
    if chosen.iter().filter(|c| **c).count() != 1 {
        return err("say which URLs: --url URL (repeatable), --match REGEX or --all (one of them)");
    }
    for url in &add.url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return err(format!(
                "--url {url:?}: give the URL as checked (http:// or https://)"
            ));
        }
    }
    let starts_at = match &add.from {
        Some(t) => when("--from", t, now)?,
        None => now,
    };
    let ends_at = match (&add.until, &add.duration) {
        (Some(t), None) => when("--until", t, now)?,
        (None, Some(d)) => starts_at + duration(d)?,
        _ => return err("say until when: --until TIME or --for DURATION (one of them)"),
    };
    if ends_at <= starts_at {
        return err("the window ends before it starts: give --until after --from");
    }
    if ends_at <= now {
        return err("the window is over already: give an end in the future");
    }
    if add.reason.trim().is_empty() {
        return err("--reason: say why (it is shown on the status page)");
    }
    Ok(MaintenanceWindow {
        id: 0,
        every_url: add.all,
        urls: add.url.clone(),
        pattern: add.matches.clone(),
        starts_at,
        ends_at,
        reason: add.reason.trim().to_string(),
    })
}

/// `now` or RFC 3339.
fn when(flag: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ConfigError> {
    if text == "now" {
        return Ok(now);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|_| {
            ConfigError(format!(
                "{flag} {text:?}: give now or an RFC 3339 time, e.g. 2026-12-01T02:00:00Z"
            ))
        })
}

/// `90s`, `30m`, `2h`, `1d`.
fn duration(text: &str) -> Result<TimeDelta, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "--for {text:?}: give a length like 90s, 30m, 2h or 1d"
        ))
    };
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    if !(1..=366 * 86_400).contains(&seconds) {
        return Err(bad());
    }
    Ok(TimeDelta::seconds(seconds))
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn what(w: &MaintenanceWindow) -> String {
    match (&w.pattern, w.every_url) {
        (_, true) => "every URL".into(),
        (Some(p), _) => format!("URLs matching {p:?}"),
        (None, false) => w.urls.join(" "),
    }
}

/// The windows as a table: id, state, from, until, what, reason.
fn list(windows: &[MaintenanceWindow], now: DateTime<Utc>) -> String {
    if windows.is_empty() {
        return "no maintenance window going on or to come\n".into();
    }
    let mut out = String::from("id\tstate\tfrom\tuntil\twhat\treason\n");
    for w in windows {
        let state = if w.covers(now) { "now" } else { "upcoming" };
        out.push_str(&format!(
            "{}\t{state}\t{}\t{}\t{}\t{}\n",
            w.id,
            time(&w.starts_at),
            time(&w.ends_at),
            what(w),
            w.reason
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(args: &[&str]) -> Result<MaintenanceWindow, ConfigError> {
        let parsed = AddArgs::from_args(&["add"], args).map_err(|e| ConfigError(e.output))?;
        window_of(&parsed, "2026-12-01T01:00:00Z".parse().unwrap())
    }

    #[test]
    fn windows_from_the_command_line() {
        let w = add(&[
            "--url",
            "https://a.example/",
            "--for",
            "30m",
            "--reason",
            "upgrade",
        ])
        .unwrap();
        assert_eq!(
            (time(&w.starts_at), time(&w.ends_at)),
            ("2026-12-01T01:00:00Z".into(), "2026-12-01T01:30:00Z".into())
        );
        let w = add(&[
            "--all",
            "--from",
            "2026-12-01T02:00:00Z",
            "--until",
            "2026-12-01T02:30:00+00:00",
            "--reason",
            "db",
        ])
        .unwrap();
        assert!(w.every_url);
        assert_eq!(w.ends_at - w.starts_at, TimeDelta::minutes(30));
        for (args, says) in [
            (&["--for", "1h", "--reason", "x"][..], "say which URLs"),
            (
                &["--all", "--match", "x", "--for", "1h", "--reason", "x"],
                "say which URLs",
            ),
            (&["--all", "--reason", "x"], "say until when"),
            (
                &["--all", "--for", "soon", "--reason", "x"],
                "give a length like",
            ),
            (
                &[
                    "--all", "--from", "tomorrow", "--for", "1h", "--reason", "x",
                ],
                "give now or an RFC 3339",
            ),
            (
                &["--all", "--until", "2026-12-01T00:00:00Z", "--reason", "x"],
                "ends before it starts",
            ),
            (&["--all", "--for", "1h", "--reason", " "], "say why"),
            (
                &["--url", "shop.example", "--for", "1h", "--reason", "x"],
                "as checked",
            ),
        ] {
            let e = add(args).unwrap_err();
            assert!(e.0.contains(says), "{args:?}: {e}");
        }
    }
}
