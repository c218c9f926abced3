//! Step `initial-setup [--force]`: check that this host can run the configuration (a Proxmox
//! VE host with its tools, the configured storages able to hold and snapshot containers, the
//! NVIDIA driver the config names where containers get GPUs), create the core directories and
//! write the marker `core_paths.hypervisor_marker`. With the marker present it does nothing
//! unless `--force`.

use std::collections::BTreeMap;

use crate::config::Ctid;
use crate::error::{Error, Result};
use crate::host;
use crate::paths::host_path;
use crate::step::StepContext;
use crate::steps::Outcome;

/// Run the checks and write the marker.
pub fn run(ctx: &StepContext, force: bool) -> Result<Outcome> {
    let core = &ctx.configs.hypervisor.core_paths;
    let marker = host_path(&core.hypervisor_marker);
    if marker.exists() && !force {
        ctx.say(
            None,
            &format!(
                "host already initialized (marker `{}` present); nothing to do\nhint: use --force to run the checks again",
                core.hypervisor_marker
            ),
        );
        return Ok(Outcome::Unchanged);
    }
    check_proxmox(ctx)?;
    check_tools(ctx)?;
    check_storages(ctx)?;
    check_gpu_driver(ctx)?;
    for dir in [&core.hypervisor_marker_dir, &core.docker_images_path] {
        ensure_dir(ctx, dir)?;
    }
    if let Some(parent) = std::path::Path::new(&core.hypervisor_marker).parent() {
        ensure_dir(ctx, &parent.to_string_lossy())?;
    }
    if ctx.dry_run {
        println!("would write marker `{}`", core.hypervisor_marker);
    } else {
        let text = format!(
            "initialized {} by {} {}\n",
            crate::logging::timestamp_now(),
            ctx.program,
            env!("CARGO_PKG_VERSION")
        );
        crate::conffile::write_atomic(&marker, text.as_bytes())?;
    }
    ctx.say(
        None,
        &format!(
            "host checks passed; marker `{}` written",
            core.hypervisor_marker
        ),
    );
    Ok(Outcome::Changed)
}

fn check_proxmox(ctx: &StepContext) -> Result<()> {
    let version = ctx.pct.pveversion().map_err(|e| {
        Error::precondition(format!(
            "not a Proxmox VE host: `pveversion` cannot run ({e:#})"
        ))
    })?;
    if !host::has_etc_pve() {
        return Err(Error::precondition(format!(
            "not a Proxmox VE host: `{}` does not exist (is pve-cluster / pmxcfs running?)",
            host_path("/etc/pve").display()
        ))
        .into());
    }
    log::info!("Proxmox VE: {version}");
    Ok(())
}

fn any_gpus(ctx: &StepContext) -> bool {
    ctx.configs.lxc.lxc_configs.values().any(|c| c.has_gpus())
}

fn check_tools(ctx: &StepContext) -> Result<()> {
    ctx.pct.pct_path()?;
    ctx.pct.pvesm_path()?;
    let url = &ctx.configs.lxc.nvidia_runfile_url;
    if any_gpus(ctx)
        && (url.starts_with("http://") || url.starts_with("https://"))
        && which::which("curl").is_err()
    {
        return Err(Error::precondition(
            "`curl` not found on PATH; it downloads nvidia_runfile_url for the containers with GPUs\nhint: apt install curl",
        )
        .into());
    }
    Ok(())
}

/// Every `storage_pool` must exist, be active, hold containers (`rootdir`) and support snapshots.
fn check_storages(ctx: &StepContext) -> Result<()> {
    let mut users: BTreeMap<&str, Vec<Ctid>> = BTreeMap::new();
    for (ctid, c) in &ctx.configs.lxc.lxc_configs {
        users
            .entry(c.storage_pool.as_str())
            .or_default()
            .push(*ctid);
    }
    let status = ctx.pct.pvesm_status()?;
    let defs = host::storage_defs()?;
    for (pool, ctids) in users {
        let who = ctids
            .iter()
            .map(Ctid::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let row = status.iter().find(|s| s.name == pool);
        let def = defs.iter().find(|d| d.id == pool);
        let (Some(row), Some(def)) = (row, def) else {
            return Err(Error::precondition(format!(
                "storage pool '{pool}' (storage_pool of CT {who}) does not exist on this host (pvesm status lists: {})\nhint: add it in Datacenter > Storage or fix storage_pool",
                status
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into());
        };
        if def.disabled || row.status != "active" {
            return Err(Error::precondition(format!(
                "storage pool '{pool}' (storage_pool of CT {who}) is {}; enable it first",
                if def.disabled {
                    "disabled"
                } else {
                    &row.status
                }
            ))
            .into());
        }
        if !def.holds_containers() {
            return Err(Error::precondition(format!(
                "storage pool '{pool}' (storage_pool of CT {who}) does not support container directories (content `rootdir`)\nhint: add `rootdir` to its content in /etc/pve/storage.cfg or choose another pool"
            ))
            .into());
        }
        if !host::type_supports_ct_snapshots(&row.storage_type) {
            return Err(Error::precondition(format!(
                "storage pool '{pool}' (storage_pool of CT {who}) is of type '{}': container snapshots are impossible there, and templates are cloned from snapshots\nhint: use a zfspool or lvmthin storage",
                row.storage_type
            ))
            .into());
        }
    }
    Ok(())
}

/// Where any container has GPUs: the loaded driver must equal `nvidia_driver_version`, and the
/// assigned GPUs' device nodes must exist.
fn check_gpu_driver(ctx: &StepContext) -> Result<()> {
    if !any_gpus(ctx) {
        return Ok(());
    }
    let want = &ctx.configs.lxc.nvidia_driver_version;
    let Some(have) = host::nvidia_driver_version()? else {
        return Err(Error::precondition(format!(
            "no NVIDIA driver is loaded on this host (`{}` is missing) but containers have GPUs assigned; install driver {want} on the host first",
            host::NVIDIA_VERSION_FILE
        ))
        .into());
    };
    if &have != want {
        return Err(Error::precondition(format!(
            "host NVIDIA driver is {have} but nvidia_driver_version in `{}` is {want}; containers need the host's exact version\nhint: set nvidia_driver_version to {have} (and nvidia_runfile_url to match) or install {want} on the host",
            ctx.configs.lxc_path.display()
        ))
        .into());
    }
    for (ctid, c) in &ctx.configs.lxc.lxc_configs {
        for gpu in c.gpus() {
            let dev = format!("/dev/nvidia{gpu}");
            if !host::exists(&dev) {
                return Err(Error::precondition(format!(
                    "CT {ctid}: gpu_assignment names GPU {gpu} but `{dev}` does not exist on this host"
                ))
                .into());
            }
        }
    }
    Ok(())
}

fn ensure_dir(ctx: &StepContext, host_abs: &str) -> Result<()> {
    let p = host_path(host_abs);
    if p.is_dir() {
        return Ok(());
    }
    if ctx.dry_run {
        println!("would create directory `{host_abs}`");
        return Ok(());
    }
    std::fs::create_dir_all(&p).map_err(|e| {
        Error::new(
            crate::error::ErrorKind::Other,
            format!("cannot create directory `{}`: {e}", p.display()),
        )
    })?;
    log::info!("created directory `{host_abs}`");
    Ok(())
}
