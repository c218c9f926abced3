//! Cost of one `pct` invocation against a simulated host: `pct status` and `pct config`
//! repeated N times (default 200, `PCT_BENCH_N` overrides); prints milliseconds per call.
//! Run with `cargo bench -p pve-sim --bench pct_call`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

const TPL: &str = "/fastData/shared-iso/template/cache/ubuntu-24.04-standard_24.04-2_amd64.tar.zst";

fn pct(root: &Path, args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_pct"))
        .args(args)
        .env("PHOENIX_HOST_ROOT", root)
        .output()
        .expect("run pct");
    assert!(
        o.status.success(),
        "pct {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn main() {
    let n: u32 = std::env::var("PCT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("host");
    let o = Command::new(env!("CARGO_BIN_EXE_pve-sim"))
        .args([
            "init",
            "--host-root",
            root.to_str().unwrap(),
            "--storage",
            "lxc-disks:zfspool",
            "--ostemplate",
            TPL,
        ])
        .output()
        .expect("run pve-sim init");
    assert!(
        o.status.success(),
        "init: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    pct(
        &root,
        &[
            "create",
            "100",
            TPL,
            "--storage",
            "lxc-disks",
            "--net0",
            "name=eth0,bridge=vmbr0,ip=dhcp",
        ],
    );
    for (label, args) in [
        ("pct status 100", &["status", "100"][..]),
        ("pct config 100", &["config", "100"][..]),
    ] {
        let t = Instant::now();
        for _ in 0..n {
            pct(&root, args);
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
        println!("{label}: {ms:.2} ms per call ({n} calls)");
    }
}
