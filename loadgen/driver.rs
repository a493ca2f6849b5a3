//! One event loop: a `mio::Poll`, its connections in a `Slab` (slot key =
//! token − 1), and the run's phases.
//!
//! Each iteration reads top to bottom:
//! 1. `poll` until an event, the send timer (open loop) or the next
//!    housekeeping deadline;
//! 2. dispatch every event to its connection, reading the clock once per
//!    event (that reading is both the receive time of the echoes it brings
//!    and the send time of the messages it triggers);
//! 3. send whatever the open-loop schedule says is due;
//! 4. housekeeping: phase changes, new connections, the timeout sweep, the
//!    once-a-second sample.
//!
//! New connections are only started in step 4, after the event batch: a slab
//! key freed by a removal in this batch therefore cannot be reused while
//! stale events for it are still being dispatched.
//!
//! Phases: `Ramp` (open the connections, `--connect-batch` at a time, paced
//! by `--connect-rate`), then every loop waits for the others at a
//! [`Gate`] so that traffic starts together; `Warmup`, `Measure`, `Drain`
//! (no new messages, wait up to `--message-timeout` for echoes) and `Close`
//! (close handshakes, up to [`CLOSE_TIMEOUT_NS`]).
//!
//! Broadcast mode adds one exchange between the loops, at the end only:
//! when a loop stops sending it publishes what each of its publishers sent
//! ([`Published`]); its drain lasts until every loop has done so and each
//! subscriber has had everything its room's publishers sent (or
//! `--message-timeout` has passed), and then it settles every subscriber's
//! account (missing deliveries; the `--slow` ones' losses).

use std::{
    io,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    time::Duration,
};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use wsloop::{
    clock::monotonic_ns,
    sys::{latency_histogram, receive_buffer, CpuTime, Readiness, TokenMap, EVENTS_CAPACITY},
    wire,
};

use crate::{
    broadcast::{Published, Subscriber},
    cli::{Mode, Settings},
    client::{random_mask, Client, Context, Step, CLOSE_TIMEOUT_NS},
    frames::FrameTemplate,
    handshake::RequestTemplate,
    metrics::{Fault, OpenFailure, Stats},
    plan::{Phase, Schedule, Window},
    progress::{Sample, SampleSink},
    sys::Timer,
};

/// The send timer's token; connection tokens follow it.
const TIMER: Token = Token(0);
const CLIENTS: TokenMap = TokenMap::new(1);

/// How often timeouts are checked (connect, message, close): a few
/// comparisons per connection, instead of a timer each.
const SWEEP_NS: u64 = 100_000_000;

/// Progress samples are sent to the main thread this often.
const SAMPLE_NS: u64 = 1_000_000_000;

/// Longest sleep in `poll`, so phase changes and `Ctrl-C` are noticed promptly.
const MAX_POLL_NS: u64 = 100_000_000;

/// While draining, how often the loop checks whether every echo is back.
const DRAIN_CHECK_NS: u64 = 5_000_000;

/// Broadcast: a `--slow` subscriber draining at the end is done once no
/// input has arrived for this long (what the server still held for it has
/// come by then; what it dropped never will).
const SLOW_QUIET_NS: u64 = 250_000_000;

/// In churn mode, how long new connections pause after a failed attempt,
/// so a refusing server is not hammered in a tight loop.
const CHURN_FAILURE_PAUSE_NS: u64 = 10_000_000;

/// What one loop is asked to do: its share of the run.
#[derive(Debug, Clone)]
pub struct Share {
    /// The loop's number, from 0.
    pub index: usize,
    /// Connections to open (churn: connections open at a time).
    pub connections: u64,
    /// Rate mode: messages per second for this loop.
    pub rate: Option<f64>,
    /// Echo mode: messages to send in the window (`--messages`).
    pub quota: Option<u64>,
    /// New connections per second for this loop (`--connect-rate`).
    pub connect_rate: Option<f64>,
}

/// What every loop shares.
pub struct Common {
    /// The run's settings.
    pub settings: Settings,
    /// The handshake request, built once (broadcast: once per room).
    pub requests: Vec<RequestTemplate>,
    /// Broadcast: what each publisher sent, once the loops stop sending.
    pub published: Published,
    /// Where the loops wait for each other before traffic starts.
    pub gate: Gate,
    /// Set by Ctrl-C (or SIGTERM): end the measurement now and report.
    pub stop: Arc<AtomicBool>,
}

