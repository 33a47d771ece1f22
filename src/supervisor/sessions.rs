//! Live sessions: the RTMP listener asks here whether a stream key may publish;
//! an accepted publish gets its own pipeline (see [`crate::pipeline`]), and what
//! the pipeline reports keeps the ingress's state true in the store:
//! INACTIVE -> BUFFERING -> PUBLISHING -> INACTIVE, or ERROR with a message.
//! A session runs only while it holds its ingress's claim in the store, which
//! is what keeps one key from publishing twice, here or on another node.

use super::capacity::{Capacity, Load};
use super::config::Config;
use super::ingress::{may_publish, now_nanos, takes_push};
use super::ingress_options::IngressOptions;
use super::store::{self, Store, StoreError};
use super::webhooks::Webhooks;
use crate::input::{Decision, InputKind, InputSource, PublishRequest, Refusal, RefusalKind};
use crate::livekit::stats::SendStats;
use crate::options;
use crate::passthrough::Mode;
use crate::pipeline::{
    IngressPipeline, LiveKitServer, PipelineConfig, PipelineError, PipelineEvent,
};
use crate::presets::PresetError;
use crate::sync::lock;
use gst::prelude::*;
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long stopping an ingress waits for the node running it to let go.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How often a stop request not yet acted on is sent again.
const STOP_RETRY: Duration = Duration::from_secs(2);

/// Why an accepted publish could not start its stream.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The ingress's settings cannot be encoded (the API validates them, but
    /// an ingress stored by an older version may hold anything).
    #[error("{0}")]
    Settings(#[from] PresetError),
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
    #[error("the ingress pipeline could not start")]
    NotPlaying,
    #[error("cannot start the session: {0}")]
    Thread(std::io::Error),
    #[error("the ingress was deleted")]
    Deleted,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Full or shutting down (see `Sessions::admit`); worded as the refusal
    /// a push publisher gets for it.
    #[error("{}", Refusal::node_unavailable(.0))]
    Unavailable(String),
}

impl StartError {
    /// Whether the stream itself failed (an ERROR state for its ingress),
    /// rather than the ingress being gone or the store out of reach.
    pub fn is_the_streams(&self) -> bool {
        !matches!(self, StartError::Deleted | StartError::Store(_))
    }
}

/// Counters for the metrics endpoint.
#[derive(Default)]
pub struct SessionStats {
    pub started: AtomicU64,
    pub ended: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
    /// Of those, refused because the node was full, shutting down or could
    /// not reach its store.
    pub refused_unavailable: AtomicU64,
    /// Frames sources dropped as too late to matter (after a stall).
    pub late_dropped: AtomicU64,
    /// Claim renewals the store did not answer (the stream went on).
    pub renewals_failed: AtomicU64,
    /// Claims that lapsed while the store was out of reach and were taken
    /// again when it answered.
    pub reclaimed: AtomicU64,
}

struct Live {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// What the stream sent to the room so far, as livekitsink last reported.
    sent: Option<SendStats>,
    /// Cores the stream holds: what it was admitted with, then what its
    /// pass-through, once running, costs.
    cost: f64,
    /// The stream's input, and whether its publisher left and the stream
    /// waits for it to come back (its reconnect grace period).
    input: InputKind,
    paused: bool,
}

/// What a session thread keeps while it follows its pipeline.
struct SessionRun {
    id: String,
    /// The ingress as the session started it (for webhooks).
    started: proto::IngressInfo,
    state: proto::IngressState,
    /// When the claim was last renewed.
    renewed: Instant,
    /// A state change the store could not take (it did not answer): written
    /// again once the store answers, so an outage loses no state.
    unsaved: bool,
}

impl SessionRun {
    fn new(started: proto::IngressInfo) -> SessionRun {
        SessionRun {
            id: started.ingress_id.clone(),
            state: started.state.clone().unwrap_or_default(),
            started,
            renewed: Instant::now(),
            unsaved: false,
        }
    }
}

/// What applying a pipeline event asks of the session loop.
enum Step {
    /// Nothing for the stored state.
    Continue,
    /// The state changed: store it.
    Save,
    /// The stream is over, with this outcome.
    End(Outcome),
}

/// How a session ended: the ingress goes INACTIVE, or ERROR for a failure.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The publisher finished (the reason the pipeline gave).
    Finished(String),
    /// The service stopped it (the ingress deleted, disabled or updated, or
    /// the service shutting down).
    Stopped,
    /// The stream itself failed.
    Failed(String),
    /// The claim lapsed, so another node may have taken the key: this one
    /// must not go on streaming.
    ClaimLapsed,
}

