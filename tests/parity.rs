//! The Ingress API against livekit-server v1.13.5 (with Redis and its
//! `ingress:` section, no ingress worker): the same requests to both, through
//! raw HTTP in JSON and protobuf and through LiveKit's Rust and Python
//! clients (`tests/helpers/ingress_client.py`), and the
//! answers compared field by field (ids, stream keys and times by format).
//! Where this service answers otherwise on purpose, the case says so and how
//! each side answers (README, "LiveKit compatibility").

mod common;

use common::tokens::{admin_token, jwt, now_secs};
use common::{LiveKitServer, RedisServer, ScratchDir, API_KEY, API_SECRET};
use gstlivekitingress::supervisor::config::Config;
use gstlivekitingress::supervisor::Service;
use livekit_api::services::ingress::{
    CreateIngressOptions, IngressClient, IngressListFilter, UpdateIngressOptions,
};
use livekit_protocol as proto;
use prost::Message;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Command, Stdio};

/// LiveKit's id alphabet (protocol's utils/guid), written out here on its own.
const BASE57: &str = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn is_guid(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 12 && rest.chars().all(|c| BASE57.contains(c)))
}

/// One HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Vec<u8>,
}

struct Parity {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    /// [livekit-server, this service]
    urls: [String; 2],
    /// Ingress name -> its id on each side.
    ids: HashMap<String, [String; 2]>,
    _livekit: LiveKitServer,
    _redis: RedisServer,
    _service: Service,
    _dir: ScratchDir,
}

const SIDES: [&str; 2] = ["livekit-server", "livekit-ingress"];