/// What a loop hands back when it is done.
#[derive(Debug)]
pub struct LoopResult {
    /// The loop's figures.
    pub stats: Stats,
    /// The measurement window it used.
    pub window: Window,
    /// CPU time the loop's thread used inside the window.
    pub cpu: CpuTime,
    /// Time the loop spent waiting in `epoll_wait` inside the window.
    pub idle_ns: u64,
}

impl LoopResult {
    /// How busy the loop was in its window, 1.0 = all of it: the larger of
    /// the time it was not waiting in `epoll_wait` (which counts time spent
    /// waiting for a CPU, and softirq work) and its CPU time (which counts
    /// the work inside `epoll_wait` itself). Near 1.0 it never waited for
    /// the server, so it, not the server, set the pace.
    pub fn busy_fraction(&self) -> f64 {
        let window = self.window.len_ns();
        if window == 0 {
            return 0.0;
        }
        let not_waiting = 1.0 - (self.idle_ns.min(window) as f64 / window as f64);
        let on_cpu = self.cpu.total_ns() as f64 / window as f64;
        not_waiting.max(on_cpu).min(1.0)
    }
}

/// Lets traffic start in every loop at once, after the slowest ramp, from
/// one common moment: every loop's window (and schedule) starts from the
/// time the last loop arrived, so that a message published on one loop and
/// delivered on another is in or out of the window on both (broadcast).
pub struct Gate {
    /// Loops that have finished their ramp (or given up), and when the last one did.
    arrived: Mutex<Arrivals>,
    /// Signalled at each arrival.
    all_here: Condvar,
    /// Loops in the run.
    parties: usize,
}

/// The gate's count.
#[derive(Debug, Default)]
struct Arrivals {
    /// Loops arrived so far.
    count: usize,
    /// When the last one arrived ([`monotonic_ns`]; 0 until then).
    all_at_ns: u64,
}

impl Gate {
    pub fn new(parties: usize) -> Gate {
        Gate { arrived: Mutex::new(Arrivals::default()), all_here: Condvar::new(), parties }
    }

    /// Arrives, then waits for the others (or for `stop`); returns when the
    /// last one arrived (`None` if stopped before).
    fn arrive_and_wait(&self, stop: &AtomicBool) -> Option<u64> {
        let mut arrived = self.arrive();
        while arrived.count < self.parties && !stop.load(Ordering::Relaxed) {
            arrived = self.all_here.wait_timeout(arrived, Duration::from_millis(50)).expect("gate lock").0;
        }
        (arrived.count >= self.parties).then_some(arrived.all_at_ns)
    }

    fn arrive(&self) -> std::sync::MutexGuard<'_, Arrivals> {
        let mut arrived = self.arrived.lock().expect("gate lock");
        arrived.count += 1;
        if arrived.count == self.parties {
            arrived.all_at_ns = monotonic_ns();
        }
        self.all_here.notify_all();
        arrived
    }
}

/// Arrives at the gate on drop if the loop never did (it failed or
/// panicked before traffic), so that the other loops are not left waiting.
struct GateTicket {
    /// The gate (and the stop flag) to use.
    common: Arc<Common>,
    /// Whether this loop has arrived already.
    used: bool,
}

impl GateTicket {
    /// Waits for the other loops; returns when the last one arrived (`None`
    /// if stopped first, or if called again).
    fn wait(&mut self) -> Option<u64> {
        if self.used {
            return None;
        }
        self.used = true;
        self.common.gate.arrive_and_wait(&self.common.stop)
    }
}

impl Drop for GateTicket {
    fn drop(&mut self) {
        if !self.used {
            drop(self.common.gate.arrive());
        }
    }
}

/// Tells the other loops (through [`Published::stop`]) that this one sends
/// no more: when it drains, or on drop if it never got there (it failed or
/// panicked), so that no loop waits for it in its drain.
struct StopMark {
    /// Where to tell it.
    common: Arc<Common>,
    /// Whether it has been told.
    done: bool,
}

impl StopMark {
    fn stop(&mut self) {
        if !self.done {
            self.done = true;
            self.common.published.stop();
        }
    }
}

