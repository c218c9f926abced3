//! Tests of `validate`: the reference configs pass, and every rule has a failing and a passing case.

use super::*;
use serde_json::json;
use std::path::PathBuf;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(rev: &str, name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rev).join(name)
}

fn read(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The 214aa23 reference pair, to mutate.
fn reference() -> (Value, Value) {
    (
        read(&fixture("upstream-214aa23", paths::HYPERVISOR_CONFIG_NAME)),
        read(&fixture("upstream-214aa23", paths::LXC_CONFIG_NAME)),
    )
}

/// Check two documents with the embedded schemas and an empty host root.
fn check_with_root(hv: &Value, lxc: &Value, root: &Path) -> Vec<Diagnostic> {
    let docs = Documents {
        hypervisor_path: Path::new("hv.json"),
        hypervisor: Some(hv),
        lxc_path: Path::new("lxc.json"),
        lxc: Some(lxc),
    };
    let out = check_documents(
        &docs,
        Some(&Schema::embedded_hypervisor()),
        Some(&Schema::embedded_lxc()),
        root,
    );
    let errors = out.diagnostics.iter().any(Diagnostic::is_error);
    // Typed configs come back whenever deserialization worked; valid implies typed.
    assert!(errors || out.configs.is_some());
    out.diagnostics
}

fn check(hv: &Value, lxc: &Value) -> Vec<Diagnostic> {
    let root = tempfile::tempdir().unwrap();
    check_with_root(hv, lxc, root.path())
}

fn errors(d: &[Diagnostic]) -> Vec<&Diagnostic> {
    d.iter().filter(|d| d.is_error()).collect()
}

fn warnings(d: &[Diagnostic]) -> Vec<&Diagnostic> {
    d.iter().filter(|d| !d.is_error()).collect()
}

/// Exactly one error, at `pointer`, whose message contains every `needle`.
fn assert_one_error(d: &[Diagnostic], pointer: &str, needles: &[&str]) {
    let e = errors(d);
    assert_eq!(e.len(), 1, "expected one error, got: {d:#?}");
    assert_eq!(e[0].pointer, pointer, "{:#?}", e[0]);
    for n in needles {
        assert!(e[0].message.contains(n), "'{n}' not in '{}'", e[0].message);
    }
}

fn ct<'a>(lxc: &'a mut Value, id: &str) -> &'a mut serde_json::Map<String, Value> {
    lxc["lxc_configs"][id].as_object_mut().unwrap()
}

// -------------------------------------------------------------------------------------------
// Reference and sample configs

#[test]
fn reference_configs_and_samples_validate() {
    let pairs = [
        (
            fixture("upstream-185f0ab", paths::HYPERVISOR_CONFIG_NAME),
            fixture("upstream-185f0ab", paths::LXC_CONFIG_NAME),
        ),
        (
            fixture("upstream-214aa23", paths::HYPERVISOR_CONFIG_NAME),
            fixture("upstream-214aa23", paths::LXC_CONFIG_NAME),
        ),
        (
            repo().join("etc").join(paths::HYPERVISOR_CONFIG_NAME),
            repo().join("etc").join(paths::LXC_CONFIG_NAME),
        ),
    ];
    let root = tempfile::tempdir().unwrap();
    for (hv, lxc) in pairs {
        for etc in [repo().join("etc"), root.path().join("no-etc")] {
            let src = Sources {
                hypervisor_config: hv.clone(),
                lxc_config: lxc.clone(),
                etc_dir: etc,
                host_root: root.path().to_path_buf(),
            };
            let (configs, warns) = load_and_validate_from(&src)
                .unwrap_or_else(|r| panic!("{} is invalid:\n{r}", lxc.display()));
            assert_eq!(configs.lxc.lxc_configs.len(), 7);
            // 901, 903, 920 and 950 ask to be privileged but descend from the unprivileged 900;
            // 902, 903, 910 and 920 run Docker unprivileged without keyctl (it will be added).
            let w: Vec<_> = warns
                .iter()
                .map(|w| (w.ctid.unwrap().0, w.pointer.rsplit('/').next().unwrap()))
                .collect();
            assert_eq!(
                w,
                vec![
                    (901, "unprivileged"),
                    (902, "features"),
                    (903, "unprivileged"),
                    (903, "features"),
                    (910, "features"),
                    (920, "unprivileged"),
                    (920, "features"),
                    (950, "unprivileged"),
                ],
                "{warns:#?}"
            );
        }
    }
}

