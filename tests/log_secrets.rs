//! Secrets stay out of the logs: the service, run as its own process with
//! every log at its most verbose (RUST_LOG=trace, GST_DEBUG=*:6), serves the
//! API (the Rust and Python clients, raw HTTP), takes a real publish into a
//! room, refuses wrong, oversized and unauthenticated attempts (forged,
//! expired, issuer-less and non-tokens); its log must hold none of the API
//! secret, the access tokens used, or the stream keys (valid or not).

mod common;

use common::tokens::{admin_token, jwt, now_secs};
use common::{LiveKitServer, ScratchDir};
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_api::services::ingress::{
    CreateIngressOptions, IngressClient, IngressListFilter, UpdateIngressOptions,
};
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::process::{Command, Stdio};
use std::time::Duration;

const KEY: &str = "APIlogcheck";

fn random_text(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

#[test]
fn no_secret_reaches_the_log() {
    let secret = random_text(40);
    let livekit = LiveKitServer::start_with(&format!("keys:\n  {KEY}: {secret}\n"));
    let dir = ScratchDir::new("log-secrets");
    let (rtmp_port, http_port) = (common::free_tcp_port(), common::free_tcp_port());
    let config = format!(
        "api_key: {KEY}\napi_secret: {secret}\nws_url: {}\nrtmp_port: {rtmp_port}\n\
         bind_address: 127.0.0.1\nhttp_port: {http_port}\nstore:\n  sqlite: {}\n",
        livekit.ws_url(),
        dir.path().join("ingress.db").display()
    );
    let config_path = dir.path().join("service.yaml");
    std::fs::write(&config_path, config).expect("config");
    let log_path = dir.path().join("service.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut service = Command::new(env!("CARGO_BIN_EXE_livekit-ingress"))
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "trace")
        .env("GST_DEBUG", "*:6")
        .env("GST_DEBUG_NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("livekit-ingress");
    let ready = common::wait_for(Duration::from_secs(20), || {
        common::http_get_ok(http_port, "/health").then_some(())
    });
    assert!(ready.is_some(), "the service did not start");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let api = format!("http://127.0.0.1:{http_port}");
    let client = IngressClient::with_api_key(&api, KEY, &secret).with_failover(false);
    let info = rt
        .block_on(client.create_ingress(
            proto::IngressInput::RtmpInput,
            CreateIngressOptions {
                name: "logged".into(),
                room_name: "log-room".into(),
                participant_identity: "logger".into(),
                ..Default::default()
            },
        ))
        .expect("create");
    let status = |client: &IngressClient| {
        rt.block_on(client.list_ingress(IngressListFilter::IngressId(info.ingress_id.clone())))
            .expect("list")
            .into_iter()
            .next()
            .and_then(|i| i.state)
            .map(|s| s.status)
    };

    // A real publish reaches the room, then ends.
    let mut ffmpeg = publish(rtmp_port, &info.stream_key, 30);
    let live = common::wait_for(Duration::from_secs(20), || {
        (status(&client) == Some(Status::EndpointPublishing as i32)).then_some(())
    });
    assert!(live.is_some(), "the publish never reached the room");
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let rest = common::wait_for(Duration::from_secs(15), || {
        (status(&client) == Some(Status::EndpointInactive as i32)).then_some(())
    });
    assert!(rest.is_some(), "the stream did not end");

    // Refused publishes: an unknown key, an oversized one.
    let wrong = random_text(16);
    let oversized = random_text(64 * 1024);
    for key in [&wrong, &oversized] {
        let mut refused = publish(rtmp_port, key, 3);
        assert!(!refused.wait().expect("ffmpeg").success(), "refused");
    }

    // API calls with a token signed by another secret and one that expired.
    let forged = IngressClient::with_api_key(&api, KEY, &random_text(40)).with_failover(false);
    assert!(rt
        .block_on(forged.list_ingress(IngressListFilter::All))
        .is_err());
    let expired = AccessToken::with_api_key(KEY, &secret)
        .with_grants(VideoGrants {
            ingress_admin: true,
            ..Default::default()
        })
        .with_ttl(Duration::from_secs(0))
        .to_jwt()
        .expect("token");
    let valid = AccessToken::with_api_key(KEY, &secret)
        .with_grants(VideoGrants {
            ingress_admin: true,
            ..Default::default()
        })
        .to_jwt()
        .expect("token");
    std::thread::sleep(Duration::from_millis(1100));
    for token in [&expired, &valid] {
        let out = Command::new("curl")
            .args(["-s", "-X", "POST", "-H", "Content-Type: application/json"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["-d", "{}"])
            .arg(format!("{api}/twirp/livekit.Ingress/ListIngress"))
            .output()
            .expect("curl");
        assert!(out.status.success());
    }
    // The API through raw HTTP with tokens of our own, bad tokens, and
    // LiveKit's Python client.
    let mut secrets: Vec<String> = Vec::new();
    // The same calls with tokens of our own, known to look for.
    let token = admin_token(KEY, &secret);
    secrets.push(token.clone());
    let call = |method: &str, token: &str, body: serde_json::Value| {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{api}/twirp/livekit.Ingress/{method}"))
                .header("Content-Type", "application/json")
                .header("Authorization", format!("Bearer {token}"))
                .body(body.to_string())
                .send()
                .await
                .expect("answer");
            let status = r.status().as_u16();
            (status, r.text().await.expect("body"))
        })
    };
    let (status, body) = call(
        "CreateIngress",
        &token,
        serde_json::json!({"input_type": 0, "room_name": "r2", "participant_identity": "p2"}),
    );
    assert_eq!(status, 200, "{body}");
    let second: serde_json::Value = serde_json::from_str(&body).expect("json");
    let field = |snake: &str, camel: &str| {
        second[snake]
            .as_str()
            .or(second[camel].as_str())
            .unwrap_or_else(|| panic!("{snake} in {body}"))
            .to_string()
    };
    secrets.push(field("stream_key", "streamKey"));
    let id = field("ingress_id", "ingressId");
    assert_eq!(call("ListIngress", &token, serde_json::json!({})).0, 200);
    assert_eq!(
        call(
            "UpdateIngress",
            &token,
            serde_json::json!({"ingress_id": id, "participant_name": "renamed"})
        )
        .0,
        200
    );
    rt.block_on(client.update_ingress(
        &info.ingress_id,
        UpdateIngressOptions {
            name: "renamed".into(),
            ..Default::default()
        },
    ))
    .expect("update");
    rt.block_on(client.list_ingress(IngressListFilter::All))
        .expect("list");
    // Bad tokens: the wrong secret, no iss, expired, not a token.
    let bad = [
        admin_token(KEY, "a-guessed-secret-of-some-length-0000000000"),
        jwt(
            serde_json::json!({"exp": now_secs() + 600, "video": {"ingressAdmin": true}}),
            &secret,
        ),
        jwt(
            serde_json::json!({"exp": now_secs() - 600, "iss": KEY, "video": {"ingressAdmin": true}}),
            &secret,
        ),
        "not-a-token-but-a-secret-looking-string-7f3a9c".to_string(),
    ];
    for token in &bad {
        assert_eq!(call("ListIngress", token, serde_json::json!({})).0, 401);
        secrets.push(token.clone());
    }
    assert_eq!(
        call(
            "DeleteIngress",
            &token,
            serde_json::json!({"ingress_id": id})
        )
        .0,
        200
    );
    // LiveKit's Python client too, and with a wrong secret.
    let script = r#"
import asyncio, sys
from livekit import api
async def main():
    url, key, secret = sys.argv[1:4]
    lk = api.LiveKitAPI(url, key, secret)
    info = await lk.ingress.create_ingress(api.CreateIngressRequest(
        input_type=api.IngressInput.RTMP_INPUT, room_name="py", participant_identity="py"))
    await lk.ingress.list_ingress(api.ListIngressRequest(room_name="py"))
    await lk.ingress.update_ingress(api.UpdateIngressRequest(ingress_id=info.ingress_id, name="n"))
    await lk.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=info.ingress_id))
    await lk.aclose()
    bad = api.LiveKitAPI(url, key, "a-wrong-secret-of-sufficient-length-000000")
    try:
        await bad.ingress.list_ingress(api.ListIngressRequest())
        raise SystemExit("a wrong secret was accepted")
    except api.TwirpError as e:
        assert e.code == "unauthenticated", e
    await bad.aclose()
    print("stream key", info.stream_key)