impl Drop for StopMark {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs one loop to the end of the run.
pub fn run(share: Share, common: Arc<Common>, samples: impl SampleSink) -> io::Result<LoopResult> {
    let mut ticket = GateTicket { common: common.clone(), used: false };
    // Made first, so that a loop that cannot even start still tells the others it sends nothing.
    let stop_mark = StopMark { common: common.clone(), done: false };
    let driver = Driver::new(share, common, samples, stop_mark)?;
    driver.run(&mut ticket)
}

struct Driver<S> {
    /// The loop's epoll instance.
    poll: Poll,
    /// The connections; slab key = token − 1.
    clients: Slab<Client>,
    /// What connections may use during a call (buffers, stats, run parameters).
    cx: Context,
    /// Wakes the loop when the next scheduled send is due (nanosecond precision).
    timer: Timer,
    /// The deadline the timer is set for (0: not set).
    timer_set_for: u64,
    /// Open loop: the send schedule (rate mode's messages, idle mode's pings).
    schedule: Option<Schedule>,
    /// Slab keys in schedule order.
    order: Vec<usize>,
    /// Where the loop is in the run.
    phase: Phase,
    /// This loop's part of the run.
    share: Share,
    /// What all loops share.
    common: Arc<Common>,
    /// Where the once-a-second samples go.
    samples: S,
    /// Ramp: connections still to start.
    to_open: u64,
    /// Connection attempts started, for `--connect-rate`.
    attempts: u64,
    /// When connecting began, for `--connect-rate`.
    connect_start_ns: u64,
    /// Churn: no new connections before this (after a failure).
    connect_pause_until: u64,
    /// Connections created, for their ids and source addresses.
    created: u64,
    /// When draining gives up on the echoes still in flight.
    drain_deadline: u64,
    /// When closing gives up on the close handshakes still open.
    close_deadline: u64,
    /// When the timeout sweep runs next.
    next_sweep: u64,
    /// When the next sample is due.
    next_sample: u64,
    /// The thread's CPU time when the window opened.
    cpu_at_start: Option<CpuTime>,
    /// The thread's CPU time used inside the window (set when it ends).
    cpu_window: CpuTime,
    /// Time spent in `epoll_wait` during the measure phase.
    idle_ns: u64,
    /// Removals found while other borrows were live.
    to_remove: Vec<usize>,
    /// Broadcast: tells the other loops when this one stops sending.
    stop_mark: StopMark,
    /// Broadcast: subscribers that left before the end, to be accounted for with the others.
    departed: Vec<(u32, Subscriber)>,
    /// Broadcast: what each publisher sent (by id), once every loop has stopped.
    publisher_totals: Vec<u64>,
    /// Broadcast: the same summed per room (empty until then).
    room_totals: Vec<u64>,
    /// Broadcast: the subscribers' accounts are settled (later removals need no record).
    settled: bool,
}

impl<S: SampleSink> Driver<S> {
    fn new(share: Share, common: Arc<Common>, samples: S, stop_mark: StopMark) -> io::Result<Driver<S>> {
        let settings = &common.settings;
        let poll = Poll::new()?;
        let mut timer = Timer::new()?;
        poll.registry().register(&mut timer, TIMER, Interest::READABLE)?;
        let payload = match settings.mode {
            Mode::Idle => Vec::new(),
            _ => wire::payload_template(settings.encoding, settings.size),
        };
        let now = monotonic_ns();
        let cx = Context {
            mode: settings.mode,
            encoding: settings.encoding,
            pipeline: u64::from(settings.pipeline),
            closed_loop: settings.mode == Mode::Echo || (settings.mode == Mode::Broadcast && settings.rate.is_none()),
            uncorrected: settings.rate.is_some(),
            layout: settings.layout,
            message_timeout_ns: settings.message_timeout.as_nanos() as u64,
            connect_timeout_ns: settings.connect_timeout.as_nanos() as u64,
            frame: {
                let mask = random_mask(u32::MAX, now);
                match settings.mode {
                    Mode::Idle => FrameTemplate::ping(mask),
                    _ => FrameTemplate::data(&payload, settings.encoding, mask),
                }
            },
            payload,
            requests: common.requests.clone(),
            targets: settings.targets.len(),
            // Each loop its own TLS configuration: its own session store.
            tls: settings
                .tls
                .as_ref()
                .map(|tls| tls.client(share.connections))
                .transpose()
                .map_err(io::Error::other)?,
            stats: Stats {
                by_target: match settings.targets.len() {
                    1 => Vec::new(),
                    n => (0..n).map(|_| latency_histogram()).collect(),
                },
                ..Stats::default()
            },
            rx: receive_buffer(),
            out: Vec::new(),
            now_ns: now,
            window: Window::NONE,
            sending: false,
            quota_left: share.quota.unwrap_or(u64::MAX),
            connecting: 0,
            closing_all: false,
        };
        let to_open = if settings.mode == Mode::Churn { 0 } else { share.connections };
        let capacity = usize::try_from(share.connections).unwrap_or(usize::MAX).min(1 << 20);
        Ok(Driver {
            poll,
            clients: Slab::with_capacity(capacity),
            cx,
            timer,
            timer_set_for: 0,
            schedule: None,
            order: Vec::new(),
            phase: Phase::Ramp,
            share,
            common,
            samples,
            to_open,
            attempts: 0,
            connect_start_ns: now,
            connect_pause_until: 0,
            created: 0,
            drain_deadline: 0,
            close_deadline: 0,
            next_sweep: now + SWEEP_NS,
            next_sample: now + SAMPLE_NS,
            cpu_at_start: None,
            cpu_window: CpuTime::default(),
            idle_ns: 0,
            to_remove: Vec::new(),
            stop_mark,
            departed: Vec::new(),
            publisher_totals: Vec::new(),
            room_totals: Vec::new(),
            settled: false,
        })
    }

