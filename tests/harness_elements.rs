//! Element logic that needs no server, through `gst_check::Harness`: what
//! simulcastenc's src pads produce for an input size, per preset; the
//! timestamps and keyframe flags rtmpingresssrc gives crafted FLV frames (fed
//! by the scripted RTMP client on loopback, the element's only input).
//!
//! Not here, and why: livekitsink stamps RTP time and orders layers only
//! once joined (before that it drops media), so that logic is unit-tested
//! where it lives (`plan_tracks` and `rtp_time` in livekitsink, its
//! `wallclock`, `livekit::layer_sync`) and end to end in tests/livekitsink.rs
//! against a server.

mod common;

use gst::prelude::*;
use gst_check::Harness;

fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::init().expect("gstreamer");
        gstlivekitingress::plugin_register_static().expect("register plugin");
    });
}

/// The caps layer `layer` of a fresh simulcastenc with `preset` produces for
/// a `width`x`height` I420 input (a few black frames, then EOS).
fn layer_caps(preset: &str, layer: usize, width: i32, height: i32) -> gst::Caps {
    init();
    let enc = gst::ElementFactory::make("simulcastenc")
        .property_from_str("preset", preset)
        .build()
        .expect("simulcastenc");
    let mut h = Harness::with_element(&enc, Some("sink"), Some(&format!("src_{layer}")));
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", width)
        .field("height", height)
        .field("framerate", gst::Fraction::new(30, 1))
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build();
    h.set_src_caps(caps);
    h.play();
    let size = (width * height * 3 / 2) as usize;
    for i in 0..3u64 {
        let mut buffer = gst::Buffer::from_mut_slice(vec![16u8; size]);
        {
            let b = buffer.get_mut().expect("writable");
            b.set_pts(gst::ClockTime::from_mseconds(i * 33));
            b.set_duration(gst::ClockTime::from_mseconds(33));
        }
        assert_eq!(h.push(buffer), Ok(gst::FlowSuccess::Ok), "push frame {i}");
    }
    assert!(h.push_event(gst::event::Eos::new()));
    h.pull().expect("an encoded frame");
    h.sinkpad()
        .and_then(|p| p.current_caps())
        .expect("caps on the layer's pad")
}

fn size(caps: &gst::Caps) -> (i32, i32) {
    let s = caps.structure(0).expect("structure");
    (
        s.get::<i32>("width").expect("width"),
        s.get::<i32>("height").expect("height"),
    )
}

#[test]
fn simulcastenc_src_caps_follow_the_preset_for_the_input_size() {
    type Size = (i32, i32);
    // (preset, input, each layer's expected output)
    let cases: &[(&str, Size, &[Size])] = &[
        (
            "h264-720p-30fps-3-layers",
            (1280, 720),
            &[(1280, 720), (640, 360), (320, 180)],
        ),
        (
            "h264-1080p-30fps-3-layers",
            (1920, 1080),
            &[(1920, 1080), (960, 540), (480, 270)],
        ),
        (
            "h264-540p-25fps-2-layers",
            (960, 540),
            &[(960, 540), (480, 270)],
        ),
    ];
    for (preset, (w, h), layers) in cases {
        for (i, expected) in layers.iter().enumerate() {
            let caps = layer_caps(preset, i, *w, *h);
            let s = caps.structure(0).expect("structure");
            assert_eq!(s.name(), "video/x-h264", "{preset} layer {i}: {caps}");
            assert_eq!(
                s.get::<&str>("stream-format").ok(),
                Some("byte-stream"),
                "{caps}"
            );
            assert_eq!(
                size(&caps),
                *expected,
                "{preset} layer {i} from {w}x{h}: {caps}"
            );
        }
    }
}

/// A source smaller than the preset's main layer is not scaled up.
#[test]
fn simulcastenc_does_not_scale_a_small_source_up() {
    let caps = layer_caps("h264-720p-30fps-3-layers", 0, 640, 360);
    assert_eq!(size(&caps), (640, 360), "{caps}");
}

/// livekitsink's request pads are of its own pad type, which knows its kind:
/// one audio pad at most, at most MAX_LAYERS video pads, whatever they are named.
#[test]
fn livekitsink_request_pads_carry_their_kind() {
    use gstlivekitingress::livekit::tracks::MAX_LAYERS;
    init();
    let sink = gst::ElementFactory::make("livekitsink")
        .build()
        .expect("livekitsink");
    let audio = sink.request_pad_simple("audio_%u").expect("an audio pad");
    assert_eq!(audio.type_().name(), "GstLiveKitSinkPad");
    assert!(
        sink.request_pad_simple("audio_%u").is_none(),
        "one audio track"
    );
    let video: Vec<gst::Pad> = (0..MAX_LAYERS)
        .map(|i| {
            sink.request_pad_simple("video_%u")
                .unwrap_or_else(|| panic!("video pad {i}"))
        })
        .collect();
    assert!(video
        .iter()
        .all(|p| p.type_().name() == "GstLiveKitSinkPad"));
    assert!(
        sink.request_pad_simple("video_%u").is_none(),
        "at most {MAX_LAYERS} layers"
    );
    // Released pads make room again.
    sink.release_request_pad(&audio);
    assert!(sink.request_pad_simple("audio_%u").is_some());
}

