#!/usr/bin/env python3
"""CPU and latency of one 1080p30 RTMP stream: full transcode, hybrid and
single pass-through (`video_passthrough`) in the same run.

A LiveKit server (dev mode) and three release builds of livekit-ingress run
on free loopback ports, one per `video_passthrough` (off, hybrid, single; it
is a service setting). For each run and each mode in turn, an ingress is
created through the real API client, two viewers join (one on the high
layer, whose frames are measured, and one on the low layer, so the lower
layers are encoded as they are when watched), and ffmpeg publishes 1080p30
frames that carry their creation time as a barcode (ingress_e2e.py's
publisher: x264 ultrafast/zerolatency, no B-frames, a keyframe every 2 s,
6 Mbit/s, AAC; moving frames, a scrolling gradient under changing grain, so
that x264 spends its bitrate and the pass-through carries a real stream's
packets; ffmpeg's own count of what it sent is printed). The service's CPU
(utime + stime from /proc) is read over the steady part of each publish
(after the first 6 s, until 2 s before the end) per stream-second; the high viewer reads the barcode of every decoded
frame (creation -> decoded latency, as ingress_e2e.py).

    ~/.cache/livekit-ingress/venv/bin/python benches/passthrough_cpu.py [runs] [seconds]
"""

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from livekit import api, rtc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.environ.get("LIVEKIT_INGRESS_TOOLS", os.path.expanduser("~/.cache/livekit-ingress"))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from ingress_e2e import start_livekit, free_port, proc_cpu_rss, publisher, read_stamp, wait_http  # noqa: E402

MODES = ("off", "hybrid", "single")
WARMUP, TAIL = 6.0, 2.0


def start_service(mode, lk_port, work):
    rtmp_port, api_port = free_port(), free_port()
    env = dict(os.environ, LIVEKIT_WS_URL=f"ws://127.0.0.1:{lk_port}", LIVEKIT_INGRESS_RTMP_PORT=str(rtmp_port),
               LIVEKIT_INGRESS_HTTP_PORT=str(api_port), LIVEKIT_INGRESS_SQLITE=f"{work}/{mode}.db",
               LIVEKIT_INGRESS_VIDEO_PASSTHROUGH=mode, RUST_LOG="warn")
    service = subprocess.Popen([f"{ROOT}/target/release/livekit-ingress"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(api_port, "/health")
    return service, api_port


async def viewer(lk_port, room_name, identity, quality, latencies, first_frame):
    token = (api.AccessToken("devkey", "secret").with_identity(identity)
             .with_grants(api.VideoGrants(room_join=True, room=room_name)).to_jwt())
    room = rtc.Room()
    tasks = []

    async def watch(track, publication):
        if publication.simulcasted:
            publication.set_video_quality(quality)
        async for ev in rtc.VideoStream(track):
            if latencies is None:
                continue
            now = time.time()
            if not first_frame:
                first_frame.append(now)
            i420 = ev.frame.convert(rtc.VideoBufferType.I420)
            y = np.frombuffer(i420.data, dtype=np.uint8)[: i420.width * i420.height]
            sent = read_stamp(y.reshape(i420.height, i420.width), i420.width, i420.height)
            lat = ((int(now * 1000) & 0xFFFFFFFF) - sent) & 0xFFFFFFFF
            if lat < 10_000:
                latencies.append((now, lat, i420.width))

    @room.on("track_subscribed")
    def on_track(track, publication, participant):
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            tasks.append(asyncio.ensure_future(watch(track, publication)))

    await room.connect(f"ws://127.0.0.1:{lk_port}", token)
    return room, tasks


async def one_stream(mode, run, lk_port, api_port, service, seconds):
    name = f"{mode}-{run}"
    lkapi = api.LiveKitAPI(f"http://127.0.0.1:{api_port}", "devkey", "secret")
    info = await lkapi.ingress.create_ingress(api.CreateIngressRequest(
        input_type=api.IngressInput.RTMP_INPUT, name=name, room_name=name, participant_identity="streamer"))
    await lkapi.aclose()
    latencies, first_frame = [], []
    high = await viewer(lk_port, name, "viewer-high", rtc.VideoQuality.VIDEO_QUALITY_HIGH, latencies, first_frame)
    low = await viewer(lk_port, name, "viewer-low", rtc.VideoQuality.VIDEO_QUALITY_LOW, None, [])
    started, stop, sent = [], threading.Event(), []
    pub = threading.Thread(target=publisher, args=(f"{info.url}/{info.stream_key}", seconds, started, stop),
                           kwargs={"moving": True, "sent_bitrate": sent})
    pub.start()
    await asyncio.sleep(WARMUP)
    cpu0, _ = proc_cpu_rss(service.pid)
    t0 = time.monotonic()
    await asyncio.sleep(seconds - WARMUP - TAIL)
    cpu1, rss = proc_cpu_rss(service.pid)
    cpu = (cpu1 - cpu0) / (time.monotonic() - t0)
    while pub.is_alive():
        await asyncio.sleep(0.5)
    for room, tasks in (high, low):
        for t in tasks:
            t.cancel()
        await room.disconnect()
    await asyncio.sleep(3)  # the session ends before the next one starts
    lat = np.array([l for _, l, _ in latencies]) if latencies else np.array([0])
    width = latencies[-1][2] if latencies else 0
    first = first_frame[0] - started[0] if first_frame and started else float("nan")
    return cpu, rss, lat, width, first, sent[0] if sent else float("nan")


async def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="passthrough-bench-")
    lk_port = free_port()
    procs = []
    try:
        procs.append(start_livekit(work, lk_port))
        services = {}
        for mode in MODES:
            services[mode] = start_service(mode, lk_port, work)
            procs.append(services[mode][0])
        cpu = {m: [] for m in MODES}
        print(f"input: 1920x1080@30 H.264 (x264 ultrafast, no B-frames, 2 s GOP, 6 Mbit/s, moving frames) "
              f"+ AAC over RTMP; "
              f"default preset; viewers on high (measured) and low; {runs} runs of {seconds} s")
        for run in range(1, runs + 1):
            line = []
            for mode in MODES:
                service, api_port = services[mode]
                c, rss, lat, width, first, sent = await one_stream(mode, run, lk_port, api_port, service, seconds)
                cpu[mode].append(c)
                line.append(f"{mode} {c:.3f} core (sent {sent / 1e6:.1f} Mbit/s; RSS {rss / 2**20:.0f} MiB; "
                            f"high viewer {width} px wide, "
                            f"first frame {first:.2f} s, p50 {np.percentile(lat, 50):.0f} ms, "
                            f"p95 {np.percentile(lat, 95):.0f} ms)")
            print(f"run {run}: " + "; ".join(line), flush=True)
        med = {m: statistics.median(cpu[m]) for m in MODES}
        print(f"median CPU per stream-second: full transcode {med['off']:.3f}, hybrid {med['hybrid']:.3f} "
              f"({med['hybrid'] / med['off']:.2f}x), single {med['single']:.3f} ({med['single'] / med['off']:.3f}x)")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    asyncio.run(main())
