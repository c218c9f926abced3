//! The setup plugins (`setup-<ctid>`, over `lib_common::sdk`) against pve-sim: each one does its
//! job (state read back inside the guest and from the host), takes its template snapshot, is
//! idempotent (a second run makes no mutating pct call and runs no changing command inside),
//! exits with the step codes, and never turns config values into shell code.
//!
//! The GPU passthrough, the NVIDIA user space and Docker come from the real lxc-nvidia and
//! lxc-docker steps, as the orchestrator runs them before a plugin.
//!
//! Needs the plugin binaries built (`cargo test --workspace`, or `cargo build -p setup-plugins`).

use phoenix_e2e::{Host, Run};

const EVIL_MODEL: &str = "x'; touch /tmp/pwned; '";
const TOKEN: &str = "hf_PveSimSecretToken0123456789";
const HF_TOKEN_FILE: &str = "/usr/local/phoenix_hypervisor/etc/phoenix_hf_token.conf";

/// A reference host with CT `ctid` created (from the OS template) and running.
fn host_with(ctid: u32) -> Host {
    let host = Host::reference();
    host.run("create-lxc", [ctid.to_string()]).ok();
    host
}

fn plugin(host: &Host, ctid: u32, extra: &[&str]) -> Run {
    let bin = format!("setup-{ctid}");
    assert!(
        phoenix_e2e::bin_dir().join(&bin).is_file(),
        "`{bin}` is not built: run `cargo build -p setup-plugins` (or `cargo test --workspace`)"
    );
    let mut args = vec![ctid.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    host.run(&bin, args)
}

fn sh(host: &Host, ctid: u32, script: &str) -> Run {
    host.exec(ctid, &["bash", "-c", script])
}

fn log_text(host: &Host) -> String {
    std::fs::read_to_string(host.log_file()).unwrap_or_default()
}

/// Run the plugin again: exit 0, no mutating pct call, no changing command inside (those are
/// logged at info as `[CTID] pct exec ...`; read-only checks are not), and it says so. It
/// costs one `pct` call: the probe that waits for readiness and asks everything.
fn assert_second_run_changes_nothing(host: &Host, ctid: u32) {
    let mark = host.journal_mark();
    let log_before = log_text(host).len();
    let r = plugin(host, ctid, &[]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    let calls: Vec<Vec<String>> = host
        .journal_since(mark)
        .into_iter()
        .map(|e| e.argv)
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "a converged run makes one pct call: {calls:#?}"
    );
    let log = log_text(host);
    let new_lines: Vec<&str> = log[log_before..]
        .lines()
        .filter(|l| l.contains("] pct "))
        .collect();
    assert!(
        new_lines.is_empty(),
        "changing commands on the second run: {new_lines:#?}"
    );
    assert!(r.stdout.contains("nothing to change"), "{}", r.stdout);
}

/// The `pct` calls since `mark`, as `pct SUBCOMMAND CTID`.
fn calls_since(host: &Host, mark: usize) -> Vec<String> {
    host.journal_since(mark)
        .iter()
        .map(|e| e.argv[..3.min(e.argv.len())].join(" "))
        .collect()
}

/// Whether a mutating pct call with these words happened since `mark`.
fn mutated(host: &Host, mark: usize, words: &str) -> bool {
    host.mutating_since(mark).iter().any(|a| a.contains(words))
}

fn installed(host: &Host, ctid: u32, pkg: &str) -> bool {
    host.exec(ctid, &["dpkg", "-s", pkg])
        .stdout
        .contains("Status: install ok installed")
}

/// GPU passthrough and the NVIDIA user space: the real lxc-nvidia step.
fn lxc_nvidia(host: &Host, ctid: u32) {
    host.run("lxc-nvidia", [ctid.to_string()]).ok();
}

/// Docker (and, for a CT with GPUs, the NVIDIA runtime; Portainer per `portainer_role`): the
/// real lxc-docker step.
fn lxc_docker(host: &Host, ctid: u32) {
    host.run("lxc-docker", [ctid.to_string()]).ok();
}

// ---------------------------------------------------------------------------------------------
// 900 and the SDK frame

#[test]
fn setup_900_installs_tools_sets_locale_and_takes_its_snapshot() {
    let host = host_with(900);
    let mark = host.journal_mark();
    let r = plugin(&host, 900, &[]).ok();
    let pct_calls = calls_since(&host, mark);
    assert!(r.stdout.contains("[900]"), "{}", r.stdout);
    for pkg in [
        "curl", "wget", "vim", "htop", "jq", "rsync", "git", "gnupg", "locales",
    ] {
        assert!(installed(&host, 900, pkg), "{pkg} not installed");
    }
    let locale = host.exec(900, &["cat", "/etc/default/locale"]).ok();
    assert!(
        locale.stdout.lines().any(|l| l == "LANG=en_US.UTF-8"),
        "{}",
        locale.stdout
    );
    let locale_gen = host.exec(900, &["cat", "/etc/locale.gen"]).ok().stdout;
    assert_eq!(
        locale_gen
            .lines()
            .filter(|l| *l == "en_US.UTF-8 UTF-8")
            .count(),
        1,
        "{locale_gen}"
    );
    assert!(!locale_gen.contains("# en_US.UTF-8"), "{locale_gen}");
    host.exec(900, &["test", "-s", lib_common::sdk::UPGRADE_STAMP])
        .ok();
    assert_eq!(host.snapshots(900), ["base-snapshot"]);
    assert!(host.is_running(900));
    // Finalize order: shutdown, snapshot, start.
    let calls = host.mutating_since(mark);
    let pos = |w: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(w))
            .unwrap_or_else(|| panic!("no `{w}` in {calls:?}"))
    };
    assert!(pos("pct shutdown 900 --timeout") < pos("pct snapshot 900 base-snapshot"));
    assert!(pos("pct snapshot 900 base-snapshot") < pos("pct start 900"));
    // The shared log format under the plugin's installed name.
    let log = log_text(&host);
    assert!(
        log.lines()
            .any(|l| l.contains(" [INFO] phoenix_hypervisor_setup_900: [900] ")),
        "{log}"
    );
    assert!(log.contains("] apt-get install -y vim htop"), "{log}");
    // One call to look (readiness included), one to change, then the snapshot's four
    // (shutdown, snapshot, start, readiness).
    assert_eq!(
        pct_calls,
        [
            "pct exec 900",
            "pct exec 900",
            "pct shutdown 900",
            "pct snapshot 900",
            "pct start 900",
            "pct exec 900"
        ],
        "{pct_calls:#?}"
    );

    assert_second_run_changes_nothing(&host, 900);
}

