//! The one way tests wait for something: poll a probe until it answers `Ok`, and on timeout report what
//! it saw last.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `probe` every `every` until it answers `Ok`, for at most `timeout`; `Err` carries what the
/// probe saw last.
pub async fn poll<T, F, Fut>(timeout: Duration, every: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(seen) if Instant::now() >= deadline => return Err(seen),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// [`poll`] every 200 ms, panicking with `what` and the last thing seen when `timeout` passes.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    poll(timeout, Duration::from_millis(200), probe).await.unwrap_or_else(|seen| panic!("{what}: not after {timeout:?}; last seen: {seen}"))
}

/// [`poll`] for code outside the runtime (process start and exit).
pub fn poll_blocking<T>(timeout: Duration, every: Duration, mut probe: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return Ok(value),
            Err(seen) if Instant::now() >= deadline => return Err(seen),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// [`until`] for code outside the runtime.
pub fn until_blocking<T>(what: &str, timeout: Duration, every: Duration, probe: impl FnMut() -> Result<T, String>) -> T {
    poll_blocking(timeout, every, probe).unwrap_or_else(|seen| panic!("{what}: not after {timeout:?}; last seen: {seen}"))
}
