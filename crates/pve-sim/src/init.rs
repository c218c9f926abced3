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

/// `pve-sim init` arguments. Our own tool, so clap's messages are fine here (the `pct`/`pvesm`
/// front ends keep Proxmox's own parsing and messages).
#[derive(Debug, clap::Parser)]
#[command(name = "pve-sim init", args_override_self = true)]
struct InitArgs {
    /// The simulated host's `/` (default: `PHOENIX_HOST_ROOT`; never `/`).
    #[arg(long)]
    host_root: Option<PathBuf>,
    /// The host the upstream reference configuration needs: storage `lxc-disks` (zfspool), 2
    /// GPUs, driver 580.76.05, its Ubuntu 24.04 ostemplate. Explicit options add to it
    /// (`--storage`, `--ostemplate`) or replace its values (`--gpus`, `--nvidia-driver`).
    #[arg(long)]
    reference: bool,
    /// Node name.
    #[arg(long, default_value = "pve", value_parser = parse_node)]
    node: String,
    /// Proxmox VE release, 8.x.y or 9.x.y.
    #[arg(long, default_value = "8.4.1", value_parser = parse_pve_version)]
    pve_version: String,
    /// A storage `ID:TYPE` (TYPE zfspool|dir|lvmthin); repeatable.
    #[arg(long = "storage", value_name = "ID:TYPE", value_parser = parse_storage)]
    storages: Vec<(String, StorageType)>,
    /// Number of NVIDIA GPUs (device nodes and /proc files), at most 16.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=16))]
    gpus: Option<u32>,
    /// Host NVIDIA driver version, like 580.76.05.
    #[arg(long, value_parser = parse_driver)]
    nvidia_driver: Option<String>,
    /// Place a guest image tarball at this host-absolute path; repeatable.
    #[arg(long = "ostemplate", value_name = "PATH", value_parser = parse_ostemplate)]
    ostemplates: Vec<String>,
    /// Re-initialise an existing simulated host (its containers are lost).
    #[arg(long)]
    force: bool,
}

fn parse_node(v: &str) -> std::result::Result<String, String> {
    crate::schema::check_named_format("pve-node", v)
        .map(|_| v.to_string())
        .map_err(|_| format!("'{v}' is not a valid node name"))
}

fn parse_pve_version(v: &str) -> std::result::Result<String, String> {
    let ok = v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok());
    let major = v.split('.').next().unwrap_or("");
    if ok && (major == "8" || major == "9") {
        Ok(v.to_string())
    } else {
        Err(format!("'{v}' must be 8.x.y or 9.x.y"))
    }
}

fn parse_storage(v: &str) -> std::result::Result<(String, StorageType), String> {
    let Some((id, ty)) = v.split_once(':') else {
        return Err(format!("'{v}' must be ID:TYPE (TYPE zfspool|dir|lvmthin)"));
    };
    let Some(t) = StorageType::parse(ty) else {
        return Err(format!("'{v}': unknown type '{ty}' (zfspool|dir|lvmthin)"));
    };
    if !crate::schema::is_storage_id(id) {
        return Err(format!("'{v}': invalid storage ID '{id}'"));
    }
    Ok((id.to_string(), t))
}

fn parse_driver(v: &str) -> std::result::Result<String, String> {
    if is_driver_version(v) {
        Ok(v.to_string())
    } else {
        Err(format!("'{v}' is not a driver version like 580.76.05"))
    }
}

fn parse_ostemplate(v: &str) -> std::result::Result<String, String> {
    if v.starts_with('/') && !v.contains("/../") {
        Ok(v.to_string())
    } else {
        Err(format!("'{v}' must be a host-absolute path"))
    }
}

/// Parse `pve-sim init` arguments (after `init`).
pub fn parse_args(args: &[String]) -> Result<InitOpts> {
    use clap::Parser;
    let a = InitArgs::try_parse_from(
        std::iter::once("pve-sim init".to_string()).chain(args.iter().cloned()),
    )
    .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim_end()))?;
    let mut storages = Vec::new();
    let mut ostemplates = Vec::new();
    if a.reference {
        storages.push(("lxc-disks".to_string(), StorageType::ZfsPool));
        ostemplates.push(REFERENCE_OSTEMPLATE.to_string());
    }
    storages.extend(a.storages);
    ostemplates.extend(a.ostemplates);
    // Without --host-root the simulator's usual PHOENIX_HOST_ROOT applies (never `/`).
    let root = match a.host_root {
        Some(r) => r,
        None => crate::host::root_from_env().map_err(|e| anyhow::anyhow!("{e}\n{USAGE}"))?,
    };
    if root == Path::new("/") || root.as_os_str().is_empty() {
        bail!("--host-root must not be `/`");
    }
    Ok(InitOpts {
        host_root: root,
        node: a.node,
        pve_version: a.pve_version,
        storages,
        gpus: a.gpus.unwrap_or(if a.reference { 2 } else { 0 }),
        nvidia_driver: a.nvidia_driver.unwrap_or_else(|| "580.76.05".into()),
        ostemplates,
        force: a.force,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<InitOpts> {
        parse_args(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn reference_is_a_base_that_explicit_options_extend_or_replace() {
        let o = parse(&["--host-root", "/tmp/h", "--reference"]).unwrap();
        assert_eq!(o.gpus, 2);
        assert_eq!(
            o.storages,
            [("lxc-disks".to_string(), StorageType::ZfsPool)]
        );
        assert_eq!(o.ostemplates, [REFERENCE_OSTEMPLATE]);
        let o = parse(&[
            "--host-root=/tmp/h",
            "--reference",
            "--gpus",
            "1",
            "--storage",
            "local-lvm:lvmthin",
            "--pve-version",
            "9.1.1",
        ])
        .unwrap();
        assert_eq!(o.gpus, 1);
        assert_eq!(o.storages.len(), 2);
        assert_eq!(o.pve_version, "9.1.1");
        let o = parse(&["--host-root", "/tmp/h"]).unwrap();
        assert_eq!((o.gpus, o.node.as_str(), o.force), (0, "pve", false));
    }

    #[test]
    fn bad_values_and_unknown_arguments_are_refused_naming_them() {
        for (args, want) in [
            (&["--host-root", "/tmp/h", "--gpus", "17"][..], "17"),
            (
                &["--host-root", "/tmp/h", "--pve-version", "7.4.1"],
                "7.4.1",
            ),
            (&["--host-root", "/tmp/h", "--storage", "x:nfs"], "nfs"),
            (
                &["--host-root", "/tmp/h", "--ostemplate", "rel/t.tar"],
                "rel/t.tar",
            ),
            (&["--host-root", "/tmp/h", "--nvidia-driver", "5x"], "5x"),
            (&["--host-root", "/tmp/h", "--bogus"], "--bogus"),
            (&["--host-root", "/"], "must not be `/`"),
        ] {
            let e = format!("{:#}", parse(args).unwrap_err());
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
