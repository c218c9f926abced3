//! `exec`, `push`, `pull`: checks on the CT (exists, running, booted), then hand over to the
//! guest layer ([`crate::guest`]) with the rootfs and the devices bound into the CT.

use std::path::PathBuf;

use super::{Call, load_conf, rootfs_dir};
use crate::conf::{Conf, Section};
use crate::error::{PveError, PveResult};
use crate::guest::{self, DeviceBind, GuestCtx};
use crate::runtime;

/// Devices the CT sees: those of the config it was started with (`lxc.mount.entry: /dev/X
/// dev/X ...` and `devN`, whose node is the one made at the start under
/// `/var/lib/lxc/<vmid>/passthrough`), never lines added to the config file since.
pub fn devices(vmid: u32, started: &Section) -> Vec<DeviceBind> {
    let mut out = Vec::new();
    for (k, v) in &started.lxc {
        if k != "lxc.mount.entry" {
            continue;
        }
        let mut f = v.split_whitespace();
        let (Some(src), Some(dst)) = (f.next(), f.next()) else {
            continue;
        };
        if src.starts_with("/dev/") {
            out.push(DeviceBind {
                host_path: PathBuf::from(src),
                guest_path: PathBuf::from(format!("/{}", dst.trim_start_matches('/'))),
            });
        }
    }
    for (k, v) in &started.kv {
        if super::devices::is_dev_key(k)
            && let Some(p) = super::devices::parse_dev(v).and_then(|kv| kv.get("path").cloned())
        {
            out.push(DeviceBind {
                host_path: PathBuf::from(super::devices::passthrough_path(vmid, &p)),
                guest_path: PathBuf::from(p),
            });
        }
    }
    out
}

fn guest_ctx(call: &Call, conf: &Conf) -> PveResult<GuestCtx> {
    let vmid = call.vmid();
    let started = super::devices::started(call.host, vmid).unwrap_or_else(|| conf.main.clone());
    Ok(GuestCtx {
        host_root: call.host.root.clone(),
        vmid,
        rootfs: rootfs_dir(call.host, &conf.main)?,
        unprivileged: conf.main.get("unprivileged") == Some("1"),
        devices: devices(vmid, &started),
    })
}

pub fn exec(call: &Call) -> PveResult<i32> {
    let vmid = call.vmid();
    let conf = load_conf(call.host, vmid)?;
    // Works as soon as `start` returned: the init runs by then (PVE::LXC::vm_start waits for
    // RUNNING); the guest's boot continues in the background (systemctl is-system-running).
    if !runtime::is_running(call.host, vmid) {
        return Err(PveError::die(format!("container '{vmid}' not running!")));
    }
    if call.extra.is_empty() {
        return Err(PveError::die(
            "missing command at /usr/share/perl5/PVE/CLI/pct.pm line 205.",
        ));
    }
    let ctx = guest_ctx(call, &conf)?;
    Ok(guest::exec(&ctx, &call.extra))
}

/// `--user`/`--group`: a number, or a name looked up in the guest's `/etc/passwd` /
/// `/etc/group` (as pct resolves them inside the container).
fn ids(
    call: &Call,
    rootfs: &std::path::Path,
) -> PveResult<(Option<u32>, Option<u32>, Option<u32>)> {
    let id = |k: &str, db: &str| -> PveResult<Option<u32>> {
        let Some(v) = call.opt(k) else {
            return Ok(None);
        };
        if let Ok(n) = v.parse() {
            return Ok(Some(n));
        }
        let text = std::fs::read_to_string(rootfs.join(db)).unwrap_or_default();
        text.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[0] == v)
                    .then(|| f[2].parse().ok())
                    .flatten()
            })
            .map(Some)
            .ok_or_else(|| PveError::task_exit0(format!("no such {k} '{v}' in CT {}", call.vmid())))
    };
    let (uid, gid) = (id("user", "etc/passwd")?, id("group", "etc/group")?);
    let perms = match call.opt("perms") {
        None => None,
        Some(p) => {
            let parsed = match p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
                Some(h) => u32::from_str_radix(h, 16).ok(),
                None => u32::from_str_radix(p, 8).ok(),
            };
            Some(parsed.ok_or_else(|| PveError::die(format!("invalid value for --perms: '{p}'")))?)
        }
    };
    Ok((uid, gid, perms))
}

pub fn push(call: &Call) -> PveResult<i32> {
    let vmid = call.vmid();
    let conf = load_conf(call.host, vmid)?;
    if !runtime::is_running(call.host, vmid) {
        return Err(PveError::die("can only push files to a running CT"));
    }
    let rootfs = rootfs_dir(call.host, &conf.main)?;
    let (uid, gid, perms) = ids(call, &rootfs)?;
    let file = &call.pos["file"];
    let src = call.host.path(file);
    if !src.is_file() {
        return Err(PveError::task_exit0(format!(
            "failed to open {file} for reading"
        )));
    }
    let ctx = guest_ctx(call, &conf)?;
    guest::push(&ctx, &src, &call.pos["destination"], uid, gid, perms)
        .map_err(|e| PveError::task_exit0(format!("{e:#}")))?;
    Ok(0)
}

pub fn pull(call: &Call) -> PveResult<i32> {
    let vmid = call.vmid();
    let conf = load_conf(call.host, vmid)?;
    if !runtime::is_running(call.host, vmid) {
        return Err(PveError::die(
            "can only pull files from a running VM at /usr/share/perl5/PVE/CLI/pct.pm line 457.",
        ));
    }
    let rootfs = rootfs_dir(call.host, &conf.main)?;
    let (uid, gid, perms) = ids(call, &rootfs)?;
    let dest = call.host.path(&call.pos["destination"]);
    let ctx = guest_ctx(call, &conf)?;
    guest::pull(&ctx, &call.pos["path"], &dest, uid, gid, perms)
        .map_err(|e| PveError::task_exit0(format!("{e:#}")))?;
    Ok(0)
}
