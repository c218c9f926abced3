//! `pve-sim init`: lay out a directory as a Proxmox VE host (`simulator.md`, "Contract"):
//! identity, `etc/pve` with `storage.cfg` and the node's `lxc/` directory, GPU device nodes
//! and `/proc` files for the NVIDIA driver, and guest image tarballs at ostemplate paths.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::host::{Host, HostInfo, write_atomic};
use crate::storage::{Storage, StorageType};

#[derive(Debug, Clone)]
pub struct InitOpts {
    pub host_root: PathBuf,
    pub node: String,
    pub pve_version: String,
    pub storages: Vec<(String, StorageType)>,
    pub gpus: u32,
    pub nvidia_driver: String,
    pub ostemplates: Vec<String>,
    pub force: bool,
}

pub const USAGE: &str = "usage: pve-sim init --host-root DIR [--reference] [--node NAME] [--pve-version 8.4.1] [--storage ID:TYPE]... [--gpus N] [--nvidia-driver VERSION] [--ostemplate PATH]... [--force]";

/// The OS template path the upstream reference configuration names.
pub const REFERENCE_OSTEMPLATE: &str =
    "/fastData/shared-iso/template/cache/ubuntu-24.04-standard_24.04-2_amd64.tar.zst";

/// `--reference`: the host the upstream reference configuration needs (storage `lxc-disks` as
/// zfspool, 2 GPUs, driver 580.76.05, its Ubuntu 24.04 ostemplate); later options add to it.
fn reference_args() -> Vec<String> {
    [
        "--storage",
        "lxc-disks:zfspool",
        "--gpus",
        "2",
        "--nvidia-driver",
        "580.76.05",
        "--ostemplate",
        REFERENCE_OSTEMPLATE,
    ]
    .map(String::from)
    .to_vec()
}

/// Parse `pve-sim init` arguments (after `init`).
pub fn parse_args(args: &[String]) -> Result<InitOpts> {
    let mut o = InitOpts {
        host_root: PathBuf::new(),
        node: "pve".into(),
        pve_version: "8.4.1".into(),
        storages: Vec::new(),
        gpus: 0,
        nvidia_driver: "580.76.05".into(),
        ostemplates: Vec::new(),
        force: false,
    };
    let mut root = None;
    let args: Vec<String> = args
        .iter()
        .flat_map(|a| {
            if a == "--reference" {
                reference_args()
            } else {
                vec![a.clone()]
            }
        })
        .collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        if name == "--force" {
            o.force = true;
            continue;
        }
        let mut val = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value\n{USAGE}")),
            }
        };
        match name {
            "--host-root" => root = Some(PathBuf::from(val()?)),
            "--node" => {
                let v = val()?;
                if crate::schema::check_named_format("pve-node", &v).is_err() {
                    bail!("--node '{v}' is not a valid node name");
                }
                o.node = v;
            }
            "--pve-version" => {
                let v = val()?;
                let ok =
                    v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok());
                let major = v.split('.').next().unwrap_or("");
                if !ok || !(major == "8" || major == "9") {
                    bail!("--pve-version '{v}' must be 8.x.y or 9.x.y");
                }
                o.pve_version = v;
            }
            "--storage" => {
                let v = val()?;
                let Some((id, ty)) = v.split_once(':') else {
                    bail!("--storage '{v}' must be ID:TYPE (TYPE zfspool|dir|lvmthin)");
                };
                let Some(t) = StorageType::parse(ty) else {
                    bail!("--storage '{v}': unknown type '{ty}' (zfspool|dir|lvmthin)");
                };
                if !crate::schema::is_storage_id(id) {
                    bail!("--storage '{v}': invalid storage ID '{id}'");
                }
                o.storages.push((id.to_string(), t));
            }
            "--gpus" => {
                let v = val()?;
                o.gpus = v
                    .parse()
                    .with_context(|| format!("--gpus '{v}' is not a number"))?;
                if o.gpus > 16 {
                    bail!("--gpus {v}: at most 16");
                }
            }
            "--nvidia-driver" => {
                let v = val()?;
                if !is_driver_version(&v) {
                    bail!("--nvidia-driver '{v}' is not a driver version like 580.76.05");
                }
                o.nvidia_driver = v;
            }
            "--ostemplate" => {
                let v = val()?;
                if !v.starts_with('/') || v.contains("/../") {
                    bail!("--ostemplate '{v}' must be a host-absolute path");
                }
                o.ostemplates.push(v);
            }
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    // Without --host-root the simulator's usual PHOENIX_HOST_ROOT applies (never `/`).
    let root = match root {
        Some(r) => r,
        None => crate::host::root_from_env().map_err(|e| anyhow::anyhow!("{e}\n{USAGE}"))?,
    };
    if root == Path::new("/") || root.as_os_str().is_empty() {
        bail!("--host-root must not be `/`");
    }
    o.host_root = root;
    Ok(o)
}

fn default_storages(o: &InitOpts) -> Vec<Storage> {
    let mut v = vec![
        Storage {
            id: "local".into(),
            ty: StorageType::Dir,
            content: vec!["iso".into(), "vztmpl".into(), "backup".into()],
            props: vec![("path".into(), "/var/lib/vz".into())],
            disabled: false,
        },
        Storage {
            id: "local-zfs".into(),
            ty: StorageType::ZfsPool,
            content: vec!["images".into(), "rootdir".into()],
            props: vec![
                ("pool".into(), "rpool/data".into()),
                ("sparse".into(), "1".into()),
            ],
            disabled: false,
        },
    ];
    for (id, ty) in &o.storages {
        v.retain(|s| &s.id != id);
        let props = match ty {
            StorageType::ZfsPool => vec![
                ("pool".into(), format!("rpool/{id}")),
                ("sparse".into(), "1".into()),
            ],
            StorageType::Dir => vec![("path".into(), format!("/mnt/pve/{id}"))],
            StorageType::LvmThin => vec![
                ("thinpool".into(), id.clone()),
                ("vgname".into(), "pve".into()),
            ],
        };
        v.push(Storage {
            id: id.clone(),
            ty: *ty,
            content: vec!["images".into(), "rootdir".into()],
            props,
            disabled: false,
        });
    }
    v
}

