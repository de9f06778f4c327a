//! The sync loop's reconnect delay: capped exponential backoff with
//! jitter (`Tuning::backoff_min` to `backoff_max`), reset once a session
//! has read every hash.

use std::time::Duration;

/// Capped exponential backoff with jitter.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The next delay: the current step give or take 20 % (so that
    /// replicas do not reconnect in lockstep), never above the cap; then
    /// the step doubles.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        base.mul_f64(jitter).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Tuning;

    #[test]
    fn backoff_doubles_caps_jitters_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(80) && delays[0] <= Duration::from_millis(120));
        assert!(delays[1] >= Duration::from_millis(160) && delays[1] <= Duration::from_millis(240));
        assert!(delays[5] <= Duration::from_secs(1));
        assert!(delays[5] >= Duration::from_millis(800));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    /// The production cap puts a replica back within a second of Redis
    /// answering again (issue: a 5 s cap delayed changes made right after
    /// an outage by 1.5 s).
    #[test]
    fn the_default_cap_retries_well_within_a_second() {
        let tuning = Tuning::default();
        let mut b = Backoff::new(tuning.backoff_min, tuning.backoff_max);
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_millis(500));
        }
    }
}
