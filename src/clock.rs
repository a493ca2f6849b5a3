//! A coarse millisecond clock, read once per loop iteration.
//!
//! Connections store times as `u32` ticks (4 bytes instead of a 16-byte
//! `Instant`), and every comparison uses wrapping arithmetic, which is exact
//! for spans under 2^31 ms (24 days, longer than any timeout
//! [`crate::Config::validate`] accepts). One `Instant::now()` per wakeup
//! serves every connection handled in that wakeup.

use std::time::{Duration, Instant};

/// Milliseconds since the loop started, wrapping every 49.7 days.
pub type Tick = u32;

#[derive(Debug, Clone)]
pub struct Clock {
    start: Instant,
    now: Tick,
    now_instant: Instant,
}

impl Clock {
    pub fn new() -> Self {
        let start = Instant::now();
        Clock { start, now: 0, now_instant: start }
    }

    /// Reads the system clock; call once after every `poll` returns.
    pub fn update(&mut self) {
        self.now_instant = Instant::now();
        // Truncation is the wrap-around the module docs describe.
        self.now = self.now_instant.duration_since(self.start).as_millis() as Tick;
    }

    /// The tick of the last [`Clock::update`].
    pub fn now(&self) -> Tick {
        self.now
    }

    /// The instant of the last [`Clock::update`].
    pub fn now_instant(&self) -> Instant {
        self.now_instant
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds from `earlier` to `later`, correct across the wrap.
pub fn elapsed(earlier: Tick, later: Tick) -> u32 {
    later.wrapping_sub(earlier)
}

/// `duration` in ticks, saturating (validated configs never saturate).
pub fn ticks(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// Whether `deadline` has passed at `now` (deadlines are under 2^31 ms ahead).
pub fn is_past(deadline: Tick, now: Tick) -> bool {
    (now.wrapping_sub(deadline) as i32) >= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_and_deadlines_survive_the_wrap() {
        let before_wrap: Tick = u32::MAX - 10;
        let after_wrap: Tick = 20;
        assert_eq!(elapsed(before_wrap, after_wrap), 31);
        let deadline = before_wrap.wrapping_add(15);
        assert!(!is_past(deadline, before_wrap));
        assert!(is_past(deadline, after_wrap));
        assert!(is_past(5, 5));
        assert!(!is_past(6, 5));
    }

    #[test]
    fn ticks_saturate() {
        assert_eq!(ticks(Duration::from_millis(1500)), 1500);
        assert_eq!(ticks(Duration::from_secs(u64::MAX / 2)), u32::MAX);
    }
}
