#!/usr/bin/env python3
"""End-to-end benchmark of one ingress stream through livekit-ingress.

A LiveKit server (dev mode) and the release build of livekit-ingress run on
free loopback ports. This script creates an ingress through the real API
client, joins the room as a subscriber (high quality unless told otherwise),
and publishes a 1080p30
stream with ffmpeg whose frames it generates itself: each frame carries the
wall-clock time it was made, as a 32-bit millisecond barcode of large blocks.
The subscriber reads the barcode of every decoded frame back.

Prints: time from the publisher's first frame to the first decoded frame in the
room; latency percentiles from frame creation to decoded frame at the
subscriber (an upper bound of ingress-input-to-subscriber: it includes ffmpeg's
zero-latency encode and the RTMP send), next to a baseline measured first in the
same run (the same frames through ffmpeg's encoder and straight into ffmpeg's
decoder: the floor any path with that encode has); the latency trend over the
run; the service's CPU seconds per stream-second and its peak RSS.

    ~/.cache/livekit-ingress/venv/bin/python benches/ingress_e2e.py [seconds] [high|medium|low] [with-high]

`with-high` adds a second viewer on the high layer (not measured), so the top
layer is encoded and sent too while a lower one is measured.
"""

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from livekit import api, rtc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))
from stamp import read_stamp, stamp  # noqa: E402  (the barcode the tests read too)
TOOLS = os.environ.get("LIVEKIT_INGRESS_TOOLS", os.path.expanduser("~/.cache/livekit-ingress"))
W, H, FPS = 1920, 1080, 30


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_rss(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu, rss


def start_livekit(work, port):
    """A LiveKit server in dev mode on loopback `port` (its RTC ports free
    ones too), configured in `work`; returns once it answers."""
    with open(f"{work}/livekit.yaml", "w") as f:
        f.write(f"port: {port}\nbind_addresses: [\"127.0.0.1\"]\nrtc:\n  tcp_port: {free_port()}\n"
                f"  udp_port: {free_port(socket.SOCK_DGRAM)}\n  use_external_ip: false\nlogging:\n  level: warn\n")
    server = subprocess.Popen([f"{TOOLS}/bin/livekit-server", "--dev", "--config", f"{work}/livekit.yaml",
                               "--node-ip", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(port)
    return server


def start_service(work, lk_port, rtmp_port, api_port):
    """The release livekit-ingress on the given ports, its store in `work`;
    returned once it answers /health."""
    env = dict(os.environ, LIVEKIT_WS_URL=f"ws://127.0.0.1:{lk_port}", LIVEKIT_INGRESS_RTMP_PORT=str(rtmp_port),
               LIVEKIT_INGRESS_HTTP_PORT=str(api_port), LIVEKIT_INGRESS_SQLITE=f"{work}/ingress.db",
               RUST_LOG="warn")
    service = subprocess.Popen([f"{ROOT}/target/release/livekit-ingress"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(api_port, "/health")
    return service


def wait_http(port, path="/", timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                if s.recv(16).startswith(b"HTTP/1.") :
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing answers on port {port}")


ENCODE = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
          "-pix_fmt", "yuv420p", "-b:v", "6M", "-g", "60"]
RAW_IN = ["-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{W}x{H}", "-r", str(FPS), "-i", "-"]


def publisher(url, seconds, started, stop, moving=False, sent_bitrate=None):
    """Generates stamped frames at 30 fps into ffmpeg, which publishes them.
    `moving` frames make x264 spend its 6 Mbit/s (see feed_stamped_frames);
    the still ones come out at about 0.2 Mbit/s. `sent_bitrate`, a list, gets
    the bits per second ffmpeg sent (FLV, video and audio)."""
    handle, progress = tempfile.mkstemp(prefix="publisher-progress-")
    os.close(handle)
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-progress", progress, *RAW_IN,
         "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", str(seconds), *ENCODE,
         "-c:a", "aac", "-f", "flv", url],
        stdin=subprocess.PIPE,
    )
    feed_stamped_frames(ffmpeg, seconds, started, stop, moving)
    if sent_bitrate is not None:
        sent_bitrate.append(progress_bitrate(progress))
    os.unlink(progress)


def progress_bitrate(path):
    """Bits per second from ffmpeg's last `-progress` report."""
    report = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            report[key] = value
    try:
        return int(report["total_size"]) * 8 / (int(report["out_time_us"]) / 1e6)
    except (KeyError, ValueError, ZeroDivisionError):
        return float("nan")


def feed_stamped_frames(ffmpeg, seconds, started, stop, moving=False):
    base = np.tile(np.linspace(40, 200, W, dtype=np.uint8), (H, 1))
    # Moving: the gradient scrolls 8 px a frame under a fine grain that
    # changes every frame (eight patterns in turn), like camera noise over a
    # pan; the encoder has real work and spends its bitrate.
    rng = np.random.default_rng(1)
    grain = [rng.integers(0, 12, (H, W), dtype=np.uint8) for _ in range(8)] if moving else []
    t0 = time.monotonic()
    started.append(time.time())
    n = 0
    try:
        while not stop.is_set() and n < seconds * FPS:
            frame = np.roll(base, 8 * n, axis=1) + grain[n % 8] if moving else base.copy()
            stamp(frame, int(time.time() * 1000) & 0xFFFFFFFF)
            ffmpeg.stdin.write(frame.tobytes())
            n += 1
            delay = t0 + n / FPS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    except BrokenPipeError:
        pass
    finally:
        try:
            ffmpeg.stdin.close()
        except OSError:
            pass
        ffmpeg.wait()


def baseline(seconds):
    """The floor without the ingress: the same stamped frames, encoded by ffmpeg
    with the publisher's settings and decoded at once by a second ffmpeg over a
    pipe. Returns the latencies (ms) read back from the decoded frames."""
    encoder = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", *RAW_IN, "-t", str(seconds), *ENCODE,
         "-flush_packets", "1", "-f", "nut", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    decoder = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-fflags", "nobuffer", "-flags", "low_delay",
         "-probesize", "32", "-analyzeduration", "0", "-threads", "1", "-f", "nut", "-i", "-",
         "-f", "rawvideo", "-pix_fmt", "gray", "-"], stdin=encoder.stdout, stdout=subprocess.PIPE)
    encoder.stdout.close()
    latencies = []

    def read():
        while True:
            data = decoder.stdout.read(W * H)
            if len(data) < W * H:
                return
            now = int(time.time() * 1000) & 0xFFFFFFFF
            sent = read_stamp(np.frombuffer(data, dtype=np.uint8).reshape(H, W), W, H)
            lat = (now - sent) & 0xFFFFFFFF
            if lat < 10_000:
                latencies.append(lat)

    reader = threading.Thread(target=read)
    reader.start()
    feed_stamped_frames(encoder, seconds, [], threading.Event())
    decoder.wait()
    reader.join()
    return np.array(latencies)


async def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    quality = sys.argv[2] if len(sys.argv) > 2 else "high"
    wanted = {"high": rtc.VideoQuality.VIDEO_QUALITY_HIGH, "medium": rtc.VideoQuality.VIDEO_QUALITY_MEDIUM,
              "low": rtc.VideoQuality.VIDEO_QUALITY_LOW}[quality]
    with_high = len(sys.argv) > 3 and sys.argv[3] == "with-high"
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    floor = baseline(min(seconds, 15))
    work = tempfile.mkdtemp(prefix="ingress-bench-")
    lk_port, rtmp_port, api_port = free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(start_livekit(work, lk_port))
        service = start_service(work, lk_port, rtmp_port, api_port)
        procs.append(service)

        lkapi = api.LiveKitAPI(f"http://127.0.0.1:{api_port}", "devkey", "secret")
        info = await lkapi.ingress.create_ingress(api.CreateIngressRequest(
            input_type=api.IngressInput.RTMP_INPUT, name="bench", room_name="bench",
            participant_identity="bench-streamer"))
        await lkapi.aclose()

        token = (api.AccessToken("devkey", "secret").with_identity("bench-viewer")
                 .with_grants(api.VideoGrants(room_join=True, room="bench")).to_jwt())
        room = rtc.Room()
        latencies, first_frame = [], []

        async def watch(track, publication):
            publication.set_video_quality(wanted)
            async for ev in rtc.VideoStream(track):
                now = time.time()
                if not first_frame:
                    first_frame.append(now)
                i420 = ev.frame.convert(rtc.VideoBufferType.I420)
                y = np.frombuffer(i420.data, dtype=np.uint8)[: i420.width * i420.height]
                sent = read_stamp(y.reshape(i420.height, i420.width), i420.width, i420.height)
                lat = ((int(now * 1000) & 0xFFFFFFFF) - sent) & 0xFFFFFFFF
                if lat < 10_000:  # an unreadable stamp (a frame mid-switch) is not a latency
                    latencies.append((now, lat, i420.width))

        tasks = []

        @room.on("track_subscribed")
        def on_track(track, publication, participant):
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                tasks.append(asyncio.ensure_future(watch(track, publication)))

        await room.connect(f"ws://127.0.0.1:{lk_port}", token)
        rooms = [room]
        if with_high:
            other = rtc.Room()

            @other.on("track_subscribed")
            def on_other_track(track, publication, participant):
                if track.kind == rtc.TrackKind.KIND_VIDEO:
                    publication.set_video_quality(rtc.VideoQuality.VIDEO_QUALITY_HIGH)

            other_token = (api.AccessToken("devkey", "secret").with_identity("bench-viewer-high")
                           .with_grants(api.VideoGrants(room_join=True, room="bench")).to_jwt())
            await other.connect(f"ws://127.0.0.1:{lk_port}", other_token)
            rooms.append(other)
        cpu0, _ = proc_cpu_rss(service.pid)
        started, stop = [], threading.Event()
        pub = threading.Thread(target=publisher, args=(f"{info.url}/{info.stream_key}", seconds, started, stop))
        pub.start()
        peak_rss, t_start = 0, time.time()
        while pub.is_alive():
            await asyncio.sleep(1)
            _, rss = proc_cpu_rss(service.pid)
            peak_rss = max(peak_rss, rss)
        cpu1, _ = proc_cpu_rss(service.pid)
        elapsed = time.time() - t_start
        for t in tasks:
            t.cancel()
        for r in rooms:
            await r.disconnect()
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    if not latencies or not first_frame:
        raise SystemExit("no frame reached the subscriber")
    lat = np.array([l for _, l, _ in latencies])
    third = max(1, len(lat) // 3)
    print(f"stream: {W}x{H}@{FPS} for {seconds} s, default preset, subscriber on the {quality} layer"
          f"{' (and another on the high layer)' if with_high else ''} "
          f"({latencies[-1][2]} px wide)")
    print(f"first decoded frame: {first_frame[0] - started[0]:.3f} s after the publisher's first frame")
    print(f"latency frame creation -> decoded at subscriber, {len(lat)} frames: "
          f"p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms")
    print(f"baseline, ffmpeg encode -> ffmpeg decode over a pipe, {len(floor)} frames: "
          f"p50 {np.percentile(floor, 50):.0f} ms, p95 {np.percentile(floor, 95):.0f} ms; "
          f"ingress path minus baseline at the median: {np.percentile(lat, 50) - np.percentile(floor, 50):+.0f} ms")
    print(f"latency trend: median of first third {np.median(lat[:third]):.0f} ms, last third {np.median(lat[-third:]):.0f} ms")
    print(f"service: {(cpu1 - cpu0) / elapsed:.2f} CPU s per stream-second, peak RSS {peak_rss / 1e6:.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