fn kernel_for(major: u32) -> &'static str {
    if major >= 9 {
        "6.14.8-2-pve"
    } else {
        "6.8.12-4-pve"
    }
}

/// Lay out the host. Refuses an initialised root unless `force` (which starts afresh).
pub fn run(o: &InitOpts) -> Result<()> {
    let root = &o.host_root;
    let info_path = Host::info_path(root);
    if info_path.exists() {
        if !o.force {
            bail!(
                "{} is already a simulated PVE host; use --force to re-initialise it (its containers are lost)",
                root.display()
            );
        }
        for d in [
            "etc/pve",
            "etc/pve-sim",
            "var/lib/pve-sim",
            "run/pve-sim",
            "var/log/pve-sim",
            "dev",
            "proc",
        ] {
            crate::host::remove_tree(&root.join(d)).with_context(|| format!("removing {d}"))?;
        }
    }
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let major: u32 = o
        .pve_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(8);
    let info = HostInfo {
        node: o.node.clone(),
        pve_version: o.pve_version.clone(),
        kernel: kernel_for(major).into(),
    };
    let host = Host {
        root: root.clone(),
        info: info.clone(),
    };

    for d in [
        host.lxc_dir(),
        host.qemu_dir(),
        host.run_dir(),
        host.sim_etc(),
        root.join("var/log/pve-sim"),
        root.join("var/lib/vz/template/cache"),
        root.join("var/lib/pve-sim/storage"),
        root.join("run/lock"),
        root.join("tmp"),
    ] {
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let node_rel = format!("nodes/{}", o.node);
    for (link, target) in [
        ("etc/pve/lxc", format!("{node_rel}/lxc")),
        ("etc/pve/qemu-server", format!("{node_rel}/qemu-server")),
        ("etc/pve/local", node_rel.clone()),
    ] {
        let l = root.join(link);
        let _ = fs::remove_file(&l);
        std::os::unix::fs::symlink(&target, &l)
            .with_context(|| format!("symlink {}", l.display()))?;
    }
    let storages = default_storages(o);
    let mut cfg = String::new();
    for (i, s) in storages.iter().enumerate() {
        if i > 0 {
            cfg.push('\n');
        }
        cfg.push_str(&s.to_cfg());
    }
    write_atomic(&host.storage_cfg(), cfg.as_bytes())?;
    for s in &storages {
        fs::create_dir_all(crate::storage::store_dir(&host, &s.id).join("meta"))?;
    }
    write_atomic(
        &root.join("etc/pve/.version"),
        format!("{{\"version\":1,\"pve-manager\":\"{}\"}}\n", o.pve_version).as_bytes(),
    )?;
    write_atomic(
        &root.join("etc/hostname"),
        format!("{}\n", o.node).as_bytes(),
    )?;

    // Devices and /proc: regular files stand in for device nodes.
    fs::create_dir_all(root.join("dev/net"))?;
    write_atomic(&root.join("dev/net/tun"), b"")?;
    let mut devices = String::from(
        "Character devices:\n  1 mem\n  4 /dev/vc/0\n  4 tty\n  4 ttyS\n  5 /dev/tty\n  5 /dev/console\n  5 /dev/ptmx\n  7 vcs\n 10 misc\n 13 input\n 29 fb\n 89 i2c\n128 ptm\n136 pts\n180 usb\n189 usb_device\n",
    );
    if o.gpus > 0 {
        for i in 0..o.gpus {
            write_atomic(&root.join(format!("dev/nvidia{i}")), b"")?;
        }
        for n in [
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-uvm-tools",
            "nvidia-modeset",
        ] {
            write_atomic(&root.join("dev").join(n), b"")?;
        }
        fs::create_dir_all(root.join("dev/nvidia-caps"))?;
        write_atomic(&root.join("dev/nvidia-caps/nvidia-cap1"), b"")?;
        write_atomic(&root.join("dev/nvidia-caps/nvidia-cap2"), b"")?;
        devices.push_str("195 nvidia-frontend\n");
    }
    devices.push_str("226 drm\n");
    if o.gpus > 0 {
        // Dynamic majors: deliberately not the 243 that old guides hard-code.
        devices.push_str(
            "507 nvidia-nvlink\n508 nvidia-caps-imex-channels\n510 nvidia-uvm\n511 nvidia-caps\n",
        );
    }
    devices.push_str("\nBlock devices:\n  7 loop\n  8 sd\n 65 sd\n253 device-mapper\n259 blkext\n");
    write_atomic(&root.join("proc/devices"), devices.as_bytes())?;
    if o.gpus > 0 {
        let v = format!(
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  {}  Fri Aug  1 12:30:51 UTC 2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14+deb12u1) \n",
            o.nvidia_driver
        );
        write_atomic(&root.join("proc/driver/nvidia/version"), v.as_bytes())?;
    }
    for t in &o.ostemplates {
        let p = host.path(t);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d)?;
        }
        crate::guest::write_ostemplate(&p).with_context(|| format!("writing ostemplate {t}"))?;
    }
    // Written last: its presence marks a complete host.
    write_atomic(&info_path, serde_json::to_string_pretty(&info)?.as_bytes())?;
    Ok(())
}

/// Commit hash shown by `pveversion` for a version (stable per version, like a build).
pub fn manager_hash(version: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in version.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn is_driver_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}
