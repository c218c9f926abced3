//! Guests: the ostemplate image, confined execution inside a container's rootfs, file transfer.
//!
//! Interface used by the `pct` implementation. Submodules: [`image`] (the Ubuntu 24.04 rootfs
//! and its doubles), [`exec`] (mount namespace + chroot), [`files`] (push/pull),
//! [`runfile`] (the NVIDIA `.run` installer double served by the host-side `curl`),
//! [`conf`] (what exec reads from the CT config: hostname, features, device cgroup rules).
//!
//! Guest state kept by the doubles (`guest-image/`), all inside the rootfs; product code reads
//! it only through the doubles (`dpkg -s`, `systemctl is-active`, `docker ps`, `nvidia-smi`):
//! - packages: `/var/lib/pve-sim/dpkg/<pkg>` (version), rendered to `/var/lib/dpkg/status`;
//!   repositories seen by the last `apt-get update`: `/var/lib/apt/lists/pve-sim-repos`
//! - units: package units in `/var/lib/pve-sim/units/`, admin units in `/etc/systemd/system/`,
//!   enabled = link in `multi-user.target.wants/`, active = `/run/pve-sim/systemd/active/<unit>`
//! - docker: `/var/lib/docker-sim/{containers/<name>/,images/,volumes/}`; the daemon.json
//!   docker read at its start: `/run/pve-sim/docker/daemon.json`
//! - NVIDIA user space: `/var/lib/pve-sim/nvidia/driver_version` (runfile),
//!   `/var/lib/pve-sim/nvidia/userspace-replaced` (after `apt-get install cuda-drivers`)
//! - written by exec for the doubles: `/run/pve-sim/{unprivileged,features,denied-devices}`

pub mod conf;
pub mod exec;
pub mod files;
pub mod image;
pub mod runfile;

use std::path::{Path, PathBuf};

/// A GPU or other host device node bound into the guest, as derived from the container's
/// `lxc.mount.entry` / `devN` lines in the main section of its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBind {
    /// Host-absolute path as written in the config (e.g. `/dev/nvidia0`); resolve under the host root.
    pub host_path: PathBuf,
    /// Path inside the guest (e.g. `/dev/nvidia0`).
    pub guest_path: PathBuf,
}

/// What `exec`/`push`/`pull` need to know about one running container.
#[derive(Debug, Clone)]
pub struct GuestCtx {
    /// The simulated host's `/` (`PHOENIX_HOST_ROOT`).
    pub host_root: PathBuf,
    pub vmid: u32,
    /// The container's root filesystem directory on this machine (under `host_root`).
    pub rootfs: PathBuf,
    pub unprivileged: bool,
    pub devices: Vec<DeviceBind>,
}

/// Write a guest image tarball (what `pve-sim init --ostemplate PATH` places) at `path`
/// (a path on this machine, already under the host root).
pub fn write_ostemplate(path: &Path) -> anyhow::Result<()> {
    image::write(path)
}

/// Unpack an ostemplate tarball into an empty `rootfs` directory (`pct create`).
pub fn extract_ostemplate(tarball: &Path, rootfs: &Path) -> anyhow::Result<()> {
    image::extract(tarball, rootfs)
}

/// Run `argv` inside the guest with stdio inherited; returns the command's own exit code
/// (127 when not found, 126 when not executable), as `pct exec` does. When the sandbox itself
/// cannot be set up (not root, no mount namespaces, broken rootfs) the reason goes to stderr
/// and the result is 255, like an lxc-attach failure.
pub fn exec(ctx: &GuestCtx, argv: &[String]) -> i32 {
    match exec::run(ctx, argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pve-sim: CT {}: {e:#}", ctx.vmid);
            255
        }
    }
}

/// What Proxmox's container setup writes into the guest at each start: `/etc/hostname` and
/// the `127.0.1.1` line of `/etc/hosts` for the config's `hostname` (call from `pct start`).
pub fn set_hostname(rootfs: &Path, hostname: &str) -> anyhow::Result<()> {
    image::set_hostname(rootfs, hostname)
}

/// Whether [`exec`] can work in this process; `Err` says why not (tests skip on it).
pub fn exec_available() -> anyhow::Result<()> {
    exec::available()
}

/// What happens inside the guest when the container (re)starts: `/run` is emptied and the
/// enabled systemd units of the doubles become active again (call from `pct start`/`reboot`).
pub fn boot(rootfs: &Path) -> anyhow::Result<()> {
    image::boot(rootfs)
}

/// Timing of the guest's own boot, written by `pct start` into the guest's `/run/pve-sim` as
/// epoch milliseconds: `boot-done-ms` (systemd reports `running` from then on; `boot` latency)
/// and `network-up-ms` (DHCP/DNS work from then on; `network` latency). The doubles read them.
pub fn set_boot_timers(rootfs: &Path, boot_done_ms: u64, network_up_ms: u64) -> anyhow::Result<()> {
    let dir = files::resolve(rootfs, "/run/pve-sim", true)?;
    std::fs::create_dir_all(&dir)?;
    for (name, at) in [
        ("boot-done-ms", boot_done_ms),
        ("network-up-ms", network_up_ms),
    ] {
        let p = files::resolve(rootfs, &format!("/run/pve-sim/{name}"), true)?;
        std::fs::write(&p, format!("{at}\n"))?;
    }
    Ok(())
}

/// `pct push`: copy host file `src` (this machine's path) to `dest` inside the guest.
pub fn push(
    ctx: &GuestCtx,
    src: &Path,
    dest: &str,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
) -> anyhow::Result<()> {
    files::push(ctx, src, dest, uid, gid, mode)
}

/// `pct pull`: copy `path` inside the guest to host file `dest` (this machine's path).
pub fn pull(
    ctx: &GuestCtx,
    path: &str,
    dest: &Path,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
) -> anyhow::Result<()> {
    files::pull(ctx, path, dest, uid, gid, mode)
}
