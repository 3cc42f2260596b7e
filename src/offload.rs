//! CPU-heavy work of one request (counting or scanning a large prompt), moved off its serving
//! lane, at most one job per core at a time.
//!
//! A lane runs every request it accepted on one thread, so a 600 KB prompt counted and
//! scanned in place held the lane's other requests for ~25 ms. Handing that work to tokio's
//! blocking pool frees the lane; unbounded, though, it would queue behind up to 512 threads
//! per lane, each job holding its own copy of a large request. So a job needs a permit, and
//! without a free one it runs in place, where the lane's own back-pressure applies as before.

use std::sync::{Arc, LazyLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies up to this size are handled in place: a 16 KB count takes ≈ 0.4 ms, less than the
/// hand-off and its copy of the request.
const IN_PLACE_MAX_BYTES: usize = 16 * 1024;

static PERMITS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    Arc::new(Semaphore::new(cores))
});

/// A permit to move the work on a body of `body_bytes` off the lane: `None` when the body is
/// small enough to handle in place, or no permit is free now.
pub fn permit_for(body_bytes: usize) -> Option<OwnedSemaphorePermit> {
    if body_bytes <= IN_PLACE_MAX_BYTES {
        return None;
    }
    Arc::clone(&PERMITS).try_acquire_owned().ok()
}

/// Runs `job` on the blocking pool, holding `permit` until it ends. `None` when it did not
/// complete (it panicked, or the runtime dropped it while shutting down).
pub async fn run<T, F>(permit: OwnedSemaphorePermit, job: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        job()
    })
    .await
    .ok()
}
