//! Test harness for the end-to-end tests in `tests/tests/`: a simulated Proxmox host (pve-sim) in
//! a temporary directory, the product's binaries run against it, and readers for the resulting
//! host state (conf files, journal).
//!
//! The binaries are the ones `cargo test --workspace` builds into `target/<profile>/`. PREFIX is
//! `HOST_ROOT/usr/local/phoenix_hypervisor`, so the host-absolute `core_paths` of the reference
//! configuration resolve inside the simulated host exactly as on a real one.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The reference OS template path the upstream configs name.
pub const OSTEMPLATE: &str =
    "/fastData/shared-iso/template/cache/ubuntu-24.04-standard_24.04-2_amd64.tar.zst";
pub const PREFIX_IN_HOST: &str = "/usr/local/phoenix_hypervisor";

/// Shell lines for a drop-in that stands in for lxc-nvidia (CTID in `$1`, `GPU_ASSIGNMENT` from
/// the orchestrator): they leave what the real step leaves in the conf's main section, a raw
/// passthrough line per assigned GPU (inserted at the top, so never into a snapshot section).
/// Without them the CT would really lack its GPUs, which the orchestrator reports as drift.
pub const NVIDIA_STUB_PASSTHROUGH: &str = r#"conf="$PHOENIX_HOST_ROOT/etc/pve/lxc/$1.conf"
for g in $(echo "$GPU_ASSIGNMENT" | tr ',' ' '); do
  [ "$g" = none ] && continue
  line="lxc.mount.entry: /dev/nvidia$g dev/nvidia$g none bind,optional,create=file"
  grep -qxF "$line" "$conf" || sed -i "1i $line" "$conf"
done"#;

/// `target/<profile>/`, where the workspace binaries are.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    assert!(
        dir.join("pct").is_file(),
        "pve-sim's binaries are not built in {}: run `cargo test --workspace` (or `cargo build --workspace`) first",
        dir.display()
    );
    dir
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The reference configuration files of one upstream revision (`upstream-185f0ab`, `upstream-214aa23`).
pub fn fixture(rev: &str, file: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(rev).join(file)
}

/// Result of one command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panic with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        self.expect_code(0)
    }
}

/// One line of pve-sim's journal.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub argv: Vec<String>,
    pub exit: i64,
    pub mutating: bool,
    pub start_ms: u64,
    pub end_ms: u64,
}

impl JournalEntry {
    /// `pct clone 900 901 ...` → `"clone"`.
    pub fn subcommand(&self) -> &str {
        self.argv.get(1).map(String::as_str).unwrap_or("")
    }
}

/// A simulated Proxmox host in a temporary directory.
pub struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bin: PathBuf,
    hv_config: PathBuf,
    lxc_config: PathBuf,
}

impl Host {
    /// A host laid out for the reference configuration: storage `lxc-disks` (zfspool), 2 GPUs,
    /// driver 580.76.05, the Ubuntu 24.04 ostemplate; the 214aa23 reference configs installed
    /// under PREFIX/etc.
    pub fn reference() -> Host {
        let host = Host::init(&["--reference"]);
        host.install_configs(
            &fixture("upstream-214aa23", "phoenix_hypervisor_config.json"),
            &fixture("upstream-214aa23", "phoenix_lxc_configs.json"),
        );
        host
    }

    /// `pve-sim init --host-root <tmp> <args>`.
    pub fn init(args: &[&str]) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("phoenix-host-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let bin = bin_dir();
        let out = Command::new(bin.join("pve-sim"))
            .arg("init")
            .arg("--host-root")
            .arg(&root)
            .args(args)
            .env("PHOENIX_HOST_ROOT", &root)
            .output()
            .expect("run pve-sim init");
        Run::from(out).ok();
        let etc = root
            .join(PREFIX_IN_HOST.trim_start_matches('/'))
            .join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        Host {
            hv_config: etc.join("phoenix_hypervisor_config.json"),
            lxc_config: etc.join("phoenix_lxc_configs.json"),
            _dir: dir,
            root,
            bin,
        }
    }

    /// The simulated host's `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A host-absolute path inside the simulated host.
    pub fn path(&self, host_abs: &str) -> PathBuf {
        self.root.join(host_abs.trim_start_matches('/'))
    }

    /// PREFIX (inside the simulated host).
    pub fn prefix(&self) -> PathBuf {
        self.path(PREFIX_IN_HOST)
    }

    pub fn lxc_config_path(&self) -> &Path {
        &self.lxc_config
    }

    pub fn hypervisor_config_path(&self) -> &Path {
        &self.hv_config
    }

    /// Remove the installed setup programs of `ctids` (tests that build without them).
    pub fn remove_setup_programs(&self, ctids: &[u32]) {
        for c in ctids {
            let p = self
                .prefix()
                .join(format!("bin/phoenix_hypervisor_setup_{c}.sh"));
            if p.exists() {
                std::fs::remove_file(p).unwrap();
            }
        }
    }

