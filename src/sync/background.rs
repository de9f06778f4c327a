//! Background work of the sync side: building and freeing large tables on
//! threads of their own at a lower CPU priority.
//!
//! At 1,000,000 routes a build takes a core for seconds. At normal
//! priority it competes with what must stay quick on the same host: the
//! replica's own loop, which keeps following the change log meanwhile
//! (ARCHITECTURE.md, "Large hashes"), Redis, and the other replicas. On 2
//! cores, three replicas building at once delayed logged changes by
//! 100-300 ms. Lowered (`Tuning::background_nice`), a build yields to
//! them (RocksDB lowers its compaction threads for the same reason), yet
//! still finishes on a saturated host. Dedicated threads, not tokio's
//! blocking pool: an unprivileged thread cannot raise its priority back,
//! and the pool's threads serve other work.

use super::error::SyncError;

/// Runs `work` on a thread of its own, lowered by `nice` (0: as the
/// process); resolves to its result.
pub async fn run<R: Send + 'static>(
    nice: i32,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, SyncError> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sync-build".into())
        .spawn(move || {
            lower_this_thread(nice);
            let _ = done.send(work());
        })
        .map_err(|e| SyncError::protocol(format!("build thread: {e}")))?;
    result
        .await
        .map_err(|_| SyncError::protocol("the build thread panicked"))
}

/// Frees `value` on a thread of its own lowered by `nice` (freeing a
/// large table is work too).
pub fn drop<T: Send + 'static>(nice: i32, value: T) {
    let spawned = std::thread::Builder::new()
        .name("sync-free".into())
        .spawn(move || {
            lower_this_thread(nice);
            std::mem::drop(value);
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "no thread to free a table on; freeing it here");
    }
}

/// Raises the calling thread's nice value by `nice` (on Linux a thread's
/// own; elsewhere the process's, which no thread asks for: Linux only).
fn lower_this_thread(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        let me = Some(rustix::thread::gettid());
        let lowered = rustix::process::getpriority_process(me)
            .and_then(|now| rustix::process::setpriority_process(me, (now + nice).min(19)));
        if let Err(e) = lowered {
            tracing::debug!(error = %e, "could not lower the build thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    fn my_nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[tokio::test]
    async fn runs_the_work_lowered_by_nice_and_returns_its_result() {
        let before = my_nice();
        let (answer, nice) = super::run(5, || (42, my_nice())).await.unwrap();
        assert_eq!(answer, 42);
        assert_eq!(nice, (before + 5).min(19));
        let (_, unchanged) = super::run(0, || ((), my_nice())).await.unwrap();
        assert_eq!(unchanged, before, "nice 0 keeps the process's priority");
    }

    #[tokio::test]
    async fn a_panic_in_the_work_is_an_error() {
        assert!(super::run(0, || panic!("boom")).await.is_err());
    }
}
