//! Name lookups for the checks, without a thread per check.
//!
//! The system's resolver (`getaddrinfo`) blocks, so a name is looked up on a small pool
//! of threads that live on (a thread per lookup was most of the producer's CPU once), and
//! the check awaits the answer without blocking its task, bounded by its deadline. An IP
//! literal needs no lookup at all.
//!
//! This module owns only the lookup: it never connects, and never caches an answer (a
//! check that looks the name up again is what proves the site's DNS works).

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use tokio::sync::oneshot;

/// Most lookup threads. A lookup the check stopped waiting for still holds its thread
/// until the system's resolver gives up; past this many, lookups queue, and a check whose
/// lookup waits too long fails as a DNS timeout.
const MAX_THREADS: usize = 64;

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

struct Job {
    host_port: String,
    /// Past it nobody waits for the answer: the lookup is skipped.
    deadline: Option<Instant>,
    reply: oneshot::Sender<io::Result<Vec<SocketAddr>>>,
}

/// Threads that look names up, started as they are needed and kept.
#[derive(Debug)]
pub(crate) struct LookupPool {
    /// The system's resolver (`getaddrinfo`); tests put a slow one in its place.
    resolve: fn(&str) -> io::Result<Vec<SocketAddr>>,
    jobs: Mutex<mpsc::Sender<Job>>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    threads: AtomicUsize,
    idle: Arc<AtomicUsize>,
    /// Jobs sent and not yet taken by a thread.
    queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.host_port)
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
        let (reply, answer) = oneshot::channel();
        let job = Job {
            host_port: format!("{host}:{port}"),
            deadline,
            reply,
        };
        self.ensure_thread();
        self.queued.fetch_add(1, Ordering::AcqRel);
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job);
        if sent.is_err() {
            return Err(LookupError::Failed(io::Error::other("lookup threads gone")));
        }
        let answered = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), answer).await {
                Ok(answered) => answered.map_err(|_| gone()),
                Err(_) => Err(LookupError::Timeout),
            },
            None => answer.await.map_err(|_| gone()),
        };
        answered?.map_err(LookupError::Failed)
    }

    /// Start one more thread if the jobs waiting, this one included, outnumber the idle
    /// threads (up to [`MAX_THREADS`]): two lookups at once never wait for each other.
    fn ensure_thread(&self) {
        if self.queued.load(Ordering::Acquire) < self.idle.load(Ordering::Acquire) {
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
        let spawned = std::thread::Builder::new()
            .name("lookup".into())
            .stack_size(STACK_BYTES)
            .spawn(move || serve_lookups(&queue, (&idle, &queued), resolve));
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
    resolve: fn(&str) -> io::Result<Vec<SocketAddr>>,
) {
    idle.fetch_add(1, Ordering::AcqRel);
    loop {
        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        idle.fetch_sub(1, Ordering::AcqRel);
        let Ok(job) = job else { return };
        queued.fetch_sub(1, Ordering::AcqRel);
        if job.deadline.is_some_and(|d| Instant::now() >= d) {
            idle.fetch_add(1, Ordering::AcqRel);
            continue;
        }
        let answer = resolve(&job.host_port);
        // Free before the reply: the check it wakes may look up its next name at once.
        idle.fetch_add(1, Ordering::AcqRel);
        // The check may have stopped waiting: then nobody reads this.
        let _ = job.reply.send(answer);
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
    async fn a_hanging_resolver_costs_the_check_its_timeout_and_no_more_threads() {
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
        assert!(pool.threads.load(Ordering::Acquire) <= MAX_THREADS);
    }
}
