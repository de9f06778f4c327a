//! A bounded load on the proxy: request loops over known routes that count
//! failures by phase (the test moves the phase on as its scenario proceeds:
//! before, during, after an outage). Loopback only, bounded in count and
//! time whatever the test does.

use super::client::HttpClient;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PHASES: usize = 4;

/// Counters of a load run, split by phase.
pub struct LoadStats {
    phase: AtomicUsize,
    sent: [AtomicU64; PHASES],
    failed: [AtomicU64; PHASES],
    /// The first few failures, for the assertion message.
    samples: Mutex<Vec<String>>,
}

impl LoadStats {
    /// Moves every later request into phase `phase` (0..4).
    pub fn set_phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    pub fn sent(&self, phase: usize) -> u64 {
        self.sent[phase].load(Ordering::SeqCst)
    }

    pub fn failed(&self, phase: usize) -> u64 {
        self.failed[phase].load(Ordering::SeqCst)
    }

    pub fn total_failed(&self) -> u64 {
        (0..PHASES).map(|p| self.failed(p)).sum()
    }

    pub fn samples(&self) -> Vec<String> {
        self.samples.lock().unwrap().clone()
    }

    fn record(&self, failure: Option<String>) {
        let phase = self.phase.load(Ordering::SeqCst);
        self.sent[phase].fetch_add(1, Ordering::SeqCst);
        if let Some(failure) = failure {
            self.failed[phase].fetch_add(1, Ordering::SeqCst);
            let mut samples = self.samples.lock().unwrap();
            if samples.len() < 10 {
                samples.push(format!("phase {phase}: {failure}"));
            }
        }
    }
}

/// A running load: `loops` tasks, each sending `GET /` for `(host,
/// expected backend)` pairs one after another, every `pace`, until
/// [`Load::stop`], 30 s, or 20,000 requests per loop.
pub struct Load {
    pub stats: Arc<LoadStats>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    const MAX_TIME: Duration = Duration::from_secs(30);
    const MAX_REQUESTS: usize = 20_000;

    pub fn start(
        addr: SocketAddr,
        hosts: Vec<(String, String)>,
        loops: usize,
        pace: Duration,
    ) -> Load {
        let stats = Arc::new(LoadStats {
            phase: AtomicUsize::new(0),
            sent: Default::default(),
            failed: Default::default(),
            samples: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        let hosts = Arc::new(hosts);
        let tasks = (0..loops)
            .map(|n| {
                let (stats, stop, hosts) = (stats.clone(), stop.clone(), hosts.clone());
                tokio::spawn(async move {
                    let client = HttpClient::new(addr);
                    let deadline = tokio::time::Instant::now() + Load::MAX_TIME;
                    let mut tick = tokio::time::interval(pace);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    for i in 0..Load::MAX_REQUESTS {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep_until(deadline) => return,
                            _ = tick.tick() => {}
                        }
                        let (host, expected) = &hosts[(i + n) % hosts.len()];
                        let failure = match client.try_get(host, "/").await {
                            Ok(r) if r.status == 200 && r.backend().as_ref() == Some(expected) => {
                                None
                            }
                            Ok(r) => Some(format!("{host}: {} from {:?}", r.status, r.backend())),
                            Err(e) => Some(format!("{host}: {e}")),
                        };
                        stats.record(failure);
                    }
                })
            })
            .collect();
        Load { stats, stop, tasks }
    }

    /// Waits (within patience) until `more` requests have been sent in
    /// `phase` from now on.
    pub async fn wait_sent(&self, phase: usize, more: u64) {
        let from = self.stats.sent(phase);
        assert_eventually!(
            self.stats.sent(phase) >= from + more,
            "the load sent fewer than {more} requests in phase {phase}"
        );
    }

    /// Stops the loops and waits for requests in flight.
    pub async fn stop(self) -> Arc<LoadStats> {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("load loop panicked");
        }
        self.stats
    }
}
