//! `establish --validate` as a process: exit codes, stdout summary, stderr diagnostics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run the binary with a clean environment pointing at `hv` and `lxc`, PREFIX and host root in
/// `tmp`.
fn run(tmp: &Path, hv: &Path, lxc: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_establish"))
        .args(args)
        .env_clear()
        .env("PHOENIX_ROOT", tmp.join("prefix"))
        .env("PHOENIX_HOST_ROOT", tmp.join("host"))
        .env("PHOENIX_LOG_FILE", tmp.join("log"))
        .env("HYPERVISOR_CONFIG_FILE", hv)
        .env("LXC_CONFIG_FILE", lxc)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn reference_configs_are_valid() {
    let tmp = tempfile::tempdir().unwrap();
    for rev in ["upstream-185f0ab", "upstream-214aa23"] {
        let dir = repo().join("tests/fixtures").join(rev);
        let out = run(
            tmp.path(),
            &dir.join("phoenix_hypervisor_config.json"),
            &dir.join("phoenix_lxc_configs.json"),
            &["--validate"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            "configuration is valid (7 containers, 8 warnings)\n"
        );
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 8, "{err}");
        assert!(err.lines().all(|l| l.starts_with("warning: ")), "{err}");
        assert!(err.contains("/lxc_configs/901/unprivileged"), "{err}");
    }
    // Nothing was written: --validate touches no host.
    assert!(!tmp.path().join("log").exists());
    assert!(!tmp.path().join("host").exists());
}

#[test]
fn every_error_is_printed_and_exit_is_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = repo().join("tests/fixtures/upstream-214aa23");
    let mut lxc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("phoenix_lxc_configs.json")).unwrap(),
    )
    .unwrap();
    lxc["lxc_configs"]["950"]["name"] = "bad_name".into();
    lxc["lxc_configs"]["910"]["clone_from_template_ctid"] = "905".into();
    lxc["lxc_configs"]["900"]["cores"] = "two".into();
    let lxc_path = tmp.path().join("lxc.json");
    std::fs::write(&lxc_path, serde_json::to_string_pretty(&lxc).unwrap()).unwrap();
    let out = run(
        tmp.path(),
        &dir.join("phoenix_hypervisor_config.json"),
        &lxc_path,
        &["--validate"],
    );
    assert_eq!(out.status.code(), Some(2));
    // 900 (cores) and 950 (name) do not type, so the cross-field warnings about them and the
    // clones below 900 are not made (they come once the values parse); those below 902 are.
    assert_eq!(text(&out.stdout), "3 errors, 6 warnings\n");
    let err = text(&out.stderr);
    let p = lxc_path.display();
    for line in [
        format!("error: {p}: /lxc_configs/900/cores: "),
        format!(
            "error: {p}: /lxc_configs/910/clone_from_template_ctid: CT 910: clone_from_template_ctid 905"
        ),
        format!(
            "error: {p}: /lxc_configs/950/name: CT 950: name 'bad_name' is not a valid hostname: contains '_'"
        ),
        format!("warning: {p}: /lxc_configs/903/unprivileged: CT 903: "),
    ] {
        assert!(err.contains(&line), "{line}\nnot in:\n{err}");
    }
    assert_eq!(err.lines().count(), 9, "{err}");
}

