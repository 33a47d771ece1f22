#!/usr/bin/env python3
"""A WHIP client on aiortc (Python WebRTC, not this project's stack nor GStreamer).

    whip_aiortc.py URL [--seconds N] [--codec h264|vp8] [--size WxH]
                       [--no-audio] [--bearer KEY] [--vanish]

Makes synthetic video (a moving gradient drawn with numpy, encoded by aiortc
as H.264 or VP8) and a 440 Hz Opus tone, builds the offer, waits for ICE
gathering, POSTs it (Content-Type application/sdp) to URL, sets the answer,
publishes for N seconds, then DELETEs the session resource (or, with
--vanish, just exits without closing). Prints one JSON line per step:
{"post": status, "location": ..., "error": body}, {"connection": state},
{"sent": {"video": frames, "audio": frames}}, {"delete": status}.
Exit 0 when the POST got 201 and the connection came up.
"""

import argparse
import asyncio
import fractions
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import aioice.ice
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import AudioFrame, VideoFrame


def say(**fields):
    print(json.dumps(fields), flush=True)


class Pattern(VideoStreamTrack):
    """A gradient that moves each frame, so every frame differs."""

    def __init__(self, width, height):
        super().__init__()
        self.width, self.height = width, height
        x = np.arange(width, dtype=np.uint16)
        y = np.arange(height, dtype=np.uint16)
        self.base = (x[None, :] + y[:, None]).astype(np.uint16)
        self.sent = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        shift = (self.sent * 4) % 256
        plane = ((self.base + shift) % 256).astype(np.uint8)
        rgb = np.stack([plane, np.flipud(plane), np.full_like(plane, 128)], axis=2)
        frame = VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent += 1
        return frame


class Tone(AudioStreamTrack):
    """A 440 Hz sine in 20 ms frames at 48 kHz, stereo."""

    RATE = 48000
    SAMPLES = 960

    def __init__(self):
        super().__init__()
        self.start = None
        self.position = 0
        self.sent = 0

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        wait = self.start + self.position / self.RATE - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(self.SAMPLES) + self.position) / self.RATE
        mono = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)
        samples = np.repeat(mono, 2).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate = self.RATE
        frame.pts = self.position
        frame.time_base = fractions.Fraction(1, self.RATE)
        self.position += self.SAMPLES
        self.sent += 1
        return frame


def offer_loopback_candidates():
    """aioice leaves 127.0.0.1 out of its host candidates. A server on
    loopback is still reached from the others (the kernel routes between local
    addresses), but a machine with nothing but loopback would have no
    candidate at all: for a loopback URL, 127.0.0.1 is offered too."""
    host_addresses = aioice.ice.get_host_addresses

    def with_loopback(use_ipv4, use_ipv6):
        addresses = host_addresses(use_ipv4, use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    aioice.ice.get_host_addresses = with_loopback


def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def prefer(transceiver, mime):
    codecs = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    chosen = [c for c in codecs if c.mimeType.lower() == mime]
    # Keep retransmission so the server's NACKs are served.
    chosen += [c for c in codecs if c.mimeType.lower() == f"{transceiver.kind}/rtx"]
    transceiver.setCodecPreferences(chosen)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--codec", default="h264", choices=["h264", "vp8"])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--no-audio", action="store_true")
    parser.add_argument("--bearer")
    parser.add_argument("--vanish", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if urllib.parse.urlsplit(args.url).hostname in ("127.0.0.1", "localhost"):
        offer_loopback_candidates()

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = Pattern(width, height)
    prefer(pc.addTransceiver(video, direction="sendonly"), f"video/{args.codec}")
    audio = None
    if not args.no_audio:
        audio = Tone()
        pc.addTransceiver(audio, direction="sendonly")

    connected = asyncio.Event()
    failed = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state():
        say(connection=pc.connectionState)
        if pc.connectionState == "connected":
            connected.set()
        elif pc.connectionState in ("failed", "closed"):
            failed.set()

    # aiortc gathers every candidate in setLocalDescription (no trickle).
    await pc.setLocalDescription(await pc.createOffer())
    candidates = [
        line.split()[4] for line in pc.localDescription.sdp.splitlines()
        if line.startswith("a=candidate:")
    ]
    say(candidates=sorted(set(candidates)))
    headers = {"Content-Type": "application/sdp"}
    if args.bearer:
        headers["Authorization"] = f"Bearer {args.bearer}"
    status, response_headers, body = await asyncio.to_thread(
        request, "POST", args.url, pc.localDescription.sdp.encode(), headers
    )
    if status != 201:
        say(post=status, error=body)
        await pc.close()
        return 1
    location = urllib.parse.urljoin(args.url, response_headers.get("Location", ""))
    say(post=status, location=location)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    done = asyncio.ensure_future(connected.wait())
    gone = asyncio.ensure_future(failed.wait())
    await asyncio.wait([done, gone], timeout=15, return_when=asyncio.FIRST_COMPLETED)
    done.cancel()
    gone.cancel()
    if not connected.is_set():
        say(error=f"connection not up: {pc.connectionState}")
        await pc.close()
        return 2

    ends = time.monotonic() + args.seconds
    while time.monotonic() < ends and not failed.is_set():
        await asyncio.sleep(0.25)
    say(sent={"video": video.sent, "audio": audio.sent if audio else 0})
    if args.vanish:
        # Leave without DTLS close or DELETE: the server has to notice.
        os._exit(0)
    status, _, _ = await asyncio.to_thread(request, "DELETE", location)
    say(delete=status)
    await pc.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
