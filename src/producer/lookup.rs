//! Name lookups for the checks, without a thread per check, and without one name that
//! never resolves holding up the others.
//!
//! The system's resolver (`getaddrinfo`) blocks, so a name is looked up on a pool of
//! threads that live on (a thread per lookup was most of the producer's CPU once), and the
//! check awaits the answer without blocking its task, bounded by its deadline. An IP
//! literal needs no lookup at all. A name already being looked up is not looked up a
//! second time: the checks that want it wait for that one lookup. So a name server that
//! drops queries (the resolver then holds each lookup 5-10 s) costs one thread per such
//! name, whatever the number of checks of it, and the names that resolve find threads
//! free: a hundred names that never resolve checked every second hold a hundred threads,
//! where they held every thread of the pool and failed healthy checks as `dns` before.
//!
//! This module owns only the lookup: it never connects, and never caches an answer (a
//! check that looks the name up again is what proves the site's DNS works; only checks
//! that wait at the same moment share one).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use tokio::sync::watch;

/// Most lookup threads: names being looked up at the same moment. A lookup nobody waits
/// for any more still holds its thread until the system's resolver gives up.
const MAX_THREADS: usize = 1024;

/// Enough for the C library's resolver (musl's and glibc's keep their buffers on the stack).
const STACK_BYTES: usize = 256 * 1024;

/// Why a lookup gave no address.
#[derive(Debug)]
pub(crate) enum LookupError {
    /// No answer within the time allowed.
    Timeout,
    /// The resolver failed (no such name, no server, ...).
    Failed(io::Error),
}

/// A lookup's answer, shared by every check waiting for it (None while under way).
type Answer = Option<Result<Vec<SocketAddr>, Arc<io::Error>>>;

struct Job {
    host_port: String,
    answer: Arc<watch::Sender<Answer>>,
}

/// Threads that look names up, started as they are needed and kept.
pub(crate) struct LookupPool {
    /// The system's resolver (`getaddrinfo`); tests put a slow one in its place.
    resolve: fn(&str) -> io::Result<Vec<SocketAddr>>,
    jobs: Mutex<mpsc::Sender<Job>>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    /// The lookups under way, by `host:port`: a check of a name already being looked up
    /// waits for that lookup.
    under_way: Arc<Mutex<HashMap<String, Arc<watch::Sender<Answer>>>>>,
    threads: AtomicUsize,
    idle: Arc<AtomicUsize>,
    /// Jobs sent and not yet taken by a thread.
    queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for LookupPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LookupPool({} threads)",
            self.threads.load(Ordering::Relaxed)
        )
    }
}

impl Default for LookupPool {
    fn default() -> LookupPool {
        LookupPool::with_resolver(|host_port| host_port.to_socket_addrs().map(Iterator::collect))
    }
}

