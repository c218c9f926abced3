//! Power state: `start`, `stop`, `shutdown`, `reboot`, with Proxmox's messages; starting
//! applies pending changes and arms the boot latency for `exec`.

use super::{Call, load_conf, lock_host, save_conf};
use crate::conf::Conf;
use crate::error::{PveError, PveResult};
use crate::host::now_ms;
use crate::runtime::{self, Runtime};
use crate::{latency, schema};

/// Merge `[pve:pending]` into the main section (start/reboot).
pub fn apply_pending(conf: &mut Conf) {
    let pending = std::mem::take(&mut conf.pending);
    if let Some(d) = pending.get("delete") {
        for k in d.split(',') {
            if k == "description" {
                conf.main.description.clear();
            }
            conf.main.kv.remove(k);
        }
    }
    for (k, v) in pending.kv {
        if k != "delete" {
            conf.main.kv.insert(k, v);
        }
    }
    if !pending.description.is_empty() {
        conf.main.description = pending.description;
    }
}

/// Start `vmid` (host lock taken here). `skiplock` skips the lock check.
pub fn do_start(call: &Call, vmid: u32, skiplock: bool) -> PveResult<()> {
    let host = call.host;
    let _g = lock_host(host)?;
    let mut conf = load_conf(host, vmid)?;
    if runtime::is_running(host, vmid) {
        return Err(PveError::die(format!("CT {vmid} already running")));
    }
    if conf.is_template() {
        return Err(PveError::die("you can't start a CT if it's a template"));
    }
    if !skiplock && conf.lock().is_some_and(|l| l != "mounted") {
        super::check_lock(&conf)?;
    }
    if !conf.pending.is_empty() {
        apply_pending(&mut conf);
        save_conf(host, vmid, &conf)?;
    }
    // devN paths must exist when the CT starts, as lxc-start needs them.
    for (k, v) in &conf.main.kv {
        if schema::split_numbered(k).is_some_and(|(b, _)| b == "dev") {
            let p = v.split(',').find_map(|p| {
                p.strip_prefix("path=")
                    .or(if p.starts_with('/') { Some(p) } else { None })
            });
            if let Some(p) = p
                && !host.path(p).exists()
            {
                return Err(PveError::die(format!(
                    "startup for container '{vmid}' failed: Device {p} does not exist"
                )));
            }
        }
    }
    // The guest side of booting: /run emptied, enabled units of the doubles active again.
    let rootfs = super::rootfs_dir(host, &conf.main)?;
    crate::guest::boot(&rootfs)
        .map_err(|e| PveError::die(format!("startup for container '{vmid}' failed: {e:#}")))?;
    let now = now_ms();
    let boot = latency::get(host, "boot");
    runtime::set_running(
        host,
        vmid,
        &Runtime {
            start_ms: now,
            boot_ready_ms: now + boot,
            pid: 100_000 + (vmid % 800_000),
        },
    )?;
    Ok(())
}

pub fn start(call: &Call) -> PveResult<i32> {
    do_start(call, call.vmid(), call.flag("skiplock"))?;
    Ok(0)
}

fn stop_common(call: &Call, check_lock: bool) -> PveResult<()> {
    let host = call.host;
    let vmid = call.vmid();
    let _g = lock_host(host)?;
    let conf = load_conf(host, vmid)?;
    if !runtime::is_running(host, vmid) {
        return Err(PveError::die(format!("CT {vmid} not running")));
    }
    if check_lock && conf.lock().is_some_and(|l| l != "mounted") {
        super::check_lock(&conf)?;
    }
    runtime::set_stopped(host, vmid)?;
    Ok(())
}

pub fn stop(call: &Call) -> PveResult<i32> {
    stop_common(call, !call.flag("skiplock"))?;
    Ok(0)
}

pub fn shutdown(call: &Call) -> PveResult<i32> {
    stop_common(call, true)?;
    Ok(0)
}

pub fn reboot(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    {
        let _g = lock_host(host)?;
        let conf = load_conf(host, vmid)?;
        if !runtime::is_running(host, vmid) {
            return Err(PveError::die(format!("VM {vmid} not running")));
        }
        super::check_lock(&conf)?;
        runtime::set_stopped(host, vmid)?;
    }
    do_start(call, vmid, false)?;
    Ok(0)
}
