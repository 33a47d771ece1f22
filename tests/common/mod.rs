//! Test harness on real components: a LiveKit server in dev mode on free loopback
//! ports, and the independent Python subscriber (`tests/helpers/subscriber.py`).
//!
//! Every integration test that needs a room starts its own server with
//! [`LiveKitServer::start`]; dropping it stops the server, also when the test panics.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod rtmp_client;
pub mod service;
pub mod tokens;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "devkey";
pub const API_SECRET: &str = "secret";

/// Where `scripts/setup.sh` installs the LiveKit server and the Python virtualenv.
pub fn tools_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("LIVEKIT_INGRESS_TOOLS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    Path::new(&home).join(".cache/livekit-ingress")
}

pub fn python() -> PathBuf {
    tools_dir().join("venv/bin/python")
}

pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory for one test, removed when dropped.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lk-ingress-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // A failed test keeps its logs (LiveKit server, configs) to read.
        if std::thread::panicking() {
            eprintln!("test failed: kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A free TCP port on loopback. The port is released before it is used, so another
/// process could take it in between; tests accept that small race.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free tcp port")
}

/// A UDP port free on every interface (the LiveKit server binds its media port
/// on all of them).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port")
}

/// A LiveKit server (the pinned release) in dev mode on loopback, one per test.
pub struct LiveKitServer {
    child: Child,
    pub http_port: u16,
    pub log_path: PathBuf,
    config_path: PathBuf,
    _dir: ScratchDir,
}

impl LiveKitServer {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// A server whose configuration also has `extra` (top-level YAML).
    pub fn start_with(extra: &str) -> Self {
        // Free ports are picked, then bound by the server: another process can
        // take one in between. A server that lost that race is started again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(extra) {
                Ok(server) => return server,
                Err(log) if attempt < 3 && log.contains("address already in use") => continue,
                Err(log) => panic!("livekit-server did not start:\n{log}"),
            }
        }
    }

    fn try_start(extra: &str) -> Result<Self, String> {
        let dir = ScratchDir::new("livekit");
        let http_port = free_tcp_port();
        let config = format!(
            "port: {http_port}\n\
             bind_addresses: [\"127.0.0.1\"]\n\
             rtc:\n  tcp_port: {tcp}\n  udp_port: {udp}\n  use_external_ip: false\n\
             logging:\n  level: {level}\n{extra}",
            tcp = free_tcp_port(),
            udp = free_udp_port(),
            level = std::env::var("LIVEKIT_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        );
        let config_path = dir.path().join("livekit.yaml");
        std::fs::write(&config_path, config).expect("write livekit config");
        let log_path = dir.path().join("livekit.log");
        let child = spawn_server(&config_path, &log_path);
        let mut server = LiveKitServer {
            child,
            http_port,
            log_path,
            config_path,
            _dir: dir,
        };
        server.wait_ready(Duration::from_secs(30))?;
        Ok(server)
    }

    /// Kills the server and starts it again on the same ports (rooms are lost,
    /// as in a real restart).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Kills the server (its ports stay this server's for [`Self::start_again`]).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a stopped server again on its ports.
    pub fn start_again(&mut self) {
        self.child = spawn_server(&self.config_path, &self.log_path);
        if let Err(log) = self.wait_ready(Duration::from_secs(30)) {
            panic!("livekit-server did not restart:\n{log}");
        }
    }

    /// The URL clients join with.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.http_port)
    }

    /// The URL of the server API (Twirp).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            if http_get_ok(self.http_port, "/") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("no answer within {timeout:?}:\n{}", self.log()))
    }
}

