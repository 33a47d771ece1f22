//! The demuxing half of srtingresssrc: appsrc -> tsdemux -> a parser per
//! chosen stream, each parser's output made (or continued as) the
//! contract's pad, and a returning caller's fresh chain going on on the
//! pads its predecessor made.

use super::*;

/// What the probe behind a parser keeps of its stream.
#[derive(Default)]
struct Flow {
    /// Video has had its keyframe: frames before it are dropped, as the
    /// decoder downstream would get them without their references (a
    /// returning caller may start mid-GOP; the decoder has the last
    /// caller's pictures).
    keyframe_seen: bool,
    /// The stream goes on on a pad an earlier caller's stream made.
    continued: Option<Continued>,
    /// This stream's own segment, from its demuxer.
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
}

/// What a returning caller's stream takes from the pad it goes on on, so
/// that downstream sees one stream: the pad's stream-start and segment
/// stand in for the stream's own (replaced, not dropped: a sticky event a
/// probe drops is sent again before every buffer), and its timestamps are
/// moved into that segment.
struct Continued {
    stream_start: Option<gst::Event>,
    segment_event: Option<gst::Event>,
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
}

impl Continued {
    fn of(pad: &gst::Pad) -> Continued {
        let segment_event = pad.sticky_event::<gst::event::Segment>(0);
        Continued {
            stream_start: pad
                .sticky_event::<gst::event::StreamStart>(0)
                .map(gst::Event::from),
            segment: segment_event
                .as_ref()
                .and_then(|e| e.segment().downcast_ref::<gst::ClockTime>().cloned()),
            segment_event: segment_event.map(gst::Event::from),
        }
    }
}

impl Flow {
    /// Moves a continued stream's buffer from its segment into the pad's, by
    /// running time, so it goes on after the gap whatever segment the new
    /// demuxer chose. False when it falls outside the pad's segment.
    fn restamp(&self, buffer: &mut gst::Buffer) -> bool {
        let Some(pad) = self.continued.as_ref().and_then(|c| c.segment.as_ref()) else {
            return true;
        };
        let Some(own) = &self.segment else {
            return true;
        };
        let map = |ts: Option<gst::ClockTime>| match ts {
            None => Some(None),
            Some(ts) => own
                .to_running_time(ts)
                .and_then(|rt| pad.position_from_running_time(rt))
                .map(Some),
        };
        let (Some(pts), Some(dts)) = (map(buffer.pts()), map(buffer.dts())) else {
            return false;
        };
        let buffer = buffer.make_mut();
        buffer.set_pts(pts);
        buffer.set_dts(dts);
        true
    }

    /// What a continued stream sends instead of its own stream-start or
    /// segment `event`.
    fn stand_in(&mut self, event: &gst::Event) -> Option<gst::Event> {
        let continued = self.continued.as_ref()?;
        match event.view() {
            gst::EventView::StreamStart(_) => continued.stream_start.clone(),
            gst::EventView::Segment(e) => {
                self.segment = e.segment().downcast_ref::<gst::ClockTime>().cloned();
                continued.segment_event.clone()
            }
            _ => None,
        }
    }
}

/// How a parser's stream reached its pad.
enum Exposed {
    /// On a pad of its own (new, or its own already).
    Own,
    /// On the pad an earlier caller's stream made.
    Continued(Continued),
    /// Nowhere (an error was posted).
    Refused,
}

