//! Element logic that needs no server, through `gst_check::Harness`: what
//! simulcastenc's src pads produce for an input size, per preset.
//!
//! Not here, and why: livekitsink stamps RTP time and orders layers only
//! once joined (before that it drops media), so its timing is covered by the
//! unit tests of `livekitsink::wallclock` and `livekit::layer_sync`, and end
//! to end in tests/livekitsink.rs against a server; rtmpingresssrc needs a
//! listener socket and an RTMP publisher, so its timestamping is covered by
//! the unit tests of `rtmp::timestamps` and end to end in tests/rtmpingresssrc.rs.

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
