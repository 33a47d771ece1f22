#!/usr/bin/env python3
"""Publishes frames that carry their creation time (see stamp.py) with ffmpeg.

Frames are made here at the given rate, each stamped with the wall-clock time
it was made, and piped raw into ffmpeg, which encodes them (x264 ultrafast,
zero latency, a keyframe every --gop frames) with an AAC tone and sends FLV to
--url (MPEG-TS to an srt:// URL). ffmpeg's writes are never paced by anything
but this clock, so a connection that stalls downstream makes a backlog, as a
real encoder's would.
SIGTERM kills ffmpeg at once (SIGKILL): the publisher vanishes as when an
encoder crashes, without closing its stream.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamp import now_ms, stamp  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--size", default="640x360")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--gop", type=int, default=30)
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    container = "mpegts" if args.url.startswith("srt://") else "flv"
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
         "-f", "rawvideo", "-pix_fmt", "gray", "-s", args.size, "-r", str(args.fps), "-i", "-",
         "-f", "lavfi", "-i", "sine=sample_rate=48000",
         "-t", str(args.seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
         "-b:v", "1M", "-g", str(args.gop), "-sc_threshold", "0",
         "-c:a", "aac", "-ac", "2", "-f", container, args.url],
        stdin=subprocess.PIPE,
    )

    def crash(_signum, _frame):
        ffmpeg.kill()
        ffmpeg.wait()
        os._exit(0)

    signal.signal(signal.SIGTERM, crash)
    base = np.tile(np.linspace(40, 200, width, dtype=np.uint8), (height, 1))
    t0 = time.monotonic()
    n = 0
    try:
        while n < args.seconds * args.fps:
            frame = base.copy()
            stamp(frame, now_ms())
            ffmpeg.stdin.write(frame.tobytes())
            n += 1
            delay = t0 + n / args.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    except BrokenPipeError:
        pass
    finally:
        try:
            ffmpeg.stdin.close()
        except OSError:
            pass
    sys.exit(ffmpeg.wait())


if __name__ == "__main__":
    main()
