//! A hostile peer at the proxy's client port while an honest app uses the network: it floods
//! queries without reading a single answer, holds a crowd of idle connections open, and
//! floods pings. The proxy closes the connection that does not read, keeps its memory
//! bounded, and the app's requests succeed throughout.

use std::sync::Arc;
use std::time::Duration;

use cocoon_engine::engine::Engine;
use cocoon_engine::fake::{FakeEngine, FAKE_MODEL};
use cocoon_localnet::wait::{eventually, when};
use cocoon_localnet::{LocalNet, LocalNetConfig};
use cocoon_net::identity::Identity;
use cocoon_tee::{FakeTdxProvider, Policy, PolicyKind};
use cocoon_wire::client::ClientRequest;
use cocoon_wire::common::Double;
use cocoon_wire::TcpPacket;

const T: Duration = Duration::from_secs(30);

/// This process's resident memory, KiB (the proxy runs in it).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// An attested connection to the proxy's client port, as any stranger can open one.
async fn stranger(net: &LocalNet) -> cocoon_net::Connection {
    let me = Identity::new(
        &FakeTdxProvider::default(),
        "hostile",
        Policy::new(PolicyKind::FakeTdx),
    )
    .unwrap();
    cocoon_net::connect(net.info.proxy_clients, me.client_tls, &me.verifier, 28, T)
        .await
        .unwrap()
}

async fn ask(net: &LocalNet) -> reqwest::StatusCode {
    let body = serde_json::json!({"model": FAKE_MODEL, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    reqwest::Client::new()
        .post(format!("{}/chat/completions", net.info.base_url))
        .bearer_auth(&net.info.api_key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_costs_its_own_connections_not_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LocalNetConfig::fake(
        dir.path(),
        vec![Arc::new(FakeEngine::default()) as Arc<dyn Engine>],
    );
    let net = LocalNet::start(cfg).await.expect("network starts");
    assert_eq!(ask(&net).await, 200);
    let rss_before = rss_kib();

    // A crowd of idle connections, held open.
    let mut crowd = Vec::new();
    for _ in 0..64 {
        crowd.push(stranger(&net).await);
    }

    // Queries (each answered with a refusal) as fast as it can, never reading an answer.
    let mut flooder = stranger(&net).await;
    let flood = tokio::spawn(async move {
        let run = ClientRequest::RunQueryEx {
            model_name: FAKE_MODEL.as_bytes().to_vec(),
            query: vec![0; 64],
            max_coefficient: 1000,
            max_tokens: 16,
            timeout: Double(10.0),
            request_id: [9; 32],
            min_config_version: 0,
            flags: (),
            enable_debug: None,
        };
        let packet = TcpPacket::Packet {
            data: cocoon_wire::encode(&run),
        };
        let mut sent = 0u64;
        // Far more answers than a connection may have waiting (16 MiB).
        while sent < 400_000 && flooder.send(&packet).await.is_ok() {
            sent += 1;
        }
        (flooder, sent)
    });
    // Pings from another stranger, flooded the same way.
    let mut pinger = stranger(&net).await;
    let pings = tokio::spawn(async move {
        let mut sent = 0u64;
        while sent < 100_000 && pinger.send(&TcpPacket::Ping { id: sent }).await.is_ok() {
            sent += 1;
        }
        sent
    });

    // Meanwhile the app's requests succeed.
    for _ in 0..20 {
        assert_eq!(ask(&net).await, 200, "an honest request during the attack");
    }

    let (mut flooder, sent) = tokio::time::timeout(Duration::from_secs(120), flood)
        .await
        .expect("the flood ends")
        .unwrap();
    let pinged = pings.await.unwrap();
    // The proxy dropped what waited for the flooder and closed its connection: reading now
    // finds at most what the sockets held, then the end.
    let closed =
        tokio::time::timeout(T, async { while let Ok(Some(_)) = flooder.recv().await {} }).await;
    assert!(closed.is_ok(), "the connection that never read is closed");
    let rss_after = rss_kib();
    eprintln!(
        "hostile: {sent} queries unread, {pinged} pings, 64 idle connections; \
         RSS {} MiB before, {} MiB after",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(
        rss_after < rss_before + 256 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_eq!(ask(&net).await, 200, "the proxy still serves");
    drop(crowd);
    drop(flooder);
    let clients = || {
        net.proxy
            .proxy
            .metrics
            .peers
            .get_or_create(&cocoon_observe::Kind::of("client"))
            .get()
    };
    eventually("only the app's connection is left at the proxy", T, || {
        when(clients() == 1, clients())
    })
    .await;
}
