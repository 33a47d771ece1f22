#!/usr/bin/env bash
# Installs everything the project builds and tests with, idempotently: Debian's
# GStreamer 1.22 stack and media tools, the pinned LiveKit server from the Go
# module proxy, and a Python virtualenv with the LiveKit SDK used as an
# independent subscriber and API client, and aiortc as a WHIP client (its own
# ICE, DTLS and encoders); the pion WHIP client (simulcast) built from
# tests/helpers/whip_pion with modules from the Go module proxy. Quiet when all is already there.
set -euo pipefail

TOOLS_DIR="${LIVEKIT_INGRESS_TOOLS:-$HOME/.cache/livekit-ingress}"
LIVEKIT_SERVER_VERSION="v1.13.5"
PY_PACKAGES=(livekit==1.2.1 livekit-api==1.2.2 numpy aiortc==1.16.0)

APT_PACKAGES=(
  pkg-config libssl-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-nice
  ffmpeg redis-server meson ninja-build curl time openssl
  python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0
)

log() { echo "setup: $*" >&2; }

install_debian_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_livekit_server() {
  local bin="$TOOLS_DIR/bin/livekit-server"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "${LIVEKIT_SERVER_VERSION#v}"; then
    return
  fi
  command -v go >/dev/null || { log "go is required to install the LiveKit server"; exit 1; }
  log "installing livekit-server $LIVEKIT_SERVER_VERSION"
  mkdir -p "$TOOLS_DIR/bin"
  GOBIN="$TOOLS_DIR/gobin" go install "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_SERVER_VERSION"
  mv "$TOOLS_DIR/gobin/server" "$bin"
}

# The tests' pion WHIP client (tests/helpers/whip_pion, its modules from
# the Go module proxy); rebuilt when its sources change.
install_whip_pion() {
  local src bin="$TOOLS_DIR/bin/whip-pion" sum
  src="$(cd "$(dirname "$0")/.." && pwd)/tests/helpers/whip_pion"
  sum="$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -d' ' -f1)"
  if [ -x "$bin" ] && [ "$(cat "$bin.sha256" 2>/dev/null)" = "$sum" ]; then
    return
  fi
  command -v go >/dev/null || { log "go is required to build the pion WHIP client"; exit 1; }
  log "building the pion WHIP client"
  mkdir -p "$TOOLS_DIR/bin"
  (cd "$src" && go build -o "$bin" .)
  echo "$sum" >"$bin.sha256"
}

install_python_clients() {
  local venv="$TOOLS_DIR/venv"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" - "${PY_PACKAGES[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    have = version(name)
    if want and have != want:
        raise SystemExit(1)
PY
    return
  fi
  log "creating the Python virtualenv with ${PY_PACKAGES[*]}"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
}

install_debian_packages
install_livekit_server
install_whip_pion
install_python_clients
