//! `model::fetch` over HTTPS's code path, against a server on 127.0.0.1 (plain HTTP: the
//! published models' URLs are https, the download code is the same): a file is accepted only
//! with its pinned hash, never left half-written, and never larger than its pinned size.

use cocoon_engine::model::{fetch, KnownModel, ModelError, Source};
use sha2::{Digest, Sha256};

const WEIGHTS: &[u8] = b"GGUF pretend weights, 40 bytes long.....";

/// Serves `WEIGHTS` at /good, other bytes at /other, twice the bytes at /long, the first ten
/// at /short, 404 elsewhere.
async fn server() -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/good", get(|| async { WEIGHTS }))
        .route("/other", get(|| async { vec![b'x'; WEIGHTS.len()] }))
        .route("/long", get(|| async { [WEIGHTS, WEIGHTS].concat() }))
        .route("/short", get(|| async { &WEIGHTS[..10] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn model(url: String) -> KnownModel {
    KnownModel {
        short: "test",
        name: "Test-Model",
        model_type: "test",
        source: Source::Https {
            url: Box::leak(url.into_boxed_str()),
        },
        file: "test.gguf",
        sha256: Box::leak(hex::encode(Sha256::digest(WEIGHTS)).into_boxed_str()),
        size: WEIGHTS.len() as u64,
    }
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

// fetch blocks its caller, so the test server needs a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_is_kept_only_with_its_pinned_hash() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();

    let got = fetch(&model(format!("{base}/good")), dir.path()).unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), WEIGHTS);
    assert_eq!(got.identity.name, "Test-Model");
    assert_eq!(leftovers(dir.path()), vec!["test.gguf".to_string()]);
    // Already there with the right hash: no download (the URL is dead now).
    let again = fetch(&model(format!("{base}/missing")), dir.path()).unwrap();
    assert_eq!(again.path, got.path);

    let empty = tempfile::tempdir().unwrap();
    match fetch(&model(format!("{base}/other")), empty.path()) {
        Err(ModelError::HashMismatch { expected, .. }) => {
            assert_eq!(expected, hex::encode(Sha256::digest(WEIGHTS)))
        }
        other => panic!("wrong bytes accepted: {other:?}"),
    }
    match fetch(&model(format!("{base}/long")), empty.path()) {
        Err(e @ ModelError::Fetch { .. }) => {
            let want = format!("more than the {} bytes", WEIGHTS.len());
            assert!(e.to_string().contains(&want), "{e}")
        }
        other => panic!("an oversized file accepted: {other:?}"),
    }
    match fetch(&model(format!("{base}/short")), empty.path()) {
        Err(e @ ModelError::Fetch { .. }) => {
            let want = format!("ended after 10 of {} bytes", WEIGHTS.len());
            assert!(e.to_string().contains(&want), "{e}")
        }
        other => panic!("a cut-off file accepted: {other:?}"),
    }
    match fetch(&model(format!("{base}/missing")), empty.path()) {
        Err(e @ ModelError::Fetch { .. }) => {
            let e = e.to_string();
            assert!(e.contains("/missing") && e.contains("404"), "{e}")
        }
        other => panic!("a 404 accepted: {other:?}"),
    }
    // Nothing half-written is left behind by any of the refusals.
    assert!(
        leftovers(empty.path()).is_empty(),
        "{:?}",
        leftovers(empty.path())
    );
}
