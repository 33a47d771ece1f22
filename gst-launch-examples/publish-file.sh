#!/usr/bin/env bash
# Publishes a media file into a room at its natural pace (clocksync paces a
# non-live source), transcoded to LiveKit's default simulcast preset and Opus.
#
#   FILE=movie.mp4 ROOM=demo ./gst-launch-examples/publish-file.sh
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/target/release:$here/target/debug}"
file="$(realpath "${FILE:?set FILE to a media file}")"

exec gst-launch-1.0 -e \
  uridecodebin uri="file://$file" name=dec \
  dec. ! queue ! videoconvert ! clocksync ! simulcastenc preset="${PRESET:-H264_720P_30FPS_3_LAYERS}" name=enc \
  enc.src_0 ! queue ! lk.video_0  enc.src_1 ! queue ! lk.video_1  enc.src_2 ! queue ! lk.video_2 \
  dec. ! queue ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 ! clocksync \
    ! opusenc bitrate=96000 ! lk.audio_0 \
  livekitsink name=lk url="${LIVEKIT_URL:-ws://127.0.0.1:7880}" \
    api-key="${LIVEKIT_API_KEY:-devkey}" api-secret="${LIVEKIT_API_SECRET:-secret}" \
    room-name="${ROOM:-demo}" participant-identity="${IDENTITY:-file}" \
    participant-name="${NAME:-$(basename "$file")}"
