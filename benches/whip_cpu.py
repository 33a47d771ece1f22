#!/usr/bin/env python3
"""CPU of one WHIP stream through livekit-ingress: bypass against transcode.

A third publish per run is a 720p30 simulcast in bypass: the pion client
(tests/helpers/whip_pion, built by scripts/setup.sh) sends three H.264
layers, 320x180, 640x360 and 1280x720 (files ffmpeg encodes first), and Opus.

A LiveKit server (dev mode) and the release build of livekit-ingress run on
free loopback ports. For each run, a WHIP ingress is created through the real
API client in bypass (the default for WHIP) and another with
`enable_transcoding`, and the aiortc client (tests/helpers/whip_aiortc.py)
publishes the same 1280x720 H.264 + Opus to each in turn, for the same time.
The service's CPU (utime + stime from /proc) is read over the steady part of
each publish (after the first 4 s, until 2 s before the end) and divided by
the stream-seconds: the transcode of the same stream, measured alternately in
the same run, is the baseline.

    ~/.cache/livekit-ingress/venv/bin/python benches/whip_cpu.py [runs] [seconds]
"""

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

from livekit import api

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.environ.get("LIVEKIT_INGRESS_TOOLS", os.path.expanduser("~/.cache/livekit-ingress"))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from ingress_e2e import start_livekit, free_port, proc_cpu_rss, wait_http  # noqa: E402

WARMUP, TAIL = 4.0, 2.0


SIMULCAST = (("q", "320x180", "300k"), ("h", "640x360", "800k"), ("f", "1280x720", "2500k"))


def make_simulcast_media(work):
    """The pion client's files: per layer 4 s of H.264 constrained baseline,
    keyframes every second on the same frames; Opus in Ogg, 20 ms pages."""
    quiet = ["ffmpeg", "-v", "error", "-y"]
    for rid, size, rate in SIMULCAST:
        subprocess.run(quiet + ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30", "-t", "4",
                                "-pix_fmt", "yuv420p", "-g", "30", "-keyint_min", "30", "-c:v", "libx264",
                                "-profile:v", "baseline", "-preset", "veryfast", "-sc_threshold", "0",
                                "-bf", "0", "-b:v", rate, "-x264-params", "repeat-headers=1", "-f", "h264",
                                f"{work}/{rid}.h264"], check=True)
    subprocess.run(quiet + ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "4", "-ac", "2",
                            "-c:a", "libopus", "-b:a", "64k", "-frame_duration", "20", "-page_duration", "20000",
                            f"{work}/audio.ogg"], check=True)


def publish_and_measure(url, seconds, service_pid, simulcast_media=None):
    if simulcast_media:
        command = [f"{TOOLS}/bin/whip-pion", "-codec", "h264", "-layers", ",".join(r for r, _, _ in SIMULCAST),
                   "-seconds", str(seconds), "-media", simulcast_media, url]
    else:
        command = [sys.executable, os.path.join(ROOT, "tests/helpers/whip_aiortc.py"), url,
                   "--seconds", str(seconds), "--codec", "h264", "--size", "1280x720"]
    client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(WARMUP)
    cpu0, _ = proc_cpu_rss(service_pid)
    t0 = time.monotonic()
    time.sleep(seconds - WARMUP - TAIL)
    cpu1, rss = proc_cpu_rss(service_pid)
    elapsed = time.monotonic() - t0
    out, _ = client.communicate(timeout=60)
    sent = [line for line in out.splitlines() if '"sent"' in line]
    return (cpu1 - cpu0) / elapsed, rss, sent[-1] if sent else "(client sent nothing?)"


async def create(port, transcode, name):
    lk = api.LiveKitAPI(f"http://127.0.0.1:{port}", "devkey", "secret")
    info = await lk.ingress.create_ingress(api.CreateIngressRequest(
        input_type=api.IngressInput.WHIP_INPUT, name=name, room_name=name,
        participant_identity=name, enable_transcoding=transcode))
    await lk.aclose()
    return info


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="whip-bench-")
    lk_port, api_port = free_port(), free_port()
    procs = []
    try:
        procs.append(start_livekit(work, lk_port))
        env = dict(os.environ, LIVEKIT_WS_URL=f"ws://127.0.0.1:{lk_port}",
                   LIVEKIT_INGRESS_RTMP_PORT=str(free_port()), LIVEKIT_INGRESS_HTTP_PORT=str(api_port),
                   LIVEKIT_INGRESS_SQLITE=f"{work}/ingress.db", RUST_LOG="warn")
        service = subprocess.Popen([f"{ROOT}/target/release/livekit-ingress"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(service)
        wait_http(api_port, "/health")
        bypass = asyncio.run(create(api_port, False, "whip-bypass"))
        transcode = asyncio.run(create(api_port, True, "whip-transcode"))
        simulcast = asyncio.run(create(api_port, False, "whip-simulcast"))
        make_simulcast_media(work)
        results = {"bypass": [], "transcode": [], "simulcast bypass": []}
        print(f"input: 1280x720 H.264 + Opus from aiortc over WHIP, and three H.264 layers up to 1280x720 "
              f"+ Opus from pion; {runs} runs of {seconds} s each")
        for run in range(1, runs + 1):
            line = []
            for mode, info in (("bypass", bypass), ("transcode", transcode), ("simulcast bypass", simulcast)):
                media = work if mode == "simulcast bypass" else None
                cpu, rss, sent = publish_and_measure(f"{info.url}/{info.stream_key}", seconds, service.pid, media)
                results[mode].append(cpu)
                line.append(f"{mode} {cpu:.3f} core (RSS {rss / 2**20:.0f} MiB; client {sent})")
                time.sleep(3)  # the session ends (DELETE) before the next
            print(f"run {run}: " + ", ".join(line), flush=True)
        b, t = statistics.median(results["bypass"]), statistics.median(results["transcode"])
        sim = statistics.median(results["simulcast bypass"])
        print(f"median CPU per stream-second: bypass {b:.3f} core, transcode {t:.3f} core, "
              f"bypass/transcode {b / t:.3f}; simulcast bypass (3 layers) {sim:.3f} core, "
              f"simulcast bypass/transcode {sim / t:.3f}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
