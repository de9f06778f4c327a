//! Background work of the sync side: building and freeing large tables on
//! threads of their own at the lowest CPU priority.
//!
//! At 1,000,000 routes a build takes a core for seconds. At normal
//! priority it competes with what must stay quick on the same host: the
//! replica's own loop, which keeps following the change log meanwhile
//! (ARCHITECTURE.md, "Large hashes"), Redis, and the other replicas. On 2
//! cores, three replicas building at once delayed logged changes by
//! 100-300 ms. At nice 19 a build takes only the CPU nobody else wants
//! (RocksDB lowers its compaction threads for the same reason). Dedicated
//! threads, not tokio's blocking pool: an unprivileged thread cannot raise
//! its priority back, and the pool's threads serve other work.

use super::error::SyncError;

/// Runs `work` on a low-priority thread of its own; resolves to its
/// result.
pub async fn run<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, SyncError> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sync-build".into())
        .spawn(move || {
            lower_this_thread();
            let _ = done.send(work());
        })
        .map_err(|e| SyncError::protocol(format!("build thread: {e}")))?;
    result
        .await
        .map_err(|_| SyncError::protocol("the build thread panicked"))
}

/// Frees `value` on a low-priority thread of its own (freeing a large
/// table is work too).
pub fn drop<T: Send + 'static>(value: T) {
    let spawned = std::thread::Builder::new()
        .name("sync-free".into())
        .spawn(move || {
            lower_this_thread();
            std::mem::drop(value);
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "no thread to free a table on; freeing it here");
    }
}

/// Nice 19 for the calling thread (on Linux a thread's own nice value;
/// elsewhere the process's, which no thread asks for: Linux only).
fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::debug!(error = %e, "could not lower the build thread's priority");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[tokio::test]
    async fn runs_the_work_at_nice_19_and_returns_its_result() {
        let (answer, nice) = super::run(|| {
            let me = Some(rustix::thread::gettid());
            (42, rustix::process::getpriority_process(me).unwrap())
        })
        .await
        .unwrap();
        assert_eq!(answer, 42);
        assert_eq!(nice, 19);
    }

    #[tokio::test]
    async fn a_panic_in_the_work_is_an_error() {
        assert!(super::run(|| panic!("boom")).await.is_err());
    }
}