impl Outcome {
    /// The error the ingress's state shows, `None` for an ending that is not
    /// a failure.
    fn error(&self) -> Option<String> {
        match self {
            Outcome::Finished(_) | Outcome::Stopped => None,
            Outcome::Failed(message) => Some(message.clone()),
            Outcome::ClaimLapsed => Some("the ingress's claim lapsed; the stream was ended".into()),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Finished(reason) => f.write_str(reason),
            Outcome::Stopped => f.write_str("stopped by the service"),
            Outcome::Failed(message) => f.write_str(message),
            Outcome::ClaimLapsed => f.write_str("the claim lapsed"),
        }
    }
}

pub struct Sessions {
    config: Config,
    webhooks: Webhooks,
    store: Arc<dyn Store>,
    live: Mutex<HashMap<String, Live>>,
    pub stats: SessionStats,
    pub capacity: Capacity,
    /// Held from a publish's admission to its session being live, so that two
    /// publishes at once cannot both take the last room.
    admission: Mutex<()>,
    /// Set on SIGTERM: no new stream is taken.
    draining: AtomicBool,
}

impl Sessions {
    /// Sessions over `store`, following the stop requests other nodes send.
    pub fn new(config: Config, store: Arc<dyn Store>) -> Result<Arc<Sessions>, StoreError> {
        let webhook_key = match config.webhook.api_key.as_str() {
            "" => config.api_key.as_str(),
            key => key,
        };
        let webhooks = Webhooks::new(config.webhook.urls.clone(), webhook_key, &config.api_secret);
        let sessions = Arc::new(Sessions {
            webhooks,
            capacity: Capacity::new(&config.capacity),
            admission: Mutex::default(),
            draining: AtomicBool::new(false),
            config,
            store: store.clone(),
            live: Mutex::default(),
            stats: SessionStats::default(),
        });
        let (on_stop, alive) = (Arc::downgrade(&sessions), Arc::downgrade(&sessions));
        store.watch_stops(
            Box::new(move |id| {
                if let Some(sessions) = on_stop.upgrade() {
                    sessions.stop(id);
                }
            }),
            Box::new(move || alive.strong_count() > 0),
        )?;
        Ok(sessions)
    }

    /// Number of live sessions.
    pub fn live_count(&self) -> usize {
        lock(&self.live).len()
    }

    /// Cores the live streams were admitted with, together.
    pub fn committed(&self) -> f64 {
        lock(&self.live).values().map(|live| live.cost).sum()
    }

    /// Whether `/health` should turn load balancers away: shutting down, or
    /// no room for another transcoded stream. The reason when so.
    pub fn unavailable(&self) -> Option<String> {
        if self.draining() {
            return Some("shutting down".into());
        }
        let committed = self.committed();
        self.capacity.full(committed).then(|| {
            format!(
                "at capacity ({committed:.2} of {:.2} cores)",
                self.capacity.limit
            )
        })
    }

    /// From now on no new stream is taken (SIGTERM); live ones go on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether a stream of `load` may start on this node now: not while it
    /// drains, not when it would pass the node's capacity. Checked with
    /// `admission` held, before the key is claimed, so a refused publish
    /// leaves the key free for another node.
    fn admit(&self, load: Load) -> Result<f64, String> {
        if self.draining() {
            return Err("shutting down".into());
        }
        self.capacity
            .admit(self.committed(), self.live_count(), load)?;
        Ok(self.capacity.cost(load))
    }

    /// What each live stream has sent to its room, by ingress id.
    pub fn sent(&self) -> Vec<(String, SendStats)> {
        let mut sent: Vec<_> = lock(&self.live)
            .iter()
            .filter_map(|(id, live)| Some((id.clone(), live.sent.clone()?)))
            .collect();
        sent.sort_by(|a, b| a.0.cmp(&b.0));
        sent
    }

