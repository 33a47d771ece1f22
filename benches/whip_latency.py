#!/usr/bin/env python3
"""Latency a WHIP publish gains by going through livekit-ingress in bypass.

A LiveKit server (dev mode) and the release build of livekit-ingress run on
free loopback ports; a subscriber (the Python `livekit` SDK) sits in the room.
Every published frame carries the wall-clock time it was made, drawn into the
picture as a 32-bit millisecond barcode (tests/helpers/stamp.py), and the
subscriber reads it back from each decoded frame: creation to decoded.

Each run publishes the same 1280x720 30 fps stamped pattern three ways, one
after the other:
- `direct` (the baseline): the Python `livekit` SDK publishes straight into
  the room as a participant, H.264, no simulcast;
- `whip bypass`: aiortc (tests/helpers/whip_aiortc.py's client) publishes
  H.264 over WHIP to the ingress, which forwards it untouched;
- `whip transcode`: the same into an ingress with `enable_transcoding`.
What the ingress adds is the bypass figure minus the direct one (the two
clients' encoders differ: aiortc's libx264 and the SDK's, both tuned for
real time).

    ~/.cache/livekit-ingress/venv/bin/python benches/whip_latency.py [runs] [seconds]
"""

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from livekit import api, rtc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.environ.get("LIVEKIT_INGRESS_TOOLS", os.path.expanduser("~/.cache/livekit-ingress"))
sys.path.insert(0, os.path.join(ROOT, "benches"))
sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))
from ingress_e2e import start_livekit, free_port, wait_http  # noqa: E402
from stamp import read_stamp, stamp  # noqa: E402

W, H, FPS = 1280, 720, 30
WARMUP = 3.0  # the first seconds (join, first keyframe, bitrate ramp) are not measured


