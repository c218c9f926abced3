//! The one Proxmox command client: every `pct`, `pvesm` and `pveversion` command line in the
//! product is built and run here (style.md: "`pct` is called through one typed client").
//!
//! - Argument vectors are built by pure functions ([`CreateSpec::args`], [`CloneSpec::args`],
//!   [`set_args`], ...) so tests can check each one against Proxmox's API schema.
//! - Values are always separate argv elements; nothing here goes through a shell. Commands run
//!   inside a container use `pct exec CTID -- argv...`; scripts use
//!   `pct exec CTID -- bash -c <script> _ arg1 arg2` with the values as positional parameters.
//! - Failures become [`ErrorKind::Proxmox`] errors naming the CTID, the subcommand and pve's
//!   stderr; "CT does not exist" becomes [`ErrorKind::Precondition`].
//! - Dry-run: mutating calls are printed (`would run: pct ...`) and not run; read-only calls
//!   (status, config, listsnapshot, pvesm status, read-only exec) still run.
//! - Every mutating call is logged at info as `[CTID] pct ...`. No secret is ever put on a
//!   command line: files with secrets go in with [`PctClient::push`] from a 0600 temp file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::config::{ContainerSpec, Ctid};
use crate::error::{Error, Result};
use crate::types::{Hostname, OsTemplate, SnapshotName, StorageId};

/// Power state of a container as `pct status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtStatus {
    Running,
    Stopped,
    /// No such CT on this node.
    Missing,
}

/// What a command run inside a container returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's own exit code (127: not found); -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The last `max` characters of stderr (or stdout when stderr is empty), trimmed: enough
    /// to say why a command failed without flooding the terminal.
    pub fn tail(&self, max: usize) -> String {
        let s = if self.stderr.trim().is_empty() {
            self.stdout.trim()
        } else {
            self.stderr.trim()
        };
        tail_chars(s, max)
    }
}

fn tail_chars(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_string();
    }
    let skip = count - max;
    format!("...{}", s.chars().skip(skip).collect::<String>())
}

/// Output of `pct config CTID`: `key: value` settings, and the `lxc.*` entries in file order
/// (they may repeat, so they are not in the map).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PctConfig {
    pub settings: BTreeMap<String, String>,
    pub lxc: Vec<(String, String)>,
}

impl PctConfig {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    /// Parse `pct config` output.
    pub fn parse(text: &str) -> PctConfig {
        let mut cfg = PctConfig::default();
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some((k, v)) = crate::conffile::parse_lxc_line(line) {
                cfg.lxc.push((k, v));
            } else if let Some((k, v)) = line.split_once(':') {
                cfg.settings
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        cfg
    }
}

/// One row of `pvesm status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageStatus {
    pub name: String,
    pub storage_type: String,
    /// `active`, `inactive`, `disabled`.
    pub status: String,
}

/// Parse `pvesm status` (PVE 8 and 9 headers).
pub fn parse_pvesm_status(text: &str) -> Vec<StorageStatus> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("Name"))
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(StorageStatus {
                name: it.next()?.to_string(),
                storage_type: it.next()?.to_string(),
                status: it.next()?.to_string(),
            })
        })
        .collect()
}

/// Snapshot names from `pct listsnapshot` output, in listed order, without `current`.
pub fn parse_listsnapshot(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("`->")?;
            let name = rest.split_whitespace().next()?;
            (name != "current").then(|| name.to_string())
        })
        .collect()
}

/// The power state of every CT on this node from `pct list` output (pve-container
/// `src/PVE/CLI/pct.pm`, `list`: `PVE::API2::LXC->vmlist` printed as `VMID Status Lock Name`;
/// no output at all when there is no CT). The lock column may be empty, so only the first two
/// columns are read; locks come from the conf file.
pub fn parse_list(text: &str) -> BTreeMap<Ctid, CtStatus> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let id: Ctid = it.next()?.parse().ok()?;
            let status = match it.next()? {
                "running" => CtStatus::Running,
                _ => CtStatus::Stopped,
            };
            Some((id, status))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Argument vectors (pure; checked against the API schema in tests)

/// `name=eth0,bridge=vmbr0,ip=10.0.0.200/24,gw=10.0.0.1,hwaddr=52:54:00:AA:BB:CC` for a block.
/// The MAC goes inside net0 (`--hwaddress` is not a pct option); `ip` prefers `static_ip`.
pub fn net0_value(spec: &ContainerSpec) -> String {
    let net = &spec.network_config;
    let ip = spec.ip();
    let mut v = format!(
        "name={},bridge={},ip={ip},gw={}",
        net.name, net.bridge, net.gw
    );
    if let Some(mac) = spec.mac_address.as_deref() {
        v.push_str(&format!(",hwaddr={mac}"));
    }
    v
}

/// Everything `pct create` needs for one container block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    pub ctid: Ctid,
    /// Host-absolute path (or a `storage:vztmpl/...` volid), passed unprefixed.
    pub ostemplate: OsTemplate,
    pub hostname: Hostname,
    pub memory_mb: u64,
    pub cores: u32,
    pub storage: StorageId,
    pub rootfs_gb: u64,
    pub net0: String,
    /// Omitted when empty.
    pub features: String,
    pub unprivileged: bool,
    /// `--onboot`, when the block sets it.
    pub onboot: Option<bool>,
    /// `--startup`, when the block sets it.
    pub startup: Option<crate::types::Startup>,
    /// The block's `tags`, if any; `--tags` always carries them plus the ownership mark.
    pub tags: Option<crate::types::Tags>,
}

impl CreateSpec {
    pub fn from_spec(ctid: Ctid, spec: &ContainerSpec) -> CreateSpec {
        CreateSpec {
            ctid,
            ostemplate: spec.template.clone(),
            hostname: spec.name.clone(),
            memory_mb: spec.memory_mb,
            cores: spec.cores,
            storage: spec.storage_pool.clone(),
            rootfs_gb: spec.storage_size_gb,
            net0: net0_value(spec),
            features: spec.proxmox_features(spec.unprivileged),
            unprivileged: spec.unprivileged,
            onboot: spec.onboot,
            startup: spec.startup,
            tags: spec.tags.clone(),
        }
    }

    /// `create CTID OSTEMPLATE --hostname .. --memory .. --cores .. --storage .. --rootfs
    /// POOL:GB --net0 .. [--features ..] --unprivileged 0|1` (without the leading `pct`).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "create".to_string(),
            self.ctid.to_string(),
            self.ostemplate.to_string(),
            "--hostname".into(),
            self.hostname.to_string(),
            "--memory".into(),
            self.memory_mb.to_string(),
            "--cores".into(),
            self.cores.to_string(),
            "--storage".into(),
            self.storage.to_string(),
            "--rootfs".into(),
            format!("{}:{}", self.storage, self.rootfs_gb),
            "--net0".into(),
            self.net0.clone(),
        ];
        if !self.features.trim().is_empty() {
            a.push("--features".into());
            a.push(self.features.trim().to_string());
        }
        a.push("--unprivileged".into());
        a.push(bool01(self.unprivileged).into());
        if let Some(b) = self.onboot {
            a.push("--onboot".into());
            a.push(bool01(b).into());
        }
        if let Some(s) = &self.startup {
            a.push("--startup".into());
            a.push(s.to_string());
        }
        // The ownership mark is part of the create (one call, and the CT is never without
        // it); `mark_ours` after the create then finds it and makes no call.
        let tags = self
            .tags
            .as_ref()
            .filter(|t| t.iter().next().is_some())
            .map(|t| t.to_string());
        a.push("--tags".into());
        a.push(crate::ownership::with_mark(tags.as_deref()));
        a
    }
}

