//! The `cocoon attest` commands as a user runs them.

use std::path::Path;
use std::process::{Command, Output};

fn cocoon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(args)
        .output()
        .expect("runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn gen(dir: &Path, name: &str, extra: &[&str]) -> String {
    let out = dir.to_str().unwrap();
    let mut args = vec![
        "attest", "gen-cert", "--tee", "fake", "--name", name, "--out", out,
    ];
    args.extend_from_slice(extra);
    let o = cocoon(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    dir.join(format!("{name}.cert.pem"))
        .to_str()
        .unwrap()
        .to_string()
}

const MRTD: &str = "111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111";

#[test]
fn gen_cert_writes_both_files_and_inspect_shows_the_measurements() {
    let dir = tempfile::tempdir().unwrap();
    let cert = gen(dir.path(), "w1", &["--mrtd", MRTD]);
    assert!(dir.path().join("w1.key.pem").exists());
    let o = cocoon(&["attest", "inspect", &cert, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["quote"]["fake"], true);
    assert_eq!(v["quote"]["bound_to_claims"], true);
    assert_eq!(v["quote"]["measurements"]["mrtd"], MRTD);
    // COCOON's claims: the bare key, which the quote's report data is SHA-512 of.
    assert_eq!(v["claims"]["reference_form"], true);
    assert_eq!(v["claims"]["public_key"], v["public_key"]);
    assert_eq!(
        v["not_after"].as_u64().unwrap() - v["not_before"].as_u64().unwrap(),
        86_400
    );
    let text = stdout(&cocoon(&["attest", "inspect", &cert]));
    assert!(text.contains("FAKE TDX"), "{text}");
    assert!(text.contains(MRTD), "{text}");
}

#[test]
fn verify_accepts_under_fake_tdx_and_refuses_under_tdx() {
    let dir = tempfile::tempdir().unwrap();
    let cert = gen(dir.path(), "w1", &[]);
    let o = cocoon(&["attest", "verify", &cert, "--policy", "fake_tdx", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tee"], "fake_tdx");
    let image_hash = v["image_hash"].as_str().unwrap().to_string();

    let o = cocoon(&["attest", "verify", &cert, "--policy", "tdx"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("fake TDX quote refused"),
        "{}",
        stderr(&o)
    );

    let o = cocoon(&[
        "attest",
        "verify",
        &cert,
        "--policy",
        "fake_tdx",
        "--allow-image-hash",
        &image_hash,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let other = "00".repeat(32);
    let o = cocoon(&[
        "attest",
        "verify",
        &cert,
        "--policy",
        "fake_tdx",
        "--allow-image-hash",
        &other,
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is not in the allow-list"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn verify_judges_validity_at_the_given_time() {
    let dir = tempfile::tempdir().unwrap();
    let cert = gen(dir.path(), "w1", &["--validity-secs", "60"]);
    let later = (cocoon_now() + 3600).to_string();
    let o = cocoon(&[
        "attest", "verify", &cert, "--policy", "any", "--now", &later,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("certificate expired"), "{}", stderr(&o));
}

fn cocoon_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = cocoon(&[
        "attest", "gen-cert", "--tee", "fake", "--name", "x", "--out", out, "--mrtd", "abcd",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--mrtd"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("expected 96 hex digits"),
        "{}",
        stderr(&o)
    );

    let o = cocoon(&["attest", "verify", "/nonexistent.pem", "--policy", "any"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent.pem"), "{}", stderr(&o));

    let o = cocoon(&["attest", "verify", "/dev/null", "--policy", "sgx"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown policy"), "{}", stderr(&o));
}

#[test]
fn gen_cert_tdx_fails_clearly_without_tdx() {
    if Path::new("/sys/kernel/config/tsm/report").exists() {
        return; // a real TDX guest: this test is about machines without one
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = cocoon(&[
        "attest", "gen-cert", "--tee", "tdx", "--name", "x", "--out", out,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no TDX here"), "{}", stderr(&o));
    assert!(!dir.path().join("x.cert.pem").exists());
}

/// Starts `cocoon attest serve --once` on a free port with `extra` flags;
/// returns the process, its address and the rest of its output lines.
fn spawn_serve(
    extra: &[&str],
) -> (
    std::process::Child,
    String,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let mut serve = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["attest", "serve", "--listen", "127.0.0.1:0", "--once"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(serve.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.strip_prefix("listening on ").unwrap().to_string();
    (serve, addr, lines)
}

#[test]
fn serve_and_connect_verify_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let server_cert = gen(dir.path(), "server", &["--mrtd", MRTD]);
    let server_key = dir.path().join("server.key.pem");
    let key = server_key.to_str().unwrap();
    let (mut serve, addr, lines) = spawn_serve(&[
        "--pow-difficulty",
        "12",
        "--cert",
        &server_cert,
        "--key",
        key,
    ]);
    let o = cocoon(&["attest", "connect", &addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    let client_view = stdout(&o);
    assert!(
        client_view.contains("claims:       the bare key (COCOON's form)"),
        "{client_view}"
    );
    assert!(client_view.contains(MRTD), "{client_view}");
    let server_view: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(serve.wait().unwrap().success());
    assert!(
        server_view
            .iter()
            .any(|l| l.contains("claims:       the bare key (COCOON's form)")),
        "{server_view:?}"
    );
}

#[test]
fn connect_refuses_a_server_outside_its_allow_list() {
    let (mut serve, addr, _lines) = spawn_serve(&["--pow-difficulty", "8"]);
    let o = cocoon(&["attest", "connect", &addr, "--allow-mrtd", MRTD]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("MRTD"), "{}", stderr(&o));
    assert!(!serve.wait().unwrap().success());
}

#[test]
fn demo_runs_end_to_end() {
    let o = cocoon(&["attest", "demo"]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("demo ok"), "{}", stdout(&o));
}

#[test]
fn bench_attest_prints_json_with_ratios() {
    let o = cocoon(&["bench", "attest", "--iterations", "20", "--handshakes", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "verify_cert_uncached_us",
        "verify_cert_cached_us",
        "cache_speedup",
        "handshake_speedup",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
}
