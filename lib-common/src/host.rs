//! Facts about the Proxmox host read from its files (under `PHOENIX_HOST_ROOT`): is it a
//! Proxmox VE host, the loaded NVIDIA driver version, character-device majors from
//! `/proc/devices`, device nodes, and the storages of `/etc/pve/storage.cfg` with what they can
//! hold. Running tools (`pveversion`, `pvesm`) is [`crate::pct`]'s job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::paths::host_path;

/// Host-absolute: the loaded NVIDIA kernel module's version.
pub const NVIDIA_VERSION_FILE: &str = "/proc/driver/nvidia/version";
/// Host-absolute: character device majors by driver name.
pub const PROC_DEVICES: &str = "/proc/devices";
/// Host-absolute: Proxmox's storage definitions.
pub const STORAGE_CFG: &str = "/etc/pve/storage.cfg";

/// `/etc/pve` exists under the host root (pmxcfs mounted).
pub fn has_etc_pve() -> bool {
    host_path("/etc/pve").is_dir()
}

/// Whether a host-absolute path exists on the host.
pub fn exists(host_abs: &str) -> bool {
    host_path(host_abs).exists()
}

/// The version in `/proc/driver/nvidia/version` text: the first `N.N[.N]` on the `NVRM version`
/// line (`NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.76.05  Wed ...` and the open
/// kernel module's `... Open Kernel Module for x86_64  580.76.05  Release Build ...`).
pub fn parse_nvidia_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version"))?;
    line.split_whitespace()
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            (2..=3).contains(&parts.len())
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
}

/// The host's loaded NVIDIA kernel driver version, `None` when no driver is loaded.
pub fn nvidia_driver_version() -> Result<Option<String>> {
    let p = host_path(NVIDIA_VERSION_FILE);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::precondition(format!("cannot read `{}`: {e}", p.display())).into());
        }
    };
    match parse_nvidia_version(&text) {
        Some(v) => Ok(Some(v)),
        None => Err(Error::precondition(format!(
            "cannot find a driver version in `{}` (first line: {:?})",
            p.display(),
            text.lines().next().unwrap_or("")
        ))
        .into()),
    }
}

/// Character-device majors by driver name from `/proc/devices` text (`195 nvidia-frontend`).
pub fn parse_char_majors(text: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut in_char = false;
    for line in text.lines() {
        let t = line.trim();
        if t.ends_with(':') {
            in_char = t == "Character devices:";
            continue;
        }
        if !in_char {
            continue;
        }
        if let Some((major, name)) = t.split_once(char::is_whitespace)
            && let Ok(m) = major.parse()
        {
            out.entry(name.trim().to_string()).or_insert(m);
        }
    }
    out
}

/// The host's character-device majors (empty when `/proc/devices` is unreadable).
pub fn char_majors() -> BTreeMap<String, u32> {
    std::fs::read_to_string(host_path(PROC_DEVICES))
        .map(|t| parse_char_majors(&t))
        .unwrap_or_default()
}

/// Majors of the NVIDIA character devices (`nvidia-frontend`, `nvidia-uvm`, `nvidia-caps`,
/// ...): every name starting with `nvidia`, plus 195 which the driver always uses.
pub fn nvidia_majors() -> Vec<u32> {
    let mut v: Vec<u32> = char_majors()
        .into_iter()
        .filter(|(n, _)| n.starts_with("nvidia"))
        .map(|(_, m)| m)
        .collect();
    v.push(195);
    v.sort_unstable();
    v.dedup();
    v
}

/// `(major, minor)` of Proxmox VE from `pveversion` output
/// (`pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-11-pve)`).
pub fn parse_pve_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.split("pve-manager/").nth(1)?;
    let version = rest.split(['/', ' ']).next()?;
    let mut it = version.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Proxmox VE from which `devN:` device passthrough exists: 8.1 (pve-container 5.0.7).
pub const DEVN_SINCE: (u32, u32) = (8, 1);

/// The name of group `gid` in the host's `/etc/group`, if it has one.
pub fn group_name(gid: u32) -> Option<String> {
    let text = std::fs::read_to_string(host_path("/etc/group")).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
    })
}

/// One storage of `/etc/pve/storage.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageDef {
    /// The storage ID.
    pub id: String,
    /// Its type (`zfspool`, `dir`, `lvmthin`, ...).
    pub storage_type: String,
    /// Content types; `None` when the section has no `content` line (type defaults apply).
    pub content: Option<Vec<String>>,
    /// `disable` is set.
    pub disabled: bool,
}

