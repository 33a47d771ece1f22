#!/usr/bin/env python3
"""Creates (or finds) the quick start's demo ingresses through the real LiveKit
Ingress API client, one RTMP and one WHIP, and prints what a streamer needs:
the URL and stream key of each (for OBS, ffmpeg, or any WHIP client)."""

import argparse
import asyncio

from livekit import api


async def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--api-url", required=True, help="http:// URL of livekit-ingress's API")
    p.add_argument("--api-key", default="devkey")
    p.add_argument("--api-secret", default="secret")
    p.add_argument("--room", default="demo")
    args = p.parse_args()

    lkapi = api.LiveKitAPI(args.api_url, args.api_key, args.api_secret)
    try:
        existing = await lkapi.ingress.list_ingress(api.ListIngressRequest(room_name=args.room))

        async def demo(name, input_type, identity):
            found = next((i for i in existing.items if i.name == name), None)
            return found or await lkapi.ingress.create_ingress(
                api.CreateIngressRequest(
                    input_type=input_type,
                    name=name,
                    room_name=args.room,
                    participant_identity=identity,
                    participant_name=identity.replace("-", " ").capitalize(),
                )
            )

        info = await demo("quick start demo", api.IngressInput.RTMP_INPUT, "demo-streamer")
        whip = await demo("quick start demo (WHIP)", api.IngressInput.WHIP_INPUT, "demo-whip")
    finally:
        await lkapi.aclose()

    print(f"Ingress:    {info.ingress_id} (room '{info.room_name}')")
    print(f"Stream URL: {info.url}")
    print(f"Stream key: {info.stream_key}")
    print("Try it:")
    print(
        "  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 "
        f"-c:v libx264 -g 60 -c:a aac -f flv {info.url}/{info.stream_key}"
    )
    print(f"WHIP ingress: {whip.ingress_id} (forwarded as the client sends it)")
    print(f"  OBS 30+: Settings > Stream > Service: WHIP, Server: {whip.url}, Bearer Token: {whip.stream_key}")
    print(f"  or POST an SDP offer to {whip.url}/{whip.stream_key}")


if __name__ == "__main__":
    asyncio.run(main())
