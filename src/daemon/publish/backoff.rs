//! How long to wait before the next connection attempt. A connection that ends soon after it was made (a broker
//! that closes it, another client taking the same client id) counts as a failure like a refused one: otherwise a
//! cause that repeats on every connection would make the daemon reconnect as fast as the network allows.

use std::time::Duration;

pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// An attempt failed: the wait before the next, which doubles up to the maximum.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// A connection ended after `lasted`. One that lasted at least the longest wait was healthy: reconnect at
    /// once (`None`) and start the waits over. A shorter one is a failure.
    pub fn lost(&mut self, lasted: Duration) -> Option<Duration> {
        if lasted >= self.max {
            self.next = self.min;
            None
        } else {
            Some(self.failed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_up_to_the_maximum() {
        let mut backoff = Backoff::new(100 * MS, 500 * MS);
        let waits: Vec<_> = (0..5).map(|_| backoff.failed()).collect();
        assert_eq!(waits, [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
    }

    #[test]
    fn short_connections_back_off_and_a_healthy_one_starts_over() {
        let mut backoff = Backoff::new(100 * MS, 500 * MS);
        assert_eq!(backoff.lost(MS), Some(100 * MS));
        assert_eq!(backoff.lost(MS), Some(200 * MS));
        assert_eq!(backoff.failed(), 400 * MS);
        assert_eq!(backoff.lost(499 * MS), Some(500 * MS));
        assert_eq!(backoff.lost(500 * MS), None);
        assert_eq!(backoff.failed(), 100 * MS);
    }
}
