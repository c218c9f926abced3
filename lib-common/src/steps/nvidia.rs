//! Step `lxc-nvidia CTID`: pass the CT's GPUs through and give it the NVIDIA user space that
//! matches the host's kernel module (gpu-docker.md).
//!
//! 1. Host: every assigned `/dev/nvidiaN` exists, the loaded driver
//!    (`/proc/driver/nvidia/version`) is the configured version, the device majors come from
//!    `/proc/devices` (uvm and caps are dynamic).
//! 2. Config, by `behavior.gpu_passthrough` ([`choose_mode`]): `devN` entries set with
//!    `pct set --devN` (PVE >= 8.1, the `auto` default there), or raw lines at the end of the
//!    main section of `/etc/pve/lxc/<id>.conf` through [`ConfFile`] (under the config lock,
//!    atomic, never into a snapshot section). Exactly this CT's devices, in one form: the other
//!    form's GPU entries and other GPUs (e.g. inherited from a template) are removed.
//! 3. Live: LXC reads passthrough at start, so a running CT whose passthrough changed (raw
//!    lines, `devN` pending) is rebooted (`pct reboot`: shutdown and start in one call), a
//!    stopped one is started with it; a CT where a node is missing inside is rebooted too; the
//!    step ends with every assigned node present in the guest.
//! 4. Guest: one probe (readiness, the nodes, `nvidia-smi`'s driver version, the packages, the
//!    CUDA sources list and keyring) decides. Unless `nvidia-smi` already reports the
//!    configured version, the `.run` installer is downloaded once into the host cache and
//!    pushed in; then one script ([`APPLY_SCRIPT`]) runs it without its kernel module, adds the
//!    CUDA repository (from `nvidia_repo_url`), installs the CUDA toolkit and `nvtop` (never
//!    `cuda-drivers`), and checks that `nvidia-smi` reports the configured version.
//!
//! A converged CT handed over running costs one `pct` call (the probe).
//!
//! Values from the JSON (URLs, versions) reach the guest only as argv elements or positional
//! parameters of scripts, and are checked (no whitespace or control characters) before use.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::conffile::{ConfFile, lxc_line, parse_lxc_line};
use crate::config::{ContainerSpec, Ctid, GpuPassthrough, LxcConfigFile};
use crate::error::{Error, ErrorKind, Result};
use crate::guest::Guest;
use crate::host::DEVN_SINCE;
use crate::paths::{CACHE_DIR, host_path};
use crate::pct::PctConfig;
use crate::probe::{Facts, Probe};
use crate::step::{StepContext, ensure_running_probe};
use crate::steps::Outcome;
use crate::steps::clone::is_gpu_line;
use crate::types::{DriverVersion, GpuAssignment};

/// Flags of the `.run` installer inside a container: user space only, no questions (spelled
/// out in [`APPLY_SCRIPT`], which runs it).
pub const RUNFILE_FLAGS: [&str; 6] = [
    "--silent",
    "--no-kernel-module",
    "--no-x-check",
    "--no-nouveau-check",
    "--no-nvidia-modprobe",
    "--no-dkms",
];
/// Keyring of the CUDA repository inside the guest (armored key; apt reads `.asc` as such).
pub const CUDA_KEYRING: &str = "/etc/apt/keyrings/cuda-archive-keyring.asc";
/// The CUDA repository's sources list inside the guest.
pub const CUDA_LIST: &str = "/etc/apt/sources.list.d/phoenix-cuda.list";
/// The signing key file in NVIDIA's CUDA repositories for current Ubuntu/Debian releases.
pub const CUDA_KEY_FILE: &str = "3bf863cc.pub";
/// Packages installed from the repositories (`cuda-toolkit`, never `cuda-drivers`: that would
/// replace the user space matched to the host's kernel module).
pub const GUEST_PACKAGES: [&str; 2] = ["cuda-toolkit", "nvtop"];
/// Where the runfile is put inside the guest (removed after the install).
pub const GUEST_RUNFILE_DIR: &str = "/tmp";

/// The NVIDIA settings of one run: the block and globals, with the environment overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvidiaSettings {
    pub gpus: Vec<u32>,
    pub driver_version: String,
    pub repo_url: String,
    pub runfile_url: String,
}

impl NvidiaSettings {
    /// The block and globals, overridden by `GPU_ASSIGNMENT`, `NVIDIA_DRIVER_VERSION`,
    /// `NVIDIA_REPO_URL`, `NVIDIA_RUNFILE_URL` (`env` returns a variable's value; empty = unset).
    /// Every value is checked; a bad one is a config error naming its variable or JSON field.
    pub fn resolve(
        ctid: Ctid,
        spec: &ContainerSpec,
        lxc: &LxcConfigFile,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NvidiaSettings> {
        let pick = |var: &'static str, field: String, value: &str| -> (String, String) {
            match env(var).filter(|v| !v.is_empty()) {
                Some(v) => (format!("environment variable {var}"), v),
                None => (field, value.to_string()),
            }
        };
        let (gpu_src, gpu_raw) = pick(
            crate::env::GPU_ASSIGNMENT,
            format!("lxc_configs.\"{ctid}\".gpu_assignment"),
            spec.gpu_assignment.as_deref().unwrap_or("none"),
        );
        let gpus = check_gpu_assignment(ctid, &gpu_src, &gpu_raw)?;
        let (ver_src, driver_version) = pick(
            crate::env::NVIDIA_DRIVER_VERSION,
            "nvidia_driver_version".into(),
            &lxc.nvidia_driver_version,
        );
        if !valid_version(&driver_version) {
            return Err(Error::config(format!(
                "CT {ctid}: {ver_src} = {driver_version:?} is not an NVIDIA driver version like 580.76.05"
            ))
            .into());
        }
        let (repo_src, repo_url) = pick(
            crate::env::NVIDIA_REPO_URL,
            "nvidia_repo_url".into(),
            &lxc.nvidia_repo_url,
        );
        check_url(ctid, &repo_src, &repo_url)?;
        let (run_src, runfile_url) = pick(
            crate::env::NVIDIA_RUNFILE_URL,
            "nvidia_runfile_url".into(),
            &lxc.nvidia_runfile_url,
        );
        check_url(ctid, &run_src, &runfile_url)?;
        // A runfile named for another version would install a user space the module refuses.
        if let Some(v) = runfile_version(&runfile_url)
            && !same_version(v, &driver_version)
        {
            return Err(Error::config(format!(
                "CT {ctid}: {run_src} names driver {v} but {ver_src} is {driver_version}; they must match"
            ))
            .into());
        }
        Ok(NvidiaSettings {
            gpus,
            driver_version,
            repo_url,
            runfile_url,
        })
    }

    /// Host-absolute path of the cached runfile (unprefixed, as handed to `pct push`).
    pub fn cache_path(&self) -> String {
        format!("{CACHE_DIR}/{}", runfile_name(&self.driver_version))
    }
}