impl Parity {
    fn start() -> Parity {
        let redis = RedisServer::start();
        let rtmp_port = common::free_tcp_port();
        let rtmp_base_url = format!("rtmp://127.0.0.1:{rtmp_port}/live");
        let livekit = LiveKitServer::start_with(&format!(
            "redis:\n  address: {}\ningress:\n  rtmp_base_url: {rtmp_base_url}\n  \
             whip_base_url: http://127.0.0.1:9/w\n",
            redis.address()
        ));
        let dir = ScratchDir::new("parity");
        let config = Config::from_yaml(&format!(
            "api_key: {API_KEY}\napi_secret: {API_SECRET}\nws_url: {}\nrtmp_port: {rtmp_port}\n\
             bind_address: 127.0.0.1\nhttp_port: {}\nstore:\n  sqlite: {}\n",
            livekit.ws_url(),
            common::free_tcp_port(),
            dir.path().join("ingress.db").display()
        ))
        .expect("config");
        let config = Config {
            rtmp_base_url,
            whip_base_url: "http://127.0.0.1:9/w".into(),
            ..config
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("rt");
        let service = rt.block_on(Service::start(config)).expect("service");
        Parity {
            http: reqwest::Client::new(),
            urls: [livekit.http_url(), format!("http://{}", service.http_addr)],
            ids: HashMap::new(),
            rt,
            _livekit: livekit,
            _redis: redis,
            _service: service,
            _dir: dir,
        }
    }

    fn post(&self, side: usize, method: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let url = format!("{}/twirp/livekit.Ingress/{method}", self.urls[side]);
        self.rt.block_on(async {
            let mut request = self.http.post(url).body(body);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.expect("an answer");
            let status = response.status().as_u16();
            let body = response.bytes().await.expect("body").to_vec();
            Reply { status, body }
        })
    }

    /// `body` with every `"$id:NAME"` string replaced by that ingress's id on `side`.
    fn on_side(&self, body: &Value, side: usize) -> Value {
        match body {
            Value::String(s) => match s.strip_prefix("$id:") {
                Some(name) => Value::String(
                    self.ids
                        .get(name)
                        .unwrap_or_else(|| panic!("no ingress {name}"))[side]
                        .clone(),
                ),
                None => body.clone(),
            },
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.on_side(v, side)))
                    .collect(),
            ),
            _ => body.clone(),
        }
    }

    /// `body` (a request in JSON) sent to both sides as `encoding`, each
    /// answer in comparable form.
    fn both(&self, method: &str, body: &Value, encoding: Encoding, token: &str) -> [Outcome; 2] {
        [0, 1].map(|side| {
            let body = self.on_side(body, side);
            let auth = format!("Bearer {token}");
            let reply = match encoding {
                Encoding::Json => self.post(
                    side,
                    method,
                    &[
                        ("Content-Type", "application/json"),
                        ("Authorization", &auth),
                    ],
                    body.to_string().into_bytes(),
                ),
                Encoding::Protobuf => self.post(
                    side,
                    method,
                    &[
                        ("Content-Type", "application/protobuf"),
                        ("Authorization", &auth),
                    ],
                    request_protobuf(method, body),
                ),
            };
            Outcome::of(method, encoding, &reply)
        })
    }

    /// Sends `body` to both and asserts the same answer; created ingresses are
    /// remembered by name.
    fn same(&mut self, method: &str, body: Value, encoding: Encoding) -> Outcome {
        let [lk, us] = self.both(method, &body, encoding, &token());
        assert_eq!(
            lk, us,
            "{method} {encoding:?} {body}: livekit-server (left) and livekit-ingress (right) differ"
        );
        if let Some(ids) = self.created(method, &body, encoding) {
            self.ids.insert(ids.0, ids.1);
        }
        lk
    }

    /// After a create both sides took: the ids each gave, found by name.
    fn created(&self, method: &str, body: &Value, _: Encoding) -> Option<(String, [String; 2])> {
        if method != "CreateIngress" {
            return None;
        }
        let name = body["name"].as_str()?.to_string();
        let ids = [0, 1].map(|side| self.id_by_name(side, &name));
        Some((name, [ids[0].clone()?, ids[1].clone()?]))
    }

    fn id_by_name(&self, side: usize, name: &str) -> Option<String> {
        let reply = self.post(
            side,
            "ListIngress",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &format!("Bearer {}", token())),
            ],
            b"{}".to_vec(),
        );
        let list: Value = serde_json::from_slice(&reply.body).expect("list");
        list["items"]
            .as_array()?
            .iter()
            .find(|i| i["name"] == name)
            .map(|i| i["ingress_id"].as_str().expect("id").to_string())
    }

    /// A case where this service answers otherwise on purpose: each side's
    /// Twirp code (or "ok") must be what the case declares. What one side
    /// created is deleted again, so both hold the same ingresses after.
    fn diverges(&mut self, method: &str, body: Value, codes: [&str; 2]) {
        for encoding in [Encoding::Json, Encoding::Protobuf] {
            let outcomes = self.both(method, &body, encoding, &token());
            for side in 0..2 {
                assert_eq!(
                    outcomes[side].code(),
                    codes[side],
                    "{method} {body} on {}: {:?}",
                    SIDES[side],
                    outcomes[side]
                );
                if method == "CreateIngress" && codes[side] == "ok" {
                    let name = body["name"].as_str().expect("name");
                    let id = self.id_by_name(side, name).expect("created");
                    let deleted = self.post(
                        side,
                        "DeleteIngress",
                        &[
                            ("Content-Type", "application/json"),
                            ("Authorization", &format!("Bearer {}", token())),
                        ],
                        json!({ "ingress_id": id }).to_string().into_bytes(),
                    );
                    assert_eq!(deleted.status, 200);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Encoding {
    Json,
    Protobuf,
}

fn token() -> String {
    admin_token(API_KEY, API_SECRET)
}

/// A request given in JSON, as protobuf (read as Twirp reads JSON; both
/// sides get the same bytes).
fn request_protobuf(method: &str, body: Value) -> Vec<u8> {
    use gstlivekitingress::supervisor::api::{from_twirp_json, Named};
    fn encode<T: Named>(body: Value) -> Vec<u8> {
        from_twirp_json::<T>(body.to_string().as_bytes())
            .expect("a valid request")
            .encode_to_vec()
    }
    match method {
        "CreateIngress" => encode::<proto::CreateIngressRequest>(body),
        "UpdateIngress" => encode::<proto::UpdateIngressRequest>(body),
        "ListIngress" => encode::<proto::ListIngressRequest>(body),
        "DeleteIngress" => encode::<proto::DeleteIngressRequest>(body),
        _ => Vec::new(),
    }
}

/// An answer in comparable form: a Twirp error's status, code and message, or
/// the answer's fields with ids, keys and times replaced by what they look
/// like (after their format is checked).
#[derive(Debug, PartialEq)]
enum Outcome {
    Answer(Value),
    Error {
        status: u16,
        code: String,
        msg: String,
    },
    /// Not Twirp's JSON (livekit-server's plain-text 401).
    Text {
        status: u16,
        text: String,
    },
}

impl Outcome {
    fn of(method: &str, encoding: Encoding, reply: &Reply) -> Outcome {
        if reply.status != 200 {
            return match serde_json::from_slice::<Value>(&reply.body) {
                Ok(v) => Outcome::Error {
                    status: reply.status,
                    code: v["code"].as_str().unwrap_or("").into(),
                    msg: v["msg"].as_str().unwrap_or("").into(),
                },
                Err(_) => Outcome::Text {
                    status: reply.status,
                    text: String::from_utf8_lossy(&reply.body).trim().into(),
                },
            };
        }
        let value = match encoding {
            Encoding::Json => serde_json::from_slice(&reply.body).expect("JSON answer"),
            // Protobuf answers read with the crate's types and written with
            // its own (pbjson) JSON, independent of the service's JSON.
            Encoding::Protobuf if method == "ListIngress" => serde_json::to_value(
                proto::ListIngressResponse::decode(&reply.body[..]).expect("protobuf answer"),
            )
            .expect("json"),
            Encoding::Protobuf => serde_json::to_value(
                proto::IngressInfo::decode(&reply.body[..]).expect("protobuf answer"),
            )
            .expect("json"),
        };
        Outcome::Answer(comparable_answer(value))
    }

    fn code(&self) -> &str {
        match self {
            Outcome::Answer(_) => "ok",
            Outcome::Error { code, .. } => code,
            Outcome::Text { .. } => "text",
        }
    }
}

/// An answer normalized, a list's items in name order (each side lists in
/// its own order).
fn comparable_answer(value: Value) -> Value {
    let mut value = normalized(value);
    if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
        items.sort_by_key(|i| i["name"].as_str().unwrap_or("").to_string());
    }
    value
}

/// Ids, stream keys and times by format: an id is `IN_` and 12 base57
/// characters, a key 12 of them, a time zero or not.
fn normalized(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("ingress_id" | "ingressId", Value::String(s)) => {
                            assert!(is_guid(&s, "IN_"), "ingress id {s:?}");
                            Value::String("IN_<12 base57>".into())
                        }
                        ("stream_key" | "streamKey", Value::String(s)) if !s.is_empty() => {
                            assert!(is_guid(&s, ""), "stream key {s:?}");
                            Value::String("<12 base57>".into())
                        }
                        (
                            "updated_at" | "updatedAt" | "started_at" | "startedAt" | "ended_at"
                            | "endedAt",
                            Value::String(s),
                        ) if s != "0" => Value::String("<time>".into()),
                        (_, v) => normalized(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalized).collect()),
        other => other,
    }
}

fn create(name: &str, extra: Value) -> Value {
    let mut body = json!({
        "input_type": "RTMP_INPUT",
        "name": name,
        "room_name": "parity",
        "participant_identity": "obs",
        "participant_name": "OBS",
    });
    for (k, v) in extra.as_object().expect("object") {
        // A field given in camelCase replaces its snake_case spelling.
        let snake: String = k
            .chars()
            .flat_map(|c| match c.is_ascii_uppercase() {
                true => vec!['_', c.to_ascii_lowercase()],
                false => vec![c],
            })
            .collect();
        body.as_object_mut().expect("object").remove(&snake);
        body[k] = v.clone();
    }
    body
}

fn layers(layers: Value) -> Value {
    json!({ "options": { "video_codec": "H264_BASELINE", "frame_rate": 30, "layers": layers } })
}

fn layer(quality: &str, width: u32, height: u32) -> Value {
    json!({ "quality": quality, "width": width, "height": height, "bitrate": 500000 })
}

/// Every create variant: (name, the fields it adds).
fn create_cases() -> Vec<(String, Value)> {
    let mut cases: Vec<(String, Value)> = Vec::new();
    let mut add = |name: String, extra: Value| cases.push((name, extra));
    add("plain".into(), json!({}));
    for preset in proto::IngressVideoEncodingPreset::H264720p30fps3Layers as i32
        ..=proto::IngressVideoEncodingPreset::H2641080p30fps1LayerHighMotion as i32
    {
        let name = proto::IngressVideoEncodingPreset::try_from(preset)
            .expect("preset")
            .as_str_name();
        add(
            format!("video preset {name}"),
            json!({ "video": { "name": "cam", "source": "CAMERA", "preset": name } }),
        );
    }
    add(
        "video preset unknown".into(),
        json!({ "video": { "preset": 99 } }),
    );
    for preset in ["OPUS_STEREO_96KBPS", "OPUS_MONO_64KBS"] {
        add(
            format!("audio preset {preset}"),
            json!({ "audio": { "name": "mic", "source": "MICROPHONE", "preset": preset } }),
        );
    }
    add(
        "audio preset unknown".into(),
        json!({ "audio": { "preset": 7 } }),
    );
    let (h, m, l) = (
        layer("HIGH", 1280, 720),
        layer("MEDIUM", 640, 360),
        layer("LOW", 320, 180),
    );
    for (name, list) in [
        ("layers valid", json!([h, m, l])),
        ("layers none", json!([])),
        ("layers odd", json!([layer("HIGH", 1281, 720)])),
        ("layers odd height", json!([layer("HIGH", 1280, 721)])),
        ("layers zero", json!([layer("HIGH", 0, 720)])),
        (
            "layers decreasing",
            json!([layer("HIGH", 320, 180), layer("LOW", 1280, 720)]),
        ),
        (
            "layers decreasing width",
            json!([layer("HIGH", 320, 720), layer("LOW", 640, 360)]),
        ),
        (
            "layers duplicate quality",
            json!([h, layer("HIGH", 640, 360)]),
        ),
        ("layers with OFF", json!([h, layer("OFF", 640, 360)])),
    ] {
        add(name.into(), json!({ "video": layers(list) }));
    }
    for codec in ["DEFAULT_VC", "H264_BASELINE", "VP8"] {
        add(
            format!("codec {codec}"),
            json!({ "video": { "options": { "video_codec": codec, "layers": [layer("HIGH", 640, 360)] } } }),
        );
    }
    add(
        "codec unknown".into(),
        json!({ "video": { "options": { "video_codec": 42 } } }),
    );
    for rate in [0.0, 15.0, 60.0, -1.0] {
        add(
            format!("frame rate {rate}"),
            json!({ "video": { "options": { "frame_rate": rate } } }),
        );
    }
    for (name, options) in [
        (
            "audio opus",
            json!({ "audio_codec": "OPUS", "bitrate": 64000, "channels": 1, "disable_dtx": true }),
        ),
        (
            "audio default codec",
            json!({ "audio_codec": "DEFAULT_AC" }),
        ),
        ("audio aac", json!({ "audio_codec": "AAC" })),
        ("audio stereo", json!({ "channels": 2, "bitrate": 128000 })),
        ("audio 3 channels", json!({ "channels": 3 })),
        ("audio dtx", json!({ "disable_dtx": false })),
    ] {
        add(name.into(), json!({ "audio": { "options": options } }));
    }
    add(
        "video source microphone".into(),
        json!({ "video": { "source": "MICROPHONE" } }),
    );
    add(
        "audio source camera".into(),
        json!({ "audio": { "source": "CAMERA" } }),
    );
    add(
        "screen share".into(),
        json!({ "video": { "source": "SCREEN_SHARE" }, "audio": { "source": "SCREEN_SHARE_AUDIO" } }),
    );
    add("no identity".into(), json!({ "participant_identity": "" }));
    add("no room".into(), json!({ "room_name": "" }));
    add(
        "transcoding on".into(),
        json!({ "enable_transcoding": true }),
    );
    add(
        "transcoding off".into(),
        json!({ "enable_transcoding": false }),
    );
    add(
        "bypass in request".into(),
        json!({ "bypass_transcoding": true }),
    );
    add(
        "bypass in request, transcoding on".into(),
        json!({ "bypass_transcoding": true, "enableTranscoding": true }),
    );
    add("enabled".into(), json!({ "enabled": true }));
    add("disabled".into(), json!({ "enabled": false }));
    add(
        "empty video and audio".into(),
        json!({ "video": {}, "audio": {} }),
    );
    add(
        "camelCase request".into(),
        json!({ "roomName": "parity", "participantIdentity": "cam", "participantMetadata": "m" }),
    );
    add("unknown input".into(), json!({ "input_type": 9 }));
    add(
        "url without url".into(),
        json!({ "input_type": "URL_INPUT" }),
    );
    add(
        "url bad scheme".into(),
        json!({ "input_type": "URL_INPUT", "url": "ftp://example.com/a" }),
    );
    add(
        "url no scheme".into(),
        json!({ "input_type": "URL_INPUT", "url": "example.com/a" }),
    );
    add(
        "url disabled".into(),
        json!({ "input_type": "URL_INPUT", "url": "http://example.com/a", "enabled": false }),
    );
    cases
}

#[test]
fn ingress_api_answers_as_livekit_server() {
    let started = std::time::Instant::now();
    let mut p = Parity::start();
    let mut compared = 0;

    // Create: every variant, in JSON and in protobuf.
    for (name, extra) in create_cases() {
        for encoding in [Encoding::Json, Encoding::Protobuf] {
            let body = create(&format!("{name} {encoding:?}"), extra.clone());
            let outcome = p.same("CreateIngress", body, encoding);
            eprintln!("create {name} {encoding:?}: {}", outcome.code());
            compared += 1;
        }
    }

    // Deliberate divergences on create (README, LiveKit compatibility).
    for codec in ["H264_MAIN", "H264_HIGH"] {
        p.diverges(
            "CreateIngress",
            create(
                &format!("codec {codec}"),
                json!({ "video": { "options": { "video_codec": codec } } }),
            ),
            ["invalid_argument", "ok"],
        );
    }
    // WHIP: created alike (`url` the WHIP base URL, transcoding off by
    // default, bypass derived), and LiveKit's validation on both sides.
    for (name, extra) in [
        ("whip", json!({ "input_type": "WHIP_INPUT" })),
        (
            "whip bypass",
            json!({ "input_type": "WHIP_INPUT", "bypass_transcoding": true }),
        ),
        (
            "whip transcoded",
            json!({ "input_type": "WHIP_INPUT", "enable_transcoding": true,
                    "video": { "preset": "H264_720P_30FPS_3_LAYERS" } }),
        ),
        (
            "whip no transcoding with options",
            json!({ "input_type": "WHIP_INPUT", "video": { "preset": "H264_720P_30FPS_1_LAYER" } }),
        ),
    ] {
        for encoding in [Encoding::Json, Encoding::Protobuf] {
            let outcome = p.same(
                "CreateIngress",
                create(&format!("{name} {encoding:?}"), extra.clone()),
                encoding,
            );
            eprintln!("create {name} {encoding:?}: {}", outcome.code());
            compared += 1;
        }
    }

    // List: all, by room, by id, by id and another room, an unknown id.
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        for body in [
            json!({}),
            json!({ "room_name": "parity" }),
            json!({ "room_name": "nobody-here" }),
            json!({ "ingress_id": "$id:plain Json" }),
            json!({ "ingress_id": "$id:plain Json", "room_name": "another" }),
            json!({ "ingress_id": "IN_unknown" }),
            json!({ "ingressId": "$id:plain Protobuf", "roomName": "parity" }),
        ] {
            p.same("ListIngress", body, encoding);
            compared += 1;
        }
    }

    // Update: each field alone, nothing, an unknown id, an empty id.
    let fields = [
        ("name", json!({ "name": "renamed" })),
        ("room", json!({ "room_name": "elsewhere" })),
        ("identity", json!({ "participant_identity": "other" })),
        ("participant name", json!({ "participant_name": "Other" })),
        ("metadata", json!({ "participant_metadata": "{\"a\":1}" })),
        ("transcoding on", json!({ "enable_transcoding": true })),
        ("transcoding off", json!({ "enable_transcoding": false })),
        ("bypass", json!({ "bypass_transcoding": true })),
        ("enabled", json!({ "enabled": false })),
        (
            "video preset",
            json!({ "video": { "preset": "H264_1080P_30FPS_3_LAYERS" } }),
        ),
        ("video empty", json!({ "video": {} })),
        ("audio empty", json!({ "audio": {} })),
        (
            "audio preset",
            json!({ "audio": { "preset": "OPUS_MONO_64KBS" } }),
        ),
        (
            "odd layer",
            json!({ "video": layers(json!([layer("HIGH", 641, 360)])) }),
        ),
        (
            "layer OFF",
            json!({ "video": layers(json!([layer("OFF", 640, 360)])) }),
        ),
        ("nothing", json!({})),
    ];
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        for (field, change) in &fields {
            let name = format!("update {field} {encoding:?}");
            // Each update applies to an ingress with options to change or keep.
            p.same(
                "CreateIngress",
                create(
                    &name,
                    json!({ "video": { "preset": "H264_540P_25FPS_2_LAYERS" }, "audio": { "preset": "OPUS_STEREO_96KBPS" } }),
                ),
                Encoding::Json,
            );
            let mut body = json!({ "ingress_id": format!("$id:{name}") });
            for (k, v) in change.as_object().expect("object") {
                body[k] = v.clone();
            }
            p.same("UpdateIngress", body, encoding);
            // What is stored afterwards, as listed.
            p.same(
                "ListIngress",
                json!({ "ingress_id": format!("$id:{name}") }),
                encoding,
            );
            compared += 2;
        }
        p.same(
            "UpdateIngress",
            json!({ "ingress_id": "IN_unknown", "name": "x" }),
            encoding,
        );
        p.same("UpdateIngress", json!({ "name": "x" }), encoding);
        p.same("UpdateIngress", json!({}), encoding);
        compared += 3;
    }

    // Delete: once, twice, unknown, empty.
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let victim = format!("plain {encoding:?}");
        let body = json!({ "ingress_id": format!("$id:{victim}") });
        p.same("DeleteIngress", body.clone(), encoding);
        p.same("DeleteIngress", body, encoding);
        p.same(
            "ListIngress",
            json!({ "ingress_id": format!("$id:{victim}") }),
            encoding,
        );
        p.same(
            "DeleteIngress",
            json!({ "ingress_id": "IN_unknown" }),
            encoding,
        );
        p.same("DeleteIngress", json!({}), encoding);
        compared += 5;
    }
    // Both sides hold the same ingresses now.
    p.same("ListIngress", json!({}), Encoding::Json);

    compared += protocol_errors(&p);
    compared += tokens(&p);
    compared += rust_client(&mut p);
    compared += python_client(&p);
    eprintln!(
        "{compared} exchanges compared in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Twirp's own errors: undecodable bodies, content types, methods.
fn protocol_errors(p: &Parity) -> usize {
    let auth = format!("Bearer {}", token());
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("CreateIngress", "application/json", b"{not json".to_vec()),
        ("CreateIngress", "application/json", b"[1,2]".to_vec()),
        (
            "CreateIngress",
            "application/json",
            br#"{"input_type": "NOT_AN_INPUT"}"#.to_vec(),
        ),
        (
            "ListIngress",
            "application/json",
            br#"{"room_name": 5}"#.to_vec(),
        ),
        (
            "CreateIngress",
            "application/protobuf",
            vec![0xff, 0xff, 0xff],
        ),
        (
            "ListIngress",
            "application/protobuf",
            vec![0x0a, 0x05, b'a'],
        ),
        ("ListIngress", "text/plain", b"{}".to_vec()),
        (
            "ListIngress",
            "application/x-www-form-urlencoded",
            Vec::new(),
        ),
        ("ListIngress", "", b"{}".to_vec()),
        ("NoSuchMethod", "application/json", b"{}".to_vec()),
        ("listIngress", "application/json", b"{}".to_vec()),
    ];
    for (method, content_type, body) in &cases {
        let [lk, us] = [0, 1].map(|side| {
            let mut headers = vec![("Authorization", auth.as_str())];
            if !content_type.is_empty() {
                headers.push(("Content-Type", content_type));
            }
            let reply = p.post(side, method, &headers, body.clone());
            Outcome::of(method, Encoding::Json, &reply)
        });
        // Status and code as Twirp's; the message starts with Twirp's words
        // (this service adds the parser's reason after them).
        match (&lk, &us) {
            (
                Outcome::Error { status, code, msg },
                Outcome::Error {
                    status: s2,
                    code: c2,
                    msg: m2,
                },
            ) => {
                assert_eq!(
                    (status, code),
                    (s2, c2),
                    "{method} {content_type}: {lk:?} vs {us:?}"
                );
                let twirp_words = msg.split(':').next().unwrap_or("");
                assert!(
                    m2.starts_with(twirp_words),
                    "{method} {content_type}: {msg:?} vs {m2:?}"
                );
            }
            _ => panic!("{method} {content_type}: {lk:?} vs {us:?}"),
        }
        eprintln!("protocol {method} {content_type:?}: {lk:?} | {us:?}");
    }
    cases.len()
}

