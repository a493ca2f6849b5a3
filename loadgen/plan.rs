//! When things should happen: the open-loop send schedule (wrk2's model)
//! and the run's phases.
//!
//! # The schedule
//!
//! A loop sending `rate` messages per second over `n` connections gives
//! every connection the same period (`n / rate` seconds) and staggers them
//! evenly, so the loop as a whole sends one message every `1 / rate` seconds:
//! slot `m` belongs to connection `m % n`, and is that connection's message
//! number `m / n`. Each message's *intended* time comes from this schedule
//! alone, never from when the previous one was answered, so a server stall
//! shows up as the latency of every message that should have been sent
//! during it (no coordinated omission). Idle mode's pings use the same
//! schedule with `rate = n / ping_interval`.

/// A fixed open-loop schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// When slot 0 is due ([`wsloop::clock::monotonic_ns`] time).
    start_ns: u64,
    /// Time between consecutive slots of the loop, in nanoseconds.
    slot_ns: f64,
    /// Connections the slots rotate over.
    connections: u64,
    /// The first slot not yet handed out.
    next: u64,
}

impl Schedule {
    /// `per_second` sends in total over `connections`, starting at `start_ns`.
    pub fn new(start_ns: u64, per_second: f64, connections: u64) -> Schedule {
        assert!(per_second > 0.0 && connections > 0, "an empty schedule");
        Schedule { start_ns, slot_ns: 1e9 / per_second, connections, next: 0 }
    }

    /// When slot `slot` is due.
    #[inline]
    pub fn slot_time(&self, slot: u64) -> u64 {
        self.start_ns + (slot as f64 * self.slot_ns) as u64
    }

    /// When message `seq` of connection `index` is due.
    #[inline]
    pub fn intended(&self, index: u64, seq: u64) -> u64 {
        self.slot_time(seq * self.connections + index)
    }

    /// How many of connection `index`'s messages are due by `now_ns`.
    #[inline]
    pub fn due_count(&self, index: u64, now_ns: u64) -> u64 {
        if now_ns < self.intended(index, 0) {
            return 0;
        }
        let elapsed_slots = (now_ns - self.start_ns) as f64 / self.slot_ns;
        let mut count = ((elapsed_slots - index as f64) / self.connections as f64).max(0.0) as u64 + 1;
        // Float rounding can be one off either way; settle it on the exact predicate.
        while count > 0 && self.intended(index, count - 1) > now_ns {
            count -= 1;
        }
        while self.intended(index, count) <= now_ns {
            count += 1;
        }
        count
    }

    /// When the next slot is due.
    #[inline]
    pub fn next_time(&self) -> u64 {
        self.slot_time(self.next)
    }

    /// Hands out the next slot if it is due by `now_ns`: `(connection index, seq)`.
    #[inline]
    pub fn take_due(&mut self, now_ns: u64) -> Option<(u64, u64)> {
        if self.next_time() > now_ns {
            return None;
        }
        let slot = self.next;
        self.next += 1;
        Some((slot % self.connections, slot / self.connections))
    }
}

/// Where a loop is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening the connections (not in churn mode).
    Ramp,
    /// Sending, before the measurement window.
    Warmup,
    /// Sending, inside the measurement window.
    Measure,
    /// No new messages; waiting for the echoes still in flight.
    Drain,
    /// Closing every connection.
    Close,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Ramp => "ramp",
            Phase::Warmup => "warmup",
            Phase::Measure => "measure",
            Phase::Drain => "drain",
            Phase::Close => "close",
        }
    }
}

/// The measurement window: messages whose intended send time falls in
/// `[start_ns, end_ns)` are measured, whenever their echo arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First intended send time measured.
    pub start_ns: u64,
    /// First intended send time no longer measured.
    pub end_ns: u64,
}

impl Window {
    /// No window yet (during the ramp): nothing is measured.
    pub const NONE: Window = Window { start_ns: u64::MAX, end_ns: u64::MAX };

    #[inline]
    pub fn contains(&self, ns: u64) -> bool {
        ns >= self.start_ns && ns < self.end_ns
    }

    /// Length in nanoseconds (0 when not started).
    pub fn len_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_rotate_evenly_over_connections() {
        // 1000 msgs/s over 4 connections: one slot per ms, each connection every 4 ms.
        let mut s = Schedule::new(1_000_000, 1000.0, 4);
        let mut taken = Vec::new();
        while let Some(slot) = s.take_due(1_000_000 + 5_500_000) {
            taken.push(slot);
        }
        assert_eq!(taken, [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1)]);
        assert_eq!(s.next_time(), 1_000_000 + 6_000_000);
        assert_eq!(s.intended(2, 3), 1_000_000 + 14_000_000);
    }

    #[test]
    fn due_count_agrees_with_intended_times() {
        let s = Schedule::new(123, 333.3, 7);
        for now in (0..200_000_000u64).step_by(999_983) {
            for index in 0..7 {
                let due = s.due_count(index, now);
                if due > 0 {
                    assert!(s.intended(index, due - 1) <= now);
                }
                assert!(s.intended(index, due) > now);
            }
        }
    }

    #[test]
    fn window_bounds() {
        let w = Window { start_ns: 10, end_ns: 20 };
        assert!(!w.contains(9) && w.contains(10) && w.contains(19) && !w.contains(20));
        assert!(!Window::NONE.contains(5));
        assert_eq!(w.len_ns(), 10);
    }
}