asyncio.run(main())
"#;
    let out = Command::new(common::python())
        .args(["-c", script, &api, KEY, &secret])
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let py_key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stream key "))
        .unwrap_or_else(|| {
            panic!(
                "python client: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    secrets.push(py_key.trim().to_string());
    rt.block_on(client.delete_ingress(&info.ingress_id))
        .expect("delete");

    // SIGTERM: the service ends cleanly and flushes its log.
    // SAFETY: a signal to our own child process.
    unsafe { libc::kill(service.id() as libc::pid_t, libc::SIGTERM) };
    let _ = service.wait();

    let log = std::fs::read(&log_path).expect("read log");
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains(&info.ingress_id),
        "the log names the ingress (it is the log of this run)"
    );
    for (what, needle) in [
        ("the API secret", secret.as_str()),
        ("the stream key", info.stream_key.as_str()),
        ("an unknown stream key", wrong.as_str()),
        ("an oversized stream key", &oversized[..64]),
        ("an expired token", expired.as_str()),
        ("a valid token", valid.as_str()),
    ] {
        if let Some(at) = log.find(needle) {
            let line_start = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = log[at..].find('\n').map_or(log.len(), |i| at + i);
            panic!(
                "{what} is in the log ({} bytes):\n{}",
                log.len(),
                &log[line_start..line_end.min(line_start + 600)]
            );
        }
    }
    assert!(log.contains("API call refused"), "refusals are logged");
    for s in &secrets {
        // A token's signature alone would be enough to show it leaked.
        let needle = s.rsplit('.').next().unwrap_or(s);
        assert!(
            !log.contains(s.as_str()) && !log.contains(needle),
            "the log shows a secret ({}…): {}",
            &s[..6],
            log.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_default()
                .chars()
                .take(600)
                .collect::<String>()
        );
    }
    // Tokens the service mints itself (to join the room) are secrets too:
    // no JWT at all may be logged.
    assert!(
        !log.contains("eyJhbGciOi"),
        "a JWT is in the log: {}",
        log.lines()
            .find(|l| l.contains("eyJhbGciOi"))
            .unwrap_or_default()
            .chars()
            .take(600)
            .collect::<String>()
    );
}

fn publish(rtmp_port: u16, key: &str, seconds: u32) -> std::process::Child {
    let mut ffmpeg = common::service::Harness::publish_sized(rtmp_port, key, seconds, "640x360");
    // Drained, not read: ffmpeg repeats a 64 KiB key in its error, more than
    // a pipe holds, and would block on it.
    if let Some(mut stderr) = ffmpeg.stderr.take() {
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    }
    ffmpeg
}