/// Tokens: none, without the grant, a wrong secret, an unknown key, expired,
/// not a JWT, not Bearer. Both answer 401; livekit-server in plain text that
/// repeats the token, this service in Twirp JSON with the same first words
/// and never the token.
fn tokens(p: &Parity) -> usize {
    let exp = now_secs() + 600;
    let admin = json!({ "ingressAdmin": true });
    let cases: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        (
            "no grant",
            Some(format!(
                "Bearer {}",
                jwt(
                    json!({ "exp": exp, "iss": API_KEY, "video": { "roomJoin": true } }),
                    API_SECRET
                )
            )),
        ),
        (
            "wrong secret",
            Some(format!("Bearer {}", admin_token(API_KEY, "not-the-secret"))),
        ),
        (
            "unknown key",
            Some(format!("Bearer {}", admin_token("APIunknown", API_SECRET))),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                jwt(
                    json!({ "exp": now_secs() - 120, "iss": API_KEY, "video": admin }),
                    API_SECRET
                )
            )),
        ),
        ("not a jwt", Some("Bearer a.b.c".into())),
        ("not bearer", Some(format!("Basic {}", token()))),
    ];
    for (name, auth) in &cases {
        let [lk, us] = [0, 1].map(|side| {
            let mut headers = vec![("Content-Type", "application/json")];
            if let Some(auth) = auth {
                headers.push(("Authorization", auth.as_str()));
            }
            Outcome::of(
                "ListIngress",
                Encoding::Json,
                &p.post(side, "ListIngress", &headers, b"{}".to_vec()),
            )
        });
        eprintln!("token {name}: {lk:?} | {us:?}");
        let Outcome::Error { status, code, msg } = &us else {
            panic!("token {name}: {us:?}");
        };
        assert_eq!(
            (*status, code.as_str()),
            (401, "unauthenticated"),
            "token {name}"
        );
        if let Some(token) = auth.as_deref().and_then(|a| a.split(' ').nth(1)) {
            for part in token.split('.').filter(|part| part.len() > 3) {
                assert!(
                    !msg.contains(part),
                    "token {name}: the error repeats the token: {msg}"
                );
            }
        }
        match &lk {
            // No token or no grant: Twirp's error, the same on both.
            Outcome::Error { .. } => assert_eq!(lk, us, "token {name}"),
            // Refused before Twirp: plain text; the same status and first words.
            Outcome::Text { status, text } => {
                assert_eq!(*status, 401, "token {name}");
                let words = text.split(':').next().unwrap_or("");
                assert!(msg.starts_with(words), "token {name}: {text:?} vs {msg:?}");
            }
            Outcome::Answer(_) => panic!("token {name}: livekit-server answered {lk:?}"),
        }
    }
    cases.len()
}