/// An FLV AVC video tag: the sequence header (`cts` None; its configuration
/// record is opaque to the element), or a frame with its composition offset
/// (ms) and one length-prefixed NAL unit.
fn avc_tag(keyframe: bool, cts: Option<i32>) -> Vec<u8> {
    match cts {
        None => vec![0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1e, 0xff, 0xe0, 0],
        Some(cts) => {
            let c = cts.to_be_bytes();
            let (frame_type, nal) = if keyframe { (0x17, 0x65) } else { (0x27, 0x41) };
            vec![frame_type, 1, c[1], c[2], c[3], 0, 0, 0, 2, nal, 0x88]
        }
    }
}

/// rtmpingresssrc gives each frame its RTMP timestamp as DTS (relative to
/// the first) and DTS plus the composition offset as PTS (B-frames: PTS out
/// of decode order), and flags all but keyframes as delta units.
#[test]
fn rtmpingresssrc_stamps_dts_pts_and_keyframes_from_the_flv_tags() {
    init();
    let port = common::free_tcp_port();
    // The video pad appears when the publish brings its sequence header: a
    // bin links it to a queue whose src pad the harness takes.
    let bin = gst::Bin::new();
    let src = gst::ElementFactory::make("rtmpingresssrc")
        .property("address", "127.0.0.1")
        .property("port", u32::from(port))
        .property("stream-key", "stamps")
        .build()
        .expect("rtmpingresssrc");
    let queue = gst::ElementFactory::make("queue").build().expect("queue");
    bin.add_many([&src, &queue]).expect("add");
    let ghost =
        gst::GhostPad::with_target(&queue.static_pad("src").expect("src")).expect("ghost pad");
    bin.add_pad(&ghost).expect("add pad");
    let weak = queue.downgrade();
    src.connect_pad_added(move |_, pad| {
        if let (Some(queue), "video") = (weak.upgrade(), pad.name().as_str()) {
            pad.link(&queue.static_pad("sink").expect("sink"))
                .expect("link");
        }
    });
    let mut h = Harness::with_element(&bin, None, Some("src"));
    h.play();

    let mut client = common::rtmp_client::RawClient::connect(port);
    client.start_publish("stamps");
    assert!(client.wait_for(b"NetStream.Publish.Start"), "accepted");
    let video = |data: Vec<u8>| rml_rtmp::messages::RtmpMessage::VideoData { data: data.into() };
    client
        .send(video(avc_tag(true, None)), 1000, 1)
        .expect("sequence header");
    // Decode order I P B B P, 33 ms apart, on a publisher's clock at 1000 ms.
    let frames: [(u32, i32, bool); 5] = [
        (1000, 66, true),
        (1033, 166, false),
        (1066, 33, false),
        (1100, 33, false),
        (1133, 133, false),
    ];
    for (timestamp, cts, keyframe) in frames {
        client
            .send(video(avc_tag(keyframe, Some(cts))), timestamp, 1)
            .expect("frame");
    }
    let buffers: Vec<gst::Buffer> = frames
        .iter()
        .map(|_| h.pull().expect("a buffer per frame"))
        .collect();
    let ns = |t: Option<gst::ClockTime>| t.expect("timestamp").nseconds() as i64;
    let first_dts = ns(buffers[0].dts());
    const MS: i64 = 1_000_000;
    for (buffer, (timestamp, cts, keyframe)) in buffers.iter().zip(frames) {
        let (dts, pts) = (ns(buffer.dts()), ns(buffer.pts()));
        assert_eq!(
            dts - first_dts,
            (i64::from(timestamp) - 1000) * MS,
            "DTS spacing"
        );
        assert_eq!(
            pts - dts,
            i64::from(cts) * MS,
            "PTS is DTS + composition offset"
        );
        assert_eq!(
            buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
            !keyframe,
            "only keyframes are not delta units"
        );
    }
    let pts: Vec<i64> = buffers.iter().map(|b| ns(b.pts())).collect();
    assert!(pts.windows(2).any(|w| w[1] < w[0]), "B-frames: {pts:?}");
    client.reset();
}
