//! The API under bad input, on real components: the service started in-process
//! (or the built binary), raw TCP clients for slow senders, reqwest and the
//! Rust LiveKit IngressClient for calls, real HTTP receivers for webhooks.
//! Each test checks what the sender sees and that nothing else is disturbed.

mod common;

use common::tokens::{admin_token, jwt, now_secs};
use common::{ScratchDir, API_KEY, API_SECRET};
use gstlivekitingress::supervisor::config::Config;
use gstlivekitingress::supervisor::serve::{BODY_TIMEOUT, HEADER_TIMEOUT, MAX_BODY};
use gstlivekitingress::supervisor::webhooks::{self, Webhooks, QUEUE_CAPACITY};
use gstlivekitingress::supervisor::Service;
use livekit_api::access_token::TokenVerifier;
use livekit_api::services::ingress::{IngressClient, IngressListFilter};
use livekit_api::webhooks::WebhookReceiver;
use livekit_protocol as proto;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One service in this process on the embedded store, on free loopback ports.
/// No LiveKit server: nothing here streams.
struct Node {
    rt: tokio::runtime::Runtime,
    service: Option<Service>,
    _dir: ScratchDir,
}

impl Node {
    fn start() -> Node {
        Self::start_with("")
    }

    /// A node whose configuration also has `extra` (top-level YAML).
    fn start_with(extra: &str) -> Node {
        let dir = ScratchDir::new("api-hardening");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("rt");
        let config = Self::config(&dir, extra);
        let service = rt.block_on(Service::start(config)).expect("service starts");
        Node {
            rt,
            service: Some(service),
            _dir: dir,
        }
    }

    fn config(dir: &ScratchDir, extra: &str) -> Config {
        Config::from_yaml(&format!(
            "api_key: {API_KEY}\napi_secret: {API_SECRET}\nrtmp_port: {}\nhttp_port: {}\n\
             store:\n  sqlite: {}\n{extra}",
            common::free_tcp_port(),
            common::free_tcp_port(),
            dir.path().join("ingress.db").display(),
        ))
        .expect("config")
    }

    fn service(&self) -> &Service {
        self.service.as_ref().expect("running")
    }

    fn port(&self) -> u16 {
        self.service().http_addr.port()
    }

    fn client(&self) -> IngressClient {
        IngressClient::with_api_key(
            &format!("http://{}", self.service().http_addr),
            API_KEY,
            API_SECRET,
        )
        .with_failover(false)
    }

    /// A ListIngress through LiveKit's Rust client, and how long it took.
    fn list_timed(&self) -> Duration {
        let t = Instant::now();
        self.rt
            .block_on(self.client().list_ingress(IngressListFilter::All))
            .expect("the API answers other clients");
        t.elapsed()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(service) = self.service.take() {
            self.rt.block_on(service.shutdown());
        }
    }
}

/// A Twirp call with a JSON body through reqwest: HTTP status and Twirp body.
fn twirp_json(
    node: &Node,
    method: &str,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let url = format!(
        "http://127.0.0.1:{}/twirp/livekit.Ingress/{method}",
        node.port()
    );
    node.rt.block_on(async {
        let response = reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .header("Authorization", format!("Bearer {token}"))
            .body(body.to_string())
            .send()
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    })
}

/// What a raw client saw until the server closed the connection (or `limit` passed).
struct Seen {
    response: String,
    closed_after: Option<Duration>,
}

impl Seen {
    fn status(&self) -> Option<&str> {
        self.response.split(' ').nth(1)
    }
}

/// Sends `head` at once, then `trickle` one byte per `every`, reading all
/// the while, until the server closes the connection or `limit` passes.
fn trickle(port: u16, head: &[u8], trickle: &[u8], every: Duration, limit: Duration) -> Seen {
    let start = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let _ = stream.write_all(head);
    let mut response = Vec::new();
    let mut next = 0;
    let mut last_write = Instant::now();
    while start.elapsed() < limit {
        if next < trickle.len() && last_write.elapsed() >= every {
            last_write = Instant::now();
            // A write may still succeed after the close; the read below tells.
            let _ = stream.write_all(&trickle[next..next + 1]);
            next += 1;
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => {
                return Seen {
                    response: String::from_utf8_lossy(&response).into_owned(),
                    closed_after: Some(start.elapsed()),
                }
            }
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                return Seen {
                    response: String::from_utf8_lossy(&response).into_owned(),
                    closed_after: Some(start.elapsed()),
                }
            }
        }
    }
    Seen {
        response: String::from_utf8_lossy(&response).into_owned(),
        closed_after: None,
    }
}

