#!/usr/bin/env bash
# The whole ingress as one gst-launch pipeline: an RTMP publish on
# rtmp://127.0.0.1:1935/live/$STREAM_KEY is transcoded to LiveKit's default
# simulcast preset and Opus, and published into $ROOM as $IDENTITY.
#
#   STREAM_KEY=mykey ROOM=demo ./gst-launch-examples/rtmp-to-room.sh
#   ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine \
#     -c:v libx264 -g 60 -c:a aac -f flv rtmp://127.0.0.1:1935/live/mykey
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/target/release:$here/target/debug}"

exec gst-launch-1.0 -e \
  rtmpingresssrc port="${RTMP_PORT:-1935}" stream-key="${STREAM_KEY:-demo-key}" name=src \
  src.video ! queue ! decodebin ! videoconvert \
    ! simulcastenc preset="${PRESET:-H264_720P_30FPS_3_LAYERS}" name=enc \
  enc.src_0 ! queue ! lk.video_0 \
  enc.src_1 ! queue ! lk.video_1 \
  enc.src_2 ! queue ! lk.video_2 \
  src.audio ! queue ! decodebin ! audioconvert ! audioresample \
    ! audio/x-raw,rate=48000,channels=2 ! opusenc bitrate=96000 dtx=true ! lk.audio_0 \
  livekitsink name=lk url="${LIVEKIT_URL:-ws://127.0.0.1:7880}" \
    api-key="${LIVEKIT_API_KEY:-devkey}" api-secret="${LIVEKIT_API_SECRET:-secret}" \
    room-name="${ROOM:-demo}" participant-identity="${IDENTITY:-rtmp-ingress}" \
    participant-name="${NAME:-RTMP ingress}"
