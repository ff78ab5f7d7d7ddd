//! `cargo run --release -p cocoon-localnet --example bench_network [REQUESTS] [CONCURRENCY]`:
//! the network benchmark as JSON without building llama.cpp (same as `cocoon bench network`).

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let requests = args.next().and_then(|a| a.parse().ok()).unwrap_or(3000);
    let concurrency = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("cocoon-bench-{}", std::process::id()));
    let report = cocoon_localnet::bench::run(&dir, requests, concurrency, None)
        .await
        .expect("benchmark");
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
