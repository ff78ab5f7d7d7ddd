//! The proxy's ledger failing mid-run (here: the process out of file descriptors when a group
//! commit needs a second handle on the file). The answer being recorded gets a clear error, no
//! role panics, the proxy refuses new work until it restarts, and after the restart every
//! answer the app received is billed exactly once and the failed one not at all.
//!
//! Alone in its test binary: it lowers the whole process's open-file limit.

use std::sync::Arc;

use cocoon_engine::engine::Engine;
use cocoon_engine::fake::{FakeEngine, FAKE_MODEL};
use cocoon_localnet::{LocalNet, LocalNetConfig};
use rustix::process::{getrlimit, setrlimit, Resource};

fn config(dir: &std::path::Path) -> LocalNetConfig {
    LocalNetConfig::fake(
        dir,
        vec![Arc::new(FakeEngine::default()) as Arc<dyn Engine>],
    )
}

/// One non-streamed request over `http`'s pooled connection: status and body.
async fn ask(http: &reqwest::Client, net: &LocalNet) -> (u16, String) {
    let body = serde_json::json!({"model": FAKE_MODEL,
        "messages": [{"role": "user", "content": "hi"}]});
    let r = http
        .post(format!("{}/chat/completions", net.info.base_url))
        .bearer_auth(&net.info.api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// An HTTP/1.1 keep-alive connection to the app's API, opened before the descriptors run out,
/// so a request on it needs no new one on our side (a pooled client may open another).
struct Conn(tokio::io::BufReader<tokio::net::TcpStream>);

impl Conn {
    async fn open(net: &LocalNet) -> Conn {
        let addr = net
            .info
            .base_url
            .trim_start_matches("http://")
            .trim_end_matches("/v1");
        Conn(tokio::io::BufReader::new(
            tokio::net::TcpStream::connect(addr).await.unwrap(),
        ))
    }

    /// One non-streamed chat request: status and body.
    async fn ask(&mut self, net: &LocalNet) -> (u16, String) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let body = serde_json::json!({"model": FAKE_MODEL,
            "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: local\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            net.info.api_key,
            body.len()
        );
        let r = &mut self.0;
        r.get_mut().write_all(head.as_bytes()).await.unwrap();
        r.get_mut().write_all(body.as_bytes()).await.unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            r.read_line(&mut line).await.unwrap();
            let h = line.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            chunked |= h == "transfer-encoding: chunked";
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                r.read_line(&mut line).await.unwrap();
                let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                r.read_exact(&mut chunk).await.unwrap();
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..size]);
            }
        } else {
            out.resize(length, 0);
            r.read_exact(&mut out).await.unwrap();
        }
        (status, String::from_utf8(out).unwrap())
    }
}

fn charged(net: &LocalNet) -> u64 {
    net.proxy
        .proxy
        .totals()
        .clients
        .get(&net.client.owner())
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_at_a_commit_is_a_clear_error_and_nothing_is_billed_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNet::start(config(dir.path())).await.unwrap();
    let mut conn = Conn::open(&net).await;
    for _ in 0..2 {
        assert_eq!(conn.ask(&net).await.0, 200);
    }
    assert_eq!(charged(&net), 2 * 134);

    // No descriptor left: every connection is already open (the app's too), so the request
    // runs; its commit cannot open the ledger's second handle. The limit is set below
    // every descriptor but the standard three: a descriptor a finishing task frees while the
    // request runs has a number above the limit and cannot be handed out again (a limit at the
    // open count let the commit take such a one, twice in CI).
    let normal = getrlimit(Resource::Nofile);
    let mut exhausted = normal;
    exhausted.current = Some(3);
    setrlimit(Resource::Nofile, exhausted).unwrap();
    // Fill any free numbers below the limit too (a closed standard descriptor), and keep taking
    // any that is freed there while the request runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let filler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match std::fs::File::open("/dev/null") {
                    Ok(f) => held.push(f),
                    Err(_) => std::thread::yield_now(),
                }
            }
        })
    };
    while std::fs::File::open("/dev/null").is_ok() {
        std::thread::yield_now();
    }
    let (status, body) = conn.ask(&net).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    filler.join().unwrap();
    setrlimit(Resource::Nofile, normal).unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("could not record this answer") && body.contains("ledger"),
        "{body}"
    );

    // The proxy refuses new work, saying why, until it restarts; nothing more was billed.
    let (status, body) = conn.ask(&net).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("cannot record charges until it restarts"),
        "{body}"
    );
    assert_eq!(charged(&net), 2 * 134);
    let (client, proxy) = (net.client.owner(), net.proxy.proxy.address());
    let mut net = net;
    net.stop();
    drop(net);

    // Restarted: the answer that failed is not billed (its record was never sealed), the two
    // the app received are, once; and the proxy serves again.
    let net = LocalNet::start(config(dir.path())).await.unwrap();
    assert_eq!(
        (net.client.owner(), net.proxy.proxy.address()),
        (client, proxy)
    );
    assert_eq!(charged(&net), 2 * 134);
    let http = reqwest::Client::new();
    assert_eq!(ask(&http, &net).await.0, 200);
    assert_eq!(charged(&net), 3 * 134);
    let earned: u64 = net.proxy.proxy.totals().workers.values().sum();
    assert_eq!(
        earned,
        3 * 134,
        "the worker is credited exactly what was billed"
    );
}