#[test]
fn embedded_schemas_are_the_shipped_files() {
    for (text, name) in [
        (EMBEDDED_HYPERVISOR_SCHEMA, paths::HYPERVISOR_SCHEMA_NAME),
        (EMBEDDED_LXC_SCHEMA, paths::LXC_SCHEMA_NAME),
    ] {
        assert_eq!(
            text,
            std::fs::read_to_string(repo().join("etc").join(name)).unwrap()
        );
    }
    Schema::embedded_hypervisor();
    Schema::embedded_lxc();
}

// -------------------------------------------------------------------------------------------
// Loading

#[test]
fn missing_file_and_bad_json_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("lxc.json");
    std::fs::write(&bad, "{\n  \"a\": 1,\n  oops\n}\n").unwrap();
    let src = Sources {
        hypervisor_config: dir.path().join("missing.json"),
        lxc_config: bad.clone(),
        etc_dir: dir.path().join("etc"),
        host_root: dir.path().to_path_buf(),
    };
    let report = load_and_validate_from(&src).unwrap_err();
    let e: Vec<_> = report.errors().collect();
    assert_eq!(e.len(), 2, "{report}");
    assert_eq!(e[0].file, dir.path().join("missing.json"));
    assert!(e[0].message.contains("cannot read"));
    assert_eq!(e[1].file, bad);
    assert_eq!(e[1].position, Some((3, 3)));
    assert!(
        e[1].to_string()
            .starts_with(&format!("{}:3:3: invalid JSON", bad.display()))
    );
    assert_eq!(report.summary(), "2 errors, 0 warnings");
    let err: crate::Error = report.into();
    assert_eq!(err.kind.exit_code(), 2);
}

#[test]
fn lxc_schema_comes_from_core_paths_when_that_file_exists() {
    let root = tempfile::tempdir().unwrap();
    let src = Sources {
        hypervisor_config: fixture("upstream-185f0ab", paths::HYPERVISOR_CONFIG_NAME),
        lxc_config: fixture("upstream-185f0ab", paths::LXC_CONFIG_NAME),
        etc_dir: repo().join("etc"),
        host_root: root.path().to_path_buf(),
    };
    assert!(load_and_validate_from(&src).is_ok());
    // Put the upstream schema (which rejects `features: ""`) where core_paths points.
    let at = root
        .path()
        .join("usr/local/phoenix_hypervisor/etc/phoenix_lxc_configs.schema.json");
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::copy(fixture("upstream-185f0ab", paths::LXC_SCHEMA_NAME), &at).unwrap();
    let hv = read(&src.hypervisor_config);
    let schema = lxc_schema(&src, Some(&hv)).unwrap();
    assert_eq!(schema.source, SchemaSource::File(at.clone()));
    let report = load_and_validate_from(&src).unwrap_err();
    let ptrs: Vec<_> = report.errors().map(|d| d.pointer.as_str()).collect();
    assert_eq!(
        ptrs,
        ["/lxc_configs/900/features", "/lxc_configs/901/features"]
    );
    // A broken schema file is an error naming it.
    std::fs::write(&at, "{").unwrap();
    let report = load_and_validate_from(&src).unwrap_err();
    assert_eq!(report.errors().next().unwrap().file, at);
}

// -------------------------------------------------------------------------------------------
// Schema

#[test]
fn schema_reports_every_problem_with_its_path() {
    let (mut hv, mut lxc) = reference();
    ct(&mut lxc, "900").insert("memory_mb".into(), json!("lots"));
    ct(&mut lxc, "901").insert("colour".into(), json!("red"));
    ct(&mut lxc, "902").remove("cores");
    let c = lxc["lxc_configs"]["910"].clone();
    lxc["lxc_configs"]
        .as_object_mut()
        .unwrap()
        .insert("99".into(), c);
    hv["network"]["portainer_server_ip"] = json!("10.0.0.999");
    hv["behavior"]["ready_timeout_s"] = json!(0);
    let d = check(&hv, &lxc);
    let mut got: Vec<(&str, &str)> = errors(&d)
        .iter()
        .map(|d| (d.file.to_str().unwrap(), d.pointer.as_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("hv.json", "/behavior/ready_timeout_s"),
            ("hv.json", "/network/portainer_server_ip"),
            ("lxc.json", "/lxc_configs/900/memory_mb"),
            ("lxc.json", "/lxc_configs/901/colour"),
            ("lxc.json", "/lxc_configs/902"),
            ("lxc.json", "/lxc_configs/99"),
        ],
        "{d:#?}"
    );
    let text: Vec<String> = d.iter().map(Diagnostic::line).collect();
    assert!(
        text.iter().any(|l| l.contains("unknown key 'colour'")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|l| l.contains("missing required key 'cores'"))
    );
    assert!(text.iter().any(|l| l.contains("'99' is not a valid CTID")));
    assert!(
        text.iter()
            .any(|l| l
                .contains("network.portainer_server_ip '10.0.0.999' is not a valid IPv4 address")),
        "{text:#?}"
    );
}

