package main

import (
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// ridTrack is a simulcast encoding that marks its packets with the mid and
// rid header extensions, which is how the receiver tells the encodings
// apart: pion v4 writes neither by itself (its own tests set them per
// packet), and a receiver without SSRCs for the rids (str0m, browsers)
// drops packets it cannot place.
type ridTrack struct {
	*webrtc.TrackLocalStaticSample
	// The transceiver, for its mid (known once the offer is set).
	transceiver func() *webrtc.RTPTransceiver
}

func (t *ridTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	return t.TrackLocalStaticSample.Bind(&ridContext{TrackLocalContext: ctx, track: t})
}

type ridContext struct {
	webrtc.TrackLocalContext
	track *ridTrack
}

func (c *ridContext) WriteStream() webrtc.TrackLocalWriter {
	writer := &ridWriter{TrackLocalWriter: c.TrackLocalContext.WriteStream(), rid: c.track.RID()}
	for _, extension := range c.HeaderExtensions() {
		switch extension.URI {
		case sdp.SDESMidURI:
			writer.midID = uint8(extension.ID) //nolint:gosec // extension ids are 1..14
		case sdp.SDESRTPStreamIDURI:
			writer.ridID = uint8(extension.ID) //nolint:gosec // extension ids are 1..14
		}
	}
	if transceiver := c.track.transceiver(); transceiver != nil {
		writer.mid = transceiver.Mid()
	}
	return writer
}

type ridWriter struct {
	webrtc.TrackLocalWriter
	midID, ridID uint8
	mid, rid     string
}

func (w *ridWriter) WriteRTP(header *rtp.Header, payload []byte) (int, error) {
	if w.midID != 0 && w.mid != "" {
		if err := header.SetExtension(w.midID, []byte(w.mid)); err != nil {
			return 0, err
		}
	}
	if w.ridID != 0 {
		if err := header.SetExtension(w.ridID, []byte(w.rid)); err != nil {
			return 0, err
		}
	}
	return w.TrackLocalWriter.WriteRTP(header, payload)
}
