#!/usr/bin/env python3
"""Soak: one RTMP stream through livekit-ingress for a long time; do the
service's resources and the stream's latency stay flat?

A LiveKit server (dev mode) and the release build of livekit-ingress run on
free loopback ports. One ingress takes a 1280x720 30 fps publish whose frames
carry their creation time (tests/helpers/publish_stamped.py: x264 ultrafast,
a keyframe a second, AAC), transcoded through the default preset; a
subscriber on the high layer reads every decoded frame's time back
(tests/helpers/watch_latency.py). Every 30 s the service's RSS, open
descriptors and threads are read from /proc. Printed: those figures and the
latency (p50, p95) over the first and the last minute, and their change.
The start of the run is its own baseline.

    ~/.cache/livekit-ingress/venv/bin/python benches/soak.py [minutes]   # 60 for the hour
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from livekit import api

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.environ.get("LIVEKIT_INGRESS_TOOLS", os.path.expanduser("~/.cache/livekit-ingress"))
HELPERS = os.path.join(ROOT, "tests", "helpers")
sys.path.insert(0, os.path.join(ROOT, "benches"))
from ingress_e2e import start_livekit, start_service, free_port, proc_cpu_rss  # noqa: E402

SAMPLE_S = 30


def resources(pid):
    _, rss = proc_cpu_rss(pid)
    return rss / 2**20, len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


async def create(port):
    lk = api.LiveKitAPI(f"http://127.0.0.1:{port}", "devkey", "secret")
    info = await lk.ingress.create_ingress(api.CreateIngressRequest(
        input_type=api.IngressInput.RTMP_INPUT, name="soak", room_name="soak",
        participant_identity="soak-publisher"))
    await lk.aclose()
    return info


def minute_stats(frames, since_ms, until_ms):
    lat = [f[1] for f in frames if since_ms <= f[0] < until_ms]
    if not lat:
        return "no frames"
    return f"p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms ({len(lat)} frames)"


def main():
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 10
    seconds = minutes * 60
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="soak-")
    lk_port, api_port, rtmp_port = free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(start_livekit(work, lk_port))
        service = start_service(work, lk_port, rtmp_port, api_port)
        procs.append(service)
        info = asyncio.run(create(api_port))
        watcher = subprocess.Popen(
            [sys.executable, os.path.join(HELPERS, "watch_latency.py"), "--url", f"ws://127.0.0.1:{lk_port}",
             "--api-key", "devkey", "--api-secret", "secret", "--room", "soak", "--quality", "high",
             "--seconds", str(seconds + 20)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(watcher)
        time.sleep(3)
        publisher = subprocess.Popen(
            [sys.executable, os.path.join(HELPERS, "publish_stamped.py"), "--url",
             f"{info.url}/{info.stream_key}", "--seconds", str(seconds), "--size", "1280x720"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(publisher)
        started = time.time()
        samples = []
        while publisher.poll() is None:
            time.sleep(SAMPLE_S)
            if publisher.poll() is None:
                samples.append((time.time() - started, *resources(service.pid)))
                t, rss, fds, threads = samples[-1]
                print(f"{t / 60:5.1f} min: RSS {rss:.0f} MiB, {fds} fds, {threads} threads", flush=True)
        out, _ = watcher.communicate(timeout=120)
        frames = json.loads(out.strip().splitlines()[-1])["frames"]
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                p.wait()
    if len(samples) < 3 or not frames:
        raise SystemExit("too short a run, or no frame decoded")
    start_ms, end_ms = frames[0][0], frames[-1][0]
    first = minute_stats(frames, start_ms + 10_000, start_ms + 70_000)
    last = minute_stats(frames, end_ms - 60_000, end_ms)
    (t0, rss0, fds0, thr0), (t1, rss1, fds1, thr1) = samples[1], samples[-1]
    print(f"stream: 1280x720 30 fps RTMP, default preset, {minutes:g} min, {len(frames)} frames decoded at the high layer")
    print(f"latency first minute (after 10 s): {first}; last minute: {last}")
    print(f"service at {t0 / 60:.1f} min -> {t1 / 60:.1f} min: RSS {rss0:.0f} -> {rss1:.0f} MiB ({rss1 - rss0:+.0f}), "
          f"open fds {fds0} -> {fds1}, threads {thr0} -> {thr1}")


if __name__ == "__main__":
    main()