/// LiveKit's Rust client (which sends an empty video and audio message on
/// create and update) against both, answers compared.
fn rust_client(p: &mut Parity) -> usize {
    let clients = p
        .urls
        .clone()
        .map(|url| IngressClient::with_api_key(&url, API_KEY, API_SECRET).with_failover(false));
    let infos = clients.each_ref().map(|client| {
        p.rt.block_on(client.create_ingress(
            proto::IngressInput::RtmpInput,
            CreateIngressOptions {
                name: "rust client".into(),
                room_name: "parity".into(),
                participant_identity: "rust".into(),
                ..Default::default()
            },
        ))
        .expect("create")
    });
    let comparable =
        |info: &proto::IngressInfo| normalized(serde_json::to_value(info).expect("json"));
    assert_eq!(
        comparable(&infos[0]),
        comparable(&infos[1]),
        "create through the Rust client"
    );
    let updated = [0, 1].map(|side| {
        p.rt.block_on(clients[side].update_ingress(
            &infos[side].ingress_id,
            UpdateIngressOptions {
                name: "rust client renamed".into(),
                ..Default::default()
            },
        ))
        .expect("update")
    });
    assert_eq!(
        comparable(&updated[0]),
        comparable(&updated[1]),
        "update through the Rust client"
    );
    let listed = [0, 1].map(|side| {
        p.rt.block_on(
            clients[side]
                .list_ingress(IngressListFilter::IngressId(infos[side].ingress_id.clone())),
        )
        .expect("list")
    });
    assert_eq!(
        listed
            .each_ref()
            .map(|l| l.iter().map(comparable).collect::<Vec<_>>())[0],
        listed
            .each_ref()
            .map(|l| l.iter().map(comparable).collect::<Vec<_>>())[1],
    );
    let deleted = [0, 1].map(|side| {
        p.rt.block_on(clients[side].delete_ingress(&infos[side].ingress_id))
            .expect("delete")
    });
    assert_eq!(
        comparable(&deleted[0]),
        comparable(&deleted[1]),
        "delete through the Rust client"
    );
    let unknown = [0, 1].map(|side| {
        format!(
            "{:?}",
            p.rt.block_on(clients[side].delete_ingress("IN_unknown"))
                .expect_err("unknown")
        )
    });
    assert_eq!(unknown[0], unknown[1]);
    5
}

