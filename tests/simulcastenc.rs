//! simulcastenc on real encoders: layer sizes, rates and profiles read back from the
//! encoded output (the H.264 SPS as h264parse reports it), keyframe requests,
//! pause and resume, refusal of invalid settings.

use gst::prelude::*;
use gstlivekitingress::messages::layer_active::LayerActive;
use gstlivekitingress::presets::VideoPreset;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::init().expect("gstreamer");
        gstlivekitingress::plugin_register_static().expect("register plugin");
    });
}

/// What one layer produced.
#[derive(Debug, Default, Clone)]
struct LayerOutput {
    /// (pts, keyframe) per encoded frame.
    frames: Vec<(gst::ClockTime, bool)>,
    /// Caps after h264parse: width, height, profile from the SPS.
    caps: Option<gst::Caps>,
}

impl LayerOutput {
    fn size(&self) -> (i32, i32) {
        let s = self
            .caps
            .as_ref()
            .and_then(|c| c.structure(0))
            .expect("caps");
        (
            s.get("width").expect("width"),
            s.get("height").expect("height"),
        )
    }
    fn field(&self, name: &str) -> String {
        let s = self
            .caps
            .as_ref()
            .and_then(|c| c.structure(0))
            .expect("caps");
        s.get::<String>(name).unwrap_or_default()
    }
    fn keyframes(&self) -> Vec<gst::ClockTime> {
        self.frames
            .iter()
            .filter(|(_, k)| *k)
            .map(|(p, _)| *p)
            .collect()
    }
}

struct Run {
    pipeline: gst::Pipeline,
    enc: gst::Element,
    outputs: Vec<Arc<Mutex<LayerOutput>>>,
}

