//! Whole-container lifecycle on storage: `template` (to base volumes), `destroy`, and the
//! lock commands `unlock`, `mount`, `unmount`.

use std::fs;

use super::create::free_volume;
use super::{Call, check_lock, load_conf, parse_mp, print_mp, save_conf, volumes};
use crate::error::{PveError, PveResult};
use crate::runtime;
use crate::storage::{self, Feature};

pub fn template(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    let _g = super::lock_ct(host, vmid)?;
    let mut conf = load_conf(host, vmid)?;
    if !conf.snapshots.is_empty() {
        return Err(PveError::die(
            "unable to create template, because CT contains snapshots",
        ));
    }
    if conf.is_template() {
        return Err(PveError::die("you can't convert a template to a template"));
    }
    if runtime::is_running(host, vmid) {
        return Err(PveError::die(
            "you can't convert a CT to template if the CT is running",
        ));
    }
    check_lock(&conf)?;
    let vols = volumes(&conf.main);
    for (_, vol) in &vols {
        let (sid, name) = storage::parse_volid(vol)
            .ok_or_else(|| PveError::die(format!("unable to parse volume ID '{vol}'")))?;
        let st = storage::find(host, sid).map_err(PveError::die)?;
        if !storage::has_feature(&st, name, None, Feature::Template) {
            return Err(PveError::task_exit0(format!(
                "Template feature is not available for '{vol}'"
            )));
        }
    }
    for (key, vol) in &vols {
        let (sid, name) = storage::parse_volid(vol).expect("checked");
        let st = storage::find(host, sid).map_err(PveError::die)?;
        let base = storage::base_volname(&st, name);
        fs::rename(
            storage::vol_dir(host, sid, name),
            storage::vol_dir(host, sid, &base),
        )?;
        if let Some(m) = storage::read_meta(host, sid, name) {
            storage::remove_meta(host, sid, name);
            storage::write_meta(host, sid, &base, &m)?;
        }
        let mut kv = parse_mp(key, &conf.main.kv[key]).unwrap_or_default();
        kv.insert("volume".into(), format!("{sid}:{base}"));
        conf.main.set(key, print_mp(&kv));
    }
    conf.main.set("template", "1");
    save_conf(host, vmid, &conf)?;
    Ok(0)
}

pub fn destroy(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    let _g = super::lock_ct(host, vmid)?;
    let conf = load_conf(host, vmid)?;
    if conf.main.get("protection") == Some("1") {
        return Err(PveError::die(format!(
            "can't remove CT {vmid} - protection mode enabled"
        )));
    }
    check_lock(&conf)?;
    if runtime::is_running(host, vmid) {
        if !call.flag("force") {
            return Err(PveError::die(format!(
                "unable to destroy CT {vmid} - container is running"
            )));
        }
        println!("forced to stop CT {vmid} before destroying!");
        runtime::set_stopped(host, vmid)?;
    }
    let mut vols = volumes(&conf.main);
    for (k, v) in &conf.main.kv {
        if k.starts_with("unused") {
            vols.push((k.clone(), v.split(',').next().unwrap_or(v).to_string()));
        }
    }
    // A base volume still backing linked clones cannot go.
    for (_, vol) in &vols {
        let Some((sid, name)) = storage::parse_volid(vol) else {
            continue;
        };
        if !storage::is_base(name) {
            continue;
        }
        let st = storage::find(host, sid).map_err(PveError::die)?;
        let base = storage::vol_name(name).to_string();
        let used = storage::list_volumes(host, &st).iter().any(|(_, m)| {
            m.origin
                .as_deref()
                .is_some_and(|o| o.split('@').next() == Some(base.as_str()))
        });
        if used {
            return Err(PveError::die(format!(
                "base volume '{base}' is still in use by linked clones"
            )));
        }
    }
    for (_, vol) in &vols {
        free_volume(host, vol);
    }
    fs::remove_file(host.conf_path(vmid))?;
    runtime::set_stopped(host, vmid)?;
    Ok(0)
}

pub fn unlock(call: &Call) -> PveResult<i32> {
    let _g = super::lock_ct(call.host, call.vmid())?;
    let mut conf = load_conf(call.host, call.vmid())?;
    if conf.main.kv.remove("lock").is_none() {
        return Err(PveError::die("no lock found trying to remove any lock"));
    }
    save_conf(call.host, call.vmid(), &conf)?;
    Ok(0)
}

pub fn mount(call: &Call) -> PveResult<i32> {
    let vmid = call.vmid();
    let _g = super::lock_ct(call.host, call.vmid())?;
    let mut conf = load_conf(call.host, vmid)?;
    check_lock(&conf)?;
    conf.main.set("lock", "mounted");
    save_conf(call.host, vmid, &conf)?;
    println!("mounted CT {vmid} in '/var/lib/lxc/{vmid}/rootfs'");
    Ok(0)
}

pub fn unmount(call: &Call) -> PveResult<i32> {
    let vmid = call.vmid();
    let _g = super::lock_ct(call.host, call.vmid())?;
    let mut conf = load_conf(call.host, vmid)?;
    if conf.lock() != Some("mounted") {
        return Err(PveError::die(
            "no lock found trying to remove 'mounted'  lock",
        ));
    }
    conf.main.kv.remove("lock");
    save_conf(call.host, vmid, &conf)?;
    Ok(0)
}

/// `pct resize <vmid> <disk> <size>`: grow a volume (`+N` adds); shrinking is refused.
pub fn resize(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    let disk = call.pos["disk"].clone();
    let req = call.pos["size"].clone();
    let _g = super::lock_ct(host, vmid)?;
    let mut conf = load_conf(host, vmid)?;
    check_lock(&conf)?;
    let Some(cur) = conf.main.get(&disk).map(str::to_string) else {
        return Err(PveError::die(format!(
            "unable to parse config: no such disk '{disk}'"
        )));
    };
    let mut kv = parse_mp(&disk, &cur).unwrap_or_default();
    let vol = kv.get("volume").cloned().unwrap_or_default();
    let Some((sid, name)) = storage::parse_volid(&vol) else {
        return Err(PveError::die(format!(
            "you can't resize a mount point of type bind ({disk})"
        )));
    };
    let old = storage::read_meta(host, sid, name)
        .map(|m| m.size)
        .or_else(|| kv.get("size").and_then(|s| storage::parse_size(s)))
        .unwrap_or(0);
    let (grow, num) = match req.strip_prefix('+') {
        Some(n) => (true, n),
        None => (false, req.as_str()),
    };
    // A bare number is GiB for `pct resize`.
    let num = if num.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{num}G")
    } else {
        num.to_string()
    };
    let bytes =
        storage::parse_size(&num).ok_or_else(|| PveError::die(format!("invalid size '{req}'")))?;
    let new = if grow { old + bytes } else { bytes };
    if new < old {
        return Err(PveError::die("unable to shrink disk size"));
    }
    if let Some(mut m) = storage::read_meta(host, sid, name) {
        m.size = new;
        storage::write_meta(host, sid, name, &m)?;
    }
    kv.insert("size".into(), storage::size_string(new));
    conf.main.set(&disk, print_mp(&kv));
    save_conf(host, vmid, &conf)?;
    Ok(0)
}
