//! A real Redis for the bridge tests: Debian's `redis-server` on a free
//! port of 127.0.0.1, persistence off, that can be killed, restarted on the
//! same port (an outage) or frozen (a Redis that stops answering), and is
//! killed when dropped.
//!
//! A missing `redis-server` fails the test that needs it, with what to
//! install: these tests are the proof that the bridge works with a real
//! Redis, so they must not pass by skipping.

use std::{
    fs,
    io::ErrorKind,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long a starting `redis-server` may take to answer PING (it takes
/// about 10 ms; a loaded CI machine, much more).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Fresh ports tried before giving up, in case another process takes the
/// free port between our probe and Redis's bind.
const PORT_ATTEMPTS: usize = 5;

/// A `redis-server` child process.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    /// Our own connection for [`RedisServer::subscribers`], kept so that
    /// polling it is a round trip, not a new connection each time.
    checks: Mutex<Option<::redis::Connection>>,
}

impl RedisServer {
    /// Starts Redis on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match Self::try_start_on(free_port()) {
                Ok(server) => return server,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start on any of {PORT_ATTEMPTS} free ports; last: {last}");
    }

    /// Starts Redis on `port` (one a test chose, e.g. to bring Redis up
    /// after a client started) and waits until it answers PING.
    pub fn start_on(port: u16) -> RedisServer {
        Self::try_start_on(port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on(port: u16) -> Result<RedisServer, String> {
        let log = std::env::temp_dir().join(format!("wsloop-test-redis-{port}.log"));
        let mut server = RedisServer { port, child: None, log, checks: Mutex::new(None) };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = fs::File::create(&self.log).map_err(|e| format!("cannot create {}: {e}", self.log.display()))?;
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            // Persistence off: nothing written, nothing loaded at restart.
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir"])
            .arg(std::env::temp_dir())
            .args(["--daemonize", "no", "--loglevel", "warning", "--logfile", ""])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "redis-server is not installed (not on PATH): the bridge tests need a real Redis. \
                 Install Debian's package: `apt-get install redis-server` (scripts/test.sh and .ci/run do it when run as root)"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        self.child = Some(child);
        self.wait_ready()
    }

    /// Waits until Redis answers PING; an error if it exits first (its port
    /// was taken) or takes longer than [`READY_TIMEOUT`].
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = ::redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "redis-server on port {} exited with {status}: {}",
                        self.port,
                        self.log_text()
                    ));
                }
            }
            let pong = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut con| ::redis::cmd("PING").query::<String>(&mut con));
            if matches!(pong.as_deref(), Ok("PONG")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("redis-server on port {} did not answer PING within {READY_TIMEOUT:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port Redis listens on (the same after [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection of our own, for checks from outside the bridge.
    pub fn connection(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connect to the test's redis-server")
    }

    /// Subscribers of `channel`, as Redis counts them (`PUBSUB NUMSUB`).
    pub fn subscribers(&self, channel: &str) -> i64 {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        // The kept connection dies with a killed Redis: then one new try.
        for _ in 0..2 {
            let con = checks.get_or_insert_with(|| self.connection());
            match ::redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query::<(String, i64)>(con) {
                Ok((_, count)) => return count,
                Err(_) => *checks = None,
            }
        }
        panic!("PUBSUB NUMSUB {channel} failed twice");
    }

    /// Kills Redis at once (SIGKILL: a crash, no goodbye to the clients) and
    /// reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port (after [`RedisServer::kill`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: redis-server is still running");
        self.spawn().unwrap_or_else(|e| panic!("restart: {e}"));
    }

    /// Freezes Redis (SIGSTOP): connections stay open, nothing is answered.
    /// Returns once the kernel reports the process stopped.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let stat = format!("/proc/{}/stat", self.pid());
        let deadline = Instant::now() + READY_TIMEOUT;
        // The state is the field after the parenthesised command name.
        while !fs::read_to_string(&stat).is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| rest.starts_with(" T")))
        {
            assert!(Instant::now() < deadline, "redis-server did not stop on SIGSTOP");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets a paused Redis run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("redis-server is not running").id() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0, "kill({signal}) redis-server");
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused process dies of SIGKILL too; SIGCONT is not needed.
            self.kill();
        }
        let _ = fs::remove_file(&self.log);
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}
