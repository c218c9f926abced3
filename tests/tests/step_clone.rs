//! `clone-lxc SOURCE SNAPSHOT TARGET` against pve-sim: full clone from the exact snapshot, the
//! target's own settings (MAC, IP, memory, features), inherited GPU lines stripped for a
//! GPU-less target, idempotent convergence, and failures with the right exit codes.

use phoenix_e2e::Host;

const GPU_LINES: &str = "lxc.cgroup2.devices.allow: c 195:* rwm\n\
lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n\
lxc.mount.entry: /dev/net/tun dev/net/tun none bind,create=file\n";

/// CT 900 created, given GPU passthrough lines, stopped, and snapshotted as `base-snapshot`.
fn host_with_template() -> Host {
    let host = Host::reference();
    host.run("create-lxc", ["900"]).ok();
    host.pct(&["stop", "900"]).ok();
    let p = host.path("/etc/pve/lxc/900.conf");
    let mut conf = std::fs::read_to_string(&p).unwrap();
    conf.push_str(GPU_LINES);
    std::fs::write(&p, conf).unwrap();
    host.pct(&["snapshot", "900", "base-snapshot"]).ok();
    host
}

fn no_mutations(host: &Host, mark: usize) {
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
}

#[test]
fn clone_applies_target_settings_and_strips_gpu_lines() {
    let host = host_with_template();
    host.run("clone-lxc", ["900", "base-snapshot", "902"]).ok();
    let conf = host.conf_main(902);
    for want in [
        "hostname: BaseTemplateDocker",
        "memory: 2048",
        "features: nesting=1",
        "hwaddr=52:54:00:AA:BB:CE",
        "ip=10.0.0.202/24",
    ] {
        assert!(conf.contains(want), "missing `{want}` in\n{conf}");
    }
    assert!(!conf.contains("nvidia"), "GPU lines inherited:\n{conf}");
    assert!(
        conf.contains("lxc.mount.entry: /dev/net/tun"),
        "a non-GPU line was removed:\n{conf}"
    );
    assert!(host.is_running(902));
    let clone: Vec<_> = host
        .journal()
        .into_iter()
        .filter(|e| e.subcommand() == "clone")
        .collect();
    assert_eq!(clone.len(), 1);
    let argv = clone[0].argv.join(" ");
    assert!(
        argv.contains("--snapname base-snapshot") && argv.contains("--full 1"),
        "{argv}"
    );
    // The source keeps its lines.
    assert!(host.conf_main(900).contains("nvidia"));

    let mark = host.journal_mark();
    host.run("clone-lxc", ["900", "base-snapshot", "902"]).ok();
    no_mutations(&host, mark);
}

#[test]
fn existing_target_converges_only_what_differs() {
    let host = host_with_template();
    host.run("clone-lxc", ["900", "base-snapshot", "902"]).ok();
    host.pct(&["set", "902", "--memory", "4096"]).ok();
    let mark = host.journal_mark();
    host.run("clone-lxc", ["900", "base-snapshot", "902"]).ok();
    assert_eq!(host.mutating_since(mark), ["pct set 902 --memory 2048"]);
    assert!(host.conf_main(902).contains("memory: 2048"));
}

#[test]
fn gpu_target_keeps_lines_and_warns_about_unprivileged() {
    let host = host_with_template();
    // 901 has GPUs and unprivileged=false; 900 is unprivileged.
    let r = host.run("clone-lxc", ["900", "base-snapshot", "901"]).ok();
    assert!(host.conf_main(901).contains("/dev/nvidia0"));
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("unprivileged"),
        "{}",
        r.stderr
    );
}

#[test]
fn missing_source_or_snapshot_exits_3_naming_them() {
    let host = Host::reference();
    let r = host
        .run("clone-lxc", ["900", "base-snapshot", "902"])
        .expect_code(3);
    assert!(r.stderr.contains("900"), "{}", r.stderr);

    let host = host_with_template();
    host.pct(&["snapshot", "900", "base-snapshot2"]).ok();
    let mark = host.journal_mark();
    // `base-snap` is a prefix of existing names, not a snapshot: exact match only.
    let r = host
        .run("clone-lxc", ["900", "base-snap", "902"])
        .expect_code(3);
    assert!(r.stderr.contains("base-snap'"), "{}", r.stderr);
    no_mutations(&host, mark);
    assert!(host.conf(902).is_none());
}

