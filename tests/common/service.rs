//! The service under test: `livekit-ingress` started in-process on free
//! loopback ports beside its own LiveKit server, with a webhook receiver, the
//! Rust API client and ffmpeg publishers.

use super::{LiveKitServer, ScratchDir, API_KEY, API_SECRET};
use gstlivekitingress::supervisor::config::Config;
use gstlivekitingress::supervisor::Service;
use livekit_api::access_token::TokenVerifier;
use livekit_api::services::ingress::{CreateIngressOptions, IngressClient, IngressListFilter};
use livekit_api::services::room::RoomClient;
use livekit_api::services::ServerError;
use livekit_api::services::ServiceError;
use livekit_api::webhooks::WebhookReceiver;
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A loopback HTTP server that records the webhooks it receives.
pub struct WebhookSink {
    pub port: u16,
    pub received: Arc<Mutex<Vec<(String, String)>>>,
}

impl WebhookSink {
    pub fn start() -> WebhookSink {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let mut reader = BufReader::new(stream);
                let (mut auth, mut length) = (String::new(), 0usize);
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n"
                {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("authorization:") {
                        auth = line["authorization:".len()..].trim().to_string();
                    }
                    line.clear();
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_ok() {
                    sink.lock()
                        .expect("lock")
                        .push((auth, String::from_utf8_lossy(&body).into_owned()));
                }
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        WebhookSink { port, received }
    }

    /// Events verified with LiveKit's own webhook receiver.
    pub fn events(&self) -> Vec<proto::WebhookEvent> {
        let receiver = WebhookReceiver::new(TokenVerifier::with_api_key(API_KEY, API_SECRET));
        self.received
            .lock()
            .expect("lock")
            .iter()
            .map(|(auth, body)| {
                receiver
                    .receive(body, auth)
                    .expect("a valid LiveKit webhook")
            })
            .collect()
    }
}

pub struct Harness {
    pub webhooks: WebhookSink,
    pub rt: tokio::runtime::Runtime,
    pub service: Option<Service>,
    /// More nodes sharing the first one's store (Redis).
    pub others: Vec<Service>,
    pub livekit: LiveKitServer,
    pub dir: ScratchDir,
    pub store_yaml: String,
    pub rtmp_port: u16,
    /// Nodes also listen for SRT (`srt_port`, a fresh UDP port each).
    pub srt: bool,
    /// The nodes' `video_passthrough`.
    pub passthrough: gstlivekitingress::passthrough::Mode,
}

impl Harness {
    /// One node on the embedded SQLite store.
    pub fn start() -> Harness {
        let dir = ScratchDir::new("service");
        let store = format!("  sqlite: {}\n", dir.path().join("ingress.db").display());
        Self::start_with_store(dir, store)
    }

    /// One node on the embedded SQLite store that also listens for SRT.
    pub fn start_with_srt() -> Harness {
        let dir = ScratchDir::new("srt-service");
        let store = format!("  sqlite: {}\n", dir.path().join("ingress.db").display());
        Self::start_with(dir, store, true)
    }

    /// One node on the embedded SQLite store with `video_passthrough: mode`,
    /// listening for RTMP and SRT.
    pub fn start_with_passthrough(mode: gstlivekitingress::passthrough::Mode) -> Harness {
        let dir = ScratchDir::new("passthrough-service");
        let store = format!("  sqlite: {}\n", dir.path().join("ingress.db").display());
        Self::start_configured(dir, store, true, mode)
    }

    /// One node on the given `store:` section (indented YAML).
    pub fn start_with_store(dir: ScratchDir, store_yaml: String) -> Harness {
        Self::start_with(dir, store_yaml, false)
    }

    fn start_with(dir: ScratchDir, store_yaml: String, srt: bool) -> Harness {
        Self::start_configured(dir, store_yaml, srt, Default::default())
    }

    fn start_configured(
        dir: ScratchDir,
        store_yaml: String,
        srt: bool,
        passthrough: gstlivekitingress::passthrough::Mode,
    ) -> Harness {
        let livekit = LiveKitServer::start();
        let webhooks = WebhookSink::start();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("rt");
        let mut h = Harness {
            webhooks,
            rt,
            service: None,
            others: Vec::new(),
            livekit,
            dir,
            store_yaml,
            rtmp_port: 0,
            srt,
            passthrough,
        };
        let service = h.start_node();
        h.rtmp_port = service.rtmp_addr.port();
        h.service = Some(service);
        h
    }