    /// Install the workspace's programs into PREFIX as `cargo xtask install` lays them out, with
    /// symlinks to the build output (so a test always runs the current build).
    pub fn install(&self) {
        let bins: Vec<String> = std::fs::read_dir(&self.bin)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| lib_common::paths::installed_name(n).is_some())
            .collect();
        lib_common::install::install(
            &self.bin,
            &bins,
            &workspace_root().join("etc"),
            &self.prefix(),
            lib_common::install::BinMode::Symlink,
        )
        .expect("install into the test host");
    }

    /// Copy both config files into PREFIX/etc.
    pub fn install_configs(&self, hypervisor: &Path, lxc: &Path) {
        std::fs::copy(hypervisor, &self.hv_config).expect("copy hypervisor config");
        std::fs::copy(lxc, &self.lxc_config).expect("copy lxc config");
    }

    /// Replace the LXC config with `json`.
    pub fn write_lxc_config(&self, json: &serde_json::Value) {
        std::fs::write(
            &self.lxc_config,
            serde_json::to_string_pretty(json).unwrap(),
        )
        .unwrap();
    }

    /// Edit the installed LXC config in place, e.g.
    /// `host.edit_lxc_config(|c| c["lxc_configs"]["900"]["name"] = "x".into())`.
    pub fn edit_lxc_config(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut v = self.lxc_config();
        edit(&mut v);
        self.write_lxc_config(&v);
    }

    /// Whether a host-absolute path exists inside the simulated host.
    pub fn exists(&self, host_abs: &str) -> bool {
        self.path(host_abs).exists()
    }

    /// The LXC config as JSON, to edit in a test.
    pub fn lxc_config(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&self.lxc_config).unwrap()).unwrap()
    }

    pub fn log_file(&self) -> PathBuf {
        self.path("/var/log/phoenix_hypervisor.log")
    }

    /// A command for `program` (a workspace binary name, or any program on PATH) with the
    /// host's environment: PATH with the workspace binaries (pve-sim's `pct`, `curl`, ...) first.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let program = program.as_ref();
        let local = self.bin.join(program);
        let mut cmd = if local.is_file() {
            Command::new(local)
        } else {
            Command::new(program)
        };
        let path = std::env::join_paths(std::iter::once(self.bin.clone()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        cmd.env("PATH", path)
            .env("PHOENIX_HOST_ROOT", &self.root)
            .env("PHOENIX_ROOT", self.prefix())
            .env("LXC_CONFIG_FILE", &self.lxc_config)
            .env("HYPERVISOR_CONFIG_FILE", &self.hv_config)
            .env("PHOENIX_LOG_FILE", self.log_file())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Run `program args...` and collect its output.
    pub fn run<I, S>(&self, program: &str, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::from(
            self.command(program)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("run {program}: {e}")),
        )
    }

    /// `pct args...` against this host.
    pub fn pct(&self, args: &[&str]) -> Run {
        self.run("pct", args)
    }

    /// `pct exec CTID -- argv...` against this host.
    pub fn exec(&self, ctid: impl std::fmt::Display, argv: &[&str]) -> Run {
        let id = ctid.to_string();
        let mut args = vec!["exec", id.as_str(), "--"];
        args.extend_from_slice(argv);
        self.pct(&args)
    }

    /// The commands run inside containers since `mark` (each the argv after `--`, joined).
    pub fn execs_since(&self, mark: usize) -> Vec<String> {
        self.journal_since(mark)
            .into_iter()
            .filter(|e| e.subcommand() == "exec")
            .map(|e| {
                let i = e.argv.iter().position(|a| a == "--").map_or(0, |i| i + 1);
                e.argv[i..].join(" ")
            })
            .collect()
    }

    /// The CT's conf file, or `None` when it does not exist.
    pub fn conf(&self, ctid: u32) -> Option<String> {
        std::fs::read_to_string(self.path(&format!("/etc/pve/lxc/{ctid}.conf"))).ok()
    }

    /// The main section of the CT's conf (before the first `[section]`).
    pub fn conf_main(&self, ctid: u32) -> String {
        let conf = self
            .conf(ctid)
            .unwrap_or_else(|| panic!("CT {ctid} has no conf"));
        conf.lines()
            .take_while(|l| !l.starts_with('['))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Snapshot names of a CT, from its conf sections.
    pub fn snapshots(&self, ctid: u32) -> Vec<String> {
        self.conf(ctid)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix('[').and_then(|l| l.strip_suffix(']')))
            .filter(|s| *s != "pve:pending")
            .map(str::to_string)
            .collect()
    }

    /// `pct status` says running.
    pub fn is_running(&self, ctid: u32) -> bool {
        self.pct(&["status", &ctid.to_string()]).stdout.trim() == "status: running"
    }

    /// Hold CT `ctid`'s config lock (`/run/lock/lxc/pve-config-<ctid>.lock`, the flock Proxmox
    /// takes around conf edits) as another process would, until the returned file is dropped.
    pub fn hold_conf_lock(&self, ctid: u32) -> std::fs::File {
        let path = self.path(&format!("/run/lock/lxc/pve-config-{ctid}.lock"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let lock = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        lock.lock().unwrap();
        lock
    }

    /// Write pve-sim's faults file.
    pub fn set_faults(&self, rules: &str) {
        let p = self.path("/etc/pve-sim/faults");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, rules).unwrap();
    }

    /// Write pve-sim's latency file.
    pub fn set_latency(&self, rules: &str) {
        let p = self.path("/etc/pve-sim/latency");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, rules).unwrap();
    }

    /// Every journal entry so far.
    pub fn journal(&self) -> Vec<JournalEntry> {
        let text = std::fs::read_to_string(self.path("/var/log/pve-sim/journal.jsonl"))
            .unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line {l}: {e}"));
                JournalEntry {
                    argv: v["argv"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_string())
                        .collect(),
                    exit: v["exit"].as_i64().unwrap(),
                    mutating: v["mutating"].as_bool().unwrap(),
                    start_ms: v["start_ms"].as_u64().unwrap_or(0),
                    end_ms: v["end_ms"].as_u64().unwrap_or(0),
                }
            })
            .collect()
    }

    /// Number of journal entries so far: pass to [`Host::journal_since`].
    pub fn journal_mark(&self) -> usize {
        self.journal().len()
    }

    pub fn journal_since(&self, mark: usize) -> Vec<JournalEntry> {
        self.journal().split_off(mark)
    }

    /// Mutating calls since `mark`, as argv strings (for readable assertion messages).
    pub fn mutating_since(&self, mark: usize) -> Vec<String> {
        self.journal_since(mark)
            .into_iter()
            .filter(|e| e.mutating)
            .map(|e| e.argv.join(" "))
            .collect()
    }
}