    fn run(mut self, ticket: &mut GateTicket) -> io::Result<LoopResult> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let before_poll = monotonic_ns();
            let timeout = self.poll_timeout(before_poll);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // The time spent waiting is what says whether the loop kept up
            // (report: `loop_busy`); this clock reading is also the first
            // event's, so it costs nothing extra.
            let woke = monotonic_ns();
            if self.phase == Phase::Measure {
                self.idle_ns += woke - before_poll;
            }
            let mut clock = Some(woke);
            for event in events.iter() {
                if event.token() == TIMER {
                    // The timerfd need not be read: re-arming it clears it,
                    // and edge-triggered epoll reports each expiry anyway.
                    self.timer_set_for = 0;
                    continue;
                }
                let Some(key) = CLIENTS.key(event.token()) else { continue };
                // Readiness is a hint: the connection may be gone already.
                let Some(client) = self.clients.get_mut(key) else { continue };
                self.cx.now_ns = clock.take().unwrap_or_else(monotonic_ns);
                let step = client.on_ready(Readiness::of(event), self.schedule.as_ref(), &mut self.cx);
                if step == Step::Remove {
                    self.remove(key);
                }
            }
            self.cx.now_ns = monotonic_ns();
            self.send_scheduled();
            if !self.housekeeping(ticket) {
                break;
            }
        }
        Ok(LoopResult { stats: self.cx.stats, window: self.cx.window, cpu: self.cpu_window, idle_ns: self.idle_ns })
    }

    fn poll_timeout(&mut self, now: u64) -> Duration {
        if let (Some(schedule), true) = (&self.schedule, self.cx.sending) {
            let due = schedule.next_time();
            if due <= now {
                return Duration::ZERO;
            }
            if self.timer_set_for != due {
                if self.timer.fire_at(due).is_ok() {
                    self.timer_set_for = due;
                } else {
                    return Duration::from_nanos(due - now);
                }
            }
        }
        let mut wake = self.next_sweep.min(self.next_sample).min(now + MAX_POLL_NS);
        match self.phase {
            Phase::Ramp if self.share.connect_rate.is_some() => wake = wake.min(now + 1_000_000),
            Phase::Warmup => wake = wake.min(self.cx.window.start_ns),
            Phase::Measure => wake = wake.min(self.cx.window.end_ns),
            Phase::Drain => wake = wake.min(now + DRAIN_CHECK_NS),
            _ => {}
        }
        Duration::from_nanos(wake.saturating_sub(now))
    }

    fn remove(&mut self, key: usize) {
        if let Some(mut client) = self.clients.try_remove(key) {
            client.on_remove(&mut self.cx);
            if self.cx.layout.is_some() {
                if client.sends() {
                    self.common.published.record(client.id(), client.sent());
                }
                if client.opened() && !self.settled {
                    self.departed.push((client.id(), client.take_subscriber()));
                }
            }
            // Dropping closes the socket, which also removes it from epoll.
        }
    }

    fn apply(&mut self, key: usize, step: Step) {
        if step == Step::Remove {
            self.remove(key);
        }
    }

    /// Open loop: sends every slot that is due.
    fn send_scheduled(&mut self) {
        if !self.cx.sending {
            return;
        }
        let Some(schedule) = self.schedule.as_mut() else { return };
        while let Some((index, seq)) = schedule.take_due(self.cx.now_ns) {
            let key = self.order[index as usize];
            match self.clients.get_mut(key) {
                Some(client) if client.slot == index && client.is_open() => {
                    self.cx.now_ns = monotonic_ns();
                    if client.send_due(schedule, &mut self.cx) == Step::Remove {
                        self.to_remove.push(key);
                    }
                }
                _ => {
                    if self.cx.window.contains(schedule.intended(index, seq)) {
                        self.cx.stats.not_sent += 1;
                    }
                }
            }
        }
        for key in std::mem::take(&mut self.to_remove) {
            self.remove(key);
        }
    }

    /// Phase changes, new connections, the sweep and the sample. Returns
    /// false when the loop is finished.
    fn housekeeping(&mut self, ticket: &mut GateTicket) -> bool {
        let now = self.cx.now_ns;
        let stop = self.common.stop.load(Ordering::Relaxed);
        match self.phase {
            Phase::Ramp => {
                if stop {
                    self.to_open = 0;
                }
                self.start_connects();
                if self.to_open == 0 && self.cx.connecting == 0 {
                    let start = ticket.wait();
                    self.begin_traffic(start);
                }
            }
            Phase::Warmup | Phase::Measure => {
                if self.phase == Phase::Warmup && now >= self.cx.window.start_ns {
                    self.phase = Phase::Measure;
                    self.cpu_at_start = Some(CpuTime::thread());
                }
                if self.cx.mode == Mode::Churn {
                    self.start_connects();
                }
                let nothing_left = self.cx.mode != Mode::Churn && self.clients.is_empty();
                if stop || now >= self.cx.window.end_ns || self.cx.quota_left == 0 || nothing_left {
                    self.begin_drain();
                }
            }
            Phase::Drain => {
                let drained = match self.cx.mode {
                    Mode::Broadcast => self.broadcast_drained(now),
                    _ => now >= self.drain_deadline || self.clients.iter().all(|(_, c)| c.in_flight() == 0),
                };
                if drained {
                    self.begin_close();
                }
            }
            Phase::Close => {
                if self.clients.is_empty() || now >= self.close_deadline {
                    let keys: Vec<usize> = self.clients.iter().map(|(key, _)| key).collect();
                    self.cx.stats.close_timeouts += keys.len() as u64;
                    for key in keys {
                        self.remove(key);
                    }
                    self.sample(now);
                    return false;
                }
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_NS;
            self.sweep();
        }
        if now >= self.next_sample {
            self.next_sample = now + SAMPLE_NS;
            self.sample(now);
        }
        true
    }

    /// Starts as many connections as the phase, the batch size and the
    /// connect rate allow.
    fn start_connects(&mut self) {
        let settings = &self.common.settings;
        let now = self.cx.now_ns;
        loop {
            let wanted = match self.phase {
                Phase::Ramp => self.to_open > 0,
                Phase::Warmup | Phase::Measure => {
                    self.cx.sending
                        && (self.clients.len() as u64) < self.share.connections
                        && now >= self.connect_pause_until
                }
                _ => false,
            };
            if !wanted || self.cx.connecting >= settings.connect_batch {
                return;
            }
            if let Some(rate) = self.share.connect_rate {
                let allowed = (now.saturating_sub(self.connect_start_ns) as f64 * rate / 1e9) as u64 + 1;
                if self.attempts >= allowed {
                    return;
                }
            }
            self.attempts += 1;
            if self.phase == Phase::Ramp {
                self.to_open -= 1;
            }
            let id = (self.created as u32).wrapping_mul(settings.threads as u32).wrapping_add(self.share.index as u32);
            // Connection `id` goes to target `id % T`; the sources rotate over
            // the connections of each target (`id / T`), so that every target
            // gets every source address, each with its own ephemeral ports.
            let target = settings.target_index(id);
            let source = match settings.source_ips.len() {
                0 => None,
                n => Some(settings.source_ips[(id as usize / settings.targets.len()) % n]),
            };
            self.created += 1;
            let entry = self.clients.vacant_entry();
            let token = CLIENTS.token(entry.key());
            match Client::connect(settings.targets[target].addr, source, id, token, self.poll.registry(), &mut self.cx)
            {
                Ok(client) => {
                    entry.insert(client);
                }
                Err(e) => {
                    let failure = OpenFailure::from_io(&e, false);
                    self.cx.stats.count_failure(failure, || format!("connection {id}: connect: {e}"));
                    self.connect_pause_until = now + CHURN_FAILURE_PAUSE_NS;
                }
            }
        }
    }

    /// The ramp is over (in every loop): start sending.
    fn begin_traffic(&mut self, all_here_ns: Option<u64>) {
        let settings = &self.common.settings;
        let now = monotonic_ns();
        self.cx.now_ns = now;
        // Every loop counts from the same moment (see [`Gate`]).
        let traffic_ns = all_here_ns.unwrap_or(now).min(now);
        let start = traffic_ns + settings.warmup.as_nanos() as u64;
        self.cx.window = Window { start_ns: start, end_ns: start + settings.duration.as_nanos() as u64 };
        self.cx.sending = true;
        self.connect_start_ns = now;
        self.attempts = 0;
        if settings.warmup.is_zero() {
            self.phase = Phase::Measure;
            self.cpu_at_start = Some(CpuTime::thread());
        } else {
            self.phase = Phase::Warmup;
        }
        match self.cx.mode {
            Mode::Echo | Mode::Broadcast if self.cx.closed_loop => {
                let keys: Vec<usize> = self.clients.iter().map(|(key, _)| key).collect();
                for key in keys {
                    self.cx.now_ns = monotonic_ns();
                    let step = self.clients[key].top_up(&mut self.cx);
                    self.apply(key, step);
                }
            }
            Mode::Rate | Mode::Idle | Mode::Broadcast => {
                // Broadcast: only the publishers are on the schedule.
                self.order =
                    self.clients.iter().filter(|(_, c)| c.is_open() && c.sends()).map(|(key, _)| key).collect();
                for (index, key) in self.order.iter().enumerate() {
                    self.clients[*key].slot = index as u64;
                }
                let n = self.order.len() as u64;
                let per_second = match self.cx.mode {
                    Mode::Rate | Mode::Broadcast => self.share.rate.unwrap_or(1.0),
                    _ => n as f64 / settings.ping_interval.as_secs_f64(),
                };
                if n > 0 {
                    self.schedule = Some(Schedule::new(traffic_ns, per_second, n));
                }
            }
            Mode::Echo | Mode::Churn => {}
        }
    }

    /// The window is over: no new messages; wait for those in flight.
    fn begin_drain(&mut self) {
        let now = self.cx.now_ns;
        self.cx.sending = false;
        let window = &mut self.cx.window;
        // Ended early (Ctrl-C, --messages, no connections left): the window
        // ends now; messages sent so far (intended before now) stay in it.
        window.end_ns = window.end_ns.min(now + 1).max(window.start_ns);
        if let Some(start) = self.cpu_at_start.take() {
            self.cpu_window = CpuTime::thread().since(&start);
        }
        self.schedule = None;
        self.phase = Phase::Drain;
        self.drain_deadline = now + self.cx.message_timeout_ns;
        if self.cx.layout.is_some() {
            for (_, client) in self.clients.iter().filter(|(_, c)| c.sends()) {
                self.common.published.record(client.id(), client.sent());
            }
            self.stop_mark.stop();
            // The slow subscribers read again: what the server kept for them.
            let slow: Vec<usize> =
                self.clients.iter().filter(|(_, c)| c.subscriber().slow).map(|(key, _)| key).collect();
            for key in slow {
                self.cx.now_ns = monotonic_ns();
                let step = self.clients[key].resume_reading(&mut self.cx);
                self.apply(key, step);
            }
        }
    }

    /// Broadcast: whether the drain is over. Not before every loop has
    /// stopped sending (only then is known what each subscriber is owed);
    /// then when every subscriber has had all it is owed, the slow ones have
    /// gone quiet, or `--message-timeout` has passed.
    fn broadcast_drained(&mut self, now: u64) -> bool {
        if self.room_totals.is_empty() {
            let (Some(sent), Some(layout)) = (self.common.published.totals(), self.cx.layout) else { return false };
            let mut rooms = vec![0u64; layout.rooms as usize];
            for (id, n) in sent.iter().enumerate() {
                rooms[layout.room_of(id as u32) as usize] += n;
            }
            self.publisher_totals = sent;
            self.room_totals = rooms;
        }
        if now >= self.drain_deadline {
            return true;
        }
        let totals = &self.room_totals;
        self.clients.iter().all(|(_, c)| {
            let sub = c.subscriber();
            !c.is_open()
                || sub.complete(totals[sub.room as usize])
                || (sub.slow && now.saturating_sub(c.last_input_ns()) >= SLOW_QUIET_NS)
        })
    }

    /// Broadcast: every subscriber's account, those gone included: what
    /// its room's publishers sent that it never got is missing (a fault), or
    /// for a `--slow` one, lost (reported apart).
    fn settle_subscribers(&mut self) {
        let stats = &mut self.cx.stats;
        let sent = &self.publisher_totals;
        let live = self.clients.iter().filter(|(_, c)| c.opened()).map(|(_, c)| (c.id(), c.subscriber()));
        for (id, sub) in live.chain(self.departed.iter().map(|(id, sub)| (*id, sub))) {
            let settled = sub.settle(sent);
            let fanout = &mut stats.fanout;
            let room = sub.room;
            if sub.slow {
                fanout.slow_subscribers += 1;
                fanout.slow_owed += settled.owed;
                fanout.slow_delivered += settled.received;
            } else {
                fanout.subscribers += 1;
                fanout.owed += settled.owed;
                fanout.delivered += settled.received;
                if let Some((publisher, got, of)) = settled.first_short {
                    stats.count_fault(Fault::Missing, settled.missing, || {
                        format!(
                            "connection {id} (room {room}): got {got} of the {of} messages publisher {publisher} sent \
                             (by the end of the drain, --message-timeout after traffic stopped)"
                        )
                    });
                }
            }
            if let Some((publisher, next, of)) = settled.never_sent {
                stats.count_fault(Fault::Corrupt, 1, || {
                    format!(
                        "connection {id} (room {room}): got message {} of publisher {publisher}, which sent {of}",
                        next - 1
                    )
                });
            }
        }
        self.departed = Vec::new();
        self.settled = true;
    }

    /// Closes every connection (close handshake; those still connecting are dropped).
    fn begin_close(&mut self) {
        if self.cx.layout.is_some() {
            self.settle_subscribers();
        }
        self.phase = Phase::Close;
        self.cx.closing_all = true;
        self.close_deadline = self.cx.now_ns + CLOSE_TIMEOUT_NS;
        let keys: Vec<usize> = self.clients.iter().map(|(key, _)| key).collect();
        for key in keys {
            let client = &mut self.clients[key];
            client.finish(&mut self.cx);
            let step = client.begin_close(1000, &mut self.cx);
            self.apply(key, step);
        }
    }

    fn sweep(&mut self) {
        for (key, client) in self.clients.iter_mut() {
            if client.on_tick(&mut self.cx) == Step::Remove {
                self.to_remove.push(key);
            }
        }
        for key in std::mem::take(&mut self.to_remove) {
            self.remove(key);
        }
    }

    fn sample(&mut self, now: u64) {
        let stats = &self.cx.stats;
        let sample = Sample {
            loop_index: self.share.index,
            at_ns: now,
            phase: self.phase,
            open: stats.open_now,
            received_all: stats.received_all,
            bytes_received_all: stats.bytes_received_all,
            handshakes: stats.opened,
            errors: stats.errors_total(),
            latency: (self.phase != Phase::Ramp && !stats.latency.is_empty()).then(|| stats.latency.clone()),
        };
        self.samples.deliver(sample);
    }
}