/// LiveKit's Python client (`tests/helpers/ingress_client.py`: creates with
/// presets, custom layers and audio, WHIP, errors the client lets through,
/// lists, updates of single fields, deletes) run against both at once; each
/// step's answer (protobuf's JSON of what the client decoded) or error
/// (status, code, message) compared, ids, keys and times by format.
fn python_client(p: &Parity) -> usize {
    let script = common::project_dir().join("tests/helpers/ingress_client.py");
    let children = p.urls.clone().map(|url| {
        Command::new(common::python())
            .arg(&script)
            .args([
                "--url",
                &url,
                "--api-key",
                API_KEY,
                "--api-secret",
                API_SECRET,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the Python client (run scripts/setup.sh): {e}")
            })
    });
    let runs = children.map(|child| {
        let out = child.wait_with_output().expect("python client");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "python client: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_str(&stdout).expect("the client's JSON report");
        report["steps"].as_array().expect("steps").clone()
    });
    let names = runs.each_ref().map(|steps| {
        steps
            .iter()
            .map(|s| s["step"].as_str().expect("step name").to_string())
            .collect::<Vec<_>>()
    });
    assert_eq!(names[0], names[1], "the same steps on both");
    let comparable = |step: &Value| match step.get("answer") {
        Some(answer) => json!({ "answer": comparable_answer(answer.clone()) }),
        None => json!({ "error": step["error"].clone() }),
    };
    let (mut compared, mut answers) = (0, 0);
    for (lk, us) in runs[0].iter().zip(&runs[1]) {
        let name = lk["step"].as_str().expect("step name");
        let [lk, us] = [lk, us].map(comparable);
        eprintln!("python client {name}: {lk} | {us}");
        if name == "create whip" {
            // Both create it, with the WHIP base URL (compared below).
            assert_eq!(lk["answer"]["input_type"], "WHIP_INPUT", "{name}: {lk}");
            assert_eq!(lk["answer"]["url"], "http://127.0.0.1:9/w", "{name}: {lk}");
        }
        assert_eq!(
            lk, us,
            "python client {name}: livekit-server (left) and livekit-ingress (right) differ"
        );
        compared += 1;
        answers += usize::from(lk.get("answer").is_some());
    }
    // Most steps answer (a client that failed early would compare errors only).
    assert!(
        compared >= 30 && answers >= 20,
        "python client: {compared} steps compared, {answers} of them answers"
    );
    eprintln!("python client: {compared} steps compared, {answers} of them answers");
    compared
}
