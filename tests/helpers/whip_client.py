#!/usr/bin/python3
"""A WHIP client on GStreamer's webrtcbin (not this project's WebRTC stack).

    whip_client.py URL [--seconds N] [--codec h264|vp8] [--size WxH]
                       [--no-audio] [--bearer KEY] [--vanish]

Builds test-pattern video (x264enc or vp8enc) and Opus audio into webrtcbin,
makes the offer, waits for ICE gathering, POSTs it (Content-Type
application/sdp) to URL, sets the answer and publishes for N seconds, then
DELETEs the session resource (or, with --vanish, just exits). Prints one JSON
line per step: {"post": status, "location": ..., "error": body},
{"connected": ice state}, {"delete": status}. Exit 0 when the POST got 201.
"""

import argparse
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402


def say(**fields):
    print(json.dumps(fields), flush=True)


def ecdsa_pem():
    """A fresh self-signed P-256 certificate and its key, in PEM."""
    return subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "/dev/stdout", "-out", "/dev/stdout", "-subj", "/CN=whip-client",
         "-days", "1"],
        check=True, capture_output=True, text=True,
    ).stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--codec", default="h264")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--no-audio", action="store_true")
    parser.add_argument("--bearer")
    parser.add_argument("--vanish", action="store_true")
    args = parser.parse_args()
    width, height = args.size.split("x")
    Gst.init(None)
    if args.codec == "vp8":
        encode = (
            "vp8enc deadline=1 keyframe-max-dist=60 target-bitrate=1500000 "
            "! rtpvp8pay pt=96"
        )
        caps = "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
    else:
        encode = (
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 bitrate=1500 "
            "! video/x-h264,profile=constrained-baseline ! h264parse "
            "! rtph264pay pt=102 config-interval=-1 aggregate-mode=zero-latency"
        )
        caps = (
            "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,"
            "packetization-mode=(string)1"
        )
    launch = (
        f"webrtcbin name=rtc bundle-policy=max-bundle "
        f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate=30/1 "
        f"! videoconvert ! {encode} ! {caps} ! rtc. "
    )
    if not args.no_audio:
        launch += (
            "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample "
            "! opusenc ! rtpopuspay pt=111 "
            "! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! rtc. "
        )
    pipeline = Gst.parse_launch(launch)
    rtc = pipeline.get_by_name("rtc")
    loop = GLib.MainLoop()
    state = {"location": None, "ok": False}

    def post_offer():
        offer = rtc.get_property("local-description")
        sdp = offer.sdp.as_text()
        headers = {"Content-Type": "application/sdp"}
        if args.bearer:
            headers["Authorization"] = "Bearer " + args.bearer
        request = urllib.request.Request(args.url, data=sdp.encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                answer = response.read().decode()
                location = response.headers.get("Location")
                state["location"] = urllib.parse.urljoin(args.url, location)
                say(post=response.status, location=location)
        except urllib.error.HTTPError as e:
            say(post=e.code, error=e.read().decode(errors="replace"))
            loop.quit()
            return False
        except Exception as e:  # noqa: BLE001
            say(post=0, error=str(e))
            loop.quit()
            return False
        ok, parsed = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, parsed)
        rtc.emit("set-remote-description", description, Gst.Promise.new())
        state["ok"] = True
        GLib.timeout_add(int(args.seconds * 1000), finish)
        return False

    def finish():
        if not args.vanish and state["location"]:
            request = urllib.request.Request(state["location"], method="DELETE")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    say(delete=response.status)
            except urllib.error.HTTPError as e:
                say(delete=e.code)
        loop.quit()
        return False

    def on_gathering(element, _pspec):
        if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(post_offer)

    def on_ice_state(element, _pspec):
        say(ice=int(element.get_property("ice-connection-state")))

    def on_offer(promise, _data):
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        rtc.emit("set-local-description", offer, Gst.Promise.new())

    def use_ecdsa(_promise, _data):
        # GStreamer 1.22's DTLS makes an RSA certificate; WebRTC stacks with
        # ECDSA-only DTLS (str0m's dimpl) refuse it. The first offer made the
        # transports; give them an ECDSA certificate, then offer again (the
        # fingerprint follows the certificate).
        pem = ecdsa_pem()
        for i in range(8):
            transceiver = rtc.emit("get-transceiver", i)
            if transceiver is None:
                break
            transport = transceiver.get_property("sender").get_property("transport")
            if transport is not None:
                transport.set_property("certificate", pem)
        rtc.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, None))

    def on_negotiation_needed(element):
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(use_ecdsa, None))

    rtc.connect("on-negotiation-needed", on_negotiation_needed)
    rtc.connect("notify::ice-gathering-state", on_gathering)
    rtc.connect("notify::ice-connection-state", on_ice_state)
    bus = pipeline.get_bus()
    bus.add_signal_watch()

    def on_error(_bus, message):
        error, debug = message.parse_error()
        say(error=f"{error.message} ({debug})")
        loop.quit()

    bus.connect("message::error", on_error)
    pipeline.set_state(Gst.State.PLAYING)
    # Send-only transceivers.
    for i in range(8):
        transceiver = rtc.emit("get-transceiver", i)
        if transceiver is None:
            break
        transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
    GLib.timeout_add(int((args.seconds + 30) * 1000), loop.quit)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    sys.exit(0 if state["ok"] else 1)


if __name__ == "__main__":
    main()