/// `source` ! simulcastenc `props`, each src pad through h264parse into an appsink.
fn start(source: &str, props: &str) -> Run {
    let pipeline = gst::parse::launch(&format!("{source} ! simulcastenc name=enc {props}"))
        .expect("pipeline")
        .downcast::<gst::Pipeline>()
        .expect("pipeline");
    let enc = pipeline.by_name("enc").expect("enc");
    let mut outputs = Vec::new();
    for pad in enc.src_pads() {
        let parse = gst::ElementFactory::make("h264parse")
            .build()
            .expect("h264parse");
        let sink = gst_app::AppSink::builder().sync(false).build();
        pipeline.add_many([&parse, sink.upcast_ref()]).expect("add");
        parse.link(&sink).expect("link");
        pad.link(&parse.static_pad("sink").expect("sink"))
            .expect("link layer");
        let out: Arc<Mutex<LayerOutput>> = Arc::default();
        let o = out.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let mut o = o.lock().expect("lock");
                    if let (Some(buffer), caps) = (sample.buffer(), sample.caps()) {
                        let key = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                        o.frames.push((buffer.pts().unwrap_or_default(), key));
                        o.caps = caps.map(|c| c.to_owned());
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        outputs.push(out);
    }
    pipeline.set_state(gst::State::Playing).expect("playing");
    Run {
        pipeline,
        enc,
        outputs,
    }
}

impl Run {
    fn wait_eos(&self) {
        let bus = self.pipeline.bus().expect("bus");
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(60),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("pipeline ends");
        if let gst::MessageView::Error(err) = msg.view() {
            panic!("pipeline error: {} ({:?})", err.error(), err.debug());
        }
    }
    fn output(&self, i: usize) -> LayerOutput {
        self.outputs[i].lock().expect("lock").clone()
    }
    fn frames_of(&self, i: usize) -> usize {
        self.outputs[i].lock().expect("lock").frames.len()
    }
    fn wait_frames(&self, i: usize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.frames_of(i) < n {
            assert!(
                Instant::now() < deadline,
                "layer {i} stalled at {} frames",
                self.frames_of(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn source(width: u32, height: u32, fps: u32, frames: u32) -> String {
    format!("videotestsrc num-buffers={frames} ! video/x-raw,width={width},height={height},framerate={fps}/1")
}

#[test]
fn every_preset_produces_livekits_layers_from_a_1080p_source() {
    init();
    for preset in VideoPreset::ALL {
        let encoding = preset.encoding();
        let run = start(
            &source(1920, 1080, 30, 10),
            &format!("preset={}", preset.name()),
        );
        run.wait_eos();
        assert_eq!(
            run.outputs.len(),
            encoding.layers.len(),
            "{preset:?}: one src pad per layer"
        );
        for (i, layer) in encoding.layers.iter().enumerate() {
            let out = run.output(i);
            assert_eq!(
                out.size(),
                (layer.width as i32, layer.height as i32),
                "{preset:?} layer {i}"
            );
            assert_eq!(
                out.field("profile"),
                "constrained-baseline",
                "{preset:?} layer {i}"
            );
            // 10 frames at 30 fps; a 25 fps preset drops down to its rate.
            let expected = (10.0 * encoding.framerate.min(30.0) / 30.0).round() as usize;
            assert!(
                out.frames.len().abs_diff(expected) <= 1,
                "{preset:?} layer {i}: {} frames",
                out.frames.len()
            );
            let fps = out
                .caps
                .as_ref()
                .and_then(|c| c.structure(0))
                .and_then(|s| s.get::<gst::Fraction>("framerate").ok());
            let preset_fps = gst::Fraction::approximate_f64(encoding.framerate).expect("fps");
            assert_eq!(fps, Some(preset_fps), "{preset:?} layer {i}");
        }
    }
}

#[test]
fn aspect_ratio_is_kept_for_4_3_portrait_and_small_sources() {
    init();
    let cases = [
        ((1440, 1080), [(960, 720), (480, 360), (240, 180)]),
        ((1080, 1920), [(720, 1280), (360, 640), (180, 320)]),
        // Never upscaled: the main layer is the source itself.
        ((320, 240), [(320, 240), (320, 240), (240, 180)]),
    ];
    for ((w, h), expected) in cases {
        let run = start(&source(w, h, 30, 5), "preset=h264-720p-30fps-3-layers");
        run.wait_eos();
        for (i, (ew, eh)) in expected.iter().enumerate() {
            assert_eq!(run.output(i).size(), (*ew, *eh), "source {w}x{h} layer {i}");
        }
    }
}

#[test]
fn frames_above_the_preset_rate_are_dropped() {
    init();
    // 2 s at 60 fps into the 25 fps preset.
    let run = start(
        &source(960, 540, 60, 120),
        "preset=H264_540P_25FPS_2_LAYERS",
    );
    run.wait_eos();
    for i in 0..2 {
        let n = run.output(i).frames.len();
        assert!(
            (48..=52).contains(&n),
            "layer {i}: {n} frames for 2 s at 25 fps"
        );
    }
}

#[test]
fn custom_vp8_layers() {
    init();
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=5 ! video/x-raw,width=1280,height=720,framerate=30/1 \
         ! simulcastenc name=enc codec=vp8 framerate=15 layers=1280x720:1000000,640x360 \
         enc.src_0 ! fakesink name=s0 enc.src_1 ! fakesink name=s1",
    )
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    pipeline.set_state(gst::State::Playing).expect("playing");
    let bus = pipeline.bus().expect("bus");
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(30),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    assert!(
        matches!(
            msg.as_ref().map(|m| m.view()),
            Some(gst::MessageView::Eos(_))
        ),
        "{msg:?}"
    );
    let caps = |name: &str| {
        pipeline
            .by_name(name)
            .and_then(|s| s.static_pad("sink"))
            .and_then(|p| p.current_caps())
            .expect("caps")
    };
    let s0 = caps("s0");
    let s = s0.structure(0).expect("structure");
    assert_eq!(s.name(), "video/x-vp8");
    assert_eq!(s.get::<i32>("width").ok(), Some(1280));
    assert_eq!(
        s.get::<gst::Fraction>("framerate").ok(),
        Some(gst::Fraction::new(15, 1))
    );
    assert_eq!(
        caps("s1")
            .structure(0)
            .and_then(|s| s.get::<i32>("width").ok()),
        Some(640)
    );
    pipeline.set_state(gst::State::Null).expect("stop");
}

#[test]
fn a_keyframe_request_on_one_layer_gives_aligned_keyframes_on_all() {
    init();
    let run = start(
        "videotestsrc is-live=true num-buffers=75 ! video/x-raw,width=1280,height=720,framerate=30/1",
        "keyframe-interval=30",
    );
    run.wait_frames(2, 20);
    let pad = run.enc.static_pad("src_2").expect("src_2");
    let peer = pad.peer().expect("linked");
    assert!(peer.push_event(gst_video::UpstreamForceKeyUnitEvent::builder().build()));
    run.wait_eos();
    let keys: Vec<Vec<gst::ClockTime>> = (0..3).map(|i| run.output(i).keyframes()).collect();
    // The first frame and the requested one, nowhere else within the 30 s interval.
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(k.len(), 2, "layer {i} keyframes at {k:?}");
    }
    assert_eq!(keys[0], keys[1], "aligned");
    assert_eq!(keys[1], keys[2], "aligned");
}

#[test]
fn a_paused_layer_stops_and_resumes_with_a_keyframe() {
    init();
    let run = start(
        "videotestsrc is-live=true num-buffers=120 ! video/x-raw,width=1280,height=720,framerate=30/1",
        "keyframe-interval=30",
    );
    run.wait_frames(1, 15);
    let peer = run
        .enc
        .static_pad("src_1")
        .and_then(|p| p.peer())
        .expect("linked");
    let layer_active = |active: bool| LayerActive { active }.to_event();
    peer.push_event(layer_active(false));
    std::thread::sleep(Duration::from_millis(200));
    let paused_at = run.frames_of(1);
    let main_at = run.frames_of(0);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        run.frames_of(1) <= paused_at + 1,
        "paused layer still encodes"
    );
    assert!(run.frames_of(0) >= main_at + 20, "other layers go on");

    // Resume through the action signal.
    run.enc
        .emit_by_name::<()>("set-layer-active", &[&1u32, &true]);
    run.wait_eos();
    let out = run.output(1);
    // The frame after the gap the pause left is the first one encoded on resume.
    let resumed = out
        .frames
        .windows(2)
        .find(|w| w[1].0 > w[0].0 + gst::ClockTime::from_mseconds(500))
        .map(|w| w[1]);
    assert!(
        resumed.is_some_and(|(_, key)| key),
        "the first frame after resuming is a keyframe: {:?}",
        out.frames
    );
}

#[test]
fn invalid_settings_are_refused_at_configuration_time() {
    init();
    for (props, needle) in [
        ("layers=1281x720", "even"),
        ("layers=640x360,1280x720", "grow with quality"),
        ("layers=wide", "invalid layer list"),
    ] {
        let pipeline = gst::parse::launch(&format!("videotestsrc ! simulcastenc {props}"))
            .expect("pipeline")
            .downcast::<gst::Pipeline>()
            .expect("pipeline");
        assert!(
            pipeline.set_state(gst::State::Playing).is_err(),
            "{props} accepted"
        );
        let bus = pipeline.bus().expect("bus");
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
            .expect("error");
        let gst::MessageView::Error(err) = msg.view() else {
            unreachable!()
        };
        assert!(
            err.error().to_string().contains(needle),
            "{props}: {}",
            err.error()
        );
        pipeline.set_state(gst::State::Null).expect("stop");
    }
}

/// Every layer keeps the source's colours: a 1080p source whose caps give no
/// colorimetry (as a decoder's often do) is BT.709 by its size, and so is
/// each smaller layer, which videoscale would otherwise also convert to the
/// BT.601 its size implies (a matrix conversion per pixel, four times the
/// cost of the scaling). h264parse reads it back from each layer's VUI.
#[test]
fn smaller_layers_keep_the_sources_colorimetry() {
    init();
    let run = start(
        &source(1920, 1080, 30, 5),
        "layers=1280x720:1700000,640x360:600000,320x180:150000",
    );
    run.wait_eos();
    for i in 0..3 {
        assert_eq!(
            run.output(i).field("colorimetry"),
            "bt709",
            "layer {i}: {:?}",
            run.output(i).caps
        );
    }
}
