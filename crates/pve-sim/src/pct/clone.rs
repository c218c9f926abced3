//! `pct clone`: full (copy of the current state or of a snapshot's frozen copy) and linked
//! (from a template's base volume) clones, with `lock: disk` on the source and
//! `lock: create` on the target for the whole copy, as pve-container does.

use std::fs;

use super::create::{alloc_volume, free_volume};
use super::{
    Call, check_lock, check_vmid_free, load_conf, lock_host, normalize_net, parse_mp, print_mp,
    save_conf,
};
use crate::conf::{Conf, Section};
use crate::error::{PveError, PveResult};
use crate::host::copy_tree;
use crate::storage::{self, Feature};
use crate::{latency, runtime, schema};

pub fn clone(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    let newid: u32 = call.pos["newid"].parse().expect("validated");
    let snapname = call.opt("snapname").map(str::to_string);
    if let Some(t) = call.opt("target")
        && t != host.node()
    {
        return Err(PveError::die(format!("no such cluster node '{t}'")));
    }

    // --- checks and locks before the task
    let (src, full) = {
        let _g = super::lock_cts(host, &[vmid, newid])?;
        let mut conf = load_conf(host, vmid)?;
        // src/PVE/API2/LXC.pm `clone_vm`: `set_lock($vmid, 'disk')` (check_lock), then
        // `create_and_lock_config($newid)`, and only then the snapshot is looked up.
        check_lock(&conf)?;
        check_vmid_free(host, newid)?;
        let mut src: Section = match &snapname {
            Some(s) => conf
                .snapshots
                .get(s)
                .cloned()
                .ok_or_else(|| PveError::die(format!("snapshot '{s}' does not exist")))?,
            None => conf.main.clone(),
        };
        // `next if $opt =~ m/^unused\d+$/`: unused volumes stay with the source.
        src.kv
            .retain(|k, _| schema::split_numbered(k).is_none_or(|(b, _)| b != "unused"));
        let full = match call.opt("full") {
            Some(v) => v == "1",
            None => !conf.is_template(),
        };
        if call.opt("storage").is_some() && !full {
            return Err(PveError::die(
                "parameter 'storage' not allowed for linked clones",
            ));
        }
        if full && snapname.is_none() && runtime::is_running(host, vmid) {
            return Err(PveError::die(if call.major() >= 9 {
                "Full clone of a running container is only possible from a snapshot"
            } else {
                "Cannot do full clones on a running container without snapshots"
            }));
        }
        for (k, v) in &src.kv {
            if k == "rootfs" || schema::split_numbered(k).is_some_and(|(b, _)| b == "mp") {
                let kv = parse_mp(k, v).unwrap_or_default();
                let vol = kv.get("volume").cloned().unwrap_or_default();
                if vol.starts_with("/dev/") {
                    return Err(PveError::die(format!(
                        "unable to clone mountpoint '{k}' (type device)"
                    )));
                }
                if vol.starts_with('/') {
                    return Err(PveError::die(format!(
                        "unable to clone mountpoint '{k}' (type bind)"
                    )));
                }
                if !full {
                    let (sid, name) = storage::parse_volid(&vol).ok_or_else(|| {
                        PveError::die(format!("unable to parse volume ID '{vol}'"))
                    })?;
                    let st = storage::find(host, sid).map_err(PveError::die)?;
                    if !storage::has_feature(&st, name, snapname.as_deref(), Feature::Clone) {
                        return Err(PveError::die(format!(
                            "Linked clone feature for '{vol}' is not available"
                        )));
                    }
                }
            }
        }
        if let Some(sid) = call.opt("storage") {
            let st = storage::find(host, sid).map_err(PveError::die)?;
            if !st.has_content("rootdir") {
                return Err(PveError::die(format!(
                    "storage '{sid}' does not support container directories"
                )));
            }
        }
        conf.main.set("lock", "disk");
        save_conf(host, vmid, &conf)?;
        let mut target = Conf::default();
        target.main.set("lock", "create");
        save_conf(host, newid, &target)?;
        (src, full)
    };

    // --- the task (no host lock: other commands may run meanwhile)
    let mut made: Vec<String> = Vec::new();
    let res = clone_task(
        call,
        vmid,
        newid,
        &src,
        full,
        snapname.as_deref(),
        &mut made,
    );
    let _g = super::lock_cts(host, &[vmid, newid])?;
    // Source unlocked in every case.
    if let Ok(mut c) = load_conf(host, vmid)
        && c.lock() == Some("disk")
    {
        c.main.kv.remove("lock");
        save_conf(host, vmid, &c)?;
    }
    match res {
        Ok(conf) => {
            save_conf(host, newid, &conf)?;
            Ok(0)
        }
        Err(e) => {
            for v in &made {
                free_volume(host, v);
            }
            let _ = fs::remove_file(host.conf_path(newid));
            let msg = match e {
                PveError::Fail { msg, .. } => msg,
                other => other.render("").0,
            };
            Err(PveError::die(format!(
                "clone failed: {}",
                msg.trim_end().replace('\n', " ")
            )))
        }
    }
}