impl SrtIngressSrc {
    /// appsrc -> tsdemux inside the bin; the demuxer's pads are handled as
    /// they come.
    pub(super) fn build_demuxing(
        &self,
    ) -> Result<(gst_app::AppSrc, gst::Element), gst::ErrorMessage> {
        let missing = |what: &str, e: glib::BoolError| {
            gst::error_msg!(
                gst::CoreError::MissingPlugin,
                ["cannot create {}: {}", what, e]
            )
        };
        let appsrc = gst_app::AppSrc::builder()
            .name("received")
            .caps(
                &gst::Caps::builder("video/mpegts")
                    .field("systemstream", true)
                    .build(),
            )
            .is_live(true)
            .format(gst::Format::Time)
            .do_timestamp(true)
            .stream_type(gst_app::AppStreamType::Stream)
            .max_bytes(QUEUED_BYTES)
            .block(true)
            .build();
        let demux = gst::ElementFactory::make("tsdemux")
            .name("demux")
            .build()
            .map_err(|e| missing("tsdemux (gst-plugins-bad)", e))?;
        let obj = self.obj();
        obj.add_many([appsrc.upcast_ref::<gst::Element>(), &demux])
            .and_then(|()| appsrc.link(&demux))
            .map_err(|e| missing("the demuxing chain", e))?;
        let weak = obj.downgrade();
        demux.connect_pad_added(move |_, pad| {
            if let Some(element) = weak.upgrade() {
                element.imp().demuxer_pad_added(pad);
            }
        });
        let weak = obj.downgrade();
        demux.connect_no_more_pads(move |_| {
            if let Some(element) = weak.upgrade() {
                let imp = element.imp();
                lock(&imp.pads).demuxer_done = true;
                imp.check_no_more_pads();
            }
        });
        Ok((appsrc, demux))
    }

    /// A returning caller's MPEG-TS gets a demuxer and parsers of its own:
    /// its clock (PCR, PTS) starts from another origin, its continuity
    /// counters restart and its tables may differ, which the last caller's
    /// demuxer would take for a broken stream. Their streams go on on the
    /// same pads (see [`Self::expose`]); the new appsrc stamps on arrival in
    /// the same running time, so timestamps go on after the gap.
    pub(super) fn restart_demuxing(&self) -> Result<gst_app::AppSrc, gst::ErrorMessage> {
        let obj = self.obj();
        // The last caller's chain has been idle since it left.
        for child in obj.children() {
            let _ = child.set_state(gst::State::Null);
            let _ = obj.remove(&child);
        }
        lock(&self.pads).next_caller();
        let (appsrc, demux) = self.build_demuxing()?;
        for element in [&demux, appsrc.upcast_ref()] {
            element.sync_state_with_parent().map_err(|e| {
                gst::error_msg!(
                    gst::CoreError::StateChange,
                    ["cannot start demuxing the returning caller: {}", e]
                )
            })?;
        }
        Ok(appsrc)
    }

    /// A stream of the demuxer: the first video and the first audio stream
    /// get a parser and, once it knows its caps, a pad; the rest a fakesink.
    fn demuxer_pad_added(&self, pad: &gst::Pad) {
        let caps = pad
            .current_caps()
            .or_else(|| pad.allowed_caps())
            .unwrap_or_else(gst::Caps::new_any);
        let media = caps.structure(0).map_or("", |s| s.name().as_str());
        let kind = MediaKind::of_caps(&caps);
        let chosen = kind.filter(|kind| {
            let mut pads = lock(&self.pads);
            // After no-more-pads no pad is added: a returning caller's
            // stream of a kind the first one lacked is not used.
            let open = pads.pad(*kind).is_some() || !pads.no_more_pads;
            let slot = match kind {
                MediaKind::Video => &mut pads.video_chosen,
                MediaKind::Audio => &mut pads.audio_chosen,
            };
            let take = !*slot && open;
            *slot = true;
            if take {
                pads.waiting += 1;
            }
            take
        });
        gst::info!(
            CAT,
            imp = self,
            "demuxer stream {} ({media}): {}",
            pad.name(),
            chosen.map_or("not used", MediaKind::name)
        );
        let result = match chosen {
            Some(kind) => self.add_parser(pad, &caps, kind),
            None => self.add_fakesink(pad),
        };
        if let Err(e) = result {
            gst::element_imp_error!(
                self,
                gst::StreamError::Demux,
                ("cannot take the publisher's {} stream: {}", media, e)
            );
        }
    }

