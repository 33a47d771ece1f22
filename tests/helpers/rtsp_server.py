#!/usr/bin/env python3
"""An RTSP server on GStreamer's RTSP server library: a live 720p30 test
pattern (H.264) and a tone (Opus) at rtsp://127.0.0.1:PORT/test.

Usage: rtsp_server.py PORT {tcp,udp,any}. `tcp` allows only interleaved
TCP, `udp` only UDP. Prints "ready" once it listens; runs until killed.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

LAUNCH = (
    "( videotestsrc is-live=true pattern=ball "
    "! video/x-raw,width=1280,height=720,framerate=30/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bframes=0 "
    "! rtph264pay name=pay0 pt=96 config-interval=-1 "
    "audiotestsrc is-live=true ! audioconvert ! audioresample ! opusenc "
    "! rtpopuspay name=pay1 pt=97 )"
)

PROTOCOLS = {
    "tcp": GstRtsp.RTSPLowerTrans.TCP,
    "udp": GstRtsp.RTSPLowerTrans.UDP,
    "any": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP,
}


def main():
    port, transport = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH)
    factory.set_shared(True)
    factory.set_protocols(PROTOCOLS[transport])
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