#[test]
fn any_proxmox_vmid_is_a_valid_key() {
    let (hv, mut lxc) = reference();
    let map = lxc["lxc_configs"].as_object_mut().unwrap();
    let c = map.remove("950").unwrap();
    map.insert("999999999".into(), c.clone());
    assert!(errors(&check(&hv, &lxc)).is_empty());
    for bad in ["1000000000", "0950", "95"] {
        let (hv, mut lxc) = reference();
        let map = lxc["lxc_configs"].as_object_mut().unwrap();
        map.remove("950");
        map.insert(bad.into(), c.clone());
        assert_one_error(&check(&hv, &lxc), &format!("/lxc_configs/{bad}"), &["CTID"]);
    }
}

#[test]
fn optional_docker_section_and_our_behavior_fields() {
    let (mut hv, lxc) = reference();
    hv["behavior"]["ready_timeout_s"] = json!(300);
    hv["behavior"]["shutdown_timeout_s"] = json!(30);
    assert!(errors(&check(&hv, &lxc)).is_empty());
    hv.as_object_mut().unwrap().remove("docker");
    assert!(errors(&check(&hv, &lxc)).is_empty());
    hv["docker"] = json!({"portainer_server_image": "x:1", "portainer_agnet_image": "y"});
    assert_one_error(
        &check(&hv, &lxc),
        "/docker/portainer_agnet_image",
        &["unknown key"],
    );
}

#[test]
fn external_registry_url_keeps_the_upstream_form() {
    let (mut hv, lxc) = reference();
    hv["network"]["external_registry_url"] = json!("https://registry.example.com:5000/team");
    assert!(errors(&check(&hv, &lxc)).is_empty());
    hv["network"]["external_registry_url"] = json!("docker.io/Sir Heads");
    assert_one_error(&check(&hv, &lxc), "/network/external_registry_url", &[]);
}

// -------------------------------------------------------------------------------------------
// Clone sources

#[test]
fn clone_source_must_be_defined() {
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "950").insert("clone_from_template_ctid".into(), json!("905"));
    assert_one_error(
        &check(&hv, &lxc),
        "/lxc_configs/950/clone_from_template_ctid",
        &["CT 950", "905", "not defined"],
    );
}

#[test]
fn clone_source_must_be_a_template_with_a_snapshot() {
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "950").insert("clone_from_template_ctid".into(), json!("910"));
    assert_one_error(
        &check(&hv, &lxc),
        "/lxc_configs/950/clone_from_template_ctid",
        &["CT 950", "910 is not a template"],
    );
    // A source with is_template false is not a template either.
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "920").insert("is_template".into(), json!(false));
    ct(&mut lxc, "920").remove("template_snapshot_name");
    assert_one_error(
        &check(&hv, &lxc),
        "/lxc_configs/950/clone_from_template_ctid",
        &["920 is not a template"],
    );
    // A template source without its snapshot name: the clone and the template are both wrong.
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "920").remove("template_snapshot_name");
    let d = check(&hv, &lxc);
    let e = errors(&d);
    assert_eq!(e.len(), 2, "{d:#?}");
    assert_eq!(e[0].pointer, "/lxc_configs/920");
    assert!(e[0].message.contains("template_snapshot_name is missing"));
    assert_eq!(e[1].pointer, "/lxc_configs/950/clone_from_template_ctid");
    assert!(e[1].message.contains("no template_snapshot_name"));
}

#[test]
fn template_needs_a_snapshot_name() {
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "903").remove("template_snapshot_name");
    ct(&mut lxc, "920").insert("clone_from_template_ctid".into(), json!("902"));
    ct(&mut lxc, "920").insert("unprivileged".into(), json!(true));
    assert_one_error(
        &check(&hv, &lxc),
        "/lxc_configs/903",
        &["CT 903", "template_snapshot_name is missing"],
    );
}