#[test]
fn only_missing_packages_are_installed() {
    let host = host_with(900);
    // jq present already; the plugin installs the others and leaves jq alone.
    sh(&host, 900, "apt-get update -q && apt-get install -y -q jq").ok();
    let log_before = log_text(&host).len();
    plugin(&host, 900, &[]).ok();
    let log = log_text(&host);
    let install: Vec<&str> = log[log_before..]
        .lines()
        .filter(|l| l.contains("apt-get install"))
        .collect();
    assert_eq!(install.len(), 1, "{install:#?}");
    assert!(install[0].contains(" htop"), "{}", install[0]);
    assert!(
        !install[0].contains(" jq"),
        "jq reinstalled: {}",
        install[0]
    );
    // curl and wget are in the OS image already.
    assert!(!install[0].contains(" curl "), "{}", install[0]);
}

/// A guest network still coming up: `apt-get update` warns and exits 0 twice (as apt does
/// without DNS), then works. The apply script turns "reached no source" into a failure that
/// says so, and the whole script is retried until the network is up.
#[test]
fn a_network_coming_up_is_waited_for() {
    let host = host_with(900);
    sh(
        &host,
        900,
        r#"cat > /usr/local/sbin/apt-get <<'EOF'
#!/bin/bash
n=$(cat /root/apt-update-calls 2>/dev/null || echo 0)
for a in "$@"; do
    [ "$a" = update ] || continue
    echo $((n+1)) > /root/apt-update-calls
    if [ "$n" -lt 2 ]; then
        echo "Err:1 http://archive.ubuntu.com/ubuntu noble InRelease"
        echo "  Temporary failure resolving 'archive.ubuntu.com'"
        echo "W: Some index files failed to download. They have been ignored, or old ones used instead." >&2
        exit 0
    fi
done
exec /usr/local/bin/apt-get "$@"
EOF
chmod 0755 /usr/local/sbin/apt-get"#,
    )
    .ok();
    let mark = host.journal_mark();
    let r = plugin(&host, 900, &[]).ok();
    let calls = calls_since(&host, mark);
    assert!(r.stderr.contains("network is not up yet"), "{}", r.stderr);
    let updates = host
        .exec(900, &["cat", "/root/apt-update-calls"])
        .ok()
        .stdout;
    assert_eq!(updates.trim(), "3");
    assert!(installed(&host, 900, "htop"));
    // The probe, then the apply script three times.
    let before_shutdown = calls.iter().take_while(|c| !c.contains("shutdown"));
    assert_eq!(before_shutdown.count(), 4, "{calls:#?}");
}

