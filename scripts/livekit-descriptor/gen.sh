#!/usr/bin/env bash
# Regenerates src/supervisor/livekit_ingress.desc: the protobuf descriptors of
# livekit.IngressInfo and everything it uses, as the pinned livekit-server
# (v1.13.5) compiles them. The API answers JSON through them, so its JSON has
# LiveKit's fields and names. Needs Go and the module cache setup.sh filled
# when it built livekit-server (no network: GOPROXY=off).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
server="$(go env GOMODCACHE)/github.com/livekit/livekit-server@v1.13.5"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/main.go" "$work/"
sed 's#^module .*#module livekitdescriptor#' "$server/go.mod" >"$work/go.mod"
cp "$server/go.sum" "$work/go.sum"
chmod u+w "$work/go.mod" "$work/go.sum"
cd "$work"
GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off go run . >"$here/../../src/supervisor/livekit_ingress.desc"