/// `NVIDIA-Linux-x86_64-<version>.run`.
pub fn runfile_name(version: &str) -> String {
    format!("NVIDIA-Linux-x86_64-{version}.run")
}

/// `none` or GPU indices ([`GpuAssignment`]'s format); `source` names where `raw` came from.
fn check_gpu_assignment(ctid: Ctid, source: &str, raw: &str) -> Result<Vec<u32>> {
    raw.trim()
        .parse::<GpuAssignment>()
        .map(|g| g.gpus().to_vec())
        .map_err(|e| Error::config(format!("CT {ctid}: {source}: {e}")).into())
}

/// `580.76.05`, `550.54` ([`DriverVersion`]'s format).
pub fn valid_version(v: &str) -> bool {
    v.parse::<DriverVersion>().is_ok()
}

/// Versions compared by their numeric parts (`580.76.05` = `580.76.5`), not as mere strings.
pub fn same_version(a: &str, b: &str) -> bool {
    let nums = |s: &str| -> Option<Vec<u64>> {
        s.trim()
            .split('.')
            .map(|p| p.parse::<u64>().ok())
            .collect::<Option<Vec<u64>>>()
    };
    match (nums(a), nums(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// The version a runfile URL names (`.../NVIDIA-Linux-x86_64-<v>.run`), if it follows NVIDIA's
/// naming.
pub fn runfile_version(url: &str) -> Option<&str> {
    let file = url.split(['?', '#']).next()?.rsplit('/').next()?;
    let v = file
        .strip_prefix("NVIDIA-Linux-x86_64-")?
        .strip_suffix(".run")?;
    valid_version(v).then_some(v)
}

/// An http(s) URL without whitespace or control characters (it goes into an apt sources line
/// and onto argv; a newline would add a line to the sources file).
pub fn check_url(ctid: Ctid, source: &str, url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host_ok = rest.is_some_and(|r| {
        let host = r.split('/').next().unwrap_or("");
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
    });
    let chars_ok = url.len() <= 2048 && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if !(host_ok && chars_ok) {
        return Err(Error::config(format!(
            "CT {ctid}: {source} = {url:?} is not a usable http(s) URL (a host name, no spaces, quotes are kept literally)"
        ))
        .into());
    }
    Ok(())
}

/// Majors of the NVIDIA character devices on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMajors {
    /// `nvidia-frontend` (195): `/dev/nvidia0..N`, `nvidiactl`.
    pub frontend: u32,
    /// `nvidia-uvm`: only once the uvm module is loaded.
    pub uvm: Option<u32>,
    /// `nvidia-caps` (MIG capabilities).
    pub caps: Option<u32>,
}

/// The majors from `/proc/devices` text; the frontend must be there (the driver is loaded).
pub fn device_majors(proc_devices: &str) -> Result<DeviceMajors> {
    let m = crate::host::parse_char_majors(proc_devices);
    let Some(&frontend) = m.get("nvidia-frontend") else {
        return Err(Error::precondition(format!(
            "`{}` has no `nvidia-frontend` character device: the NVIDIA kernel driver is not loaded on the host\nhint: install the host driver and load it (`modprobe nvidia`)",
            host_path(crate::host::PROC_DEVICES).display()
        ))
        .into());
    };
    Ok(DeviceMajors {
        frontend,
        uvm: m.get("nvidia-uvm").copied(),
        caps: m.get("nvidia-caps").copied(),
    })
}

/// The passthrough lines for `gpus` (empty for none), in the order they end the main section.
pub fn passthrough_lines(gpus: &[u32], majors: &DeviceMajors) -> Vec<String> {
    if gpus.is_empty() {
        return Vec::new();
    }
    let allow = "lxc.cgroup2.devices.allow";
    let mut v = vec![lxc_line(allow, &format!("c {}:* rwm", majors.frontend))];
    for m in [majors.uvm, majors.caps].into_iter().flatten() {
        v.push(lxc_line(allow, &format!("c {m}:* rwm")));
    }
    let mount = |node: &str, create: &str| {
        // The target is relative to the container's rootfs: no leading slash.
        lxc_line(
            "lxc.mount.entry",
            &format!("/dev/{node} dev/{node} none bind,optional,create={create}"),
        )
    };
    for g in gpus {
        v.push(mount(&format!("nvidia{g}"), "file"));
    }
    for node in ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"] {
        v.push(mount(node, "file"));
    }
    v.push(mount("nvidia-caps", "dir"));
    v
}

/// Every major that marks a cgroup line as a GPU line (all `nvidia*` devices of the host).
fn gpu_majors(majors: Option<&DeviceMajors>) -> Vec<u32> {
    let mut all = crate::host::nvidia_majors();
    if let Some(m) = majors {
        all.extend([Some(m.frontend), m.uvm, m.caps].into_iter().flatten());
    }
    all.sort_unstable();
    all.dedup();
    all
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// How this run passes GPUs through (`behavior.gpu_passthrough` on this host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `devN:` entries, set with `pct set --devN` (PVE >= 8.1).
    Dev,
    /// Raw `lxc.cgroup2.devices.allow` / `lxc.mount.entry` lines in the conf file.
    Lxc,
}

/// The mode for `setting` on a host whose `pveversion` says `version` (`None`: unreadable).
/// `auto` is `dev` from 8.1 on and `lxc` before (and when the version cannot be read: raw
/// lines work on every version); `dev` on an older host is a precondition error.
pub fn choose_mode(
    ctid: Ctid,
    setting: GpuPassthrough,
    version: Option<(u32, u32)>,
) -> Result<Mode> {
    let new_enough = version.is_some_and(|v| v >= DEVN_SINCE);
    match setting {
        GpuPassthrough::Lxc => Ok(Mode::Lxc),
        GpuPassthrough::Auto if new_enough => Ok(Mode::Dev),
        GpuPassthrough::Auto => Ok(Mode::Lxc),
        GpuPassthrough::Dev if new_enough => Ok(Mode::Dev),
        GpuPassthrough::Dev => Err(Error::precondition(format!(
            "CT {ctid}: behavior.gpu_passthrough is \"dev\" but this host runs Proxmox VE {}; devN passthrough needs 8.1 or newer (pve-container 5.0.7)\nhint: upgrade the host, or set behavior.gpu_passthrough to \"auto\" or \"lxc\"",
            version.map_or("of an unknown version".to_string(), |(a, b)| format!("{a}.{b}"))
        ))
        .into()),
    }
}

/// Read `pveversion` and choose the mode for this run.
fn resolve_mode(ctx: &StepContext, ctid: Ctid) -> Result<Mode> {
    let setting = ctx.configs.hypervisor.gpu_passthrough();
    let text = ctx.pct.pveversion()?;
    let version = crate::host::parse_pve_version(&text);
    if version.is_none() {
        log::warn!("[{ctid}] cannot read the Proxmox VE version from `pveversion` ({text:?})");
    }
    let mode = choose_mode(ctid, setting, version)?;
    log::info!(
        "[{ctid}] GPU passthrough by {} (behavior.gpu_passthrough {setting:?}, Proxmox VE {})",
        match mode {
            Mode::Dev => "devN entries",
            Mode::Lxc => "raw lxc lines",
        },
        version.map_or("unknown".into(), |(a, b)| format!("{a}.{b}"))
    );
    Ok(mode)
}

/// The host's device nodes a container with `gpus` needs, as host-absolute paths, those that
/// exist: `/dev/nvidiaN`, `nvidiactl`, `nvidia-uvm`, `nvidia-uvm-tools`, and the
/// `nvidia-caps` nodes (each node for devN, which passes single devices; the directory for a
/// bind mount).
pub fn device_nodes(gpus: &[u32], mode: Mode) -> Vec<String> {
    let mut v: Vec<String> = gpus.iter().map(|g| format!("/dev/nvidia{g}")).collect();
    for n in ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"] {
        let p = format!("/dev/{n}");
        if crate::host::exists(&p) {
            v.push(p);
        }
    }
    let caps = "/dev/nvidia-caps";
    match mode {
        Mode::Lxc if crate::host::exists(caps) => v.push(caps.into()),
        Mode::Lxc => {}
        Mode::Dev => {
            let mut nodes: Vec<String> = std::fs::read_dir(host_path(caps))
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                        .map(|e| format!("{caps}/{}", e.file_name().to_string_lossy()))
                        .collect()
                })
                .unwrap_or_default();
            nodes.sort();
            v.extend(nodes);
        }
    }
    v
}

