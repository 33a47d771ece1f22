#!/usr/bin/env bash
# meson's bridge to cargo: build the plugin and the service, then copy the
# artifacts into meson's output directory.
set -euo pipefail
cargo="$1" source_dir="$2" target_dir="$3" profile="$4" out_dir="$5"
args=(build --manifest-path "$source_dir/Cargo.toml" --target-dir "$target_dir" --locked)
[ "$profile" = release ] && args+=(--release)
"$cargo" "${args[@]}"
cp -f "$target_dir/$profile/libgstlivekitingress.so" "$target_dir/$profile/livekit-ingress" "$out_dir/"
