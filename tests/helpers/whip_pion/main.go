// whip_pion: a WHIP client on pion (Go WebRTC, not this project's stack),
// the tests' simulcast publisher.
//
//	whip_pion [flags] URL
//
// It offers one video m-line with one encoding per -layers entry (rids, in
// the offer's a=simulcast line when there are several) and Opus audio, POSTs
// the offer (Content-Type application/sdp), sets the answer, and once
// connected sends pre-encoded media for -seconds: per rid the Annex B H.264
// file DIR/RID.h264 or the IVF VP8 file DIR/RID.ivf, and DIR/audio.ogg
// (one Opus packet per Ogg page), each file looped; then DELETE.
//
// -codec h265 or av1 (and h264-baseline: only profile-level-id 42001f) only
// offer that codec and send nothing: the tests use them for what the
// ingress refuses.
//
// One JSON line per step on stdout, as the aiortc client prints them:
// {"post": status, "location": ..., "error": body}, {"connection": state},
// {"sent": {"RID": frames, ..., "audio": packets}}, {"pli": {"RID": n}},
// {"delete": status}. Exit 0 when the POST got 201, the connection came
// up and the DELETE got 200.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
)

const frameDuration = time.Second / 30

func say(fields map[string]any) {
	line, _ := json.Marshal(fields)
	fmt.Println(string(line))
}

func fail(code int, format string, args ...any) {
	say(map[string]any{"error": fmt.Sprintf(format, args...)})
	os.Exit(code)
}

