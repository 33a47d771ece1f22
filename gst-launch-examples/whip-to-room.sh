#!/usr/bin/env bash
# A WHIP publish into a room as one gst-launch pipeline, in bypass: a WHIP
# client (a browser, OBS's WHIP output, aiortc) POSTs its offer to
# http://127.0.0.1:$WHIP_PORT/w/$STREAM_KEY; its own H.264 or VP8 and Opus
# go into $ROOM as they came, without decoding.
#
#   STREAM_KEY=mykey ROOM=demo ./gst-launch-examples/whip-to-room.sh
#   OBS: Settings > Stream > Service "WHIP", Server http://127.0.0.1:8080/w,
#        Bearer Token mykey
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/target/release:$here/target/debug}"

exec gst-launch-1.0 -e \
  whipingresssrc port="${WHIP_PORT:-8080}" stream-key="${STREAM_KEY:-demo-key}" name=src \
  src.video ! queue ! lk.video_0 \
  src.audio ! queue ! lk.audio_0 \
  livekitsink name=lk url="${LIVEKIT_URL:-ws://127.0.0.1:7880}" \
    api-key="${LIVEKIT_API_KEY:-devkey}" api-secret="${LIVEKIT_API_SECRET:-secret}" \
    room-name="${ROOM:-demo}" participant-identity="${IDENTITY:-whip-ingress}" \
    participant-name="${NAME:-WHIP ingress}"
