#!/usr/bin/env bash
# Publishes a live test pattern (LiveKit's default simulcast preset) and a tone
# into a room.
#
#   ROOM=demo ./gst-launch-examples/publish-test-pattern.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/target/release:$here/target/debug}"

exec gst-launch-1.0 -e \
  videotestsrc is-live=true pattern=ball ! video/x-raw,width=1280,height=720,framerate=30/1 \
    ! simulcastenc preset="${PRESET:-H264_720P_30FPS_3_LAYERS}" name=enc \
  enc.src_0 ! queue ! lk.video_0  enc.src_1 ! queue ! lk.video_1  enc.src_2 ! queue ! lk.video_2 \
  audiotestsrc is-live=true wave=ticks ! audioconvert ! audioresample \
    ! audio/x-raw,rate=48000,channels=2 ! opusenc bitrate=96000 dtx=true ! lk.audio_0 \
  livekitsink name=lk url="${LIVEKIT_URL:-ws://127.0.0.1:7880}" \
    api-key="${LIVEKIT_API_KEY:-devkey}" api-secret="${LIVEKIT_API_SECRET:-secret}" \
    room-name="${ROOM:-demo}" participant-identity="${IDENTITY:-test-pattern}" \
    participant-name="${NAME:-Test pattern}"