/// Everything `pct clone` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneSpec {
    pub source: Ctid,
    pub target: Ctid,
    pub snapname: Option<SnapshotName>,
    pub hostname: Hostname,
    /// Full clone (`--full 1`); linked otherwise (`--full 0`).
    pub full: bool,
    /// Target storage; only allowed with `full`.
    pub storage: Option<StorageId>,
}

impl CloneSpec {
    /// `clone SOURCE TARGET [--snapname S] --hostname N --full 0|1 [--storage P]`.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "clone".to_string(),
            self.source.to_string(),
            self.target.to_string(),
        ];
        if let Some(s) = &self.snapname {
            a.push("--snapname".into());
            a.push(s.to_string());
        }
        a.push("--hostname".into());
        a.push(self.hostname.to_string());
        a.push("--full".into());
        a.push(bool01(self.full).into());
        // Proxmox refuses --storage for linked clones.
        if self.full
            && let Some(st) = &self.storage
        {
            a.push("--storage".into());
            a.push(st.to_string());
        }
        a
    }
}

fn bool01(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// `set CTID --k1 v1 --k2 v2 ...`.
pub fn set_args(ctid: Ctid, pairs: &[(&str, &str)]) -> Vec<String> {
    let mut a = vec!["set".to_string(), ctid.to_string()];
    for (k, v) in pairs {
        a.push(format!("--{k}"));
        a.push((*v).to_string());
    }
    a
}

/// `set CTID --delete k1,k2`.
pub fn set_delete_args(ctid: Ctid, keys: &[&str]) -> Vec<String> {
    vec![
        "set".to_string(),
        ctid.to_string(),
        "--delete".into(),
        keys.join(","),
    ]
}

/// `shutdown CTID --timeout N [--forceStop 1]`.
pub fn shutdown_args(ctid: Ctid, timeout_s: u64, force: bool) -> Vec<String> {
    let mut a = vec![
        "shutdown".to_string(),
        ctid.to_string(),
        "--timeout".into(),
        timeout_s.to_string(),
    ];
    if force {
        a.push("--forceStop".into());
        a.push("1".into());
    }
    a
}

/// `resize CTID DISK <N>G`: grow a disk to N GiB (a bare size is absolute; Proxmox refuses to
/// shrink).
pub fn resize_args(ctid: Ctid, disk: &str, gib: u64) -> Vec<String> {
    vec![
        "resize".to_string(),
        ctid.to_string(),
        disk.to_string(),
        format!("{gib}G"),
    ]
}

/// `config CTID [--current 1] [--snapshot NAME]`.
pub fn config_args(ctid: Ctid, current: bool, snapshot: Option<&str>) -> Vec<String> {
    let mut a = vec!["config".to_string(), ctid.to_string()];
    if current {
        a.push("--current".into());
        a.push("1".into());
    }
    if let Some(s) = snapshot {
        a.push("--snapshot".into());
        a.push(s.to_string());
    }
    a
}

/// Bytes of a Proxmox volume `size=` value (`32G`, `512M`, `1T`, `100K`, bare bytes), as
/// PVE::JSONSchema::parse_size reads it.
pub fn parse_disk_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num.parse().ok()?;
    (v >= 0.0).then_some((v * mul as f64) as u64)
}

/// The `size=` of a disk value (`lxc-disks:subvol-901-disk-0,size=32G`) in bytes.
pub fn disk_size_bytes(value: &str) -> Option<u64> {
    value
        .split(',')
        .find_map(|p| p.strip_prefix("size="))
        .and_then(parse_disk_size)
}

/// `exec CTID -- argv...`: `--` so arguments starting with `-` are never pct options.
pub fn exec_args(ctid: Ctid, argv: &[&str]) -> Vec<String> {
    let mut a = vec!["exec".to_string(), ctid.to_string(), "--".into()];
    a.extend(argv.iter().map(|s| s.to_string()));
    a
}

/// `exec CTID -- bash -c SCRIPT _ args...`: values reach the script as `$1`, `$2`, ...
pub fn exec_script_args(ctid: Ctid, script: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["bash", "-c", script, "_"];
    argv.extend_from_slice(args);
    exec_args(ctid, &argv)
}

/// `push CTID HOST_SRC DEST [--perms MODE]`.
pub fn push_args(ctid: Ctid, host_src: &str, dest: &str, perms: Option<&str>) -> Vec<String> {
    let mut a = vec![
        "push".to_string(),
        ctid.to_string(),
        host_src.to_string(),
        dest.to_string(),
    ];
    if let Some(p) = perms {
        a.push("--perms".into());
        a.push(p.to_string());
    }
    a
}

