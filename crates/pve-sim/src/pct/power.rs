//! Power state: `start`, `stop`, `shutdown`, `reboot`, with Proxmox's messages; starting
//! applies pending changes and arms the boot latency for `exec`.

use super::{Call, load_conf, save_conf};
use crate::conf::Conf;
use crate::error::{PveError, PveResult};
use crate::host::now_ms;
use crate::latency;
use crate::runtime::{self, Runtime};

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
    let _g = super::lock_ct(host, vmid)?;
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
    // Bind-mounted host devices must exist unless the entry says `optional`, as lxc-start
    // refuses to mount a missing source.
    for (k, v) in &conf.main.lxc {
        let f: Vec<&str> = v.split_whitespace().collect();
        if k == "lxc.mount.entry"
            && f.len() >= 4
            && f[0].starts_with('/')
            && !f[3].split(',').any(|o| o == "optional")
            && !host.path(f[0]).exists()
        {
            println!(
                "lxc-start: {vmid}: ../src/lxc/conf.c: mount_entry: 2413 No such file or directory - Failed to mount \"{}\" onto \"/usr/lib/x86_64-linux-gnu/lxc/rootfs/{}\"",
                f[0], f[1]
            );
            return Err(PveError::die(format!(
                "startup for container '{vmid}' failed"
            )));
        }
    }
    // update_lxc_config (called by vm_start before lxc-start, outside its eval): every devN
    // must name an existing device; its node is created with the entry's mode/uid/gid. The
    // config the CT runs with from now on is this one (raw lxc lines, devN, features).
    super::devices::start_config(host, vmid, &conf.main)?;
    // The guest side of booting: /run emptied, enabled units of the doubles active again.
    let rootfs = super::rootfs_dir(host, &conf.main)?;
    crate::guest::boot(&rootfs)
        .map_err(|e| PveError::die(format!("startup for container '{vmid}' failed: {e:#}")))?;
    // Proxmox's container setup writes the hostname into the guest at every start.
    let hostname = conf
        .main
        .get("hostname")
        .map(str::to_string)
        .unwrap_or_else(|| format!("CT{vmid}"));
    crate::guest::set_hostname(&rootfs, &hostname)
        .map_err(|e| PveError::die(format!("startup for container '{vmid}' failed: {e:#}")))?;
    // `pct start` returns once the container's init runs (`lxc-start` + `lxc-wait -s
    // RUNNING`, PVE::LXC::vm_start), so `exec` works at once; the guest's own boot (systemd
    // reaching `running`, DHCP/DNS) takes the `boot` and `network` latencies from here on.
    let now = now_ms();
    let rt = Runtime {
        start_ms: now,
        boot_ready_ms: now + latency::get(host, "boot"),
        network_ready_ms: now + latency::get(host, "network"),
        pid: 100_000 + (vmid % 800_000),
    };
    crate::guest::set_boot_timers(&rootfs, rt.boot_ready_ms, rt.network_ready_ms)
        .map_err(|e| PveError::die(format!("startup for container '{vmid}' failed: {e:#}")))?;
    runtime::set_running(host, vmid, &rt)?;
    Ok(())
}

pub fn start(call: &Call) -> PveResult<i32> {
    do_start(call, call.vmid(), call.flag("skiplock"))?;
    Ok(0)
}

fn stop_common(call: &Call, check_lock: bool) -> PveResult<()> {
    let host = call.host;
    let vmid = call.vmid();
    let _g = super::lock_ct(host, vmid)?;
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

/// Clean shutdown. The `shutdown` latency is how long the guest takes to stop: longer than
/// `--timeout` (seconds, default 60) fails with `container did not stop` and leaves it
/// running, unless `--forceStop 1` kills it after the timeout.
pub fn shutdown(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    // src/PVE/API2/LXC/Status.pm `vm_shutdown`: under `lock_config` for the whole shutdown,
    // `check_lock` with no exemption (unlike start/stop, `mounted` is not exempt).
    let _conf_lock = super::lock_conf_only(host, vmid)?;
    {
        let _g = super::lock_host(host)?;
        let conf = load_conf(host, vmid)?;
        if !runtime::is_running(host, vmid) {
            return Err(PveError::die(format!("CT {vmid} not running")));
        }
        super::check_lock(&conf)?;
    }
    let takes = latency::get(host, "shutdown");
    let timeout_ms = call
        .opt("timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(60)
        * 1000;
    latency::sleep_ms(takes.min(timeout_ms));
    crate::task::check()?;
    if takes > timeout_ms && !call.flag("forceStop") {
        return Err(PveError::die("container did not stop"));
    }
    let _g = super::lock_host(host)?;
    runtime::set_stopped(host, vmid)?;
    Ok(0)
}

pub fn reboot(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    {
        let _g = super::lock_ct(host, vmid)?;
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
