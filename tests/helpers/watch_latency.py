#!/usr/bin/env python3
"""Joins a room as a subscriber and reads the creation time (see stamp.py) of
every decoded video frame of the one video track published there.

Prints one JSON object: `frames`, a list of [decoded at (wall-clock ms,
32-bit), latency ms, width] per decoded frame, and `sids`. Frames whose
stamp is unreadable (latency over 60 s) are left out. Asserts nothing.
"""

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np
from livekit import api, rtc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamp import latency_ms, now_ms, read_stamp  # noqa: E402

QUALITIES = {
    "low": rtc.VideoQuality.VIDEO_QUALITY_LOW,
    "medium": rtc.VideoQuality.VIDEO_QUALITY_MEDIUM,
    "high": rtc.VideoQuality.VIDEO_QUALITY_HIGH,
}


async def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--api-secret", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--quality", default="high", choices=sorted(QUALITIES))
    p.add_argument("--seconds", type=float, required=True, help="how long to watch, from joining")
    args = p.parse_args()
    token = (api.AccessToken(args.api_key, args.api_secret).with_identity("latency-watcher")
             .with_grants(api.VideoGrants(room_join=True, room=args.room, can_publish=False)).to_jwt())
    room = rtc.Room()
    frames, sids, events, tasks = [], [], [], []

    async def watch(track):
        async for ev in rtc.VideoStream(track):
            at = now_ms()
            i420 = ev.frame.convert(rtc.VideoBufferType.I420)
            y = np.frombuffer(i420.data, dtype=np.uint8)[: i420.width * i420.height]
            sent = read_stamp(y.reshape(i420.height, i420.width), i420.width, i420.height)
            lat = latency_ms(sent, at)
            if lat < 60_000:
                frames.append([at, lat, i420.width])

    @room.on("track_subscribed")
    def on_track(track, publication, participant):
        sids.append({"participant": participant.sid, "track": publication.sid, "kind": int(track.kind)})
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            publication.set_video_quality(QUALITIES[args.quality])
            tasks.append(asyncio.ensure_future(watch(track)))

    @room.on("participant_connected")
    def on_join(participant):
        events.append([now_ms(), "joined", participant.identity, participant.sid])

    @room.on("participant_disconnected")
    def on_leave(participant):
        events.append([now_ms(), "left", participant.identity, participant.sid])

    await room.connect(args.url, token)
    await asyncio.sleep(args.seconds)
    for t in tasks:
        t.cancel()
    await room.disconnect()
    print(json.dumps({"frames": frames, "sids": sids, "events": events}))


if __name__ == "__main__":
    asyncio.run(main())
