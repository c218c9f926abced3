//! `lxc-nvidia CTID` against pve-sim: the exact passthrough lines at the end of the main
//! section (snapshot sections untouched), the runfile downloaded once and pushed in, the user
//! space matching the host driver, the CUDA repository and packages, idempotency (no mutating
//! call, no install command on a second run), superfluous GPU lines removed, host
//! preconditions (exit 3), Proxmox and guest failures (exit 4/5) and injected URLs that run
//! nothing.

use phoenix_e2e::{Host, Run};

const RUNFILE: &str = "/var/cache/phoenix_hypervisor/NVIDIA-Linux-x86_64-580.76.05.run";

/// The lines the reference CT 901 (GPUs 0,1) must end its main section with on the reference
/// host (pve-sim: uvm 510, caps 511; read from /proc/devices, checked below).
const LINES_901: &str = "\
lxc.cgroup2.devices.allow: c 195:* rwm
lxc.cgroup2.devices.allow: c 510:* rwm
lxc.cgroup2.devices.allow: c 511:* rwm
lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file
lxc.mount.entry: /dev/nvidia1 dev/nvidia1 none bind,optional,create=file
lxc.mount.entry: /dev/nvidiactl dev/nvidiactl none bind,optional,create=file
lxc.mount.entry: /dev/nvidia-uvm dev/nvidia-uvm none bind,optional,create=file
lxc.mount.entry: /dev/nvidia-uvm-tools dev/nvidia-uvm-tools none bind,optional,create=file
lxc.mount.entry: /dev/nvidia-caps dev/nvidia-caps none bind,optional,create=dir
";

/// The reference host (PVE 8.4) passing GPUs by raw lxc lines (`behavior.gpu_passthrough`
/// `lxc`; the devN mode has its own tests in `step_gpu_passthrough.rs`).
fn host_lxc_mode() -> Host {
    let host = Host::reference();
    host.edit_hypervisor_config(|c| c["behavior"]["gpu_passthrough"] = "lxc".into());
    host
}

/// The reference host with CT 901 created (running, no GPU lines yet).
fn host_with_901() -> Host {
    let host = host_lxc_mode();
    host.run("create-lxc", ["901"]).ok();
    host
}