#[test]
fn bad_input_exits_2_and_changes_nothing() {
    let host = host_with_template();
    let mark = host.journal_mark();
    let pwned = host.path("/pwned");
    let evil = format!("x'; touch {}; '", pwned.display());
    host.run("clone-lxc", ["900", &evil, "902"]).expect_code(2);
    host.run("clone-lxc", ["900", "base-snapshot", "999"])
        .expect_code(2);
    host.run("clone-lxc", ["900", "base-snapshot"])
        .expect_code(2);
    assert!(!pwned.exists());
    no_mutations(&host, mark);
}

#[test]
fn pct_clone_failure_exits_4_and_leaves_nothing_behind() {
    let host = host_with_template();
    host.set_faults("pct clone 902\n");
    let mark = host.journal_mark();
    let r = host
        .run("clone-lxc", ["900", "base-snapshot", "902"])
        .expect_code(4);
    assert!(r.stderr.contains("pct clone"), "{}", r.stderr);
    assert!(host.conf(902).is_none());
    assert!(!host.conf_main(900).contains("lock:"));
    assert_eq!(host.mutating_since(mark).len(), 1, "only the failed clone");
}

#[test]
fn dry_run_prints_the_clone_and_settings() {
    let host = host_with_template();
    let mark = host.journal_mark();
    let r = host
        .run("clone-lxc", ["900", "base-snapshot", "902", "--dry-run"])
        .ok();
    assert!(
        r.stdout.contains("would run: pct clone 900 902"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("would run: pct set 902"), "{}", r.stdout);
    assert!(!r.stdout.contains("pct resize"), "{}", r.stdout);
    no_mutations(&host, mark);
    assert!(host.conf(902).is_none());
    // 910 asks 128 GB of 900's 32 GB.
    let r = host
        .run("clone-lxc", ["900", "base-snapshot", "910", "--dry-run"])
        .ok();
    assert!(
        r.stdout.contains("would run: pct resize 910 rootfs 128G"),
        "{}",
        r.stdout
    );
    no_mutations(&host, mark);
    assert!(host.conf(910).is_none());
}

#[test]
fn failed_set_after_clone_exits_4_and_a_rerun_converges() {
    let host = host_with_template();
    host.set_faults("pct set 902\n");
    let r = host
        .run("clone-lxc", ["900", "base-snapshot", "902"])
        .expect_code(4);
    assert!(
        r.stderr.contains("CT 902") && r.stderr.contains("pct set"),
        "{}",
        r.stderr
    );
    host.set_faults("");
    host.run("clone-lxc", ["900", "base-snapshot", "902"]).ok();
    let conf = host.conf_main(902);
    assert!(
        conf.contains("hwaddr=52:54:00:AA:BB:CE") && conf.contains("features: nesting=1"),
        "{conf}"
    );
    assert!(!conf.contains("nvidia"), "{conf}");
    assert!(host.is_running(902));
}

/// The `hwaddr=` of a CT's `net0`.
fn mac_of(host: &Host, ctid: u32) -> String {
    let conf = host.conf_main(ctid);
    let net0 = conf
        .lines()
        .find(|l| l.starts_with("net0:"))
        .unwrap_or_else(|| panic!("no net0 in\n{conf}"));
    net0.split(',')
        .find_map(|p| p.strip_prefix("hwaddr="))
        .unwrap_or_else(|| panic!("no hwaddr in {net0}"))
        .to_string()
}

#[test]
fn a_clone_without_mac_address_keeps_its_mac() {
    let host = host_with_template();
    host.edit_lxc_config(|c| {
        c["lxc_configs"]["902"]
            .as_object_mut()
            .unwrap()
            .remove("mac_address");
    });
    host.run("clone-lxc", ["900", "base-snapshot", "902"]).ok();
    let mac = mac_of(&host, 902);
    // Not the source's: Proxmox gives the clone its own.
    assert_ne!(mac, mac_of(&host, 900));

    let mark = host.journal_mark();
    host.run("clone-lxc", ["900", "base-snapshot", "902"]).ok();
    no_mutations(&host, mark);
    assert_eq!(mac_of(&host, 902), mac);

    // Another change to net0 keeps the MAC too.
    host.edit_lxc_config(|c| {
        c["lxc_configs"]["902"]["network_config"]["ip"] = "10.0.0.232/24".into();
        c["lxc_configs"]["902"]["static_ip"] = "10.0.0.232/24".into();
    });
    let mark = host.journal_mark();
    host.run("clone-lxc", ["900", "base-snapshot", "902"]).ok();
    let set = host.mutating_since(mark);
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].contains(&format!("hwaddr={mac}")), "{set:?}");
    assert_eq!(mac_of(&host, 902), mac);
    assert!(host.conf_main(902).contains("ip=10.0.0.232/24"));
}

