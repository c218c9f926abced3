//! Drift (issue 13): how an existing container differs from its block, compared from the main
//! section of its conf file (the current values, not `[pve:pending]`, read with
//! [`crate::conffile::ConfFile`]: no `pct` call per CT), and how each difference can be made to
//! match.
//!
//! Classes ([`Class`]):
//! - **in place**: `pct set` (hostname, memory, cores, features, net0, onboot, startup, tags),
//!   `pct resize` to grow the root disk, the GPU passthrough lines (lxc-nvidia, or removing
//!   them). On a running CT some of them only take effect at its next start
//!   ([`Class::InPlaceRestart`]): on a running CT `pct set` puts every change in `[pve:pending]`
//!   and pve-container `PVE::LXC::Config::vmconfig_hotplug_pending` then applies the
//!   `$LXC_FASTPLUG_OPTIONS` (`hostname cores onboot startup tags` ...) at once and hot-plugs
//!   `memory` and `netN`; the rest, `features` among them, stays pending; raw `lxc.*` lines and
//!   `devN` entries are turned into LXC's config only at a start (`PVE::LXC::update_lxc_config`).
//!   `pct resize` grows a running CT's disk online (`PVE::API2::LXC` `resize_vm`).
//! - **needs recreate**: Proxmox cannot change it: `unprivileged` (read-only after creation,
//!   `PVE::LXC::Config::update_pct_config`: `unable to modify read-only option`), a smaller root
//!   disk (`resize_vm`: `unable to shrink disk size`), another storage pool. Never forced; the
//!   way out is `--recreate CTID`.
//!
//! The ownership tag (`crate::ownership::TAG`) is never drift: it is kept whatever `tags` says.
//! What a CT was cloned from is not recorded by Proxmox for a full clone, so a changed clone
//! source is not detected.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::conffile::ConfFile;
use crate::config::ContainerSpec;
use crate::pct::{PctConfig, disk_size_bytes};
use crate::steps::clone::{is_gpu_line, settings_diff};

/// How a difference can be made to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Changed in place; takes effect at once, also on a running CT.
    InPlace,
    /// Changed in place; on a running CT it takes effect at the next start (`--restart`).
    InPlaceRestart,
    /// Cannot be changed in place: only `--recreate CTID` (destroy and rebuild) makes it match.
    Recreate,
}

impl Class {
    /// `in place`, `in place, needs restart`, `needs recreate`.
    pub fn label(self) -> &'static str {
        match self {
            Class::InPlace => "in place",
            Class::InPlaceRestart => "in place, needs restart",
            Class::Recreate => "needs recreate",
        }
    }
}

/// How one difference is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// `pct set CTID --key value`.
    Set(&'static str, String),
    /// `pct set CTID --delete key`.
    Delete(&'static str),
    /// `pct resize CTID rootfs <N>G`.
    Grow(u64),
    /// Run lxc-nvidia (the block has GPUs).
    Gpu,
    /// Remove the GPU passthrough lines from the conf's main section (the block has none).
    StripGpu,
    /// Nothing in place: `--recreate`.
    Recreate,
}

/// One difference between a CT and its block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// The block's field (`memory_mb`, `net0`, `storage_size_gb`, ...).
    pub field: &'static str,
    /// What the CT has (`""` when unset).
    pub old: String,
    /// What the block says.
    pub new: String,
    /// How it can be made to match.
    pub class: Class,
    /// How it is applied.
    #[serde(skip)]
    pub fix: Fix,
}

impl Diff {
    /// `memory_mb: 32768 -> 65536 (in place)`.
    pub fn line(&self) -> String {
        let show = |s: &str| {
            if s.is_empty() {
                "(unset)".to_string()
            } else {
                s.to_string()
            }
        };
        format!(
            "{}: {} -> {} ({})",
            self.field,
            show(&self.old),
            show(&self.new),
            self.class.label()
        )
    }
}

fn field_of(key: &str) -> &'static str {
    match key {
        "hostname" => "name",
        "memory" => "memory_mb",
        "cores" => "cores",
        "features" => "features",
        "net0" => "net0",
        "onboot" => "onboot",
        "startup" => "startup",
        "tags" => "tags",
        _ => "other",
    }
}