#[test]
fn missing_file_is_exit_2_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.json");
    let dir = repo().join("tests/fixtures/upstream-214aa23");
    let out = run(
        tmp.path(),
        &missing,
        &dir.join("phoenix_lxc_configs.json"),
        &["--validate"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("error: {}: cannot read", missing.display())),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn building_needs_the_installed_step_programs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = repo().join("tests/fixtures/upstream-214aa23");
    let hv = dir.join("phoenix_hypervisor_config.json");
    let lxc = dir.join("phoenix_lxc_configs.json");
    // PREFIX/bin is empty here: every mode but --validate refuses with exit 4, naming the path,
    // before it touches the host (no lock file, no log).
    for args in [
        &["--dry-run"][..],
        &["--only", "900,950"],
        &["--jobs", "2"],
        &[],
    ] {
        let out = run(tmp.path(), &hv, &lxc, args);
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("required step program")
                && err.contains("phoenix_hypervisor_initial_setup.sh"),
            "{err}"
        );
    }
    assert!(
        !tmp.path().join("host").exists(),
        "the host root was touched"
    );
    assert!(!tmp.path().join("log").exists());
    // Bad usage is exit 2 (clap).
    for args in [
        &["--only", "99"][..],
        &["--jobs", "0"],
        &["--validate", "--dry-run"],
    ] {
        let out = run(tmp.path(), &hv, &lxc, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// The reference file's text with `"lxc_configs": {}` added after the last key: with
/// `serde_json`'s silent last-wins this emptied the list.
#[test]
fn duplicate_keys_are_refused_naming_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = repo().join("tests/fixtures/upstream-214aa23");
    let text_in = std::fs::read_to_string(dir.join("phoenix_lxc_configs.json")).unwrap();
    let end = text_in.rfind('}').unwrap();
    let doubled = format!(
        "{},\n\"lxc_configs\": {{}}\n}}\n",
        text_in[..end].trim_end()
    );
    let line = doubled.lines().count() - 1;
    let lxc_path = tmp.path().join("lxc.json");
    std::fs::write(&lxc_path, &doubled).unwrap();
    let out = run(
        tmp.path(),
        &dir.join("phoenix_hypervisor_config.json"),
        &lxc_path,
        &["--validate"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("error: {}:{line}:", lxc_path.display()))
            && err.contains("duplicate key 'lxc_configs'"),
        "{err}"
    );
}

/// The bad inputs issue 15 found getting past `--validate` (and failing later on the host): each
/// alone is refused with exit 2, one error at the field's pointer naming the field and the
/// value (control characters escaped), and nothing else.
#[test]
fn values_proxmox_or_a_guest_would_refuse_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = repo().join("tests/fixtures/upstream-214aa23");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("phoenix_lxc_configs.json")).unwrap(),
    )
    .unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "/lxc_configs/900/network_config/bridge",
            "network_config.bridge",
            "vmbr0,ip=dhcp",
        ),
        (
            "/lxc_configs/900/network_config/name",
            "network_config.name",
            "eth`id`",
        ),
        (
            "/lxc_configs/900/storage_pool",
            "storage_pool",
            "lxc-disks;reboot",
        ),
        (
            "/lxc_configs/900/template",
            "template",
            "../../var/lib/vz/t.tar.zst",
        ),
        (
            "/lxc_configs/900/template",
            "template",
            "/var/lib/vz/../../etc/t.tar.zst",
        ),
        (
            "/lxc_configs/950/vllm_model",
            "vllm_model",
            "org/model\n--trust-remote-code",
        ),
        (
            "/lxc_configs/920/template_snapshot_name",
            "template_snapshot_name",
            "configured-state",
        ),
        (
            "/nvidia_driver_version",
            "nvidia_driver_version",
            "580.76.05;reboot",
        ),
        ("/lxc_configs/950/name", "name", "vllm-qwén"),
        (
            "/lxc_configs/950/network_config/name",
            "network_config.name",
            "éth0",
        ),
        (
            "/lxc_configs/950/mac_address",
            "mac_address",
            "53:54:00:67:89:B0",
        ),
        ("/lxc_configs/950/gpu_assignment", "gpu_assignment", "0,0"),
        (
            "/lxc_configs/950/network_config/ip",
            "network_config.ip",
            "10.0.0.151/4",
        ),
        ("/lxc_configs/950/features", "features", "nesting=1,evil=1"),
    ];
    for (i, (pointer, field, value)) in cases.iter().enumerate() {
        let mut lxc = reference.clone();
        *lxc.pointer_mut(pointer).unwrap() = (*value).into();
        let lxc_path = tmp.path().join(format!("lxc{i}.json"));
        std::fs::write(&lxc_path, serde_json::to_string_pretty(&lxc).unwrap()).unwrap();
        let out = run(
            tmp.path(),
            &dir.join("phoenix_hypervisor_config.json"),
            &lxc_path,
            &["--validate"],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value:?} was accepted:\n{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{value:?}:\n{err}");
        let want = format!("error: {}: {pointer}: ", lxc_path.display());
        assert!(
            errors[0].starts_with(&want)
                && errors[0].contains(&format!("{field} '{}'", value.escape_debug())),
            "{value:?}: expected `{want}... {field} '{}' ...`, got:\n{err}",
            value.escape_debug()
        );
    }
}
