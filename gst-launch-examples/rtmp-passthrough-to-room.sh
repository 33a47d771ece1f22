#!/usr/bin/env bash
# Hybrid H.264 pass-through as one gst-launch pipeline: the publisher's own
# H.264 is the top simulcast layer (not decoded and encoded again), and
# 640x360 and 320x180 layers are encoded from it, with their keyframes where
# the source has its own. A source with B-frames (or another profile than
# constrained-baseline, main or high) gets an encoded top layer instead;
# h264passthrough's `reason` property and its `h264passthrough-state`
# message say why.
#
# CODEC must name the publisher's profile (one profile per track): h264-high
# for ffmpeg's and OBS's x264 defaults, h264-main, or h264 (constrained
# baseline, e.g. x264's ultrafast or baseline profile).
#
#   STREAM_KEY=mykey ROOM=demo ./gst-launch-examples/rtmp-passthrough-to-room.sh
#   ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine \
#     -c:v libx264 -bf 0 -g 60 -c:a aac -f flv rtmp://127.0.0.1:1935/live/mykey
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/target/release:$here/target/debug}"

exec gst-launch-1.0 -e \
  rtmpingresssrc port="${RTMP_PORT:-1935}" stream-key="${STREAM_KEY:-demo-key}" name=src \
  src.video ! queue ! h264passthrough name=pass \
  pass.src ! queue ! lk.video_0 \
  pass.raw ! queue ! simulcastenc codec="${CODEC:-h264-high}" layers=640x360,320x180 name=enc \
  enc.src_0 ! queue ! lk.video_1 \
  enc.src_1 ! queue ! lk.video_2 \
  src.audio ! queue ! decodebin ! audioconvert ! audioresample \
    ! audio/x-raw,rate=48000,channels=2 ! opusenc bitrate=96000 dtx=true ! lk.audio_0 \
  livekitsink name=lk url="${LIVEKIT_URL:-ws://127.0.0.1:7880}" \
    api-key="${LIVEKIT_API_KEY:-devkey}" api-secret="${LIVEKIT_API_SECRET:-secret}" \
    room-name="${ROOM:-demo}" participant-identity="${IDENTITY:-rtmp-ingress}" \
    participant-name="${NAME:-RTMP ingress}"
