//! `lxc-docker CTID` against pve-sim: Docker Engine from Docker's repository, daemon.json
//! merged (keys already there kept), the `vfs` warning, Portainer server/agent running, the
//! NVIDIA runtime only where the CT has GPUs and `no-cgroups` only when it is unprivileged,
//! idempotency (no mutating call, no install command on a second run), a CT without nesting
//! (exit 2) and guest failures (exit 5) that leave nothing half-written. The `pct` calls are
//! counted (issue 14): a probe, and one setup script when anything is missing.

use phoenix_e2e::{Host, Run};

fn docker(host: &Host, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = host.command("lxc-docker");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().expect("run lxc-docker");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The reference host with CT 910 (Portainer server) created; its features get keyctl=1, which
/// Docker needs in an unprivileged CT (the reference block lacks it; see
/// `unprivileged_ct_without_keyctl_fails_with_a_hint`).
fn host_with_910() -> Host {
    let host = Host::reference();
    host.edit_lxc_config(|c| c["lxc_configs"]["910"]["features"] = "nesting=1,keyctl=1".into());
    host.run("create-lxc", ["910"]).ok();
    host
}

/// `docker ps` inside: one `name image ports` line per running container.
fn containers(host: &Host, ctid: &str) -> Run {
    host.exec(
        ctid,
        &[
            "docker",
            "ps",
            "--format",
            "{{.Names}} {{.Image}} {{.Ports}}",
        ],
    )
    .ok()
}

fn daemon_json(host: &Host, ctid: &str) -> serde_json::Value {
    let r = host.exec(ctid, &["cat", "/etc/docker/daemon.json"]).ok();
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("daemon.json: {e}: {}", r.stdout))
}

/// Whether `no-cgroups = true` sits under `[nvidia-container-cli]`.
fn no_cgroups_in_cli_table(toml: &str) -> bool {
    let mut table = "";
    for l in toml.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            table = t;
        } else if t == "no-cgroups = true" {
            return table == "[nvidia-container-cli]";
        }
    }
    false
}

