//! Arbitrary request bodies for the `livekit.Ingress` API: the first byte picks
//! the method and the encoding (protobuf or JSON), the rest is the body. They
//! go through what the service runs before its store (`api::Call::decode`, then
//! `api::check`: LiveKit's validation, create / update, the answer's encoding):
//! each must end in a Twirp error or an answer, never a panic. A sixth slot
//! is the body of `PUT /ingress/{id}/options`: refused with a reason, or
//! options that read back the same after being stored.
#![no_main]

use gstlivekitingress::supervisor::api::{self, Call, Encoding};
use gstlivekitingress::supervisor::ingress;
use gstlivekitingress::supervisor::ingress_options::IngressOptions;
use libfuzzer_sys::fuzz_target;
use livekit_protocol as proto;
use std::sync::LazyLock;

const METHODS: [&str; 6] = [
    "CreateIngress",
    "UpdateIngress",
    "ListIngress",
    "DeleteIngress",
    "NoSuchMethod",
    OPTIONS,
];
const OPTIONS: &str = "ingress options";

/// The URLs CreateIngress answers with.
static URLS: LazyLock<ingress::BaseUrls> = LazyLock::new(|| ingress::BaseUrls {
    rtmp: "rtmp://127.0.0.1:1935/live".into(),
    whip: "http://127.0.0.1:7888/w".into(),
});

/// The stored ingress an update applies to: one CreateIngress would make.
static CURRENT: LazyLock<proto::IngressInfo> = LazyLock::new(|| {
    ingress::create(
        proto::CreateIngressRequest {
            input_type: proto::IngressInput::RtmpInput as i32,
            room_name: "room".into(),
            participant_identity: "obs".into(),
            ..Default::default()
        },
        &URLS,
    )
    .expect("a valid ingress")
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(selector & 0x7) % METHODS.len()];
    if method == OPTIONS {
        if let Ok(options) = IngressOptions::from_json(body) {
            let stored = options.to_json();
            assert_eq!(IngressOptions::from_json(stored.as_bytes()), Ok(options));
        }
        return;
    }
    let encoding = if selector & 0x8 == 0 {
        Encoding::Protobuf
    } else {
        Encoding::Json
    };
    if let Ok(call) = Call::decode(method, encoding, body) {
        let _ = api::check(call, encoding, &CURRENT, &URLS);
    }
});