    /// A service on fresh ports over this harness's store and LiveKit server.
    pub fn start_node(&self) -> Service {
        let rtmp_port = super::free_tcp_port();
        let config = Config::from_yaml(&format!(
            "api_key: {API_KEY}\napi_secret: {API_SECRET}\nws_url: {}\nrtmp_port: {rtmp_port}\n\
             bind_address: 127.0.0.1\nhttp_port: {}\nstore:\n{}\
             webhook:\n  urls: [\"http://127.0.0.1:{}/webhook\"]\n",
            self.livekit.ws_url(),
            super::free_tcp_port(),
            self.store_yaml,
            self.webhooks.port
        ))
        .expect("config");
        let config = Config {
            rtmp_base_url: format!("rtmp://127.0.0.1:{rtmp_port}/live"),
            srt_port: self.srt.then(super::free_udp_port),
            video_passthrough: self.passthrough,
            ..config
        };
        self.rt
            .block_on(Service::start(config))
            .expect("service starts")
    }

    /// The SRT port of a harness started with SRT.
    pub fn srt_port(&self) -> u16 {
        self.service
            .as_ref()
            .and_then(|s| s.srt_addr)
            .expect("the service listens for SRT")
            .port()
    }

    pub fn api_url(&self) -> String {
        format!(
            "http://{}",
            self.service.as_ref().expect("running").http_addr
        )
    }

    pub fn client(&self) -> IngressClient {
        IngressClient::with_api_key(&self.api_url(), API_KEY, API_SECRET).with_failover(false)
    }

    pub fn client_of(node: &Service) -> IngressClient {
        IngressClient::with_api_key(&format!("http://{}", node.http_addr), API_KEY, API_SECRET)
            .with_failover(false)
    }

    pub fn create(&self, room: &str, identity: &str, name: &str) -> proto::IngressInfo {
        self.rt
            .block_on(self.client().create_ingress(
                proto::IngressInput::RtmpInput,
                CreateIngressOptions {
                    name: format!("{room} ingress"),
                    room_name: room.into(),
                    participant_identity: identity.into(),
                    participant_name: name.into(),
                    ..Default::default()
                },
            ))
            .expect("create ingress")
    }

    /// A call to the service's `/ingress/{id}/options` (`body` for a PUT),
    /// with an admin token when `authorized`: the HTTP status and the JSON
    /// body.
    pub fn ingress_options(
        &self,
        method: reqwest::Method,
        id: &str,
        body: Option<&str>,
        authorized: bool,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}/ingress/{id}/options", self.api_url());
        self.rt.block_on(async {
            let mut request = reqwest::Client::new().request(method, url);
            if authorized {
                let token = super::tokens::admin_token(API_KEY, API_SECRET);
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request
                    .header("Content-Type", "application/json")
                    .body(body.to_string());
            }
            let response = request.send().await.expect("an answer");
            let status = response.status().as_u16();
            let text = response.text().await.expect("body");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
            (status, json)
        })
    }

    pub fn info(&self, id: &str) -> proto::IngressInfo {
        let items = self
            .rt
            .block_on(
                self.client()
                    .list_ingress(IngressListFilter::IngressId(id.into())),
            )
            .expect("list");
        items.into_iter().next().expect("ingress listed")
    }

    pub fn wait_status(&self, id: &str, status: Status, timeout: Duration) -> proto::IngressInfo {
        super::wait_for(timeout, || {
            let info = self.info(id);
            (info.state.as_ref().map(|s| s.status) == Some(status as i32)).then_some(info)
        })
        .unwrap_or_else(|| {
            panic!(
                "ingress {id} never reached {status:?}: {:?}",
                self.info(id).state
            )
        })
    }

    pub fn participant(&self, room: &str, identity: &str) -> Option<proto::ParticipantInfo> {
        let rooms = RoomClient::with_api_key(&self.livekit.http_url(), API_KEY, API_SECRET)
            .with_failover(false);
        self.rt
            .block_on(rooms.list_participants(room))
            .ok()?
            .into_iter()
            .find(|p| p.identity == identity)
    }

    /// Whether `identity` is gone from `room` within `timeout`.
    pub fn left_within(&self, room: &str, identity: &str, timeout: Duration) -> bool {
        super::wait_for(timeout, || {
            self.participant(room, identity).is_none().then_some(())
        })
        .is_some()
    }