fn spawn_server(config_path: &Path, log_path: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open livekit log");
    Command::new(livekit_server_bin())
        .arg("--dev")
        .arg("--config")
        .arg(config_path)
        .args(["--node-ip", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start livekit-server (run scripts/setup.sh): {e}"))
}

impl Drop for LiveKitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn livekit_server_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("LIVEKIT_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    tools_dir().join("bin/livekit-server")
}

/// A redis-server on a free loopback port, one per test: in memory only, or
/// persistent (an append-only file in a scratch directory, fsynced on every
/// write) for tests that stop and start it again.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    /// The data directory of a persistent server.
    dir: Option<ScratchDir>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::spawn(free_tcp_port(), None)
    }

    /// A server that keeps its data across [`RedisServer::stop`] and
    /// [`RedisServer::restart`], as production Redis is run.
    pub fn start_persistent() -> Self {
        Self::spawn(free_tcp_port(), Some(ScratchDir::new("redis")))
    }

    fn spawn(port: u16, dir: Option<ScratchDir>) -> Self {
        let mut command = Command::new("redis-server");
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
        match &dir {
            Some(dir) => command
                .args(["--dir", &dir.path().to_string_lossy()])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ]),
            None => command.args(["--save", "", "--appendonly", "no"]),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (run scripts/setup.sh): {e}"));
        let server = RedisServer { child, port, dir };
        wait_for(Duration::from_secs(10), || server.answers().then_some(()))
            .expect("redis-server answers PING");
        server
    }

    /// Whether the server answers PING now.
    pub fn answers(&self) -> bool {
        let ping = || {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
            stream.write_all(b"PING\r\n").ok()?;
            let mut reply = [0u8; 7];
            stream.read_exact(&mut reply).ok()?;
            (&reply == b"+PONG\r\n").then_some(())
        };
        ping().is_some()
    }

    /// Shuts the server down (SIGTERM, as an operator's restart does) and
    /// waits for it to be gone: its port refuses connections.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
    }

    /// Starts a stopped persistent server again on the same port and data.
    pub fn restart(&mut self) {
        let dir = self.dir.take().expect("only a persistent server restarts");
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Self::spawn(self.port, Some(dir));
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers,
    /// as with a Redis host that hangs or a network that drops everything.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: a signal to our own child process.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal to redis-server");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP forwarder to `target_port` whose connections can be cut at
/// once, to drop a client's signal connection while its server lives on.
pub struct TcpProxy {
    pub port: u16,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    pub fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let conns = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                let (Ok(client_out), Ok(server_out)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                let (Ok(client_kept), Ok(server_kept)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                conns
                    .lock()
                    .expect("proxy lock")
                    .extend([client_kept, server_kept]);
                pipe(client, server_out);
                pipe(server, client_out);
            }
        });
        TcpProxy { port, open }
    }

    /// Closes every connection made so far; new ones are still forwarded.
    pub fn cut(&self) -> usize {
        let streams: Vec<TcpStream> = self.open.lock().expect("proxy lock").drain(..).collect();
        for s in &streams {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        streams.len() / 2
    }
}

/// True when `GET path` on loopback answers 200.
/// A TCP connection to `port` on 127.0.0.1 from the loopback address
/// `from` (127.x.y.z), as from another host; None if it was not accepted
/// within 200 ms.
pub fn connect_from(from: [u8; 4], port: u16) -> Option<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    s.bind(&std::net::SocketAddr::from((from, 0)).into()).ok()?;
    s.connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)).into(),
        Duration::from_millis(200),
    )
    .ok()?;
    Some(s.into())
}

pub fn http_get_ok(port: u16, path: &str) -> bool {
    http_get(port, path).is_some()
}

/// The body of a 200 answer to `GET path` on a loopback port; `None` for
/// any other answer or none.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let (status, body) = http_answer(port, path);
    (status == 200).then_some(body)
}

/// Options for one run of the Python subscriber.
#[derive(Clone, Debug)]
pub struct SubscriberOptions {
    pub room: String,
    pub identity: String,
    /// Simulcast quality to select: "low", "medium" or "high".
    pub quality: Option<String>,
    /// Wait until this many tracks are subscribed before the decode window.
    pub expect_tracks: u32,
    /// Seconds of decoding once the tracks are there.
    pub duration: f64,
    /// Seconds to wait for the expected tracks.
    pub timeout: f64,
    /// Seconds to keep watching the room after decoding (to see publishers leave).
    pub leave_watch: f64,
    /// End the decode window early (after at least 2 s) once 30 video frames
    /// of this size ("WxH") were decoded: with `duration` as the limit, this
    /// leaves the server's allocator the time it takes to reach a layer.
    pub until_size: Option<String>,
    /// "QUALITY@SECONDS": select another quality that far into the decode window.
    pub switches: Vec<String>,
}

impl SubscriberOptions {
    pub fn new(room: &str) -> Self {
        SubscriberOptions {
            room: room.to_string(),
            identity: "test-subscriber".into(),
            quality: None,
            expect_tracks: 0,
            duration: 2.0,
            timeout: 30.0,
            leave_watch: 0.0,
            until_size: None,
            switches: Vec::new(),
        }
    }
}

/// The independent subscriber, running in the background.
pub struct Subscriber {
    child: Child,
}

