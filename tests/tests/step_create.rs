//! `create-lxc CTID` against pve-sim: creates and starts, idempotent, honest dry-run, bad input
//! changes nothing, Proxmox failures exit 4 and leave nothing behind.

use phoenix_e2e::Host;

fn no_mutations(host: &Host, mark: usize) {
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
}

#[test]
fn first_run_creates_and_starts_second_run_changes_nothing() {
    let host = Host::reference();
    let r = host.run("create-lxc", ["900"]).ok();
    assert!(r.stdout.contains("[900]"), "{}", r.stdout);
    let conf = host.conf_main(900);
    for want in [
        "hostname: BaseTemplate",
        "memory: 2048",
        "cores: 2",
        "hwaddr=52:54:00:AA:BB:CC",
        "ip=10.0.0.200/24",
        "gw=10.0.0.1",
        "bridge=vmbr0",
        "rootfs: lxc-disks:subvol-900-disk-0,size=32G",
        "unprivileged: 1",
    ] {
        assert!(conf.contains(want), "missing `{want}` in\n{conf}");
    }
    assert!(
        !conf.contains("features:"),
        "empty features must be omitted\n{conf}"
    );
    assert!(host.is_running(900));
    let create: Vec<_> = host
        .journal()
        .into_iter()
        .filter(|e| e.subcommand() == "create")
        .collect();
    assert_eq!(create.len(), 1);
    assert!(!create[0].argv.iter().any(|a| a == "--hwaddress"));

    let mark = host.journal_mark();
    host.run("create-lxc", ["900"]).ok();
    no_mutations(&host, mark);
    let log = std::fs::read_to_string(host.log_file()).unwrap();
    assert!(
        log.contains("phoenix_hypervisor_create_lxc: [900] pct create 900"),
        "{log}"
    );
}

#[test]
fn existing_stopped_ct_is_started() {
    let host = Host::reference();
    host.run("create-lxc", ["902"]).ok();
    assert!(host.conf_main(902).contains("features: nesting=1"));
    host.pct(&["stop", "902"]).ok();
    let mark = host.journal_mark();
    host.run("create-lxc", ["902"]).ok();
    assert_eq!(host.mutating_since(mark), ["pct start 902"]);
    assert!(host.is_running(902));
}

#[test]
fn existing_ct_is_converged_with_its_block() {
    let host = Host::reference();
    host.run("create-lxc", ["900"]).ok();
    host.edit_lxc_config(|c| {
        c["lxc_configs"]["900"]["memory_mb"] = 4096.into();
        c["lxc_configs"]["900"]["cores"] = 4.into();
    });
    let mark = host.journal_mark();
    let r = host.run("create-lxc", ["900"]).ok();
    assert!(r.stdout.contains("converging"), "{}", r.stdout);
    assert_eq!(
        host.mutating_since(mark),
        ["pct set 900 --memory 4096 --cores 4"]
    );
    let conf = host.conf_main(900);
    assert!(
        conf.contains("memory: 4096\n") && conf.contains("cores: 4\n"),
        "{conf}"
    );
    let mark = host.journal_mark();
    host.run("create-lxc", ["900"]).ok();
    no_mutations(&host, mark);
}

#[test]
fn dry_run_prints_and_changes_nothing() {
    let host = Host::reference();
    let mark = host.journal_mark();
    let r = host.run("create-lxc", ["900", "--dry-run"]).ok();
    assert!(
        r.stdout.contains("would run: pct create 900"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("would run: pct start 900"),
        "{}",
        r.stdout
    );
    no_mutations(&host, mark);
    assert!(host.conf(900).is_none());
}

#[test]
fn unknown_ctid_and_bad_input_exit_2_with_nothing_changed() {
    let host = Host::reference();
    let mark = host.journal_mark();
    let r = host.run("create-lxc", ["999"]).expect_code(2);
    assert!(r.stderr.contains("999"), "{}", r.stderr);
    let r = host.run("create-lxc", ["12"]).expect_code(2);
    assert!(r.stderr.contains("12"), "{}", r.stderr);
    host.run("create-lxc", Vec::<&str>::new()).expect_code(2);
    no_mutations(&host, mark);
    assert!(host.conf(999).is_none());
}

#[test]
fn shell_injection_in_a_name_is_rejected_not_executed() {
    let host = Host::reference();
    let pwned = host.path("/pwned");
    let evil = format!("x'; touch {}; '", pwned.display());
    host.edit_lxc_config(|c| c["lxc_configs"]["900"]["name"] = evil.clone().into());
    let mark = host.journal_mark();
    let r = host.run("create-lxc", ["900"]);
    assert!(!pwned.exists(), "the name was executed");
    // Rejected by validation (exit 2) before any Proxmox call.
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("name"), "{}", r.stderr);
    no_mutations(&host, mark);
    assert!(host.conf(900).is_none());
}

#[test]
fn missing_ostemplate_exits_3() {
    let host = Host::reference();
    host.edit_lxc_config(|c| {
        c["lxc_configs"]["900"]["template"] = "/var/lib/vz/template/cache/missing.tar.zst".into()
    });
    let mark = host.journal_mark();
    let r = host.run("create-lxc", ["900"]).expect_code(3);
    assert!(r.stderr.contains("missing.tar.zst"), "{}", r.stderr);
    no_mutations(&host, mark);
}

#[test]
fn pct_failure_exits_4_and_leaves_nothing_behind() {
    let host = Host::reference();
    host.set_faults("pct create 900\n");
    let r = host.run("create-lxc", ["900"]).expect_code(4);
    assert!(
        r.stderr.contains("900") && r.stderr.contains("pct create"),
        "{}",
        r.stderr
    );
    assert!(host.conf(900).is_none());
    assert!(!host.journal().iter().any(|e| e.subcommand() == "start"));
    // Once the fault is gone the step completes.
    host.set_faults("");
    host.run("create-lxc", ["900"]).ok();
    assert!(host.is_running(900));
}

#[test]
fn failed_pct_start_exits_4() {
    let host = Host::reference();
    host.set_faults("pct start 900 1\n");
    let r = host.run("create-lxc", ["900"]).expect_code(4);
    assert!(
        r.stderr.contains("CT 900") && r.stderr.contains("pct start"),
        "{}",
        r.stderr
    );
    assert!(!host.is_running(900));
    // The next run starts the CT it created.
    host.run("create-lxc", ["900"]).ok();
    assert!(host.is_running(900));
}

#[test]
fn installed_drop_in_path_runs_the_step() {
    let host = Host::reference();
    host.install();
    let step = host.prefix().join("bin/phoenix_hypervisor_create_lxc.sh");
    let r = host.run(step.to_str().unwrap(), ["--help"]).ok();
    assert!(
        r.stdout.contains("phoenix_hypervisor_create_lxc"),
        "{}",
        r.stdout
    );
    host.run(step.to_str().unwrap(), ["900"]).ok();
    assert!(host.is_running(900));
}