    /// The listener's question: may this key publish? On yes, the session
    /// starts. What decides is the claim, not the stored state: a state a dead
    /// node left behind does not keep the key from publishing.
    pub fn authorize(self: &Arc<Self>, request: PublishRequest) -> Decision {
        let info = match self.store.by_stream_key(&request.key) {
            Ok(Some(info)) => info,
            Ok(None) => return self.refuse(Refusal::unknown_key()),
            Err(e) => return self.refuse(store_refusal(e)),
        };
        if let Err(reason) = may_publish(&info).and_then(|()| takes_push(&info, request.input)) {
            return self.refuse(Refusal::forbidden(reason));
        }
        let Some(source) = self.push_source(request.input, &info.stream_key) else {
            return self.refuse(Refusal::forbidden(
                "this node does not listen for that input",
            ));
        };
        if self.resume_paused(&info.ingress_id, request.input) {
            tracing::info!(ingress = %info.ingress_id, "publisher back within the grace period");
            return Decision::Accept;
        }
        let _admission = lock(&self.admission);
        let cost = match self.admit(load_of(&info)) {
            Ok(cost) => cost,
            Err(why) => return self.refuse(Refusal::node_unavailable(why)),
        };
        match self.store.claim(&info.ingress_id) {
            Ok(true) => {}
            Ok(false) => return self.refuse(Refusal::busy("this ingress is already publishing")),
            Err(e) => return self.refuse(store_refusal(e)),
        }
        let id = info.ingress_id.clone();
        let started_at = now_nanos();
        let Err(error) = self.start(info, source, &request.peer.to_string(), started_at, cost)
        else {
            return Decision::Accept;
        };
        self.not_started(&id, started_at, &error);
        self.refuse(Refusal::internal(error.to_string()))
    }

    /// Whether the ingress's live stream here waits for its publisher to come
    /// back on `input` (its grace period): then the publish goes on in it,
    /// through the claim its source element holds.
    fn resume_paused(&self, id: &str, input: InputKind) -> bool {
        lock(&self.live)
            .get_mut(id)
            .is_some_and(|live| live.input == input && std::mem::take(&mut live.paused))
    }

    /// After a claimed start failed: the ERROR state with the reason when the
    /// stream itself failed (an ingress deleted meanwhile, or a store that
    /// cannot be written, has none to keep), and the claim given back.
    fn not_started(
        &self,
        id: &str,
        started_at: i64,
        error: &StartError,
    ) -> Option<proto::IngressState> {
        tracing::warn!(ingress = %id, "stream not started: {error}");
        let failed = error.is_the_streams().then(|| {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            let failed = proto::IngressState {
                status: Status::EndpointError as i32,
                error: error.to_string(),
                started_at,
                ended_at: now_nanos(),
                ..Default::default()
            };
            self.save_state(id, &failed);
            failed
        });
        self.store.release(id);
        failed
    }

    /// Starts pulling a URL ingress just created: its state as it started
    /// (BUFFERING), or ERROR with the reason it could not.
    pub fn start_pull(self: &Arc<Self>, mut info: proto::IngressInfo) -> proto::IngressInfo {
        let id = info.ingress_id.clone();
        let started_at = now_nanos();
        let source = InputSource::Url {
            url: info.url.clone(),
        };
        let _admission = lock(&self.admission);
        let cost = match self.admit(load_of(&info)) {
            Ok(cost) => cost,
            Err(why) => {
                // The ingress exists; its pull could not start here.
                self.stats
                    .refused_unavailable
                    .fetch_add(1, Ordering::Relaxed);
                let error = StartError::Unavailable(why);
                if let Some(failed) = self.not_started(&id, started_at, &error) {
                    info.state = Some(failed);
                }
                return info;
            }
        };
        match self.store.claim(&id) {
            Ok(true) => match self.start(info.clone(), source, "url", started_at, cost) {
                Ok(()) => info.state = self.store.get(&id).ok().flatten().and_then(|i| i.state),
                Err(error) => {
                    if let Some(failed) = self.not_started(&id, started_at, &error) {
                        info.state = Some(failed);
                    }
                }
            },
            // Only this call knows the new ingress; no one else holds it.
            Ok(false) => tracing::warn!(ingress = %id, "a new ingress was claimed already"),
            Err(e) => tracing::warn!(ingress = %id, "pull not started: {e}"),
        }
        info
    }

    /// Counts a refusal, those for the node's own reasons apart (an operator
    /// tells a full node from bad keys by them).
    fn refuse(&self, refusal: Refusal) -> Decision {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        if refusal.kind == RefusalKind::NodeUnavailable {
            self.stats
                .refused_unavailable
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("publish refused: {refusal}");
        }
        Decision::Reject(refusal)
    }

