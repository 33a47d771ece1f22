//! The service under a flood of idle RTMP connections, more than it has file
//! descriptors: the bounds on connections that have not published keep it
//! from running out, so the live stream, the API and new publishes go on.

mod common;

use common::service::{Harness, NodeProcess};
use livekit_api::services::ingress::{CreateIngressOptions, IngressClient, IngressListFilter};
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::time::{Duration, Instant};

const NOFILE: usize = 256;

fn create(client: &IngressClient, rt: &tokio::runtime::Runtime, room: &str) -> proto::IngressInfo {
    rt.block_on(client.create_ingress(
        proto::IngressInput::RtmpInput,
        CreateIngressOptions {
            name: room.into(),
            room_name: room.into(),
            participant_identity: format!("{room}-publisher"),
            ..Default::default()
        },
    ))
    .expect("create")
}

fn status(client: &IngressClient, rt: &tokio::runtime::Runtime, id: &str) -> Option<Status> {
    rt.block_on(client.list_ingress(IngressListFilter::IngressId(id.into())))
        .ok()?
        .into_iter()
        .next()?
        .state
        .and_then(|s| Status::try_from(s.status).ok())
}

fn wait_publishing(client: &IngressClient, rt: &tokio::runtime::Runtime, id: &str) {
    let live = common::wait_for(Duration::from_secs(20), || {
        (status(client, rt, id) == Some(Status::EndpointPublishing)).then_some(())
    });
    assert!(live.is_some(), "{id} never reached the room");
}

/// RTP packets the node has sent to rooms so far (its metrics).
fn packets_sent(http_port: u16) -> u64 {
    let metrics = common::http_get(http_port, "/metrics").expect("metrics answer");
    metrics
        .lines()
        .filter(|l| l.starts_with("livekit_ingress_sent_packets_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_flood_beyond_the_descriptor_limit_leaves_streams_and_the_api_serving() {
    let h = Harness::start();
    let node = NodeProcess::start_with(
        &h,
        "flooded",
        &["prlimit", &format!("--nofile={NOFILE}:{NOFILE}")],
        "rtmp_limits:\n  max_pending_connections: 64\n  max_pending_per_address: 8\n",
    );
    let client = node.client();
    let live = create(&client, &h.rt, "flood-live");
    let mut streaming = Harness::publish_to(node.rtmp_port, &live.stream_key, 60);
    wait_publishing(&client, &h.rt, &live.ingress_id);

    // Twice the descriptors the node has, from 75 addresses, all kept open.
    let mut flood = Vec::new();
    let started = Instant::now();
    for i in 0..2 * NOFILE {
        let from = [127, 0, 1 + (i / 8 / 250) as u8, 1 + (i / 8 % 250) as u8];
        if let Some(c) = common::connect_from(from, node.rtmp_port) {
            flood.push(c);
        }
    }
    eprintln!(
        "{} of {} flood connections made in {:?}; the node holds {} files",
        flood.len(),
        2 * NOFILE,
        started.elapsed(),
        open_files(node.pid())
    );
    assert!(flood.len() > NOFILE, "the flood outnumbers the descriptors");

    // Under the flood: little CPU, descriptors to spare, the live stream
    // still sending, the API and health answering.
    let (cpu, sent) = (cpu_seconds(node.pid()), packets_sent(node.http_port));
    std::thread::sleep(Duration::from_secs(3));
    let cpu = (cpu_seconds(node.pid()) - cpu) / 3.0;
    let sent = packets_sent(node.http_port) - sent;
    let files = open_files(node.pid());
    eprintln!("under the flood: {cpu:.2} core, {sent} packets sent in 3 s, {files} files open");
    assert!(files < NOFILE - 32, "{files} files open of {NOFILE}");
    assert!(sent > 100, "the live stream kept sending ({sent} packets)");
    assert!(common::http_get_ok(node.http_port, "/health"), "health");
    assert_eq!(
        status(&client, &h.rt, &live.ingress_id),
        Some(Status::EndpointPublishing)
    );
    // A stream that flows costs ~0.4 core here; idle connections add little.
    assert!(cpu < 1.0, "{cpu:.2} core under the flood");

    // Once the flood is gone, a new publish gets in.
    drop(flood);
    let second = create(&client, &h.rt, "flood-second");
    let mut newcomer = Harness::publish_to(node.rtmp_port, &second.stream_key, 60);
    wait_publishing(&client, &h.rt, &second.ingress_id);
    for ffmpeg in [&mut streaming, &mut newcomer] {
        let _ = ffmpeg.kill();
        let _ = ffmpeg.wait();
    }
    assert!(
        node.log().contains(&format!("open files limit: {NOFILE}")),
        "the node raised its soft limit to the hard one"
    );
}