#[test]
fn clone_cycles_are_named() {
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "901").insert("clone_from_template_ctid".into(), json!("902"));
    ct(&mut lxc, "902").insert("clone_from_template_ctid".into(), json!("901"));
    ct(&mut lxc, "902").insert("unprivileged".into(), json!(false));
    assert_one_error(
        &check(&hv, &lxc),
        "/lxc_configs/901/clone_from_template_ctid",
        &["cycle: 901 -> 902 -> 901"],
    );
    // A template cloned from itself.
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "900").insert("clone_from_template_ctid".into(), json!("900"));
    assert_one_error(
        &check(&hv, &lxc),
        "/lxc_configs/900/clone_from_template_ctid",
        &["cycle: 900 -> 900"],
    );
}

// -------------------------------------------------------------------------------------------
// Duplicates and host-facing values

#[test]
fn duplicates_are_errors_on_the_later_ct() {
    for (field, value, ptr, needle) in [
        (
            "mac_address",
            json!("52:54:00:aa:bb:cc"),
            "/lxc_configs/950/mac_address",
            "used by CT 900",
        ),
        (
            "name",
            json!("basetemplate"),
            "/lxc_configs/950/name",
            "used by CT 900",
        ),
    ] {
        let (hv, mut lxc) = reference();
        ct(&mut lxc, "950").insert(field.into(), value);
        assert_one_error(&check(&hv, &lxc), ptr, &["CT 950", needle]);
    }
    let (hv, mut lxc) = reference();
    lxc["lxc_configs"]["950"]["network_config"]["ip"] = json!("10.0.0.99/16");
    ct(&mut lxc, "950").insert("static_ip".into(), json!("10.0.0.99/16"));
    assert_one_error(
        &check(&hv, &lxc),
        "/lxc_configs/950/network_config/ip",
        &["10.0.0.99", "used by CT 910"],
    );
}

#[test]
fn names_must_be_hostnames() {
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "950").insert("name".into(), json!("vllm_qwen"));
    // The parse message replaces the schema's pattern error at the same path (accepted and
    // refused hostnames: `types::tests`).
    assert_one_error(
        &check(&hv, &lxc),
        "/lxc_configs/950/name",
        &["CT 950", "'_'"],
    );
}

#[test]
fn macs_must_be_unicast() {
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "950").insert("mac_address".into(), json!("53:54:00:67:89:B0"));
    assert_one_error(
        &check(&hv, &lxc),
        "/lxc_configs/950/mac_address",
        &["CT 950", "multicast", "52:54:00:67:89:B0"],
    );
}

#[test]
fn features_must_be_known_keys_with_0_or_1() {
    for (bad, needle) in [
        ("nesting=1,foo=1", "unknown key 'foo'"),
        ("nesting=2", "must be 0 or 1"),
        ("nesting=1,nesting=0", "more than once"),
        ("nesting", "not key=value"),
    ] {
        let (hv, mut lxc) = reference();
        ct(&mut lxc, "950").insert("features".into(), json!(bad));
        assert_one_error(
            &check(&hv, &lxc),
            "/lxc_configs/950/features",
            &["CT 950", needle],
        );
    }
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "950").insert(
        "features".into(),
        json!("nesting=1,keyctl=1,fuse=0,mknod=1,force_rw_sys=0,mount=nfs;cifs"),
    );
    ct(&mut lxc, "910").insert("features".into(), json!(""));
    assert!(errors(&check(&hv, &lxc)).is_empty());
}

#[test]
fn snapshot_names_follow_proxmox() {
    for bad in [
        "1x",
        "a",
        "current",
        "vzdump",
        "has space",
        "configured-state",
        &format!("s{}", "x".repeat(40)),
    ] {
        let (hv, mut lxc) = reference();
        ct(&mut lxc, "920").insert("template_snapshot_name".into(), json!(bad));
        assert_one_error(
            &check(&hv, &lxc),
            "/lxc_configs/920/template_snapshot_name",
            &["CT 920"],
        );
    }
}

#[test]
fn tensor_parallel_size_fits_the_gpus() {
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "950").insert("gpu_assignment".into(), json!("0"));
    assert_one_error(
        &check(&hv, &lxc),
        "/lxc_configs/950/vllm_tensor_parallel_size",
        &["CT 950", "2 is larger than the 1 GPU"],
    );
    ct(&mut lxc, "950").insert("vllm_tensor_parallel_size".into(), json!(1));
    assert!(errors(&check(&hv, &lxc)).is_empty());
}

#[test]
fn agents_need_the_portainer_server_ip() {
    let (mut hv, mut lxc) = reference();
    hv["network"]
        .as_object_mut()
        .unwrap()
        .remove("portainer_server_ip");
    assert_one_error(
        &check(&hv, &lxc),
        "/lxc_configs/950/portainer_role",
        &["CT 950", "network.portainer_server_ip"],
    );
    ct(&mut lxc, "950").insert("portainer_role".into(), json!("none"));
    assert!(errors(&check(&hv, &lxc)).is_empty());
}