/// The `devN` value for a host node: `PATH,mode=0666` (NVIDIA's nodes are world read-write;
/// Proxmox's default would be 0660 root-only, pve-container `PVE::LXC::create_passthrough_device_node`),
/// plus `gid=` of the node's group when that is the host's `video` or `render` group (as the
/// community scripts pass `/dev/dri` nodes).
pub fn dev_value(node: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut v = format!("{node},mode=0666");
    if let Ok(m) = std::fs::metadata(host_path(node))
        && m.gid() != 0
        && crate::host::group_name(m.gid()).is_some_and(|g| g == "video" || g == "render")
    {
        v.push_str(&format!(",gid={}", m.gid()));
    }
    v
}

/// The path of a `devN` value (`/dev/x,mode=..` or `...,path=/dev/x`; `path` is the
/// property string's default key).
fn dev_path(value: &str) -> String {
    dev_props(value).remove("path").unwrap_or_default()
}

/// A `devN` value as key/value pairs (the path under `path`), so that the order of options
/// does not count as a difference.
fn dev_props(value: &str) -> std::collections::BTreeMap<String, String> {
    value
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => ("path".to_string(), p.to_string()),
        })
        .collect()
}

fn is_dev_key(k: &str) -> bool {
    k.strip_prefix("dev")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The `pct set` pairs and `--delete` keys that make the CT's GPU `devN` entries (in `cfg`, as
/// `pct config` shows them, pending values merged) equal `wanted` (node paths). Entries for
/// other devices are kept; new entries take the lowest free indices.
pub fn dev_changes(
    cfg: &PctConfig,
    wanted: &[(String, String)],
) -> (Vec<(String, String)>, Vec<String>) {
    let mut set = Vec::new();
    let mut delete = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    let mut keys: Vec<(&String, &String)> =
        cfg.settings.iter().filter(|(k, _)| is_dev_key(k)).collect();
    keys.sort_by_key(|(k, _)| k[3..].parse::<u32>().unwrap_or(u32::MAX));
    for (k, v) in &keys {
        let path = dev_path(v);
        if !path.starts_with("/dev/nvidia") {
            continue;
        }
        match wanted.iter().find(|(p, _)| *p == path) {
            Some((p, want)) if !done.contains(&p.as_str()) => {
                done.push(p);
                if dev_props(v) != dev_props(want) {
                    set.push(((*k).clone(), want.clone()));
                }
            }
            _ => delete.push((*k).clone()),
        }
    }
    let mut used: Vec<u32> = keys
        .iter()
        .filter_map(|(k, _)| k[3..].parse().ok())
        .collect();
    for (p, want) in wanted {
        if done.contains(&p.as_str()) {
            continue;
        }
        let free = (0u32..).find(|i| !used.contains(i)).expect("a free index");
        used.push(free);
        set.push((format!("dev{free}"), want.clone()));
    }
    (set, delete)
}

/// Make the CT's GPU `devN` entries equal `wanted` with one `pct set` (which takes Proxmox's
/// config lock and checks the devices). Returns whether it changed (or would change) anything.
fn apply_dev(ctx: &StepContext, ctid: Ctid, wanted: &[(String, String)]) -> Result<bool> {
    let pct = &ctx.pct;
    let cfg = crate::conffile::ConfFile::load(ctid)?.to_config(false);
    let (set, delete) = dev_changes(&cfg, wanted);
    // One `pct set` for both.
    let keys: Vec<&str> = delete.iter().map(String::as_str).collect();
    let pairs: Vec<(&str, &str)> = set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pct.set_and_delete(ctid, &pairs, &keys)?;
    if !set.is_empty() || !delete.is_empty() {
        ctx.say(
            Some(ctid),
            &format!(
                "GPU devN entries: {} set, {} removed",
                set.len(),
                delete.len()
            ),
        );
        return Ok(true);
    }
    Ok(false)
}

/// Whether a `devN` change waits in `[pve:pending]` for the next start.
fn dev_pending(ctx: &StepContext, ctid: Ctid) -> Result<bool> {
    if ctx.dry_run {
        return Ok(false);
    }
    let conf = crate::conffile::ConfFile::load(ctid)?;
    let merged = conf.to_config(false);
    let current = conf.to_config(true);
    let devs = |c: &PctConfig| -> Vec<(String, String)> {
        c.settings
            .iter()
            .filter(|(k, _)| is_dev_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    Ok(devs(&merged) != devs(&current))
}

/// `nvidia-smi`'s query of the driver version, asked in the state probe.
pub const SMI_QUERY: [&str; 3] = [
    "nvidia-smi",
    "--query-gpu=driver_version",
    "--format=csv,noheader",
];

/// What the guest needs, in one `pct exec` (values as `$1`..., fixed text): `$1` the pushed
/// installer (empty: none) run with [`RUNFILE_FLAGS`] and removed whatever happened; `$2` the
/// CUDA repository key URL (empty: the repository is in place) downloaded to `$3`, after
/// `ca-certificates` and `curl` when missing, and `$5` written to the sources list `$4`;
/// `$7`... the packages to install after an `apt-get update` (none: no apt); last the check
/// that `nvidia-smi` reports driver `$6` for every GPU (versions compared by their numbers),
/// exiting 1 with what it reports otherwise.
///
/// A second attempt (the network was down: [`Guest::run_script`] runs it again) finds the
/// installer already run and removed, and goes on when `nvidia-smi` reports `$6`.
pub const APPLY_SCRIPT: &str = r#"set -uf
v=$6
norm() {
  local IFS=. p o=
  for p in $1; do
    case $p in '' | *[!0-9]*) printf '%s' "$1"; return ;; esac
    o=$o.$((10#$p))
  done
  printf '%s' "${o#.}"
}
smi() { nvidia-smi --query-gpu=driver_version --format=csv,noheader; }
reports() {
  local out l
  out=$(smi 2>/dev/null) && [ -n "$out" ] || return 1
  while IFS= read -r l; do
    l=${l//[[:space:]]/}
    [ "$(norm "$l")" = "$(norm "$v")" ] || return 1
  done <<<"$out"
}
apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
export DEBIAN_FRONTEND=noninteractive
if [ -n "$1" ]; then
  if [ -e "$1" ]; then
    "$1" --silent --no-kernel-module --no-x-check --no-nouveau-check --no-nvidia-modprobe --no-dkms
    rc=$?
    rm -f -- "$1" || echo "warning: could not remove $1" >&2
    if [ "$rc" -ne 0 ]; then echo "the NVIDIA installer $1 failed (exit $rc)" >&2; exit "$rc"; fi
  elif ! reports; then
    echo "the NVIDIA installer $1 is missing" >&2
    exit 1
  fi
fi
if [ -n "$2" ]; then
  need=()
  for p in ca-certificates curl; do
    dpkg-query -W -f '${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q || exit
    apt-get install "${apt_opts[@]}" "${need[@]}" || exit
  fi
  mkdir -p -- "$(dirname -- "$3")" "$(dirname -- "$4")" || exit
  t="$3.part.$$"
  curl -fsSL -o "$t" -- "$2"
  rc=$?
  if [ "$rc" -ne 0 ]; then rm -f -- "$t"; exit "$rc"; fi
  chmod 0644 -- "$t" && mv -f -- "$t" "$3" || exit
  t="$4.part.$$"
  if ! { printf '%s' "$5" >"$t" && chmod 0644 -- "$t" && mv -f -- "$t" "$4"; }; then
    rm -f -- "$t"
    exit 1
  fi
fi
shift 6
if [ $# -gt 0 ]; then
  apt-get update -q || exit
  apt-get install "${apt_opts[@]}" "$@" || exit
fi
out=$(smi 2>&1)
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "nvidia-smi fails after the install (exit $rc): $out" >&2
  echo "hint: check the container's GPU passthrough (its /dev/nvidia* nodes) and the host's driver" >&2
  exit 1
fi
if ! reports; then
  echo "nvidia-smi reports driver ${out//$'\n'/,} after the install, expected $v" >&2
  exit 1
fi"#;

/// The state probe: readiness, then each device node, the driver version `nvidia-smi`
/// reports, the packages, the CUDA sources list and keyring, in one `pct exec`.
fn state_probe(nodes: &[String]) -> Probe {
    let mut p = Probe::new();
    for n in nodes {
        p = p.exists(n);
    }
    p.cmd(&SMI_QUERY)
        .packages(&GUEST_PACKAGES)
        .read(CUDA_LIST)
        .exists(CUDA_KEYRING)
}

/// The driver version(s) `nvidia-smi` reported, `None` when it failed (not installed,
/// mismatch, no device).
fn smi_versions(facts: &Facts) -> Option<Vec<String>> {
    let r = facts.cmd(&SMI_QUERY);
    if !r.success() {
        return None;
    }
    let v: Vec<String> = r
        .stdout
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    (!v.is_empty()).then_some(v)
}

/// What the guest lacks, from the probe's answers (`None`: a stopped CT in a dry run, where
/// nothing could be asked: everything).
#[derive(Debug, Clone, PartialEq, Eq)]
struct GuestWork {
    /// The version(s) `nvidia-smi` reports when they are not the configured one (`None`: it
    /// fails); `Some` only when the user space is to be installed.
    user_space: Option<Option<Vec<String>>>,
    /// The CUDA repository (key and sources list) is missing or differs.
    repo: bool,
    /// Packages of [`GUEST_PACKAGES`] not installed.
    missing: Vec<String>,
}

impl GuestWork {
    fn from_facts(ctid: Ctid, facts: Option<&Facts>, s: &NvidiaSettings) -> Result<GuestWork> {
        let Some(facts) = facts else {
            return Ok(GuestWork {
                user_space: Some(None),
                repo: true,
                missing: GUEST_PACKAGES.iter().map(|p| p.to_string()).collect(),
            });
        };
        let current = smi_versions(facts);
        let user_space = match &current {
            Some(v) if v.iter().all(|x| same_version(x, &s.driver_version)) => None,
            _ => Some(current),
        };
        let repo = facts.read(ctid, CUDA_LIST)? != Some(cuda_list_content(&s.repo_url).as_str())
            || !facts.exists(CUDA_KEYRING);
        Ok(GuestWork {
            user_space,
            repo,
            missing: facts.missing(&GUEST_PACKAGES),
        })
    }

    fn nothing(&self) -> bool {
        self.user_space.is_none() && !self.repo && self.missing.is_empty()
    }
}

/// Run the step for `ctid`.
///
/// Calls on a CT handed over running: a converged one costs one (the state probe, which
/// waits for readiness); a fresh one `pct set` (devN) or none (raw lines, edited in the
/// file), `pct reboot`, the probe, the push of the runfile and one apply script.
pub fn run(ctx: &StepContext, ctid: Ctid) -> Result<Outcome> {
    let spec = ctx.container(ctid)?;
    let settings = NvidiaSettings::resolve(ctid, spec, &ctx.configs.lxc, &env_var)?;
    let pct = &ctx.pct;
    // The CT must exist (its conf file, read on the host: no `pct status`).
    ConfFile::load(ctid)?;

    let (majors, mode) = if settings.gpus.is_empty() {
        (None, None)
    } else {
        let majors = check_host(ctid, &settings)?;
        (Some(majors), Some(resolve_mode(ctx, ctid)?))
    };
    // Each mode converges the other form away: switching modes leaves only one.
    let raw_wanted = match (mode, &majors) {
        (Some(Mode::Lxc), Some(m)) => passthrough_lines(&settings.gpus, m),
        _ => Vec::new(),
    };
    let nodes = mode.map_or(Vec::new(), |m| device_nodes(&settings.gpus, m));
    let dev_wanted: Vec<(String, String)> = if mode == Some(Mode::Dev) {
        nodes.iter().map(|n| (n.clone(), dev_value(n))).collect()
    } else {
        Vec::new()
    };
    let raw_changed = apply_conf(ctx, ctid, &raw_wanted, &gpu_majors(majors.as_ref()))?;
    let dev_changed = apply_dev(ctx, ctid, &dev_wanted)?;
    let mut outcome = if raw_changed || dev_changed {
        Outcome::Changed
    } else {
        Outcome::Unchanged
    };
    // LXC reads passthrough at a start: raw lines always, devN too unless Proxmox hot-plugged
    // them (else they wait in `[pve:pending]`). A running CT is rebooted (one call); a stopped
    // one gets them when it is started below. `live`: the CT started with this config.
    let mut live = false;
    if raw_changed || dev_pending(ctx, ctid)? {
        live = reboot(ctx, ctid)?;
        if !live && !settings.gpus.is_empty() && !ctx.dry_run {
            pct.start(ctid)?;
            live = true;
        }
    }

    if settings.gpus.is_empty() {
        ctx.say(
            Some(ctid),
            "gpu_assignment is none: no GPU passthrough, no NVIDIA user space",
        );
        return Ok(outcome);
    }

    let probe = state_probe(&nodes);
    let (started, mut facts) = ensure_running_probe(pct, ctid, ctx.ready_timeout(), &probe)?;
    if started {
        live = true;
        outcome = Outcome::Changed;
    }
    // Configured is not enough: every node must be there inside. A CT started before its
    // passthrough was configured (an interrupted run, an edit by hand) needs a restart. (In a
    // dry run the configuration may be only printed, so the nodes are not checked.)
    if !ctx.dry_run
        && let Some(f) = &facts
    {
        let mut missing = missing_nodes(f, &nodes);
        if !missing.is_empty() && !live {
            ctx.say(
                Some(ctid),
                &format!(
                    "passthrough is configured but not live ({} missing inside); restarting",
                    missing.join(", ")
                ),
            );
            reboot(ctx, ctid)?;
            outcome = Outcome::Changed;
            let f = probe.clone().ready(ctx.ready_timeout()).run(pct, ctid)?;
            missing = missing_nodes(&f, &nodes);
            facts = Some(f);
        }
        if !missing.is_empty() {
            return Err(Error::proxmox(format!(
                "CT {ctid}: {} missing inside the container after a start although its passthrough is configured\nhint: check `pct config {ctid}` and `pct start {ctid} --debug`",
                missing.join(", ")
            ))
            .into());
        }
    }

    let work = GuestWork::from_facts(ctid, facts.as_ref(), &settings)?;
    if work.nothing() {
        log::info!(
            "[{ctid}] NVIDIA user space {}, CUDA repository, {} in place",
            settings.driver_version,
            GUEST_PACKAGES.join(", ")
        );
    } else {
        apply_guest(ctx, ctid, &settings, &work)?;
        outcome = Outcome::Changed;
    }
    ctx.say(
        Some(ctid),
        &if outcome.changed() {
            format!(
                "GPU(s) {} passed through, NVIDIA user space {} in place",
                join(&settings.gpus),
                settings.driver_version
            )
        } else {
            "NVIDIA passthrough and user space already as configured; nothing changed".to_string()
        },
    );
    Ok(outcome)
}

/// The nodes of `nodes` the probe did not find inside.
fn missing_nodes(facts: &Facts, nodes: &[String]) -> Vec<String> {
    nodes.iter().filter(|n| !facts.exists(n)).cloned().collect()
}

/// `pct reboot` when the CT runs, so that its passthrough applies; whether it ran.
fn reboot(ctx: &StepContext, ctid: Ctid) -> Result<bool> {
    let rebooted = ctx
        .pct
        .reboot(ctid, ctx.configs.hypervisor.shutdown_timeout_s())?;
    if rebooted && !ctx.dry_run {
        ctx.say(Some(ctid), "rebooted so the passthrough applies");
    }
    Ok(rebooted)
}

/// The user space (runfile pushed, then installed), the CUDA repository and packages, and the
/// check of `nvidia-smi`: the push and one script ([`APPLY_SCRIPT`]).
fn apply_guest(ctx: &StepContext, ctid: Ctid, s: &NvidiaSettings, work: &GuestWork) -> Result<()> {
    let guest = Guest::new(&ctx.pct, ctid).with_network_timeout(ctx.ready_timeout());
    let mut runfile = String::new();
    if let Some(current) = &work.user_space {
        ctx.say(
            Some(ctid),
            &format!(
                "installing NVIDIA user space {} (found: {})",
                s.driver_version,
                current.as_ref().map_or("none".into(), |v| v.join(","))
            ),
        );
        let host_file = ensure_runfile(ctx, s)?;
        runfile = format!("{GUEST_RUNFILE_DIR}/{}", runfile_name(&s.driver_version));
        ctx.pct.push(ctid, &host_file, &runfile, Some("0755"))?;
    }
    let (key_url, list) = if work.repo {
        ctx.say(
            Some(ctid),
            &format!("adding the CUDA repository {}", s.repo_url),
        );
        (cuda_key_url(&s.repo_url), cuda_list_content(&s.repo_url))
    } else {
        (String::new(), String::new())
    };
    // All of them when any is missing or the repository changed: apt keeps those already
    // installed, and a changed repository may update them.
    let install = work.repo || !work.missing.is_empty();
    if install {
        ctx.say(
            Some(ctid),
            &format!("installing {}", GUEST_PACKAGES.join(", ")),
        );
    }
    let mut args = vec![
        runfile.as_str(),
        key_url.as_str(),
        CUDA_KEYRING,
        CUDA_LIST,
        list.as_str(),
        s.driver_version.as_str(),
    ];
    if install {
        args.extend(GUEST_PACKAGES);
    }
    let mut parts = Vec::new();
    if work.user_space.is_some() {
        parts.push(format!("the NVIDIA user space {}", s.driver_version));
    }
    if work.repo {
        parts.push("the CUDA repository".to_string());
    }
    if install {
        parts.push(GUEST_PACKAGES.join(" "));
    }
    let label = format!(
        "install {}, then check that nvidia-smi reports {}",
        parts.join(", "),
        s.driver_version
    );
    guest.run_script(&label, APPLY_SCRIPT, &args)?;
    Ok(())
}

fn join(gpus: &[u32]) -> String {
    gpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The host's devices and driver; returns the device majors.
fn check_host(ctid: Ctid, s: &NvidiaSettings) -> Result<DeviceMajors> {
    for g in &s.gpus {
        let node = format!("/dev/nvidia{g}");
        if !crate::host::exists(&node) {
            return Err(Error::precondition(format!(
                "CT {ctid}: GPU {g} is assigned (gpu_assignment) but `{node}` does not exist on the host (looked at `{}`)\nhint: check `nvidia-smi -L` on the host and fix gpu_assignment",
                host_path(&node).display()
            ))
            .into());
        }
    }
    let Some(host_version) = crate::host::nvidia_driver_version()? else {
        return Err(Error::precondition(format!(
            "CT {ctid}: no NVIDIA kernel driver is loaded on the host (`{}` is missing); nvidia_driver_version is {}\nhint: install driver {} on the host first",
            host_path(crate::host::NVIDIA_VERSION_FILE).display(),
            s.driver_version,
            s.driver_version
        ))
        .into());
    };
    if !same_version(&host_version, &s.driver_version) {
        return Err(Error::precondition(format!(
            "CT {ctid}: the host's NVIDIA driver is {host_version} but nvidia_driver_version is {}; the container's user space must equal the host's kernel module\nhint: set nvidia_driver_version (and nvidia_runfile_url) to {host_version}, or install driver {} on the host",
            s.driver_version, s.driver_version
        ))
        .into());
    }
    let devices_path = host_path(crate::host::PROC_DEVICES);
    let text = std::fs::read_to_string(&devices_path).map_err(|e| {
        Error::precondition(format!("cannot read `{}`: {e}", devices_path.display()))
    })?;
    let majors = device_majors(&text)?;
    if majors.uvm.is_none() {
        log::warn!(
            "[{ctid}] `nvidia-uvm` is not in /proc/devices: CUDA needs it; load it on the host with `nvidia-modprobe -u -c0` (its cgroup line is added on the next run)"
        );
    }
    Ok(majors)
}

/// Make the main section end with `wanted` GPU lines; returns whether the file changed (or, in
/// dry-run mode, would change).
fn apply_conf(ctx: &StepContext, ctid: Ctid, wanted: &[String], majors: &[u32]) -> Result<bool> {
    // Raw lines only; `devN` entries are `pct set`'s (apply_dev).
    let is_raw_gpu = |l: &str| parse_lxc_line(l).is_some() && is_gpu_line(l, majors);
    let (_lock, mut conf) = ConfFile::load_locked(ctid, ctx.dry_run)?;
    let before: Vec<String> = conf
        .main_lines()
        .iter()
        .filter(|l| is_raw_gpu(l))
        .cloned()
        .collect();
    if !conf.replace_main_lines(is_raw_gpu, wanted) {
        return Ok(false);
    }
    // `pct set` refuses a locked CT (backup, snapshot, migrate, ...); so does this edit.
    if let Some(lock) = conf.get("lock") {
        return Err(Error::precondition(format!(
            "CT {ctid} is locked ({lock}); its GPU passthrough lines cannot change now\nhint: wait for the running task, or `pct unlock {ctid}` if none runs"
        ))
        .into());
    }
    let removed: Vec<&String> = before.iter().filter(|l| !wanted.contains(l)).collect();
    let added: Vec<&String> = wanted.iter().filter(|l| !before.contains(l)).collect();
    let path = conf.path().display().to_string();
    if ctx.dry_run {
        for l in &removed {
            println!("would remove from `{path}`: {l}");
        }
        for l in &added {
            println!("would add to `{path}`: {l}");
        }
        return Ok(true);
    }
    conf.save()?;
    ctx.say(
        Some(ctid),
        &format!(
            "GPU passthrough lines in `{path}`: {} added, {} removed",
            added.len(),
            removed.len()
        ),
    );
    Ok(true)
}

/// The cached runfile's host-absolute path, downloading it once (temp name, then rename).
fn ensure_runfile(ctx: &StepContext, s: &NvidiaSettings) -> Result<String> {
    let abs = s.cache_path();
    let real = host_path(&abs);
    if std::fs::metadata(&real).is_ok_and(|m| m.is_file() && m.len() > 0) {
        log::info!("reusing cached `{abs}`");
        return Ok(abs);
    }
    if ctx.dry_run {
        println!("would download {} to `{abs}`", s.runfile_url);
        return Ok(abs);
    }
    let curl = which::which("curl").map_err(|e| {
        Error::precondition(format!(
            "`curl` not found on PATH ({e}); it downloads {}\nhint: `apt install curl` on the host, or put the file at `{abs}`",
            s.runfile_url
        ))
    })?;
    let dir = real.parent().map(PathBuf::from).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::new(
            ErrorKind::Other,
            format!("cannot create `{}`: {e}", dir.display()),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.part-{}",
        runfile_name(&s.driver_version),
        std::process::id()
    ));
    println!("downloading {} to `{abs}`", s.runfile_url);
    log::info!("curl -fsSL -o {} {}", tmp.display(), s.runfile_url);
    let out = Command::new(&curl)
        .arg("-fsSL")
        .arg("-o")
        .arg(&tmp)
        .arg(&s.runfile_url)
        .stdin(Stdio::null())
        .output();
    let fail = |why: String| -> anyhow::Error {
        let _ = std::fs::remove_file(&tmp);
        Error::precondition(format!(
            "cannot download the NVIDIA driver installer {}: {why}\nhint: check nvidia_runfile_url and the host's network, or put the file at `{abs}` yourself",
            s.runfile_url
        ))
        .into()
    };
    let out = out.map_err(|e| fail(format!("cannot run `{}`: {e}", curl.display())))?;
    if !out.status.success() {
        return Err(fail(format!(
            "curl exit {}: {}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // A makeself archive is a shell script; an HTML error page is not.
    let head = std::fs::read(&tmp)
        .map(|b| b.into_iter().take(2).collect::<Vec<u8>>())
        .unwrap_or_default();
    if head != b"#!" {
        return Err(fail(
            "the download is not an installer (does not start with `#!`)".into(),
        ));
    }
    std::fs::rename(&tmp, &real).map_err(|e| fail(format!("cannot rename into place: {e}")))?;
    Ok(abs)
}

/// The CUDA repository line for `url` (one line; `url` was checked for whitespace).
pub fn cuda_list_content(url: &str) -> String {
    format!("deb [signed-by={CUDA_KEYRING}] {url} /\n")
}

/// The URL of the repository's signing key.
pub fn cuda_key_url(repo_url: &str) -> String {
    format!("{}/{CUDA_KEY_FILE}", repo_url.trim_end_matches('/'))
}

/// Download `url` to `dest` inside the guest (temp name, then rename); values as `$1`, `$2`.
pub const FETCH_SCRIPT: &str = r#"set -eu
mkdir -p -- "$(dirname -- "$2")"
tmp="$2.part.$$"
if curl -fsSL -o "$tmp" -- "$1"; then
    chmod 0644 -- "$tmp"
    mv -f -- "$tmp" "$2"
else
    rc=$?
    rm -f -- "$tmp"
    exit "$rc"
fi"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pct::ExecOutput;

    fn majors() -> DeviceMajors {
        DeviceMajors {
            frontend: 195,
            uvm: Some(510),
            caps: Some(511),
        }
    }

    /// Runs [`APPLY_SCRIPT`] with bash on this machine, stand-ins for the guest's commands on
    /// PATH (`nvidia-smi` prints `$D/smi`, or fails when it is absent; `apt-get` and `curl`
    /// log their argv), so its order, its retry and its final check are tested end to end.
    struct Apply {
        d: tempfile::TempDir,
    }

    impl Apply {
        fn new() -> Apply {
            let d = tempfile::tempdir().unwrap();
            let bin = d.path().join("bin");
            std::fs::create_dir(&bin).unwrap();
            let dir = d.path().display().to_string();
            let tool = |name: &str, body: &str| {
                use std::os::unix::fs::PermissionsExt;
                let p = bin.join(name);
                std::fs::write(&p, format!("#!/bin/bash\nD='{dir}'\n{body}\n")).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            };
            tool(
                "nvidia-smi",
                r#"[ -f "$D/smi" ] || { echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."; exit 9; }
cat "$D/smi""#,
            );
            tool(
                "dpkg-query",
                r#"[ -f "$D/have-curl" ] && echo installed || { echo "dpkg-query: no packages found matching $5" >&2; exit 1; }"#,
            );
            tool("apt-get", r#"echo "apt-get $*" >>"$D/log""#);
            tool(
                "curl",
                r#"echo "curl $*" >>"$D/log"; [ -f "$D/no-net" ] && { echo "curl: (6) Could not resolve host: x" >&2; exit 6; }; echo KEY >"$3""#,
            );
            Apply { d }
        }

        fn path(&self, rel: &str) -> std::path::PathBuf {
            self.d.path().join(rel)
        }

        /// An installer at `$D/NVIDIA.run` that logs its argv and makes `nvidia-smi` print
        /// `version` for two GPUs.
        fn installer(&self, version: &str) -> String {
            use std::os::unix::fs::PermissionsExt;
            let p = self.path("NVIDIA.run");
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\necho \"installer $*\" >>'{d}/log'\nprintf '{version}\\n{version}\\n' >'{d}/smi'\n",
                    d = self.d.path().display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p.display().to_string()
        }

        fn run(&self, args: &[&str]) -> ExecOutput {
            let out = Command::new("bash")
                .arg("-c")
                .arg(APPLY_SCRIPT)
                .arg("_")
                .args(args)
                .env(
                    "PATH",
                    format!(
                        "{}:{}",
                        self.path("bin").display(),
                        std::env::var("PATH").unwrap()
                    ),
                )
                .output()
                .unwrap();
            ExecOutput {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.path("log")).unwrap_or_default()
        }
    }

    #[test]
    fn apply_script_installs_in_order_and_checks_nvidia_smi() {
        assert!(APPLY_SCRIPT.contains(&format!("\"$1\" {}\n", RUNFILE_FLAGS.join(" "))));
        let a = Apply::new();
        let run = a.installer("580.76.05");
        let key = a.path("keyrings/cuda.asc").display().to_string();
        let list = a.path("sources/cuda.list").display().to_string();
        let content = cuda_list_content("https://r/x86_64/");
        let out = a.run(&[
            &run,
            "https://r/x86_64/3bf863cc.pub",
            &key,
            &list,
            &content,
            "580.76.05",
            "cuda-toolkit",
            "nvtop",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        let log = a.log();
        let log: Vec<&str> = log.lines().collect();
        let apt_install = "apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";
        assert_eq!(log.len(), 6, "{log:#?}");
        assert_eq!(log[0], format!("installer {}", RUNFILE_FLAGS.join(" ")));
        assert_eq!(log[1], "apt-get update -q");
        assert_eq!(log[2], format!("{apt_install} ca-certificates curl"));
        assert!(
            log[3].starts_with(&format!("curl -fsSL -o {key}.part."))
                && log[3].ends_with(" -- https://r/x86_64/3bf863cc.pub"),
            "{log:#?}"
        );
        assert_eq!(log[4], "apt-get update -q");
        assert_eq!(log[5], format!("{apt_install} cuda-toolkit nvtop"));
        // The installer is gone, the key and the list are in place, with no temp file left.
        assert!(!std::path::Path::new(&run).exists());
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "KEY\n");
        assert_eq!(std::fs::read_to_string(&list).unwrap(), content);
        let left = |dir: &str| std::fs::read_dir(a.path(dir)).unwrap().count();
        assert_eq!((left("keyrings"), left("sources")), (1, 1));

        // Nothing but the check: no installer, no repository, no packages.
        std::fs::remove_file(a.path("log")).unwrap();
        let out = a.run(&["", "", &key, &list, "", "580.76.05"]);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(a.log(), "");
        // Versions compare by their numbers.
        let out = a.run(&["", "", &key, &list, "", "580.76.5"]);
        assert_eq!(out.code, 0, "{out:?}");
        // Another version: exit 1 naming both.
        let out = a.run(&["", "", &key, &list, "", "580.65.06"]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(
            out.stderr.contains("reports driver 580.76.05,580.76.05")
                && out.stderr.contains("expected 580.65.06"),
            "{out:?}"
        );
    }

    #[test]
    fn apply_script_retried_after_a_network_failure_skips_the_installer_it_ran() {
        let a = Apply::new();
        std::fs::write(a.path("have-curl"), "").unwrap();
        std::fs::write(a.path("no-net"), "").unwrap();
        let run = a.installer("580.76.05");
        let key = a.path("k/cuda.asc").display().to_string();
        let list = a.path("l/cuda.list").display().to_string();
        let args = [
            run.as_str(),
            "https://r/3bf863cc.pub",
            key.as_str(),
            list.as_str(),
            "deb x /\n",
            "580.76.05",
            "nvtop",
        ];
        // First attempt: the installer runs and is removed, then the key download fails the
        // way a network that is not up fails (curl's exit 6, which Guest::run_script retries).
        let out = a.run(&args);
        assert_eq!(out.code, 6, "{out:?}");
        assert!(crate::guest::network_down(&out), "{out:?}");
        assert!(!std::path::Path::new(&run).exists());
        assert!(!std::path::Path::new(&key).exists());
        // The retry finds the installer run (nvidia-smi reports the version) and goes on.
        std::fs::remove_file(a.path("no-net")).unwrap();
        let out = a.run(&args);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(a.log().matches("installer ").count(), 1, "{}", a.log());
        assert!(a.log().ends_with("apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold nvtop\n"));
        // An installer that is gone while nvidia-smi does not report the version is an error.
        std::fs::remove_file(a.path("smi")).unwrap();
        let out = a.run(&args);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(
            out.stderr.contains("installer") && out.stderr.contains("missing"),
            "{out:?}"
        );
        // nvidia-smi failing at the end says so, with its output.
        let out = a.run(&["", "", &key, &list, "", "580.76.05"]);
        assert_eq!(out.code, 1, "{out:?}");
        assert!(
            out.stderr
                .contains("nvidia-smi fails after the install (exit 9)")
                && out.stderr.contains("couldn't communicate"),
            "{out:?}"
        );
    }

    #[test]
    fn passthrough_lines_for_two_gpus() {
        assert_eq!(
            passthrough_lines(&[0, 1], &majors()),
            [
                "lxc.cgroup2.devices.allow: c 195:* rwm",
                "lxc.cgroup2.devices.allow: c 510:* rwm",
                "lxc.cgroup2.devices.allow: c 511:* rwm",
                "lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file",
                "lxc.mount.entry: /dev/nvidia1 dev/nvidia1 none bind,optional,create=file",
                "lxc.mount.entry: /dev/nvidiactl dev/nvidiactl none bind,optional,create=file",
                "lxc.mount.entry: /dev/nvidia-uvm dev/nvidia-uvm none bind,optional,create=file",
                "lxc.mount.entry: /dev/nvidia-uvm-tools dev/nvidia-uvm-tools none bind,optional,create=file",
                "lxc.mount.entry: /dev/nvidia-caps dev/nvidia-caps none bind,optional,create=dir",
            ]
        );
        assert!(passthrough_lines(&[], &majors()).is_empty());
        let no_uvm = DeviceMajors {
            uvm: None,
            caps: None,
            ..majors()
        };
        let l = passthrough_lines(&[1], &no_uvm);
        assert_eq!(l.iter().filter(|l| l.contains("cgroup2")).count(), 1);
        assert!(l.iter().all(|l| !l.contains("/dev/nvidia0 ")));
    }

    #[test]
    fn modes_by_setting_and_version() {
        let c = Ctid(901);
        use GpuPassthrough::*;
        assert_eq!(choose_mode(c, Auto, Some((8, 4))).unwrap(), Mode::Dev);
        assert_eq!(choose_mode(c, Auto, Some((8, 1))).unwrap(), Mode::Dev);
        assert_eq!(choose_mode(c, Auto, Some((9, 0))).unwrap(), Mode::Dev);
        assert_eq!(choose_mode(c, Auto, Some((8, 0))).unwrap(), Mode::Lxc);
        assert_eq!(choose_mode(c, Auto, None).unwrap(), Mode::Lxc);
        assert_eq!(choose_mode(c, Lxc, Some((9, 1))).unwrap(), Mode::Lxc);
        assert_eq!(choose_mode(c, Dev, Some((8, 2))).unwrap(), Mode::Dev);
        let e = choose_mode(c, Dev, Some((7, 4))).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 3);
        assert!(e.to_string().contains("7.4") && e.to_string().contains("8.1"));
    }

    #[test]
    fn dev_changes_keep_others_fix_values_and_fill_free_indices() {
        let cfg = PctConfig::parse(
            "dev0: /dev/fuse\ndev1: /dev/nvidia1,mode=0666\ndev2: path=/dev/nvidia0,mode=0600\ndev4: /dev/nvidia0,mode=0666\nmemory: 512\n",
        );
        let want = vec![
            (
                "/dev/nvidia0".to_string(),
                "/dev/nvidia0,mode=0666".to_string(),
            ),
            (
                "/dev/nvidiactl".to_string(),
                "/dev/nvidiactl,mode=0666".to_string(),
            ),
        ];
        let (set, delete) = dev_changes(&cfg, &want);
        // dev2 holds nvidia0 with another mode: set in place; dev4 is a duplicate, dev1 not wanted.
        assert_eq!(
            set,
            vec![
                ("dev2".to_string(), "/dev/nvidia0,mode=0666".to_string()),
                ("dev3".to_string(), "/dev/nvidiactl,mode=0666".to_string()),
            ]
        );
        assert_eq!(delete, ["dev1", "dev4"]);
        // Converged: nothing to do; option order does not matter.
        let cfg =
            PctConfig::parse("dev0: /dev/nvidia0,mode=0666\ndev1: mode=0666,path=/dev/nvidiactl\n");
        assert_eq!(dev_changes(&cfg, &want), (vec![], vec![]));
        // Nothing wanted: every GPU entry goes, others stay.
        let cfg = PctConfig::parse("dev0: /dev/fuse\ndev1: /dev/nvidia0,mode=0666\n");
        assert_eq!(dev_changes(&cfg, &[]), (vec![], vec!["dev1".to_string()]));
    }

    #[test]
    fn majors_are_read_not_assumed() {
        let t = "Character devices:\n195 nvidia-frontend\n507 nvidia-nvlink\n508 nvidia-caps-imex-channels\n510 nvidia-uvm\n511 nvidia-caps\n";
        assert_eq!(device_majors(t).unwrap(), majors());
        let err = device_majors("Character devices:\n  1 mem\n").unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 3);
    }

    #[test]
    fn versions_and_urls() {
        assert!(same_version("580.76.05", "580.76.5"));
        assert!(!same_version("570.148.08", "570.148.06"));
        assert!(!same_version("", "580.76.05"));
        assert_eq!(
            runfile_version("https://x/580.76.05/NVIDIA-Linux-x86_64-580.76.05.run"),
            Some("580.76.05")
        );
        assert_eq!(runfile_version("https://mirror/driver.run"), None);
        let c = Ctid(901);
        assert!(check_url(c, "f", "https://developer.download.nvidia.com/x/").is_ok());
        for bad in [
            "x'; touch /tmp/pwned; '",
            "https://h/a b",
            "https://h/a\nb",
            "ftp://h/x",
            "https:///x",
            "https://h;x/",
        ] {
            let e = check_url(c, "nvidia_repo_url", bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2, "{bad}");
            assert!(e.to_string().contains("nvidia_repo_url"));
        }
        assert_eq!(
            cuda_list_content("https://r/ubuntu2404/x86_64/"),
            format!("deb [signed-by={CUDA_KEYRING}] https://r/ubuntu2404/x86_64/ /\n")
        );
        assert_eq!(
            cuda_key_url("https://r/x86_64/"),
            "https://r/x86_64/3bf863cc.pub"
        );
    }

    #[test]
    fn settings_from_block_and_env() {
        let mut spec = crate::steps::tests::spec("gpu");
        spec.gpu_assignment = Some("0,1".parse().unwrap());
        let lxc = LxcConfigFile {
            schema: String::new(),
            nvidia_driver_version: "580.76.05".parse().unwrap(),
            nvidia_repo_url: "https://r/x86_64/".into(),
            nvidia_runfile_url: "https://d/580.76.05/NVIDIA-Linux-x86_64-580.76.05.run".into(),
            lxc_configs: Default::default(),
        };
        let none = |_: &str| None;
        let s = NvidiaSettings::resolve(Ctid(901), &spec, &lxc, &none).unwrap();
        assert_eq!(s.gpus, [0, 1]);
        assert_eq!(
            s.cache_path(),
            "/var/cache/phoenix_hypervisor/NVIDIA-Linux-x86_64-580.76.05.run"
        );
        let env = |k: &str| (k == "GPU_ASSIGNMENT").then(|| "1".to_string());
        assert_eq!(
            NvidiaSettings::resolve(Ctid(901), &spec, &lxc, &env)
                .unwrap()
                .gpus,
            [1]
        );
        let env = |k: &str| (k == "GPU_ASSIGNMENT").then(|| "0;1".to_string());
        let e = NvidiaSettings::resolve(Ctid(901), &spec, &lxc, &env).unwrap_err();
        assert!(e.to_string().contains("GPU_ASSIGNMENT"), "{e}");
        let env = |k: &str| (k == "NVIDIA_DRIVER_VERSION").then(|| "570.1.2".to_string());
        let e = NvidiaSettings::resolve(Ctid(901), &spec, &lxc, &env).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(e.to_string().contains("580.76.05") && e.to_string().contains("570.1.2"));
    }
}