    fn start(
        self: &Arc<Self>,
        mut info: proto::IngressInfo,
        source: InputSource,
        peer: &str,
        started_at: i64,
        cost: f64,
    ) -> Result<(), StartError> {
        let kind = source.kind();
        let input = kind.name();
        // An ingress deleted since its lookup has none; the state write
        // below finds it gone.
        let options = self.store.options(&info.ingress_id)?.unwrap_or_default();
        let pipeline_config = self.pipeline_config(&info, &options, source)?;
        let pipeline = IngressPipeline::build(&pipeline_config)?;
        let buffering = proto::IngressState {
            status: Status::EndpointBuffering as i32,
            started_at,
            updated_at: now_nanos(),
            ..Default::default()
        };
        // Only the state: an update made since the key was looked up stays.
        if !self.store.put_state(&info.ingress_id, &buffering)? {
            return Err(StartError::Deleted);
        }
        info.state = Some(buffering);
        pipeline
            .pipeline()
            .set_state(gst::State::Playing)
            .map_err(|_| StartError::NotPlaying)?;
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        tracing::info!(ingress = %info.ingress_id, input, peer, "stream started");

        let stop = Arc::new(AtomicBool::new(false));
        let this = self.clone();
        let id = info.ingress_id.clone();
        let thread_stop = stop.clone();
        // Held until the stream is in: the session may apply an event to its
        // entry (a pass-through's cost) as soon as its thread runs.
        let mut live = lock(&self.live);
        let thread = std::thread::Builder::new()
            .name(format!("session-{id}"))
            .spawn(move || this.run(info, pipeline, thread_stop))
            .map_err(StartError::Thread)?;
        live.insert(
            id,
            Live {
                stop,
                thread: Some(thread),
                sent: None,
                cost,
                input: kind,
                paused: false,
            },
        );
        Ok(())
    }

    /// Where a push publish's media comes from: this node's listener of its
    /// protocol, claimed by the ingress's stream key.
    fn push_source(&self, input: InputKind, stream_key: &str) -> Option<InputSource> {
        let (address, stream_key) = (self.config.bind_address.clone(), stream_key.to_string());
        match input {
            InputKind::Rtmp => Some(InputSource::Rtmp {
                address,
                port: self.config.rtmp_port,
                stream_key,
                reconnect_grace: self.config.reconnect_grace,
            }),
            InputKind::Srt => Some(InputSource::Srt {
                address,
                port: self.config.srt_port?,
                stream_key,
                reconnect_grace: self.config.reconnect_grace,
            }),
            // WHIP is served on the API's HTTP port.
            InputKind::Whip => Some(InputSource::Whip {
                address,
                port: self.config.http_port,
                stream_key,
            }),
            InputKind::Url => None,
        }
    }

    /// The pipeline for an ingress: its source, this node's server, the
    /// ingress's settings resolved once ([`options::resolve`]), and its own
    /// options over the service's defaults.
    fn pipeline_config(
        &self,
        info: &proto::IngressInfo,
        own: &IngressOptions,
        source: InputSource,
    ) -> Result<PipelineConfig, PresetError> {
        let effective = own.in_effect(&self.default_options());
        Ok(PipelineConfig {
            name: format!("ingress-{}", info.ingress_id),
            source,
            server: LiveKitServer {
                ws_url: self.config.ws_url.clone(),
                api_key: self.config.api_key.clone(),
                api_secret: self.config.api_secret.clone(),
            },
            options: options::resolve(info)?,
            // LiveKit's rule: WHIP may bypass; other inputs always transcode.
            transcode: info.enable_transcoding != Some(false),
            passthrough: effective.video_passthrough.unwrap_or_default(),
        })
    }

    /// What an ingress without options of its own gets: the configuration's.
    pub fn default_options(&self) -> IngressOptions {
        IngressOptions {
            video_passthrough: Some(self.config.video_passthrough),
        }
    }

    /// The session thread: follows the pipeline until the stream ends, then
    /// stops it and records how the stream ended.
    fn run(
        self: Arc<Self>,
        started: proto::IngressInfo,
        pipeline: IngressPipeline,
        stop: Arc<AtomicBool>,
    ) {
        let mut session = SessionRun::new(started);
        let outcome = self.follow(&mut session, &pipeline, &stop);
        // Leaving the room happens as the pipeline stops (livekitsink leaves).
        let _ = pipeline.pipeline().set_state(gst::State::Null);
        drop(pipeline);
        self.end(session, outcome);
    }

