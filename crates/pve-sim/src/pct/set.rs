//! `pct set`: change config keys, `--delete` them, applied at once on a stopped CT; on a
//! running CT only the hot-pluggable keys apply at once, the rest goes to `[pve:pending]`.

use super::devices::{HOTPLUG_SINCE, check_device, hotplug, is_dev_key, parse_dev};
use super::{Call, check_lock, load_conf, normalize_net, save_conf};
use crate::conf::is_config_key;
use crate::error::{PveError, PveResult};
use crate::{runtime, schema};

/// Applied at once even while running (fast-plug).
const FASTPLUG: &[&str] = &[
    "description",
    "onboot",
    "startup",
    "protection",
    "hostname",
    "hookscript",
    "cores",
    "tags",
    "lock",
];

fn numbered(k: &str, base: &str) -> bool {
    schema::split_numbered(k).is_some_and(|(b, _)| b == base)
}

/// Whether changing `k` on a running CT takes effect at once (fast-plug or hot-plug).
fn applies_live(k: &str, exists: bool) -> bool {
    FASTPLUG.contains(&k)
        || matches!(k, "memory" | "swap" | "cpulimit" | "cpuunits")
        || numbered(k, "net")
        || (numbered(k, "mp") && !exists)
}

const REQUIRED: &[&str] = &["memory", "rootfs", "ostype"];