impl Subscriber {
    pub fn spawn(server: &LiveKitServer, opts: &SubscriberOptions) -> Self {
        let mut cmd = Command::new(python());
        cmd.arg(project_dir().join("tests/helpers/subscriber.py"))
            .args(["--url", &server.ws_url()])
            .args(["--api-key", API_KEY, "--api-secret", API_SECRET])
            .args(["--room", &opts.room, "--identity", &opts.identity])
            .args(["--expect-tracks", &opts.expect_tracks.to_string()])
            .args(["--duration", &opts.duration.to_string()])
            .args(["--timeout", &opts.timeout.to_string()])
            .args(["--leave-watch", &opts.leave_watch.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(q) = &opts.quality {
            cmd.args(["--quality", q]);
        }
        if let Some(size) = &opts.until_size {
            cmd.args(["--until-size", size]);
        }
        for switch in &opts.switches {
            cmd.args(["--switch", switch]);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start the Python subscriber (run scripts/setup.sh): {e}")
        });
        Subscriber { child }
    }

    /// Waits for the subscriber to finish and returns its JSON report.
    pub fn report(self) -> serde_json::Value {
        let out = self.child.wait_with_output().expect("subscriber output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "subscriber printed no report ({e}); status {}\nstdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// A script of `tests/helpers` in the tools' Python, stdout and stderr piped.
pub fn spawn_helper(script: &str, args: &[String]) -> Child {
    Command::new(python())
        .arg(project_dir().join("tests/helpers").join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {script} (run scripts/setup.sh): {e}"))
}

/// `tests/helpers/watch_latency.py` in `room` for `seconds`: the creation
/// time of every frame decoded at the high layer (its JSON on stdout).
pub fn watch_latency(server: &LiveKitServer, room: &str, seconds: u64) -> Child {
    let args = [
        "--url",
        &server.ws_url(),
        "--api-key",
        API_KEY,
        "--api-secret",
        API_SECRET,
        "--room",
        room,
        "--seconds",
        &seconds.to_string(),
    ];
    spawn_helper("watch_latency.py", &args.map(String::from))
}

/// `tests/helpers/publish_stamped.py` to `url` for `seconds`: 640x360
/// frames that carry their creation time.
pub fn publish_stamped(url: &str, seconds: u64) -> Child {
    let args = ["--url", url, "--seconds", &seconds.to_string()];
    spawn_helper("publish_stamped.py", &args.map(String::from))
}

/// Runs the subscriber to completion.
pub fn subscribe(server: &LiveKitServer, opts: &SubscriberOptions) -> serde_json::Value {
    Subscriber::spawn(server, opts).report()
}

/// Viewers of `room` at once, one per (quality, "WxH"): each selects its
/// simulcast quality, expects `tracks` tracks and decodes until it has 30
/// frames of that size (15 s at most). Their reports, in the same order.
pub fn watch_layers(
    server: &LiveKitServer,
    room: &str,
    tracks: u32,
    layers: &[(&str, &str)],
) -> Vec<serde_json::Value> {
    let viewers: Vec<_> = layers
        .iter()
        .map(|(quality, size)| {
            let mut opts = SubscriberOptions::new(room);
            opts.identity = format!("viewer-{quality}");
            opts.quality = Some(quality.to_string());
            opts.expect_tracks = tracks;
            opts.duration = 15.0;
            opts.until_size = Some(size.to_string());
            Subscriber::spawn(server, &opts)
        })
        .collect();
    viewers.into_iter().map(|v| v.report()).collect()
}

/// `identity`'s video in a viewer's report reached `size` (30 frames at
/// least; the server switches layers on a keyframe) and stayed there.
pub fn assert_layer_size(report: &serde_json::Value, identity: &str, quality: &str, size: &str) {
    let video = track_of(report, identity, "video");
    let at_size = video["sizes"][size].as_u64().unwrap_or(0);
    assert!(
        at_size >= 30,
        "{quality}: only {at_size} frames at {size}: {video}"
    );
    assert_eq!(video["last_size"], size, "{quality}: {video}");
}

/// Polls `check` until it returns Some or the timeout passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The tracks in a subscriber report published by `identity`.
/// `identity`'s track of `kind` ("video" or "audio") in a subscriber report;
/// panics with the report when there is none.
pub fn track_of<'a>(
    report: &'a serde_json::Value,
    identity: &str,
    kind: &str,
) -> &'a serde_json::Value {
    tracks_of(report, identity)
        .into_iter()
        .find(|t| t["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} track of {identity}: {report}"))
}

/// Frames (video) or audio frames the subscriber decoded from a track report.
pub fn frames(track: &serde_json::Value) -> u64 {
    track["frames"].as_u64().unwrap_or(0)
}

pub fn tracks_of<'a>(report: &'a serde_json::Value, identity: &str) -> Vec<&'a serde_json::Value> {
    report["tracks"]
        .as_array()
        .map(|tracks| {
            tracks
                .iter()
                .filter(|t| t["participant"] == identity)
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for a child to end, at most `timeout`; its stderr when it did.
pub fn ended_within(child: &mut Child, timeout: Duration) -> Option<(bool, String)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            return Some((status.success(), err));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// `GET path` on a loopback port: the status code and the body, whatever the
/// status (0 when nothing answered).
pub fn http_answer(port: u16, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A metric without labels from a `/metrics` body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
}