    /// Applies the pipeline's events to the session's state until the stream
    /// ends, is stopped, or the session must give up: its outcome.
    /// a failure).
    fn follow(
        &self,
        session: &mut SessionRun,
        pipeline: &IngressPipeline,
        stop: &AtomicBool,
    ) -> Outcome {
        let Some(bus) = pipeline.pipeline().bus() else {
            return Outcome::Stopped;
        };
        loop {
            if let Some(outcome) = self.check(session, stop) {
                return outcome;
            }
            let Some(message) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
                continue;
            };
            let Some(event) = PipelineEvent::from_message(&message) else {
                continue;
            };
            match self.apply(session, event) {
                Step::Continue => {}
                Step::Save => session.unsaved = !self.save_state(&session.id, &session.state),
                Step::End(outcome) => return outcome,
            }
        }
    }

    /// Between bus messages: whether the session must end (stopped by the
    /// service, a lapsed claim). A publisher that goes away at any point is
    /// the listener's to notice: every publish it hands to the source ends
    /// with an end-of-publish event, so the pipeline reaches EOS.
    fn check(&self, session: &mut SessionRun, stop: &AtomicBool) -> Option<Outcome> {
        if stop.load(Ordering::Relaxed) {
            return Some(Outcome::Stopped);
        }
        self.renew_claim(session)
    }

    /// Renews the session's claim when a third of the lease has passed; an
    /// outcome when the claim was lost to another node.
    ///
    /// A store that does not answer is not a reason to cut a live stream: the
    /// session keeps streaming and keeps trying. When the store answers again
    /// after the lease ran out (Redis restarted or was cut off for longer than
    /// a lease), the claim is taken again unless another node took the key
    /// meanwhile, and a state change the store missed is written then.
    fn renew_claim(&self, session: &mut SessionRun) -> Option<Outcome> {
        if session.renewed.elapsed() < store::LEASE / 3 {
            return None;
        }
        session.renewed = Instant::now();
        let held = match self.store.renew(&session.id) {
            Ok(true) => true,
            Ok(false) => match self.claim_again(&session.id) {
                Some(held) => held,
                None => return Some(Outcome::ClaimLapsed),
            },
            Err(e) => {
                tracing::warn!(ingress = %session.id, "cannot renew the claim, streaming on: {e}");
                self.stats.renewals_failed.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        if held && session.unsaved {
            session.unsaved = !self.save_state(&session.id, &session.state);
        }
        None
    }

    /// After a renewal found the claim gone: takes it again if no other node
    /// holds it. `None` when another does (this session must end: that node
    /// may be running the key's stream); `Some(false)` when the store does
    /// not answer (try again at the next renewal).
    fn claim_again(&self, id: &str) -> Option<bool> {
        match self.store.claim(id) {
            Ok(true) => {
                tracing::warn!(ingress = %id, "the claim had lapsed (the store was out of reach); taken again");
                self.stats.reclaimed.fetch_add(1, Ordering::Relaxed);
                Some(true)
            }
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(ingress = %id, "cannot take the lapsed claim again yet: {e}");
                Some(false)
            }
        }
    }

    /// What a stream holds of the node's capacity once its pass-through is
    /// known: less while the source is passed through, the transcode's cost
    /// again when it falls back (that may take the node past its limit for
    /// a while: the stream is live and is not cut for it; no new one is
    /// admitted meanwhile).
    fn hold_passthrough_cost(&self, id: &str, active: bool, mode: Mode) {
        let mut live = lock(&self.live);
        let Some(live) = live.get_mut(id) else {
            return;
        };
        let load = match (active, mode) {
            (true, Mode::Hybrid) => Load::Hybrid,
            (true, Mode::Single) => Load::Bypass,
            _ => Load::Transcode,
        };
        let cost = self.capacity.cost(load);
        if cost != live.cost {
            tracing::debug!(ingress = %id, "holds {cost:.2} cores (was {:.2})", live.cost);
            live.cost = cost;
        }
    }

    /// One pipeline event applied to the session's state.
    fn apply(&self, session: &mut SessionRun, event: PipelineEvent) -> Step {
        let state = &mut session.state;
        match event {
            PipelineEvent::Connected { room_sid } => state.room_id = room_sid,
            PipelineEvent::TrackPublished { info } => {
                // A rejoin publishes the track anew: keep only the current one.
                state.tracks.retain(|t| t.r#type != info.r#type);
                state.tracks.push(*info);
                if state.status != Status::EndpointPublishing as i32 {
                    state.status = Status::EndpointPublishing as i32;
                    session.unsaved = !self.save_state(&session.id, state);
                    self.notify("ingress_started", &session.started, state);
                }
            }
            PipelineEvent::InputVideo {
                mime_type,
                width,
                height,
                framerate,
            } => {
                let video = state.video.get_or_insert_with(Default::default);
                video.mime_type = mime_type;
                video.width = width;
                video.height = height;
                video.framerate = framerate;
            }
            PipelineEvent::InputAudio {
                mime_type,
                channels,
                sample_rate,
            } => {
                let audio = state.audio.get_or_insert_with(Default::default);
                audio.mime_type = mime_type;
                audio.channels = channels;
                audio.sample_rate = sample_rate;
            }
            PipelineEvent::InputBitrate { video, audio } => {
                if let Some(v) = state.video.as_mut() {
                    v.average_bitrate = video;
                }
                if let Some(a) = state.audio.as_mut() {
                    a.average_bitrate = audio;
                }
            }
            PipelineEvent::Passthrough {
                active,
                mode,
                reason,
            } => {
                // LiveKit's `error` is "error/non compliance description":
                // a source that could not be passed through is told there,
                // while the ingress goes on publishing (transcoded).
                if active {
                    tracing::info!(ingress = %session.id, "video passed through");
                    state.error.clear();
                } else {
                    tracing::warn!(ingress = %session.id, "video pass-through off: {reason}; transcoding");
                    state.error = format!("video pass-through off: {reason}; transcoded");
                }
                self.hold_passthrough_cost(&session.id, active, mode);
            }
            PipelineEvent::Ended { reason } => return Step::End(Outcome::Finished(reason)),
            PipelineEvent::Failed { message } => return Step::End(Outcome::Failed(message)),
            PipelineEvent::Paused => {
                state.status = Status::EndpointBuffering as i32;
                if let Some(live) = lock(&self.live).get_mut(&session.id) {
                    live.paused = true;
                }
            }
            PipelineEvent::Resumed => {
                state.status = Status::EndpointPublishing as i32;
                if let Some(live) = lock(&self.live).get_mut(&session.id) {
                    live.paused = false;
                }
            }
            PipelineEvent::LateDropped { frames } => {
                self.stats.late_dropped.fetch_add(frames, Ordering::Relaxed);
                return Step::Continue;
            }
            PipelineEvent::Sent(sent) => {
                // Counters for /metrics, not part of the ingress's state.
                if let Some(live) = lock(&self.live).get_mut(&session.id) {
                    live.sent = Some(*sent);
                }
                return Step::Continue;
            }
        }
        Step::Save
    }

    /// Records how the stream ended, gives the claim back and says so.
    fn end(&self, session: SessionRun, outcome: Outcome) {
        let SessionRun {
            id,
            started,
            mut state,
            ..
        } = session;
        state.ended_at = now_nanos();
        match outcome.error() {
            None => {
                tracing::info!(ingress = %id, "stream ended: {outcome}");
                state.status = Status::EndpointInactive as i32;
                self.stats.ended.fetch_add(1, Ordering::Relaxed);
            }
            Some(message) => {
                tracing::warn!(ingress = %id, "stream failed: {message}");
                state.status = Status::EndpointError as i32;
                state.error = message;
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        // A lapsed claim no other node took can be had again to write how the
        // stream ended; one that was taken leaves the state to its new holder.
        if outcome == Outcome::ClaimLapsed {
            let _ = self.store.claim(&id);
        }
        self.save_state(&id, &state);
        self.store.release(&id);
        if state.started_at > 0 {
            self.notify("ingress_ended", &started, &state);
        }
        lock(&self.live).remove(&id);
    }

    /// Sends a webhook with the ingress as stored now (as it was, if it was
    /// deleted meanwhile) and the session's state.
    fn notify(&self, event: &str, started: &proto::IngressInfo, state: &proto::IngressState) {
        let mut info = self
            .store
            .get(&started.ingress_id)
            .ok()
            .flatten()
            .unwrap_or_else(|| started.clone());
        info.state = Some(state.clone());
        self.webhooks.send(event, &info);
    }

    /// Writes the session's state into the stored ingress, if it still exists
    /// and this node still holds its claim.
    /// False when the store did not answer (the write is worth repeating).
    fn save_state(&self, id: &str, state: &proto::IngressState) -> bool {
        let mut state = state.clone();
        state.updated_at = now_nanos();
        match self.store.put_state(id, &state) {
            Ok(true) => true,
            Ok(false) => {
                tracing::debug!(ingress = %id, "state not saved: the ingress is gone or another node holds it");
                true
            }
            Err(e) => {
                tracing::warn!(ingress = %id, "cannot save state: {e}");
                false
            }
        }
    }

    /// Gives a live ingress's participant its updated name and metadata in the
    /// room, through LiveKit's RoomService (from any node: the room is the
    /// server's). Failures are logged: the update itself is already stored.
    pub fn update_live_participant(&self, info: &proto::IngressInfo) {
        let http_url = self
            .config
            .ws_url
            .replacen("ws://", "http://", 1)
            .replacen("wss://", "https://", 1);
        let rooms = livekit_api::services::room::RoomClient::with_api_key(
            &http_url,
            &self.config.api_key,
            &self.config.api_secret,
        )
        .with_failover(false);
        let update = rooms.update_participant(
            &info.room_name,
            &info.participant_identity,
            livekit_api::services::room::UpdateParticipantOptions {
                name: info.participant_name.clone(),
                metadata: info.participant_metadata.clone(),
                ..Default::default()
            },
        );
        match tokio::runtime::Handle::current().block_on(update) {
            Ok(_) => tracing::info!(ingress = %info.ingress_id, "live participant updated"),
            Err(e) => {
                tracing::warn!(ingress = %info.ingress_id, "cannot update the live participant: {e}")
            }
        }
    }

    /// Ends the live session of an ingress, if any, and waits for it to leave.
    pub fn stop(&self, ingress_id: &str) {
        let live = lock(&self.live).remove(ingress_id);
        if let Some(mut live) = live {
            live.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = live.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Ends an ingress's stream wherever it runs: here at once, on another
    /// node by a stop request, repeated until the claim is given back (or the
    /// wait is over: a node that cannot be reached loses its claim by itself).
    pub fn stop_everywhere(&self, ingress_id: &str) {
        self.stop(ingress_id);
        let deadline = Instant::now() + STOP_WAIT;
        let mut asked: Option<Instant> = None;
        loop {
            match self.store.is_claimed(ingress_id) {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!(ingress = %ingress_id, "cannot tell whether the stream stopped: {e}");
                    return;
                }
            }
            if Instant::now() >= deadline {
                tracing::warn!(ingress = %ingress_id, "the node running the stream did not stop it within {STOP_WAIT:?}");
                return;
            }
            if asked.is_none_or(|at| at.elapsed() >= STOP_RETRY) {
                if let Err(e) = self.store.request_stop(ingress_id) {
                    tracing::warn!(ingress = %ingress_id, "stop request not sent: {e}");
                }
                asked = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until no stream is live or `timeout` has passed, or `cut_short`
    /// fires (the drain after SIGTERM); whether every stream ended.
    pub async fn wait_drained(
        &self,
        timeout: Duration,
        cut_short: impl std::future::Future,
    ) -> bool {
        let drained = async {
            while self.live_count() > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = drained => true,
            _ = tokio::time::sleep(timeout) => false,
            _ = cut_short => false,
        }
    }

    /// Ends every live session (graceful shutdown).
    pub fn stop_all(&self) {
        let ids: Vec<String> = lock(&self.live).keys().cloned().collect();
        for id in ids {
            self.stop(&id);
        }
    }
}

/// The refusal for a store call that failed while deciding on a publish. A
/// store out of reach says nothing about the stream: a later try, or another
/// node that still reaches it, may succeed. Anything else (a damaged record, a
/// failed query) does not get better by trying again: internal.
fn store_refusal(error: StoreError) -> Refusal {
    match error {
        StoreError::Unreachable(why) => Refusal::node_unavailable(why),
        other => Refusal::internal(other.to_string()),
    }
}

/// What an ingress's stream asks of the node: LiveKit's rule is that WHIP
/// may bypass, other inputs always transcode (as `pipeline_config` builds it).
fn load_of(info: &proto::IngressInfo) -> Load {
    if info.enable_transcoding == Some(false) {
        Load::Bypass
    } else {
        Load::Transcode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_out_of_reach_is_the_nodes_trouble_not_the_streams() {
        let unreachable = store_refusal(StoreError::unreachable("connection refused"));
        assert_eq!(unreachable.kind, RefusalKind::NodeUnavailable);
        assert_eq!(
            unreachable.to_string(),
            "this node cannot take the stream now: ingress store: connection refused"
        );
        let corrupt = store_refusal(StoreError::Corrupt("bad record".into()));
        assert_eq!(corrupt, Refusal::internal("bad record"));
        let other = store_refusal(StoreError::Other("bad query".into()));
        assert_eq!(other.kind, RefusalKind::Internal);
    }

    /// A store that knows at most one ingress (when asked for it by key) and
    /// answers nothing else: Redis gone mid-decision.
    struct Unreached(Option<proto::IngressInfo>);

    fn down<T>() -> Result<T, StoreError> {
        Err(StoreError::unreachable("connection refused"))
    }

    impl Store for Unreached {
        fn put(&self, _: &proto::IngressInfo) -> Result<(), StoreError> {
            down()
        }
        fn get(&self, _: &str) -> Result<Option<proto::IngressInfo>, StoreError> {
            down()
        }
        fn by_stream_key(&self, _: &str) -> Result<Option<proto::IngressInfo>, StoreError> {
            self.0.clone().map_or_else(down, |info| Ok(Some(info)))
        }
        fn list(&self, _: &str, _: &str) -> Result<Vec<proto::IngressInfo>, StoreError> {
            down()
        }
        fn delete(&self, _: &str) -> Result<(), StoreError> {
            down()
        }
        fn options(&self, _: &str) -> Result<Option<IngressOptions>, StoreError> {
            down()
        }
        fn put_options(&self, _: &str, _: &IngressOptions) -> Result<bool, StoreError> {
            down()
        }
        fn claim(&self, _: &str) -> Result<bool, StoreError> {
            down()
        }
        fn renew(&self, _: &str) -> Result<bool, StoreError> {
            down()
        }
        fn release(&self, _: &str) {}
        fn is_claimed(&self, _: &str) -> Result<bool, StoreError> {
            down()
        }
        fn put_state(&self, _: &str, _: &proto::IngressState) -> Result<bool, StoreError> {
            down()
        }
        fn swap_state(
            &self,
            _: &str,
            _: &proto::IngressState,
            _: &proto::IngressState,
        ) -> Result<bool, StoreError> {
            down()
        }
        fn request_stop(&self, _: &str) -> Result<(), StoreError> {
            down()
        }
        fn watch_stops(
            &self,
            _: store::StopHandler,
            _: Box<dyn Fn() -> bool + Send>,
        ) -> Result<(), StoreError> {
            Ok(())
        }
        fn ping(&self) -> Result<(), StoreError> {
            down()
        }
    }

    /// Whether the lookup or the claim finds the store gone, the publisher
    /// is told to try later or elsewhere, and it counts as the node's refusal.
    #[test]
    fn a_publish_decided_without_the_store_is_refused_as_node_unavailable() {
        let config = Config {
            capacity: super::super::config::CapacityConfig {
                cores: 4.0,
                ..Default::default()
            },
            ..Default::default()
        };
        let rtmp = proto::IngressInfo {
            ingress_id: "IN_x".into(),
            stream_key: "k".into(),
            input_type: proto::IngressInput::RtmpInput as i32,
            room_name: "stage".into(),
            ..Default::default()
        };
        for known in [None, Some(rtmp)] {
            let sessions = Sessions::new(config.clone(), Arc::new(Unreached(known))).expect("new");
            let request = PublishRequest {
                input: InputKind::Rtmp,
                key: "k".into(),
                peer: "127.0.0.1:9".parse().expect("addr"),
                app: String::new(),
            };
            let Decision::Reject(refusal) = sessions.authorize(request) else {
                panic!("accepted without a store");
            };
            assert_eq!(refusal.kind, RefusalKind::NodeUnavailable, "{refusal}");
            assert!(refusal.reason.starts_with("ingress store: "), "{refusal}");
            assert_eq!(sessions.stats.refused.load(Ordering::Relaxed), 1);
            assert_eq!(
                sessions.stats.refused_unavailable.load(Ordering::Relaxed),
                1
            );
        }
    }

    #[test]
    fn an_unavailable_start_reads_as_the_refusal() {
        let error = StartError::Unavailable("shutting down".into());
        assert_eq!(
            error.to_string(),
            "this node cannot take the stream now: shutting down"
        );
    }
}