fn twirp_head(method: &str, token: &str, extra: &str) -> String {
    format!(
        "POST /twirp/livekit.Ingress/{method} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    )
}

#[test]
fn slowloris_headers_are_cut_while_others_are_served() {
    let node = Node::start();
    let port = node.port();
    // Ten clients each sending a header byte a second, and one that sends nothing.
    let head = "POST /twirp/livekit.Ingress/ListIngress HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        .to_string()
        + &"a".repeat(60);
    let slow: Vec<_> = (0..11)
        .map(|i| {
            let head = head.clone();
            std::thread::spawn(move || {
                let trickled = if i == 10 { "" } else { head.as_str() };
                trickle(
                    port,
                    b"",
                    trickled.as_bytes(),
                    Duration::from_secs(1),
                    Duration::from_secs(20),
                )
            })
        })
        .collect();
    // Meanwhile the API answers.
    std::thread::sleep(Duration::from_secs(2));
    let answered_in = node.list_timed();
    assert!(
        answered_in < Duration::from_secs(1),
        "ListIngress took {answered_in:?} beside slow clients"
    );
    for client in slow {
        let seen = client.join().expect("client");
        let closed = seen
            .closed_after
            .expect("the slow client's connection was closed");
        eprintln!("slow header client closed after {closed:?}");
        assert!(
            closed < HEADER_TIMEOUT + Duration::from_secs(2),
            "closed after {closed:?}"
        );
    }
    assert!(node.list_timed() < Duration::from_secs(1));
}

#[test]
fn a_slow_body_is_cut_with_a_twirp_error() {
    let node = Node::start();
    let token = admin_token(API_KEY, API_SECRET);
    let body = r#"{"room_name": "a-room-whose-name-takes-a-while-to-arrive"}"#;
    let head = twirp_head(
        "ListIngress",
        &token,
        &format!("Content-Length: {}\r\n", body.len()),
    );
    let seen = trickle(
        node.port(),
        head.as_bytes(),
        body.as_bytes(),
        Duration::from_secs(1),
        Duration::from_secs(20),
    );
    let closed = seen
        .closed_after
        .expect("the slow body's connection was closed");
    eprintln!(
        "slow body client closed after {closed:?}: {}",
        seen.response
    );
    assert!(closed < BODY_TIMEOUT + Duration::from_secs(2), "{closed:?}");
    assert_eq!(seen.status(), Some("408"), "{}", seen.response);
    assert!(
        seen.response.contains("deadline_exceeded"),
        "{}",
        seen.response
    );
    assert!(node.list_timed() < Duration::from_secs(1));
}

#[test]
fn an_oversized_body_is_refused_before_the_token_is_looked_at() {
    let node = Node::start();
    // Declared too large, with a token that is not one: 413 at once, no body read.
    let head = twirp_head(
        "CreateIngress",
        "not-a-token",
        "Content-Length: 10000000\r\n",
    );
    let start = Instant::now();
    let seen = trickle(
        node.port(),
        head.as_bytes(),
        b"",
        Duration::from_secs(1),
        Duration::from_secs(10),
    );
    eprintln!(
        "oversized Content-Length answered in {:?}: {}",
        start.elapsed(),
        seen.response
    );
    assert_eq!(seen.status(), Some("413"), "{}", seen.response);
    assert!(seen.response.contains(r#""code":"invalid_argument""#));
    assert!(
        seen.closed_after.expect("closed") < Duration::from_secs(1),
        "{:?}",
        seen.closed_after
    );

    // Over the limit but under the 2 MB axum allowed before, with a bad
    // token: the size is what is refused, not the token.
    let url = format!(
        "http://127.0.0.1:{}/twirp/livekit.Ingress/CreateIngress",
        node.port()
    );
    let status = node.rt.block_on(async {
        reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .header("Authorization", "Bearer not-a-token")
            .body(vec![b' '; MAX_BODY + 1])
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // The server may close before reqwest has sent it all; then there is no status.
    assert!(matches!(status, Ok(413) | Err(_)), "{status:?}");
    assert!(node.list_timed() < Duration::from_secs(1));
}

#[test]
fn a_chunked_body_is_stopped_at_the_limit() {
    let node = Node::start();
    let token = admin_token(API_KEY, API_SECRET);
    let mut stream = TcpStream::connect(("127.0.0.1", node.port())).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(twirp_head("ListIngress", &token, "Transfer-Encoding: chunked\r\n").as_bytes())
        .expect("head");
    // Up to four times the limit in 16 KiB chunks, as long as the server reads.
    let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
    let mut written = 0;
    while written < 4 * MAX_BODY && stream.write_all(chunk.as_bytes()).is_ok() {
        written += 0x4000;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    eprintln!("chunked: wrote {written} bytes; answer {response}");
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(node.list_timed() < Duration::from_secs(1));
}

#[test]
fn tokens_are_checked_as_livekit_checks_them() {
    let node = Node::start();
    let list = serde_json::json!({});
    let exp = now_secs() + 600;
    let grants = serde_json::json!({ "ingressAdmin": true });
    // Right secret, no iss: LiveKit refuses it (which API key signed it?).
    let no_iss = jwt(
        serde_json::json!({ "exp": exp, "nbf": 0, "sub": "x", "video": grants }),
        API_SECRET,
    );
    let (status, body) = twirp_json(&node, "ListIngress", &no_iss, list.clone());
    assert_eq!(
        (status, &body["code"]),
        (401, &"unauthenticated".into()),
        "{body}"
    );
    // Right secret, another API key as iss.
    let other_iss = jwt(
        serde_json::json!({ "exp": exp, "nbf": 0, "iss": "otherkey", "video": grants }),
        API_SECRET,
    );
    let (status, body) = twirp_json(&node, "ListIngress", &other_iss, list.clone());
    assert_eq!(
        (status, &body["code"]),
        (401, &"unauthenticated".into()),
        "{body}"
    );
    // The same through LiveKit's client with another key and the right secret.
    let err = node
        .rt
        .block_on(
            IngressClient::with_api_key(
                &format!("http://127.0.0.1:{}", node.port()),
                "otherkey",
                API_SECRET,
            )
            .with_failover(false)
            .list_ingress(IngressListFilter::All),
        )
        .expect_err("another API key");
    assert!(format!("{err:?}").contains("unauthenticated"), "{err:?}");
    // The other checks hold: a hand-made token with iss works, expiry,
    // signature and grant are still enforced, and no message repeats the token.
    let good = jwt(
        serde_json::json!({ "exp": exp, "nbf": 0, "iss": API_KEY, "video": grants }),
        API_SECRET,
    );
    assert_eq!(twirp_json(&node, "ListIngress", &good, list.clone()).0, 200);
    let expired = jwt(
        serde_json::json!({ "exp": now_secs() - 120, "nbf": 0, "iss": API_KEY, "video": grants }),
        API_SECRET,
    );
    let wrong_secret = admin_token(API_KEY, "not-the-secret");
    let no_grant = jwt(
        serde_json::json!({ "exp": exp, "nbf": 0, "iss": API_KEY }),
        API_SECRET,
    );
    for (token, status, code) in [
        (&expired, 401, "unauthenticated"),
        (&wrong_secret, 401, "unauthenticated"),
        (&"a.b.c".to_string(), 401, "unauthenticated"),
        // As livekit-server: a valid token without the grant is unauthenticated.
        (&no_grant, 401, "unauthenticated"),
    ] {
        let (got, body) = twirp_json(&node, "ListIngress", token, list.clone());
        assert_eq!((got, &body["code"]), (status, &code.into()), "{body}");
        let msg = body["msg"].as_str().unwrap_or("");
        eprintln!("{status} {code}: {msg}");
        for part in token.split('.').filter(|p| p.len() > 3) {
            assert!(!msg.contains(part), "the error repeats the token: {msg}");
        }
    }
}

/// A receiver that accepts connections and never answers.
struct HangingReceiver {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl HangingReceiver {
    fn start() -> HangingReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                count.fetch_add(1, Ordering::Relaxed);
                held.push(stream);
            }
        });
        HangingReceiver { port, accepted }
    }
}

fn an_ingress() -> proto::IngressInfo {
    proto::IngressInfo {
        ingress_id: "IN_webhooktest".into(),
        stream_key: "streamkey".into(),
        room_name: "room".into(),
        participant_identity: "obs".into(),
        ..Default::default()
    }
}

#[test]
fn a_hanging_webhook_receiver_never_holds_up_the_caller() {
    let receiver = HangingReceiver::start();
    let webhooks = Webhooks::new(
        vec![format!("http://127.0.0.1:{}/hook", receiver.port)],
        API_KEY,
        API_SECRET,
    );
    let dropped_before = webhooks::stats().dropped.load(Ordering::Relaxed);
    let info = an_ingress();
    let events = 1000;
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    for i in 0..events {
        let t = Instant::now();
        webhooks.send(
            if i % 2 == 0 {
                "ingress_started"
            } else {
                "ingress_ended"
            },
            &info,
        );
        slowest = slowest.max(t.elapsed());
    }
    let total = start.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let dropped = webhooks::stats().dropped.load(Ordering::Relaxed) - dropped_before;
    let connections = receiver.accepted.load(Ordering::Relaxed);
    eprintln!(
        "{events} sends in {total:?} (slowest {slowest:?}); queued {}, dropped {dropped}, \
         connections to the receiver {connections}",
        webhooks.queued()
    );
    assert!(
        slowest < Duration::from_millis(50),
        "a send took {slowest:?}"
    );
    assert!(webhooks.queued() <= QUEUE_CAPACITY);
    // All but the queue and the one being sent were dropped, and counted.
    assert!(
        dropped as usize >= events - QUEUE_CAPACITY - 1,
        "dropped {dropped}"
    );
    // One delivery at a time, not a connection per event.
    assert!(connections <= 2, "{connections} connections");

    // The counter is what /metrics shows (one per process).
    let node = Node::start();
    let metrics = common::http_get(node.port(), "/metrics").expect("metrics");
    let shown: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("livekit_ingress_webhooks_dropped_total "))
        .expect("dropped counter")
        .parse()
        .expect("number");
    assert!(shown >= dropped, "/metrics shows {shown} dropped");
    assert!(metrics.contains("livekit_ingress_webhooks_failed_total"));
    assert!(metrics.contains("livekit_ingress_webhooks_sent_total"));
}

#[test]
fn every_webhook_event_has_its_own_id() {
    let sink = common::service::WebhookSink::start();
    let webhooks = Webhooks::new(
        vec![format!("http://127.0.0.1:{}/hook", sink.port)],
        API_KEY,
        API_SECRET,
    );
    let info = an_ingress();
    webhooks.send("ingress_started", &info);
    webhooks.send("ingress_ended", &info);
    let got = common::wait_for(Duration::from_secs(10), || {
        let received = sink.received.lock().expect("lock").clone();
        (received.len() >= 2).then_some(received)
    })
    .expect("both events delivered");
    // Verified as LiveKit's own receiver verifies them.
    let receiver = WebhookReceiver::new(TokenVerifier::with_api_key(API_KEY, API_SECRET));
    let events: Vec<proto::WebhookEvent> = got
        .iter()
        .map(|(auth, body)| {
            receiver
                .receive(body, auth)
                .expect("a valid LiveKit webhook")
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["ingress_started", "ingress_ended"]);
    eprintln!("ids {} {}", events[0].id, events[1].id);
    assert_ne!(events[0].id, events[1].id);
    assert!(events
        .iter()
        .all(|e| e.id.starts_with("EV_") && e.id.len() == 15));
    assert!(events
        .iter()
        .all(|e| e.ingress_info.as_ref() == Some(&info)));
}

#[test]
fn dev_credentials_stay_on_loopback() {
    let dir = ScratchDir::new("exposure");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    // Unset bind_address with the dev credentials: loopback.
    let config = Node::config(&dir, "");
    assert!(config.dev_credentials());
    let service = rt.block_on(Service::start(config)).expect("starts");
    assert!(
        service.http_addr.ip().is_loopback(),
        "{}",
        service.http_addr
    );
    assert!(
        service.rtmp_addr.ip().is_loopback(),
        "{}",
        service.rtmp_addr
    );
    rt.block_on(service.shutdown());
    // Every interface with the dev credentials: refused, naming the settings.
    let err = rt
        .block_on(Service::start(Node::config(
            &dir,
            "bind_address: 0.0.0.0\n",
        )))
        .err()
        .expect("refused");
    assert!(
        err.contains("bind_address") && err.contains("api_secret"),
        "{err}"
    );
    // The binary says so and exits.
    let out = Command::new(env!("CARGO_BIN_EXE_livekit-ingress"))
        .env("LIVEKIT_INGRESS_BIND_ADDRESS", "0.0.0.0")
        .env_remove("LIVEKIT_API_SECRET")
        .env_remove("LIVEKIT_INGRESS_CONFIG")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bind_address"), "{stderr}");
    // Real credentials may listen on every interface.
    let real = Config {
        api_key: "APIreal".into(),
        api_secret: "a-real-secret-that-is-long-enough-0123456789".into(),
        ..Node::config(&dir, "")
    };
    let service = rt.block_on(Service::start(real)).expect("starts");
    assert!(
        service.http_addr.ip().is_unspecified(),
        "{}",
        service.http_addr
    );
    rt.block_on(service.shutdown());
}

#[test]
fn metrics_on_their_own_port() {
    let port = common::free_tcp_port();
    let node = Node::start_with(&format!("prometheus_port: {port}\n"));
    assert_eq!(node.service().metrics_addr.map(|a| a.port()), Some(port));
    let metrics = common::http_get(port, "/metrics").expect("metrics on prometheus_port");
    assert!(
        metrics.contains("livekit_ingress_sessions_live"),
        "{metrics}"
    );
    assert!(common::http_get(node.port(), "/metrics").is_none());
    assert!(common::http_get_ok(node.port(), "/health"));
    // Without it, /metrics is on the API port.
    let plain = Node::start();
    assert!(common::http_get(plain.port(), "/metrics").is_some());
}

#[test]
fn malformed_requests_get_twirp_errors_and_nothing_else_moves() {
    let node = Node::start();
    let token = admin_token(API_KEY, API_SECRET);
    let url = format!("http://127.0.0.1:{}/twirp/livekit.Ingress/", node.port());
    let cases: [(&str, &str, &[u8], u16, &str); 6] = [
        (
            "CreateIngress",
            "application/protobuf",
            b"\xff\xff\xff",
            400,
            "malformed",
        ),
        (
            "CreateIngress",
            "application/json",
            b"{\"room_name\": ",
            400,
            "malformed",
        ),
        (
            "CreateIngress",
            "application/json",
            b"{\"input_type\": 99}",
            400,
            "invalid_argument",
        ),
        ("UpdateIngress", "application/json", b"{}", 404, "not_found"),
        // Twirp's own codes and LiveKit's answers (tests/parity.rs compares them).
        ("ListIngress", "text/plain", b"", 404, "bad_route"),
        ("Nope", "application/json", b"{}", 404, "bad_route"),
    ];
    for (method, content_type, body, status, code) in cases {
        let (got, answer) = node.rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{url}{method}"))
                .header("Content-Type", content_type)
                .header("Authorization", format!("Bearer {token}"))
                .body(body.to_vec())
                .send()
                .await
                .expect("answer");
            (r.status().as_u16(), r.text().await.expect("body"))
        });
        eprintln!("{method} {content_type} {body:?} -> {got} {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("Twirp JSON");
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }
    let listed = node
        .rt
        .block_on(node.client().list_ingress(IngressListFilter::All))
        .expect("list");
    assert!(listed.is_empty(), "nothing was created: {listed:?}");
}

/// Inputs the fuzz target found (`fuzz/regressions/api_requests/`), replayed
/// through the same decode and checks.
#[test]
fn api_fuzz_regressions() {
    use gstlivekitingress::supervisor::api::{self, Call, Encoding};
    let dir = common::project_dir().join("fuzz/regressions/api_requests");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let urls = gstlivekitingress::supervisor::ingress::BaseUrls {
        rtmp: "rtmp://127.0.0.1:1935/live".into(),
        whip: "http://127.0.0.1:7888/w".into(),
    };
    let current = gstlivekitingress::supervisor::ingress::create(
        proto::CreateIngressRequest {
            room_name: "room".into(),
            participant_identity: "obs".into(),
            ..Default::default()
        },
        &urls,
    )
    .expect("valid");
    for entry in entries {
        let data = std::fs::read(entry.expect("entry").path()).expect("input");
        let methods = [
            "CreateIngress",
            "UpdateIngress",
            "ListIngress",
            "DeleteIngress",
        ];
        for method in methods {
            for encoding in [Encoding::Protobuf, Encoding::Json] {
                if let Ok(call) = Call::decode(method, encoding, &data) {
                    let _ = api::check(call, encoding, &current, &urls);
                }
            }
        }
    }
}