/// The settings of the conf's main section, as [`PctConfig`] (what `pct config --current`
/// prints; `lxc.*` entries kept in order).
pub fn current_config(conf: &ConfFile) -> PctConfig {
    PctConfig {
        settings: conf.settings().into_iter().collect(),
        lxc: conf.lxc_entries(),
    }
}

/// The GPU indices the conf's main section passes through (`/dev/nvidiaN` in `devN` entries or
/// raw lines).
pub fn conf_gpus(conf: &ConfFile, nvidia_majors: &[u32]) -> BTreeSet<u32> {
    conf.main_lines()
        .iter()
        .filter(|l| is_gpu_line(l, nvidia_majors))
        .flat_map(|l| {
            l.match_indices("/dev/nvidia")
                .filter_map(|(i, m)| {
                    let rest = &l[i + m.len()..];
                    let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    n.parse().ok()
                })
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether the conf's main section has any GPU passthrough line.
fn has_gpu_lines(conf: &ConfFile, nvidia_majors: &[u32]) -> bool {
    conf.main_lines()
        .iter()
        .any(|l| is_gpu_line(l, nvidia_majors))
}

fn join_gpus(g: impl IntoIterator<Item = u32>) -> String {
    let v: Vec<String> = g.into_iter().map(|g| g.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// Every difference between CT `conf` and its block `spec`, in a fixed order. `is_clone`: the
/// block is cloned from a template (then `unprivileged` is inherited, not the block's: a
/// difference is the validator's warning, not drift).
pub fn compare(
    spec: &ContainerSpec,
    conf: &ConfFile,
    is_clone: bool,
    nvidia_majors: &[u32],
) -> Vec<Diff> {
    let cur = current_config(conf);
    let mut out = Vec::new();
    let (set, delete) = settings_diff(spec, &cur);
    for (key, new) in set {
        let class = if key == "features" {
            Class::InPlaceRestart
        } else {
            Class::InPlace
        };
        out.push(Diff {
            field: field_of(key),
            old: cur.get(key).unwrap_or("").to_string(),
            new: new.clone(),
            class,
            fix: Fix::Set(key, new),
        });
    }
    for key in delete {
        out.push(Diff {
            field: field_of(key),
            old: cur.get(key).unwrap_or("").to_string(),
            new: String::new(),
            class: Class::InPlaceRestart,
            fix: Fix::Delete(key),
        });
    }
    // Root disk: `rootfs: <storage>:<volume>,size=32G`.
    if let Some(rootfs) = cur.get("rootfs") {
        let storage = rootfs.split(':').next().unwrap_or("");
        if storage != spec.storage_pool.as_str() {
            out.push(Diff {
                field: "storage_pool",
                old: storage.to_string(),
                new: spec.storage_pool.to_string(),
                class: Class::Recreate,
                fix: Fix::Recreate,
            });
        }
        if let Some(have) = disk_size_bytes(rootfs) {
            let want = spec.storage_size_gb.saturating_mul(1 << 30);
            if have != want {
                out.push(Diff {
                    field: "storage_size_gb",
                    old: fmt_gib(have),
                    new: spec.storage_size_gb.to_string(),
                    class: if have < want {
                        Class::InPlace
                    } else {
                        Class::Recreate
                    },
                    fix: if have < want {
                        Fix::Grow(spec.storage_size_gb)
                    } else {
                        Fix::Recreate
                    },
                });
            }
        }
    }
    let unpriv = cur.get("unprivileged") == Some("1");
    if !is_clone && unpriv != spec.unprivileged {
        out.push(Diff {
            field: "unprivileged",
            old: unpriv.to_string(),
            new: spec.unprivileged.to_string(),
            class: Class::Recreate,
            fix: Fix::Recreate,
        });
    }
    let want: BTreeSet<u32> = spec.gpus().into_iter().collect();
    let have = conf_gpus(conf, nvidia_majors);
    let stray = want.is_empty() && has_gpu_lines(conf, nvidia_majors);
    if want != have || stray {
        out.push(Diff {
            field: "gpu_assignment",
            old: join_gpus(have),
            new: join_gpus(want.iter().copied()),
            class: Class::InPlaceRestart,
            fix: if want.is_empty() {
                Fix::StripGpu
            } else {
                Fix::Gpu
            },
        });
    }
    out
}

/// `32` for whole GiB, else `31.5`.
fn fmt_gib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}", bytes >> 30)
    } else {
        format!("{:.1}", bytes as f64 / (1u64 << 30) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::tests::spec;
    use std::path::Path;

    const BASE: &str = "arch: amd64\ncores: 2\nfeatures: keyctl=1,nesting=1\nhostname: gpu\nmemory: 2048\nnet0: name=eth0,bridge=vmbr0,gw=10.0.0.1,hwaddr=52:54:00:AA:BB:CC,ip=10.0.0.200/24,type=veth\nrootfs: lxc-disks:vm-950-disk-0,size=32G\ntags: phoenix-managed\nunprivileged: 1\n";

    fn conf(text: &str) -> ConfFile {
        ConfFile::parse(Path::new("/x/950.conf"), text)
    }

    #[test]
    fn a_converged_ct_has_no_drift_and_pending_values_do_not_count() {
        let s = spec("gpu");
        assert_eq!(compare(&s, &conf(BASE), false, &[195]), vec![]);
        // A pending change is not the current value.
        let text =
            format!("{BASE}\n[pve:pending]\nmemory: 4096\n\n[configured-state]\nmemory: 1024\n");
        assert_eq!(compare(&s, &conf(&text), false, &[195]), vec![]);
    }

    #[test]
    fn each_difference_is_classified() {
        let mut s = spec("gpu");
        s.memory_mb = 4096;
        s.storage_size_gb = 64;
        s.onboot = Some(true);
        s.tags = Some("web;prod".parse().unwrap());
        let d = compare(&s, &conf(BASE), false, &[195]);
        let lines: Vec<String> = d.iter().map(Diff::line).collect();
        assert_eq!(
            lines,
            [
                "memory_mb: 2048 -> 4096 (in place)",
                "onboot: (unset) -> 1 (in place)",
                "tags: phoenix-managed -> web;prod;phoenix-managed (in place)",
                "storage_size_gb: 32 -> 64 (in place)",
            ]
        );
        assert_eq!(d[3].fix, Fix::Grow(64));
        // Smaller disk, other pool, privileged: recreate only.
        let mut s = spec("gpu");
        s.storage_size_gb = 16;
        s.storage_pool = "local-lvm".parse().unwrap();
        s.unprivileged = false;
        let d = compare(&s, &conf(BASE), false, &[195]);
        assert!(d.iter().all(|d| d.class == Class::Recreate), "{d:?}");
        assert_eq!(
            d.iter().map(|d| d.field).collect::<Vec<_>>(),
            ["storage_pool", "storage_size_gb", "unprivileged"]
        );
        // A clone inherits unprivileged: not drift.
        assert!(compare(&s, &conf(BASE), true, &[195]).len() == 2);
    }

    #[test]
    fn the_ownership_tag_is_never_drift_and_tag_order_does_not_count() {
        let mut s = spec("gpu");
        s.tags = Some("b;a".parse().unwrap());
        let text = BASE.replace("tags: phoenix-managed", "tags: a;b;phoenix-managed");
        assert_eq!(compare(&s, &conf(&text), false, &[195]), vec![]);
        s.tags = Some("".parse().unwrap());
        assert_eq!(compare(&s, &conf(BASE), false, &[195]), vec![]);
    }

    #[test]
    fn gpu_passthrough_is_compared_by_index() {
        let mut s = spec("gpu");
        s.gpu_assignment = Some("0,1".parse().unwrap());
        let one = format!("{BASE}dev0: /dev/nvidia0,mode=0666\ndev1: /dev/nvidiactl,mode=0666\n");
        let d = compare(&s, &conf(&one), false, &[195]);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].line(),
            "gpu_assignment: 0 -> 0,1 (in place, needs restart)"
        );
        assert_eq!(d[0].fix, Fix::Gpu);
        let both = format!("{one}dev2: /dev/nvidia1,mode=0666\n");
        assert_eq!(compare(&s, &conf(&both), false, &[195]), vec![]);
        s.gpu_assignment = None;
        let d = compare(&s, &conf(&both), false, &[195]);
        assert_eq!(d[0].fix, Fix::StripGpu);
    }
}