fn clone_task(
    call: &Call,
    vmid: u32,
    newid: u32,
    src: &Section,
    full: bool,
    snapname: Option<&str>,
    made: &mut Vec<String>,
) -> PveResult<Conf> {
    let host = call.host;
    if call.major() >= 9 {
        println!("creating a clone of container {vmid} with ID {newid}");
    }
    latency::sleep(host, "clone");
    // clone_vm's copy runs with `local $SIG{INT} = ... sub { die "interrupted by signal\n" }`.
    crate::task::check_msg("interrupted by signal")?;
    let mut conf = Conf::default();
    let m = &mut conf.main;
    m.kv = src.kv.clone();
    m.lxc = src.lxc.clone();
    m.description = src.description.clone();
    for k in [
        "snapshots",
        "parent",
        "snaptime",
        "snapstate",
        "pending",
        "template",
        "lock",
    ] {
        m.kv.remove(k);
    }
    let keys: Vec<String> = m.kv.keys().cloned().collect();
    for k in keys {
        if schema::split_numbered(&k).is_some_and(|(b, _)| b == "net") {
            let v = m.kv[&k].clone();
            // Drop the old hwaddr: the clone gets a new MAC per interface.
            let stripped: Vec<&str> = v.split(',').filter(|p| !p.starts_with("hwaddr=")).collect();
            m.set(&k, normalize_net(&stripped.join(","))?);
        }
        if k == "rootfs" || schema::split_numbered(&k).is_some_and(|(b, _)| b == "mp") {
            let mut kv = parse_mp(&k, &m.kv[&k]).unwrap_or_default();
            let vol = kv.get("volume").cloned().unwrap_or_default();
            let (sid, name) = storage::parse_volid(&vol)
                .ok_or_else(|| PveError::die(format!("unable to parse volume ID '{vol}'")))?;
            let st = storage::find(host, sid).map_err(PveError::die)?;
            let size = storage::read_meta(host, sid, name)
                .map(|m| m.size)
                .or_else(|| kv.get("size").and_then(|s| storage::parse_size(s)))
                .unwrap_or(4 << 30);
            let from = match snapname {
                Some(s) => storage::snap_dir(host, sid, name, s),
                None => storage::vol_dir(host, sid, name),
            };
            let new_volid = if full {
                let tst = match call.opt("storage") {
                    Some(t) => storage::find(host, t).map_err(PveError::die)?,
                    None => st.clone(),
                };
                println!("create full clone of mountpoint {k} ({vol})");
                let a = {
                    let _g = lock_host(host)?;
                    alloc_volume(host, &tst, newid, size, None)?
                };
                let new_volid = format!("{}:{}", a.storeid, a.volname);
                made.push(new_volid.clone());
                let dst = storage::vol_dir(host, &a.storeid, &a.volname);
                let _ = fs::remove_dir(&dst);
                copy_tree(&from, &dst).map_err(PveError::die)?;
                latency::sleep_copy(host, &dst);
                crate::task::check_msg("interrupted by signal")?;
                new_volid
            } else {
                println!("create linked clone of mount point {k} ({vol})");
                let origin = format!("{}@__base__", storage::vol_name(name));
                let a = {
                    let _g = lock_host(host)?;
                    alloc_volume(host, &st, newid, size, Some(origin))?
                };
                let new_volid = format!("{}:{}", a.storeid, a.volname);
                made.push(new_volid.clone());
                let dst = storage::vol_dir(host, &a.storeid, &a.volname);
                let _ = fs::remove_dir(&dst);
                copy_tree(&from, &dst).map_err(PveError::die)?;
                new_volid
            };
            kv.insert("volume".into(), new_volid);
            kv.insert("size".into(), storage::size_string(size));
            m.set(&k, print_mp(&kv));
        }
    }
    if let Some(h) = call.opt("hostname") {
        m.set("hostname", h);
    }
    if let Some(d) = call.opt("description") {
        m.description = if d.ends_with('\n') {
            d.to_string()
        } else {
            format!("{d}\n")
        };
    }
    Ok(conf)
}
