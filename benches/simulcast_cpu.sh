#!/usr/bin/env bash
# CPU seconds per second of 1080p30 input: simulcastenc with the default preset
# against the bare ladder it replaces (decode, three scales, three x264enc with
# the same settings), measured alternately in the same run. The ladder is run
# twice: as usually written (each scale's caps give only the size, so the two
# layers under 720 lines are also converted to the BT.601 their size implies)
# and with the source's colorimetry pinned on every scale (what simulcastenc
# does). Prints every run, the medians and the ratios.
#
#   ./benches/simulcast_cpu.sh [runs]      (default 5; build with cargo build --release first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
export GST_PLUGIN_PATH="$PWD/target/release"
[ -f target/release/libgstlivekitingress.so ] || cargo build --release --locked
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
seconds=10
ffmpeg -hide_banner -loglevel error -f lavfi -i "testsrc2=size=1920x1080:rate=30" -t "$seconds" \
  -c:v libx264 -preset veryfast -b:v 6M -g 60 -bf 0 "$work/in.mp4"

src="filesrc location=$work/in.mp4 ! qtdemux ! h264parse ! avdec_h264 ! videoconvert"
enc() { echo "x264enc bitrate=$1 tune=zerolatency speed-preset=veryfast bframes=0 key-int-max=60 option-string=scenecut=0 ! video/x-h264,profile=constrained-baseline ! fakesink sync=false"; }
ladder="$src ! tee name=t \
  t. ! queue ! videoscale ! video/x-raw,width=1280,height=720 ! $(enc 1900) \
  t. ! queue ! videoscale ! video/x-raw,width=640,height=360 ! $(enc 671) \
  t. ! queue ! videoscale ! video/x-raw,width=320,height=180 ! $(enc 237)"
pinned="$src ! tee name=t \
  t. ! queue ! videoscale ! video/x-raw,width=1280,height=720,colorimetry=bt709 ! $(enc 1900) \
  t. ! queue ! videoscale ! video/x-raw,width=640,height=360,colorimetry=bt709 ! $(enc 671) \
  t. ! queue ! videoscale ! video/x-raw,width=320,height=180,colorimetry=bt709 ! $(enc 237)"
element="$src ! simulcastenc name=e \
  e.src_0 ! fakesink sync=false e.src_1 ! fakesink sync=false e.src_2 ! fakesink sync=false"

cpu() { # CPU seconds (user+system) of one gst-launch run
  /usr/bin/env time -f "%U %S" -o "$work/t" gst-launch-1.0 -q $1 >/dev/null
  awk '{print $1 + $2}' "$work/t"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

: >"$work/ladder"; : >"$work/pinned"; : >"$work/element"
per_s() { awk -v c="$1" -v s=$seconds 'BEGIN{printf "%.3f", c/s}'; }
for i in $(seq 1 "$runs"); do
  l=$(cpu "$ladder"); p=$(cpu "$pinned"); e=$(cpu "$element")
  echo "run $i: bare ladder $(per_s "$l") cpu-s/s, ladder with colorimetry pinned $(per_s "$p") cpu-s/s, simulcastenc $(per_s "$e") cpu-s/s"
  echo "$l" >>"$work/ladder"; echo "$p" >>"$work/pinned"; echo "$e" >>"$work/element"
done
ml=$(median <"$work/ladder"); mp=$(median <"$work/pinned"); me=$(median <"$work/element")
awk -v l="$ml" -v p="$mp" -v e="$me" -v s=$seconds 'BEGIN {
  printf "median CPU per second of 1080p30 input: bare ladder %.3f s, pinned ladder %.3f s, simulcastenc %.3f s; simulcastenc/bare %.3f, simulcastenc/pinned %.3f\n", l/s, p/s, e/s, e/l, e/p }'
