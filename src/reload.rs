//! Reload requests: SIGHUP asks every part that can re-read its settings
//! from files (the log filter, TLS certificates) to do so, without
//! stopping anything. The binary owns the signal; parts listen on a
//! [`Reload`] handle passed to [`crate::run_reloadable`].

use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A reload notifier: a generation counter that [`Reload::request`] bumps
/// and every [`ReloadRequests`] sees. Requests made while a listener is
/// busy coalesce into one (re-reading once covers them all).
#[derive(Debug, Clone)]
pub struct Reload {
    generation: Arc<watch::Sender<u64>>,
}

impl Default for Reload {
    fn default() -> Self {
        Reload::new()
    }
}

impl Reload {
    pub fn new() -> Reload {
        Reload {
            generation: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Asks every listener to re-read; returns the new generation.
    pub fn request(&self) -> u64 {
        let mut generation = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        generation
    }

    /// A listener that sees requests made from now on.
    pub fn subscribe(&self) -> ReloadRequests {
        ReloadRequests(self.generation.subscribe())
    }

    /// Runs `on_request` (on the blocking pool: re-reading files is blocking
    /// IO) at every request from now on, until `stop`.
    pub fn spawn_listener(
        &self,
        stop: CancellationToken,
        on_request: impl Fn() + Send + Sync + 'static,
    ) {
        let mut requests = self.subscribe();
        let on_request = Arc::new(on_request);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    request = requests.next() => {
                        if request.is_none() {
                            return;
                        }
                        let on_request = on_request.clone();
                        let _ = tokio::task::spawn_blocking(move || on_request()).await;
                    }
                }
            }
        });
    }
}

/// One part's view of reload requests.
#[derive(Debug)]
pub struct ReloadRequests(watch::Receiver<u64>);

impl ReloadRequests {
    /// Waits for the next request (requests made meanwhile count as one);
    /// `None` once every [`Reload`] handle is gone (none can come).
    pub async fn next(&mut self) -> Option<u64> {
        self.0.changed().await.ok()?;
        Some(*self.0.borrow_and_update())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_sees_a_request_and_busy_ones_see_one() {
        let reload = Reload::new();
        let mut a = reload.subscribe();
        let mut b = reload.subscribe();
        assert_eq!(reload.request(), 1);
        assert_eq!(a.next().await, Some(1));
        reload.request();
        reload.request();
        assert_eq!(a.next().await, Some(3));
        assert_eq!(b.next().await, Some(3), "coalesced");
        drop(reload);
        assert_eq!(a.next().await, None);
    }

    #[tokio::test]
    async fn a_spawned_listener_runs_at_each_request_until_stopped() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let reload = Reload::new();
        let stop = CancellationToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        reload.spawn_listener(stop.clone(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        tokio::task::yield_now().await;
        reload.request();
        while runs.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        stop.cancel();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        reload.request();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_listener_does_not_see_requests_from_before_it_subscribed() {
        let reload = Reload::new();
        reload.request();
        let mut late = reload.subscribe();
        let next = tokio::time::timeout(std::time::Duration::from_millis(20), late.next()).await;
        assert!(next.is_err(), "saw an old request");
    }
}
