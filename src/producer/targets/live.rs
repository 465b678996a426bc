//! The targets in force at this vantage point: those of `CK_SITE_URL` and `CK_TARGETS`
//! (read again on SIGHUP) and those of the targets topic meant for this producer (its
//! `"producers"`), the topic's entry winning where a URL is in both; with `CK_SHARD=i/n`,
//! only this shard's share.
//!
//! This module owns that union and its rules. It never schedules a check and never reads
//! Kafka itself (it is handed the topic's list).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::signal::unix::Signal;
use tokio::sync::watch;

use super::entry::{self, ParsedEntry, Target, check_url};
use crate::producer::metrics::ProducerMetrics;
use crate::settings::{ConfigError, Settings, err};
use crate::shutdown::Shutdown;
use crate::target_list::{Entries, ListSnapshot};

/// The targets in force, by URL.
pub type TargetSet = Arc<BTreeMap<String, Arc<Target>>>;

/// Where the configured targets come from: `CK_SITE_URL` and the `CK_TARGETS` file (read
/// again on SIGHUP), over the defaults every target gets.
#[derive(Debug, Clone)]
pub struct TargetSources {
    site_urls: Vec<String>,
    file: Option<String>,
    defaults: Target,
}

impl TargetSources {
    /// The sources the settings name; `CK_SITE_URL`'s URLs are checked here.
    pub(crate) fn from_settings(s: &Settings) -> Result<TargetSources, ConfigError> {
        let mut site_urls: Vec<String> = Vec::new();
        for url in s.get("CK_SITE_URL").unwrap_or("").split_whitespace() {
            check_url("CK_SITE_URL", url)?;
            if !site_urls.iter().any(|u| u == url) {
                site_urls.push(url.to_string());
            }
        }
        Ok(TargetSources {
            site_urls,
            file: s.get("CK_TARGETS").map(str::to_string),
            defaults: entry::target_defaults(s)?,
        })
    }

    /// The targets of `CK_SITE_URL` and `CK_TARGETS`, the file read now. A URL in both:
    /// the file's entry.
    pub fn read(&self) -> Result<Vec<Target>, ConfigError> {
        let from_file = match &self.file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!("CK_TARGETS: cannot read targets file {path}: {e}"))
                })?;
                entry::parse_list(&text, &format!("targets file {path}"), &self.defaults)?
            }
            None => Vec::new(),
        };
        let in_file: HashSet<&str> = from_file.iter().map(|e| e.target.url.as_str()).collect();
        let mut targets: Vec<Target> = self
            .site_urls
            .iter()
            .filter(|u| !in_file.contains(u.as_str()))
            .map(|url| Target {
                url: url.clone(),
                ..self.defaults.clone()
            })
            .collect();
        targets.extend(from_file.into_iter().map(|e| e.target));
        Ok(targets)
    }

    /// What every target gets unless its entry says otherwise.
    pub fn defaults(&self) -> &Target {
        &self.defaults
    }
}

/// `CK_SHARD=i/n`: this producer checks the targets whose murmur2(URL) mod n is i-1 (the
/// Kafka partitioner's hash), so that n producers of one vantage point split one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// i-1.
    index: i32,
    /// n.
    count: i32,
}

impl Shard {
    /// `CK_SHARD`, when set.
    pub(crate) fn from_settings(s: &Settings) -> Result<Option<Shard>, ConfigError> {
        let Some(raw) = s.get("CK_SHARD") else {
            return Ok(None);
        };
        let parsed = raw.split_once('/').and_then(|(i, n)| {
            Some((i.trim().parse::<i32>().ok()?, n.trim().parse::<i32>().ok()?))
        });
        match parsed {
            Some((i, n)) if n >= 1 && (1..=n).contains(&i) => Ok(Some(Shard {
                index: i - 1,
                count: n,
            })),
            _ => err(format!(
                "CK_SHARD={raw:?} is not valid: give i/n with 1 <= i <= n, e.g. 1/2"
            )),
        }
    }

    /// Whether this shard checks `url`.
    pub fn owns(&self, url: &str) -> bool {
        crate::kafka::partition_for(url.as_bytes(), self.count) == self.index
    }
}

/// Turns the configured targets and the topic's list into the set in force. Keeps each
/// topic entry parsed (parsed again only when it changes), so that each problem is said
/// once, not at every change of the list.
#[derive(Debug)]
pub struct TargetResolver {
    producer_id: String,
    shard: Option<Shard>,
    defaults: Target,
    /// By URL: the entry's bytes and what they gave (None: not usable).
    parsed: HashMap<String, (Vec<u8>, Option<ParsedEntry>)>,
    /// URLs said to be in both sources.
    said_both: HashSet<String>,
}

