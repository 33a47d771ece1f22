#!/usr/bin/env python3
"""CPU of one WHIP stream through livekit-ingress: bypass against transcode.

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
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from livekit import api

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.environ.get("LIVEKIT_INGRESS_TOOLS", os.path.expanduser("~/.cache/livekit-ingress"))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from ingress_e2e import free_port, proc_cpu_rss, wait_http  # noqa: E402

WARMUP, TAIL = 4.0, 2.0


def publish_and_measure(url, seconds, service_pid):
    client = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests/helpers/whip_aiortc.py"), url,
         "--seconds", str(seconds), "--codec", "h264", "--size", "1280x720"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
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
    with open(f"{work}/livekit.yaml", "w") as f:
        f.write(f"port: {lk_port}\nbind_addresses: [\"127.0.0.1\"]\nrtc:\n  tcp_port: {free_port()}\n"
                f"  udp_port: {free_port(socket.SOCK_DGRAM)}\n  use_external_ip: false\nlogging:\n  level: warn\n")
    procs = []
    try:
        procs.append(subprocess.Popen([f"{TOOLS}/bin/livekit-server", "--dev", "--config", f"{work}/livekit.yaml",
                                       "--node-ip", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(lk_port)
        env = dict(os.environ, LIVEKIT_WS_URL=f"ws://127.0.0.1:{lk_port}",
                   LIVEKIT_INGRESS_RTMP_PORT=str(free_port()), LIVEKIT_INGRESS_HTTP_PORT=str(api_port),
                   LIVEKIT_INGRESS_SQLITE=f"{work}/ingress.db", RUST_LOG="warn")
        service = subprocess.Popen([f"{ROOT}/target/release/livekit-ingress"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(service)
        wait_http(api_port, "/health")
        bypass = asyncio.run(create(api_port, False, "whip-bypass"))
        transcode = asyncio.run(create(api_port, True, "whip-transcode"))
        results = {"bypass": [], "transcode": []}
        print(f"input: 1280x720 H.264 + Opus from aiortc over WHIP; {runs} runs of {seconds} s each")
        for run in range(1, runs + 1):
            line = []
            for mode, info in (("bypass", bypass), ("transcode", transcode)):
                cpu, rss, sent = publish_and_measure(f"{info.url}/{info.stream_key}", seconds, service.pid)
                results[mode].append(cpu)
                line.append(f"{mode} {cpu:.3f} core (RSS {rss / 2**20:.0f} MiB; client {sent})")
                time.sleep(3)  # the session ends (DELETE) before the next
            print(f"run {run}: " + ", ".join(line), flush=True)
        b, t = statistics.median(results["bypass"]), statistics.median(results["transcode"])
        print(f"median CPU per stream-second: bypass {b:.3f} core, transcode {t:.3f} core, "
              f"bypass/transcode {b / t:.3f}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