def stamped_i420():
    """A fresh I420 frame (as one array) with the time of now stamped."""
    frame = np.full((H * 3 // 2, W), 128, dtype=np.uint8)
    frame[:H] = np.tile(np.linspace(40, 200, W, dtype=np.uint8), (H, 1))
    stamp(frame[:H], int(time.time() * 1000) & 0xFFFFFFFF)
    return frame


def publish_whip(url, seconds):
    """aiortc over WHIP, the stamped pattern as its video (runs in a child)."""
    import whip_aiortc
    from aiortc.rtcrtpsender import RTCRtpSender
    from av import VideoFrame

    class Stamped(whip_aiortc.Pattern):
        created = 0.0

        async def recv(self):
            pts, time_base = await self.next_timestamp()
            self.created = time.time()
            frame = VideoFrame.from_ndarray(stamped_i420(), format="yuv420p")
            frame.pts, frame.time_base = pts, time_base
            self.sent += 1
            return frame

    # The client's own share: frame made -> encoded and ready to packetize.
    encode_ms = []
    next_encoded = RTCRtpSender._next_encoded_frame

    async def timed(sender, codec):
        encoded = await next_encoded(sender, codec)
        if encoded is not None and isinstance(sender.track, Stamped):
            encode_ms.append((time.time() - sender.track.created) * 1000)
        return encoded

    RTCRtpSender._next_encoded_frame = timed
    whip_aiortc.Pattern = Stamped
    sys.argv = ["whip_aiortc.py", url, "--seconds", str(seconds), "--codec", "h264", "--size", f"{W}x{H}"]
    code = asyncio.run(whip_aiortc.main())
    if encode_ms:
        print(f"encode_ms {np.percentile(encode_ms, 50):.1f} {np.percentile(encode_ms, 95):.1f}", flush=True)
    return code


async def publish_direct(ws_url, token, seconds):
    """The SDK as a participant, the stamped pattern as an H.264 track (runs in a child)."""
    room = rtc.Room()
    await room.connect(ws_url, token)
    source = rtc.VideoSource(W, H)
    track = rtc.LocalVideoTrack.create_video_track("direct", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False,
                                      video_codec=rtc.VideoCodec.H264)
    await room.local_participant.publish_track(track, options)
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        data = stamped_i420()
        source.capture_frame(rtc.VideoFrame(W, H, rtc.VideoBufferType.I420, data.tobytes()))
        n += 1
        await asyncio.sleep(max(0.0, start + n / FPS - time.monotonic()))
    await room.disconnect()


def token(identity, room):
    return (api.AccessToken("devkey", "secret").with_identity(identity)
            .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())


async def measure(lk_port, room_name, publish_cmd, seconds):
    """Joins `room_name`, starts the publisher, returns the latencies (ms) of
    the decoded frames after the warm-up."""
    room = rtc.Room()
    latencies, tasks, t0 = [], [], []

    async def watch(track):
        async for ev in rtc.VideoStream(track):
            now = time.time()
            if not t0 or now - t0[0] < WARMUP:
                continue
            i420 = ev.frame.convert(rtc.VideoBufferType.I420)
            y = np.frombuffer(i420.data, dtype=np.uint8)[: i420.width * i420.height]
            sent = read_stamp(y.reshape(i420.height, i420.width), i420.width, i420.height)
            lat = ((int(now * 1000) & 0xFFFFFFFF) - sent) & 0xFFFFFFFF
            if lat < 10_000:
                latencies.append(lat)

    @room.on("track_subscribed")
    def on_track(track, publication, participant):
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            if publication.simulcasted:
                publication.set_video_quality(rtc.VideoQuality.VIDEO_QUALITY_HIGH)
            tasks.append(asyncio.ensure_future(watch(track)))

    await room.connect(f"ws://127.0.0.1:{lk_port}", token(f"viewer-{room_name}", room_name))
    publisher = await asyncio.create_subprocess_exec(*publish_cmd, stdout=subprocess.PIPE,
                                                     stderr=subprocess.DEVNULL)
    t0.append(time.time())
    out, _ = await publisher.communicate()
    for t in tasks:
        t.cancel()
    await room.disconnect()
    if publisher.returncode != 0:
        raise SystemExit(f"{room_name}: the publisher failed ({publisher.returncode})")
    encode = [line.split()[1:] for line in out.decode().splitlines() if line.startswith("encode_ms ")]
    return np.array(latencies), (float(encode[0][0]) if encode else None)


async def create(port, transcode, name):
    lk = api.LiveKitAPI(f"http://127.0.0.1:{port}", "devkey", "secret")
    info = await lk.ingress.create_ingress(api.CreateIngressRequest(
        input_type=api.IngressInput.WHIP_INPUT, name=name, room_name=name,
        participant_identity=f"{name}-publisher", enable_transcoding=transcode))
    await lk.aclose()
    return info


async def bench(runs, seconds):
    work = tempfile.mkdtemp(prefix="whip-latency-")
    lk_port, api_port = free_port(), free_port()
    procs = []
    try:
        procs.append(start_livekit(work, lk_port))
        env = dict(os.environ, LIVEKIT_WS_URL=f"ws://127.0.0.1:{lk_port}",
                   LIVEKIT_INGRESS_RTMP_PORT=str(free_port()), LIVEKIT_INGRESS_HTTP_PORT=str(api_port),
                   LIVEKIT_INGRESS_SQLITE=f"{work}/ingress.db", RUST_LOG="warn")
        procs.append(subprocess.Popen([f"{ROOT}/target/release/livekit-ingress"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(api_port, "/health")
        bypass = await create(api_port, False, "latency-bypass")
        transcode = await create(api_port, True, "latency-transcode")
        me = [sys.executable, os.path.abspath(__file__)]
        modes = {
            "direct": lambda: (me + ["--direct", f"ws://127.0.0.1:{lk_port}",
                                     token("direct-publisher", "latency-direct"), str(seconds)],
                               "latency-direct"),
            "whip bypass": lambda: (me + ["--whip", f"{bypass.url}/{bypass.stream_key}", str(seconds)],
                                    "latency-bypass"),
            "whip transcode": lambda: (me + ["--whip", f"{transcode.url}/{transcode.stream_key}", str(seconds)],
                                       "latency-transcode"),
        }
        results = {mode: [] for mode in modes}
        print(f"{W}x{H} {FPS} fps stamped pattern, H.264; {runs} runs of {seconds} s per mode "
              f"(first {WARMUP:.0f} s not measured); subscriber on the high layer")
        for run in range(1, runs + 1):
            line = []
            for mode, command in modes.items():
                cmd, room_name = command()
                lat, encode = await measure(lk_port, room_name, cmd, seconds)
                if len(lat) == 0:
                    raise SystemExit(f"{mode}: no stamped frame decoded")
                p50, p95 = np.percentile(lat, 50), np.percentile(lat, 95)
                results[mode].append((p50, p95))
                client = f", aiortc's encode p50 {encode:.0f} ms" if encode is not None else ""
                line.append(f"{mode} p50 {p50:.0f} ms p95 {p95:.0f} ms ({len(lat)} frames{client})")
            print(f"run {run}: " + "; ".join(line), flush=True)
        med = {m: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
               for m, rs in results.items()}
        for mode, (p50, p95) in med.items():
            print(f"median over runs, {mode}: p50 {p50:.0f} ms, p95 {p95:.0f} ms")
        for mode in ("whip bypass", "whip transcode"):
            print(f"{mode} minus direct: p50 {med[mode][0] - med['direct'][0]:+.0f} ms, "
                  f"p95 {med[mode][1] - med['direct'][1]:+.0f} ms")
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait()


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--whip":
        sys.exit(publish_whip(sys.argv[2], float(sys.argv[3])))
    if len(sys.argv) > 1 and sys.argv[1] == "--direct":
        asyncio.run(publish_direct(sys.argv[2], sys.argv[3], float(sys.argv[4])))
        return
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    asyncio.run(bench(runs, seconds))


if __name__ == "__main__":
    main()
