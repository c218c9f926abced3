//! Device passthrough (`devN: [path=]/dev/X[,gid=N,uid=N,mode=0NNN,deny-write=1]`), and the
//! LXC configuration a running container was started with.
//!
//! pve-container turns the PVE config into LXC's only when the container starts
//! (`src/PVE/LXC.pm` `update_lxc_config`, called by `vm_start`): raw `lxc.*` lines, `features`,
//! `devN` and the host name a running container has are those of its last start. pve-sim keeps
//! that started config at `run/pve-sim/<vmid>.conf` (the main section as it was at the start,
//! plus hot-plugged devices); the guest layer reads it, never the live config file.
//!
//! A passed-through device is a node created at the start under
//! `/var/lib/lxc/<vmid>/passthrough/<path>` with the entry's mode (default 0660) and uid/gid
//! (default 0) (`src/PVE/LXC.pm` `create_passthrough_device_node`) and bound into the guest.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use crate::conf::{Conf, Section};
use crate::error::{PveError, PveResult};
use crate::host::{Host, remove_tree, write_atomic};
use crate::schema;

/// pve-container versions (from its debian/changelog) that changed passthrough.
/// 5.0.7: "allow passing raw device nodes through to containers" (PVE 8.1).
pub const DEV_SINCE: (u32, u32, u32) = (5, 0, 7);
/// 5.2.0: "add 'deny-write' option for device passthrough" (PVE 8.3).
pub const DENY_WRITE_SINCE: (u32, u32, u32) = (5, 2, 0);
/// 6.0.4: "implement device hotplug. Note that currently hot-unplug or editing a existing
/// device is not yet supported." (PVE 9.0).
pub const HOTPLUG_SINCE: (u32, u32, u32) = (6, 0, 4);

pub fn is_dev_key(k: &str) -> bool {
    schema::split_numbered(k).is_some_and(|(b, _)| b == "dev")
}

/// Parse a `devN` value (`path` is the default key).
pub fn parse_dev(v: &str) -> Option<BTreeMap<String, String>> {
    let fmt =
        schema::endpoint("PUT /nodes/{node}/lxc/{vmid}/config")["dev[n]"]["format"].as_object()?;
    schema::parse_property_string(fmt, v).ok()
}

/// `PVE::LXC::Tools::get_device_mode_and_rdev`: the path must exist on the host and be a
/// block or character device. pve-sim's `init` lays GPU nodes out as plain files (a test
/// machine cannot always create device nodes), so a regular file under the host root counts as
/// a device node; a directory or anything else is "not a device".
pub fn check_device(host: &Host, path: &str) -> PveResult<()> {
    let md = match std::fs::metadata(host.path(path)) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PveError::die(format!("Device {path} does not exist")));
        }
        Err(_) => return Err(PveError::die(format!("Error accessing device {path}"))),
    };
    let ft = md.file_type();
    if ft.is_char_device() || ft.is_block_device() || ft.is_file() {
        Ok(())
    } else {
        Err(PveError::die(format!("{path} is not a device")))
    }
}

/// Host path of the node a CT's passed-through device is bound from.
pub fn passthrough_path(vmid: u32, path: &str) -> String {
    format!("/var/lib/lxc/{vmid}/passthrough{path}")
}

/// `create_passthrough_device_node`: a node for `devN` value `v` with its mode/uid/gid.
pub fn create_node(host: &Host, vmid: u32, key: &str, v: &str) -> PveResult<()> {
    let kv = parse_dev(v)
        .ok_or_else(|| PveError::die(format!("unable to parse device '{v}' of {key}")))?;
    let Some(path) = kv.get("path") else {
        return Err(PveError::die(format!(
            "Path is not defined for passthrough device {key}"
        )));
    };
    check_device(host, path)?;
    let src = host.path(path);
    let dst = host.path(&passthrough_path(vmid, path));
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&dst);
    let md = std::fs::metadata(&src)?;
    let ft = md.file_type();
    if ft.is_char_device() || ft.is_block_device() {
        use std::os::unix::fs::MetadataExt;
        let c = std::ffi::CString::new(dst.as_os_str().as_encoded_bytes())
            .map_err(|e| PveError::die(format!("{e}")))?;
        #[allow(unsafe_code)]
        // SAFETY: mknod reads the NUL-terminated path only.
        let rc = unsafe {
            libc::mknod(
                c.as_ptr(),
                md.mode() as libc::mode_t,
                md.rdev() as libc::dev_t,
            )
        };
        if rc != 0 {
            return Err(PveError::die(format!(
                "failed to mknod {}: {}",
                passthrough_path(vmid, path),
                std::io::Error::last_os_error()
            )));
        }
    } else {
        write_atomic(&dst, b"")?;
    }
    let mode = kv
        .get("mode")
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o660);
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
    let uid = kv.get("uid").and_then(|u| u.parse().ok()).unwrap_or(0);
    let gid = kv.get("gid").and_then(|g| g.parse().ok()).unwrap_or(0);
    std::os::unix::fs::chown(&dst, Some(uid), Some(gid)).map_err(|e| {
        PveError::die(format!(
            "failed to chown {uid}:{gid} {}: {e}",
            passthrough_path(vmid, path)
        ))
    })?;
    Ok(())
}

/// What `vm_start` does with the config: check and create every device node (a missing one
/// fails the start with `update_lxc_config`'s message) and keep the started config.
pub fn start_config(host: &Host, vmid: u32, main: &Section) -> PveResult<()> {
    remove_tree(&host.path(&format!("/var/lib/lxc/{vmid}/passthrough")))?;
    for (k, v) in &main.kv {
        if is_dev_key(k) {
            create_node(host, vmid, k, v)?;
        }
    }
    save_started(host, vmid, main)
}

fn save_started(host: &Host, vmid: u32, main: &Section) -> PveResult<()> {
    let conf = Conf {
        main: main.clone(),
        ..Conf::default()
    };
    write_atomic(&started_path(host, vmid), conf.write().as_bytes())?;
    Ok(())
}

pub fn started_path(host: &Host, vmid: u32) -> std::path::PathBuf {
    host.run_dir().join(format!("{vmid}.conf"))
}

/// The config a running container was started with (None when it is not running).
pub fn started(host: &Host, vmid: u32) -> Option<Section> {
    let text = std::fs::read_to_string(started_path(host, vmid)).ok()?;
    Some(Conf::parse(vmid, &text).0.main)
}

/// `device_passthrough_hotplug` (pve-container >= 6.0.4): a new `devN` on a running CT is
/// created and bound at once; the started config gains it.
pub fn hotplug(host: &Host, vmid: u32, key: &str, v: &str) -> PveResult<()> {
    create_node(host, vmid, key, v)?;
    let mut main = started(host, vmid).unwrap_or_default();
    main.set(key, v);
    save_started(host, vmid, &main)
}