pub fn set(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    let mut changes: Vec<(String, String)> = Vec::new();
    let mut deletes: Vec<String> = Vec::new();
    for (k, v) in &call.opts {
        match k.as_str() {
            "delete" => {
                deletes.extend(
                    v.split([',', ';', ' ', '\0'])
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
            "digest" | "revert" => {}
            _ => changes.push((k.clone(), v.clone())),
        }
    }
    // src/PVE/API2/LXC/Config.pm `update_vm`: in this order, all under the config lock.
    if changes.is_empty() && deletes.is_empty() && call.opt("revert").is_none() {
        return Err(PveError::die("no options specified"));
    }
    let _g = super::lock_ct(host, vmid)?;
    let mut conf = load_conf(host, vmid)?;
    // `check_lock` always, also when the call sets `--lock` itself.
    check_lock(&conf)?;
    if let Some(d) = call.opt("digest") {
        let raw = std::fs::read(host.conf_path(vmid)).unwrap_or_default();
        if sha1_smol::Sha1::from(&raw).digest().to_string() != d.to_ascii_lowercase() {
            return Err(PveError::die(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
    }
    for d in &deletes {
        if !is_config_key(d) && d != "description" {
            return Err(PveError::param("delete", format!("unknown option '{d}'")));
        }
        if changes.iter().any(|(k, _)| k == d) {
            // sic: the quote before -delete is missing in Proxmox's message too.
            return Err(PveError::param(
                "delete",
                format!("you can't use '-{d}' and -delete {d}' at the same time"),
            ));
        }
    }
    // src/PVE/LXC/Config.pm `update_pct_config`, deletions first.
    let mut skip_delete: Vec<String> = Vec::new();
    for d in &deletes {
        let present = if d == "description" {
            !conf.main.description.is_empty() || !conf.pending.description.is_empty()
        } else {
            conf.main.kv.contains_key(d) || conf.pending.kv.contains_key(d)
        };
        if !present {
            eprintln!("cannot delete '{d}' - not set in current configuration!");
            skip_delete.push(d.clone());
            continue;
        }
        if REQUIRED.contains(&d.as_str()) {
            return Err(PveError::die(format!(
                "unable to delete required option '{d}'"
            )));
        }
        if d == "unprivileged" {
            return Err(PveError::die(
                "unable to delete read-only option: 'unprivileged'",
            ));
        }
    }
    deletes.retain(|d| !skip_delete.contains(d));
    if changes.iter().any(|(k, _)| k == "unprivileged") {
        return Err(PveError::die(
            "unable to modify read-only option: 'unprivileged'",
        ));
    }
    for (k, v) in &changes {
        if is_dev_key(k) {
            let path = parse_dev(v).and_then(|kv| kv.get("path").cloned());
            let Some(p) = path else {
                return Err(PveError::die(format!(
                    "Path is not defined for passthrough device {k}"
                )));
            };
            check_device(host, &p)?;
        }
    }
    if conf.main.get("protection") == Some("1")
        && changes.iter().all(|(k, _)| k != "protection")
        && deletes.iter().any(|d| d == "rootfs" || numbered(d, "mp"))
    {
        return Err(PveError::die(format!(
            "can't remove CT {vmid} drive - protection mode enabled"
        )));
    }
    let running = runtime::is_running(host, vmid);
    if let Some(r) = call.opt("revert") {
        for k in r.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
            conf.pending.kv.remove(k);
            if let Some(d) = conf.pending.kv.get("delete").cloned() {
                let rest: Vec<&str> = d.split(',').filter(|x| *x != k).collect();
                if rest.is_empty() {
                    conf.pending.kv.remove("delete");
                } else {
                    conf.pending.set("delete", rest.join(","));
                }
            }
        }
    }
    for d in &deletes {
        if running && !applies_live(d, true) {
            let mut list: Vec<String> = conf
                .pending
                .get("delete")
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            if !list.contains(d) {
                list.push(d.clone());
            }
            conf.pending.set("delete", list.join(","));
        } else if d == "description" {
            conf.main.description.clear();
        } else {
            conf.main.kv.remove(d);
        }
    }
    for (k, v) in changes {
        let value = if numbered(&k, "net") {
            normalize_net(&v)?
        } else if k == "rootfs" || numbered(&k, "mp") {
            // `STORAGE:SIZE` allocates a new volume; stored as Proxmox prints mount points:
            // volume first, other keys sorted.
            let mut kv = super::parse_mp(&k, &v).unwrap_or_default();
            let vol = kv.get("volume").cloned().unwrap_or_default();
            if let Some((sid, size_gib)) = super::create::alloc_request(&vol) {
                if k == "rootfs" {
                    return Err(PveError::die(
                        "unable to modify rootfs volume; use 'pct resize' or 'pct move-volume'",
                    ));
                }
                let st = crate::storage::find(host, &sid).map_err(PveError::die)?;
                if !st.has_content("rootdir") {
                    return Err(PveError::param(
                        k.clone(),
                        format!("storage '{sid}' does not support container directories"),
                    ));
                }
                let size = super::create::gib(size_gib);
                let a = super::create::alloc_volume(host, &st, vmid, size, None)?;
                kv.insert("volume".into(), format!("{}:{}", a.storeid, a.volname));
                kv.insert("size".into(), crate::storage::size_string(size));
            }
            super::print_mp(&kv)
        } else if k == "tags" {
            super::create::normalize_tags(&v)
        } else if k == "nameserver" || k == "searchdomain" {
            v.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            v
        };
        if k == "description" {
            let d = if value.ends_with('\n') {
                value
            } else {
                format!("{value}\n")
            };
            conf.main.description = d;
            continue;
        }
        let exists = conf.main.kv.contains_key(&k);
        if running && is_dev_key(&k) {
            // vmconfig_hotplug_pending: a new devN is hot-plugged from pve-container 6.0.4
            // on; an existing one (editing) and every devN before 6.0.4 stay pending.
            if !exists && call.pc_at_least(HOTPLUG_SINCE) {
                hotplug(host, vmid, &k, &value)?;
                conf.main.set(&k, value);
                conf.pending.kv.remove(&k);
            } else {
                conf.pending.set(&k, value);
            }
        } else if running && !applies_live(&k, exists) {
            conf.pending.set(&k, value);
        } else {
            conf.main.set(&k, value);
            conf.pending.kv.remove(&k);
        }
    }
    save_conf(host, vmid, &conf)?;
    Ok(0)
}