impl TargetResolver {
    /// For the vantage point `producer_id`, with its shard.
    pub fn new(producer_id: &str, shard: Option<Shard>, defaults: &Target) -> TargetResolver {
        TargetResolver {
            producer_id: producer_id.to_string(),
            shard,
            defaults: defaults.clone(),
            parsed: HashMap::new(),
            said_both: HashSet::new(),
        }
    }

    /// The set in force for `configured` and the topic's `listed`; `previous` lends its
    /// unchanged targets (same Arc: the schedule sees they did not change).
    pub fn resolve(
        &mut self,
        configured: &[Target],
        listed: &Entries,
        previous: &BTreeMap<String, Arc<Target>>,
    ) -> BTreeMap<String, Arc<Target>> {
        self.parsed.retain(|url, _| listed.contains_key(url));
        let mut set = BTreeMap::new();
        for t in configured {
            set.insert(t.url.clone(), t.clone());
        }
        for (url, listed) in listed {
            let Some(bytes) = &listed.entry else {
                self.parsed.remove(url);
                continue;
            };
            let producer_id = self.producer_id.clone();
            let Some(parsed) = self.parsed_entry(url, bytes) else {
                continue;
            };
            let mine = parsed
                .producers
                .as_ref()
                .is_none_or(|p| p.contains(&producer_id));
            if !mine {
                continue;
            }
            if set.insert(url.clone(), parsed.target.clone()).is_some()
                && self.said_both.insert(url.clone())
            {
                log::info!(
                    "{} is in CK_SITE_URL/CK_TARGETS and in the targets topic: the topic's entry wins",
                    crate::secret::redact_url(url)
                );
            }
        }
        set.into_iter()
            .filter(|(url, _)| self.shard.is_none_or(|s| s.owns(url)))
            .map(|(url, t)| {
                let kept = previous.get(&url).filter(|p| p.same_as(&t)).cloned();
                (url, kept.unwrap_or_else(|| Arc::new(t)))
            })
            .collect()
    }

    /// The topic entry of `url`, parsed once per version; an unusable one is said once.
    fn parsed_entry(&mut self, url: &str, bytes: &[u8]) -> Option<&ParsedEntry> {
        let fresh = self.parsed.get(url).is_none_or(|(b, _)| b != bytes);
        if fresh {
            let origin = format!("targets topic, entry {}", crate::secret::redact_url(url));
            let parsed = serde_json::from_slice(bytes)
                .map_err(|e| ConfigError(format!("{origin}: not JSON: {e}")))
                .and_then(|v| entry::parse_entry(v, &origin, &self.defaults))
                .and_then(|p| {
                    if p.target.url == url {
                        Ok(p)
                    } else {
                        err(format!("{origin}: its url field is not its key"))
                    }
                });
            let kept = match parsed {
                Ok(p) => Some(p),
                Err(e) => {
                    log::error!("{e}; skipped (the other targets go on)");
                    None
                }
            };
            self.parsed.insert(url.to_string(), (bytes.to_vec(), kept));
        }
        self.parsed.get(url).and_then(|(_, p)| p.as_ref())
    }
}

/// What keeps the set in force up to date.
pub struct TargetFollower {
    /// The targets of `CK_SITE_URL` and `CK_TARGETS` as last read.
    pub configured: Vec<Target>,
    /// Where to read them again.
    pub sources: TargetSources,
    /// Turns them and the topic's list into the set in force.
    pub resolver: TargetResolver,
    /// The topic's list, when `CK_TARGETS_TOPIC` is set.
    pub listed: Option<watch::Receiver<ListSnapshot>>,
    /// SIGHUP, when it could be caught.
    pub hangup: Option<Signal>,
}

impl TargetFollower {
    /// The set in force now.
    pub fn resolve(
        &mut self,
        previous: &BTreeMap<String, Arc<Target>>,
    ) -> BTreeMap<String, Arc<Target>> {
        let snapshot = self
            .listed
            .as_ref()
            .map(|l| l.borrow().clone())
            .unwrap_or_default();
        self.resolver
            .resolve(&self.configured, &snapshot.entries, previous)
    }