/// An argv as a person would type it: words with shell-special characters single-quoted.
/// Display only; never run through a shell.
pub fn display_argv<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| {
            let a = a.as_ref();
            let safe = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
            if safe {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// The client

/// Runs Proxmox's command-line tools. Cheap to create; tools are looked up on `PATH` at first use.
#[derive(Debug)]
pub struct PctClient {
    dry_run: bool,
    pct: OnceLock<std::result::Result<PathBuf, String>>,
    pvesm: OnceLock<std::result::Result<PathBuf, String>>,
    pveversion: OnceLock<std::result::Result<PathBuf, String>>,
}

/// Whether a `pct` subcommand changes anything (as pve-sim's journal marks them).
pub fn is_mutating(sub: &str) -> bool {
    matches!(
        sub,
        "create"
            | "clone"
            | "set"
            | "start"
            | "stop"
            | "shutdown"
            | "reboot"
            | "snapshot"
            | "delsnapshot"
            | "rollback"
            | "destroy"
            | "template"
            | "push"
            | "mount"
            | "unmount"
            | "unlock"
            | "resize"
            | "restore"
            | "migrate"
    )
}

impl PctClient {
    pub fn new(dry_run: bool) -> PctClient {
        PctClient {
            dry_run,
            pct: OnceLock::new(),
            pvesm: OnceLock::new(),
            pveversion: OnceLock::new(),
        }
    }

    /// A client with fixed tool paths (tests).
    pub fn with_tools(dry_run: bool, pct: &Path, pvesm: &Path, pveversion: &Path) -> PctClient {
        let c = PctClient::new(dry_run);
        let _ = c.pct.set(Ok(pct.to_path_buf()));
        let _ = c.pvesm.set(Ok(pvesm.to_path_buf()));
        let _ = c.pveversion.set(Ok(pveversion.to_path_buf()));
        c
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn tool(cell: &OnceLock<std::result::Result<PathBuf, String>>, name: &str) -> Result<PathBuf> {
        cell.get_or_init(|| which::which(name).map_err(|e| e.to_string()))
            .clone()
            .map_err(|e| {
                Error::precondition(format!(
                    "`{name}` not found on PATH ({e}): this is not a Proxmox VE host, or PATH lacks /usr/sbin"
                ))
                .into()
            })
    }

    /// Path of `pct` (a precondition error when it is not installed).
    pub fn pct_path(&self) -> Result<PathBuf> {
        Self::tool(&self.pct, "pct")
    }

    pub fn pvesm_path(&self) -> Result<PathBuf> {
        Self::tool(&self.pvesm, "pvesm")
    }

    pub fn pveversion_path(&self) -> Result<PathBuf> {
        Self::tool(&self.pveversion, "pveversion")
    }

    /// Run a tool and collect its output; an error only when it cannot be started.
    fn spawn(tool: &Path, name: &str, args: &[String]) -> Result<ExecOutput> {
        let out = Command::new(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                Error::proxmox(format!(
                    "cannot run `{name} {}`: {e}",
                    args.first().map(String::as_str).unwrap_or("")
                ))
            })?;
        Ok(ExecOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Run `pct args...` raw: no dry-run handling, no failure mapping. Prefer the typed methods.
    pub fn run_raw(&self, args: &[String]) -> Result<ExecOutput> {
        Self::spawn(&self.pct_path()?, "pct", args)
    }

    /// Run a `pct` command that must succeed. Mutating commands are logged, and only printed in
    /// dry-run mode (then an empty success is returned).
    fn pct(&self, ctid: Option<Ctid>, args: Vec<String>) -> Result<ExecOutput> {
        let sub = args.first().cloned().unwrap_or_default();
        let mutating = is_mutating(&sub);
        let prefix = ctid.map(|c| format!("[{c}] ")).unwrap_or_default();
        if mutating {
            if self.dry_run {
                println!("would run: pct {}", display_argv(&args));
                log::info!("{prefix}dry-run: would run: pct {}", display_argv(&args));
                return Ok(ExecOutput::default());
            }
            log::info!("{prefix}pct {}", display_argv(&args));
        } else {
            log::debug!("{prefix}pct {}", display_argv(&args));
        }
        let mut out = self.run_raw(&args)?;
        // A busy host: retry what failed only because a lock was taken for a moment.
        let mut pause = RETRY_FIRST_PAUSE;
        for attempt in 1..=RETRIES {
            if out.code == 0 || !mutating || !is_transient(&out.stderr) {
                break;
            }
            log::warn!(
                "{prefix}`pct {sub}` failed the way a busy host fails ({}); retry {attempt} of {RETRIES} in {} ms",
                out.tail(200),
                pause.as_millis()
            );
            std::thread::sleep(pause);
            pause *= 2;
            out = self.run_raw(&args)?;
        }
        // `pct push` reports task failures on stderr with exit 0 (proxmox.md).
        let failed = out.code != 0 || (sub == "push" && !out.stderr.trim().is_empty());
        if failed {
            return Err(pct_failure(ctid, &sub, &out).into());
        }
        Ok(out)
    }

    // -- read-only ---------------------------------------------------------------------------

    /// `pct status CTID`.
    pub fn status(&self, ctid: Ctid) -> Result<CtStatus> {
        let args = vec!["status".to_string(), ctid.to_string()];
        log::debug!("[{ctid}] pct {}", display_argv(&args));
        let out = self.run_raw(&args)?;
        if out.code != 0 {
            if is_missing_ct(&out.stderr) {
                return Ok(CtStatus::Missing);
            }
            return Err(pct_failure(Some(ctid), "status", &out).into());
        }
        match out.stdout.trim() {
            "status: running" => Ok(CtStatus::Running),
            "status: stopped" => Ok(CtStatus::Stopped),
            other => Err(Error::proxmox(format!(
                "CT {ctid}: unexpected `pct status` output: {other:?}"
            ))
            .into()),
        }
    }

    /// `pct list`: the power state of every CT on this node in one call ([`parse_list`]).
    pub fn list(&self) -> Result<BTreeMap<Ctid, CtStatus>> {
        let args = vec!["list".to_string()];
        log::debug!("pct {}", display_argv(&args));
        let out = self.run_raw(&args)?;
        if out.code != 0 {
            return Err(pct_failure(None, "list", &out).into());
        }
        Ok(parse_list(&out.stdout))
    }

    pub fn exists(&self, ctid: Ctid) -> Result<bool> {
        Ok(self.status(ctid)? != CtStatus::Missing)
    }

    /// A precondition error unless the CT exists; returns its status.
    pub fn require_exists(&self, ctid: Ctid) -> Result<CtStatus> {
        match self.status(ctid)? {
            CtStatus::Missing => Err(missing_ct_error(ctid).into()),
            s => Ok(s),
        }
    }

    /// `pct config CTID` (pending values merged, as Proxmox shows them).
    pub fn config(&self, ctid: Ctid) -> Result<PctConfig> {
        let out = self.pct(Some(ctid), config_args(ctid, false, None))?;
        Ok(PctConfig::parse(&out.stdout))
    }

    /// `pct config CTID --current 1`: the values the CT runs with, without pending changes
    /// (pve-container `PVE::API2::LXC::Config` `vm_config`: `current` skips
    /// `PVE::GuestHelpers::config_with_pending_array`'s merge).
    pub fn config_current(&self, ctid: Ctid) -> Result<PctConfig> {
        let out = self.pct(Some(ctid), config_args(ctid, true, None))?;
        Ok(PctConfig::parse(&out.stdout))
    }

    /// `pct config CTID --snapshot NAME`: the config a snapshot recorded.
    pub fn config_snapshot(&self, ctid: Ctid, snapshot: &str) -> Result<PctConfig> {
        let out = self.pct(Some(ctid), config_args(ctid, false, Some(snapshot)))?;
        Ok(PctConfig::parse(&out.stdout))
    }

    /// `pct listsnapshot CTID`: snapshot names, without `current`.
    pub fn list_snapshots(&self, ctid: Ctid) -> Result<Vec<String>> {
        let out = self.pct(Some(ctid), vec!["listsnapshot".into(), ctid.to_string()])?;
        Ok(parse_listsnapshot(&out.stdout))
    }

    /// Whether a snapshot with exactly this name exists.
    pub fn has_snapshot(&self, ctid: Ctid, name: &str) -> Result<bool> {
        Ok(self.list_snapshots(ctid)?.iter().any(|s| s == name))
    }

    /// `pvesm status`.
    pub fn pvesm_status(&self) -> Result<Vec<StorageStatus>> {
        let args = vec!["status".to_string()];
        log::debug!("pvesm status");
        let out = Self::spawn(&self.pvesm_path()?, "pvesm", &args)?;
        if out.code != 0 {
            return Err(Error::proxmox(format!(
                "`pvesm status` failed (exit {}): {}",
                out.code,
                out.tail(2000)
            ))
            .into());
        }
        Ok(parse_pvesm_status(&out.stdout))
    }

    /// `pveversion` output, trimmed (e.g. `pve-manager/8.4.1/...`).
    pub fn pveversion(&self) -> Result<String> {
        let out = Self::spawn(&self.pveversion_path()?, "pveversion", &[])?;
        if out.code != 0 {
            return Err(Error::precondition(format!(
                "`pveversion` failed (exit {}): {}: not a Proxmox VE host",
                out.code,
                out.tail(500)
            ))
            .into());
        }
        Ok(out.stdout.trim().to_string())
    }

    /// `pveversion -v`: one `package: version` line per Proxmox package (`pve-container: ...`,
    /// `lxc-pve: ...`).
    pub fn pveversion_verbose(&self) -> Result<String> {
        let out = Self::spawn(&self.pveversion_path()?, "pveversion", &["-v".to_string()])?;
        if out.code != 0 {
            return Err(Error::precondition(format!(
                "`pveversion -v` failed (exit {}): {}",
                out.code,
                out.tail(500)
            ))
            .into());
        }
        Ok(out.stdout)
    }

    // -- mutating ----------------------------------------------------------------------------

    /// `pct create`, then the ownership mark (`crate::ownership`).
    pub fn create(&self, spec: &CreateSpec) -> Result<()> {
        self.create_owned(spec.ctid, "create", spec.args())?;
        if !self.dry_run {
            crate::ownership::record_lineage(spec.ctid, None);
        }
        Ok(())
    }

    /// `pct clone`, then the ownership mark unless the clone inherited it with its source's
    /// tags.
    pub fn clone_ct(&self, spec: &CloneSpec) -> Result<()> {
        self.create_owned(spec.target, "clone", spec.args())?;
        if !self.dry_run {
            crate::ownership::record_lineage(spec.target, Some(spec.source));
        }
        Ok(())
    }

    /// Run a create or clone of `ctid` as ours: the in-flight record before it, and once it
    /// returned success the run's created record and the tag (`crate::ownership`).
    fn create_owned(&self, ctid: Ctid, what: &str, args: Vec<String>) -> Result<()> {
        if self.dry_run {
            return self.pct(Some(ctid), args).map(drop);
        }
        crate::ownership::write_intent(ctid, what)?;
        if let Err(e) = self.pct(Some(ctid), args) {
            // Proxmox removes what a failed create made; a `lock: create` left behind (the
            // call was killed) may be ours, so its record stays for the next run to repair.
            let left_locked = crate::conffile::ConfFile::load(ctid)
                .is_ok_and(|c| c.get("lock").as_deref() == Some("create"));
            if !left_locked {
                crate::ownership::clear_intent(ctid);
            }
            return Err(e);
        }
        crate::ownership::record_created(ctid);
        // A clone of our template has inherited the mark (pve-container `PVE::API2::LXC`
        // `clone_vm` copies the source's config, `tags` included): `mark_ours` reads the conf
        // file and sets it only where it is missing.
        self.mark_ours(ctid)?;
        crate::ownership::clear_intent(ctid);
        Ok(())
    }

    /// Set the ownership mark on `ctid` unless it has it (adoption, repair).
    pub fn mark_ours(&self, ctid: Ctid) -> Result<bool> {
        // The conf file holds the tags (no `pct config` call).
        let tags = crate::conffile::ConfFile::load(ctid)?.get("tags");
        if crate::ownership::has_mark(tags.as_deref()) {
            return Ok(false);
        }
        self.set(
            ctid,
            &[("tags", &crate::ownership::with_mark(tags.as_deref()))],
        )?;
        Ok(true)
    }

    /// `pct unlock CTID`: remove a stale lock.
    pub fn unlock(&self, ctid: Ctid) -> Result<()> {
        self.pct(Some(ctid), vec!["unlock".into(), ctid.to_string()])
            .map(drop)
    }

    /// `pct set CTID --k v ...`; nothing is run for an empty list.
    pub fn set(&self, ctid: Ctid, pairs: &[(&str, &str)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.pct(Some(ctid), set_args(ctid, pairs)).map(drop)
    }

    /// `pct set CTID --delete k1,k2`; nothing is run for an empty list.
    pub fn set_delete(&self, ctid: Ctid, keys: &[&str]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.pct(Some(ctid), set_delete_args(ctid, keys)).map(drop)
    }

    /// `pct resize CTID DISK <N>G` (grow only).
    pub fn resize(&self, ctid: Ctid, disk: &str, gib: u64) -> Result<()> {
        self.pct(Some(ctid), resize_args(ctid, disk, gib)).map(drop)
    }

    pub fn start(&self, ctid: Ctid) -> Result<()> {
        self.pct(Some(ctid), vec!["start".into(), ctid.to_string()])
            .map(drop)
    }

    pub fn stop(&self, ctid: Ctid) -> Result<()> {
        self.pct(Some(ctid), vec!["stop".into(), ctid.to_string()])
            .map(drop)
    }

    /// `pct shutdown CTID --timeout N [--forceStop 1]`.
    pub fn shutdown(&self, ctid: Ctid, timeout_s: u64, force: bool) -> Result<()> {
        self.pct(Some(ctid), shutdown_args(ctid, timeout_s, force))
            .map(drop)
    }

    /// Stop a running CT cleanly: `pct shutdown --timeout N`, and when that fails (`container
    /// did not stop`) a hard `pct stop`. A stopped CT is left alone. Returns whether it was
    /// running.
    pub fn shutdown_or_stop(&self, ctid: Ctid, timeout_s: u64) -> Result<bool> {
        // The shutdown is tried first: the CT is almost always running here, so asking
        // `pct status` first would cost a call each time. Only when it fails is the status
        // asked: a CT that is stopped (pve-container `PVE::API2::LXC::Status` `vm_shutdown`
        // dies "CT <vmid> not running") is fine, a running one is stopped hard.
        let Err(e) = self.shutdown(ctid, timeout_s, false) else {
            return Ok(true);
        };
        if self.require_exists(ctid)? != CtStatus::Running {
            return Ok(false);
        }
        if crate::error::kind_of(&e) != crate::error::ErrorKind::Proxmox {
            return Err(e);
        }
        log::warn!("[{ctid}] clean shutdown failed ({e:#}); stopping it hard");
        self.stop(ctid)?;
        Ok(true)
    }

    pub fn snapshot(&self, ctid: Ctid, name: &str) -> Result<()> {
        self.pct(
            Some(ctid),
            vec!["snapshot".into(), ctid.to_string(), name.to_string()],
        )
        .map(drop)
    }

    pub fn delsnapshot(&self, ctid: Ctid, name: &str) -> Result<()> {
        self.pct(
            Some(ctid),
            vec!["delsnapshot".into(), ctid.to_string(), name.to_string()],
        )
        .map(drop)
    }

    /// `pct delsnapshot CTID NAME --force 1`: also when removing a volume snapshot fails (one
    /// left half-made by an interrupted `pct snapshot`), `PVE::AbstractConfig::snapshot_delete`.
    pub fn delsnapshot_force(&self, ctid: Ctid, name: &str) -> Result<()> {
        self.pct(
            Some(ctid),
            vec![
                "delsnapshot".into(),
                ctid.to_string(),
                name.to_string(),
                "--force".into(),
                "1".into(),
            ],
        )
        .map(drop)
    }

    /// `pct destroy CTID [--force 1]` (`--force` stops a running CT first).
    pub fn destroy(&self, ctid: Ctid, force: bool) -> Result<()> {
        let mut args = vec!["destroy".to_string(), ctid.to_string()];
        if force {
            args.push("--force".into());
            args.push("1".into());
        }
        self.pct(Some(ctid), args).map(drop)
    }

    /// `pct template CTID` (convert to a template).
    pub fn template(&self, ctid: Ctid) -> Result<()> {
        let out = self.pct(Some(ctid), vec!["template".into(), ctid.to_string()])?;
        // Task failures of `pct template` exit 0 (proxmox.md); the message is the evidence.
        let all = format!("{}{}", out.stdout, out.stderr);
        if all.contains("feature is not available") {
            return Err(Error::proxmox(format!(
                "CT {ctid}: `pct template` failed: {}",
                tail_chars(all.trim(), 2000)
            ))
            .into());
        }
        Ok(())
    }

    /// `pct push CTID HOST_SRC DEST [--perms MODE]`; `host_src` is host-absolute, unprefixed.
    pub fn push(&self, ctid: Ctid, host_src: &str, dest: &str, perms: Option<&str>) -> Result<()> {
        self.pct(Some(ctid), push_args(ctid, host_src, dest, perms))
            .map(drop)
    }

    /// `pct exec CTID -- argv...`, a command that may change the guest: printed, not run, in
    /// dry-run mode (returns success with empty output). Returns the command's own exit code;
    /// an error only when pct itself fails (CT missing or not running).
    pub fn exec(&self, ctid: Ctid, argv: &[&str]) -> Result<ExecOutput> {
        self.exec_inner(ctid, exec_args(ctid, argv), true)
    }

    /// As [`PctClient::exec`] for a read-only command: runs in dry-run mode too.
    pub fn exec_query(&self, ctid: Ctid, argv: &[&str]) -> Result<ExecOutput> {
        self.exec_inner(ctid, exec_args(ctid, argv), false)
    }

    /// `pct exec CTID -- bash -c SCRIPT _ args...` (may change the guest).
    pub fn exec_script(&self, ctid: Ctid, script: &str, args: &[&str]) -> Result<ExecOutput> {
        self.exec_inner(ctid, exec_script_args(ctid, script, args), true)
    }

    /// As [`PctClient::exec_script`] for a read-only script: runs in dry-run mode too.
    pub fn exec_script_query(&self, ctid: Ctid, script: &str, args: &[&str]) -> Result<ExecOutput> {
        self.exec_inner(ctid, exec_script_args(ctid, script, args), false)
    }

    fn exec_inner(&self, ctid: Ctid, args: Vec<String>, mutating: bool) -> Result<ExecOutput> {
        let shown = display_exec(&args);
        if mutating {
            if self.dry_run {
                println!("would run: pct {shown}");
                log::info!("[{ctid}] dry-run: would run: pct {shown}");
                return Ok(ExecOutput::default());
            }
            log::info!("[{ctid}] pct {shown}");
        } else {
            log::debug!("[{ctid}] pct {shown}");
        }
        let out = self.run_raw(&args)?;
        if let Some(why) = exec_failed_in_proxmox(&out) {
            return Err(Error::proxmox(format!(
                "CT {ctid}: `pct exec` failed before running `{}` (exit {}): {why}",
                args.get(3).map(String::as_str).unwrap_or(""),
                out.code
            ))
            .into());
        }
        // pct's own failures (before lxc-attach) exit 255 with a recognisable message.
        if out.code == 255 {
            if is_missing_ct(&out.stderr) {
                return Err(missing_ct_error(ctid).into());
            }
            if out.stderr.contains("not running") {
                return Err(Error::precondition(format!(
                    "CT {ctid} is not running, cannot run `{}` in it\nhint: start it with `pct start {ctid}`",
                    args.get(3).map(String::as_str).unwrap_or("")
                ))
                .into());
            }
        }
        Ok(out)
    }

    /// `pct reboot CTID --timeout N`: a running CT shut down (killed when still up after N s)
    /// and started again in one call, pending changes applied (pve-container
    /// `PVE::API2::LXC::Status` `vm_reboot` → `PVE::LXC::vm_reboot`: `vm_stop` with
    /// kill-after-timeout, then `vm_start`, which applies `[pve:pending]` and turns raw `lxc.*`
    /// lines and `devN` into LXC's config). Like `pct start` it returns once the CT's init
    /// runs. Returns `false`, having changed nothing, when the CT is not running (Proxmox
    /// refuses before its task: `VM <vmid> not running`), so a caller need not ask `pct status`
    /// first. In dry-run mode `pct status` is asked and the reboot printed when the CT runs.
    pub fn reboot(&self, ctid: Ctid, timeout_s: u64) -> Result<bool> {
        let args = vec![
            "reboot".to_string(),
            ctid.to_string(),
            "--timeout".into(),
            timeout_s.to_string(),
        ];
        if self.dry_run {
            if self.require_exists(ctid)? != CtStatus::Running {
                return Ok(false);
            }
            self.pct(Some(ctid), args)?;
            return Ok(true);
        }
        match self.pct(Some(ctid), args) {
            Ok(_) => Ok(true),
            Err(e) if format!("{e:#}").contains(&format!("VM {ctid} not running")) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `pct set CTID --k1 v1 ... --delete k3,k4`: settings and deletions in one call (Proxmox
    /// takes both at once and refuses a key in both: pve-container `PVE::API2::LXC::Config`
    /// `update_vm`, "you can't use '-k' and -delete k' at the same time"). Nothing to set or
    /// delete: no call.
    pub fn set_and_delete(&self, ctid: Ctid, pairs: &[(&str, &str)], keys: &[&str]) -> Result<()> {
        if pairs.is_empty() && keys.is_empty() {
            return Ok(());
        }
        let mut args = set_args(ctid, pairs);
        if !keys.is_empty() {
            args.push("--delete".into());
            args.push(keys.join(","));
        }
        self.pct(Some(ctid), args).map(drop)
    }
}

/// Whether a `pct exec` result is a failure of Proxmox rather than of the command inside: the
/// exit code of `pct exec` is the command's own once `lxc-attach` runs it (pve-container
/// `PVE::CLI::pct` `exec`: `exec('lxc-attach', ...)`), so only two things tell them apart:
/// - `lxc-attach` itself failed: its own `lxc-attach: <vmid>: ...` line on stderr (other than
///   `Failed to exec`, which is the command not being found or runnable, 127/126);
/// - pct died before `lxc-attach` (`die` in the Perl CLI): exit 255 with only a message on
///   stderr and nothing on stdout. A command inside that exits 255 printing only to stderr is
///   taken for this too; commands that report on stdout (`nvidia-smi`) are not.
///
/// Returns the message to report, `None` for a result of the command itself. "Missing CT" and
/// "not running" are told apart later (preconditions, exit 3).
fn exec_failed_in_proxmox(out: &ExecOutput) -> Option<String> {
    if out.code == 0 {
        return None;
    }
    let stderr = out.stderr.trim();
    let attach = stderr
        .lines()
        .any(|l| l.starts_with("lxc-attach: ") && !l.contains("Failed to exec"));
    let died = out.code == 255 && out.stdout.trim().is_empty() && !stderr.is_empty();
    if (attach || died) && !is_missing_ct(stderr) && !stderr.contains("not running") {
        return Some(tail_chars(stderr, 1500));
    }
    None
}

/// An exec argv for logs: a long script shows as its first line and length.
fn display_exec(args: &[String]) -> String {
    let shortened: Vec<String> = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let is_script = i >= 1 && args.get(i - 1).is_some_and(|p| p == "-c");
            if is_script && (a.len() > 80 || a.contains('\n')) {
                let first = a.lines().next().unwrap_or("");
                format!("{}... ({} bytes)", tail_cut(first, 60), a.len())
            } else {
                a.clone()
            }
        })
        .collect();
    display_argv(&shortened)
}

fn tail_cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Retries of a mutating call that failed transiently ([`is_transient`]), and the first pause
/// (doubled after each): 0.25 + 0.5 + 1 + 2 s at most.
pub const RETRIES: u32 = 4;
const RETRY_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// A failure a busy host produces and that goes away by itself: the config lock could not be
/// taken in time (`PVE::AbstractConfig::lock_config_full` → `PVE::Tools::lock_file_full`: "can't
/// lock file '...' - got timeout"), or the CT is locked by a task (`check_lock`: "CT is locked
/// (snapshot)") that then ends. `lock: create` is not transient: a create or clone of that CT
/// is running or was interrupted, which the orchestrator repairs.
pub fn is_transient(stderr: &str) -> bool {
    (stderr.contains("can't lock file") && stderr.contains("got timeout"))
        || (stderr.contains("CT is locked (") && !stderr.contains("CT is locked (create)"))
}

/// pve's message for a CT that does not exist on this node.
pub fn is_missing_ct(stderr: &str) -> bool {
    stderr.contains("Configuration file") && stderr.contains("does not exist")
}

fn missing_ct_error(ctid: Ctid) -> Error {
    Error::precondition(format!(
        "CT {ctid} does not exist on this node\nhint: create it first (phoenix_hypervisor_create_lxc {ctid}) or check the CTID"
    ))
}

fn pct_failure(ctid: Option<Ctid>, sub: &str, out: &ExecOutput) -> Error {
    if let Some(ctid) = ctid
        && is_missing_ct(&out.stderr)
        && sub != "create"
    {
        return missing_ct_error(ctid);
    }
    let who = ctid.map(|c| format!("CT {c}: ")).unwrap_or_default();
    Error::proxmox(format!(
        "{who}`pct {sub}` failed (exit {}): {}",
        out.code,
        out.tail(2000)
    ))
}

/// Test support shared by the modules that drive a fake `pct`.
#[cfg(test)]
pub(crate) mod test_support {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// An executable shell script at `dir/pct` that appends its argv (one per line) to
    /// `dir/argv.log` and then runs `body`.
    pub(crate) fn fake_tool(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("pct");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\n[ -n \"$FAKE_PROBE\" ] && exit 0\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '{}'\n{body}\n",
                dir.join("argv.log").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A child forked by another test thread while the script was open for writing holds
        // that descriptor until its exec, and running the script then fails with ETXTBSY.
        // Once one run succeeds no writer is left, so probe until then.
        for _ in 0..100 {
            match Command::new(&p).env("FAKE_PROBE", "1").status() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                _ => break,
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference base template 900 (empty features), from the steps' test block.
    pub(crate) fn spec_900() -> ContainerSpec {
        let mut s = crate::steps::tests::spec("BaseTemplate");
        s.features = Some("".parse().unwrap());
        s.static_ip = Some("10.0.0.200/24".parse().unwrap());
        s.is_template = Some(true);
        s.template_snapshot_name = Some("base-snapshot".parse().unwrap());
        s
    }

    #[test]
    fn create_argv_has_mac_in_net0_and_no_empty_features() {
        let a = CreateSpec::from_spec(Ctid(900), &spec_900()).args();
        assert_eq!(
            a,
            [
                "create",
                "900",
                "/fastData/shared-iso/template/cache/ubuntu.tar.zst",
                "--hostname",
                "BaseTemplate",
                "--memory",
                "2048",
                "--cores",
                "2",
                "--storage",
                "lxc-disks",
                "--rootfs",
                "lxc-disks:32",
                "--net0",
                "name=eth0,bridge=vmbr0,ip=10.0.0.200/24,gw=10.0.0.1,hwaddr=52:54:00:AA:BB:CC",
                "--unprivileged",
                "1",
                "--tags",
                "phoenix-managed"
            ]
        );
        assert!(!a.iter().any(|x| x == "--hwaddress" || x == "--features"));
        let mut s = spec_900();
        s.features = Some("nesting=1".parse().unwrap());
        s.unprivileged = false;
        let a = CreateSpec::from_spec(Ctid(902), &s).args();
        let i = a.iter().position(|x| x == "--features").unwrap();
        assert_eq!(a[i + 1], "nesting=1");
        let i = a.iter().position(|x| x == "--unprivileged").unwrap();
        assert_eq!(a[i + 1], "0");
        // The block's own tags come first, the ownership mark after them.
        s.tags = Some("web;prod".parse().unwrap());
        let a = CreateSpec::from_spec(Ctid(902), &s).args();
        assert_eq!(a[a.len() - 2..], ["--tags", "web;prod;phoenix-managed"]);
    }

    #[test]
    fn clone_argv_storage_only_for_full() {
        let mut c = CloneSpec {
            source: Ctid(900),
            target: Ctid(901),
            snapname: Some("base-snapshot".parse().unwrap()),
            hostname: "gpu".parse().unwrap(),
            full: true,
            storage: Some("lxc-disks".parse().unwrap()),
        };
        assert_eq!(
            c.args(),
            [
                "clone",
                "900",
                "901",
                "--snapname",
                "base-snapshot",
                "--hostname",
                "gpu",
                "--full",
                "1",
                "--storage",
                "lxc-disks"
            ]
        );
        c.full = false;
        assert!(!c.args().contains(&"--storage".to_string()));
    }

    #[test]
    fn exec_script_passes_values_as_positional_parameters() {
        let evil = "x'; touch /tmp/pwned; '";
        let a = exec_script_args(Ctid(950), "echo \"$1\"", &[evil]);
        assert_eq!(
            a,
            ["exec", "950", "--", "bash", "-c", "echo \"$1\"", "_", evil]
        );
        assert_eq!(exec_args(Ctid(9), &["ls", "-la"])[2], "--");
    }

    #[test]
    fn parses_listsnapshot_exactly() {
        let text = "`-> base-snapshot                2023-11-14 22:13:20     no-description\n \
                    `-> base-snapshot2              2023-11-14 22:15:00     first line\n  \
                    `-> current                                           You are here!\n";
        assert_eq!(
            parse_listsnapshot(text),
            ["base-snapshot", "base-snapshot2"]
        );
        assert_eq!(parse_listsnapshot(""), Vec::<String>::new());
    }

    #[test]
    fn parses_pvesm_status_both_versions() {
        let t8 = "Name             Type     Status           Total            Used       Available        %\n\
                  local             dir     active        98559220        10252500        83257172   10.40%\n\
                  lxc-disks     zfspool     active       942931968         1234567       941697401    0.13%\n";
        let s = parse_pvesm_status(t8);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].name, "lxc-disks");
        assert_eq!(s[1].storage_type, "zfspool");
        assert_eq!(s[1].status, "active");
        let t9 = "Name Type Status Total (KiB) Used (KiB) Available (KiB) %\nlocal dir disabled 0 0 0 N/A\n";
        assert_eq!(parse_pvesm_status(t9)[0].status, "disabled");
    }

    #[test]
    fn parses_pct_config() {
        let c = PctConfig::parse(
            "arch: amd64\ncores: 2\nnet0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth\nlxc.cgroup2.devices.allow: c 195:* rwm\nlxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n",
        );
        assert_eq!(c.get("cores"), Some("2"));
        assert!(c.get("net0").unwrap().contains("hwaddr=BC:24:11:00:00:01"));
        assert_eq!(c.lxc.len(), 2);
        assert_eq!(c.lxc[0].0, "lxc.cgroup2.devices.allow");
    }

    #[test]
    fn resize_and_config_argv_and_sizes() {
        assert_eq!(
            resize_args(Ctid(910), "rootfs", 128),
            ["resize", "910", "rootfs", "128G"]
        );
        assert_eq!(
            config_args(Ctid(910), true, None),
            ["config", "910", "--current", "1"]
        );
        assert_eq!(
            config_args(Ctid(910), false, Some("s")),
            ["config", "910", "--snapshot", "s"]
        );
        assert_eq!(parse_disk_size("32G"), Some(32 << 30));
        assert_eq!(parse_disk_size("512M"), Some(512 << 20));
        assert_eq!(parse_disk_size("1T"), Some(1 << 40));
        assert_eq!(parse_disk_size("x"), None);
        assert_eq!(
            disk_size_bytes("lxc-disks:subvol-901-disk-0,size=32G"),
            Some(32 << 30)
        );
        assert_eq!(disk_size_bytes("lxc-disks:subvol-901-disk-0"), None);
    }

    #[test]
    fn display_quotes_specials() {
        assert_eq!(
            display_argv(&["set", "900", "--hostname", "a b", "it's"]),
            r"set 900 --hostname 'a b' 'it'\''s'"
        );
    }

    #[cfg(unix)]
    mod with_fake_pct {
        use super::*;
        use crate::pct::test_support::fake_tool;

        /// A fake `pct` that records its argv (one per line) and answers from a script.
        fn client(dir: &Path, body: &str, dry: bool) -> PctClient {
            let p = fake_tool(dir, body);
            PctClient::with_tools(dry, &p, &p, &p)
        }

        #[test]
        fn list_reads_every_ct_in_one_call() {
            let d = tempfile::tempdir().unwrap();
            let c = client(
                d.path(),
                "printf 'VMID       Status     Lock         Name\n900        running                 BaseTemplate\n901        stopped    snapshot     GPU\n'",
                false,
            );
            let l = c.list().unwrap();
            assert_eq!(l.get(&Ctid(900)), Some(&CtStatus::Running));
            assert_eq!(l.get(&Ctid(901)), Some(&CtStatus::Stopped));
            assert_eq!(l.len(), 2);
            let log = std::fs::read_to_string(d.path().join("argv.log")).unwrap();
            assert_eq!(log, "list\n");
            assert!(parse_list("").is_empty());
        }

        #[test]
        fn status_maps_missing_and_running() {
            let d = tempfile::tempdir().unwrap();
            let c = client(
                d.path(),
                "case \"$2\" in 100) echo 'status: running';; *) echo \"Configuration file 'nodes/pve/lxc/$2.conf' does not exist\" >&2; exit 255;; esac",
                false,
            );
            assert_eq!(c.status(Ctid(100)).unwrap(), CtStatus::Running);
            assert_eq!(c.status(Ctid(101)).unwrap(), CtStatus::Missing);
            let err = c.require_exists(Ctid(101)).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 3);
            assert!(err.to_string().contains("CT 101"));
        }

        #[test]
        fn failure_maps_to_proxmox_with_stderr() {
            let d = tempfile::tempdir().unwrap();
            let c = client(d.path(), "echo 'CT is locked (disk)' >&2; exit 255", false);
            let err = c.start(Ctid(900)).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 4);
            let msg = err.to_string();
            assert!(msg.contains("CT 900") && msg.contains("pct start") && msg.contains("locked"));
        }

        #[test]
        fn dry_run_skips_mutating_but_runs_reads() {
            let d = tempfile::tempdir().unwrap();
            let c = client(d.path(), "echo 'status: stopped'", true);
            c.start(Ctid(900)).unwrap();
            c.set(Ctid(900), &[("memory", "1024")]).unwrap();
            assert_eq!(c.exec(Ctid(900), &["touch", "/x"]).unwrap().code, 0);
            let log = std::fs::read_to_string(d.path().join("argv.log")).unwrap_or_default();
            assert!(log.is_empty(), "dry-run ran: {log}");
            assert_eq!(c.status(Ctid(900)).unwrap(), CtStatus::Stopped);
            c.exec_query(Ctid(900), &["cat", "/etc/os-release"])
                .unwrap();
            let log = std::fs::read_to_string(d.path().join("argv.log")).unwrap();
            assert_eq!(log, "status\n900\nexec\n900\n--\ncat\n/etc/os-release\n");
        }

        #[test]
        fn exec_returns_inner_code_and_script_args_stay_arguments() {
            let d = tempfile::tempdir().unwrap();
            let c = client(d.path(), "exit 7", false);
            let out = c
                .exec_script(Ctid(950), "test -n \"$1\"", &["a; rm -rf /"])
                .unwrap();
            assert_eq!(out.code, 7);
            let log = std::fs::read_to_string(d.path().join("argv.log")).unwrap();
            assert!(
                log.ends_with("bash\n-c\ntest -n \"$1\"\n_\na; rm -rf /\n"),
                "{log}"
            );
        }

        #[test]
        fn exec_failures_of_proxmox_are_exit_4_of_the_command_exit_5() {
            let d = tempfile::tempdir().unwrap();
            // pct died before lxc-attach.
            let c = client(
                d.path(),
                "echo 'simulated fault: pct exec 9 apt-get' >&2; exit 255",
                false,
            );
            let err = crate::guest::Guest::new(&c, Ctid(9))
                .run(&["apt-get", "update"])
                .unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 4, "{err:#}");
            // lxc-attach could not attach.
            let d = tempfile::tempdir().unwrap();
            let c = client(
                d.path(),
                "echo 'lxc-attach: 9: ../src/lxc/attach.c: lxc_attach: 1140 Connection refused - Failed to get attach context' >&2; exit 1",
                false,
            );
            let err = c.exec(Ctid(9), &["true"]).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 4, "{err:#}");
            // The command inside failed: its own code, a Guest error from Guest::run.
            let d = tempfile::tempdir().unwrap();
            let c = client(
                d.path(),
                "echo 'lxc-attach: 9: ../src/lxc/attach.c: lxc_attach_run_command: 1841 No such file or directory - Failed to exec \"nope\"' >&2; exit 127",
                false,
            );
            assert_eq!(c.exec(Ctid(9), &["nope"]).unwrap().code, 127);
            let d = tempfile::tempdir().unwrap();
            let c = client(
                d.path(),
                "echo 'Failed to initialize NVML: Unknown Error'; exit 255",
                false,
            );
            assert_eq!(c.exec(Ctid(9), &["nvidia-smi"]).unwrap().code, 255);
            let d = tempfile::tempdir().unwrap();
            let c = client(
                d.path(),
                "echo 'E: Unable to locate package nope' >&2; exit 100",
                false,
            );
            let err = crate::guest::Guest::new(&c, Ctid(9))
                .run(&["apt-get", "install", "nope"])
                .unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 5, "{err:#}");
        }

        #[test]
        fn a_clean_shutdown_is_one_call_and_a_stopped_ct_is_left_alone() {
            let d = tempfile::tempdir().unwrap();
            let c = client(d.path(), "exit 0", false);
            assert!(c.shutdown_or_stop(Ctid(900), 5).unwrap());
            let log = std::fs::read_to_string(d.path().join("argv.log")).unwrap();
            assert_eq!(log, "shutdown\n900\n--timeout\n5\n");
            let d = tempfile::tempdir().unwrap();
            let c = client(
                d.path(),
                r#"case "$1" in status) echo 'status: stopped';; shutdown) echo 'CT 900 not running' >&2; exit 255;; esac"#,
                false,
            );
            assert!(!c.shutdown_or_stop(Ctid(900), 5).unwrap());
            let log = std::fs::read_to_string(d.path().join("argv.log")).unwrap();
            assert_eq!(log, "shutdown\n900\n--timeout\n5\nstatus\n900\n");
        }

        #[test]
        fn shutdown_falls_back_to_stop() {
            let d = tempfile::tempdir().unwrap();
            let c = client(
                d.path(),
                r#"case "$1" in status) echo 'status: running';; shutdown) echo 'container did not stop' >&2; exit 255;; esac"#,
                false,
            );
            assert!(c.shutdown_or_stop(Ctid(900), 5).unwrap());
            let log = std::fs::read_to_string(d.path().join("argv.log")).unwrap();
            assert!(
                log.ends_with("shutdown\n900\n--timeout\n5\nstatus\n900\nstop\n900\n"),
                "{log}"
            );
        }

        #[test]
        fn a_lock_held_for_a_moment_is_retried_and_a_create_lock_is_not() {
            let d = tempfile::tempdir().unwrap();
            let n = d.path().join("n");
            // Locked for the first two calls, then free.
            let c = client(
                d.path(),
                &format!(
                    "n=$(cat '{0}' 2>/dev/null || echo 0); echo $((n+1)) > '{0}'\n[ \"$n\" -ge 2 ] && exit 0\necho 'CT is locked (snapshot)' >&2; exit 255",
                    n.display()
                ),
                false,
            );
            c.start(Ctid(900)).unwrap();
            assert_eq!(std::fs::read_to_string(&n).unwrap().trim(), "3");
            let d = tempfile::tempdir().unwrap();
            let n = d.path().join("n");
            let c = client(
                d.path(),
                &format!(
                    "n=$(cat '{0}' 2>/dev/null || echo 0); echo $((n+1)) > '{0}'\necho 'CT is locked (create)' >&2; exit 255",
                    n.display()
                ),
                false,
            );
            assert_eq!(crate::error::exit_code(&c.start(Ctid(900)).unwrap_err()), 4);
            assert_eq!(std::fs::read_to_string(&n).unwrap().trim(), "1");
            assert!(is_transient(
                "can't lock file '/run/lock/lxc/pve-config-900.lock' - got timeout"
            ));
            assert!(!is_transient("CT 900 already exists on node 'pve'"));
        }

        #[test]
        fn push_stderr_with_exit_zero_is_a_failure() {
            let d = tempfile::tempdir().unwrap();
            let c = client(
                d.path(),
                "echo 'failed to open /x for reading' >&2; exit 0",
                false,
            );
            let err = c.push(Ctid(900), "/x", "/y", Some("0600")).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 4);
        }

        #[test]
        fn reboot_says_whether_the_ct_ran() {
            let d = tempfile::tempdir().unwrap();
            let c = client(d.path(), "exit 0", false);
            assert!(c.reboot(Ctid(901), 60).unwrap());
            let argv = std::fs::read_to_string(d.path().join("argv.log")).unwrap();
            assert_eq!(argv, "reboot\n901\n--timeout\n60\n");
            // Proxmox refuses a CT that is not running before its task (`VM <vmid> not running`).
            let d = tempfile::tempdir().unwrap();
            let c = client(d.path(), "echo 'VM 901 not running' >&2; exit 255", false);
            assert!(!c.reboot(Ctid(901), 60).unwrap());
            // Any other failure is one (exit 4); a missing CT a precondition (exit 3).
            let d = tempfile::tempdir().unwrap();
            let c = client(
                d.path(),
                "echo 'container did not stop' >&2; exit 255",
                false,
            );
            let err = c.reboot(Ctid(901), 60).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 4);
            assert!(err.to_string().contains("CT 901"), "{err}");
            let d = tempfile::tempdir().unwrap();
            let c = client(
                d.path(),
                "echo \"Configuration file 'nodes/pve/lxc/901.conf' does not exist\" >&2; exit 255",
                false,
            );
            assert_eq!(
                crate::error::exit_code(&c.reboot(Ctid(901), 60).unwrap_err()),
                3
            );
            // Dry run: the status is asked, the reboot only printed, and only for a running CT.
            let d = tempfile::tempdir().unwrap();
            let c = client(d.path(), "echo 'status: stopped'", true);
            assert!(!c.reboot(Ctid(901), 60).unwrap());
            let d = tempfile::tempdir().unwrap();
            let c = client(d.path(), "echo 'status: running'", true);
            assert!(c.reboot(Ctid(901), 60).unwrap());
            let argv = std::fs::read_to_string(d.path().join("argv.log")).unwrap();
            assert_eq!(argv, "status\n901\n");
        }
    }
}
