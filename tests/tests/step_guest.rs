//! The guest API (`lib_common::guest`) against pve-sim: files written through a 0600 host temp
//! file and `pct push` (the temp file removed, the content never on a command line), reads,
//! checks, and values passed to scripts as positional parameters, never as shell code.
//!
//! The library reads its host from the environment, so the checks run in a child process of
//! this test binary started with the simulated host's environment.

use std::process::Command;

use phoenix_e2e::Host;

const CHILD_ENV: &str = "PHOENIX_E2E_GUEST_CHILD";

#[test]
fn guest_api_against_pve_sim() {
    let host = Host::reference();
    host.run("create-lxc", ["900"]).ok();
    let exe = std::env::current_exe().unwrap();
    let mut cmd: Command = host.command(&exe);
    let out = cmd
        .env(CHILD_ENV, "1")
        .args([
            "--exact",
            "guest_checks_in_child",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "child did not run: {text}");
    // No shell code ran on the host or in the guest.
    assert!(!host.path("/pwned").exists());
    // The temporary file is gone and the secret never was an argument.
    let push_dir = host.path("/var/cache/phoenix_hypervisor/push");
    let left: Vec<_> = std::fs::read_dir(&push_dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temp files left: {left:?}");
    let journal = host.journal();
    assert!(journal.iter().any(|e| e.subcommand() == "push"));
    assert!(
        !journal
            .iter()
            .any(|e| e.argv.iter().any(|a| a.contains("s3cret"))),
        "secret on a command line"
    );
}

#[test]
#[ignore = "run by guest_api_against_pve_sim in a child process"]
fn guest_checks_in_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    use lib_common::config::Ctid;
    use lib_common::guest::Guest;
    use lib_common::pct::PctClient;

    let pct = PctClient::new(false);
    let g = Guest::new(&pct, Ctid(900));
    g.write_file("/root/secret.conf", b"token=s3cret\n", "0600")
        .unwrap();
    assert_eq!(g.read_file("/root/secret.conf").unwrap(), "token=s3cret\n");
    assert!(g.file_exists("/root/secret.conf").unwrap());
    assert!(!g.file_exists("/root/none").unwrap());
    assert_eq!(g.read_file_opt("/root/none").unwrap(), None);
    let mode = g
        .query_ok(&["stat", "-c", "%a", "/root/secret.conf"])
        .unwrap();
    assert_eq!(mode.trim(), "600");

    let evil = "x'; touch /pwned; '";
    g.run_script(
        "record an argument",
        r#"printf '%s' "$1" > /root/arg"#,
        &[evil],
    )
    .unwrap();
    assert_eq!(g.read_file("/root/arg").unwrap(), evil);
    assert!(!g.file_exists("/pwned").unwrap());

    let err = g.run(&["false"]).unwrap_err();
    assert_eq!(lib_common::error::exit_code(&err), 5);
    assert!(err.to_string().contains("CT 900"), "{err}");
    let err = g.read_file("/root/none").unwrap_err();
    assert_eq!(lib_common::error::exit_code(&err), 5);
    assert!(!g.package_installed("no-such-package").unwrap());
    assert!(!g.service_active("no-such.service").unwrap());

    let missing = Guest::new(&pct, Ctid(999));
    let err = missing.run(&["true"]).unwrap_err();
    assert_eq!(lib_common::error::exit_code(&err), 3);
}