    /// Send each new set in force on `tx` until `shutdown`: at every change of the topic's
    /// list, and at every SIGHUP (which reads `CK_SITE_URL` and `CK_TARGETS` again; an
    /// unreadable or invalid file keeps the targets in force, and says why).
    pub async fn run(
        mut self,
        tx: watch::Sender<TargetSet>,
        metrics: Arc<ProducerMetrics>,
        mut shutdown: Shutdown,
    ) {
        loop {
            let listed = async {
                match self.listed.as_mut() {
                    Some(l) => l.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let hangup = async {
                match self.hangup.as_mut() {
                    Some(h) => h.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                alive = listed => if !alive {
                    self.listed = None;
                },
                alive = hangup => if alive {
                    self.reread();
                } else {
                    self.hangup = None;
                },
                _ = shutdown.requested() => return,
            }
            let previous = tx.borrow().clone();
            let Some((follower, next)) = self.resolve_off_the_workers(previous.clone()).await
            else {
                return;
            };
            self = follower;
            let changes = changes(&previous, &next);
            if changes > 0 {
                log::info!(
                    "targets: {changes} change(s) applied, {} target(s) in force",
                    next.len()
                );
                metrics.targets_in_force(next.values().map(|t| &**t));
                tx.send_replace(Arc::new(next));
            }
            metrics.list.applied(tx.borrow().len(), changes);
        }
    }

    /// [`Self::resolve`] on tokio's blocking pool, handing the follower back. Parsing a
    /// list where thousands of entries changed (a regex compiled for each) takes a while
    /// (150-200 ms for 1,010 in a debug build): on a runtime worker it would hold up the
    /// checks due meanwhile. None if it panicked (said; the set in force stays).
    async fn resolve_off_the_workers(
        mut self,
        previous: TargetSet,
    ) -> Option<(TargetFollower, BTreeMap<String, Arc<Target>>)> {
        let resolving = tokio::task::spawn_blocking(move || {
            let next = self.resolve(&previous);
            (self, next)
        });
        match resolving.await {
            Ok(done) => Some(done),
            Err(e) => {
                log::error!(
                    "targets: applying a new list failed ({e}); the targets in force stay until restart"
                );
                None
            }
        }
    }

    /// SIGHUP: `CK_SITE_URL` and `CK_TARGETS` read again, or kept when they cannot be.
    fn reread(&mut self) {
        match self.sources.read() {
            Ok(targets) => {
                log::info!(
                    "SIGHUP: {} target(s) read from CK_SITE_URL and CK_TARGETS",
                    targets.len()
                );
                self.configured = targets;
            }
            Err(e) => log::error!("SIGHUP: {e}; the targets in force stay as they were"),
        }
    }
}

/// Targets added, removed or changed from `old` to `new`.
fn changes(old: &BTreeMap<String, Arc<Target>>, new: &BTreeMap<String, Arc<Target>>) -> usize {
    let changed_or_added = new
        .iter()
        .filter(|(url, t)| old.get(*url).is_none_or(|o| !Arc::ptr_eq(o, t)))
        .count();
    changed_or_added + old.keys().filter(|u| !new.contains_key(*u)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::outbox::Outbox;
    use crate::target_list::Listed;

    /// A list of `n` entries, each with a regex of its own (`round` makes them all change).
    fn list(n: usize, round: usize) -> ListSnapshot {
        let entries = (0..n)
            .map(|i| {
                let url = format!("http://site.test/{i}");
                let entry = serde_json::json!({"url": url, "interval_s": 60, "regex": format!("r{round}x{i}")});
                let at = chrono::Utc::now();
                (url, Listed { entry: Some(entry.to_string().into_bytes()), at })
            })
            .collect();
        ListSnapshot {
            entries: Arc::new(entries),
            loaded: true,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_list_being_applied_does_not_hold_up_the_runtime() {
        let defaults = entry::target_defaults(&Settings::new([])).unwrap();
        let (list_tx, listed) = watch::channel(list(5_000, 0));
        let follower = TargetFollower {
            configured: Vec::new(),
            sources: TargetSources::from_settings(&Settings::new([])).unwrap(),
            resolver: TargetResolver::new("eu", None, &defaults),
            listed: Some(listed),
            hangup: None,
        };
        let (tx, mut in_force) = watch::channel(TargetSet::default());
        let metrics = Arc::new(ProducerMetrics::new("eu", Outbox::new(1)));
        let (_stop, shutdown) = Shutdown::new();
        tokio::spawn(follower.run(tx, metrics, shutdown));
        list_tx.send_replace(list(5_000, 1));
        // On this one-thread runtime, a list parsed on it would let this loop tick once at
        // most before the new set is out (5,000 regexes: 40 ms and more in a release build).
        let mut ticks = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => ticks += 1,
                _ = in_force.changed() => break,
            }
        }
        assert_eq!(in_force.borrow().len(), 5_000);
        assert!(ticks >= 3, "{ticks} tick(s) while the list was applied");
    }
}
