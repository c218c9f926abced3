//! Guests: the ostemplate image, confined execution inside a container's rootfs, file transfer.
//!
//! Interface used by the `pct` implementation (stub until implemented).

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
    anyhow::bail!("guest image not implemented yet: {}", path.display())
}

/// Unpack an ostemplate tarball into an empty `rootfs` directory (`pct create`).
pub fn extract_ostemplate(tarball: &Path, rootfs: &Path) -> anyhow::Result<()> {
    anyhow::bail!(
        "extract not implemented yet: {} -> {}",
        tarball.display(),
        rootfs.display()
    )
}

/// Run `argv` inside the guest with stdio inherited; returns the command's own exit code
/// (127 when not found), as `pct exec` does.
pub fn exec(ctx: &GuestCtx, argv: &[String]) -> i32 {
    let _ = (ctx, argv);
    eprintln!("pve-sim: guest exec not implemented yet");
    1
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
    let _ = (ctx, src, dest, uid, gid, mode);
    anyhow::bail!("push not implemented yet")
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
    let _ = (ctx, path, dest, uid, gid, mode);
    anyhow::bail!("pull not implemented yet")
}
