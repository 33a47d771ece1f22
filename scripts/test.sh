#!/usr/bin/env bash
# The project's test command: installs what is missing, then checks formatting
# and lints, runs every test (unit, GStreamer harness and end-to-end tests on a
# real LiveKit server, ffmpeg and the Python subscriber) and checks that the
# meson build installs a plugin GStreamer can load. Fails when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

echo "== meson build and install"
builddir="$(mktemp -d)"
trap 'rm -rf "$builddir"' EXIT
meson setup "$builddir/build" --prefix="$builddir/prefix" -Dbuildtype=debug \
  -Dcargo-target-dir="$PWD/target" >/dev/null
meson compile -C "$builddir/build" >/dev/null
meson test -C "$builddir/build" --print-errorlogs
meson install -C "$builddir/build" >/dev/null
plugin_dir="$(dirname "$(find "$builddir/prefix" -name libgstlivekitingress.so | head -n 1)")"
GST_PLUGIN_PATH="$plugin_dir" gst-inspect-1.0 livekitingress >/dev/null
echo "meson: plugin installed and loadable from $(basename "$plugin_dir")"

echo "== cargo test"
# Each end-to-end test starts its own LiveKit server and encoders; two at a time
# is what two cores carry without starving the media threads.
log="$(mktemp)"
RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}" cargo test --locked --all-targets --no-fail-fast 2>&1 | tee "$log"
# One closing line over every test binary (the last binary alone may have none).
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
