#!/usr/bin/env python3
"""An independent subscriber on the LiveKit Python SDK, used by the tests.

It joins a room, subscribes to every published track, optionally asks for one
simulcast quality, decodes media for a while and prints one JSON report on
stdout: who was in the room, which tracks they published (name, source, codec,
whether simulcast) and, per track, how many frames were decoded and at which
sizes. The tests assert on that report; this script asserts nothing itself.
"""

import argparse
import asyncio
import collections
import json
import sys
import time

# The shortest decode window when --until-size ends it early.
MIN_WINDOW = 2.0

from livekit import api, rtc

QUALITIES = {
    "low": rtc.VideoQuality.VIDEO_QUALITY_LOW,
    "medium": rtc.VideoQuality.VIDEO_QUALITY_MEDIUM,
    "high": rtc.VideoQuality.VIDEO_QUALITY_HIGH,
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True, help="ws:// URL of the LiveKit server")
    p.add_argument("--api-key", required=True)
    p.add_argument("--api-secret", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--identity", default="test-subscriber")
    p.add_argument("--quality", choices=sorted(QUALITIES), help="simulcast quality to select")
    p.add_argument("--expect-tracks", type=int, default=0,
                   help="wait until this many remote tracks are subscribed (0: do not wait)")
    p.add_argument("--duration", type=float, default=3.0,
                   help="seconds to keep decoding once the expected tracks are there")
    p.add_argument("--until-size", default=None,
                   help="end the decode window early (after at least 2 s) once 30 video frames "
                        "of this WxH were decoded")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the expected tracks before reporting")
    p.add_argument("--switch", action="append", default=[], metavar="QUALITY@SECONDS",
                   help="select QUALITY this many seconds into the decode window (repeatable); "
                        "the report lists when each was asked and every change of decoded size")
    p.add_argument("--leave-watch", type=float, default=0.0,
                   help="after decoding, watch this many seconds for publishers leaving")
    return p.parse_args()


def enum_name(enum_type, value):
    try:
        return enum_type.Name(value)
    except Exception:  # noqa: BLE001 - older SDKs expose plain ints
        return str(value)


class Report:
    def __init__(self):
        self.started = time.monotonic()
        self.connected = False
        self.room_name = None
        self.participants = {}
        self.tracks = {}
        self.events = []

    def event(self, what, **fields):
        self.events.append({"t": round(time.monotonic() - self.started, 3), "event": what, **fields})

    def participant(self, p):
        entry = self.participants.setdefault(p.identity, {"identity": p.identity, "tracks": []})
        entry["name"] = p.name
        entry["metadata"] = p.metadata
        return entry

    def track(self, publication, participant):
        key = publication.sid
        if key not in self.tracks:
            self.tracks[key] = {
                "sid": publication.sid,
                "participant": participant.identity,
                "name": publication.name,
                "kind": "video" if publication.kind == rtc.TrackKind.KIND_VIDEO else "audio",
                "source": enum_name(rtc.TrackSource, publication.source),
                "mime_type": publication.mime_type,
                "simulcasted": bool(getattr(publication, "simulcasted", False)),
                "width": getattr(publication, "width", 0),
                "height": getattr(publication, "height", 0),
                "frames": 0,
                # Video frames per second over the last RECENT_S seconds of
                # decoding (filled in at the end).
                "recent_fps": None,
                "sizes": {},
                "last_size": None,
                "first_frame_s": None,
                # The longest wait between two decoded video frames, seconds.
                "max_gap_s": None,
                "size_changes": [],
                "sample_rate": None,
                "channels": None,
            }
            self.participants.setdefault(participant.identity, {"identity": participant.identity, "tracks": []})["tracks"].append(key)
        return self.tracks[key]

    def as_json(self):
        return {
            "connected": self.connected,
            "room": self.room_name,
            "participants": list(self.participants.values()),
            "tracks": list(self.tracks.values()),
            "events": self.events,
        }


RECENT_S = 5.0


def recent_fps(times):
    """Frames per second over the last RECENT_S seconds of `times`, or over
    all of them when they span less."""
    if len(times) < 2:
        return None
    since = times[-1] - RECENT_S
    recent = [t for t in times if t >= since]
    span = times[-1] - max(since, times[0])
    return round((len(recent) - 1) / span, 2) if span > 0 else None


async def consume_video(track, entry, report):
    stream = rtc.VideoStream(track)
    times = collections.deque(maxlen=1000)
    async for ev in stream:
        frame = ev.frame
        if entry["first_frame_s"] is None:
            entry["first_frame_s"] = round(time.monotonic() - report.started, 3)
        entry["frames"] += 1
        now = time.monotonic()
        if times:
            entry["max_gap_s"] = round(max(entry["max_gap_s"] or 0.0, now - times[-1]), 3)
        times.append(now)
        entry["recent_fps"] = recent_fps(times) if entry["frames"] % 15 == 0 else entry["recent_fps"]
        size = f"{frame.width}x{frame.height}"
        entry["sizes"][size] = entry["sizes"].get(size, 0) + 1
        if entry["last_size"] != size:
            entry["size_changes"].append({"t": round(time.monotonic() - report.started, 3), "size": size})
        entry["last_size"] = size


async def consume_audio(track, entry, report):
    stream = rtc.AudioStream(track)
    async for ev in stream:
        frame = ev.frame
        if entry["first_frame_s"] is None:
            entry["first_frame_s"] = round(time.monotonic() - report.started, 3)
        entry["frames"] += 1
        entry["sample_rate"] = frame.sample_rate
        entry["channels"] = frame.num_channels


async def main():
    args = parse_args()
    report = Report()
    token = (
        api.AccessToken(args.api_key, args.api_secret)
        .with_identity(args.identity)
        .with_grants(api.VideoGrants(room_join=True, room=args.room, can_publish=False))
        .to_jwt()
    )
    room = rtc.Room()
    tasks = []
    subscribed = asyncio.Event()
    video_publications = []

    def count_subscribed():
        return sum(1 for t in report.tracks.values() if t.get("subscribed"))

    @room.on("participant_connected")
    def on_participant_connected(p):
        report.participant(p)
        report.event("participant_connected", identity=p.identity)

    @room.on("participant_disconnected")
    def on_participant_disconnected(p):
        report.event("participant_disconnected", identity=p.identity)

    @room.on("track_published")
    def on_track_published(publication, participant):
        report.participant(participant)
        report.track(publication, participant)
        report.event("track_published", sid=publication.sid, identity=participant.identity)

    @room.on("track_unpublished")
    def on_track_unpublished(publication, participant):
        report.event("track_unpublished", sid=publication.sid, identity=participant.identity)

    @room.on("track_subscribed")
    def on_track_subscribed(track, publication, participant):
        report.participant(participant)
        entry = report.track(publication, participant)
        entry["subscribed"] = True
        report.event("track_subscribed", sid=publication.sid, kind=entry["kind"])
        if entry["kind"] == "video":
            video_publications.append(publication)
            # The SDK refuses a quality for a track that has one layer.
            if args.quality and entry["simulcasted"]:
                publication.set_video_quality(QUALITIES[args.quality])
            tasks.append(asyncio.create_task(consume_video(track, entry, report)))
        else:
            tasks.append(asyncio.create_task(consume_audio(track, entry, report)))
        if args.expect_tracks and count_subscribed() >= args.expect_tracks:
            subscribed.set()

    await room.connect(args.url, token, rtc.RoomOptions(auto_subscribe=True))
    report.connected = True
    report.room_name = room.name
    report.event("connected", room=room.name)
    for p in room.remote_participants.values():
        report.participant(p)
        for pub in p.track_publications.values():
            report.track(pub, p)

    if args.expect_tracks:
        try:
            await asyncio.wait_for(subscribed.wait(), timeout=args.timeout)
        except asyncio.TimeoutError:
            report.event("timeout_waiting_for_tracks", subscribed=count_subscribed())
    started = time.monotonic()
    switches = sorted((float(at), quality) for quality, at in (s.split("@") for s in args.switch))
    while time.monotonic() < started + args.duration:
        await asyncio.sleep(0.2)
        while switches and time.monotonic() - started >= switches[0][0]:
            _, quality = switches.pop(0)
            for publication in video_publications:
                if getattr(publication, "simulcasted", False):
                    publication.set_video_quality(QUALITIES[quality])
            report.event("switch", quality=quality)
        if args.until_size and time.monotonic() - started >= MIN_WINDOW and any(
            t["sizes"].get(args.until_size, 0) >= 30 for t in report.tracks.values() if t["kind"] == "video"
        ):
            break
    if args.leave_watch:
        await asyncio.sleep(args.leave_watch)

    for t in tasks:
        t.cancel()
    await room.disconnect()
    print(json.dumps(report.as_json()))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as exc:  # report the failure as data so the test can show it
        print(json.dumps({"connected": False, "error": repr(exc)}))
        sys.exit(1)
