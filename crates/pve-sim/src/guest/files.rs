//! `pct push` / `pct pull`: file transfer between the machine and a container rootfs.
//!
//! Guest paths are resolved as the guest sees them (chroot semantics): symlinks inside the
//! rootfs are followed relative to the rootfs, so an absolute link such as `/etc -> /etc` can
//! never redirect a copy onto the machine's own files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

use super::GuestCtx;

/// Resolve the guest-absolute `guest_path` to a path on this machine under `rootfs`, following
/// symlinks as the guest would (the last component only with `follow_last`).
pub fn resolve(rootfs: &Path, guest_path: &str, follow_last: bool) -> anyhow::Result<PathBuf> {
    if !guest_path.starts_with('/') {
        bail!("guest path '{guest_path}' must be absolute");
    }
    let mut pending: Vec<std::ffi::OsString> = Path::new(guest_path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut cur = PathBuf::new(); // relative to rootfs
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let candidate = cur.join(&name);
        let is_last = pending.is_empty();
        match fs::symlink_metadata(rootfs.join(&candidate)) {
            Ok(m) if m.file_type().is_symlink() && (follow_last || !is_last) => {
                hops += 1;
                if hops > 40 {
                    bail!("too many levels of symbolic links resolving '{guest_path}'");
                }
                let target = fs::read_link(rootfs.join(&candidate))?;
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                let comps: Vec<std::ffi::OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                pending.extend(comps.into_iter().rev());
            }
            _ => cur = candidate,
        }
    }
    Ok(rootfs.join(cur))
}

/// Write `data` to `dest` atomically (temp file in the same directory, then rename) with
/// the given mode and owner.
fn write_atomic(
    dest: &Path,
    data: &[u8],
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> anyhow::Result<()> {
    let dir = dest
        .parent()
        .with_context(|| format!("{} has no parent directory", dest.display()))?;
    if !dir.is_dir() {
        bail!(
            "failed to open {} for writing: No such file or directory",
            dest.display()
        );
    }
    if dest.is_dir() {
        bail!(
            "failed to open {} for writing: Is a directory",
            dest.display()
        );
    }
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.pve-sim-{}", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        let mut f = fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::chown(&tmp, uid, gid)
                .with_context(|| format!("chown {}", tmp.display()))?;
        }
        fs::rename(&tmp, dest).with_context(|| format!("rename onto {}", dest.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `pct push`. Without `mode` the source file's permission bits are kept.
pub fn push(
    ctx: &GuestCtx,
    src: &Path,
    dest: &str,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
) -> anyhow::Result<()> {
    let data =
        fs::read(src).with_context(|| format!("failed to open {} for reading", src.display()))?;
    let src_mode = fs::metadata(src)?.permissions().mode() & 0o7777;
    let target = resolve(&ctx.rootfs, dest, false)
        .with_context(|| format!("CT {}: push to '{dest}'", ctx.vmid))?;
    write_atomic(&target, &data, mode.unwrap_or(src_mode), uid, gid)
        .with_context(|| format!("CT {}: push {} to '{dest}'", ctx.vmid, src.display()))
}

/// `pct pull`. Without `mode` the guest file's permission bits are kept.
pub fn pull(
    ctx: &GuestCtx,
    path: &str,
    dest: &Path,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
) -> anyhow::Result<()> {
    let source = resolve(&ctx.rootfs, path, true)
        .with_context(|| format!("CT {}: pull '{path}'", ctx.vmid))?;
    let meta = fs::metadata(&source)
        .with_context(|| format!("CT {}: failed to open {path} for reading", ctx.vmid))?;
    if !meta.is_file() {
        bail!("CT {}: {path} is not a regular file", ctx.vmid);
    }
    let data = fs::read(&source)
        .with_context(|| format!("CT {}: failed to open {path} for reading", ctx.vmid))?;
    write_atomic(
        dest,
        &data,
        mode.unwrap_or(meta.permissions().mode() & 0o7777),
        uid,
        gid,
    )
    .with_context(|| format!("CT {}: pull '{path}' to {}", ctx.vmid, dest.display()))
}