    /// The service cut a live stream (`why` says why it should have): its
    /// participant leaves within `timeout` and ffmpeg exits with an error.
    pub fn assert_stream_cut(
        &self,
        room: &str,
        identity: &str,
        ffmpeg: &mut Child,
        timeout: Duration,
        why: &str,
    ) {
        assert!(
            self.left_within(room, identity, timeout),
            "{identity} stayed in {room}: {why}"
        );
        let status = ffmpeg.wait().expect("ffmpeg ends");
        assert!(
            !status.success(),
            "ffmpeg did not see its stream cut: {why}"
        );
    }

    /// ffmpeg publishing a 720p test pattern with a tone for `seconds`.
    pub fn publish(&self, key: &str, seconds: u32) -> Child {
        Self::publish_to(self.rtmp_port, key, seconds)
    }

    pub fn publish_to(rtmp_port: u16, key: &str, seconds: u32) -> Child {
        Self::publish_sized(rtmp_port, key, seconds, "1280x720")
    }

    /// ffmpeg publishing a `size` ("WxH") 30 fps test pattern (x264
    /// ultrafast, a keyframe a second) with a tone for `seconds`; its stderr
    /// piped (ffmpeg prints a refusal's description there).
    pub fn publish_sized(rtmp_port: u16, key: &str, seconds: u32, size: &str) -> Child {
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size={size}:rate=30"),
            ])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &seconds.to_string()])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "30"])
            .args(["-c:a", "aac", "-ac", "2", "-f", "flv"])
            .arg(format!("rtmp://127.0.0.1:{rtmp_port}/live/{key}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for service in self.service.take().into_iter().chain(self.others.drain(..)) {
            self.rt.block_on(service.shutdown());
        }
    }
}

pub fn twirp_code(err: ServiceError) -> String {
    match err {
        ServiceError::Twirp(ServerError::Twirp(code)) => code.code,
        other => format!("not a twirp error: {other}"),
    }
}

/// Another node as its own `livekit-ingress` process, over the harness's
/// store and LiveKit server: what a test can kill as a machine dies.
pub struct NodeProcess {
    child: Child,
    pub rtmp_port: u16,
    pub http_port: u16,
    pub log_path: std::path::PathBuf,
}

impl NodeProcess {
    pub fn start(h: &Harness, name: &str) -> NodeProcess {
        Self::start_with(h, name, &[], "")
    }

    /// A node run through `wrapper` (a command and its arguments, such as
    /// `prlimit --nofile=…`) with `extra` top-level YAML in its configuration.
    pub fn start_with(h: &Harness, name: &str, wrapper: &[&str], extra: &str) -> NodeProcess {
        let (rtmp_port, http_port) = (super::free_tcp_port(), super::free_tcp_port());
        let config = format!(
            "api_key: {API_KEY}\napi_secret: {API_SECRET}\nws_url: {}\nrtmp_port: {rtmp_port}\n\
             bind_address: 127.0.0.1\nhttp_port: {http_port}\n{extra}store:\n{}",
            h.livekit.ws_url(),
            h.store_yaml,
        );
        let config_path = h.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&config_path, config).expect("node config");
        let log_path = h.dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("node log");
        let bin = env!("CARGO_BIN_EXE_livekit-ingress");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("livekit-ingress");
        let mut node = NodeProcess {
            child,
            rtmp_port,
            http_port,
            log_path,
        };
        let ready = super::wait_for(Duration::from_secs(20), || {
            if let Ok(Some(exit)) = node.child.try_wait() {
                panic!("node {name} exited ({exit}):\n{}", node.log());
            }
            super::http_get_ok(http_port, "/health").then_some(())
        });
        assert!(ready.is_some(), "node {name} not ready:\n{}", node.log());
        node
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client of this node's API.
    pub fn client(&self) -> IngressClient {
        IngressClient::with_api_key(
            &format!("http://127.0.0.1:{}", self.http_port),
            API_KEY,
            API_SECRET,
        )
        .with_failover(false)
    }

    /// Sends `signal` (SIGTERM, SIGINT) to the node.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to the node's own process.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Whether the node exited within `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let pid = self.child.id();
        super::wait_for(timeout, || {
            // A zombie (exited, not reaped) is gone as a service.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            stat.is_none_or(|s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')))
                .then_some(())
        })
        .is_some()
    }

    /// SIGKILL: the node gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