impl StorageDef {
    /// Can hold container root filesystems (`rootdir`). Without a `content` line the types that
    /// hold disks default to `images,rootdir`.
    pub fn holds_containers(&self) -> bool {
        match &self.content {
            Some(c) => c.iter().any(|x| x == "rootdir"),
            None => matches!(
                self.storage_type.as_str(),
                "dir" | "zfspool" | "lvmthin" | "lvm" | "rbd" | "btrfs" | "nfs" | "cifs"
            ),
        }
    }
}

/// Whether container volumes on this storage type can be snapshotted (raw/subvol volumes;
/// `dir`, `nfs`, `cifs` snapshot only qcow2, which containers do not use; thick `lvm` never).
pub fn type_supports_ct_snapshots(storage_type: &str) -> bool {
    matches!(
        storage_type,
        "zfspool" | "lvmthin" | "rbd" | "btrfs" | "zfs"
    )
}

/// Parse storage.cfg text: `type: id` headers, indented `key value` lines.
pub fn parse_storage_cfg(text: &str) -> Vec<StorageDef> {
    let mut out: Vec<StorageDef> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indented = line.starts_with(char::is_whitespace);
        if !indented {
            if let Some((t, id)) = line.split_once(':') {
                out.push(StorageDef {
                    id: id.trim().to_string(),
                    storage_type: t.trim().to_string(),
                    content: None,
                    disabled: false,
                });
            }
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        let t = line.trim();
        let (k, v) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
        match k {
            "content" => {
                cur.content = Some(
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                )
            }
            "disable" => cur.disabled = v.trim() != "0",
            _ => {}
        }
    }
    out
}

/// The storages defined on the host (`/etc/pve/storage.cfg`).
pub fn storage_defs() -> Result<Vec<StorageDef>> {
    let p: PathBuf = host_path(STORAGE_CFG);
    let text = std::fs::read_to_string(&p).map_err(|e| {
        Error::precondition(format!(
            "cannot read `{}`: {e}: is this a Proxmox VE host?",
            p.display()
        ))
    })?;
    Ok(parse_storage_cfg(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_versions() {
        let closed = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.76.05  Wed Jul 30 2025\nGCC version:  gcc version 12.2.0\n";
        assert_eq!(parse_nvidia_version(closed).as_deref(), Some("580.76.05"));
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.148.08  Release Build  (dvs-builder@U16)\n";
        assert_eq!(parse_nvidia_version(open).as_deref(), Some("570.148.08"));
        assert_eq!(parse_nvidia_version("garbage"), None);
    }

    #[test]
    fn majors_from_proc_devices() {
        let t = "Character devices:\n  1 mem\n195 nvidia-frontend\n508 nvidia-uvm\n509 nvidia-caps\n\nBlock devices:\n  8 sd\n259 blkext\n";
        let m = parse_char_majors(t);
        assert_eq!(m["nvidia-uvm"], 508);
        assert_eq!(m["nvidia-frontend"], 195);
        assert!(!m.contains_key("sd"));
    }

    #[test]
    fn pve_versions() {
        assert_eq!(
            parse_pve_version(
                "pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-11-pve)\n"
            ),
            Some((8, 4))
        );
        assert_eq!(parse_pve_version("pve-manager/9.1.2/abc"), Some((9, 1)));
        assert_eq!(parse_pve_version("pve-manager/8.0.4/x"), Some((8, 0)));
        assert_eq!(parse_pve_version("garbage"), None);
        let newer = |v: (u32, u32)| v >= DEVN_SINCE;
        assert!(newer((8, 4)) && newer((9, 0)) && !newer((8, 0)));
    }

    #[test]
    fn storage_cfg() {
        let t = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\nzfspool: lxc-disks\n\tpool quickOS/lxc-disks\n\tcontent images,rootdir\n\tsparse 1\n\nlvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\ndir: slow\n\tpath /mnt/slow\n\tcontent rootdir\n\tdisable\n";
        let s = parse_storage_cfg(t);
        assert_eq!(s.len(), 4);
        assert!(!s[0].holds_containers());
        assert!(s[1].holds_containers() && type_supports_ct_snapshots(&s[1].storage_type));
        assert!(s[2].holds_containers() && s[2].content.is_none());
        assert!(s[3].disabled && s[3].holds_containers());
        assert!(!type_supports_ct_snapshots("dir"));
    }
}
