//! Drift (issue 13) against pve-sim: configuration edits and by-hand `pct set` shown by
//! `--dry-run` and `--status`, applied by a run (a further run changes nothing), a smaller disk
//! reported for `--recreate` and never attempted, `--recreate` of a template only with its
//! clones, and CTs of ours dropped from the configuration listed, kept, and destroyed by
//! `--prune` (never a CT without the mark).
//!
//! Every test builds the branch 900 → 902 → 910 of the reference tree (`--only 910`), with
//! lxc-docker replaced by a drop-in that does nothing (Docker is not what these tests are about).

use phoenix_e2e::{Host, Run};
use serde_json::{Value, json};

const BRANCH: [u32; 3] = [900, 902, 910];

/// The reference host with 900, 902 and 910 built.
fn built() -> Host {
    let host = Host::reference();
    host.install();
    host.remove_setup_programs(&[900, 901, 902, 903, 910, 920, 950]);
    host.drop_in("phoenix_hypervisor_lxc_docker", "echo \"stub: CT $1\"");
    host.drop_in(
        "phoenix_hypervisor_lxc_nvidia",
        &format!(
            "{}\necho \"stub: CT $1\"",
            phoenix_e2e::NVIDIA_STUB_PASSTHROUGH
        ),
    );
    host.establish(&["--only", "910"]).ok();
    host
}

fn set(host: &Host, ctid: u32, field: &str, value: serde_json::Value) {
    host.edit_lxc_config(|v| v["lxc_configs"][ctid.to_string()][field] = value);
}

/// The configuration without the CTs that were not built (so that `--status` can be in sync).
fn only_branch(host: &Host) {
    host.edit_lxc_config(|v| {
        let cts = v["lxc_configs"].as_object_mut().unwrap();
        cts.retain(|k, _| BRANCH.iter().any(|c| c.to_string() == *k));
    });
}

/// stdout as the one JSON document, checked against the shipped schema.
#[track_caller]
fn json_doc(r: &Run) -> Value {
    let schema_path = phoenix_e2e::workspace_root().join("etc/phoenix_output.schema.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let doc: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}\n--- stderr\n{}",
            r.stdout, r.stderr
        )
    });
    let validator = jsonschema::draft7::new(&schema).expect("the output schema compiles");
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}\n{doc:#}");
    assert_eq!(doc["exit_code"], r.code, "{doc:#}");
    doc
}

/// The entry of `ctid` in the document's `containers`.
fn entry(doc: &Value, ctid: u32) -> &Value {
    doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ctid"] == ctid)
        .unwrap_or_else(|| panic!("no CT {ctid} in {doc:#}"))
}