#[test]
fn wrong_ctid_bad_usage_and_missing_ct() {
    let host = Host::reference();
    let mark = host.journal_mark();
    let r = plugin(&host, 900, &[]).expect_code(3);
    assert!(
        r.stderr.contains("CT 900") && r.stderr.contains("does not exist"),
        "{}",
        r.stderr
    );

    host.run("create-lxc", ["900"]).ok();
    let mark2 = host.journal_mark();
    let r = host.run("setup-900", ["901"]).expect_code(2);
    assert!(
        r.stderr.contains("setup plugin of CT 900") && r.stderr.contains("901"),
        "{}",
        r.stderr
    );
    host.run("setup-900", Vec::<&str>::new()).expect_code(2);
    host.run("setup-900", ["900", "--bogus"]).expect_code(2);
    let h = host.run("setup-900", ["--help"]).ok();
    assert!(
        h.stdout.contains("phoenix_hypervisor_setup_900"),
        "{}",
        h.stdout
    );
    assert!(h.stdout.contains("--dry-run"), "{}", h.stdout);
    host.run("setup-900", ["--version"]).ok();
    assert_eq!(host.mutating_since(mark2), Vec::<String>::new());
    assert!(mark <= mark2);
}

#[test]
fn installed_plugin_runs_under_its_design_name() {
    let host = host_with(900);
    host.install();
    let path = host.prefix().join("bin/phoenix_hypervisor_setup_900.sh");
    assert!(path.exists(), "not installed: {}", path.display());
    let out = host
        .command(&path)
        .args(["900", "--dry-run"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("would run: pct snapshot 900 base-snapshot"),
        "{stdout}"
    );
    assert!(log_text(&host).contains("phoenix_hypervisor_setup_900: [900]"));
}

#[test]
fn config_errors_exit_2_and_change_nothing() {
    let host = host_with(950);
    host.edit_lxc_config(|c| c["lxc_configs"]["950"]["vllm_model"] = serde_json::Value::Null);
    let mark = host.journal_mark();
    let r = plugin(&host, 950, &[]).expect_code(2);
    assert!(r.stderr.contains("vllm_model"), "{}", r.stderr);
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    // GPUs assigned but not passed through yet: exit 3 before anything is installed.
    host.edit_lxc_config(|c| c["lxc_configs"]["950"]["vllm_model"] = "Qwen/Qwen3-8B".into());
    let r = plugin(&host, 950, &[]).expect_code(3);
    assert!(
        r.stderr.contains("phoenix_hypervisor_lxc_nvidia 950"),
        "{}",
        r.stderr
    );
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    // A config that does not validate at all.
    host.edit_lxc_config(|c| c["lxc_configs"]["950"]["memory_mb"] = "lots".into());
    plugin(&host, 950, &[]).expect_code(2);
}

#[test]
fn dry_run_prints_changes_and_makes_none() {
    let host = host_with(900);
    let mark = host.journal_mark();
    let r = plugin(&host, 900, &["--dry-run"]).ok();
    assert!(
        r.stdout
            .contains("[900] would: apt-get install -y vim htop"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("would run: pct exec 900 -- bash -c"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("would run: pct snapshot 900 base-snapshot"),
        "{}",
        r.stdout
    );
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    assert!(!installed(&host, 900, "htop"));
    assert!(host.snapshots(900).is_empty());
}

/// A stopped CT: a dry run says it would start it and changes nothing (nothing can be asked
/// inside a stopped guest); a real run starts it and goes on.
#[test]
fn a_stopped_ct_is_started_and_a_dry_run_only_says_so() {
    let host = host_with(900);
    host.pct(&["stop", "900"]).ok();
    let mark = host.journal_mark();
    let r = plugin(&host, 900, &["--dry-run"]).ok();
    assert!(
        r.stdout.contains("would run: pct start 900"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("[900] is stopped; would start it"),
        "{}",
        r.stdout
    );
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    assert!(!host.is_running(900));

    let r = plugin(&host, 900, &[]).ok();
    assert!(r.stdout.contains("was stopped; started it"), "{}", r.stdout);
    assert!(installed(&host, 900, "htop"));
    assert!(host.is_running(900));

    // Converged and found stopped: the refused probe, `pct start`, the probe (no `pct status`:
    // the conf file says the CT exists).
    host.pct(&["stop", "900"]).ok();
    let mark = host.journal_mark();
    plugin(&host, 900, &[]).ok();
    let calls: Vec<String> = host
        .journal_since(mark)
        .into_iter()
        .filter(|e| e.argv[0] == "pct")
        .map(|e| e.subcommand().to_string())
        .collect();
    assert_eq!(calls, ["exec", "start", "exec"]);
    assert!(host.is_running(900));
}

#[test]
fn shutdown_that_fails_falls_back_to_stop() {
    let host = host_with(900);
    host.set_faults("pct shutdown 900\n");
    let mark = host.journal_mark();
    let r = plugin(&host, 900, &[]).ok();
    assert!(
        mutated(&host, mark, "pct stop 900"),
        "{:?}",
        host.mutating_since(mark)
    );
    assert_eq!(host.snapshots(900), ["base-snapshot"]);
    assert!(host.is_running(900));
    assert!(r.stderr.contains("warning"), "{}", r.stderr);
}

#[test]
fn failed_snapshot_exits_4_and_failed_guest_command_exits_5() {
    let host = host_with(900);
    host.set_faults("pct snapshot 900\n");
    let r = plugin(&host, 900, &[]).expect_code(4);
    assert!(r.stderr.contains("pct snapshot"), "{}", r.stderr);
    assert!(host.snapshots(900).is_empty());

    let host = host_with(900);
    host.set_faults("pct exec 900 bash 1\n");
    // The fault makes the first script call (the probe) fail like a Proxmox task: `pct exec`
    // failed, not the command inside (exit 4); nothing installed, no snapshot.
    let r = plugin(&host, 900, &[]).expect_code(4);
    assert!(
        r.stderr.contains("pct exec") && r.stderr.contains("CT 900"),
        "{}",
        r.stderr
    );
    assert!(!installed(&host, 900, "htop"));
    assert!(host.snapshots(900).is_empty());
    // A command failing inside: a package the mirror does not have.
    let host = host_with(900);
    sh(&host, 900, "echo 'deb [signed-by=/nope.gpg] https://mirror.invalid/ubuntu noble main' > /etc/apt/sources.list.d/broken.list").ok();
    let r = plugin(&host, 900, &[]).expect_code(5);
    assert!(
        r.stderr.contains("CT 900")
            && r.stderr.contains("`apt-get update` failed")
            && r.stderr.contains("mirror.invalid"),
        "{}",
        r.stderr
    );
    // Other sources answered: the network is up, so this is not waited out.
    assert!(
        !r.stderr.contains("network stayed down") && !r.stderr.contains("not up yet"),
        "{}",
        r.stderr
    );
    assert!(host.snapshots(900).is_empty());
}

// ---------------------------------------------------------------------------------------------
// GPU and Docker templates

#[test]
fn setup_901_checks_the_driver_and_takes_its_snapshot() {
    let host = host_with(901);
    let mark = host.journal_mark();
    let r = plugin(&host, 901, &[]).expect_code(3);
    assert!(
        r.stderr.contains("phoenix_hypervisor_lxc_nvidia 901"),
        "{}",
        r.stderr
    );
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());

    lxc_nvidia(&host, 901);
    let r = plugin(&host, 901, &[]).ok();
    assert!(
        r.stdout.contains("580.76.05") && r.stdout.contains("2 GPU"),
        "{}",
        r.stdout
    );
    assert_eq!(host.snapshots(901), ["gpu-snapshot"]);
    assert!(host.is_running(901));
    assert_second_run_changes_nothing(&host, 901);
}

#[test]
fn setup_901_refuses_a_driver_other_than_configured() {
    let host = host_with(901);
    lxc_nvidia(&host, 901);
    // The config now asks for another version than the one installed (and on the host).
    host.edit_lxc_config(|c| c["nvidia_driver_version"] = "580.65.06".into());
    let r = plugin(&host, 901, &[]).expect_code(3);
    assert!(
        r.stderr.contains("580.76.05") && r.stderr.contains("580.65.06"),
        "{}",
        r.stderr
    );
    assert!(host.snapshots(901).is_empty());
}

#[test]
fn setup_902_enables_docker_and_takes_its_snapshot() {
    let host = host_with(902);
    let r = plugin(&host, 902, &[]).expect_code(3);
    assert!(
        r.stderr.contains("phoenix_hypervisor_lxc_docker 902"),
        "{}",
        r.stderr
    );

    lxc_docker(&host, 902);
    host.exec(902, &["systemctl", "disable", "--now", "docker"])
        .ok();
    plugin(&host, 902, &[]).ok();
    host.exec(902, &["systemctl", "is-enabled", "docker"]).ok();
    host.exec(902, &["docker", "info"]).ok();
    assert_eq!(host.snapshots(902), ["docker-snapshot"]);
    assert_second_run_changes_nothing(&host, 902);
}

#[test]
fn setup_903_needs_the_nvidia_runtime_in_docker() {
    let host = host_with(903);
    lxc_nvidia(&host, 903);
    lxc_docker(&host, 903);
    // Docker without the nvidia runtime.
    sh(
        &host,
        903,
        "echo '{}' > /etc/docker/daemon.json && systemctl restart docker",
    )
    .ok();
    let r = plugin(&host, 903, &[]).expect_code(3);
    assert!(
        r.stderr.contains("nvidia") && r.stderr.contains("runtime"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("phoenix_hypervisor_lxc_docker 903"),
        "{}",
        r.stderr
    );
    assert!(host.snapshots(903).is_empty());

    lxc_docker(&host, 903);
    let r = plugin(&host, 903, &[]).ok();
    assert!(r.stdout.contains("nvidia runtime"), "{}", r.stdout);
    assert_eq!(host.snapshots(903), ["docker-gpu-snapshot"]);
    assert_second_run_changes_nothing(&host, 903);
}

// ---------------------------------------------------------------------------------------------
// Portainer, vLLM

#[test]
fn setup_910_runs_portainer_and_its_ui_answers() {
    let host = Host::reference();
    // Docker in an unprivileged CT needs keyctl=1 (the reference block lacks it).
    host.edit_lxc_config(|c| c["lxc_configs"]["910"]["features"] = "nesting=1,keyctl=1".into());
    host.run("create-lxc", ["910"]).ok();
    // Docker without Portainer: the plugin creates the container.
    host.edit_lxc_config(|c| c["lxc_configs"]["910"]["portainer_role"] = "none".into());
    lxc_docker(&host, 910);
    host.edit_lxc_config(|c| c["lxc_configs"]["910"]["portainer_role"] = "server".into());
    let log_before = log_text(&host).len();
    let r = plugin(&host, 910, &[]).ok();
    assert!(
        log_text(&host)[log_before..].contains("docker run -d --name portainer"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("https://localhost:9443"), "{}", r.stdout);
    let ps = host
        .exec(910, &["docker", "ps", "--format", "{{.Names}} {{.Image}}"])
        .ok();
    assert!(
        ps.stdout
            .contains("portainer portainer/portainer-ce:2.33.1-lts"),
        "{}",
        ps.stdout
    );
    host.exec(910, &["curl", "-fsSk", "https://localhost:9443"])
        .ok();
    // Not a template: no snapshot.
    assert!(host.snapshots(910).is_empty());
    assert_second_run_changes_nothing(&host, 910);
    // lxc-docker (role server) accepts the container the plugin made.
    let mark = host.journal_mark();
    lxc_docker(&host, 910);
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());

    // A stopped portainer container is started again, not recreated.
    host.exec(910, &["docker", "stop", "portainer"]).ok();
    let log_before = log_text(&host).len();
    plugin(&host, 910, &[]).ok();
    let log = log_text(&host);
    assert!(
        log[log_before..].contains("docker start portainer"),
        "{log}"
    );
    assert!(!log[log_before..].contains("docker run"), "{log}");
}

/// A `portainer` container that runs but does not publish the configured UI port: the wait
/// for the UI polls inside the guest and ends at `behavior.ready_timeout_s` with exit 6,
/// naming the CT and the URL.
#[test]
fn setup_910_times_out_when_the_ui_never_answers() {
    let host = Host::reference();
    host.edit_lxc_config(|c| c["lxc_configs"]["910"]["features"] = "nesting=1,keyctl=1".into());
    host.edit_hypervisor_config(|c| c["behavior"]["ready_timeout_s"] = 1.into());
    host.run("create-lxc", ["910"]).ok();
    host.edit_lxc_config(|c| c["lxc_configs"]["910"]["portainer_role"] = "none".into());
    lxc_docker(&host, 910);
    host.edit_lxc_config(|c| c["lxc_configs"]["910"]["portainer_role"] = "server".into());
    host.exec(
        910,
        &[
            "docker",
            "run",
            "-d",
            "--name",
            "portainer",
            "-p",
            "9999:9443",
            "portainer/portainer-ce:2.33.1-lts",
        ],
    )
    .ok();
    let mark = host.journal_mark();
    let r = plugin(&host, 910, &[]).expect_code(6);
    let calls = calls_since(&host, mark);
    assert!(
        r.stderr.contains("CT 910")
            && r.stderr
                .contains("https://localhost:9443 did not answer within 1 s"),
        "{}",
        r.stderr
    );
    // The probe, then one wait inside the guest (not one `pct exec` per try).
    assert_eq!(calls, ["pct exec 910", "pct exec 910"], "{calls:#?}");
}

#[test]
fn setup_920_installs_vllm_in_a_venv_and_takes_its_snapshot() {
    let host = host_with(920);
    plugin(&host, 920, &[]).ok();
    host.exec(920, &["/opt/vllm/bin/python", "-c", "import vllm"])
        .ok();
    assert!(installed(&host, 920, "python3-venv"));
    // In the venv, not the system Python.
    let sys = host.exec(920, &["python3", "-c", "import vllm"]);
    assert_ne!(sys.code, 0, "vllm leaked into the system python");
    assert_eq!(host.snapshots(920), ["vllm-base-snapshot"]);
    assert_second_run_changes_nothing(&host, 920);
}

fn write_token(host: &Host) {
    let p = host.path(HF_TOKEN_FILE);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, format!("HF_TOKEN={TOKEN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn setup_950_serves_the_model_with_the_token_kept_secret() {
    let host = host_with(950);
    lxc_nvidia(&host, 950);
    write_token(&host);
    let mark = host.journal_mark();
    let r = plugin(&host, 950, &[]).ok();
    let calls = calls_since(&host, mark);
    let model = "lmstudio-community/Qwen3-Coder-30B-A3B-Instruct-MLX-5bit";
    assert!(r.stdout.contains(model), "{}", r.stdout);

    let unit = host
        .exec(950, &["cat", "/etc/systemd/system/vllm.service"])
        .ok()
        .stdout;
    assert!(
        unit.contains(&format!(
            "ExecStart=/opt/vllm/bin/python -m vllm.entrypoints.openai.api_server --model \"{model}\" --tensor-parallel-size 2 --port 8000"
        )),
        "{unit}"
    );
    assert!(
        unit.contains("EnvironmentFile=-/etc/vllm/vllm.env"),
        "{unit}"
    );
    host.exec(950, &["systemctl", "is-enabled", "vllm"]).ok();
    host.exec(950, &["systemctl", "is-active", "vllm"]).ok();
    host.exec(950, &["curl", "-fsS", "http://localhost:8000/health"])
        .ok();
    let models = host
        .exec(950, &["curl", "-fsS", "http://localhost:8000/v1/models"])
        .ok();
    assert!(models.stdout.contains(model), "{}", models.stdout);

    let env = host.exec(950, &["cat", "/etc/vllm/vllm.env"]).ok().stdout;
    assert_eq!(env, format!("HF_TOKEN={TOKEN}\n"));
    let mode = host
        .exec(950, &["stat", "-c", "%a %U", "/etc/vllm/vllm.env"])
        .ok()
        .stdout;
    assert_eq!(mode.trim(), "600 root");
    // The token is nowhere but in that file.
    assert!(!log_text(&host).contains(TOKEN), "token in the log");
    assert!(!unit.contains(TOKEN), "token in the unit");
    for e in host.journal() {
        assert!(
            !e.argv.iter().any(|a| a.contains(TOKEN)),
            "token on a command line: {:?}",
            e.argv
        );
    }
    assert!(!r.stdout.contains(TOKEN) && !r.stderr.contains(TOKEN));
    // The probe, one script up to the unit being enabled (the venv and vLLM first), the
    // token's push, one script that starts the service and waits for it inside.
    assert_eq!(
        calls,
        [
            "pct exec 950",
            "pct exec 950",
            "pct push 950",
            "pct exec 950"
        ],
        "{calls:#?}"
    );
    let left = std::fs::read_dir(host.path("/var/cache/phoenix_hypervisor/push"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "temporary push files left on the host");

    assert_second_run_changes_nothing(&host, 950);

    // A new token: the env file is rewritten and the running service restarted. The file is
    // world-readable now: a warning, not an error.
    std::fs::write(host.path(HF_TOKEN_FILE), "hf_AnotherToken42\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        host.path(HF_TOKEN_FILE),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let log_before = log_text(&host).len();
    let r = plugin(&host, 950, &[]).ok();
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    let log = log_text(&host);
    assert!(
        log[log_before..].contains("systemctl restart vllm.service"),
        "{log}"
    );
    let env = host.exec(950, &["cat", "/etc/vllm/vllm.env"]).ok().stdout;
    assert_eq!(env, "HF_TOKEN=hf_AnotherToken42\n");
    assert!(!log.contains("hf_AnotherToken42"));
}

#[test]
fn setup_950_without_token_file_and_with_a_new_model() {
    let host = host_with(950);
    // No GPU assigned (so no tensor parallel size): vLLM on the CPU, no NVIDIA check.
    host.edit_lxc_config(|c| {
        let b = c["lxc_configs"]["950"].as_object_mut().unwrap();
        b.insert("gpu_assignment".into(), "none".into());
        b.remove("vllm_tensor_parallel_size");
    });
    let r = plugin(&host, 950, &[]).ok();
    assert!(
        r.stdout.contains("no Hugging Face token file"),
        "{}",
        r.stdout
    );
    assert_ne!(
        host.exec(950, &["test", "-e", "/etc/vllm/vllm.env"]).code,
        0
    );

    host.edit_lxc_config(|c| c["lxc_configs"]["950"]["vllm_model"] = "Qwen/Qwen3-8B".into());
    let log_before = log_text(&host).len();
    plugin(&host, 950, &[]).ok();
    let log = log_text(&host);
    assert!(
        log[log_before..].contains("systemctl daemon-reload"),
        "{log}"
    );
    assert!(
        log[log_before..].contains("systemctl restart vllm.service"),
        "{log}"
    );
    let models = host
        .exec(950, &["curl", "-fsS", "http://localhost:8000/v1/models"])
        .ok();
    assert!(
        models.stdout.contains("\"Qwen/Qwen3-8B\""),
        "{}",
        models.stdout
    );
    let unit = host
        .exec(950, &["cat", "/etc/systemd/system/vllm.service"])
        .ok()
        .stdout;
    assert!(
        unit.contains("--tensor-parallel-size 1 --port 8000"),
        "{unit}"
    );
}

#[test]
fn model_from_json_cannot_run_anything() {
    let host = host_with(950);
    lxc_nvidia(&host, 950);
    host.edit_lxc_config(|c| c["lxc_configs"]["950"]["vllm_model"] = EVIL_MODEL.into());
    // Not a model name (a Hugging Face ID or an absolute path): refused before anything runs,
    // naming the field and the value (`lib_common::types::ModelName`).
    let r = plugin(&host, 950, &[]).expect_code(2);
    assert!(
        r.stderr.contains("/lxc_configs/950/vllm_model")
            && r.stderr.contains("vllm_model 'x\\'; touch"),
        "{}",
        r.stderr
    );
    assert_ne!(
        host.exec(950, &["test", "-e", "/tmp/pwned"]).code,
        0,
        "shell code ran inside"
    );
    assert!(
        !host.path("/tmp/pwned").exists(),
        "shell code ran on the host"
    );
}

// ---------------------------------------------------------------------------------------------
// The template chain, as the orchestrator builds it

/// 900 → 902 → 903 → 920 → 950, each cloned from its source's template snapshot, with the
/// steps the orchestrator runs before each plugin. What a template's plugin set up reaches its
/// clones: 950 finds vLLM from 920 and does not install it again.
#[test]
fn template_chain_clones_carry_what_the_plugins_set_up() {
    let host = Host::reference();
    host.run("create-lxc", ["900"]).ok();
    plugin(&host, 900, &[]).ok();
    let chain = [
        (900, "base-snapshot", 902),
        (902, "docker-snapshot", 903),
        (903, "docker-gpu-snapshot", 920),
        (920, "vllm-base-snapshot", 950),
    ];
    for (source, snapshot, target) in chain {
        host.run(
            "clone-lxc",
            [source.to_string(), snapshot.to_string(), target.to_string()],
        )
        .ok();
        if target != 902 {
            lxc_nvidia(&host, target);
        }
        lxc_docker(&host, target);
        let log_before = log_text(&host).len();
        plugin(&host, target, &[]).ok();
        let log = log_text(&host)[log_before..].to_string();
        if target == 950 {
            assert!(
                !log.contains("pip install"),
                "vLLM installed again in 950:\n{log}"
            );
        }
        // The base tools came with the clone.
        assert!(installed(&host, target, "jq"), "CT {target} lacks jq");
    }
    assert_eq!(host.snapshots(920), ["vllm-base-snapshot"]);
    host.exec(950, &["curl", "-fsS", "http://localhost:8000/health"])
        .ok();
}
