#!/usr/bin/env python3
"""The service's memory across sessions: does RSS level off?

A LiveKit server (dev mode) and the release build of livekit-ingress run on
free loopback ports. One WHIP ingress with `enable_transcoding` takes a series
of short publishes from the aiortc client (1280x720 H.264 + Opus, decoded and
re-encoded into the preset's three layers). After each session has ended, the
service's RSS, threads and open descriptors are read from /proc.

The same series runs twice in the same run: once as the service starts by
default (it fixes glibc's mmap threshold, see src/heap.rs) and once with
`GLIBC_TUNABLES` set empty, which makes the service leave malloc as glibc
configures it: the baseline. The figure to read is the growth per session
over the second half of each series (median of the steps), where a service
that levels off is at about 0.

    ~/.cache/livekit-ingress/venv/bin/python benches/session_memory.py [sessions] [seconds]
"""

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.environ.get("LIVEKIT_INGRESS_TOOLS", os.path.expanduser("~/.cache/livekit-ingress"))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from ingress_e2e import start_livekit, free_port, proc_cpu_rss, wait_http  # noqa: E402
from whip_cpu import create  # noqa: E402


def counts(pid):
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def series(lk_port, work, sessions, seconds, extra_env):
    api_port = free_port()
    env = dict(os.environ, LIVEKIT_WS_URL=f"ws://127.0.0.1:{lk_port}",
               LIVEKIT_INGRESS_RTMP_PORT=str(free_port()), LIVEKIT_INGRESS_HTTP_PORT=str(api_port),
               LIVEKIT_INGRESS_SQLITE=f"{work}/ingress-{api_port}.db", RUST_LOG="warn", **extra_env)
    service = subprocess.Popen([f"{ROOT}/target/release/livekit-ingress"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(api_port, "/health")
        info = asyncio.run(create(api_port, True, f"memory-{api_port}"))
        rss = [proc_cpu_rss(service.pid)[1] / 2**20]
        first = counts(service.pid)
        for _ in range(sessions):
            subprocess.run([sys.executable, os.path.join(ROOT, "tests/helpers/whip_aiortc.py"),
                            f"{info.url}/{info.stream_key}", "--seconds", str(seconds),
                            "--codec", "h264", "--size", "1280x720"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            time.sleep(3)  # the session's pipeline is torn down
            rss.append(proc_cpu_rss(service.pid)[1] / 2**20)
        return rss, first, counts(service.pid)
    finally:
        service.terminate()
        service.wait()


def main():
    sessions = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="memory-bench-")
    lk_port = free_port()
    server = start_livekit(work, lk_port)
    try:
        print(f"{sessions} transcoded WHIP sessions of {seconds} s (1280x720 H.264 + Opus from aiortc)")
        for label, extra in (("service default", {}), ("glibc default (baseline)", {"GLIBC_TUNABLES": ""})):
            rss, (t0, f0), (t1, f1) = series(lk_port, work, sessions, seconds, extra)
            half = rss[len(rss) // 2:]
            steps = [b - a for a, b in zip(half, half[1:])]
            print(f"{label}: RSS MiB after each session {' '.join(f'{r:.0f}' for r in rss)}; "
                  f"growth per session over the second half {statistics.median(steps):+.1f} MiB; "
                  f"threads {t0} -> {t1}, open fds {f0} -> {f1}", flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
