//! `phoenix_establish_hypervisor` against pve-sim: the whole reference tree built in
//! dependency order and converged on re-runs, failures isolated to their branch, the run
//! lock, refusals that touch nothing (invalid config, missing step), `--dry-run`, `--only`,
//! `--jobs`, rollback, and drop-in step scripts.
//!
//! `real_steps_build_the_reference_tree...` runs every installed program. The other tests
//! replace lxc-nvidia and lxc-docker by drop-in shell scripts that record their arguments and
//! environment (that is the drop-in promise: whatever executable sits at the design document's
//! `.sh` path is run) and fail on demand, and leave the setup programs out: they are about
//! orchestration, and stay fast.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use phoenix_e2e::{Host, Run, wait_group_gone};

const ALL: [u32; 7] = [900, 901, 902, 903, 910, 920, 950];
const GPU: [u32; 4] = [901, 903, 920, 950];
const DOCKER: [u32; 5] = [902, 903, 910, 920, 950];

/// A drop-in step that appends `<label> <args> VAR=value...` to `/var/tmp/steps.log` and fails
/// (exit 5) when `/var/tmp/fail-<label>-<CTID>` exists.
fn recording_stub(label: &str, vars: &[&str]) -> String {
    let vars: String = vars.iter().map(|v| format!(" {v}=${v}")).collect();
    format!(
        r#"log="$PHOENIX_HOST_ROOT/var/tmp/steps.log"
mkdir -p "$PHOENIX_HOST_ROOT/var/tmp"
echo "{label} $*{vars} LOG=$PHOENIX_LOG_FILE" >> "$log"
echo "stub {label}: configuring CT $1"
if [ -e "$PHOENIX_HOST_ROOT/var/tmp/fail-{label}-$1" ]; then
  echo "error: CT $1: simulated {label} failure" >&2
  exit 5
fi"#
    )
}

/// Reference host, installed, with recording drop-ins for lxc-nvidia and lxc-docker and
/// without the setup programs (they need what the real lxc-nvidia/lxc-docker install).
fn host() -> Host {
    let host = Host::reference();
    host.install();
    host.remove_setup_programs(&ALL);
    host.drop_in(
        "phoenix_hypervisor_lxc_nvidia",
        &format!(
            "{}\n{}",
            recording_stub(
                "lxc-nvidia",
                &[
                    "GPU_ASSIGNMENT",
                    "NVIDIA_DRIVER_VERSION",
                    "NVIDIA_REPO_URL",
                    "NVIDIA_RUNFILE_URL",
                    "LXC_CONFIG_FILE",
                    "HYPERVISOR_CONFIG_FILE",
                ],
            ),
            phoenix_e2e::NVIDIA_STUB_PASSTHROUGH
        ),
    );
    host.drop_in(
        "phoenix_hypervisor_lxc_docker",
        &recording_stub(
            "lxc-docker",
            &[
                "PORTAINER_ROLE",
                "PORTAINER_SERVER_IP",
                "PORTAINER_AGENT_PORT",
            ],
        ),
    );
    host
}