// The video codec offered, by -codec.
func videoCodec(name string) webrtc.RTPCodecParameters {
	feedback := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	capability := func(mime string, fmtp string) webrtc.RTPCodecParameters {
		return webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType: mime, ClockRate: 90000, SDPFmtpLine: fmtp, RTCPFeedback: feedback,
			},
			PayloadType: 102,
		}
	}
	switch name {
	case "h264":
		return capability(webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")
	case "h264-baseline":
		return capability(webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f")
	case "vp8":
		return capability(webrtc.MimeTypeVP8, "")
	case "h265":
		return capability(webrtc.MimeTypeH265, "")
	case "av1":
		return capability(webrtc.MimeTypeAV1, "")
	}
	fail(2, "unknown codec %q", name)
	return webrtc.RTPCodecParameters{}
}

// One simulcast encoding: its rid and the file it sends.
type layer struct {
	rid   string
	track webrtc.TrackLocal
	media *webrtc.TrackLocalStaticSample
	next  func() ([]byte, error)
	sent  atomic.Int64
	plis  atomic.Int64
}

// Annex B access units from an H.264 file: the NALs before a picture and
// the picture's slices, each with a start code (pion's payloader splits on
// them).
func h264Frames(path string) func() ([]byte, error) {
	var reader *h264reader.H264Reader
	var pending *h264reader.NAL
	open := func() error {
		file, err := os.Open(path)
		if err != nil {
			return err
		}
		reader, err = h264reader.NewReader(file)
		return err
	}
	return func() ([]byte, error) {
		var au bytes.Buffer
		hasPicture := false
		for {
			nal := pending
			pending = nil
			if nal == nil {
				if reader == nil {
					if err := open(); err != nil {
						return nil, err
					}
				}
				var err error
				nal, err = reader.NextNAL()
				if errors.Is(err, io.EOF) {
					reader = nil
					if hasPicture {
						return au.Bytes(), nil
					}
					continue
				}
				if err != nil {
					return nil, err
				}
			}
			vcl := nal.UnitType == h264reader.NalUnitTypeCodedSliceNonIdr || nal.UnitType == h264reader.NalUnitTypeCodedSliceIdr
			// first_mb_in_slice == 0 (ue(v) "1"): a new picture's first slice.
			firstSlice := vcl && len(nal.Data) > 1 && nal.Data[1]&0x80 != 0
			if hasPicture && (!vcl || firstSlice) {
				pending = nal
				return au.Bytes(), nil
			}
			au.Write([]byte{0, 0, 0, 1})
			au.Write(nal.Data)
			hasPicture = hasPicture || vcl
		}
	}
}

// VP8 frames from an IVF file.
func ivfFrames(path string) func() ([]byte, error) {
	var reader *ivfreader.IVFReader
	return func() ([]byte, error) {
		for {
			if reader == nil {
				file, err := os.Open(path)
				if err != nil {
					return nil, err
				}
				if reader, _, err = ivfreader.NewWith(file); err != nil {
					return nil, err
				}
			}
			frame, _, err := reader.ParseNextFrame()
			if errors.Is(err, io.EOF) {
				reader = nil
				continue
			}
			return frame, err
		}
	}
}

// Opus packets from an Ogg file with one packet per page.
func oggPackets(path string) func() ([]byte, error) {
	var reader *oggreader.OggReader
	return func() ([]byte, error) {
		for {
			if reader == nil {
				file, err := os.Open(path)
				if err != nil {
					return nil, err
				}
				if reader, _, err = oggreader.NewWith(file); err != nil {
					return nil, err
				}
			}
			page, header, err := reader.ParseNextPage()
			if errors.Is(err, io.EOF) {
				reader = nil
				continue
			}
			if err != nil {
				return nil, err
			}
			// The Opus head and tags pages carry no audio.
			if header.GranulePosition == 0 || bytes.HasPrefix(page, []byte("OpusTags")) {
				continue
			}
			return page, nil
		}
	}
}

func request(method, target string, body []byte, headers map[string]string) (*http.Response, string, error) {
	req, err := http.NewRequest(method, target, bytes.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	client := http.Client{Timeout: 20 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	return resp, string(text), err
}

func main() {
	codecName := flag.String("codec", "h264", "h264, vp8 (sent); h264-baseline, h265, av1 (offered only)")
	layersFlag := flag.String("layers", "q,h,f", "the rids of the video encodings, smallest first (one: no simulcast)")
	dir := flag.String("media", ".", "directory with RID.h264 / RID.ivf and audio.ogg")
	seconds := flag.Float64("seconds", 10, "seconds of media once connected")
	bearer := flag.String("bearer", "", "send the stream key as a Bearer token")
	noAudio := flag.Bool("no-audio", false, "offer no audio")
	flag.Parse()
	if flag.NArg() != 1 {
		fail(2, "usage: whip_pion [flags] URL")
	}
	target := flag.Arg(0)
	rids := strings.Split(*layersFlag, ",")
	sends := *codecName == "h264" || *codecName == "vp8"

	engine := &webrtc.MediaEngine{}
	if err := engine.RegisterCodec(videoCodec(*codecName), webrtc.RTPCodecTypeVideo); err != nil {
		fail(2, "register video codec: %v", err)
	}
	opus := webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType:        111,
	}
	if err := engine.RegisterCodec(opus, webrtc.RTPCodecTypeAudio); err != nil {
		fail(2, "register opus: %v", err)
	}
	// The mid and rid header extensions simulcast is sent with.
	if err := webrtc.ConfigureSimulcastExtensionHeaders(engine); err != nil {
		fail(2, "simulcast header extensions: %v", err)
	}
	registry := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(engine, registry); err != nil {
		fail(2, "interceptors: %v", err)
	}
	settings := webrtc.SettingEngine{}
	if parsed, err := url.Parse(target); err == nil && (parsed.Hostname() == "127.0.0.1" || parsed.Hostname() == "localhost") {
		// pion leaves loopback out of its candidates; a server on
		// loopback is offered 127.0.0.1 too (as the aiortc client does).
		settings.SetIncludeLoopbackCandidate(true)
	}
	api := webrtc.NewAPI(
		webrtc.WithMediaEngine(engine),
		webrtc.WithInterceptorRegistry(registry),
		webrtc.WithSettingEngine(settings),
	)
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		fail(2, "peer connection: %v", err)
	}
	defer pc.Close()

	codec := videoCodec(*codecName).RTPCodecCapability
	layers := make([]*layer, 0, len(rids))
	var transceiver *webrtc.RTPTransceiver
	transceiverOf := func() *webrtc.RTPTransceiver { return transceiver }
	for _, rid := range rids {
		var options []func(*webrtc.TrackLocalStaticRTP)
		if len(rids) > 1 {
			options = append(options, webrtc.WithRTPStreamID(rid))
		}
		track, err := webrtc.NewTrackLocalStaticSample(codec, "video", "pion", options...)
		if err != nil {
			fail(2, "video track %s: %v", rid, err)
		}
		l := &layer{rid: rid, track: track, media: track}
		if len(rids) > 1 {
			l.track = &ridTrack{TrackLocalStaticSample: track, transceiver: transceiverOf}
		}
		if sends {
			extension := map[string]string{"h264": ".h264", "vp8": ".ivf"}[*codecName]
			path := filepath.Join(*dir, rid+extension)
			if *codecName == "h264" {
				l.next = h264Frames(path)
			} else {
				l.next = ivfFrames(path)
			}
		}
		layers = append(layers, l)
	}
	// Simulcast in pion v4: the first encoding with AddTrack, the others
	// with AddEncoding on its sender.
	sendOnly := webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}
	transceiver, err = pc.AddTransceiverFromTrack(layers[0].track, sendOnly)
	if err != nil {
		fail(2, "add video: %v", err)
	}
	sender := transceiver.Sender()
	for _, l := range layers[1:] {
		if err := sender.AddEncoding(l.track); err != nil {
			fail(2, "add encoding %s: %v", l.rid, err)
		}
	}
	for _, l := range layers {
		rid := l.rid
		if len(layers) == 1 {
			rid = ""
		}
		go countPLIs(sender, rid, l)
	}
	var audio *webrtc.TrackLocalStaticSample
	var audioSent atomic.Int64
	if !*noAudio {
		audio, err = webrtc.NewTrackLocalStaticSample(opus.RTPCodecCapability, "audio", "pion")
		if err != nil {
			fail(2, "audio track: %v", err)
		}
		audioTransceiver, err := pc.AddTransceiverFromTrack(audio, sendOnly)
		if err != nil {
			fail(2, "add audio: %v", err)
		}
		audioSender := audioTransceiver.Sender()
		go func() {
			for {
				if _, _, err := audioSender.ReadRTCP(); err != nil {
					return
				}
			}
		}()
	}

	connected := make(chan struct{})
	failed := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(state webrtc.PeerConnectionState) {
		say(map[string]any{"connection": state.String()})
		switch state {
		case webrtc.PeerConnectionStateConnected:
			once.Do(func() { close(connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			select {
			case <-failed:
			default:
				close(failed)
			}
		}
	})

	offer, err := pc.CreateOffer(nil)
	if err != nil {
		fail(2, "offer: %v", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		fail(2, "set offer: %v", err)
	}
	<-gathered
	// For a failing test's log.
	fmt.Fprintln(os.Stderr, pc.LocalDescription().SDP)
	headers := map[string]string{"Content-Type": "application/sdp"}
	if *bearer != "" {
		headers["Authorization"] = "Bearer " + *bearer
	}
	resp, body, err := request("POST", target, []byte(pc.LocalDescription().SDP), headers)
	if err != nil {
		fail(1, "POST: %v", err)
	}
	if resp.StatusCode != http.StatusCreated {
		say(map[string]any{"post": resp.StatusCode, "error": body, "content_type": resp.Header.Get("Content-Type")})
		os.Exit(1)
	}
	base, _ := url.Parse(target)
	location, err := base.Parse(resp.Header.Get("Location"))
	if err != nil {
		fail(1, "Location: %v", err)
	}
	say(map[string]any{"post": resp.StatusCode, "location": location.String()})
	fmt.Fprintln(os.Stderr, body)
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		fail(1, "set answer: %v", err)
	}
	select {
	case <-connected:
	case <-failed:
		fail(1, "connection failed")
	case <-time.After(15 * time.Second):
		fail(1, "connection not up within 15 s")
	}

	// Every layer's frame of one instant is written in the same tick, as a
	// browser encodes its layers, at 30 fps; audio in 20 ms packets.
	end := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	done := make(chan struct{})
	var wg sync.WaitGroup
	if sends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ticker := time.NewTicker(frameDuration)
			defer ticker.Stop()
			for time.Now().Before(end) {
				for _, l := range layers {
					frame, err := l.next()
					if err != nil {
						fail(1, "reading %s: %v", l.rid, err)
					}
					if err := l.media.WriteSample(media.Sample{Data: frame, Duration: frameDuration}); err == nil {
						l.sent.Add(1)
					}
				}
				select {
				case <-ticker.C:
				case <-failed:
					return
				}
			}
		}()
	}
	if audio != nil && sends {
		next := oggPackets(filepath.Join(*dir, "audio.ogg"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			ticker := time.NewTicker(20 * time.Millisecond)
			defer ticker.Stop()
			for time.Now().Before(end) {
				packet, err := next()
				if err != nil {
					fail(1, "reading audio: %v", err)
				}
				if err := audio.WriteSample(media.Sample{Data: packet, Duration: 20 * time.Millisecond}); err == nil {
					audioSent.Add(1)
				}
				select {
				case <-ticker.C:
				case <-failed:
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	if !sends {
		time.Sleep(time.Until(end))
	}
	<-done

	sent := map[string]any{"audio": audioSent.Load()}
	plis := map[string]any{}
	for _, l := range layers {
		sent[l.rid] = l.sent.Load()
		plis[l.rid] = l.plis.Load()
	}
	say(map[string]any{"sent": sent})
	say(map[string]any{"pli": plis})
	resp, _, err = request("DELETE", location.String(), nil, nil)
	if err != nil {
		fail(1, "DELETE: %v", err)
	}
	say(map[string]any{"delete": resp.StatusCode})
	if resp.StatusCode != http.StatusOK {
		os.Exit(1)
	}
}

// Counts the keyframe requests (PLI, FIR) the server sends for one encoding.
func countPLIs(sender *webrtc.RTPSender, rid string, l *layer) {
	for {
		var packets []rtcp.Packet
		var err error
		if rid == "" {
			packets, _, err = sender.ReadRTCP()
		} else {
			packets, _, err = sender.ReadSimulcastRTCP(rid)
		}
		if err != nil {
			return
		}
		for _, p := range packets {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				l.plis.Add(1)
			}
		}
	}
}
