//! The simulated host: its root directory (`PHOENIX_HOST_ROOT`), identity (node name, PVE
//! version, read from `etc/pve-sim/host.json` written by `pve-sim init`), the paths of
//! everything pve-sim keeps under the root, the host-wide state lock, and atomic writes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What `pve-sim init` records about the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    pub node: String,
    pub pve_version: String,
    pub kernel: String,
}

impl HostInfo {
    /// Major PVE version (8 or 9): decides version-dependent defaults and messages.
    pub fn major(&self) -> u32 {
        self.pve_version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(8)
    }

    /// The pve-container version this PVE release ships ([`crate::versions`]).
    pub fn pve_container(&self) -> (u32, u32, u32) {
        crate::versions::pve_container(&self.pve_version)
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub root: PathBuf,
    pub info: HostInfo,
}

/// Read `PHOENIX_HOST_ROOT`; refuse an unset, empty or `/` root (never touch a real host).
pub fn root_from_env() -> Result<PathBuf, String> {
    let Some(v) = std::env::var_os("PHOENIX_HOST_ROOT").filter(|v| !v.is_empty()) else {
        return Err(
            "pve-sim: PHOENIX_HOST_ROOT is not set; point it at a directory made by `pve-sim init`"
                .into(),
        );
    };
    let p = PathBuf::from(v);
    if p == Path::new("/")
        || p.canonicalize()
            .map(|c| c == Path::new("/"))
            .unwrap_or(false)
    {
        return Err(
            "pve-sim: PHOENIX_HOST_ROOT is `/`; the simulator never runs on a real host root"
                .into(),
        );
    }
    Ok(p)
}

impl Host {
    pub fn info_path(root: &Path) -> PathBuf {
        root.join("etc/pve-sim/host.json")
    }

    /// Open the host at `root` (must have been initialised).
    pub fn open(root: PathBuf) -> Result<Host, String> {
        let p = Self::info_path(&root);
        let text = fs::read_to_string(&p).map_err(|e| {
            format!(
                "pve-sim: {} is not a simulated PVE host ({}: {e}); run `pve-sim init --host-root {}`",
                root.display(),
                p.display(),
                root.display()
            )
        })?;
        let info: HostInfo =
            serde_json::from_str(&text).map_err(|e| format!("pve-sim: {}: {e}", p.display()))?;
        Ok(Host { root, info })
    }

    pub fn from_env() -> Result<Host, String> {
        Host::open(root_from_env()?)
    }

    pub fn node(&self) -> &str {
        &self.info.node
    }

    /// A host-absolute path (as the product passes to pct) under the root.
    pub fn path(&self, host_abs: &str) -> PathBuf {
        self.root.join(host_abs.trim_start_matches('/'))
    }

    pub fn lxc_dir(&self) -> PathBuf {
        self.root
            .join("etc/pve/nodes")
            .join(&self.info.node)
            .join("lxc")
    }
    pub fn qemu_dir(&self) -> PathBuf {
        self.root
            .join("etc/pve/nodes")
            .join(&self.info.node)
            .join("qemu-server")
    }
    pub fn conf_path(&self, vmid: u32) -> PathBuf {
        self.lxc_dir().join(format!("{vmid}.conf"))
    }
    /// The path Proxmox names in "does not exist" messages.
    pub fn conf_display(&self, vmid: u32) -> String {
        format!("nodes/{}/lxc/{vmid}.conf", self.info.node)
    }
    pub fn storage_cfg(&self) -> PathBuf {
        self.root.join("etc/pve/storage.cfg")
    }
    pub fn sim_etc(&self) -> PathBuf {
        self.root.join("etc/pve-sim")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run/pve-sim")
    }
    pub fn runtime_path(&self, vmid: u32) -> PathBuf {
        self.run_dir().join(format!("{vmid}.json"))
    }
    pub fn journal_path(&self) -> PathBuf {
        self.root.join("var/log/pve-sim/journal.jsonl")
    }
    pub fn storage_root(&self) -> PathBuf {
        self.root.join("var/lib/pve-sim/storage")
    }

    /// Take the host-wide state lock (blocking). Held only while reading/writing state,
    /// never across latency sleeps, copies or guest commands.
    pub fn lock(&self) -> std::io::Result<HostLock> {
        let dir = self.run_dir();
        fs::create_dir_all(&dir)?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("host.lock"))?;
        // File::lock is stable since 1.89; the toolchain is 1.95 (workspace rust-version lags).
        f.lock()?;
        Ok(HostLock { _f: f })
    }
}

/// Guard of the host-wide lock; released on drop (closing the file drops the flock).
pub struct HostLock {
    _f: File,
}

/// Write `data` to `path` via a temporary file in the same directory and a rename, so
/// readers never see a half-written file.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
    }
    fs::rename(&tmp, path)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Copy a directory tree preserving attributes (`cp -a`), as the storage layer's rsync /
/// zfs send would.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), String> {
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(src)
        .arg(dst)
        .output()
        .map_err(|e| format!("cp: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "copy {} -> {} failed: {}",
            src.display(),
            dst.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Remove a directory tree if it exists.
pub fn remove_tree(p: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
