//! Every `pct` argv the steps emit validates against Proxmox's API schema
//! (`crates/pve-sim/data/lxc-api-params.json`, PVE 9.1): option names exist for the endpoint,
//! values have the declared type, range, enum, length and pattern, and property strings
//! (`net0`, `features`, `rootfs`) only use known keys with valid values. A small test-only
//! checker; it is strict where our argv has values and lenient only for formats we never emit.
//! A property test mutates the reference configuration at random: whatever validation accepts
//! must yield only argv this checker accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lib_common::config::{self, LxcConfigFile};
use lib_common::pct::{self, CloneSpec, CreateSpec, PctConfig};
use lib_common::steps::clone::settings_diff;
use proptest::prelude::*;
use regex::Regex;
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn api() -> Value {
    let p = workspace().join("crates/pve-sim/data/lxc-api-params.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Endpoint and positional parameter names of each pct subcommand.
fn endpoint(sub: &str) -> (&'static str, &'static [&'static str]) {
    match sub {
        "create" => ("POST /nodes/{node}/lxc", &["vmid", "ostemplate"]),
        "clone" => ("POST /nodes/{node}/lxc/{vmid}/clone", &["vmid", "newid"]),
        "set" => ("PUT /nodes/{node}/lxc/{vmid}/config", &["vmid"]),
        "start" => ("POST /nodes/{node}/lxc/{vmid}/status/start", &["vmid"]),
        "stop" => ("POST /nodes/{node}/lxc/{vmid}/status/stop", &["vmid"]),
        "shutdown" => ("POST /nodes/{node}/lxc/{vmid}/status/shutdown", &["vmid"]),
        "snapshot" => (
            "POST /nodes/{node}/lxc/{vmid}/snapshot",
            &["vmid", "snapname"],
        ),
        "delsnapshot" => (
            "DELETE /nodes/{node}/lxc/{vmid}/snapshot/{snapname}",
            &["vmid", "snapname"],
        ),
        "destroy" => ("DELETE /nodes/{node}/lxc/{vmid}", &["vmid"]),
        "template" => ("POST /nodes/{node}/lxc/{vmid}/template", &["vmid"]),
        other => panic!("no endpoint known for `pct {other}`"),
    }
}

/// `net0` → `net[n]`.
fn schema_name(opt: &str) -> String {
    let base = opt.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() < opt.len() {
        format!("{base}[n]")
    } else {
        opt.to_string()
    }
}

fn perl_pattern(p: &str) -> Regex {
    let p = p.replace("(?^:", "(?:");
    Regex::new(&format!("^(?:{p})$")).unwrap_or_else(|e| panic!("pattern {p}: {e}"))
}

fn is_bool(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "0" | "on" | "off" | "yes" | "no" | "true" | "false"
    )
}

/// The named formats our argv uses, checked; other named formats are accepted.
fn check_format(name: &str, v: &str) -> Result<(), String> {
    let re = |r: &str| Regex::new(r).unwrap().is_match(v);
    let ok = match name {
        "pve-vmid" => re(r"^[1-9][0-9]{2,8}$"),
        "dns-name" => re(
            r"^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$",
        ),
        "pve-configid" => re(r"(?i)^[a-z][a-z0-9_-]+$"),
        "pve-storage-id" => re(r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$"),
        "mac-addr" => re(r"(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$"),
        "ipv4" => v.parse::<std::net::Ipv4Addr>().is_ok(),
        "pve-ipv4-config" => {
            v == "dhcp"
                || v == "manual"
                || v.split_once('/').is_some_and(|(ip, l)| {
                    ip.parse::<std::net::Ipv4Addr>().is_ok()
                        && l.parse::<u8>().is_ok_and(|l| (8..=32).contains(&l))
                })
        }
        "pve-lxc-mp-string" => re(r"^([^:\s]+):(\d+(\.\d+)?)$") || re(r"^[^:\s]+:[^\s,]+$"),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid format {name}: {v:?}"))
    }
}

/// Check one value against one (sub-)schema.
fn check_value(schema: &Value, v: &str) -> Result<(), String> {
    let ty = schema["type"].as_str().unwrap_or("string");
    match ty {
        "integer" => {
            let n: i64 = v
                .parse()
                .map_err(|_| format!("type check ('integer') failed - got '{v}'"))?;
            if let Some(min) = num(&schema["minimum"])
                && (n as f64) < min
            {
                return Err(format!("{n} below minimum {min}"));
            }
            if let Some(max) = num(&schema["maximum"])
                && (n as f64) > max
            {
                return Err(format!("{n} above maximum {max}"));
            }
        }
        "number" => {
            v.parse::<f64>()
                .map_err(|_| format!("type check ('number') failed - got '{v}'"))?;
        }
        "boolean" => {
            if !is_bool(v) {
                return Err(format!("unable to parse boolean '{v}'"));
            }
        }
        _ => {
            if let Some(e) = schema["enum"].as_array()
                && !e.iter().any(|x| x.as_str() == Some(v))
            {
                return Err(format!("'{v}' not in enumeration {e:?}"));
            }
            if let Some(max) = schema["maxLength"].as_u64()
                && v.chars().count() as u64 > max
            {
                return Err(format!("longer than {max}"));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && (v.chars().count() as u64) < min
            {
                return Err(format!("shorter than {min}"));
            }
            if let Some(p) = schema["pattern"].as_str()
                && !perl_pattern(p).is_match(v)
            {
                return Err(format!("'{v}' does not match the regex pattern {p}"));
            }
            match &schema["format"] {
                Value::String(f) => check_format(f, v)?,
                Value::Object(props) => check_property_string(props, v)?,
                _ => {}
            }
        }
    }
    Ok(())
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// `k=v,k=v` against a property-string format (with its optional default key).
fn check_property_string(props: &serde_json::Map<String, Value>, v: &str) -> Result<(), String> {
    let mut seen = BTreeMap::new();
    for item in v.split(',') {
        let (k, val) = match item.split_once('=') {
            Some((k, val)) => (k.to_string(), val),
            None => {
                let Some((dk, _)) = props.iter().find(|(_, s)| s["default_key"] == 1) else {
                    return Err(format!(
                        "value without key, but schema does not define a default key: {item}"
                    ));
                };
                (dk.clone(), item)
            }
        };
        let Some(sub) = props.get(&k) else {
            return Err(format!("invalid key in comma-separated list property: {k}"));
        };
        if seen.insert(k.clone(), ()).is_some() {
            return Err(format!(
                "duplicate key in comma-separated list property: {k}"
            ));
        }
        check_value(sub, val).map_err(|e| format!("{k}: {e}"))?;
    }
    for (k, sub) in props {
        let optional = sub["optional"] == 1 || sub["default_key"] == 1 && seen.contains_key(k);
        if !optional && !seen.contains_key(k) {
            return Err(format!("{k}: property is missing and it is not optional"));
        }
    }
    Ok(())
}

/// Check a whole argv (without the leading `pct`). Returns every problem.
fn check_argv(api: &Value, argv: &[String]) -> Result<(), Vec<String>> {
    let (ep, positional) = endpoint(&argv[0]);
    let props = api["endpoints"][ep]["parameters"]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("endpoint {ep} missing"));
    let mut errors = Vec::new();
    let mut rest = argv[1..].iter();
    for name in positional {
        match rest.next() {
            Some(v) => {
                if let Err(e) = check_value(&props[*name], v) {
                    errors.push(format!("{name}: {e}"));
                }
            }
            None => errors.push("400 not enough arguments".into()),
        }
    }
    while let Some(opt) = rest.next() {
        let Some(name) = opt.strip_prefix("--") else {
            errors.push(format!("400 too many arguments: {opt}"));
            continue;
        };
        let key = schema_name(name);
        let Some(schema) = props.get(&key).filter(|_| !positional.contains(&name)) else {
            errors.push(format!("Unknown option: {name}"));
            continue;
        };
        let Some(value) = rest.next() else {
            errors.push(format!("{name}: missing value"));
            continue;
        };
        if name == "delete" {
            for k in value.split(',') {
                if !props.contains_key(&schema_name(k)) {
                    errors.push(format!("delete: unknown option '{k}'"));
                }
            }
            continue;
        }
        if let Err(e) = check_value(schema, value) {
            errors.push(format!("{name}: {e}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Every argv the steps build from both reference configurations.
fn emitted_argvs() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for rev in ["upstream-185f0ab", "upstream-214aa23"] {
        let p = workspace()
            .join("tests/fixtures")
            .join(rev)
            .join("phoenix_lxc_configs.json");
        let v = config::parse_json(&p, &config::read_file(&p).unwrap()).unwrap();
        let lxc: LxcConfigFile = config::from_value(&p, v).unwrap();
        out.extend(argvs_for(&lxc));
    }
    out
}

/// Every argv the steps build for the containers of one configuration: create, clone from the
/// block's source, the `pct set` of a fresh clone, shutdown, the template snapshot.
fn argvs_for(lxc: &LxcConfigFile) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (ctid, spec) in &lxc.lxc_configs {
        out.push(CreateSpec::from_spec(*ctid, spec).args());
        if let Some(src) = spec.clone_source()
            && let Some(snap) = lxc
                .lxc_configs
                .get(&src)
                .and_then(|s| s.template_snapshot_name.as_ref())
        {
            out.push(
                CloneSpec {
                    source: src,
                    target: *ctid,
                    snapname: Some(snap.clone()),
                    hostname: spec.name.clone(),
                    full: true,
                    storage: Some(spec.storage_pool.clone()),
                }
                .args(),
            );
        }
        // What clone-lxc sets on a fresh clone (everything differs from an empty config).
        let (set, delete) = settings_diff(spec, &PctConfig::default());
        let pairs: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
        out.push(pct::set_args(*ctid, &pairs));
        let features_only = PctConfig::parse("features: nesting=1\n");
        let (_, del) = settings_diff(spec, &features_only);
        if !del.is_empty() {
            out.push(pct::set_delete_args(*ctid, &del));
        }
        assert!(delete.is_empty());
        out.push(pct::shutdown_args(*ctid, 60, true));
        if let Some(s) = &spec.template_snapshot_name {
            out.push(vec!["snapshot".into(), ctid.to_string(), s.to_string()]);
        }
    }
    out
}

#[test]
fn every_emitted_argv_validates_against_the_api_schema() {
    let api = api();
    let argvs = emitted_argvs();
    assert!(argvs.len() > 30, "walked only {} argvs", argvs.len());
    let mut failures = Vec::new();
    for a in &argvs {
        if let Err(e) = check_argv(&api, a) {
            failures.push(format!("pct {}: {}", pct::display_argv(a), e.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn checker_rejects_what_proxmox_rejects() {
    let api = api();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let bad = [
        s(&[
            "create",
            "900",
            "/t.tar.zst",
            "--hwaddress",
            "52:54:00:AA:BB:CC",
        ]),
        s(&["create", "900", "/t.tar.zst", "--hostname", "a_b"]),
        s(&["create", "900", "/t.tar.zst", "--net0", "bridge=vmbr0"]),
        s(&["create", "900", "/t.tar.zst", "--net0", "name=eth0,mac=x"]),
        s(&[
            "create",
            "900",
            "/t.tar.zst",
            "--net0",
            "name=eth0,hwaddr=53:54:00:AA:BB:CC",
        ]),
        s(&["create", "900", "/t.tar.zst", "--features", "nesting=2"]),
        s(&["create", "900", "/t.tar.zst", "--memory", "8"]),
        s(&["create", "90", "/t.tar.zst"]),
        s(&["clone", "900", "901", "--snapname", "1x"]),
        s(&["set", "900", "--delete", "foo"]),
        s(&["set", "900", "--cores", "two"]),
        s(&["shutdown", "900", "--force", "1"]),
    ];
    for a in &bad {
        assert!(check_argv(&api, a).is_err(), "accepted: {a:?}");
    }
    let good = s(&[
        "create",
        "900",
        "local:vztmpl/debian.tar.zst",
        "--rootfs",
        "local-zfs:8",
        "--net0",
        "name=eth0,bridge=vmbr0,ip=dhcp",
    ]);
    check_argv(&api, &good).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Property: whatever `--validate` accepts yields only argv the API schema accepts.

/// The fields a mutation may set (JSON Pointer below a CT block) and the text it puts there:
/// mostly near-valid values (so many configurations pass validation), some arbitrary
/// printable text and some non-ASCII.
fn mutation() -> impl Strategy<Value = (usize, &'static str, Value)> {
    let printable = "[ -~]{0,14}";
    let text =
        |near: &'static str| prop_oneof![8 => near, 1 => printable, 1 => "[a-zé`;\\n ]{1,6}"];
    let field = prop_oneof![
        text("[a-zA-Z0-9-]{1,10}(\\.[a-zA-Z0-9-]{1,6})?").prop_map(|v| ("/name", Value::from(v))),
        text("[a-zA-Z0-9._-]{1,10}").prop_map(|v| ("/storage_pool", Value::from(v))),
        text("(/[a-zA-Z0-9._-]{1,8}){1,3}|[a-z]{1,5}:vztmpl/[a-z.]{1,8}")
            .prop_map(|v| ("/template", Value::from(v))),
        text("[a-zA-Z0-9._,=-]{1,17}").prop_map(|v| ("/network_config/name", Value::from(v))),
        text("[a-zA-Z0-9._,=-]{1,17}").prop_map(|v| ("/network_config/bridge", Value::from(v))),
        text("1?[0-9]{1,2}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,2}")
            .prop_map(|v| ("/network_config/ip", Value::from(v))),
        text("1?[0-9]{1,2}(\\.[0-9]{1,3}){3}").prop_map(|v| ("/network_config/gw", Value::from(v))),
        text("[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}").prop_map(|v| ("/mac_address", Value::from(v))),
        text("((nesting|keyctl|fuse|mknod|force_rw_sys|mount|foo)=[a-z0-9;]{1,4},){0,3}(nesting|keyctl)=[01]")
            .prop_map(|v| ("/features", Value::from(v))),
        text("[a-zA-Z][a-zA-Z0-9_ -]{0,12}")
            .prop_map(|v| ("/template_snapshot_name", Value::from(v))),
        text("none|[0-9]{1,3}(,[0-9]{1,3}){0,2}").prop_map(|v| ("/gpu_assignment", Value::from(v))),
        (0u64..300_000).prop_map(|v| ("/memory_mb", Value::from(v))),
        (0u64..100).prop_map(|v| ("/cores", Value::from(v))),
        (0u64..2_000).prop_map(|v| ("/storage_size_gb", Value::from(v))),
    ];
    (0usize..7, field).prop_map(|(ct, (ptr, v))| (ct, ptr, v))
}

fn set(block: &mut Value, ptr: &str, v: Value) {
    let (parent, key) = ptr.rsplit_once('/').unwrap();
    let obj = if parent.is_empty() {
        block
    } else {
        block.pointer_mut(parent).unwrap()
    };
    obj.as_object_mut().unwrap().insert(key.to_string(), v);
}

#[test]
fn whatever_validation_accepts_yields_argv_the_api_schema_accepts() {
    use lib_common::validate::{Documents, Schema, check_documents};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    let api = api();
    let dir = workspace().join("tests/fixtures/upstream-214aa23");
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let hv = read("phoenix_hypervisor_config.json");
    let reference = read("phoenix_lxc_configs.json");
    let ctids: Vec<String> = reference["lxc_configs"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let (hv_schema, lxc_schema) = (Schema::embedded_hypervisor(), Schema::embedded_lxc());
    let root = tempfile::tempdir().unwrap();
    let accepted = std::cell::Cell::new(0usize);
    let refused = std::cell::Cell::new(0usize);

    // A fixed seed: the same 400 configurations every run (a test that passes or fails by
    // chance is no test), and the counts below are stable.
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 400,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let result = runner.run(&proptest::collection::vec(mutation(), 1..5), |mutations| {
        let mut lxc = reference.clone();
        for (ct, ptr, v) in &mutations {
            set(&mut lxc["lxc_configs"][&ctids[*ct]], ptr, v.clone());
        }
        let out = check_documents(
            &Documents {
                hypervisor_path: Path::new("hv.json"),
                hypervisor: Some(&hv),
                lxc_path: Path::new("lxc.json"),
                lxc: Some(&lxc),
            },
            Some(&hv_schema),
            Some(&lxc_schema),
            root.path(),
        );
        let valid = !out.diagnostics.iter().any(|d| d.is_error());
        let Some(configs) = out.configs.filter(|_| valid) else {
            refused.set(refused.get() + 1);
            return Ok(());
        };
        accepted.set(accepted.get() + 1);
        for a in argvs_for(&configs.lxc) {
            if let Err(e) = check_argv(&api, &a) {
                return Err(proptest::test_runner::TestCaseError::fail(format!(
                    "validation accepted {mutations:?} but `pct {}` is refused: {}",
                    pct::display_argv(&a),
                    e.join("; ")
                )));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!("accepted {}, refused {}", accepted.get(), refused.get());
    // The property is only worth something if both sides are exercised.
    assert!(
        accepted.get() >= 40 && refused.get() >= 40,
        "accepted {}, refused {}",
        accepted.get(),
        refused.get()
    );
}
