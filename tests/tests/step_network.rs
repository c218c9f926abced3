//! A guest network that is still coming up (or stays down) against pve-sim: network-using
//! commands (apt, curl, pip, docker pull) that fail for lack of name resolution are retried with
//! back-off within `behavior.ready_timeout_s`, and a network that stays down fails with the
//! last error (exit 5).

use phoenix_e2e::Host;

/// An `apt-get` ahead of the guest's on PATH whose `update` fails `fails` times the way apt
/// does without DNS (warnings, exit 0), then runs the real one. It counts its calls.
fn flaky_apt(host: &Host, ctid: &str, fails: u32) {
    let script = format!(
        r#"cat > /usr/local/sbin/apt-get <<'EOF'
#!/bin/bash
n=$(cat /root/apt-update-calls 2>/dev/null || echo 0)
if [ "$1" = update ] || [ "$2" = update ]; then
    echo $((n+1)) > /root/apt-update-calls
    if [ "$n" -lt {fails} ]; then
        echo "Err:1 http://archive.ubuntu.com/ubuntu noble InRelease"
        echo "  Temporary failure resolving 'archive.ubuntu.com'"
        echo "W: Failed to fetch http://archive.ubuntu.com/ubuntu/dists/noble/InRelease  Temporary failure resolving 'archive.ubuntu.com'" >&2
        echo "W: Some index files failed to download. They have been ignored, or old ones used instead." >&2
        exit 0
    fi
fi
exec /usr/local/bin/apt-get "$@"
EOF
chmod 0755 /usr/local/sbin/apt-get"#
    );
    host.exec(ctid, &["bash", "-c", &script]).ok();
}

fn update_calls(host: &Host, ctid: &str) -> u32 {
    host.exec(ctid, &["cat", "/root/apt-update-calls"])
        .ok()
        .stdout
        .trim()
        .parse()
        .unwrap()
}

/// The reference host with CT 910 (Portainer server, Docker) created and running.
fn host_with_910() -> Host {
    let host = Host::reference();
    host.edit_lxc_config(|c| c["lxc_configs"]["910"]["features"] = "nesting=1,keyctl=1".into());
    host.run("create-lxc", ["910"]).ok();
    host
}

#[test]
fn a_network_coming_up_is_waited_for() {
    let host = host_with_910();
    flaky_apt(&host, "910", 2);
    let r = host.run("lxc-docker", ["910"]).ok();
    assert_eq!(update_calls(&host, "910"), 3, "{}", r.stderr);
    assert!(r.stderr.contains("network is not up yet"), "{}", r.stderr);
    host.exec("910", &["dpkg", "-s", "docker-ce"]).ok();
}

#[test]
fn a_network_that_stays_down_fails_with_the_last_error() {
    let host = host_with_910();
    host.edit_hypervisor_config(|c| c["behavior"]["ready_timeout_s"] = 1.into());
    flaky_apt(&host, "910", 1000);
    let r = host.run("lxc-docker", ["910"]).expect_code(5);
    assert!(
        r.stderr.contains("network stayed down")
            && r.stderr
                .contains("Temporary failure resolving 'archive.ubuntu.com'"),
        "{}",
        r.stderr
    );
    // Retried, and bounded: more than one attempt, and it gave up.
    assert!(update_calls(&host, "910") >= 2);
    assert_ne!(host.exec("910", &["dpkg", "-s", "docker-ce"]).code, 0);
}

#[test]
fn a_source_that_does_not_resolve_while_others_do_fails_at_once() {
    let host = host_with_910();
    host.exec(
        "910",
        &[
            "bash",
            "-c",
            "echo 'deb https://mirror.invalid/ubuntu noble main' > /etc/apt/sources.list.d/broken.list",
        ],
    )
    .ok();
    let mark = host.journal_mark();
    let r = host.run("lxc-docker", ["910"]).expect_code(5);
    assert!(r.stderr.contains("mirror.invalid"), "{}", r.stderr);
    assert!(!r.stderr.contains("network stayed down"), "{}", r.stderr);
    let updates = host
        .execs_since(mark)
        .iter()
        .filter(|e| e.contains("apt-get update"))
        .count();
    assert_eq!(updates, 1, "a bad source is not retried");
}

#[test]
fn a_build_with_network_2000_succeeds() {
    let host = Host::reference();
    host.install();
    host.set_latency("network 2000\n");
    let r = host.establish(&["--only", "902"]);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    host.exec("902", &["docker", "info"]).ok();
}
