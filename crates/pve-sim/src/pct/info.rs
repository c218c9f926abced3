//! Read-only commands with byte-exact output: `config`, `pending`, `status`, `list`.

use std::collections::BTreeMap;

use super::{Call, load_conf};
use crate::conf::{Section, encode_text};
use crate::error::{PveError, PveResult};
use crate::host::now_ms;
use crate::{runtime, storage};

fn print_section(s: &Section) {
    let mut all: BTreeMap<&str, String> =
        s.kv.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    all.remove("digest");
    if !s.description.is_empty() {
        all.insert("description", encode_text(&s.description));
    }
    for (k, v) in all {
        println!("{k}: {v}");
    }
    for (k, v) in &s.lxc {
        println!("{k}: {v}");
    }
}

pub fn config(call: &Call) -> PveResult<i32> {
    let vmid = call.vmid();
    let conf = load_conf(call.host, vmid)?;
    if let Some(snap) = call.opt("snapshot") {
        if call.flag("current") {
            return Err(PveError::die(
                "cannot use 'snapshot' parameter with 'current'",
            ));
        }
        let s = conf
            .snapshots
            .get(snap)
            .ok_or_else(|| PveError::die(format!("snapshot '{snap}' does not exist")))?;
        let mut s = s.clone();
        s.kv.remove("snapstate");
        print_section(&s);
        return Ok(0);
    }
    let mut s = conf.main.clone();
    if !call.flag("current") {
        for (k, v) in &conf.pending.kv {
            if k == "delete" {
                continue;
            }
            s.set(k, v.clone());
        }
        if !conf.pending.description.is_empty() {
            s.description = conf.pending.description.clone();
        }
        if let Some(d) = conf.pending.get("delete") {
            for k in d.split(',') {
                s.kv.remove(k);
            }
        }
    }
    print_section(&s);
    Ok(0)
}

pub fn pending(call: &Call) -> PveResult<i32> {
    let conf = load_conf(call.host, call.vmid())?;
    let dels: Vec<&str> = conf
        .pending
        .get("delete")
        .map(|d| d.split(',').collect())
        .unwrap_or_default();
    let mut keys: Vec<&String> = conf
        .main
        .kv
        .keys()
        .chain(conf.pending.kv.keys())
        .filter(|k| *k != "delete" && *k != "digest")
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let cur = conf.main.kv.get(k);
        let new = conf.pending.kv.get(k);
        if dels.contains(&k.as_str()) {
            println!("del {k}: {}", cur.map(String::as_str).unwrap_or(""));
        } else if let Some(n) = new {
            if let Some(c) = cur {
                println!("cur {k}: {c}");
            }
            println!("new {k}: {n}");
        } else if let Some(c) = cur {
            println!("cur {k}: {c}");
        }
    }
    for (k, v) in &conf.main.lxc {
        println!("cur {k}: {v}");
    }
    Ok(0)
}

pub fn status(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    let conf = load_conf(host, vmid)?;
    let rt = runtime::get(host, vmid);
    let state = if rt.is_some() { "running" } else { "stopped" };
    if !call.flag("verbose") {
        println!("status: {state}");
        return Ok(0);
    }
    let m = &conf.main;
    let mb =
        |k: &str, d: u64| m.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(d) * 1024 * 1024;
    let maxdisk = m
        .get("rootfs")
        .and_then(|v| super::parse_mp("rootfs", v))
        .and_then(|kv| kv.get("size").and_then(|s| storage::parse_size(s)))
        .unwrap_or(0);
    let mut f: BTreeMap<&str, String> = BTreeMap::new();
    f.insert("cpus", m.get("cores").unwrap_or("1").to_string());
    f.insert("disk", "0".into());
    f.insert("diskread", "0".into());
    f.insert("diskwrite", "0".into());
    f.insert("maxdisk", maxdisk.to_string());
    f.insert("maxmem", mb("memory", 512).to_string());
    f.insert("maxswap", mb("swap", 512).to_string());
    f.insert("mem", "0".into());
    f.insert(
        "name",
        m.get("hostname")
            .map(str::to_string)
            .unwrap_or_else(|| format!("CT{vmid}")),
    );
    f.insert("netin", "0".into());
    f.insert("netout", "0".into());
    f.insert("status", state.into());
    f.insert("swap", "0".into());
    f.insert("type", "lxc".into());
    f.insert("vmid", vmid.to_string());
    let uptime = rt
        .as_ref()
        .map(|r| now_ms().saturating_sub(r.start_ms) / 1000)
        .unwrap_or(0);
    f.insert("uptime", uptime.to_string());
    if let Some(r) = &rt {
        f.insert("pid", r.pid.to_string());
    }
    if let Some(l) = m.get("lock") {
        f.insert("lock", l.to_string());
    }
    if let Some(t) = m.get("tags") {
        f.insert("tags", t.to_string());
    }
    if m.get("template") == Some("1") {
        f.insert("template", "1".into());
    }
    for (k, v) in f {
        println!("{k}: {v}");
    }
    Ok(0)
}

pub fn list(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let mut ids: Vec<u32> = std::fs::read_dir(host.lxc_dir())
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".conf")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    if ids.is_empty() {
        return Ok(0);
    }
    println!(
        "{:<10} {:<10} {:<12} {:<20}",
        "VMID", "Status", "Lock", "Name"
    );
    for id in ids {
        let Ok(conf) = load_conf(host, id) else {
            continue;
        };
        let status = if runtime::is_running(host, id) {
            "running"
        } else {
            "stopped"
        };
        let name: String = conf
            .main
            .get("hostname")
            .map(str::to_string)
            .unwrap_or_else(|| format!("CT{id}"))
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        println!(
            "{:<10} {:<10} {:<12} {:<20}",
            id,
            status,
            conf.lock().unwrap_or(""),
            name
        );
    }
    Ok(0)
}