/// `size=` of a CT's rootfs.
fn rootfs_size(host: &Host, ctid: u32) -> String {
    let conf = host.conf_main(ctid);
    let rootfs = conf
        .lines()
        .find(|l| l.starts_with("rootfs:"))
        .unwrap_or_else(|| panic!("no rootfs in\n{conf}"));
    rootfs
        .split(',')
        .find_map(|p| p.strip_prefix("size="))
        .unwrap_or_else(|| panic!("no size in {rootfs}"))
        .to_string()
}

#[test]
fn clones_grow_their_root_disk_to_storage_size_gb() {
    let host = host_with_template();
    assert_eq!(rootfs_size(&host, 900), "32G");
    // The reference asks 128 GB for 910 and 100 GB for 950 (their chains start at 900's 32 GB).
    for (ct, size) in [(910, "128G"), (950, "100G")] {
        let id = ct.to_string();
        let mark = host.journal_mark();
        host.run("clone-lxc", ["900", "base-snapshot", &id]).ok();
        assert_eq!(rootfs_size(&host, ct), size);
        let resizes: Vec<String> = host
            .mutating_since(mark)
            .into_iter()
            .filter(|c| c.starts_with("pct resize"))
            .collect();
        assert_eq!(resizes, [format!("pct resize {id} rootfs {size}")]);
        // Converged: a second run resizes nothing.
        let mark = host.journal_mark();
        host.run("clone-lxc", ["900", "base-snapshot", &id]).ok();
        no_mutations(&host, mark);
    }
    assert_eq!(rootfs_size(&host, 900), "32G", "the source is untouched");
}

#[test]
fn a_clone_asking_less_than_its_source_is_a_config_error() {
    let host = host_with_template();
    // Validation: an explicit clone source with a bigger disk.
    host.edit_lxc_config(|c| {
        c["lxc_configs"]["902"]["storage_size_gb"] = 16.into();
    });
    let r = host.run("establish", ["--validate"]).expect_code(2);
    assert!(
        r.stdout.contains("storage_size_gb") || r.stderr.contains("storage_size_gb"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    // The step checks the real source too, before it changes anything: 910 asks 16 GB of a
    // source whose snapshot has 32 GB (its block names 902, which is not what is cloned here).
    host.edit_lxc_config(|c| {
        c["lxc_configs"]["902"]["storage_size_gb"] = 32.into();
        c["lxc_configs"]["910"]["storage_size_gb"] = 32.into();
    });
    host.run("establish", ["--validate"]).ok();
    host.pct(&["resize", "900", "rootfs", "40G"]).ok();
    host.pct(&["snapshot", "900", "big-snapshot"]).ok();
    let mark = host.journal_mark();
    let r = host
        .run("clone-lxc", ["900", "big-snapshot", "910"])
        .expect_code(2);
    assert!(
        r.stderr.contains("storage_size_gb") && r.stderr.contains("40G"),
        "{}",
        r.stderr
    );
    no_mutations(&host, mark);
    assert!(host.conf(910).is_none());
}
