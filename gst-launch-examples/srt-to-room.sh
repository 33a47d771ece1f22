#!/usr/bin/env bash
# SRT push into a room as one gst-launch pipeline: a caller on
# srt://127.0.0.1:$SRT_PORT whose streamid names $STREAM_KEY (the bare key or
# SRT's access-control form #!::r=KEY,m=publish) sends MPEG-TS (H.264 or
# H.265, AAC or Opus); it is transcoded to LiveKit's default simulcast preset
# and Opus, and published into $ROOM as $IDENTITY.
#
#   STREAM_KEY=mykey ROOM=demo ./gst-launch-examples/srt-to-room.sh
#   ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine \
#     -c:v libx264 -g 60 -c:a aac -f mpegts 'srt://127.0.0.1:7001?streamid=mykey'
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/target/release:$here/target/debug}"

exec gst-launch-1.0 -e \
  srtingresssrc port="${SRT_PORT:-7001}" stream-key="${STREAM_KEY:-demo-key}" name=src \
  src.video ! queue ! decodebin ! videoconvert \
    ! simulcastenc preset="${PRESET:-H264_720P_30FPS_3_LAYERS}" name=enc \
  enc.src_0 ! queue ! lk.video_0 \
  enc.src_1 ! queue ! lk.video_1 \
  enc.src_2 ! queue ! lk.video_2 \
  src.audio ! queue ! decodebin ! audioconvert ! audioresample \
    ! audio/x-raw,rate=48000,channels=2 ! opusenc bitrate=96000 dtx=true ! lk.audio_0 \
  livekitsink name=lk url="${LIVEKIT_URL:-ws://127.0.0.1:7880}" \
    api-key="${LIVEKIT_API_KEY:-devkey}" api-secret="${LIVEKIT_API_SECRET:-secret}" \
    room-name="${ROOM:-demo}" participant-identity="${IDENTITY:-srt-ingress}" \
    participant-name="${NAME:-SRT ingress}"
