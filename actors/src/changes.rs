//! [`Changes`]: one node-wide change signal. Everything the runtime records that a caller may wait
//! for — a partition's status (leader, generation), the set of running partitions, the applied
//! system state and the outcomes of partition-0 entries — bumps it when it changes, and waiters
//! re-check their condition on every bump ([`Changes::wait_until`]) instead of polling on a timer.

use std::time::Duration;
use tokio::sync::watch;

/// A version counter on a `tokio::sync::watch` channel; cheap to share (`Arc`).
#[derive(Debug)]
pub(crate) struct Changes(watch::Sender<u64>);

impl Default for Changes {
    fn default() -> Self {
        Changes(watch::channel(0).0)
    }
}

impl Changes {
    /// Something a waiter may be waiting for changed.
    pub(crate) fn bump(&self) {
        self.0.send_modify(|version| *version = version.wrapping_add(1));
    }

    /// How many changes were signalled so far: equal versions, nothing changed in between.
    pub(crate) fn version(&self) -> u64 {
        *self.0.borrow()
    }

    /// Wait until `check` returns `Some`, re-checking after every change, for at most `timeout`.
    /// `None` when the time ran out.
    pub(crate) async fn wait_until<T>(&self, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
        let mut changes = self.0.subscribe();
        let wait = async move {
            loop {
                // Mark the current version seen *before* checking, so a change made after the
                // check wakes the loop.
                changes.borrow_and_update();
                if let Some(value) = check() {
                    return value;
                }
                if changes.changed().await.is_err() {
                    // The sender lives as long as `self`; never reached while borrowed.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[actix_rt::test]
    async fn a_waiter_wakes_on_the_change_that_satisfies_it() {
        let changes = Arc::new(Changes::default());
        let value = Arc::new(AtomicU64::new(0));
        let (c, v) = (changes.clone(), value.clone());
        let setter = tokio::spawn(async move {
            for i in 1..=5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                v.store(i, Ordering::SeqCst);
                c.bump();
            }
        });
        let seen = changes
            .wait_until(Duration::from_secs(5), || {
                (value.load(Ordering::SeqCst) >= 5).then_some(value.load(Ordering::SeqCst))
            })
            .await;
        assert_eq!(seen, Some(5));
        setter.await.unwrap();
    }

    #[actix_rt::test]
    async fn without_a_change_the_waiter_times_out() {
        let changes = Changes::default();
        let started = std::time::Instant::now();
        assert_eq!(changes.wait_until(Duration::from_millis(30), || None::<()>).await, None);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