impl LookupPool {
    fn with_resolver(resolve: fn(&str) -> io::Result<Vec<SocketAddr>>) -> LookupPool {
        let (tx, rx) = mpsc::channel();
        LookupPool {
            resolve,
            jobs: Mutex::new(tx),
            queue: Arc::new(Mutex::new(rx)),
            under_way: Arc::default(),
            threads: AtomicUsize::new(0),
            idle: Arc::new(AtomicUsize::new(0)),
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The addresses of `host` (a name, or an IP literal: then at once, with no lookup)
    /// on `port`, in the resolver's order; waiting until `deadline` at most (None: no bound).
    pub(crate) async fn lookup(
        &self,
        host: &str,
        port: u16,
        deadline: Option<Instant>,
    ) -> Result<Vec<SocketAddr>, LookupError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let mut answer = self.start_or_join(format!("{host}:{port}"))?;
        let answered = async {
            answer
                .wait_for(Option::is_some)
                .await
                .map(|a| a.clone())
                .map_err(|_| gone())
        };
        let answered = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), answered).await {
                Ok(answered) => answered?,
                Err(_) => return Err(LookupError::Timeout),
            },
            None => answered.await?,
        };
        match answered {
            Some(Ok(addrs)) => Ok(addrs),
            Some(Err(e)) => Err(LookupError::Failed(io::Error::new(e.kind(), e.to_string()))),
            None => Err(gone()),
        }
    }

    /// The answer to come of the lookup of `host_port` under way, or of a new one.
    fn start_or_join(&self, host_port: String) -> Result<watch::Receiver<Answer>, LookupError> {
        let mut under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(answer) = under_way.get(&host_port) {
            return Ok(answer.subscribe());
        }
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        under_way.insert(host_port.clone(), tx.clone());
        drop(under_way);
        // Counted before the thread count is judged: two lookups starting at once must not
        // both find the one idle thread free (the second then waited behind the first,
        // seconds when the first was a name that never resolves).
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.ensure_thread();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Job {
                host_port: host_port.clone(),
                answer: tx,
            });
        if sent.is_err() {
            self.under_way
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&host_port);
            return Err(LookupError::Failed(io::Error::other("lookup threads gone")));
        }
        Ok(rx)
    }

    /// Start one more thread if the jobs waiting, this one included, outnumber the idle
    /// threads (up to [`MAX_THREADS`]): two lookups at once never wait for each other.
    fn ensure_thread(&self) {
        if self.queued.load(Ordering::Acquire) <= self.idle.load(Ordering::Acquire) {
            return;
        }
        let started = self
            .threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_THREADS).then_some(n + 1)
            });
        if started.is_err() {
            return;
        }
        let (queue, resolve) = (self.queue.clone(), self.resolve);
        let (idle, queued) = (self.idle.clone(), self.queued.clone());
        let under_way = self.under_way.clone();
        let spawned = std::thread::Builder::new()
            .name("lookup".into())
            .stack_size(STACK_BYTES)
            .spawn(move || serve_lookups(&queue, (&idle, &queued), &under_way, resolve));
        if spawned.is_err() {
            // Out of threads: the queued job waits for a running one, or times out.
            self.threads.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn gone() -> LookupError {
    LookupError::Failed(io::Error::other("lookup thread gone"))
}

fn serve_lookups(
    queue: &Mutex<mpsc::Receiver<Job>>,
    (idle, queued): (&AtomicUsize, &AtomicUsize),
    under_way: &Mutex<HashMap<String, Arc<watch::Sender<Answer>>>>,
    resolve: fn(&str) -> io::Result<Vec<SocketAddr>>,
) {
    idle.fetch_add(1, Ordering::AcqRel);
    loop {
        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        idle.fetch_sub(1, Ordering::AcqRel);
        let Ok(job) = job else { return };
        queued.fetch_sub(1, Ordering::AcqRel);
        // Nobody waits any more (every check gave up): skip it.
        let answer = if job.answer.receiver_count() == 0 {
            Err(Arc::new(io::Error::other("nobody waits")))
        } else {
            resolve(&job.host_port).map_err(Arc::new)
        };
        // Done before the answer goes out: a check it wakes that looks the name up again
        // must start a new lookup, not read this one again.
        under_way
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job.host_port);
        // Free before the reply: the check it wakes may look up its next name at once.
        idle.fetch_add(1, Ordering::AcqRel);
        // The checks may have stopped waiting: then nobody reads this.
        let _ = job.answer.send(Some(answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn within(d: Duration) -> Option<Instant> {
        Some(Instant::now() + d)
    }

    #[tokio::test]
    async fn an_ip_literal_needs_no_lookup_and_no_thread() {
        let pool = LookupPool::default();
        let v4 = pool.lookup("127.0.0.1", 8080, within(Duration::from_secs(1)));
        assert_eq!(
            v4.await.unwrap(),
            ["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        let v6 = pool.lookup("::1", 443, None).await.unwrap();
        assert_eq!(v6, ["[::1]:443".parse::<SocketAddr>().unwrap()]);
        assert_eq!(pool.threads.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn names_are_looked_up_on_threads_that_are_kept() {
        let pool = LookupPool::default();
        for _ in 0..20 {
            let addrs = pool
                .lookup("localhost", 80, within(Duration::from_secs(5)))
                .await
                .unwrap();
            assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
        }
        // One after the other: one thread did them all.
        assert_eq!(pool.threads.load(Ordering::Acquire), 1);
        let missing = pool
            .lookup("no-such-host.invalid", 80, within(Duration::from_secs(10)))
            .await;
        assert!(
            matches!(missing, Err(LookupError::Failed(_))),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn lookups_at_the_same_time_do_not_wait_for_each_other() {
        let pool = Arc::new(LookupPool::with_resolver(|_| {
            std::thread::sleep(Duration::from_millis(300));
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], 80))])
        }));
        let started = Instant::now();
        let lookups: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.lookup("slow.example", 80, None).await })
            })
            .collect();
        for l in lookups {
            assert!(l.await.unwrap().is_ok());
        }
        // Side by side: about one lookup's time, not eight.
        assert!(
            started.elapsed() < Duration::from_millis(1_200),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn checks_of_a_hanging_name_share_one_lookup_and_one_thread() {
        let pool = Arc::new(LookupPool::with_resolver(|_| {
            std::thread::sleep(Duration::from_secs(3));
            Ok(Vec::new())
        }));
        let started = Instant::now();
        let checks: Vec<_> = (0..100)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let deadline = within(Duration::from_millis(200));
                    pool.lookup("hangs.example", 80, deadline).await
                })
            })
            .collect();
        for check in checks {
            let outcome = check.await.unwrap();
            assert!(matches!(outcome, Err(LookupError::Timeout)), "{outcome:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(pool.threads.load(Ordering::Acquire), 1);
    }

    #[tokio::test]
    async fn names_that_never_resolve_leave_threads_for_the_names_that_do() {
        // As a name server that drops queries: each lookup of a hang-* name holds its
        // thread 3 s, then fails.
        let pool = Arc::new(LookupPool::with_resolver(|host_port| {
            if host_port.starts_with("hang-") {
                std::thread::sleep(Duration::from_secs(3));
                return Err(io::Error::other("no answer from the name server"));
            }
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], 80))])
        }));
        let mut hanging = Vec::new();
        let mut healthy = Vec::new();
        // 100 hanging names checked every 100 ms, 20 names that resolve checked as often,
        // for 2 s; each check waits 1 s at most.
        for round in 0..20 {
            for n in 0..100 {
                let pool = pool.clone();
                hanging.push(tokio::spawn(async move {
                    let host = format!("hang-{n}.example");
                    pool.lookup(&host, 80, within(Duration::from_secs(1))).await
                }));
            }
            for n in 0..20 {
                let pool = pool.clone();
                healthy.push(tokio::spawn(async move {
                    let host = format!("site-{n}.example");
                    pool.lookup(&host, 80, within(Duration::from_secs(1))).await
                }));
            }
            if round < 19 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut failed = Vec::new();
        for check in healthy {
            if let Err(e) = check.await.unwrap() {
                failed.push(format!("{e:?}"));
            }
        }
        assert!(
            failed.is_empty(),
            "{} healthy lookups failed: {failed:?}",
            failed.len()
        );
        for check in hanging {
            assert!(check.await.unwrap().is_err());
        }
        // One thread per hanging name at most, plus the few the others need.
        let threads = pool.threads.load(Ordering::Acquire);
        assert!(threads <= 100 + 20, "{threads} threads");
    }
}