#[test]
fn portainer_server_ct_first_run_installs_second_run_changes_nothing() {
    let host = host_with_910();
    // An admin's daemon.json before Docker is installed: its keys must survive.
    host.exec("910",
        &[
            "bash",
            "-c",
            r#"mkdir -p /etc/docker && printf '{"storage-driver": "vfs", "log-opts": {"max-size": "50m"}}\n' > /etc/docker/daemon.json"#,
        ],
    )
    .ok();
    let mark = host.journal_mark();
    let r = docker(&host, &[], &["910"]).ok();
    assert!(r.stderr.contains("vfs"), "no vfs warning: {}", r.stderr);
    // The probe and one setup script: nothing else.
    let execs = host.execs_since(mark);
    assert_eq!(host.journal_since(mark).len(), 2, "{execs:?}");
    assert!(is_probe(&execs[0]) && is_setup(&execs[1]), "{execs:?}");

    for p in [
        "docker-ce",
        "docker-ce-cli",
        "containerd.io",
        "docker-buildx-plugin",
        "docker-compose-plugin",
    ] {
        host.exec("910", &["dpkg", "-s", p]).ok();
    }
    assert_ne!(
        host.exec("910", &["dpkg", "-s", "nvidia-container-toolkit"])
            .code,
        0,
        "toolkit in a GPU-less CT"
    );
    let list = host
        .exec("910", &["cat", "/etc/apt/sources.list.d/docker.list"])
        .ok();
    assert_eq!(
        list.stdout,
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu noble stable\n"
    );
    let d = daemon_json(&host, "910");
    assert_eq!(d["storage-driver"], "vfs");
    assert_eq!(d["log-opts"]["max-size"], "50m", "{d}");
    assert_eq!(d["log-opts"]["max-file"], "3", "{d}");
    assert_eq!(d["log-driver"], "json-file", "{d}");
    assert!(
        d.get("runtimes").is_none(),
        "nvidia runtime in a GPU-less CT: {d}"
    );
    let ps = containers(&host, "910");
    assert_eq!(
        ps.stdout.trim(),
        "portainer portainer/portainer-ce:2.33.1-lts 8000:8000,9443:9443",
        "{}",
        ps.stdout
    );
    let restart = host
        .exec(
            "910",
            &[
                "docker",
                "inspect",
                "--format",
                "{{.HostConfig.RestartPolicy.Name}} {{json .Mounts}}",
                "portainer",
            ],
        )
        .ok();
    assert!(restart.stdout.starts_with("always "), "{}", restart.stdout);
    assert!(
        restart.stdout.contains("portainer_data"),
        "{}",
        restart.stdout
    );
    host.exec("910", &["systemctl", "is-enabled", "docker"])
        .ok();

    // Second run: nothing changes, and the probe is the only call (its smoke test runs with
    // the local image: it checks, it changes nothing).
    let mark = host.journal_mark();
    let r = docker(&host, &[], &["910"]).ok();
    assert!(r.stdout.contains("nothing changed"), "{}", r.stdout);
    assert!(r.stderr.contains("vfs"), "no vfs warning: {}", r.stderr);
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    let execs = host.execs_since(mark);
    assert_eq!(host.journal_since(mark).len(), 1, "{execs:?}");
    assert!(is_probe(&execs[0]), "{execs:?}");
    // The container survives a CT restart (restart=always, docker enabled).
    host.pct(&["stop", "910"]).ok();
    host.pct(&["start", "910"]).ok();
    let mark = host.journal_mark();
    docker(&host, &[], &["910"]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    assert_eq!(host.journal_since(mark).len(), 1);
}

#[test]
fn gpu_cts_get_the_nvidia_runtime_and_no_cgroups_only_when_unprivileged() {
    let host = Host::reference();
    // 903: GPUs, privileged (as configured). 920: GPUs, made unprivileged here.
    host.edit_lxc_config(|c| {
        c["lxc_configs"]["920"]["unprivileged"] = true.into();
        c["lxc_configs"]["920"]["features"] = "nesting=1,keyctl=1".into();
    });
    for ct in ["903", "920"] {
        host.run("create-lxc", [ct]).ok();
        let mark = host.journal_mark();
        docker(&host, &[], &[ct]).ok();
        let execs = host.execs_since(mark);
        assert_eq!(host.journal_since(mark).len(), 2, "{ct}: {execs:?}");
        assert!(is_probe(&execs[0]) && is_setup(&execs[1]), "{execs:?}");
        host.exec(ct, &["dpkg", "-s", "nvidia-container-toolkit"])
            .ok();
        let d = daemon_json(&host, ct);
        assert_eq!(
            d["runtimes"]["nvidia"]["path"], "nvidia-container-runtime",
            "{ct}: {d}"
        );
        assert_eq!(d["log-driver"], "json-file");
    }
    let toml = |ct: &str| {
        host.exec(ct, &["cat", "/etc/nvidia-container-runtime/config.toml"])
            .ok()
            .stdout
    };
    assert!(no_cgroups_in_cli_table(&toml("920")), "{}", toml("920"));
    assert!(!no_cgroups_in_cli_table(&toml("903")), "{}", toml("903"));
    assert!(!toml("903").contains("no-cgroups = true"));
    // Nothing to do the second time.
    for ct in ["903", "920"] {
        let mark = host.journal_mark();
        docker(&host, &[], &[ct]).ok();
        assert_eq!(host.mutating_since(mark), Vec::<String>::new());
        let execs = host.execs_since(mark);
        assert!(execs.len() == 1 && is_probe(&execs[0]), "{ct}: {execs:?}");
    }
    // GPU containers can use the runtime in the unprivileged CT once the GPUs are passed in.
    host.run("lxc-nvidia", ["920"]).ok();
    host.exec(
        "920",
        &[
            "docker",
            "run",
            "--rm",
            "--runtime=nvidia",
            "--gpus",
            "all",
            "ubuntu",
            "nvidia-smi",
            "-L",
        ],
    )
    .ok();
}

#[test]
fn agent_role_from_env_with_its_port() {
    let host = host_with_910();
    let r = docker(
        &host,
        &[
            ("PORTAINER_ROLE", "agent"),
            ("PORTAINER_AGENT_PORT", "9101"),
            ("PORTAINER_SERVER_IP", "10.0.0.99"),
        ],
        &["910"],
    )
    .ok();
    assert!(r.stdout.contains("10.0.0.99"), "{}", r.stdout);
    let ps = containers(&host, "910");
    assert_eq!(
        ps.stdout.trim(),
        "portainer_agent portainer/agent:2.33.1-lts 9101:9001"
    );
    let r = docker(&host, &[("PORTAINER_ROLE", "boss")], &["910"]).expect_code(2);
    assert!(r.stderr.contains("PORTAINER_ROLE"), "{}", r.stderr);
    let r = docker(&host, &[("PORTAINER_SERVER_IP", "10.0.0.999")], &["910"]).expect_code(2);
    assert!(r.stderr.contains("PORTAINER_SERVER_IP"), "{}", r.stderr);
    // Values from the environment never reach a shell.
    let mark = host.journal_mark();
    for (var, evil) in [
        ("PORTAINER_AGENT_PORT", "9001; touch /tmp/pwned"),
        ("PORTAINER_SERVER_IP", "'; touch /tmp/pwned; '"),
        ("PORTAINER_ROLE", "agent'; touch /tmp/pwned; '"),
    ] {
        let r = docker(&host, &[(var, evil)], &["910"]).expect_code(2);
        assert!(r.stderr.contains(var), "{}", r.stderr);
    }
    assert!(host.execs_since(mark).is_empty());
    assert!(!host.exists("/tmp/pwned"));
    assert_ne!(host.exec("910", &["test", "-e", "/tmp/pwned"]).code, 0);
}

#[test]
fn ct_without_nesting_is_exit_2_naming_ctid_and_field() {
    let host = Host::reference();
    host.run("create-lxc", ["901"]).ok();
    let mark = host.journal_mark();
    let r = docker(&host, &[], &["901"]).expect_code(2);
    assert!(
        r.stderr.contains("CT 901")
            && r.stderr.contains("features")
            && r.stderr.contains("nesting=1"),
        "{}",
        r.stderr
    );
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    assert!(host.execs_since(mark).is_empty());
}

#[test]
fn guest_failure_is_exit_5_and_dry_run_changes_nothing() {
    let host = host_with_910();
    let mark = host.journal_mark();
    let r = docker(&host, &[], &["--dry-run", "910"]).ok();
    for want in [
        "would run: pct exec 910 -- apt-get update -q && apt-get install -y docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin",
        "would run: pct exec 910 -- curl -fsSL -o /etc/apt/keyrings/docker.asc https://download.docker.com/linux/ubuntu/gpg",
        "would write 110 bytes to `/etc/apt/sources.list.d/docker.list` in CT 910 (mode 0644)",
        "/etc/docker/daemon.json",
        "would run: pct exec 910 -- systemctl enable docker && systemctl restart docker",
        "would run: pct exec 910 -- docker run -d --name portainer",
        "would run: pct exec 910 -- docker run --rm hello-world (smoke test)",
    ] {
        assert!(r.stdout.contains(want), "`{want}` missing in\n{}", r.stdout);
    }
    // The probe only: it reads, it changes nothing.
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    let execs = host.execs_since(mark);
    assert!(execs.len() == 1 && is_probe(&execs[0]), "{execs:?}");
    assert_ne!(host.exec("910", &["dpkg", "-s", "docker-ce"]).code, 0);

    // `pct exec` itself failing is a Proxmox failure (exit 4), not the command's (exit 5).
    host.set_faults("pct exec 910 bash\n");
    let r = docker(&host, &[], &["910"]).expect_code(4);
    assert!(
        r.stderr.contains("CT 910") && r.stderr.contains("pct exec"),
        "{}",
        r.stderr
    );
    host.set_faults("");
    assert_ne!(
        host.exec("910", &["test", "-e", "/etc/docker/daemon.json"])
            .code,
        0
    );
    assert_ne!(host.exec("910", &["dpkg", "-s", "docker-ce"]).code, 0);

    // A command of the setup script failing: exit 5 naming it, and what comes after it in the
    // script (daemon.json) not done.
    apt_install_fails(&host, "910");
    let r = docker(&host, &[], &["910"]).expect_code(5);
    assert!(
        r.stderr.contains("CT 910")
            && r.stderr.contains("`apt-get install -y docker-ce")
            && r.stderr
                .contains("E: Sub-process /usr/bin/dpkg returned an error code (1)"),
        "{}",
        r.stderr
    );
    assert_ne!(
        host.exec("910", &["test", "-e", "/etc/docker/daemon.json"])
            .code,
        0
    );
    assert_ne!(host.exec("910", &["dpkg", "-s", "docker-ce"]).code, 0);
    host.exec("910", &["rm", "/usr/local/sbin/apt-get"]).ok();

    docker(&host, &[], &["910"]).ok();
    let ps = host
        .exec("910", &["docker", "ps", "--format", "{{.Names}}"])
        .ok();
    assert_eq!(ps.stdout.trim(), "portainer");
}

#[test]
fn unprivileged_ct_without_keyctl_warns_and_fails_with_a_hint() {
    let host = Host::reference();
    // The reference 910 omits keyctl and gets keyctl=1 added (Docker needs it unprivileged);
    // an explicit keyctl=0 is respected, and Docker then fails the way runc does.
    host.run("create-lxc", ["910"]).ok();
    assert!(
        host.conf_main(910)
            .contains("features: nesting=1,keyctl=1\n"),
        "{}",
        host.conf_main(910)
    );
    let mut cfg = host.lxc_config();
    cfg["lxc_configs"]["910"]["features"] = serde_json::json!("nesting=1,keyctl=0");
    host.write_lxc_config(&cfg);
    host.pct(&["destroy", "910", "--force", "1"]).ok();
    host.run("create-lxc", ["910"]).ok();
    assert!(
        host.conf_main(910)
            .contains("features: nesting=1,keyctl=0\n"),
        "{}",
        host.conf_main(910)
    );
    let r = docker(&host, &[], &["910"]).expect_code(5);
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("keyctl=1"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("hint: CT 910 is unprivileged without keyctl=1"),
        "{}",
        r.stderr
    );
}

#[test]
fn features_only_pending_are_applied_by_a_restart() {
    let host = Host::reference();
    // 910 created without nesting, running; then nesting set while it runs: pending.
    host.edit_lxc_config(|c| c["lxc_configs"]["910"]["features"] = "keyctl=1".into());
    host.run("create-lxc", ["910"]).ok();
    host.edit_lxc_config(|c| c["lxc_configs"]["910"]["features"] = "nesting=1,keyctl=1".into());
    host.pct(&["set", "910", "--features", "nesting=1,keyctl=1"])
        .ok();
    let conf = host.conf(910).unwrap();
    assert!(
        conf.contains("[pve:pending]") && !host.conf_main(910).contains("nesting=1"),
        "nesting is not pending:\n{conf}"
    );
    let mark = host.journal_mark();
    let r = docker(&host, &[], &["910"]).ok();
    assert!(r.stdout.contains("pending"), "{}", r.stdout);
    let calls = host.mutating_since(mark);
    let start = calls.iter().position(|c| c == "pct start 910");
    let stop = calls
        .iter()
        .position(|c| c.starts_with("pct shutdown 910") || c == "pct stop 910");
    assert!(
        stop.is_some() && start.is_some() && stop < start,
        "no restart: {calls:?}"
    );
    assert!(host.conf_main(910).contains("nesting=1"));
    assert!(!host.conf(910).unwrap().contains("[pve:pending]"));
    assert_eq!(
        containers(&host, "910").stdout.split_whitespace().next(),
        Some("portainer")
    );
}

/// A `docker` ahead of the guest's on PATH whose `run` fails like runc after its fix for
/// CVE-2025-52881 under an old Proxmox AppArmor profile; everything else is the real double.
fn docker_hit_by_runc_cve(host: &Host, ctid: &str) {
    let script = r#"cat > /usr/local/sbin/docker <<'END'
#!/bin/bash
if [ "$1" = run ]; then
    echo "docker: Error response from daemon: failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: open sysctl net.ipv4.ip_unprivileged_port_start file: reopen fd 8: permission denied: unknown" >&2
    echo "Run 'docker run --help' for more information" >&2
    exit 126
fi
exec /usr/local/bin/docker "$@"
END
chmod 0755 /usr/local/sbin/docker"#;
    host.exec(ctid, &["bash", "-c", script]).ok();
}

#[test]
fn docker_ends_with_a_smoke_test_and_diagnoses_the_runc_cve_failure() {
    let host = host_with_910();
    let mark = host.journal_mark();
    docker(&host, &[], &["910"]).ok();
    // The setup script ends with the smoke test.
    let execs = host.execs_since(mark);
    assert!(
        execs
            .last()
            .is_some_and(|e| is_setup(e) && e.ends_with(" smoke hello-world")),
        "no smoke test run: {execs:?}"
    );
    // The smoke test left no container behind.
    assert_eq!(containers(&host, "910").stdout.lines().count(), 1);

    docker_hit_by_runc_cve(&host, "910");
    let r = docker(&host, &[], &["910"]).expect_code(5);
    for want in [
        "CVE-2025-52881",
        "lxc-pve 6.0.5-2",
        "pct reboot 910",
        "pve-container: ",
        "ip_unprivileged_port_start",
    ] {
        assert!(r.stderr.contains(want), "`{want}` missing in\n{}", r.stderr);
    }
}

/// An exec of the state probe (read-only: it changes nothing).
fn is_probe(exec: &str) -> bool {
    exec.starts_with(&format!("bash -c {} _ ", lib_common::probe::PROBE_SCRIPT))
}

/// An exec of the step's setup script.
fn is_setup(exec: &str) -> bool {
    exec.starts_with(&format!(
        "bash -c {} _ ",
        lib_common::steps::docker::APPLY_SCRIPT
    ))
}

/// An `apt-get` ahead of the guest's on PATH whose `install` fails the way dpkg does.
fn apt_install_fails(host: &Host, ctid: &str) {
    let script = r#"cat > /usr/local/sbin/apt-get <<'EOF'
#!/bin/bash
for a in "$@"; do
    if [ "$a" = install ]; then
        echo "E: Sub-process /usr/bin/dpkg returned an error code (1)" >&2
        exit 100
    fi
done
exec /usr/local/bin/apt-get "$@"
EOF
chmod 0755 /usr/local/sbin/apt-get"#;
    host.exec(ctid, &["bash", "-c", script]).ok();
}

#[test]
fn a_smoke_test_image_that_cannot_be_pulled_while_the_network_stays_down_is_a_warning() {
    let host = host_with_910();
    docker(&host, &[], &["910"]).ok();
    // The image gone and the network down from now on: the probe's smoke test (local image
    // only) fails, the setup script's cannot pull.
    host.edit_hypervisor_config(|c| c["behavior"]["ready_timeout_s"] = 1.into());
    host.exec(
        "910",
        &[
            "bash",
            "-c",
            "rm /var/lib/docker-sim/images/hello-world_latest && echo 99999999999999 > /run/pve-sim/network-up-ms",
        ],
    )
    .ok();
    let mark = host.journal_mark();
    let r = docker(&host, &[], &["910"]).ok();
    assert!(
        r.stderr.contains("smoke test skipped") && r.stderr.contains("network is down"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("nothing changed"), "{}", r.stdout);
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    // The probe, then the smoke test retried while the network stayed down.
    let execs = host.execs_since(mark);
    assert!(is_probe(&execs[0]), "{execs:?}");
    assert!(
        execs.len() >= 3
            && execs[1..]
                .iter()
                .all(|e| is_setup(e) && e.ends_with(" _ smoke hello-world")),
        "{execs:?}"
    );
}

#[test]
fn dry_run_of_a_stopped_ct_starts_nothing() {
    let host = host_with_910();
    host.pct(&["stop", "910"]).ok();
    let mark = host.journal_mark();
    let r = docker(&host, &[], &["--dry-run", "910"]).ok();
    assert!(
        r.stdout.contains("would run: pct start 910") && r.stdout.contains("not running"),
        "{}",
        r.stdout
    );
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    assert!(
        host.pct(&["status", "910"]).ok().stdout.contains("stopped"),
        "started"
    );
}
