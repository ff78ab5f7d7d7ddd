//! `cocoon model …` and `cocoon engine serve-fake` as a user runs them.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

fn cocoon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(args)
        .output()
        .expect("runs")
}

#[test]
fn model_hash_prints_name_at_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.model.gguf");
    std::fs::write(&file, b"not really weights").unwrap();
    let o = cocoon(&["model", "hash", file.to_str().unwrap()]);
    assert!(o.status.success());
    // The name is the file stem (dots become dashes); the hash is sha256 of the bytes.
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        out.trim(),
        "tiny-model@6bc9509551b471fd7d25a12b99a9d825e866b1ad02f9f9b5071757ab66d30e68"
    );
}

#[test]
fn model_list_shows_gguf_files_and_fetch_refuses_unknown_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.gguf"), b"x").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    let o = cocoon(&[
        "model",
        "list",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert!(v[0]["identity"]
        .as_str()
        .unwrap()
        .starts_with("a@2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"));

    let o = cocoon(&["model", "fetch", "gpt5"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown model `gpt5`") && err.contains("smollm2"),
        "{err}"
    );

    let o = cocoon(&["model", "hash", "/nonexistent.gguf"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.gguf"));
}

#[test]
fn engine_serve_fake_answers_over_http() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["engine", "serve-fake", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("OpenAI-compatible API on http://")
        .and_then(|s| s.strip_suffix("/v1"))
        .unwrap()
        .to_string();
    let body = r#"{"model":"fake-benchmark-model","prompt":"x"}"#;
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""completion_tokens":100"#), "{resp}");
}
