#!/usr/bin/env bash
# A URL pulled into a room as one gst-launch pipeline: an HTTP file or HLS
# playlist, an RTSP camera, an SRT or RTMP server ($URL) is transcoded to
# LiveKit's default simulcast preset and Opus, and published into $ROOM.
#
#   URL=rtsp://camera.local:554/stream ROOM=demo ./gst-launch-examples/url-to-room.sh
#   URL=https://example.com/live/playlist.m3u8 ./gst-launch-examples/url-to-room.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/target/release:$here/target/debug}"

exec gst-launch-1.0 -e \
  urlingresssrc url="${URL:?set URL to what to pull}" name=src \
  src.video ! queue ! decodebin ! videoconvert \
    ! simulcastenc preset="${PRESET:-H264_720P_30FPS_3_LAYERS}" name=enc \
  enc.src_0 ! queue ! lk.video_0 \
  enc.src_1 ! queue ! lk.video_1 \
  enc.src_2 ! queue ! lk.video_2 \
  src.audio ! queue ! decodebin ! audioconvert ! audioresample \
    ! audio/x-raw,rate=48000,channels=2 ! opusenc bitrate=96000 dtx=true ! lk.audio_0 \
  livekitsink name=lk url="${LIVEKIT_URL:-ws://127.0.0.1:7880}" \
    api-key="${LIVEKIT_API_KEY:-devkey}" api-secret="${LIVEKIT_API_SECRET:-secret}" \
    room-name="${ROOM:-demo}" participant-identity="${IDENTITY:-url-ingress}" \
    participant-name="${NAME:-URL ingress}"
