#!/usr/bin/env bash
# Records one RTMP publish to a Matroska file, without re-encoding: the stream
# ends (and the file is finalized) when the publisher disconnects.
#
#   STREAM_KEY=mykey OUT=recording.mkv ./gst-launch-examples/rtmp-record.sh
#   ffmpeg -re -f lavfi -i testsrc2 -f lavfi -i sine -t 10 -c:v libx264 -c:a aac \
#     -f flv rtmp://127.0.0.1:1935/live/mykey
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export GST_PLUGIN_PATH="${GST_PLUGIN_PATH:-$here/target/release:$here/target/debug}"

exec gst-launch-1.0 -e \
  rtmpingresssrc port="${RTMP_PORT:-1935}" stream-key="${STREAM_KEY:-demo-key}" name=src \
  matroskamux name=mux ! filesink location="${OUT:-recording.mkv}" \
  src.video ! queue ! h264parse ! mux. \
  src.audio ! queue ! aacparse ! mux.
