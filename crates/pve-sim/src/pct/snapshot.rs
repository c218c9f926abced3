//! Snapshots: `snapshot` (freezes every volume by copying it), `listsnapshot` (the tree
//! layout), `delsnapshot` (re-parenting), `rollback` (zfspool: newest only; restores the
//! frozen copies and the snapshot's config).

use std::collections::BTreeMap;

use super::{Call, check_lock, load_conf, save_conf, volumes};
use crate::conf::Section;
use crate::error::{PveError, PveResult};
use crate::host::{copy_tree, now_ms, remove_tree};
use crate::storage::{self, Feature, StorageType};
use crate::{latency, runtime, schema};

fn snap_feature_ok(call: &Call, sect: &Section) -> PveResult<bool> {
    for (k, v) in &sect.kv {
        if k == "rootfs" || schema::split_numbered(k).is_some_and(|(b, _)| b == "mp") {
            let kv = super::parse_mp(k, v).unwrap_or_default();
            let vol = kv.get("volume").cloned().unwrap_or_default();
            if vol.starts_with('/') {
                return Ok(false);
            }
            let Some((sid, name)) = storage::parse_volid(&vol) else {
                return Ok(false);
            };
            let st = storage::find(call.host, sid).map_err(PveError::die)?;
            if !storage::has_feature(&st, name, None, Feature::Snapshot) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

pub fn snapshot(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    let snap = call.pos["snapname"].clone();
    if snap == "current" || snap == "vzdump" {
        return Err(PveError::die(format!(
            "unable to use snapshot name '{snap}' (reserved name)"
        )));
    }
    let vols = {
        let _g = super::lock_ct(host, vmid)?;
        let mut conf = load_conf(host, vmid)?;
        if conf.is_template() {
            return Err(PveError::die(
                "you can't take a snapshot if it's a template",
            ));
        }
        check_lock(&conf)?;
        if conf.snapshots.contains_key(&snap) {
            return Err(PveError::die(format!(
                "snapshot name '{snap}' already used"
            )));
        }
        if !snap_feature_ok(call, &conf.main)? {
            return Err(PveError::die("snapshot feature is not available"));
        }
        conf.main.set("lock", "snapshot");
        let mut s = Section::default();
        s.set("snapstate", "prepare");
        conf.snapshots.insert(snap.clone(), s);
        save_conf(host, vmid, &conf)?;
        volumes(&conf.main)
    };
    latency::sleep(host, "snapshot");
    // AbstractConfig.pm `snapshot_create`: an error (an interrupt too) warns `snapshot create
    // failed: starting cleanup`, deletes the half-made snapshot and dies with the error.
    let interrupted = crate::task::check().is_err();
    let mut err = interrupted.then(|| "received interrupt".to_string());
    for (_, vol) in vols.iter().filter(|_| !interrupted) {
        let (sid, name) = storage::parse_volid(vol).expect("checked");
        let dst = storage::snap_dir(host, sid, name, &snap);
        if let Err(e) = copy_tree(&storage::vol_dir(host, sid, name), &dst) {
            err = Some(e);
            break;
        }
    }
    let _g = super::lock_ct(host, vmid)?;
    let mut conf = load_conf(host, vmid)?;
    if let Some(e) = err {
        for (_, vol) in &vols {
            let (sid, name) = storage::parse_volid(vol).expect("checked");
            let _ = remove_tree(&storage::snap_dir(host, sid, name, &snap));
        }
        conf.snapshots.remove(&snap);
        conf.main.kv.remove("lock");
        save_conf(host, vmid, &conf)?;
        if interrupted {
            eprintln!("snapshot create failed: starting cleanup");
            return Err(PveError::die(e));
        }
        return Err(PveError::die(format!("snapshot create failed: {e}")));
    }
    for (_, vol) in &vols {
        let (sid, name) = storage::parse_volid(vol).expect("checked");
        if let Some(mut m) = storage::read_meta(host, sid, name) {
            m.snapshots.push(snap.clone());
            storage::write_meta(host, sid, name, &m)?;
        }
    }
    let mut s = Section {
        description: String::new(),
        kv: conf.main.kv.clone(),
        lxc: conf.main.lxc.clone(),
    };
    s.kv.retain(|k, _| {
        !matches!(k.as_str(), "lock" | "snapstate" | "snaptime") && !k.starts_with("unused")
    });
    s.set("snaptime", (now_ms() / 1000).to_string());
    if let Some(d) = call.opt("description") {
        s.description = if d.ends_with('\n') {
            d.to_string()
        } else {
            format!("{d}\n")
        };
    }
    conf.snapshots.insert(snap.clone(), s);
    conf.main.set("parent", snap);
    conf.main.kv.remove("lock");
    save_conf(host, vmid, &conf)?;
    Ok(0)
}

/// `%F %H:%M:%S` in the host's local time zone.
#[allow(unsafe_code)]
fn local_time(epoch: i64) -> String {
    let t: libc::time_t = epoch as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which lives on our stack.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return String::new();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

struct Node {
    name: String,
    snaptime: i64,
    desc: String,
}

pub fn listsnapshot(call: &Call) -> PveResult<i32> {
    let conf = load_conf(call.host, call.vmid())?;
    let mut children: BTreeMap<String, Vec<Node>> = BTreeMap::new();
    for (name, s) in &conf.snapshots {
        let parent = s
            .get("parent")
            .filter(|p| conf.snapshots.contains_key(*p))
            .unwrap_or("")
            .to_string();
        let desc = s.description.lines().next().unwrap_or("").to_string();
        children.entry(parent).or_default().push(Node {
            name: name.clone(),
            snaptime: s.get("snaptime").and_then(|t| t.parse().ok()).unwrap_or(0),
            desc: if desc.is_empty() {
                "no-description".into()
            } else {
                desc
            },
        });
    }
    let cur_parent = conf
        .main
        .get("parent")
        .filter(|p| conf.snapshots.contains_key(*p))
        .unwrap_or("")
        .to_string();
    children.entry(cur_parent).or_default().push(Node {
        name: "current".into(),
        // "current" has no snaptime and sorts after its sibling snapshots.
        snaptime: i64::MAX,
        desc: "You are here!".into(),
    });
    fn walk(children: &mut BTreeMap<String, Vec<Node>>, parent: &str, depth: usize) {
        let Some(mut kids) = children.remove(parent) else {
            return;
        };
        kids.sort_by_key(|n| n.snaptime);
        for n in kids {
            let prefix = format!("{}`->", " ".repeat(depth));
            let len = 30usize.saturating_sub(prefix.len());
            let time = if n.name == "current" {
                String::new()
            } else {
                local_time(n.snaptime)
            };
            println!("{prefix} {:<len$} {:<23} {}", n.name, time, n.desc);
            if n.name != "current" {
                walk(children, &n.name, depth + 1);
            }
        }
    }
    walk(&mut children, "", 0);
    Ok(0)
}

pub fn delsnapshot(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    let snap = call.pos["snapname"].clone();
    let vols = {
        let _g = super::lock_ct(host, vmid)?;
        let mut conf = load_conf(host, vmid)?;
        let Some(s) = conf.snapshots.get(&snap) else {
            return Err(PveError::die(format!("snapshot '{snap}' does not exist")));
        };
        let vols = volumes(s);
        // pve-guest-common src/PVE/AbstractConfig.pm `snapshot_delete`: `set_lock($vmid,
        // 'snapshot-delete')` runs `check_lock` with or without `--force` (force only skips
        // the replication check and volume errors); then the snapshot is marked
        // `snapstate: delete`, so an interrupted delete leaves an incomplete snapshot.
        check_lock(&conf)?;
        if conf.is_template() {
            return Err(PveError::die(
                "you can't delete a snapshot if vm is a template",
            ));
        }
        conf.main.set("lock", "snapshot-delete");
        if let Some(s) = conf.snapshots.get_mut(&snap) {
            s.set("snapstate", "delete");
        }
        save_conf(host, vmid, &conf)?;
        vols
    };
    latency::sleep(host, "delsnapshot");
    // Interrupted: no cleanup in `snapshot_delete`; `lock: snapshot-delete` and `snapstate:
    // delete` stay.
    crate::task::check()?;
    for (_, vol) in &vols {
        if let Some((sid, name)) = storage::parse_volid(vol) {
            let _ = remove_tree(&storage::snap_dir(host, sid, name, &snap));
            if let Some(mut m) = storage::read_meta(host, sid, name) {
                m.snapshots.retain(|s| s != &snap);
                storage::write_meta(host, sid, name, &m)?;
            }
        }
    }
    let _g = super::lock_ct(host, vmid)?;
    let mut conf = load_conf(host, vmid)?;
    let removed = conf.snapshots.remove(&snap).unwrap_or_default();
    let new_parent = removed.get("parent").map(str::to_string);
    let repoint = |s: &mut Section| {
        if s.get("parent") == Some(snap.as_str()) {
            match &new_parent {
                Some(p) => s.set("parent", p.clone()),
                None => {
                    s.kv.remove("parent");
                }
            }
        }
    };
    repoint(&mut conf.main);
    for s in conf.snapshots.values_mut() {
        repoint(s);
    }
    conf.main.kv.remove("lock");
    save_conf(host, vmid, &conf)?;
    Ok(0)
}

pub fn rollback(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    let snap = call.pos["snapname"].clone();
    let vols = {
        let _g = super::lock_ct(host, vmid)?;
        let mut conf = load_conf(host, vmid)?;
        let Some(s) = conf.snapshots.get(&snap) else {
            return Err(PveError::die(format!("snapshot '{snap}' does not exist")));
        };
        if conf.is_template() {
            return Err(PveError::die("you can't rollback if vm is a template"));
        }
        let vols = volumes(s);
        for (_, vol) in &vols {
            let (sid, name) = storage::parse_volid(vol)
                .ok_or_else(|| PveError::die(format!("unable to parse volume ID '{vol}'")))?;
            let st = storage::find(host, sid).map_err(PveError::die)?;
            if st.ty == StorageType::ZfsPool
                && let Some(m) = storage::read_meta(host, sid, name)
                && m.snapshots.last().is_some_and(|l| l != &snap)
            {
                return Err(PveError::die(format!(
                    "can't rollback, '{snap}' is not most recent snapshot on '{vol}'"
                )));
            }
        }
        // AbstractConfig.pm `snapshot_rollback`: an incomplete snapshot (`snapstate` prepare
        // or delete) is refused before the lock check.
        if let Some(st) = conf.snapshots[&snap].get("snapstate") {
            return Err(PveError::die(format!(
                "unable to rollback to incomplete snapshot (snapstate = {st})"
            )));
        }
        check_lock(&conf)?;
        if runtime::is_running(host, vmid) {
            runtime::set_stopped(host, vmid)?;
        }
        conf.main.set("lock", "rollback");
        save_conf(host, vmid, &conf)?;
        vols
    };
    latency::sleep(host, "rollback");
    // Interrupted: `lock: rollback` stays (no cleanup in `snapshot_rollback`).
    crate::task::check()?;
    for (_, vol) in &vols {
        let (sid, name) = storage::parse_volid(vol).expect("checked");
        let dir = storage::vol_dir(host, sid, name);
        remove_tree(&dir)?;
        copy_tree(&storage::snap_dir(host, sid, name, &snap), &dir).map_err(PveError::die)?;
    }
    {
        let _g = super::lock_ct(host, vmid)?;
        let mut conf = load_conf(host, vmid)?;
        let s = conf.snapshots[&snap].clone();
        let mut main = Section {
            description: conf.main.description.clone(),
            kv: s.kv.clone(),
            lxc: s.lxc.clone(),
        };
        main.kv.remove("snaptime");
        main.kv.remove("snapstate");
        for (k, v) in &conf.main.kv {
            if k.starts_with("unused") {
                main.kv.insert(k.clone(), v.clone());
            }
        }
        main.set("parent", snap.clone());
        conf.main = main;
        // `__snapshot_apply_config` builds a fresh config (snapshots, unusedN, description and
        // the snapshot's keys): pending changes are gone.
        conf.pending = Section::default();
        save_conf(host, vmid, &conf)?;
    }
    if call.flag("start") {
        super::power::do_start(call, vmid, false)?;
    }
    Ok(0)
}
