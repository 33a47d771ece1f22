#!/usr/bin/env python3
"""LiveKit's Python API client (`livekit.api.LiveKitAPI().ingress`) through a
fixed sequence of Ingress API calls, used by tests/parity.rs.

It runs the same steps against whichever server it is given and prints one
JSON object on stdout: {"steps": [...]}, each step {"step": NAME, "answer":
the answer as protobuf's JSON (proto field names, every field with no
presence printed)} or {"step": NAME, "error": {"status", "code", "message"}}
for a Twirp error. Ids are the server's own; later steps use the ids earlier
steps got. This script asserts nothing about the answers: the test compares
what two servers answered.
"""

import argparse
import asyncio
import json

from google.protobuf.json_format import MessageToDict
from livekit import api

ROOM = "py-parity"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True, help="http:// URL of the server")
    p.add_argument("--api-key", required=True)
    p.add_argument("--api-secret", required=True)
    return p.parse_args()


def as_dict(message):
    return MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def rtmp(name, **fields):
    fields.setdefault("room_name", ROOM)
    fields.setdefault("participant_identity", "py")
    return api.CreateIngressRequest(input_type=api.IngressInput.RTMP_INPUT, name=name, **fields)


def layer(quality, width, height, bitrate):
    return api.VideoLayer(quality=quality, width=width, height=height, bitrate=bitrate)


async def run(lk, steps):
    ids = {}

    async def step(name, call, request, remember=None):
        try:
            answer = await call(request)
        except api.TwirpError as e:
            steps.append(
                {"step": name, "error": {"status": e.status, "code": e.code, "message": e.message}}
            )
            return None
        steps.append({"step": name, "answer": as_dict(answer)})
        if remember:
            ids[remember] = answer.ingress_id
        return answer

    ingress = lk.ingress
    create, update = ingress.create_ingress, ingress.update_ingress
    list_, delete = ingress.list_ingress, ingress.delete_ingress

    await step(
        "create rtmp with presets",
        create,
        rtmp(
            "py preset",
            participant_name="Py",
            participant_metadata='{"py":1}',
            video=api.IngressVideoOptions(
                name="cam",
                source=api.TrackSource.CAMERA,
                preset=api.IngressVideoEncodingPreset.H264_720P_30FPS_3_LAYERS,
            ),
            audio=api.IngressAudioOptions(
                name="mic",
                source=api.TrackSource.MICROPHONE,
                preset=api.IngressAudioEncodingPreset.OPUS_MONO_64KBS,
            ),
        ),
        remember="preset",
    )
    await step("create rtmp plain", create, rtmp("py plain"), remember="plain")
    await step(
        "create rtmp custom layers and audio",
        create,
        rtmp(
            "py custom",
            enable_transcoding=True,
            video=api.IngressVideoOptions(
                name="screen",
                source=api.TrackSource.SCREEN_SHARE,
                options=api.IngressVideoEncodingOptions(
                    video_codec=api.VideoCodec.H264_BASELINE,
                    frame_rate=25,
                    layers=[
                        layer(api.VideoQuality.LOW, 640, 360, 400_000),
                        layer(api.VideoQuality.HIGH, 1280, 720, 1_500_000),
                    ],
                ),
            ),
            audio=api.IngressAudioOptions(
                source=api.TrackSource.MICROPHONE,
                options=api.IngressAudioEncodingOptions(
                    audio_codec=api.AudioCodec.OPUS, bitrate=48_000, disable_dtx=True, channels=1
                ),
            ),
        ),
        remember="custom",
    )
    # WHIP: created by both (the WHIP base URL, bypass by default); deleted
    # again at once.
    whip = await step(
        "create whip",
        create,
        api.CreateIngressRequest(
            input_type=api.IngressInput.WHIP_INPUT,
            name="py whip",
            room_name=ROOM,
            participant_identity="py-whip",
        ),
    )
    if whip is not None:
        await delete(api.DeleteIngressRequest(ingress_id=whip.ingress_id))

    # Errors the client lets through to the server.
    await step("create without identity", create, rtmp("py no identity", participant_identity=""))
    # No room is accepted by both (LiveKit allows it); deleted at the end.
    await step(
        "create without room", create, rtmp("py no room", room_name=""), remember="no room"
    )
    await step(
        "create rtmp without transcoding", create, rtmp("py no transcoding", enable_transcoding=False)
    )
    await step(
        "create decreasing layers",
        create,
        rtmp(
            "py decreasing",
            video=api.IngressVideoOptions(
                options=api.IngressVideoEncodingOptions(
                    video_codec=api.VideoCodec.H264_BASELINE,
                    layers=[
                        layer(api.VideoQuality.LOW, 1280, 720, 400_000),
                        layer(api.VideoQuality.HIGH, 640, 360, 1_500_000),
                    ],
                )
            ),
        ),
    )
    await step(
        "create url without url",
        create,
        api.CreateIngressRequest(
            input_type=api.IngressInput.URL_INPUT, name="py url", room_name=ROOM,
            participant_identity="py-url",
        ),
    )

    await step("list all", list_, api.ListIngressRequest())
    await step("list by room", list_, api.ListIngressRequest(room_name=ROOM))
    await step("list by empty room", list_, api.ListIngressRequest(room_name="py-nobody"))
    await step("list by id", list_, api.ListIngressRequest(ingress_id=ids.get("custom", "")))
    await step(
        "list by id and another room",
        list_,
        api.ListIngressRequest(ingress_id=ids.get("custom", ""), room_name="another"),
    )
    await step("list by unknown id", list_, api.ListIngressRequest(ingress_id="IN_unknown"))

    target = ids.get("preset", "")
    for name, fields in [
        ("name", {"name": "py renamed"}),
        ("room", {"room_name": "py-elsewhere"}),
        ("identity", {"participant_identity": "py-other"}),
        ("enabled", {"enabled": False}),
        (
            "video preset",
            {
                "video": api.IngressVideoOptions(
                    preset=api.IngressVideoEncodingPreset.H264_1080P_30FPS_3_LAYERS
                )
            },
        ),
        (
            "audio options",
            {
                "audio": api.IngressAudioOptions(
                    options=api.IngressAudioEncodingOptions(
                        audio_codec=api.AudioCodec.OPUS, bitrate=96_000, channels=2
                    )
                )
            },
        ),
        ("transcoding off", {"enable_transcoding": False}),
        ("nothing", {}),
    ]:
        await step(
            f"update {name}", update, api.UpdateIngressRequest(ingress_id=target, **fields)
        )
    await step("list after updates", list_, api.ListIngressRequest(ingress_id=target))
    await step(
        "update unknown id", update, api.UpdateIngressRequest(ingress_id="IN_unknown", name="x")
    )
    await step("update empty id", update, api.UpdateIngressRequest(name="x"))

    for key in ("preset", "plain", "custom", "no room"):
        await step(f"delete {key}", delete, api.DeleteIngressRequest(ingress_id=ids.get(key, "")))
    await step("delete again", delete, api.DeleteIngressRequest(ingress_id=ids.get("preset", "")))
    await step("delete empty id", delete, api.DeleteIngressRequest())
    await step("list by room after deletes", list_, api.ListIngressRequest(room_name=ROOM))


async def main():
    args = parse_args()
    steps = []
    lk = api.LiveKitAPI(args.url, args.api_key, args.api_secret, failover=False)
    try:
        await run(lk, steps)
    finally:
        await lk.aclose()
    print(json.dumps({"steps": steps}))


if __name__ == "__main__":
    asyncio.run(main())
