#!/usr/bin/env bash
# Quick start: installs what is missing, builds, starts a LiveKit server in dev
# mode (unless one already answers on :7880) and the livekit-ingress service on
# its embedded defaults, creates a demo ingress and prints its URL and stream key.
# Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cargo build --release --locked

TOOLS_DIR="${LIVEKIT_INGRESS_TOOLS:-$HOME/.cache/livekit-ingress}"
API_PORT="${LIVEKIT_INGRESS_HTTP_PORT:-7888}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

answers() { curl -fsS -o /dev/null "$1" 2>/dev/null; }

if ! answers http://127.0.0.1:7880/; then
  echo "starting a LiveKit server in dev mode on ws://127.0.0.1:7880 (log: $TOOLS_DIR/livekit-dev.log)"
  "$TOOLS_DIR/bin/livekit-server" --dev --bind 127.0.0.1 --node-ip 127.0.0.1 >"$TOOLS_DIR/livekit-dev.log" 2>&1 &
  pids+=($!)
fi

target/release/livekit-ingress &
pids+=($!)

for _ in $(seq 1 100); do
  answers "http://127.0.0.1:$API_PORT/health" && break
  sleep 0.1
done
"$TOOLS_DIR/venv/bin/python" scripts/demo_ingress.py --api-url "http://127.0.0.1:$API_PORT"
echo "livekit-ingress is running; Ctrl-C to stop."
wait
