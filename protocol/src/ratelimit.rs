//! A log rate limiter: pure (the caller passes the time in), shared by
//! outpostd and `beacon-home` for log lines a container or a remote peer
//! can trigger at will.

/// Lets through at most `burst` log lines per `window` for something a
/// container or a remote peer can trigger at will, and counts the rest,
/// so a flood of connections or bad records cannot flood the log.
#[derive(Debug, Clone)]
pub struct RateLimited {
    burst: u32,
    window: std::time::Duration,
    since: Option<std::time::Instant>,
    logged: u32,
    suppressed: u64,
}

impl RateLimited {
    pub fn new(burst: u32, window: std::time::Duration) -> RateLimited {
        RateLimited {
            burst,
            window,
            since: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether to log a line now; with it, how many were held back since
    /// the last one that was logged.
    pub fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.since {
            Some(s) if now.duration_since(s) < self.window => {}
            _ => {
                self.since = Some(now);
                self.logged = 0;
            }
        }
        if self.logged < self.burst {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimited;
    use std::time::{Duration, Instant};

    #[test]
    fn a_burst_per_window_and_a_count_of_the_rest() {
        let t0 = Instant::now();
        let mut r = RateLimited::new(2, Duration::from_secs(10));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(11)), Some(2));
    }
}