    fn add_fakesink(&self, pad: &gst::Pad) -> Result<(), String> {
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .map_err(|e| e.to_string())?;
        self.add_and_link(pad, &[sink])
    }

    /// Adds `chain`, linked in order, and links `pad` to its first element.
    fn add_and_link(&self, pad: &gst::Pad, chain: &[gst::Element]) -> Result<(), String> {
        let obj = self.obj();
        obj.add_many(chain).map_err(|e| e.to_string())?;
        gst::Element::link_many(chain).map_err(|e| e.to_string())?;
        for element in chain {
            element
                .sync_state_with_parent()
                .map_err(|e| e.to_string())?;
        }
        let first = chain.first().ok_or("nothing to link")?;
        let sink = first
            .static_pad("sink")
            .ok_or_else(|| format!("{} has no sink pad", first.name()))?;
        pad.link(&sink).map(|_| ()).map_err(|e| e.to_string())
    }

    /// The stream's parser; its src pad becomes the contract's pad `kind`
    /// when its caps come (the pipeline picks a decoder by them).
    fn add_parser(&self, pad: &gst::Pad, caps: &gst::Caps, kind: MediaKind) -> Result<(), String> {
        let parser = crate::decode::parser_for(caps)
            .map(Ok)
            .unwrap_or_else(|| gst::ElementFactory::make("identity").build())
            .map_err(|e| e.to_string())?;
        let mut chain = vec![parser];
        if caps
            .structure(0)
            .is_some_and(|s| s.name() == "video/x-h264")
        {
            // H.264 leaves as AVC, as RTMP's does: its SPS and PPS then
            // come in the caps (codec_data), which is where the pipeline
            // reads them to decide on pass-through before the first buffer.
            let avc = gst::ElementFactory::make("capsfilter")
                .property(
                    "caps",
                    gst::Caps::builder("video/x-h264")
                        .field("stream-format", "avc")
                        .field("alignment", "au")
                        .build(),
                )
                .build()
                .map_err(|e| e.to_string())?;
            chain.push(avc);
        }
        let last = chain.last().ok_or("no parser")?;
        let parsed = last
            .static_pad("src")
            .ok_or_else(|| format!("{} has no src pad", last.name()))?;
        let weak = self.obj().downgrade();
        let flow = Mutex::new(Flow::default());
        parsed.add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
            move |target, info| match weak.upgrade() {
                Some(element) => element
                    .imp()
                    .on_parsed(kind, &mut lock(&flow), target, info),
                None => gst::PadProbeReturn::Remove,
            },
        );
        self.add_and_link(pad, &chain)
    }

    /// What comes out of the parser of the stream `kind`, `target`: counted,
    /// video held until its first keyframe, the first caps making or
    /// continuing the pad, a continued stream's stream-start, segment and
    /// timestamps made the pad's.
    fn on_parsed(
        &self,
        kind: MediaKind,
        flow: &mut Flow,
        target: &gst::Pad,
        info: &mut gst::PadProbeInfo,
    ) -> gst::PadProbeReturn {
        let stand_in = match &mut info.data {
            Some(gst::PadProbeData::Buffer(buffer)) => {
                let bytes = match kind {
                    MediaKind::Video => &self.video_bytes,
                    MediaKind::Audio => &self.audio_bytes,
                };
                bytes.fetch_add(buffer.size() as u64, Ordering::Relaxed);
                if kind == MediaKind::Video && !flow.keyframe_seen {
                    if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                        return gst::PadProbeReturn::Drop;
                    }
                    flow.keyframe_seen = true;
                    // What came before it was dropped.
                    buffer.make_mut().set_flags(gst::BufferFlags::DISCONT);
                }
                if !flow.restamp(buffer) {
                    return gst::PadProbeReturn::Drop;
                }
                None
            }
            Some(gst::PadProbeData::Event(event)) => {
                if let gst::EventView::Caps(_) = event.view() {
                    if let Exposed::Continued(continued) = self.expose(kind, target, event) {
                        flow.continued = Some(continued);
                    }
                }
                flow.stand_in(event)
            }
            _ => None,
        };
        if let Some(event) = stand_in {
            info.data = Some(gst::PadProbeData::Event(event));
        }
        gst::PadProbeReturn::Ok
    }

    /// Adds the pad `kind` for `target` (the first caps on it): its sticky
    /// events stored first, so the application's pad-added sees the caps.
    /// A returning caller's stream goes on on the pad that exists.
    fn expose(&self, kind: MediaKind, target: &gst::Pad, caps: &gst::Event) -> Exposed {
        let obj = self.obj();
        let existing = lock(&self.pads).pad(kind).cloned();
        if let Some(ghost) = existing {
            return self.continue_on(kind, &ghost, target, caps);
        }
        let Some(ghost) = crate::input::ghost_with_caps(&*obj, kind.name(), target, target, caps)
        else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Pad,
                ("cannot expose the {} stream", kind.name())
            );
            return Exposed::Refused;
        };
        {
            let mut pads = lock(&self.pads);
            match kind {
                MediaKind::Video => pads.video = Some(ghost.clone()),
                MediaKind::Audio => pads.audio = Some(ghost.clone()),
            }
            pads.waiting = pads.waiting.saturating_sub(1);
        }
        gst::info!(CAT, imp = self, "{} pad: {:?}", kind.name(), caps);
        let _ = obj.add_pad(&ghost);
        self.check_no_more_pads();
        Exposed::Own
    }

    /// A returning caller's stream `target` goes on on `ghost`, the pad the
    /// first caller's stream of its kind made, if it is of the same media
    /// type: the branch downstream was built for that codec.
    fn continue_on(
        &self,
        kind: MediaKind,
        ghost: &gst::GhostPad,
        target: &gst::Pad,
        caps: &gst::Event,
    ) -> Exposed {
        if ghost.target().as_ref() == Some(target) {
            // New caps within one caller's stream.
            return Exposed::Own;
        }
        let media = |caps: Option<&gst::CapsRef>| {
            caps.and_then(|c| c.structure(0))
                .map(|s| s.name().to_string())
                .unwrap_or_default()
        };
        let was = media(ghost.current_caps().as_deref());
        let now = match caps.view() {
            gst::EventView::Caps(c) => media(Some(c.caps())),
            _ => String::new(),
        };
        if was != now {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "the publisher came back sending {} as {now} where it sent {was}: a stream cannot change codecs",
                    kind.name()
                )
            );
            return Exposed::Refused;
        }
        let continued = Continued::of(ghost.upcast_ref());
        if let Err(e) = ghost.set_target(Some(target)) {
            gst::element_imp_error!(
                self,
                gst::CoreError::Pad,
                (
                    "cannot go on with the returning caller's {}: {}",
                    kind.name(),
                    e
                )
            );
            return Exposed::Refused;
        }
        gst::info!(CAT, imp = self, "{} goes on: {:?}", kind.name(), caps);
        {
            let mut pads = lock(&self.pads);
            pads.waiting = pads.waiting.saturating_sub(1);
        }
        self.check_no_more_pads();
        Exposed::Continued(continued)
    }

    /// no-more-pads once the demuxer has all its streams and every chosen
    /// one has its pad.
    fn check_no_more_pads(&self) {
        let ready = {
            let mut pads = lock(&self.pads);
            let ready = pads.demuxer_done && pads.waiting == 0 && !pads.no_more_pads;
            pads.no_more_pads |= ready;
            ready
        };
        if ready {
            self.obj().no_more_pads();
        }
    }

    pub(super) fn has_pads(&self) -> bool {
        let pads = lock(&self.pads);
        pads.video.is_some() || pads.audio.is_some()
    }
}