// -------------------------------------------------------------------------------------------
// Warnings

#[test]
fn clone_with_other_unprivileged_warns() {
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "910").insert("unprivileged".into(), json!(false));
    let d = check(&hv, &lxc);
    assert!(errors(&d).is_empty());
    let w: Vec<_> = warnings(&d)
        .into_iter()
        .filter(|w| w.pointer.ends_with("/unprivileged"))
        .collect();
    assert_eq!(w.len(), 5);
    let w910 = w.iter().find(|w| w.ctid == Some(Ctid(910))).unwrap();
    assert_eq!(w910.pointer, "/lxc_configs/910/unprivileged");
    assert!(w910.message.contains("will be unprivileged like 902"));
    // Matching values: no such warning for 910 (the reference's 901, 903, 920, 950 remain).
    let (hv, lxc) = reference();
    assert!(
        !check(&hv, &lxc)
            .iter()
            .any(|w| w.ctid == Some(Ctid(910)) && w.pointer.ends_with("/unprivileged"))
    );
}

#[test]
fn static_ip_that_differs_warns() {
    let (hv, mut lxc) = reference();
    ct(&mut lxc, "910").insert("static_ip".into(), json!("10.0.0.98/24"));
    let d = check(&hv, &lxc);
    assert!(errors(&d).is_empty());
    let w = d
        .iter()
        .find(|w| w.ctid == Some(Ctid(910)) && w.pointer.ends_with("static_ip"))
        .unwrap();
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(w.pointer, "/lxc_configs/910/static_ip");
    assert!(w.message.contains("10.0.0.98/24") && w.message.contains("10.0.0.99/24"));
}

#[test]
fn token_files_others_can_read_warn_with_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    let (hv, lxc) = reference();
    let root = tempfile::tempdir().unwrap();
    let f = root
        .path()
        .join("usr/local/phoenix_hypervisor/etc/phoenix_hf_token.conf");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, "hf_x\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = check_with_root(&hv, &lxc, root.path());
    let w: Vec<_> = d
        .iter()
        .filter(|d| d.file == Path::new("hv.json"))
        .collect();
    assert_eq!(w.len(), 1, "{d:#?}");
    assert_eq!(w[0].severity, Severity::Warning);
    assert_eq!(w[0].pointer, "/core_paths/hf_token_file");
    assert!(w[0].message.contains("mode 0644"), "{}", w[0].message);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    let d = check_with_root(&hv, &lxc, root.path());
    assert!(!d.iter().any(|d| d.file == Path::new("hv.json")));
}

#[test]
fn parse_reports_every_bad_value_at_its_pointer_in_one_run() {
    let (mut hv, mut lxc) = reference();
    hv["docker"]["portainer_agent_image"] = json!("portainer/agent:2.33.1-lts; reboot");
    lxc["nvidia_driver_version"] = json!("580.76.05;reboot");
    lxc["lxc_configs"]["900"]["network_config"]["bridge"] = json!("vmbr0,ip=dhcp");
    lxc["lxc_configs"]["900"]["storage_pool"] = json!("lxc;disks");
    lxc["lxc_configs"]["950"]["template"] = json!("../t.tar.zst");
    let d = check(&hv, &lxc);
    let mut got: Vec<(&str, &str)> = errors(&d)
        .iter()
        .map(|e| (e.file.to_str().unwrap(), e.pointer.as_str()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("hv.json", "/docker/portainer_agent_image"),
            ("lxc.json", "/lxc_configs/900/network_config/bridge"),
            ("lxc.json", "/lxc_configs/900/storage_pool"),
            ("lxc.json", "/lxc_configs/950/template"),
            ("lxc.json", "/nvidia_driver_version"),
        ],
        "{d:#?}"
    );
    // Each names the field and the value.
    for (field, value) in [
        (
            "docker.portainer_agent_image",
            "portainer/agent:2.33.1-lts; reboot",
        ),
        ("nvidia_driver_version", "580.76.05;reboot"),
        ("network_config.bridge", "vmbr0,ip=dhcp"),
        ("storage_pool", "lxc;disks"),
        ("template", "../t.tar.zst"),
    ] {
        let needle = format!("{field} '{value}' is not a valid");
        assert!(
            d.iter().any(|e| e.message.contains(&needle)),
            "{needle}: {d:#?}"
        );
    }
}