#[track_caller]
fn contains(r: &Run, want: &str) {
    assert!(
        r.stdout.contains(want),
        "`{want}` missing in stdout:\n{}\n--- stderr\n{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn config_edits_show_in_the_plan_are_applied_and_a_further_run_is_a_no_op() {
    let host = built();
    only_branch(&host);
    host.establish(&["--status"]).ok();
    set(&host, 910, "memory_mb", json!(65536));
    set(&host, 910, "cores", json!(8));
    set(&host, 910, "storage_size_gb", json!(160));
    set(&host, 910, "onboot", json!(true));
    set(&host, 910, "tags", json!("web;prod"));
    let mark = host.journal_mark();
    let r = host.establish(&["--dry-run"]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    for want in [
        "[910] has configured-state; drift from its block, would change:",
        "memory_mb: 32768 -> 65536 (in place)",
        "cores: 6 -> 8 (in place)",
        "storage_size_gb: 128 -> 160 (in place)",
        "onboot: (unset) -> 1 (in place)",
        "tags: phoenix-managed -> web;prod;phoenix-managed (in place)",
        "[900] up to date (has configured-state): nothing to do",
    ] {
        contains(&r, want);
    }
    let r = host.establish(&["--status"]).expect_code(1);
    contains(&r, "memory_mb: 32768 -> 65536");
    // The same plan as one JSON document; the human lines go to stderr.
    let mark = host.journal_mark();
    let r = host.establish(&["--dry-run", "--output", "json"]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    let doc = json_doc(&r);
    assert_eq!(doc["mode"], "dry_run");
    assert!(
        r.stderr.contains("[910] has configured-state; drift"),
        "{}",
        r.stderr
    );
    let drift = &entry(&doc, 910)["drift"];
    assert!(
        drift.as_array().unwrap().contains(
            &json!({"field": "memory_mb", "old": "32768", "new": "65536", "class": "in_place"})
        ),
        "{drift:#}"
    );
    assert!(drift.as_array().unwrap().contains(
        &json!({"field": "storage_size_gb", "old": "128", "new": "160", "class": "in_place"})
    ));
    assert_eq!(entry(&doc, 900)["drift"], json!([]));
    let r = host
        .establish(&["--status", "--output", "json"])
        .expect_code(1);
    let doc = json_doc(&r);
    assert_eq!(doc["in_sync"], false);
    assert_eq!(entry(&doc, 910)["drift"].as_array().unwrap().len(), 5);
    // The run applies them, and says so.
    let mark = host.journal_mark();
    let r = host.establish(&["--output", "json"]).ok();
    let doc = json_doc(&r);
    assert_eq!(doc["mode"], "run");
    assert_eq!(entry(&doc, 910)["result"], "updated (5 change(s))");
    assert_eq!(entry(&doc, 900)["result"], "up to date");
    let r = Run {
        stdout: r.stderr.clone(),
        ..r
    };
    let mutating = host.mutating_since(mark);
    assert_eq!(
        mutating,
        [
            "pct set 910 --memory 65536 --cores 8 --onboot 1 --tags web;prod;phoenix-managed",
            "pct resize 910 rootfs 160G",
        ],
        "{}",
        r.stdout
    );
    contains(
        &r,
        "[910] drift applied: memory_mb: 32768 -> 65536 (in place)",
    );
    contains(&r, "updated (5 change(s))");
    let main = host.conf_main(910);
    for want in [
        "memory: 65536",
        "cores: 8",
        "onboot: 1",
        "size=160G",
        "phoenix-managed",
    ] {
        assert!(main.contains(want), "`{want}` missing in\n{main}");
    }
    // The snapshot keeps what the steps built (the documented decision).
    let snap = host.conf(910).unwrap();
    let snap = snap.split("[configured-state]").nth(1).unwrap();
    assert!(snap.contains("memory: 32768"), "{snap}");
    // Converged: a further run changes nothing, --status says so.
    let mark = host.journal_mark();
    let r = host.establish(&[]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    contains(&r, "[910] up to date");
    let r = host.establish(&["--status", "--output", "json"]).ok();
    assert_eq!(json_doc(&r)["in_sync"], true);
    let r = host.establish(&["--status"]).ok();
    contains(&r, "in sync: the host matches the configuration");
    contains(
        &r,
        "[910] Portainer: exists, running, ours, configured-state; no drift",
    );
}

#[test]
fn a_change_by_hand_is_seen_by_status_and_put_back_by_a_run() {
    let host = built();
    only_branch(&host);
    host.pct(&["set", "910", "--memory", "1024", "--cores", "2"])
        .ok();
    let mark = host.journal_mark();
    let r = host.establish(&["--status"]).expect_code(1);
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    contains(
        &r,
        "[910] Portainer: exists, running, ours, configured-state; drift: ",
    );
    contains(&r, "memory_mb: 1024 -> 32768 (in place)");
    contains(&r, "cores: 2 -> 6 (in place)");
    contains(&r, "not in sync");
    host.establish(&[]).ok();
    assert!(host.conf_main(910).contains("memory: 32768"));
    host.establish(&["--status"]).ok();
}

#[test]
fn a_smaller_disk_is_reported_for_recreate_and_never_attempted() {
    let host = built();
    only_branch(&host);
    set(&host, 910, "storage_size_gb", json!(100));
    let r = host.establish(&["--dry-run"]).ok();
    contains(&r, "storage_size_gb: 128 -> 100 (needs recreate)");
    contains(&r, "not done: `--recreate 910` destroys and rebuilds it");
    let mark = host.journal_mark();
    let r = host.establish(&[]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    contains(&r, "needs --recreate: storage_size_gb");
    host.establish(&["--status"]).expect_code(1);
    // --recreate rebuilds it with the configured disk.
    let r = host.establish(&["--recreate", "910"]).ok();
    contains(&r, "[910] recreate (--recreate): stop, destroy ... ok");
    assert!(
        host.conf_main(910).contains("size=100G"),
        "{}",
        host.conf_main(910)
    );
    host.establish(&["--status"]).ok();
}

#[test]
fn a_template_is_recreated_only_with_the_cts_cloned_from_it() {
    let host = built();
    only_branch(&host);
    let mark = host.journal_mark();
    let r = host.establish(&["--recreate", "902"]).expect_code(2);
    assert!(
        r.stderr
            .contains("not the existing CT(s) cloned from it: 910"),
        "{}",
        r.stderr
    );
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    let r = host.establish(&["--recreate", "902,910"]).ok();
    contains(&r, "[902] recreate (--recreate): stop, destroy ... ok");
    contains(&r, "[910] recreate (--recreate): stop, destroy ... ok");
    host.establish(&["--status"]).ok();
}

#[test]
fn a_ct_dropped_from_the_configuration_is_listed_kept_and_pruned_on_request() {
    let host = built();
    only_branch(&host);
    // 911: a CT that is not ours (no mark), also absent from the configuration.
    host.pct(&[
        "clone",
        "900",
        "911",
        "--snapname",
        "base-snapshot",
        "--full",
        "1",
        "--hostname",
        "foreign",
    ])
    .ok();
    host.pct(&["set", "911", "--tags", "theirs"]).ok();
    host.edit_lxc_config(|v| {
        v["lxc_configs"].as_object_mut().unwrap().remove("910");
    });
    let r = host.establish(&[]).ok();
    contains(
        &r,
        "[910] ours but not in the configuration: left alone (--prune destroys it)",
    );
    assert!(!r.stdout.contains("[911]"), "{}", r.stdout);
    assert!(host.conf(910).is_some());
    let r = host.establish(&["--status"]).expect_code(1);
    contains(
        &r,
        "[910] Portainer: exists, ours, not in the configuration (--prune destroys it)",
    );
    let mark = host.journal_mark();
    let r = host.establish(&["--dry-run", "--prune"]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    contains(
        &r,
        "[910] ours but not in the configuration: would stop and destroy it (--prune)",
    );
    let mark = host.journal_mark();
    let r = host.establish(&["--prune"]).ok();
    assert_eq!(
        host.mutating_since(mark),
        ["pct stop 910", "pct destroy 910"]
    );
    contains(
        &r,
        "[910] prune: not in the configuration: stopped and destroyed",
    );
    assert!(host.conf(910).is_none());
    assert!(host.conf(911).is_some(), "a CT that is not ours was pruned");
    host.establish(&["--status"]).ok();
}

#[test]
fn a_change_pending_until_a_start_is_said_and_restart_applies_it() {
    let host = built();
    only_branch(&host);
    set(&host, 910, "features", json!("nesting=1,fuse=1"));
    let r = host.establish(&["--dry-run"]).ok();
    contains(
        &r,
        "features: nesting=1,keyctl=1 -> nesting=1,fuse=1,keyctl=1 (in place, needs restart)",
    );
    contains(&r, "a restart is needed for some (--restart does it)");
    let mark = host.journal_mark();
    let r = host.establish(&[]).ok();
    assert_eq!(
        host.mutating_since(mark),
        ["pct set 910 --features nesting=1,fuse=1,keyctl=1"]
    );
    contains(&r, "[910] restart needed");
    contains(&r, "restart needed (--restart)");
    // Proxmox keeps it pending while the CT runs: the next run does not set it again.
    assert!(host.conf(910).unwrap().contains("[pve:pending]"));
    let mark = host.journal_mark();
    let r = host.establish(&[]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    contains(&r, "restart needed (--restart)");
    host.establish(&["--status"]).expect_code(1);
    let mark = host.journal_mark();
    let r = host.establish(&["--restart"]).ok();
    let m = host.mutating_since(mark);
    assert_eq!(
        m,
        ["pct shutdown 910 --timeout 60", "pct start 910"],
        "{}",
        r.stdout
    );
    assert!(host.conf_main(910).contains("fuse=1"));
    host.establish(&["--status"]).ok();
}

#[test]
fn validate_and_a_refused_configuration_give_one_json_document() {
    let host = Host::reference();
    host.install();
    let r = host.establish(&["--validate", "--output", "json"]).ok();
    let doc = json_doc(&r);
    assert_eq!(doc["mode"], "validate");
    assert!(r.stderr.contains("configuration is valid"), "{}", r.stderr);
    set(&host, 910, "startup", json!("order=x"));
    set(&host, 910, "tags", json!("ok;-bad"));
    let r = host
        .establish(&["--validate", "--output", "json"])
        .expect_code(2);
    let doc = json_doc(&r);
    let pointers: Vec<&str> = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .map(|d| d["pointer"].as_str().unwrap())
        .collect();
    assert!(pointers.contains(&"/lxc_configs/910/startup"), "{doc:#}");
    assert!(pointers.contains(&"/lxc_configs/910/tags"), "{doc:#}");
    let mark = host.journal_mark();
    let r = host
        .establish(&["--dry-run", "--output", "json"])
        .expect_code(2);
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    let doc = json_doc(&r);
    assert_eq!(doc["mode"], "dry_run");
    assert!(!doc["diagnostics"].as_array().unwrap().is_empty());
}

#[test]
fn onboot_startup_and_tags_are_set_at_create_and_at_clone() {
    let host = Host::reference();
    host.install();
    host.drop_in("phoenix_hypervisor_lxc_docker", "echo \"stub: CT $1\"");
    host.remove_setup_programs(&[900, 902]);
    set(&host, 900, "onboot", json!(true));
    set(&host, 900, "startup", json!("order=1,up=30"));
    set(&host, 900, "tags", json!("base"));
    set(&host, 902, "onboot", json!(false));
    set(&host, 902, "startup", json!("2"));
    set(&host, 902, "tags", json!("docker;lab"));
    host.establish(&["--only", "902"]).ok();
    let create = host
        .journal()
        .into_iter()
        .find(|e| e.subcommand() == "create")
        .unwrap()
        .argv
        .join(" ");
    assert!(
        create.ends_with("--onboot 1 --startup order=1,up=30 --tags base;phoenix-managed"),
        "{create}"
    );
    let m900 = host.conf_main(900);
    for want in [
        "onboot: 1",
        "startup: order=1,up=30",
        "tags: base;phoenix-managed",
    ] {
        assert!(m900.contains(want), "`{want}` missing in\n{m900}");
    }
    let m902 = host.conf_main(902);
    for want in ["onboot: 0", "startup: order=2", "phoenix-managed"] {
        assert!(m902.contains(want), "`{want}` missing in\n{m902}");
    }
    let tags = m902.lines().find(|l| l.starts_with("tags: ")).unwrap();
    assert!(
        tags.contains("docker") && tags.contains("lab") && !tags.contains("base"),
        "{tags}"
    );
    // Converged: no drift, the mark is not drift.
    let r = host.establish(&["--only", "902", "--dry-run"]).ok();
    assert!(!r.stdout.contains("drift"), "{}", r.stdout);
}

#[test]
fn prune_keeps_a_template_a_remaining_ct_was_cloned_from() {
    let host = built();
    only_branch(&host);
    // 902 leaves the configuration; 910 (cloned from it) stays, now naming 900 as its source.
    host.edit_lxc_config(|v| {
        v["lxc_configs"].as_object_mut().unwrap().remove("902");
        v["lxc_configs"]["910"]["clone_from_template_ctid"] = json!("900");
    });
    let mark = host.journal_mark();
    let r = host.establish(&["--prune", "--output", "json"]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    assert!(
        r.stderr
            .contains("[902] ours but not in the configuration; kept: CT 910 was cloned from it"),
        "{}",
        r.stderr
    );
    let doc = json_doc(&r);
    assert_eq!(
        doc["unlisted"],
        json!([{"ctid": 902, "name": "BaseTemplateDocker", "action": "kept", "reason": "CT 910 was cloned from it"}])
    );
    assert!(host.conf(902).is_some());
    // Once 910 is gone too, both go.
    host.edit_lxc_config(|v| {
        v["lxc_configs"].as_object_mut().unwrap().remove("910");
    });
    host.establish(&["--prune"]).ok();
    assert!(host.conf(902).is_none() && host.conf(910).is_none());
    assert!(host.conf(900).is_some());
}

#[test]
fn a_gpu_assignment_change_runs_lxc_nvidia_or_removes_the_passthrough() {
    let host = built();
    only_branch(&host);
    set(&host, 910, "gpu_assignment", json!("1"));
    let r = host.establish(&["--dry-run"]).ok();
    contains(&r, "gpu_assignment: none -> 1 (in place, needs restart)");
    let r = host.establish(&[]).ok();
    contains(&r, "[910] drift applied: gpu_assignment: none -> 1");
    contains(&r, "[910] restart needed");
    assert!(
        host.conf_main(910).contains("/dev/nvidia1 dev/nvidia1"),
        "{}",
        host.conf_main(910)
    );
    // The raw line leaves nothing pending in the conf; the restart is still owed.
    let mark = host.journal_mark();
    let r = host.establish(&[]).ok();
    assert_eq!(
        host.mutating_since(mark),
        Vec::<String>::new(),
        "{}",
        r.stdout
    );
    contains(&r, "restart needed (--restart)");
    let r = host.establish(&["--status"]).expect_code(1);
    contains(&r, "restart needed (--restart); no drift");
    let r = host.establish(&["--dry-run"]).ok();
    contains(
        &r,
        "a change applied earlier waits for a restart: --restart does it",
    );
    let mark = host.journal_mark();
    let r = host.establish(&["--restart"]).ok();
    assert_eq!(
        host.mutating_since(mark),
        ["pct shutdown 910 --timeout 60", "pct start 910"],
        "{}",
        r.stdout
    );
    host.establish(&["--status"]).ok();
    // Back to none: the lines go, without a step.
    set(&host, 910, "gpu_assignment", json!("none"));
    let r = host.establish(&["--restart"]).ok();
    contains(
        &r,
        "[910] drift applied: gpu_assignment: 1 -> none (in place, needs restart)",
    );
    contains(&r, "[910] restarted");
    assert!(
        !host.conf_main(910).contains("nvidia"),
        "{}",
        host.conf_main(910)
    );
    host.establish(&["--status"]).ok();
}
