//! `lxc-nvidia CTID` passthrough modes against pve-sim (`behavior.gpu_passthrough`): `auto`
//! picks `devN` entries on PVE 8.4 and raw `lxc.*` lines on 8.0, `dev` refuses 8.0, switching
//! converges (the other form's entries go), clones strip whichever form they inherited, the
//! devices are live inside when the step ends, and a conf edit waits for Proxmox's config lock.

use std::io::Read;
use std::process::Stdio;

use phoenix_e2e::{Host, Run};

/// The devN entries CT 901 (GPUs 0,1) gets on the reference host.
const DEVS_901: [&str; 7] = [
    "dev0: /dev/nvidia0,mode=0666",
    "dev1: /dev/nvidia1,mode=0666",
    "dev2: /dev/nvidiactl,mode=0666",
    "dev3: /dev/nvidia-uvm,mode=0666",
    "dev4: /dev/nvidia-uvm-tools,mode=0666",
    "dev5: /dev/nvidia-caps/nvidia-cap1,mode=0666",
    "dev6: /dev/nvidia-caps/nvidia-cap2,mode=0666",
];

/// The nodes a CT with GPUs 0,1 must see.
const NODES_901: [&str; 6] = [
    "/dev/nvidia0",
    "/dev/nvidia1",
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-caps",
];

fn nvidia(host: &Host, args: &[&str]) -> Run {
    host.run("lxc-nvidia", args)
}

fn set_mode(host: &Host, mode: &str) {
    host.edit_hypervisor_config(|c| c["behavior"]["gpu_passthrough"] = mode.into());
}

/// The reference host on Proxmox VE `version` with CT 901 created and running.
fn host_901(version: &str) -> Host {
    let host = Host::init(&["--reference", "--pve-version", version]);
    host.install_configs(
        &phoenix_e2e::fixture("upstream-214aa23", "phoenix_hypervisor_config.json"),
        &phoenix_e2e::fixture("upstream-214aa23", "phoenix_lxc_configs.json"),
    );
    host.run("create-lxc", ["901"]).ok();
    host
}

