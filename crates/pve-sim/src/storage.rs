//! Storages (`etc/pve/storage.cfg`) and the volumes on them. A volume is a directory under
//! `var/lib/pve-sim/storage/<storeid>/vols/<name>/` (the container's root filesystem as the
//! guest sees it), snapshots are frozen copies under `.../snaps/<name>@<snap>/`, and
//! `.../meta/<name>.json` keeps what `zfs list` would know (size, owner, origin, creation).
//! Feature rules follow pve-storage's `volume_has_feature` tables (`proxmox.md`).

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::host::{Host, write_atomic};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    Dir,
    ZfsPool,
    LvmThin,
}

impl StorageType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dir" => Some(Self::Dir),
            "zfspool" => Some(Self::ZfsPool),
            "lvmthin" => Some(Self::LvmThin),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Dir => "dir",
            Self::ZfsPool => "zfspool",
            Self::LvmThin => "lvmthin",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Storage {
    pub id: String,
    pub ty: StorageType,
    pub content: Vec<String>,
    pub props: Vec<(String, String)>,
    pub disabled: bool,
}

impl Storage {
    pub fn has_content(&self, c: &str) -> bool {
        self.content.iter().any(|x| x == c)
    }
    pub fn prop(&self, k: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
    /// Storage.cfg text for this storage.
    pub fn to_cfg(&self) -> String {
        let mut s = format!("{}: {}\n", self.ty.name(), self.id);
        for (k, v) in &self.props {
            if v.is_empty() {
                s.push_str(&format!("\t{k}\n"));
            } else {
                s.push_str(&format!("\t{k} {v}\n"));
            }
        }
        s.push_str(&format!("\tcontent {}\n", self.content.join(",")));
        s
    }
}

/// Parse `storage.cfg`.
pub fn parse_cfg(text: &str) -> Result<Vec<Storage>, String> {
    let mut out: Vec<Storage> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            let Some((ty, id)) = line.split_once(':') else {
                return Err(format!("storage.cfg line {}: cannot parse '{line}'", n + 1));
            };
            let Some(ty) = StorageType::parse(ty.trim()) else {
                return Err(format!(
                    "storage.cfg line {}: unsupported storage type '{}'",
                    n + 1,
                    ty.trim()
                ));
            };
            out.push(Storage {
                id: id.trim().to_string(),
                ty,
                content: Vec::new(),
                props: Vec::new(),
                disabled: false,
            });
            continue;
        }
        let Some(cur) = out.last_mut() else {
            return Err(format!(
                "storage.cfg line {}: property outside a storage",
                n + 1
            ));
        };
        let t = line.trim();
        let (k, v) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
        match k {
            "content" => cur.content = v.trim().split(',').map(|s| s.trim().to_string()).collect(),
            "disable" => cur.disabled = v.trim() != "0",
            _ => cur.props.push((k.to_string(), v.trim().to_string())),
        }
    }
    Ok(out)
}

pub fn read_all(host: &Host) -> Result<Vec<Storage>, String> {
    let p = host.storage_cfg();
    let text = fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    parse_cfg(&text)
}

pub fn find(host: &Host, id: &str) -> Result<Storage, String> {
    read_all(host)?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| format!("storage '{id}' does not exist"))
}

/// What the simulator knows about a volume (what `zfs list`/`zfs get` would report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolMeta {
    pub size: u64,
    pub vmid: u32,
    /// Linked clone origin: `<base name>@__base__`.
    #[serde(default)]
    pub origin: Option<String>,
    pub ctime_ms: u64,
    /// Snapshot names in creation order.
    #[serde(default)]
    pub snapshots: Vec<String>,
}

/// `storeid:volname` split.
pub fn parse_volid(volid: &str) -> Option<(&str, &str)> {
    let (s, v) = volid.split_once(':')?;
    if s.is_empty() || v.is_empty() {
        return None;
    }
    Some((s, v))
}

/// The file-system name of a volume: its last path component (`subvol-101-disk-0` for
/// `basevol-100-disk-0/subvol-101-disk-0`, `vm-100-disk-0.raw` for `100/vm-100-disk-0.raw`).
pub fn vol_name(volname: &str) -> &str {
    volname.rsplit('/').next().unwrap_or(volname)
}

pub fn is_base(volname: &str) -> bool {
    let n = vol_name(volname);
    n.starts_with("basevol-") || n.starts_with("base-")
}

pub fn store_dir(host: &Host, storeid: &str) -> PathBuf {
    host.storage_root().join(storeid)
}
pub fn vol_dir(host: &Host, storeid: &str, volname: &str) -> PathBuf {
    store_dir(host, storeid)
        .join("vols")
        .join(vol_name(volname))
}
pub fn snap_dir(host: &Host, storeid: &str, volname: &str, snap: &str) -> PathBuf {
    store_dir(host, storeid)
        .join("snaps")
        .join(format!("{}@{snap}", vol_name(volname)))
}
fn meta_path(host: &Host, storeid: &str, name: &str) -> PathBuf {
    store_dir(host, storeid)
        .join("meta")
        .join(format!("{name}.json"))
}

