//! `cargo run --release -p cocoon-chain --example bench_chain [N]`: the local chain's
//! throughput as JSON (the same numbers as `cocoon bench chain`).

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let report = cocoon_chain::bench::run(n).expect("benchmark");
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
