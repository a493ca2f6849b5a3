//! The loops' clocks: a coarse millisecond clock read once per loop
//! iteration, and [`monotonic_ns`], the fine one.
//!
//! Connections store times as `u32` ticks (4 bytes instead of a 16-byte
//! `Instant`), and every comparison uses wrapping arithmetic, which is exact
//! for spans under 2^31 ms (24 days, longer than any timeout
//! [`crate::Config::validate`] accepts). One clock read per wakeup serves
//! every connection handled in that wakeup.
//!
//! Fine times come in two kinds:
//! - [`monotonic_ns`]: `u64` nanoseconds of `CLOCK_MONOTONIC`, the clock
//!   `Instant` reads, but a number that fits in a loadgen stamp and means
//!   the same in every thread and process on the host;
//! - [`Clock::fine`]: quanta's clock, for the service-latency measurement on
//!   the hot path. On a CPU with an invariant TSC (which quanta checks) a
//!   reading is one `rdtsc` instead of a `clock_gettime` call, calibrated
//!   against `CLOCK_MONOTONIC` once per process; elsewhere it is
//!   `CLOCK_MONOTONIC` itself.

use std::time::{Duration, Instant};

/// Milliseconds since the loop started, wrapping every 49.7 days.
pub type Tick = u32;

/// Nanoseconds of `CLOCK_MONOTONIC` (served by the vDSO: no system call).
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec we pass; CLOCK_MONOTONIC
    // always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[derive(Debug, Clone)]
pub struct Clock {
    start: Instant,
    now: Tick,
    now_instant: Instant,
    fine: quanta::Clock,
    now_fine: u64,
}

impl Clock {
    /// Never inlined: quanta calibrates its TSC clock here, for a span of
    /// wall time, so its instruction count varies from run to run; the
    /// callgrind scripts leave this one function out of their counts
    /// (`--toggle-collect`) so that it cannot blur a per-message figure.
    #[inline(never)]
    pub fn new() -> Self {
        let start = Instant::now();
        let fine = quanta::Clock::new();
        let now_fine = fine.raw();
        Clock { start, now: 0, now_instant: start, fine, now_fine }
    }

    /// Reads the system clock; call once after every `poll` returns.
    pub fn update(&mut self) {
        self.now_fine = self.fine.raw();
        self.now_instant = Instant::now();
        // Truncation is the wrap-around the module docs describe.
        self.now = self.now_instant.duration_since(self.start).as_millis() as Tick;
    }

    /// The fine clock (see the module docs): `raw()` readings, converted
    /// with `delta_as_nanos`.
    pub fn fine(&self) -> &quanta::Clock {
        &self.fine
    }

    /// The fine clock's reading at the last [`Clock::update`].
    pub fn now_fine(&self) -> u64 {
        self.now_fine
    }

    /// The tick of the last [`Clock::update`].
    pub fn now(&self) -> Tick {
        self.now
    }

    /// When the clock was made (the loop's start).
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Time since the clock was made, as of the last [`Clock::update`].
    pub fn uptime(&self) -> std::time::Duration {
        self.now_instant.saturating_duration_since(self.start)
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