fn dev_lines(main: &str) -> Vec<&str> {
    main.lines()
        .filter(|l| {
            l.strip_prefix("dev").is_some_and(|r| {
                r.split(':')
                    .next()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
        })
        .collect()
}

fn raw_gpu_lines(main: &str) -> Vec<&str> {
    main.lines()
        .filter(|l| l.starts_with("lxc.") && (l.contains("nvidia") || l.contains("devices.allow")))
        .collect()
}

/// Every node of `NODES_901` exists inside, and `nvidia-smi` answers.
fn assert_live(host: &Host, ctid: &str) {
    for n in NODES_901 {
        let r = host.exec(ctid, &["test", "-e", n]);
        assert_eq!(r.code, 0, "{n} missing inside CT {ctid}");
    }
    host.exec(ctid, &["nvidia-smi", "-L"]).ok();
}

#[test]
fn auto_uses_devn_on_8_4_and_a_second_run_changes_nothing() {
    let host = host_901("8.4.1");
    let r = nvidia(&host, &["901"]).ok();
    let main = host.conf_main(901);
    assert_eq!(dev_lines(&main), DEVS_901, "{main}\n{}", r.stdout);
    assert!(raw_gpu_lines(&main).is_empty(), "{main}");
    assert!(
        host.journal()
            .iter()
            .any(|e| e.subcommand() == "set" && e.argv.iter().any(|a| a == "--dev0")),
        "devN not set with pct set"
    );
    assert_live(&host, "901");
    let mark = host.journal_mark();
    nvidia(&host, &["901"]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
}

#[test]
fn auto_uses_raw_lines_on_8_0_and_dev_is_refused_there() {
    let host = host_901("8.0.4");
    set_mode(&host, "dev");
    let conf = host.conf(901).unwrap();
    let mark = host.journal_mark();
    let r = nvidia(&host, &["901"]).expect_code(3);
    assert!(
        r.stderr.contains("8.0")
            && r.stderr.contains("8.1")
            && r.stderr.contains("gpu_passthrough"),
        "{}",
        r.stderr
    );
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    assert_eq!(host.conf(901).unwrap(), conf);

    set_mode(&host, "auto");
    nvidia(&host, &["901"]).ok();
    let main = host.conf_main(901);
    assert!(dev_lines(&main).is_empty(), "{main}");
    assert_eq!(raw_gpu_lines(&main).len(), 9, "{main}");
    assert_live(&host, "901");
}

#[test]
fn switching_modes_converges_to_one_form() {
    let host = host_901("8.4.1");
    set_mode(&host, "lxc");
    nvidia(&host, &["901"]).ok();
    assert_eq!(raw_gpu_lines(&host.conf_main(901)).len(), 9);
    assert!(dev_lines(&host.conf_main(901)).is_empty());

    set_mode(&host, "dev");
    nvidia(&host, &["901"]).ok();
    let main = host.conf_main(901);
    assert!(raw_gpu_lines(&main).is_empty(), "raw lines left:\n{main}");
    assert_eq!(dev_lines(&main), DEVS_901, "{main}");
    assert_live(&host, "901");
    let mark = host.journal_mark();
    nvidia(&host, &["901"]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());

    set_mode(&host, "lxc");
    nvidia(&host, &["901"]).ok();
    let main = host.conf_main(901);
    assert!(dev_lines(&main).is_empty(), "devN left:\n{main}");
    assert_eq!(raw_gpu_lines(&main).len(), 9, "{main}");
    assert_live(&host, "901");
    let mark = host.journal_mark();
    nvidia(&host, &["901"]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
}

#[test]
fn other_devices_keep_their_entries_and_a_gpu_less_ct_loses_only_gpu_ones() {
    let host = host_901("8.4.1");
    std::fs::write(host.path("/dev/fuse"), b"").unwrap();
    host.pct(&["set", "901", "--dev0", "/dev/fuse"]).ok();
    nvidia(&host, &["901"]).ok();
    let main = host.conf_main(901);
    assert!(main.contains("dev0: /dev/fuse"), "{main}");
    assert_eq!(dev_lines(&main).len(), 8, "{main}");
    assert!(main.contains("dev1: /dev/nvidia0,mode=0666"), "{main}");
    // No GPUs any more: the GPU entries go, /dev/fuse stays.
    host.edit_lxc_config(|c| c["lxc_configs"]["901"]["gpu_assignment"] = "none".into());
    nvidia(&host, &["901"]).ok();
    let main = host.conf_main(901);
    assert_eq!(dev_lines(&main), ["dev0: /dev/fuse"], "{main}");
}

#[test]
fn gid_of_the_hosts_video_group_goes_into_the_entry() {
    let host = host_901("8.4.1");
    // A host whose nvidia-caps nodes belong to `video` (gid 44).
    let group = host.path("/etc/group");
    std::fs::create_dir_all(group.parent().unwrap()).unwrap();
    std::fs::write(&group, "root:x:0:\nvideo:x:44:\nrender:x:993:\n").unwrap();
    let cap = host.path("/dev/nvidia-caps/nvidia-cap1");
    std::os::unix::fs::chown(&cap, None, Some(44)).unwrap();
    nvidia(&host, &["901"]).ok();
    let main = host.conf_main(901);
    assert!(
        main.contains("dev5: /dev/nvidia-caps/nvidia-cap1,mode=0666,gid=44"),
        "{main}"
    );
    assert!(main.contains("dev0: /dev/nvidia0,mode=0666\n"), "{main}");
}

#[test]
fn a_gpu_less_clone_strips_inherited_devn_entries() {
    let host = host_901("8.4.1");
    nvidia(&host, &["901"]).ok();
    host.pct(&["stop", "901"]).ok();
    host.pct(&["snapshot", "901", "gpu-snapshot"]).ok();
    host.run("clone-lxc", ["901", "gpu-snapshot", "902"]).ok();
    let main = host.conf_main(902);
    assert!(dev_lines(&main).is_empty(), "{main}");
    assert!(!main.contains("nvidia"), "{main}");
    assert_eq!(dev_lines(&host.conf_main(901)).len(), 7);
}

/// Passthrough configured as raw lines on 901, but 901 started without them and they were
/// written back while it ran (a by-hand edit, or a run interrupted after the edit).
fn raw_lines_added_while_running(host: &Host) {
    nvidia(host, &["901"]).ok();
    host.pct(&["stop", "901"]).ok();
    let p = host.path("/etc/pve/lxc/901.conf");
    let full = std::fs::read_to_string(&p).unwrap();
    let without: String = full
        .lines()
        .filter(|l| !l.starts_with("lxc."))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&p, &without).unwrap();
    host.pct(&["start", "901"]).ok();
    std::fs::write(&p, &full).unwrap();
}

#[test]
fn lines_added_while_the_ct_ran_end_with_the_devices_visible() {
    // Someone added the passthrough by hand while the CT ran (or a run was interrupted after
    // the edit): the step ends with every node present inside.
    let host = host_901("8.4.1");
    set_mode(&host, "lxc");
    raw_lines_added_while_running(&host);
    nvidia(&host, &["901"]).ok();
    assert_live(&host, "901");
}

#[test]
fn lines_added_while_the_ct_ran_are_made_live_by_a_restart() {
    let host = host_901("8.4.1");
    set_mode(&host, "lxc");
    raw_lines_added_while_running(&host);
    // Configured, not live: the nodes are missing inside until a start.
    assert_ne!(host.exec("901", &["test", "-e", "/dev/nvidia0"]).code, 0);
    let mark = host.journal_mark();
    let r = nvidia(&host, &["901"]).ok();
    assert!(r.stdout.contains("not live"), "{}", r.stdout);
    // One reboot (shutdown and start in one call), nothing else that changes the CT.
    let calls = host.mutating_since(mark);
    assert_eq!(calls, ["pct reboot 901 --timeout 60"], "{calls:?}");
    // The probe that finds the nodes missing, the reboot, the probe that finds them.
    let all: Vec<String> = host
        .journal_since(mark)
        .iter()
        .map(|e| e.argv.join(" "))
        .collect();
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_live(&host, "901");
}

#[test]
fn devn_set_on_a_running_8_4_ct_is_made_live_by_a_restart() {
    let host = host_901("8.4.1");
    let mark = host.journal_mark();
    nvidia(&host, &["901"]).ok();
    // One `pct set` for all entries (pending on a running 8.4 CT), then one reboot makes them
    // live; besides, only the push of the runfile changes anything.
    let calls = host.mutating_since(mark);
    let set = calls.iter().position(|c| c.contains("--dev0"));
    let reboot = calls
        .iter()
        .position(|c| c == "pct reboot 901 --timeout 60");
    assert!(set.is_some() && reboot > set, "{calls:?}");
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[2].starts_with("pct push 901 "), "{calls:?}");
    assert!(!host.conf(901).unwrap().contains("[pve:pending]"));
    assert_live(&host, "901");
}

#[test]
fn a_conf_edit_waits_for_the_config_lock_held_by_another_process() {
    let host = host_901("8.4.1");
    set_mode(&host, "lxc");
    let lock = host.hold_conf_lock(901);
    let conf_before = host.conf(901).unwrap();
    let mut child = host
        .command("lxc-nvidia")
        .arg("901")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until the step says it waits for the lock.
    let mut waiting = false;
    for _ in 0..3000 {
        let log = std::fs::read_to_string(host.log_file()).unwrap_or_default();
        if log.contains("waiting for the config lock") {
            waiting = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(waiting, "the step never waited for the lock");
    assert_eq!(
        host.conf(901).unwrap(),
        conf_before,
        "edited without the lock"
    );
    drop(lock);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(raw_gpu_lines(&host.conf_main(901)).len(), 9);
}

#[test]
fn a_config_lock_that_stays_held_is_exit_6_and_nothing_changes() {
    let host = host_901("8.4.1");
    set_mode(&host, "lxc");
    let lock = host.hold_conf_lock(901);
    let conf = host.conf(901).unwrap();
    let mark = host.journal_mark();
    let r = nvidia(&host, &["901"]).expect_code(6);
    assert!(
        r.stderr.contains("pve-config-901.lock") && r.stderr.contains("CT 901"),
        "{}",
        r.stderr
    );
    assert_eq!(host.conf(901).unwrap(), conf);
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    drop(lock);
}

#[test]
fn a_stopped_ct_is_configured_before_its_start_and_never_restarted() {
    for mode in ["lxc", "dev"] {
        let host = host_901("8.4.1");
        set_mode(&host, mode);
        host.pct(&["stop", "901"]).ok();
        let mark = host.journal_mark();
        nvidia(&host, &["901"]).ok();
        let journal = host.journal_since(mark);
        // Started once, after its passthrough was configured; never stopped or rebooted (a
        // `pct reboot` Proxmox refuses because the CT is not running changes nothing).
        let starts: Vec<usize> = (0..journal.len())
            .filter(|&i| journal[i].argv.join(" ") == "pct start 901")
            .collect();
        assert_eq!(starts.len(), 1, "{mode}: {:?}", host.mutating_since(mark));
        let restarted = journal
            .iter()
            .any(|e| ["shutdown", "stop", "reboot"].contains(&e.subcommand()) && e.exit == 0);
        assert!(!restarted, "{mode}: {:?}", host.mutating_since(mark));
        if mode == "dev" {
            let set = journal
                .iter()
                .position(|e| e.subcommand() == "set" && e.argv.iter().any(|a| a == "--dev0"));
            assert!(
                set.is_some_and(|s| s < starts[0]),
                "{:?}",
                host.mutating_since(mark)
            );
        }
        assert!(!host.conf(901).unwrap().contains("[pve:pending]"));
        assert_live(&host, "901");
        host.exec("901", &["dpkg", "-s", "nvtop"]).ok();
    }
}

#[test]
fn another_gpu_is_one_pct_set_that_adds_and_deletes() {
    let host = host_901("8.4.1");
    host.edit_lxc_config(|c| c["lxc_configs"]["901"]["gpu_assignment"] = "0".into());
    nvidia(&host, &["901"]).ok();
    assert!(host.conf_main(901).contains("dev0: /dev/nvidia0,mode=0666"));
    host.edit_lxc_config(|c| c["lxc_configs"]["901"]["gpu_assignment"] = "1".into());
    let mark = host.journal_mark();
    nvidia(&host, &["901"]).ok();
    let sets: Vec<String> = host
        .mutating_since(mark)
        .into_iter()
        .filter(|m| m.starts_with("pct set "))
        .collect();
    assert_eq!(
        sets,
        ["pct set 901 --dev6 /dev/nvidia1,mode=0666 --delete dev0"],
        "{:?}",
        host.mutating_since(mark)
    );
    let main = host.conf_main(901);
    assert!(!main.contains("/dev/nvidia0,"), "{main}");
    assert!(main.contains("dev6: /dev/nvidia1,mode=0666"), "{main}");
    assert_eq!(host.exec("901", &["test", "-e", "/dev/nvidia0"]).code, 1);
    host.exec("901", &["test", "-e", "/dev/nvidia1"]).ok();
    host.exec("901", &["nvidia-smi", "-L"]).ok();
}