/// The orchestrator and drop-in step scripts.
impl Host {
    /// The installed orchestrator, by the path the design document names.
    pub fn establish_path(&self) -> PathBuf {
        self.prefix().join("bin/phoenix_establish_hypervisor.sh")
    }

    /// Run the installed orchestrator (`PREFIX/bin/phoenix_establish_hypervisor.sh args...`).
    /// Call [`Host::install`] first.
    pub fn establish(&self, args: &[&str]) -> Run {
        let path = self.establish_path();
        assert!(
            path.exists(),
            "{} is not installed: call host.install() first",
            path.display()
        );
        self.run(path.to_str().expect("utf-8 path"), args)
    }

    /// Put an executable shell script at `PREFIX/bin/<design_name>.sh` (e.g.
    /// `phoenix_hypervisor_lxc_nvidia`) in place of what is there: an administrator's drop-in
    /// replacement. `body` follows a `#!/bin/sh` line. Returns the path.
    pub fn drop_in(&self, design_name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.prefix().join(format!("bin/{design_name}.sh"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("sh.tmp");
        std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Edit the installed hypervisor config in place.
    pub fn edit_hypervisor_config(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.hv_config).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(&self.hv_config, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }

    /// CTIDs `pct list` shows.
    pub fn ct_ids(&self) -> Vec<u32> {
        self.pct(&["list"])
            .ok()
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }
}

/// The command-line contract every step program keeps (`architecture.md`, "Step contracts"),
/// checked on the built binary `bin` that installs as `program`: `--help` and `--version` exit 0
/// under the installed name; missing arguments (for steps that take a CTID, `takes_ctid`) and a
/// CTID that is not a VMID are usage errors, exit 2, before anything else happens (no host is
/// set up for these runs).
///
/// Each step crate calls this from an integration test of its own, which is also what makes
/// `cargo test --workspace` build its binaries before the end-to-end tests run.
pub fn assert_step_cli(bin: &str, program: &str, takes_ctid: bool) {
    let run = |args: &[&str]| {
        Run::from(
            Command::new(bin)
                .args(args)
                .env_remove("PHOENIX_HOST_ROOT")
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("run {bin}: {e}")),
        )
    };
    let help = run(&["--help"]).ok();
    assert!(
        help.stdout.contains(&format!("Usage: {program} ")),
        "{}",
        help.stdout
    );
    assert!(help.stdout.contains("--dry-run"), "{}", help.stdout);
    let version = run(&["--version"]).ok();
    assert!(
        version.stdout.starts_with(&format!("{program} ")),
        "{}",
        version.stdout
    );
    if takes_ctid {
        let none = run(&[]).expect_code(2);
        assert!(none.stderr.contains("Usage:"), "{}", none.stderr);
    }
    let bad = run(&["abc", "x", "y"]).expect_code(2);
    assert!(bad.stderr.starts_with("error: "), "{}", bad.stderr);
}

/// Wait (at most 60 s, else panic) until no process of group `pgid` is left: e.g. the
/// orphaned steps of a run the test killed.
pub fn wait_group_gone(pgid: u32) {
    let t = std::time::Instant::now();
    while Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(60),
            "processes of group {pgid} linger"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
