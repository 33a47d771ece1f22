#!/usr/bin/env python3
"""Creates (or finds) the quick start's demo ingress through the real LiveKit
Ingress API client and prints what a streamer needs: the URL and stream key."""

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
        info = next((i for i in existing.items if i.name == "quick start demo"), None)
        if info is None:
            info = await lkapi.ingress.create_ingress(
                api.CreateIngressRequest(
                    input_type=api.IngressInput.RTMP_INPUT,
                    name="quick start demo",
                    room_name=args.room,
                    participant_identity="demo-streamer",
                    participant_name="Demo streamer",
                )
            )
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


if __name__ == "__main__":
    asyncio.run(main())