pub fn read_meta(host: &Host, storeid: &str, volname: &str) -> Option<VolMeta> {
    let t = fs::read_to_string(meta_path(host, storeid, vol_name(volname))).ok()?;
    serde_json::from_str(&t).ok()
}
pub fn write_meta(host: &Host, storeid: &str, volname: &str, m: &VolMeta) -> std::io::Result<()> {
    let t = serde_json::to_string(m).expect("meta serialises");
    write_atomic(&meta_path(host, storeid, vol_name(volname)), t.as_bytes())
}
pub fn remove_meta(host: &Host, storeid: &str, volname: &str) {
    let _ = fs::remove_file(meta_path(host, storeid, vol_name(volname)));
}

/// All volumes on a storage: (volname, meta).
pub fn list_volumes(host: &Host, st: &Storage) -> Vec<(String, VolMeta)> {
    let dir = store_dir(host, &st.id).join("meta");
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return out;
    };
    for e in rd.flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        let Some(name) = fname.strip_suffix(".json") else {
            continue;
        };
        let Ok(t) = fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(m) = serde_json::from_str::<VolMeta>(&t) else {
            continue;
        };
        out.push((full_volname(st, name, &m), m));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The volume name as the volid shows it, from the file-system name.
pub fn full_volname(st: &Storage, name: &str, m: &VolMeta) -> String {
    match st.ty {
        StorageType::Dir => format!("{}/{name}", m.vmid),
        _ => match &m.origin {
            Some(o) => format!("{}/{name}", o.split('@').next().unwrap_or(o)),
            None => name.to_string(),
        },
    }
}

/// First free disk name for `vmid` on `st` (`find_free_diskname`).
pub fn alloc_volname(host: &Host, st: &Storage, vmid: u32) -> String {
    let used: Vec<String> = list_volumes(host, st)
        .into_iter()
        .map(|(v, _)| vol_name(&v).to_string())
        .collect();
    for n in 0.. {
        let cands = [
            format!("subvol-{vmid}-disk-{n}"),
            format!("basevol-{vmid}-disk-{n}"),
            format!("vm-{vmid}-disk-{n}"),
            format!("base-{vmid}-disk-{n}"),
            format!("vm-{vmid}-disk-{n}.raw"),
            format!("base-{vmid}-disk-{n}.raw"),
        ];
        if cands.iter().any(|c| used.contains(c)) {
            continue;
        }
        return match st.ty {
            StorageType::ZfsPool => format!("subvol-{vmid}-disk-{n}"),
            StorageType::Dir => format!("{vmid}/vm-{vmid}-disk-{n}.raw"),
            StorageType::LvmThin => format!("vm-{vmid}-disk-{n}"),
        };
    }
    unreachable!()
}

/// Name of the base volume `pct template` renames `volname` to.
/// A linked clone keeps its origin prefix (`basevol-100-disk-0/basevol-101-disk-0`).
pub fn base_volname(st: &Storage, volname: &str) -> String {
    let (prefix, n) = match volname.rsplit_once('/') {
        Some((p, n)) => (format!("{p}/"), n),
        None => (String::new(), volname),
    };
    let renamed = match st.ty {
        StorageType::ZfsPool => n.replacen("subvol-", "basevol-", 1),
        StorageType::Dir => n.replacen("vm-", "base-", 1),
        StorageType::LvmThin => n.replacen("vm-", "base-", 1),
    };
    format!("{prefix}{renamed}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Snapshot,
    Clone,
    Template,
    Copy,
}

/// `volume_has_feature` for container volumes.
pub fn has_feature(st: &Storage, volname: &str, snap: Option<&str>, f: Feature) -> bool {
    let key = if snap.is_some() {
        "snap"
    } else if is_base(volname) {
        "base"
    } else {
        "current"
    };
    match st.ty {
        StorageType::ZfsPool => match f {
            Feature::Snapshot => matches!(key, "current" | "snap"),
            Feature::Clone => key == "base",
            Feature::Template => key == "current",
            Feature::Copy => matches!(key, "base" | "current"),
        },
        // raw images on a dir storage: no snapshots; clone only to qcow2, which LXC
        // does not accept, so never for containers.
        StorageType::Dir => match f {
            Feature::Snapshot => false,
            Feature::Clone => false,
            Feature::Template => key == "current",
            Feature::Copy => matches!(key, "base" | "current"),
        },
        StorageType::LvmThin => match f {
            Feature::Snapshot => key == "current",
            Feature::Clone => matches!(key, "base" | "snap"),
            Feature::Template => key == "current",
            Feature::Copy => true,
        },
    }
}

/// Size string as Proxmox writes it in `size=` (`8G`, `512M`).
pub fn size_string(bytes: u64) -> String {
    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;
    const K: u64 = 1 << 10;
    if bytes.is_multiple_of(G) {
        format!("{}G", bytes / G)
    } else if bytes.is_multiple_of(M) {
        format!("{}M", bytes / M)
    } else if bytes.is_multiple_of(K) {
        format!("{}K", bytes / K)
    } else {
        format!("{bytes}")
    }
}

/// Parse `size=` values (`8G`, `512M`, bare bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mul) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num.parse().ok()?;
    Some((v * mul as f64) as u64)
}
