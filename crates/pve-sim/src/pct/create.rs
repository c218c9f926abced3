//! `pct create`: checks before the task (ID free, rootdir storage, template volid), then the
//! task: allocate the rootfs volume, unpack the ostemplate into it, detect arch/ostype and
//! write the normalised config; everything is removed again when a step fails.

use std::collections::BTreeMap;
use std::fs;

use super::{Call, check_vmid_free, load_conf, lock_host, normalize_net, print_mp, save_conf};
use crate::conf::{Conf, is_config_key};
use crate::error::{PveError, PveResult};
use crate::host::{Host, now_ms, remove_tree};
use crate::storage::{self, StorageType, VolMeta};
use crate::{guest, latency};

/// Create-only parameters that are not stored in the config.
const NOT_CONFIG: &[&str] = &[
    "storage",
    "start",
    "force",
    "restore",
    "unique",
    "pool",
    "ignore-unpack-errors",
    "bwlimit",
    "ha-managed",
    "password",
    "ssh-public-keys",
];

/// A volume to allocate: `STORAGE:SIZE_GiB`.
pub(super) fn alloc_request(v: &str) -> Option<(String, f64)> {
    let re = regex::Regex::new(r"^([^:\s]+):([0-9]+(\.[0-9]+)?)$").unwrap();
    let c = re.captures(v)?;
    Some((c[1].to_string(), c[2].parse().ok()?))
}

pub struct Alloc {
    pub storeid: String,
    pub volname: String,
}

/// Allocate a new (empty) volume directory for `vmid` (host lock held by the caller).
pub fn alloc_volume(
    host: &Host,
    st: &storage::Storage,
    vmid: u32,
    size: u64,
    origin: Option<String>,
) -> PveResult<Alloc> {
    let volname = storage::alloc_volname(host, st, vmid);
    let volname = match (&origin, st.ty) {
        (Some(o), StorageType::ZfsPool | StorageType::LvmThin) => {
            format!("{}/{volname}", o.split('@').next().unwrap_or(o))
        }
        _ => volname,
    };
    let dir = storage::vol_dir(host, &st.id, &volname);
    fs::create_dir_all(&dir)
        .map_err(|e| PveError::die(format!("unable to allocate volume: {}: {e}", dir.display())))?;
    let meta = VolMeta {
        size,
        vmid,
        origin,
        ctime_ms: now_ms(),
        snapshots: Vec::new(),
    };
    storage::write_meta(host, &st.id, &volname, &meta)?;
    Ok(Alloc {
        storeid: st.id.clone(),
        volname,
    })
}

/// Remove a volume with all its snapshots (`zfs destroy -r`).
pub fn free_volume(host: &Host, volid: &str) {
    let Some((st, name)) = storage::parse_volid(volid) else {
        return;
    };
    if let Some(m) = storage::read_meta(host, st, name) {
        for s in &m.snapshots {
            let _ = remove_tree(&storage::snap_dir(host, st, name, s));
        }
    }
    let _ = remove_tree(&storage::vol_dir(host, st, name));
    storage::remove_meta(host, st, name);
}

pub(super) fn gib(size: f64) -> u64 {
    (size * (1u64 << 30) as f64) as u64
}

/// Resolve the ostemplate argument to a file on this machine.
fn template_file(host: &Host, t: &str) -> PveResult<std::path::PathBuf> {
    if t.starts_with('/') {
        return Ok(host.path(t));
    }
    let Some((sid, volname)) = storage::parse_volid(t) else {
        return Err(PveError::die(format!("unable to parse volume ID '{t}'")));
    };
    let st = storage::find(host, sid).map_err(PveError::die)?;
    let Some(name) = volname.strip_prefix("vztmpl/") else {
        return Err(PveError::die(format!(
            "unable to use volume {t} - content type needs to be 'vztmpl'"
        )));
    };
    if !st.has_content("vztmpl") {
        return Err(PveError::die(format!(
            "storage '{sid}' does not support content type 'vztmpl'"
        )));
    }
    let base = st.prop("path").unwrap_or("/var/lib/vz").to_string();
    Ok(host.path(&format!("{base}/template/cache/{name}")))
}