fn nvidia(host: &Host, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = host.command("lxc-nvidia");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().expect("run lxc-nvidia");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn section(conf: &str, name: &str) -> String {
    let header = format!("[{name}]");
    conf.split_once(&header)
        .map(|(_, rest)| rest.split("\n[").next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no section {header} in\n{conf}"))
}

#[test]
fn first_run_passes_gpus_through_and_installs_matching_user_space_second_run_changes_nothing() {
    let host = host_with_901();
    // A snapshot before the step: the lines must not land in it.
    host.pct(&["snapshot", "901", "pre-gpu"]).ok();
    let snap_before = section(&host.conf(901).unwrap(), "pre-gpu");
    // The majors really are the host's dynamic ones.
    let devices = std::fs::read_to_string(host.path("/proc/devices")).unwrap();
    assert!(devices.contains("510 nvidia-uvm\n") && devices.contains("511 nvidia-caps\n"));

    let mark = host.journal_mark();
    nvidia(&host, &[], &["901"]).ok();

    let main = host.conf_main(901);
    assert!(
        main.trim_end().ends_with(LINES_901.trim_end()),
        "main section does not end with the passthrough lines:\n{main}"
    );
    assert_eq!(main.matches("lxc.").count(), 9, "{main}");
    assert!(main.contains("hostname: BaseTemplateGPU"), "{main}");
    assert_eq!(section(&host.conf(901).unwrap(), "pre-gpu"), snap_before);
    // Rebooted once because the file changed (shutdown and start in one call, the lines
    // edited in the file under the config lock), then the runfile pushed; nothing else changes
    // the CT from outside.
    let muts = host.mutating_since(mark);
    assert_eq!(muts.len(), 2, "{muts:?}");
    assert_eq!(muts[0], "pct reboot 901 --timeout 60", "{muts:?}");
    assert!(muts[1].starts_with("pct push 901 "), "{muts:?}");
    // Four calls in all: the reboot, the state probe, the push and one script that installs
    // everything and checks nvidia-smi.
    let pct_calls: Vec<String> = host
        .journal_since(mark)
        .iter()
        .filter(|e| e.argv[0] == "pct")
        .map(|e| e.argv.join(" "))
        .collect();
    assert_eq!(pct_calls.len(), 4, "{pct_calls:#?}");
    assert!(host.is_running(901));
    // pve-sim validates every pct call against the API schema first: none was refused.
    let refused: Vec<String> = host
        .journal_since(mark)
        .iter()
        .filter(|e| e.argv[0] == "pct" && e.exit != 0 && e.subcommand() != "exec")
        .map(|e| e.argv.join(" "))
        .collect();
    assert_eq!(refused, Vec::<String>::new());
    // The runfile: downloaded once into the host cache, pushed by its unprefixed host path.
    assert!(host.path(RUNFILE).is_file());
    let journal = host.journal_since(mark);
    let curls: Vec<_> = journal.iter().filter(|e| e.argv[0] == "curl").collect();
    assert_eq!(curls.len(), 1, "{curls:?}");
    let push: Vec<_> = journal
        .iter()
        .filter(|e| e.subcommand() == "push")
        .collect();
    assert!(
        push.iter().any(|e| e.argv[3] == RUNFILE),
        "runfile not pushed by its host path: {:?}",
        push.iter().map(|e| e.argv.join(" ")).collect::<Vec<_>>()
    );
    let execs = host.execs_since(mark);
    // The installer is the script's `$1`, run with the user-space-only flags.
    let installer = journal
        .iter()
        .find(|e| {
            e.subcommand() == "exec"
                && e.argv
                    .iter()
                    .any(|a| a == "/tmp/NVIDIA-Linux-x86_64-580.76.05.run")
        })
        .expect("installer ran");
    assert!(
        installer.argv.iter().any(|a| a.contains(
            "\"$1\" --silent --no-kernel-module --no-x-check --no-nouveau-check --no-nvidia-modprobe --no-dkms\n"
        )),
        "{:?}",
        installer.argv
    );
    assert!(
        !execs.iter().any(|e| e.contains("cuda-drivers")),
        "{execs:?}"
    );
    // Guest state.
    let smi = host
        .exec(
            "901",
            &[
                "nvidia-smi",
                "--query-gpu=driver_version",
                "--format=csv,noheader",
            ],
        )
        .ok();
    assert_eq!(smi.stdout, "580.76.05\n580.76.05\n");
    for p in ["cuda-toolkit", "nvtop"] {
        host.exec("901", &["dpkg", "-s", p]).ok();
    }
    assert_ne!(host.exec("901", &["dpkg", "-s", "cuda-drivers"]).code, 0);
    let list = host
        .exec("901", &["cat", "/etc/apt/sources.list.d/phoenix-cuda.list"])
        .ok();
    assert_eq!(
        list.stdout,
        "deb [signed-by=/etc/apt/keyrings/cuda-archive-keyring.asc] https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/ /\n"
    );
    // The installer was removed from the guest.
    assert_ne!(
        host.exec(
            "901",
            &["test", "-e", "/tmp/NVIDIA-Linux-x86_64-580.76.05.run"]
        )
        .code,
        0
    );

    // Second run: nothing to do.
    let conf = host.conf(901).unwrap();
    let mark = host.journal_mark();
    let second = nvidia(&host, &[], &["901"]).ok();
    assert!(
        second.stdout.contains("nothing changed"),
        "{}",
        second.stdout
    );
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    let execs = host.execs_since(mark);
    assert!(
        !execs
            .iter()
            .any(|e| e.contains("apt-get") || e.contains(".run") || e.contains("curl")),
        "{execs:?}"
    );
    // One call: the probe (readiness, nodes, nvidia-smi, packages, repository).
    let calls: Vec<String> = host
        .journal_since(mark)
        .iter()
        .map(|e| e.argv.join(" "))
        .collect();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(!host.journal_since(mark).iter().any(|e| e.argv[0] == "curl"));
    assert_eq!(host.conf(901).unwrap(), conf);
}

#[test]
fn superfluous_gpu_lines_go_other_lines_stay_and_cached_runfile_is_reused() {
    let host = host_with_901();
    nvidia(&host, &[], &["901"]).ok();
    // A line that is not about GPUs, after the GPU lines.
    let p = host.path("/etc/pve/lxc/901.conf");
    let mut conf = std::fs::read_to_string(&p).unwrap();
    conf.push_str("lxc.mount.entry: /dev/net/tun dev/net/tun none bind,create=file\n");
    std::fs::write(&p, conf).unwrap();
    host.pct(&["snapshot", "901", "two-gpus"]).ok();
    // The CT now gets GPU 0 only (as a child whose template had both).
    host.edit_lxc_config(|c| c["lxc_configs"]["901"]["gpu_assignment"] = "0".into());
    let mark = host.journal_mark();
    nvidia(&host, &[], &["901"]).ok();
    let main = host.conf_main(901);
    assert!(!main.contains("/dev/nvidia1"), "{main}");
    assert!(
        main.contains("lxc.mount.entry: /dev/nvidia0 dev/nvidia0"),
        "{main}"
    );
    assert!(
        main.contains("lxc.mount.entry: /dev/net/tun dev/net/tun"),
        "{main}"
    );
    let expected: String = LINES_901
        .lines()
        .filter(|l| !l.contains("nvidia1"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(main.trim_end().ends_with(expected.trim_end()), "{main}");
    // The snapshot keeps what it had.
    assert!(section(&host.conf(901).unwrap(), "two-gpus").contains("/dev/nvidia1"));
    let muts = host.mutating_since(mark);
    assert_eq!(muts, ["pct reboot 901 --timeout 60"], "{muts:?}");
    // The user space already matched: no download, no installer.
    assert!(!host.journal_since(mark).iter().any(|e| e.argv[0] == "curl"));
    assert!(!host.execs_since(mark).iter().any(|e| e.contains(".run")));

    // Env override back to both GPUs on another CT reuses the cached runfile (no download).
    host.run("create-lxc", ["903"]).ok();
    let mark = host.journal_mark();
    nvidia(&host, &[("GPU_ASSIGNMENT", "1")], &["903"]).ok();
    assert!(!host.journal_since(mark).iter().any(|e| e.argv[0] == "curl"));
    let main = host.conf_main(903);
    assert!(main.contains("/dev/nvidia1 dev/nvidia1") && !main.contains("/dev/nvidia0 "));
}

#[test]
fn missing_host_device_is_exit_3_and_changes_nothing() {
    let host = host_with_901();
    std::fs::remove_file(host.path("/dev/nvidia1")).unwrap();
    let conf = host.conf(901).unwrap();
    let mark = host.journal_mark();
    let r = nvidia(&host, &[], &["901"]).expect_code(3);
    assert!(
        r.stderr.contains("/dev/nvidia1") && r.stderr.contains("901"),
        "{}",
        r.stderr
    );
    assert_eq!(host.conf(901).unwrap(), conf);
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    // A locked CT's config is not edited.
    host.pct(&["stop", "901"]).ok();
    host.pct(&["mount", "901"]).ok();
    let conf = host.conf(901).unwrap();
    let r = nvidia(&host, &[("GPU_ASSIGNMENT", "0")], &["901"]).expect_code(3);
    assert!(r.stderr.contains("locked (mounted)"), "{}", r.stderr);
    assert_eq!(host.conf(901).unwrap(), conf);
    // A CT that does not exist is a precondition too.
    let r = nvidia(&host, &[], &["903"]).expect_code(3);
    assert!(r.stderr.contains("CT 903"), "{}", r.stderr);
}

#[test]
fn host_driver_mismatch_is_exit_3_naming_both_versions() {
    let host = host_with_901();
    std::fs::write(
        host.path("/proc/driver/nvidia/version"),
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.148.08  Thu May 1 2025\n",
    )
    .unwrap();
    let conf = host.conf(901).unwrap();
    let r = nvidia(&host, &[], &["901"]).expect_code(3);
    assert!(
        r.stderr.contains("570.148.08") && r.stderr.contains("580.76.05"),
        "{}",
        r.stderr
    );
    assert_eq!(host.conf(901).unwrap(), conf);
    // A configured version that does not match its runfile URL is a config error.
    let r = nvidia(&host, &[("NVIDIA_DRIVER_VERSION", "570.148.08")], &["901"]).expect_code(2);
    assert!(r.stderr.contains("NVIDIA_RUNFILE_URL") || r.stderr.contains("nvidia_runfile_url"));
}

#[test]
fn proxmox_and_guest_failures_map_to_4_and_5_and_a_rerun_recovers() {
    let host = host_with_901();
    host.set_faults("pct push 901\n");
    let r = nvidia(&host, &[], &["901"]).expect_code(4);
    assert!(r.stderr.contains("push"), "{}", r.stderr);
    // Nothing half-written: the conf is whole, no temp file next to it or in the cache.
    assert!(
        host.conf_main(901)
            .trim_end()
            .ends_with(LINES_901.trim_end())
    );
    let leftovers = |dir: &str| -> Vec<String> {
        std::fs::read_dir(host.path(dir))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(leftovers("/etc/pve/lxc"), Vec::<String>::new());
    assert_eq!(
        leftovers("/var/cache/phoenix_hypervisor"),
        Vec::<String>::new()
    );
    assert_ne!(
        host.exec(
            "901",
            &[
                "nvidia-smi",
                "--query-gpu=driver_version",
                "--format=csv,noheader"
            ]
        )
        .code,
        0
    );

    // `pct exec` itself failing is a Proxmox failure (exit 4), not the command's (exit 5):
    // here the first script, the state probe.
    host.set_faults("pct exec 901 bash 1\n");
    let r = nvidia(&host, &[], &["901"]).expect_code(4);
    assert!(
        r.stderr.contains("CT 901") && r.stderr.contains("`pct exec` failed"),
        "{}",
        r.stderr
    );

    host.set_faults("");
    nvidia(&host, &[], &["901"]).ok();
    host.exec("901", &["dpkg", "-s", "nvtop"]).ok();
}

#[test]
fn injected_urls_run_nothing() {
    let host = host_with_901();
    let pwned = |host: &Host| {
        host.exists("/tmp/pwned") || host.exec("901", &["test", "-e", "/tmp/pwned"]).code == 0
    };
    let evil = "'; touch /tmp/pwned; '";
    for var in ["NVIDIA_REPO_URL", "NVIDIA_RUNFILE_URL"] {
        let mark = host.journal_mark();
        let r = nvidia(&host, &[(var, evil)], &["901"]).expect_code(2);
        assert!(r.stderr.contains(var), "{}", r.stderr);
        assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    }
    assert!(!pwned(&host));
    // Without spaces the URLs pass the check; they still only ever are data.
    let runfile = "https://us.download.nvidia.com/';touch${IFS}/tmp/pwned;'/NVIDIA-Linux-x86_64-580.76.05.run";
    let repo = "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/';touch${IFS}/tmp/pwned;'$(touch${IFS}/tmp/pwned)/";
    let r = nvidia(
        &host,
        &[("NVIDIA_RUNFILE_URL", runfile), ("NVIDIA_REPO_URL", repo)],
        &["901"],
    );
    // The runfile installs (the URL was only a download address); the repository key URL
    // does not exist, so the CUDA part fails inside the guest.
    assert_eq!(r.code, 5, "{}\n{}", r.stdout, r.stderr);
    assert!(!pwned(&host));
    host.exec(
        "901",
        &[
            "nvidia-smi",
            "--query-gpu=driver_version",
            "--format=csv,noheader",
        ],
    )
    .ok();
}

#[test]
fn dry_run_changes_nothing_and_gpu_less_ct_is_left_alone() {
    let host = host_with_901();
    let conf = host.conf(901).unwrap();
    let mark = host.journal_mark();
    let r = nvidia(&host, &[], &["--dry-run", "901"]).ok();
    assert!(r.stdout.contains("would add"), "{}", r.stdout);
    assert!(r.stdout.contains("would run: pct push"), "{}", r.stdout);
    // The running CT would be rebooted for its lines, then get the installer, the repository
    // and the packages in one script.
    assert!(
        r.stdout.contains("would run: pct reboot 901 --timeout 60"),
        "{}",
        r.stdout
    );
    let apply = r
        .stdout
        .split_once("would run: pct exec 901 -- bash -c 'set -u")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    assert!(
        apply.contains(" _ /tmp/NVIDIA-Linux-x86_64-580.76.05.run https://")
            && apply.contains(" 580.76.05 cuda-toolkit nvtop\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("rebooted"), "{}", r.stdout);
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    assert_eq!(host.conf(901).unwrap(), conf);
    assert!(!host.path(RUNFILE).exists());
    assert!(
        !host
            .execs_since(mark)
            .iter()
            .any(|e| e.contains("apt-get") || e.contains(".run"))
    );

    host.run("create-lxc", ["900"]).ok();
    let conf = host.conf(900).unwrap();
    let mark = host.journal_mark();
    nvidia(&host, &[], &["900"]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    assert_eq!(host.conf(900).unwrap(), conf);
}

#[test]
fn clone_of_a_gpu_template_keeps_only_its_own_gpu_and_reuses_the_user_space() {
    let host = host_lxc_mode();
    host.edit_lxc_config(|c| {
        c["lxc_configs"]["920"]["gpu_assignment"] = "0".into();
        c["lxc_configs"]["920"]["vllm_tensor_parallel_size"] = 1.into();
    });
    host.run("create-lxc", ["903"]).ok();
    nvidia(&host, &[], &["903"]).ok();
    host.pct(&["snapshot", "903", "docker-gpu-snapshot"]).ok();
    host.run("clone-lxc", ["903", "docker-gpu-snapshot", "920"])
        .ok();
    // The clone inherited both GPUs' lines.
    assert!(host.conf_main(920).contains("/dev/nvidia1"));
    let mark = host.journal_mark();
    nvidia(&host, &[], &["920"]).ok();
    let main = host.conf_main(920);
    assert!(!main.contains("/dev/nvidia1"), "{main}");
    let expected: Vec<&str> = LINES_901
        .lines()
        .filter(|l| !l.contains("nvidia1"))
        .collect();
    let tail: Vec<&str> = main.trim_end().lines().rev().take(expected.len()).collect();
    assert_eq!(
        tail.into_iter().rev().collect::<Vec<_>>(),
        expected,
        "{main}"
    );
    assert_eq!(main.matches("lxc.").count(), expected.len(), "{main}");
    // The template's user space came with the clone: no download, no installer. Two calls:
    // the reboot that drops GPU 1, the probe that finds everything else in place.
    assert!(!host.execs_since(mark).iter().any(|e| e.contains(".run")));
    let calls: Vec<String> = host
        .journal_since(mark)
        .iter()
        .map(|e| e.argv.join(" "))
        .collect();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0], "pct reboot 920 --timeout 60");
    assert!(
        calls[1].starts_with("pct exec 920 -- bash -c "),
        "{calls:#?}"
    );
    let smi = host
        .exec(
            "920",
            &[
                "nvidia-smi",
                "--query-gpu=driver_version",
                "--format=csv,noheader",
            ],
        )
        .ok();
    assert_eq!(smi.stdout, "580.76.05\n");
    // The template keeps both GPUs.
    assert!(host.conf_main(903).contains("/dev/nvidia1"));
}
