//! The network admin guide's commands, copied from `docs/network-admin.md` and run as written
//! (placeholders filled in), so the guide cannot rot.

use std::process::Command;

#[test]
fn the_network_admin_guide_runs_as_written() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/network-admin.md"
    ))
    .unwrap();
    let block = guide
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let script = block
        .replace("<sha256 of the weights>", &"ab".repeat(32))
        .replace("<proxy contract>", &format!("0:{}", "22".repeat(32)))
        .replace("HOST:PORT", "127.0.0.1:9999");
    assert!(
        !script.contains('<'),
        "an unfilled placeholder in the guide:\n{script}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail\ncocoon() {{ \"{}\" \"$@\"; }}\n{script}",
            env!("CARGO_BIN_EXE_cocoon")
        ))
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the guide failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("updated to version 3") && stdout.contains("updated to version 4"),
        "{stdout}"
    );
    let shown = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(["root", "show", "--dir", ".chain"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("qwen3") && shown.contains("127.0.0.1:9999"),
        "{shown}"
    );
}
