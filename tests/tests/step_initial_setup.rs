//! `initial-setup [--force]` against pve-sim: host checks, core directories, the marker, and the
//! failures that must stop the run (exit 3) or bad config (exit 2), each leaving no marker.

use phoenix_e2e::{Host, OSTEMPLATE, fixture};

const MARKER: &str = "/usr/local/phoenix_hypervisor/lib/.phoenix_hypervisor_initialized";
const IMAGES: &str = "/usr/local/phoenix_hypervisor/etc/proxmox_docker_images";

fn host_with(args: &[&str]) -> Host {
    let host = Host::init(args);
    host.install_configs(
        &fixture("upstream-214aa23", "phoenix_hypervisor_config.json"),
        &fixture("upstream-214aa23", "phoenix_lxc_configs.json"),
    );
    host
}

#[test]
fn writes_marker_and_dirs_then_skips_until_forced() {
    let host = Host::reference();
    let mark = host.journal_mark();
    host.run("initial-setup", Vec::<&str>::new()).ok();
    assert!(host.exists(MARKER));
    assert!(host.path(IMAGES).is_dir());
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    let before = std::fs::read_to_string(host.path(MARKER)).unwrap();
    let r = host.run("initial-setup", Vec::<&str>::new()).ok();
    assert!(r.stdout.contains("already initialized"), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(host.path(MARKER)).unwrap(), before);
    let r = host.run("initial-setup", ["--force"]).ok();
    assert!(r.stdout.contains("host checks passed"), "{}", r.stdout);
}

#[test]
fn dry_run_writes_nothing() {
    let host = Host::reference();
    let r = host.run("initial-setup", ["--dry-run"]).ok();
    assert!(r.stdout.contains("would write marker"), "{}", r.stdout);
    assert!(!host.exists(MARKER));
    assert!(!host.path(IMAGES).exists());
}

#[test]
fn driver_mismatch_exits_3_with_both_versions() {
    let host = host_with(&[
        "--storage",
        "lxc-disks:zfspool",
        "--gpus",
        "2",
        "--nvidia-driver",
        "570.148.08",
        "--ostemplate",
        OSTEMPLATE,
    ]);
    let r = host.run("initial-setup", Vec::<&str>::new()).expect_code(3);
    assert!(
        r.stderr.contains("570.148.08") && r.stderr.contains("580.76.05"),
        "{}",
        r.stderr
    );
    assert!(!host.exists(MARKER));
}

#[test]
fn dir_storage_cannot_snapshot_exits_3_naming_the_pool() {
    let host = host_with(&[
        "--storage",
        "lxc-disks:dir",
        "--gpus",
        "2",
        "--nvidia-driver",
        "580.76.05",
        "--ostemplate",
        OSTEMPLATE,
    ]);
    let r = host.run("initial-setup", Vec::<&str>::new()).expect_code(3);
    assert!(
        r.stderr.contains("lxc-disks") && r.stderr.contains("snapshot"),
        "{}",
        r.stderr
    );
    assert!(!host.exists(MARKER));
}

#[test]
fn missing_storage_pool_exits_3() {
    let host = host_with(&["--gpus", "2", "--nvidia-driver", "580.76.05"]);
    let r = host.run("initial-setup", Vec::<&str>::new()).expect_code(3);
    assert!(r.stderr.contains("lxc-disks"), "{}", r.stderr);
    assert!(!host.exists(MARKER));
}

#[test]
fn not_a_proxmox_host_exits_3() {
    let host = Host::reference();
    std::fs::remove_dir_all(host.path("/etc/pve")).unwrap();
    let r = host.run("initial-setup", Vec::<&str>::new()).expect_code(3);
    assert!(r.stderr.contains("not a Proxmox VE host"), "{}", r.stderr);
    assert!(!host.exists(MARKER));
}

#[test]
fn broken_config_exits_2() {
    let host = Host::reference();
    std::fs::write(host.lxc_config_path(), "{ not json").unwrap();
    let r = host.run("initial-setup", Vec::<&str>::new()).expect_code(2);
    assert!(
        r.stderr.contains("phoenix_lxc_configs.json"),
        "{}",
        r.stderr
    );
    assert!(!host.exists(MARKER));
}