/// Distribution from `/etc/os-release` of the unpacked rootfs: (ostype, systemd version).
fn detect_os(rootfs: &std::path::Path) -> Option<(String, Option<u32>)> {
    let text = fs::read_to_string(rootfs.join("etc/os-release"))
        .or_else(|_| fs::read_to_string(rootfs.join("usr/lib/os-release")))
        .ok()?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
    };
    let id = field("ID")?;
    let version = field("VERSION_ID").unwrap_or_default();
    let ostype = match id.as_str() {
        "ubuntu" | "debian" | "devuan" | "alpine" | "centos" | "fedora" | "gentoo" | "nixos" => {
            id.clone()
        }
        "arch" | "archarm" => "archlinux".into(),
        "rocky" | "almalinux" | "rhel" => "centos".into(),
        i if i.starts_with("opensuse") => "opensuse".into(),
        _ => return None,
    };
    let systemd = match (ostype.as_str(), version.as_str()) {
        ("ubuntu", "24.04") => Some(255),
        ("ubuntu", "22.04") => Some(249),
        ("debian", "12") => Some(252),
        ("debian", "13") => Some(257),
        _ => None,
    };
    Some((ostype, systemd))
}

pub fn create(call: &Call) -> PveResult<i32> {
    let host = call.host;
    let vmid = call.vmid();
    let ostemplate = call.pos["ostemplate"].clone();
    let storage_opt = call.opt("storage").unwrap_or("local").to_string();

    // --- checks before the task
    let rootfs_in = call
        .opt("rootfs")
        .map(str::to_string)
        .unwrap_or_else(|| format!("{storage_opt}:4"));
    let mut rootfs_kv = super::parse_mp("rootfs", &rootfs_in).unwrap_or_default();
    let vol = rootfs_kv.get("volume").cloned().unwrap_or_default();
    let vol = if vol.chars().all(|c| c.is_ascii_digit() || c == '.') && !vol.is_empty() {
        format!("{storage_opt}:{vol}")
    } else {
        vol
    };
    let Some((rootfs_store, size_gib)) = alloc_request(&vol) else {
        return Err(PveError::die(format!(
            "unable to create CT {vmid} - rootfs '{vol}': pve-sim only allocates new volumes (STORAGE:SIZE_GiB)"
        )));
    };
    let st = storage::find(host, &rootfs_store).map_err(PveError::die)?;
    if !st.has_content("rootdir") {
        return Err(PveError::param(
            "storage",
            format!("storage '{}' does not support container directories", st.id),
        ));
    }
    let mut mp_allocs: Vec<(String, storage::Storage, f64, BTreeMap<String, String>)> = Vec::new();
    for (k, v) in &call.opts {
        if k.starts_with("mp") && schema_numbered(k, "mp") {
            let kv = super::parse_mp(k, v).unwrap_or_default();
            let vv = kv.get("volume").cloned().unwrap_or_default();
            if let Some((sid, sz)) = alloc_request(&vv) {
                let mst = storage::find(host, &sid).map_err(PveError::die)?;
                if !mst.has_content("rootdir") {
                    return Err(PveError::param(
                        k.clone(),
                        format!("storage '{sid}' does not support container directories"),
                    ));
                }
                mp_allocs.push((k.clone(), mst, sz, kv));
            } else if !vv.starts_with('/') {
                return Err(PveError::die(format!(
                    "unable to create CT {vmid} - {k}: only bind mounts or new volumes are supported"
                )));
            }
        }
    }
    let ssh_keys = match call.opt("ssh-public-keys") {
        Some(f) => match fs::read_to_string(host.path(f)) {
            Ok(t) => {
                check_ssh_keys(&t)?;
                Some(t)
            }
            Err(_) => {
                return Err(PveError::die(format!(
                    "can't open '{f}' - No such file or directory"
                )));
            }
        },
        None => None,
    };
    let tfile = template_file(host, &ostemplate)?;
    {
        let _g = super::lock_ct(host, vmid)?;
        if call.flag("force") && host.conf_path(vmid).exists() {
            if crate::runtime::is_running(host, vmid) {
                return Err(PveError::die(format!(
                    "unable to create CT {vmid} - CT is running"
                )));
            }
            let old = load_conf(host, vmid)?;
            super::check_lock(&old)?;
            for (_, v) in super::volumes(&old.main) {
                free_volume(host, &v);
            }
            let _ = fs::remove_file(host.conf_path(vmid));
        }
        check_vmid_free(host, vmid)?;
        let mut c = Conf::default();
        c.main.set("lock", "create");
        save_conf(host, vmid, &c)?;
    }

    // --- the task
    let mut allocated: Vec<String> = Vec::new();
    let res = create_task(
        call,
        vmid,
        &ostemplate,
        &tfile,
        &st,
        size_gib,
        &mut rootfs_kv,
        &mp_allocs,
        ssh_keys,
        &mut allocated,
    );
    if let Err(e) = res {
        let _g = super::lock_ct(host, vmid)?;
        for v in &allocated {
            free_volume(host, v);
        }
        let _ = fs::remove_file(host.conf_path(vmid));
        let msg = match e {
            PveError::Fail { msg, .. } => msg,
            other => other.render("").0,
        };
        return Err(PveError::die(format!(
            "unable to create CT {vmid} - {}",
            msg.trim_end().replace('\n', " ")
        )));
    }
    if call.flag("start") {
        super::power::do_start(call, vmid, false)?;
    }
    Ok(0)
}