fn steps_log(host: &Host) -> Vec<String> {
    std::fs::read_to_string(host.path("/var/tmp/steps.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn fail_step(host: &Host, label: &str, ctid: u32) {
    let p = host.path(&format!("/var/tmp/fail-{label}-{ctid}"));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, "").unwrap();
}

/// The finished state: exists, running, `configured-state`, and a template's own snapshot.
#[track_caller]
fn assert_built(host: &Host, ctid: u32) {
    let snaps = host.snapshots(ctid);
    assert!(
        snaps.iter().any(|s| s == "configured-state"),
        "CT {ctid} lacks configured-state: {snaps:?}"
    );
    assert!(host.is_running(ctid), "CT {ctid} is not running");
    let lxc = host.lxc_config();
    let block = &lxc["lxc_configs"][ctid.to_string()];
    if block["is_template"] == true {
        let name = block["template_snapshot_name"].as_str().unwrap();
        assert!(
            snaps.iter().any(|s| s == name),
            "template {ctid} lacks its snapshot {name}: {snaps:?}"
        );
    }
}

#[track_caller]
fn assert_up_to_date_run(host: &Host, r: &Run, mark: usize, cts: &[u32]) {
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    for c in cts {
        assert!(
            r.stdout.contains(&format!("[{c}] up to date")),
            "CT {c} not reported up to date:\n{}",
            r.stdout
        );
    }
}

/// The main section of a CT's conf has GPU passthrough for its GPUs: `devN` entries, which
/// `behavior.gpu_passthrough` `auto` picks on the reference host (PVE 8.4).
#[track_caller]
fn assert_gpu_passthrough(host: &Host, ctid: u32) {
    let main = host.conf_main(ctid);
    assert!(
        !main.contains("lxc.cgroup2"),
        "CT {ctid}: raw lines in\n{main}"
    );
    for want in [
        ": /dev/nvidia0,mode=0666",
        ": /dev/nvidia1,mode=0666",
        ": /dev/nvidiactl,mode=0666",
        ": /dev/nvidia-uvm,mode=0666",
    ] {
        assert!(
            main.contains(want),
            "CT {ctid}: `{want}` missing in\n{main}"
        );
    }
}

#[test]
fn real_steps_build_the_reference_tree_and_a_second_run_changes_nothing() {
    let host = Host::reference();
    host.install();
    let r = host.establish(&[]);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    // Counted before the checks below, which ask pve-sim themselves.
    let build = host.journal();
    let build_calls = build.iter().filter(|e| e.argv[0] == "pct").count();
    // A template's own snapshot is taken in the same shutdown as `configured-state` (its
    // setup program leaves it to the orchestrator's finalize): between a CT's first and last
    // snapshot there is no start and no shutdown.
    for c in ALL {
        let id = c.to_string();
        let mine: Vec<&str> = build
            .iter()
            .filter(|e| e.argv[0] == "pct" && e.argv.get(2) == Some(&id))
            .map(|e| e.subcommand())
            .filter(|s| ["start", "shutdown", "stop", "reboot", "snapshot"].contains(s))
            .collect();
        let first = mine.iter().position(|s| *s == "snapshot").unwrap();
        let last = mine.iter().rposition(|s| *s == "snapshot").unwrap();
        let template = host.lxc_config()["lxc_configs"][&id]["is_template"] == true;
        assert_eq!(
            mine[first..=last].to_vec(),
            vec!["snapshot"; if template { 2 } else { 1 }],
            "CT {c}: {mine:?}"
        );
        assert!(
            ["shutdown", "stop"].contains(&mine[first - 1]) && mine[last + 1..] == ["start"],
            "CT {c}: {mine:?}"
        );
    }
    for c in ALL {
        assert_built(&host, c);
    }
    // Issue 14: the build's own cost is its number of `pct` calls (each pays the Perl CLI's
    // start-up on a real host). Before the issue: 449 for these 7 CTs (64 per CT); the
    // issue's target is at most 15 per CT on average. Reached: 81 (11.6 per CT): per CT the
    // create or clone (+ set, resize), one start, each step's one probe (readiness included)
    // and at most one or two apply scripts, one shutdown, its snapshots, one start. Waits
    // (readiness, service URLs) poll inside the guest, so the count does not depend on the
    // machine's load.
    assert!(
        build_calls <= 15 * ALL.len(),
        "the reference build made {build_calls} pct calls, {:.1} per CT (issue 14: at most 15)",
        build_calls as f64 / ALL.len() as f64
    );
    // The steps' guest work is batched: per CT at most 6 `pct exec` (the probes of lxc-nvidia,
    // lxc-docker and the setup program, and their apply scripts).
    for c in ALL {
        let execs = build
            .iter()
            .filter(|e| e.subcommand() == "exec" && e.argv[2] == c.to_string())
            .count();
        assert!(execs <= 6, "CT {c}: {execs} pct exec calls in the build");
    }
    assert_eq!(host.ct_ids(), ALL);
    for c in GPU {
        assert_gpu_passthrough(&host, c);
    }
    for c in [900, 902, 910] {
        assert!(
            !host.conf_main(c).contains("nvidia"),
            "CT {c} got GPU lines"
        );
    }
    // Clones grow the root disk they inherit to their storage_size_gb.
    for (c, size) in [(900, "32G"), (910, "128G"), (920, "64G"), (950, "100G")] {
        let main = host.conf_main(c);
        assert!(
            main.lines()
                .any(|l| l.starts_with("rootfs:") && l.ends_with(&format!(",size={size}"))),
            "CT {c}: root disk is not {size}:\n{main}"
        );
    }
    // Every setup program ran (the reference has one per CT).
    let log = std::fs::read_to_string(host.log_file()).unwrap();
    for c in ALL {
        assert!(
            log.contains(&format!("[{c}] setup_{c} ... ok")),
            "setup_{c} did not run"
        );
    }
    let mark = host.journal_mark();
    let r = host.establish(&[]).ok();
    assert_up_to_date_run(&host, &r, mark, &ALL);
    // Issue 14: a re-run with nothing to do reads the state from one `pct list` and the conf
    // files: at most 2 `pct` calls in all, whatever the number of containers.
    let calls: Vec<String> = host
        .journal_since(mark)
        .into_iter()
        .filter(|e| e.argv[0] == "pct")
        .map(|e| e.argv.join(" "))
        .collect();
    assert!(
        calls.len() <= 2,
        "no-op re-run made {} pct calls: {calls:?}",
        calls.len()
    );
}

#[test]
fn first_run_builds_the_tree_and_second_run_changes_nothing() {
    let host = host();
    let r = host.establish(&[]).ok();
    for c in ALL {
        assert_built(&host, c);
    }
    assert_eq!(host.ct_ids(), ALL);
    // Clones come from the source's template snapshot, sources first.
    let j = host.journal();
    let pos = |pred: &dyn Fn(&phoenix_e2e::JournalEntry) -> bool| {
        j.iter().position(pred).expect("journal entry")
    };
    let clone_950 = pos(&|e| e.subcommand() == "clone" && e.argv[3] == "950");
    assert!(
        j[clone_950]
            .argv
            .join(" ")
            .contains("clone 920 950 --snapname vllm-base-snapshot"),
        "{:?}",
        j[clone_950].argv
    );
    let snap_920 = pos(&|e| e.argv.join(" ") == "pct snapshot 920 vllm-base-snapshot");
    assert!(snap_920 < clone_950);
    // Templates' own snapshots are taken while stopped, right before configured-state.
    let shut_900 = pos(&|e| e.subcommand() == "shutdown" && e.argv[2] == "900");
    assert_eq!(
        j[shut_900 + 1].argv.join(" "),
        "pct snapshot 900 base-snapshot"
    );
    assert_eq!(
        j[shut_900 + 2].argv.join(" "),
        "pct snapshot 900 configured-state"
    );
    assert_eq!(j[shut_900 + 3].argv.join(" "), "pct start 900");

    // The steps ran where the config says, with their variables.
    let steps = steps_log(&host);
    let ran = |label: &str| -> Vec<u32> {
        steps
            .iter()
            .filter(|l| l.starts_with(&format!("{label} ")))
            .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(ran("lxc-nvidia"), GPU);
    assert_eq!(ran("lxc-docker"), DOCKER);
    let nv950 = steps
        .iter()
        .find(|l| l.starts_with("lxc-nvidia 950"))
        .unwrap();
    for want in [
        "GPU_ASSIGNMENT=0,1",
        "NVIDIA_DRIVER_VERSION=580.76.05",
        "NVIDIA_RUNFILE_URL=https://",
        &format!("LXC_CONFIG_FILE={}", host.lxc_config_path().display()),
        &format!("LOG={}", host.log_file().display()),
    ] {
        assert!(nv950.contains(want), "`{want}` not in {nv950}");
    }
    let d950 = steps
        .iter()
        .find(|l| l.starts_with("lxc-docker 950"))
        .unwrap();
    assert!(
        d950.contains("PORTAINER_ROLE=agent")
            && d950.contains("PORTAINER_SERVER_IP=10.0.0.99")
            && d950.contains("PORTAINER_AGENT_PORT=9001"),
        "{d950}"
    );
    let d910 = steps
        .iter()
        .find(|l| l.starts_with("lxc-docker 910"))
        .unwrap();
    assert!(d910.contains("PORTAINER_ROLE=server"), "{d910}");

    // People's output: one line per stage, a summary table; the log has the steps' output.
    assert!(
        r.stdout
            .contains("[901] clone from 900@base-snapshot ... ok ("),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("CTID") && r.stdout.contains("SECONDS"));
    // --jobs 1 is the design's order: every CT after its source, ties by ascending CTID.
    let order: Vec<u32> = r
        .stdout
        .lines()
        .filter(|l| l.contains("] create from") || l.contains("] clone from"))
        .map(|l| l[1..4].parse().unwrap())
        .collect();
    assert_eq!(order, ALL);
    assert!(r.stdout.contains("7 containers: 7 built"), "{}", r.stdout);
    let log = std::fs::read_to_string(host.log_file()).unwrap();
    assert!(
        log.contains(
            "phoenix_establish_hypervisor: [910] lxc-docker: stub lxc-docker: configuring CT 910"
        ),
        "step output not captured in the log"
    );
    assert!(log.contains("[INFO] phoenix_hypervisor_clone_lxc: [901]"));
    // Every line in the shared format: `YYYY-mm-dd HH:MM:SS [LEVEL] <program>: message`.
    for line in log.lines() {
        let (ts, rest) = line.split_at(19);
        let ok = ts.as_bytes()[4] == b'-'
            && ts.as_bytes()[10] == b' '
            && ts.as_bytes()[13] == b':'
            && rest.starts_with(" [")
            && rest.contains("] phoenix_")
            && rest.contains(": ");
        assert!(ok, "log line out of format: {line}");
    }
    assert!(log.contains("[INFO] phoenix_establish_hypervisor: [950] finalize: shutdown"));

    // Second run: zero mutating calls, everything up to date.
    let mark = host.journal_mark();
    let r = host.establish(&[]).ok();
    assert_up_to_date_run(&host, &r, mark, &ALL);
    assert!(r.stdout.contains("7 up to date"), "{}", r.stdout);
}

/// The target CTID of a journal entry (`pct clone SRC NEW` → NEW, else the first argument).
fn target(e: &phoenix_e2e::JournalEntry) -> u32 {
    let i = if e.subcommand() == "clone" { 3 } else { 2 };
    e.argv.get(i).and_then(|a| a.parse().ok()).unwrap_or(0)
}

#[test]
fn failed_template_clone_skips_its_descendants_and_a_rerun_converges() {
    let host = host();
    host.set_faults("pct clone 902 1\n");
    let r = host.establish(&[]).expect_code(1);
    assert_built(&host, 900);
    assert_built(&host, 901);
    assert_eq!(host.ct_ids(), [900, 901]);
    for c in [903, 910, 920, 950] {
        assert!(
            r.stdout
                .contains(&format!("[{c}] skipped: template 902 failed")),
            "{c} not skipped:\n{}",
            r.stdout
        );
    }
    assert!(
        r.stdout
            .contains("2 built, 0 up to date, 1 failed, 4 skipped"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("[902] clone from 900@base-snapshot failed")
            && r.stderr.contains("simulated fault"),
        "{}",
        r.stderr
    );
    // Nothing was attempted for the skipped CTs.
    assert!(
        host.journal()
            .iter()
            .all(|e| ![903, 910, 920, 950].contains(&target(e)))
    );

    let mark = host.journal_mark();
    let r = host.establish(&[]).ok();
    for c in ALL {
        assert_built(&host, c);
    }
    assert_eq!(host.ct_ids(), ALL, "duplicate or lost CT");
    assert!(r.stdout.contains("[900] up to date") && r.stdout.contains("[901] up to date"));
    let again: Vec<String> = host
        .mutating_since(mark)
        .into_iter()
        .filter(|a| a.contains(" 900") || a.contains(" 901"))
        .filter(|a| !a.starts_with("pct clone 900 902"))
        .collect();
    assert_eq!(
        again,
        Vec::<String>::new(),
        "finished CTs were touched again"
    );
}

#[test]
fn a_killed_run_leaves_a_stale_lock_that_blocks_nothing_and_a_rerun_converges() {
    let host = host();
    let mut child = host
        .command(host.establish_path())
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let t = Instant::now();
    while host.conf(902).is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "CT 902 never appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before CT 902 appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup at all
    child.wait().unwrap();
    wait_group_gone(pid);
    // The lock file stays behind with the dead run's pid; the lock itself died with it.
    let lock = host.path("/run/lock/phoenix_hypervisor.lock");
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        pid.to_string()
    );
    assert!(
        !host
            .snapshots(902)
            .contains(&"configured-state".to_string())
    );

    let r = host.establish(&[]).ok();
    for c in ALL {
        assert_built(&host, c);
    }
    assert_eq!(host.ct_ids(), ALL, "duplicate or lost CT");
    assert!(
        r.stdout
            .contains("[902] clone from 900@base-snapshot (resume"),
        "{}",
        r.stdout
    );
    let mark = host.journal_mark();
    let r = host.establish(&[]).ok();
    assert_up_to_date_run(&host, &r, mark, &ALL);
}

#[test]
fn a_second_run_is_refused_while_the_lock_is_held() {
    use std::io::Write;
    let host = host();
    let path = host.path("/run/lock/phoenix_hypervisor.lock");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    held.try_lock().unwrap();
    writeln!(held, "4242").unwrap();
    let r = host.establish(&["--only", "900"]).expect_code(5);
    assert!(r.stderr.contains("pid 4242"), "{}", r.stderr);
    assert!(host.journal().is_empty(), "a refused run called pct");
    drop(held);
    // Unlocked, the same file (with a pid of nobody) blocks nothing.
    host.establish(&["--only", "900"]).ok();
    assert_built(&host, 900);
}

#[test]
fn a_missing_or_non_executable_step_exits_4_before_touching_the_host() {
    let host = host();
    let clone = host.prefix().join("bin/phoenix_hypervisor_clone_lxc.sh");
    std::fs::remove_file(&clone).unwrap();
    let r = host.establish(&[]).expect_code(4);
    assert!(
        r.stderr.contains(&clone.display().to_string()),
        "{}",
        r.stderr
    );
    assert!(host.journal().is_empty());
    assert!(!host.exists("/run/lock/phoenix_hypervisor.lock"));
    assert!(!host.exists("/usr/local/phoenix_hypervisor/lib/.phoenix_hypervisor_initialized"));

    std::fs::write(&clone, "#!/bin/sh\nexit 0\n").unwrap(); // mode 0644
    let r = host.establish(&[]).expect_code(4);
    assert!(r.stderr.contains("not an executable"), "{}", r.stderr);
    assert!(host.journal().is_empty());

    // A CT that needs neither clone-lxc nor lxc-nvidia builds without them.
    std::fs::remove_file(host.prefix().join("bin/phoenix_hypervisor_lxc_nvidia.sh")).unwrap();
    host.establish(&["--only", "900"]).ok();
    assert_built(&host, 900);
}

#[test]
fn an_invalid_config_exits_2_and_touches_nothing() {
    let host = host();
    host.edit_lxc_config(|c| {
        c["lxc_configs"]["950"]["clone_from_template_ctid"] = "999".into();
        c["lxc_configs"]["901"]["memory_mb"] = "lots".into();
    });
    let r = host.establish(&[]).expect_code(2);
    assert!(
        r.stderr.contains("/lxc_configs/901/memory_mb") && r.stderr.contains("999"),
        "{}",
        r.stderr
    );
    assert!(host.journal().is_empty(), "pct was called");
    assert!(!host.log_file().exists(), "the log was written");
    assert!(!host.exists("/run/lock/phoenix_hypervisor.lock"));
    assert!(!host.exists("/usr/local/phoenix_hypervisor/lib/.phoenix_hypervisor_initialized"));
    let r = host.establish(&["--only", "123"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn dry_run_only_reads_writes_nothing_and_prints_the_plan() {
    let host = host();
    let r = host.establish(&["--dry-run"]).ok();
    let j = host.journal();
    assert!(!j.is_empty(), "dry-run did not look at the host");
    assert!(
        j.iter().all(|e| !e.mutating),
        "{:?}",
        host.mutating_since(0)
    );
    assert!(!host.log_file().exists(), "dry-run wrote the log");
    assert!(!host.exists("/run/lock/phoenix_hypervisor.lock"));
    assert!(steps_log(&host).is_empty(), "dry-run ran a step program");
    for want in [
        "[900] create from /fastData/shared-iso/template/cache/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
        "[950] clone from 920@vllm-base-snapshot",
        "why: clone_from_template_ctid names 920",
        "lxc-nvidia (gpu_assignment 0,1)",
        "lxc-docker (portainer_role agent)",
        "template snapshot vllm-base-snapshot",
    ] {
        assert!(r.stdout.contains(want), "`{want}` missing:\n{}", r.stdout);
    }
    host.establish(&["--only", "900"]).ok();
    host.pct(&["stop", "900"]).ok();
    let mark = host.journal_mark();
    let r = host.establish(&["--dry-run"]).ok();
    assert_eq!(host.mutating_since(mark), Vec::<String>::new());
    assert!(
        r.stdout
            .contains("[900] up to date (has configured-state), stopped: would start it"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("[902] clone from 900@base-snapshot"));
    // A real run starts the stopped, finished CT and leaves it otherwise alone.
    let mark = host.journal_mark();
    let r = host.establish(&["--only", "900"]).ok();
    assert_eq!(host.mutating_since(mark), ["pct start 900"]);
    assert!(r.stdout.contains("up to date (started)"), "{}", r.stdout);
}

#[test]
fn only_builds_the_named_cts_and_the_templates_they_still_need() {
    let host = host();
    let r = host.establish(&["--only", "910"]).ok();
    assert!(r.stdout.contains("not ready yet: 900,902"), "{}", r.stdout);
    assert_eq!(host.ct_ids(), [900, 902, 910]);
    for c in [900, 902, 910] {
        assert_built(&host, c);
    }
    let mark = host.journal_mark();
    let r = host.establish(&["--only", "950"]).ok();
    assert!(r.stdout.contains("not ready yet: 903,920"), "{}", r.stdout);
    assert_eq!(
        host.ct_ids(),
        ALL[..]
            .iter()
            .filter(|&&c| c != 901)
            .copied()
            .collect::<Vec<_>>()
    );
    let touched: BTreeSet<u32> = host
        .journal_since(mark)
        .iter()
        .filter(|e| e.mutating)
        .map(target)
        .collect();
    assert_eq!(touched, BTreeSet::from([903, 920, 950]));
}

#[test]
fn rollback_destroys_only_a_ct_this_run_created() {
    let host = host();
    host.edit_hypervisor_config(|c| c["behavior"]["rollback_on_failure"] = true.into());
    fail_step(&host, "lxc-docker", 910);
    let r = host.establish(&["--only", "910"]).expect_code(1);
    assert!(
        r.stdout
            .contains("[910] rollback: rolled back: stopped and destroyed"),
        "{}",
        r.stdout
    );
    assert!(host.conf(910).is_none(), "the failed new CT was kept");
    assert!(
        r.stderr.contains("simulated lxc-docker failure"),
        "{}",
        r.stderr
    );
    assert_built(&host, 902);

    // Without rollback the failed CT stays; with rollback later it is still never destroyed.
    host.edit_hypervisor_config(|c| c["behavior"]["rollback_on_failure"] = false.into());
    host.establish(&["--only", "910"]).expect_code(1);
    assert!(host.conf(910).is_some());
    host.edit_hypervisor_config(|c| c["behavior"]["rollback_on_failure"] = true.into());
    let mark = host.journal_mark();
    let r = host.establish(&["--only", "910"]).expect_code(1);
    assert!(
        r.stdout
            .contains("[910] rollback: kept: it existed before this run"),
        "{}",
        r.stdout
    );
    assert!(
        host.conf(910).is_some(),
        "a CT that existed before was destroyed"
    );
    assert!(
        !host
            .mutating_since(mark)
            .iter()
            .any(|a| a.starts_with("pct destroy"))
    );

    std::fs::remove_file(host.path("/var/tmp/fail-lxc-docker-910")).unwrap();
    host.establish(&["--only", "910"]).ok();
    assert_built(&host, 910);
}

#[test]
fn jobs_run_branches_concurrently_and_serialize_clones_per_source() {
    let host = host();
    host.set_latency("clone 300\n");
    let r = host.establish(&["--jobs", "4"]).ok();
    for c in ALL {
        assert_built(&host, c);
    }
    let j = host.journal();
    let clones: Vec<_> = j.iter().filter(|e| e.subcommand() == "clone").collect();
    assert_eq!(clones.len(), 6);
    for (i, a) in clones.iter().enumerate() {
        for b in &clones[i + 1..] {
            if a.argv[2] == b.argv[2] {
                assert!(
                    a.end_ms <= b.start_ms || b.end_ms <= a.start_ms,
                    "clones from {} overlap: {:?} {:?}",
                    a.argv[2],
                    a.argv,
                    b.argv
                );
            }
        }
    }
    // Something of one CT ran while another CT's clone was running.
    let parallel = clones.iter().any(|c| {
        j.iter()
            .any(|e| target(e) != target(c) && e.start_ms < c.end_ms && c.start_ms < e.end_ms)
    });
    assert!(parallel, "no two containers were worked on at once");
    // Every stage line is whole and names its CT.
    for l in r
        .stdout
        .lines()
        .filter(|l| l.contains(" ... ") && !l.starts_with("initial setup"))
    {
        assert!(l.starts_with('['), "{l}");
    }
}

#[test]
fn a_setup_program_runs_and_may_take_the_template_snapshot_itself() {
    let host = host();
    host.drop_in(
        "phoenix_hypervisor_setup_902",
        r#"mkdir -p "$PHOENIX_HOST_ROOT/var/tmp"
echo "setup_902 $*" >> "$PHOENIX_HOST_ROOT/var/tmp/steps.log"
pct snapshot "$1" docker-snapshot"#,
    );
    // Present but not executable: not run.
    let p = host.prefix().join("bin/phoenix_hypervisor_setup_900.sh");
    std::fs::write(
        &p,
        "#!/bin/sh\necho ran >> \"$PHOENIX_HOST_ROOT/var/tmp/steps.log\"\n",
    )
    .unwrap();
    host.establish(&["--only", "902"]).ok();
    assert_built(&host, 902);
    assert!(steps_log(&host).contains(&"setup_902 902".to_string()));
    assert!(
        !steps_log(&host).contains(&"ran".to_string()),
        "a non-executable setup ran"
    );
    let snaps: Vec<_> = host
        .journal()
        .into_iter()
        .filter(|e| e.argv.join(" ") == "pct snapshot 902 docker-snapshot")
        .collect();
    assert_eq!(snaps.len(), 1, "template snapshot taken twice");
    assert!(
        std::fs::read_to_string(host.log_file())
            .unwrap()
            .contains("phoenix_hypervisor_setup_900.sh` exists but is not executable")
    );
}

#[test]
fn a_ct_that_never_becomes_ready_fails_with_a_clear_message() {
    let host = host();
    host.edit_hypervisor_config(|c| c["behavior"]["ready_timeout_s"] = 1.into());
    host.set_latency("boot 4000\n");
    let r = host.establish(&["--only", "900"]).expect_code(1);
    assert!(
        r.stderr.contains("CT 900 did not become ready within 1 s"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("FAILED"), "{}", r.stdout);
}

#[test]
fn a_drop_in_script_replaces_an_installed_step() {
    let host = host();
    // An administrator's wrapper around the real program.
    host.drop_in(
        "phoenix_hypervisor_create_lxc",
        r#"mkdir -p "$PHOENIX_HOST_ROOT/var/tmp"
echo "drop-in create $*" >> "$PHOENIX_HOST_ROOT/var/tmp/steps.log"
exec "$PHOENIX_ROOT/bin/phoenix_hypervisor_create_lxc" "$@""#,
    );
    host.establish(&["--only", "900"]).ok();
    assert_built(&host, 900);
    assert!(steps_log(&host).contains(&"drop-in create 900".to_string()));
    // Reinstalling keeps the drop-in.
    host.install();
    assert!(
        std::fs::read_to_string(host.prefix().join("bin/phoenix_hypervisor_create_lxc.sh"))
            .unwrap()
            .contains("drop-in create")
    );
}

#[test]
fn after_a_drop_in_clone_that_leaves_the_ct_stopped_the_orchestrator_starts_it() {
    // Our own clone-lxc leaves the CT started and ready, so the orchestrator does not ask
    // again (issue 14); a drop-in may not, and then it does.
    let host = host();
    host.drop_in(
        "phoenix_hypervisor_clone_lxc",
        r#""$PHOENIX_ROOT/bin/phoenix_hypervisor_clone_lxc" "$@" || exit $?
pct stop "$3" >/dev/null"#,
    );
    let r = host.establish(&["--only", "902"]).ok();
    assert_built(&host, 902);
    assert!(
        r.stdout.contains("[902] start, wait ready ... ok"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("[900] start, wait ready"),
        "our own create-lxc was checked again:\n{}",
        r.stdout
    );
    let calls: Vec<String> = host
        .journal()
        .iter()
        .filter(|e| target(e) == 902 && e.mutating)
        .map(|e| e.argv[1].clone())
        .collect();
    let stop = calls
        .iter()
        .position(|c| c == "stop")
        .expect("the drop-in's stop");
    let shutdown = calls
        .iter()
        .position(|c| c == "shutdown")
        .expect("finalize");
    assert!(
        calls[stop..shutdown].iter().any(|c| c == "start"),
        "not started before its steps: {calls:?}"
    );
}

#[test]
fn finalize_falls_back_to_stop_when_a_clean_shutdown_fails() {
    let host = host();
    host.set_faults("pct shutdown 900 1\n");
    host.establish(&["--only", "900"]).ok();
    assert_built(&host, 900);
    let calls: Vec<String> = host
        .journal()
        .iter()
        .filter(|e| target(e) == 900 && e.mutating)
        .map(|e| e.argv.join(" "))
        .collect();
    let i = calls
        .iter()
        .position(|c| c.starts_with("pct shutdown 900 --timeout 60"))
        .expect("a clean shutdown was tried");
    assert_eq!(calls[i + 1], "pct stop 900", "{calls:#?}");
    assert_eq!(calls[i + 2], "pct snapshot 900 base-snapshot");
}

#[test]
fn a_failed_initial_setup_exits_3_before_any_container() {
    let host = host();
    host.drop_in(
        "phoenix_hypervisor_initial_setup",
        "echo 'error: storage lxc-disks is not active' >&2; exit 3",
    );
    let r = host.establish(&[]).expect_code(3);
    assert!(
        r.stderr.contains("initial setup failed")
            && r.stderr.contains("storage lxc-disks is not active"),
        "{}",
        r.stderr
    );
    assert_eq!(host.mutating_since(0), Vec::<String>::new());
    assert!(host.ct_ids().is_empty());
}

#[test]
fn debug_mode_logs_at_debug_level_in_the_run_and_its_steps() {
    let host = host();
    host.drop_in(
        "phoenix_hypervisor_initial_setup",
        "echo \"step log level: ${PHOENIX_LOG_LEVEL:-default}\"; exit 3",
    );
    host.establish(&[]).expect_code(3);
    let log = std::fs::read_to_string(host.log_file()).unwrap();
    assert!(log.contains("step log level: default"), "{log}");

    host.edit_hypervisor_config(|c| c["behavior"]["debug_mode"] = true.into());
    host.establish(&[]).expect_code(3);
    let log = std::fs::read_to_string(host.log_file()).unwrap();
    assert!(log.contains("step log level: debug"), "{log}");
}
