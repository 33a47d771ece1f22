//! What a WHIP offer asks for, read from its SDP: which media it sends, the
//! rids of its simulcast video, and, set against str0m's answer, the media
//! the answer could not take (a codec the room does not carry), named for
//! the client's error.

/// The m-lines of an SDP, each as its lines (the `m=` line first).
fn sections(sdp: &str) -> Vec<Vec<&str>> {
    let mut sections: Vec<Vec<&str>> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            sections.push(vec![line]);
        } else if let Some(section) = sections.last_mut() {
            section.push(line);
        }
    }
    sections
}

/// The media kind (`video`, `audio`, ...) of a section.
fn kind<'a>(section: &[&'a str]) -> &'a str {
    section
        .first()
        .and_then(|m| m.strip_prefix("m="))
        .and_then(|m| m.split_whitespace().next())
        .unwrap_or_default()
}

/// The section's value of the attribute `a={name}:`, each occurrence.
fn attributes<'a>(section: &'a [&'a str], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    section
        .iter()
        .filter_map(move |l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
}

/// What an offer sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offered {
    pub video: bool,
    pub audio: bool,
    /// The rids of the video's simulcast encodings in the offer's order
    /// (`a=simulcast:send`, else the `a=rid:… send` lines); empty when the
    /// video is one encoding.
    pub rids: Vec<String>,
}

/// Reads what `sdp` (an offer) sends. Only the first video m-line's rids
/// count: a WHIP publish has one video track.
pub fn offered(sdp: &str) -> Offered {
    let sections = sections(sdp);
    let video = sections.iter().find(|s| kind(s) == "video");
    let rids = video.map(|s| rids(s)).unwrap_or_default();
    Offered {
        video: video.is_some(),
        audio: sections.iter().any(|s| kind(s) == "audio"),
        // One rid is no simulcast: its frames are the one video stream.
        rids: if rids.len() > 1 { rids } else { Vec::new() },
    }
}

fn rids(section: &[&str]) -> Vec<String> {
    let sending: Vec<String> = attributes(section, "rid")
        .filter_map(|v| {
            let mut words = v.split_whitespace();
            let rid = words.next()?;
            (words.next() == Some("send")).then(|| rid.to_string())
        })
        .collect();
    // `a=simulcast:send q;h;~f` orders them; `~` marks a paused one (still
    // an encoding), `a,b` alternatives of which the first is taken.
    let ordered: Option<Vec<String>> = attributes(section, "simulcast").find_map(|v| {
        let mut words = v.split_whitespace();
        while let Some(direction) = words.next() {
            let list = words.next()?;
            if direction == "send" {
                return Some(
                    list.split(';')
                        .filter_map(|alt| alt.split(',').next())
                        .map(|rid| rid.trim_start_matches('~').to_string())
                        .filter(|rid| sending.contains(rid))
                        .collect(),
                );
            }
        }
        None
    });
    ordered.unwrap_or(sending)
}

/// The codecs a section offers, as a client would read them: `H264
/// (profile-level-id 42001f)`, `VP9`, ...; retransmission and FEC left out.
fn codecs(section: &[&str]) -> Vec<String> {
    let fmtp = |pt: &str| {
        attributes(section, "fmtp").find_map(|v| {
            let (p, params) = v.split_once(' ')?;
            (p == pt).then_some(params)
        })
    };
    let mut codecs: Vec<String> = Vec::new();
    for v in attributes(section, "rtpmap") {
        let Some((pt, encoding)) = v.split_once(' ') else {
            continue;
        };
        let name = encoding.split('/').next().unwrap_or_default();
        if ["rtx", "red", "ulpfec", "flexfec-03"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        let profile = fmtp(pt).and_then(|params| {
            params
                .split(';')
                .find_map(|p| p.trim().strip_prefix("profile-level-id="))
        });
        let named = match profile {
            Some(plid) if name.eq_ignore_ascii_case("h264") => {
                format!("{name} (profile-level-id {plid})")
            }
            _ => name.to_string(),
        };
        if !codecs.contains(&named) {
            codecs.push(named);
        }
    }
    codecs
}

/// Whether an answer's section takes media: a port other than 0 and a
/// codec in its format list.
fn answered(section: &[&str]) -> bool {
    let mut m = section
        .first()
        .map(|l| l.split_whitespace())
        .into_iter()
        .flatten();
    let port = m.nth(1);
    port.is_some_and(|p| p != "0") && m.nth(1).is_some()
}

/// What the answer takes, for the refusal's text.
const TAKEN: &[(&str, &str)] = &[
    (
        "video",
        "VP8, or H264 constrained baseline (42e0), main (4d00) or high (6400)",
    ),
    ("audio", "Opus"),
];

/// Why the ingress cannot take an offer whose answer is `answer`: for each
/// video or audio m-line the answer refused, what the client offered and
/// what is taken; `None` when every one was answered.
pub fn refused(offer: &str, answer: &str) -> Option<String> {
    let offered = sections(offer);
    let answers = sections(answer);
    let reasons: Vec<String> = offered
        .iter()
        .enumerate()
        .filter_map(|(i, section)| {
            let (_, taken) = TAKEN.iter().find(|(k, _)| *k == kind(section))?;
            if answers.get(i).is_some_and(|a| answered(a)) {
                return None;
            }
            let codecs = codecs(section);
            let offered = if codecs.is_empty() {
                "none".to_string()
            } else {
                codecs.join(", ")
            };
            Some(format!(
                "no {} codec the room takes: offered {offered}; taken: {taken}",
                kind(section)
            ))
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMULCAST: &str = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 103\r\n\
        a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n\
        a=rtpmap:103 rtx/90000\r\na=rid:q send\r\na=rid:h send\r\na=rid:f send\r\n\
        a=simulcast:send f;~h;q\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";

    #[test]
    fn rids_follow_the_simulcast_line() {
        let offered = offered(SIMULCAST);
        assert!(offered.video && offered.audio);
        assert_eq!(offered.rids, ["f", "h", "q"]);
    }

    #[test]
    fn one_rid_or_none_is_one_encoding() {
        let one = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rid:a send\r\n";
        assert_eq!(offered(one).rids, Vec::<String>::new());
        let audio_only = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert_eq!(
            offered(audio_only),
            Offered {
                video: false,
                audio: true,
                rids: vec![]
            }
        );
    }

    #[test]
    fn a_refused_video_line_names_what_was_offered() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 H265/90000\r\n\
            a=rtpmap:97 rtx/90000\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let answer = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        let reason = refused(offer, answer).expect("refused");
        assert!(reason.starts_with("no video codec the room takes: offered H265;"));
        assert_eq!(refused(SIMULCAST, SIMULCAST), None);
    }
}