fn schema_numbered(k: &str, base: &str) -> bool {
    crate::schema::split_numbered(k).is_some_and(|(b, _)| b == base)
}

#[allow(clippy::too_many_arguments)]
fn create_task(
    call: &Call,
    vmid: u32,
    ostemplate: &str,
    tfile: &std::path::Path,
    st: &storage::Storage,
    size_gib: f64,
    rootfs_kv: &mut BTreeMap<String, String>,
    mp_allocs: &[(String, storage::Storage, f64, BTreeMap<String, String>)],
    ssh_keys: Option<String>,
    allocated: &mut Vec<String>,
) -> PveResult<()> {
    let host = call.host;
    latency::sleep(host, "create");
    crate::task::check()?;
    if !tfile.is_file() {
        return Err(PveError::die(format!("can't find file '{ostemplate}'")));
    }
    let size = gib(size_gib);
    let a = {
        let _g = lock_host(host)?;
        alloc_volume(host, st, vmid, size, None)?
    };
    let volid = format!("{}:{}", a.storeid, a.volname);
    allocated.push(volid.clone());
    rootfs_kv.insert("volume".into(), volid);
    rootfs_kv.insert("size".into(), storage::size_string(size));
    let mut mps = BTreeMap::new();
    for (k, mst, sz, kv) in mp_allocs {
        let sz = gib(*sz);
        let a = {
            let _g = lock_host(host)?;
            alloc_volume(host, mst, vmid, sz, None)?
        };
        let volid = format!("{}:{}", a.storeid, a.volname);
        allocated.push(volid.clone());
        let mut kv = kv.clone();
        kv.insert("volume".into(), volid);
        kv.insert("size".into(), storage::size_string(sz));
        mps.insert(k.clone(), print_mp(&kv));
    }
    let rootfs = storage::vol_dir(host, &a.storeid, &a.volname);
    println!("extracting archive '{ostemplate}'");
    guest::extract_ostemplate(tfile, &rootfs).map_err(|e| PveError::die(format!("{e:#}")))?;
    latency::sleep_copy(host, &rootfs);
    crate::task::check()?;
    let (ostype, systemd) =
        detect_os(&rootfs).ok_or_else(|| PveError::die("unable to detect OS distribution"))?;
    let arch = call.opt("arch").unwrap_or("amd64").to_string();
    println!("Detected container architecture: {arch}");

    let mut conf = Conf::default();
    let m = &mut conf.main;
    for (k, v) in &call.opts {
        if NOT_CONFIG.contains(&k.as_str()) || !is_config_key(k) {
            continue;
        }
        match k.as_str() {
            "description" => {
                m.description = if v.ends_with('\n') {
                    v.clone()
                } else {
                    format!("{v}\n")
                };
            }
            "nameserver" | "searchdomain" => {
                let items: Vec<&str> = v
                    .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .collect();
                m.set(k, items.join(" "));
            }
            "tags" => m.set(k, normalize_tags(v)),
            _ if schema_numbered(k, "net") => m.set(k, normalize_net(v)?),
            _ if schema_numbered(k, "mp") => {
                if let Some(p) = mps.get(k) {
                    m.set(k, p.clone());
                } else {
                    m.set(k, v.clone());
                }
            }
            _ => m.set(k, v.clone()),
        }
    }
    m.set("rootfs", print_mp(rootfs_kv));
    if m.get("hostname").is_none() {
        m.set("hostname", format!("CT{vmid}"));
    }
    if m.get("memory").is_none() {
        m.set("memory", "512");
    }
    if m.get("swap").is_none() {
        m.set("swap", "512");
    }
    m.set("arch", arch);
    if m.get("ostype").is_none() {
        m.set("ostype", ostype);
    }
    let unpriv = match call.opt("unprivileged") {
        Some(v) => v == "1",
        None => call.major() >= 9,
    };
    if unpriv {
        m.set("unprivileged", "1");
    } else if call.opt("unprivileged").is_some() {
        // Proxmox only writes the key when it is set or differs from its default.
        m.kv.remove("unprivileged");
    }
    if let Some(keys) = ssh_keys {
        let d = rootfs.join("root/.ssh");
        fs::create_dir_all(&d)?;
        fs::write(d.join("authorized_keys"), keys)?;
    }
    let hostname = m.get("hostname").unwrap_or_default().to_string();
    for t in ["rsa", "ecdsa", "ed25519"] {
        println!("Creating SSH host key 'ssh_host_{t}_key' - this may take some time ...");
        println!("done: SHA256:pvesim{vmid}{t} root@{hostname}");
    }
    let nesting = m
        .get("features")
        .and_then(|f| {
            let fmt = crate::schema::endpoint("POST /nodes/{node}/lxc")["features"]["format"]
                .as_object()?;
            crate::schema::parse_property_string(fmt, f).ok()
        })
        .map(|kv| kv.get("nesting").map(String::as_str) == Some("1"))
        .unwrap_or(false);
    if unpriv
        && !nesting
        && let Some(v) = systemd
    {
        call.warn(&format!(
            "Systemd {v} detected. You may need to enable nesting."
        ));
    }
    let _g = super::lock_ct(host, vmid)?;
    save_conf(host, vmid, &conf)?;
    Ok(())
}

/// `--tags`: lower-case, sorted, unique, `;`-joined.
pub fn normalize_tags(v: &str) -> String {
    let mut t: Vec<String> = v
        .split([';', ',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase())
        .collect();
    t.sort();
    t.dedup();
    t.join(";")
}

/// Each non-empty, non-comment line must look like an OpenSSH public key.
fn check_ssh_keys(text: &str) -> PveResult<()> {
    let re = regex::Regex::new(
        r"^(?:\S+\s+)?(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-\S+@openssh\.com)\s+[A-Za-z0-9+/]+=*(\s.*)?$",
    )
    .expect("ssh key regex");
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if !re.is_match(line) {
            return Err(PveError::die(format!(
                "SSH public key validation error: invalid key '{line}'"
            )));
        }
    }
    Ok(())
}
