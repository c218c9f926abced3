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

/// Where a guest path really lives while the guest runs (see [`super::exec`]).
#[derive(Debug, PartialEq)]
pub enum Location {
    /// In the container's rootfs.
    Rootfs(PathBuf),
    /// In one of the machine's directories bound read-only into every guest.
    Machine(PathBuf),
}

/// Resolve `guest_path` like [`resolve`], then account for the mounts `exec` sets up: the
/// guest's `/usr/share/keyrings` is kept in the rootfs under another name, and
/// `/usr/{bin,sbin,lib,lib64,libexec,share}` are the machine's.
pub fn locate(rootfs: &Path, guest_path: &str, follow_last: bool) -> anyhow::Result<Location> {
    let full = resolve(rootfs, guest_path, follow_last)?;
    let rel = full.strip_prefix(rootfs).unwrap_or(&full).to_path_buf();
    if let Ok(rest) = rel.strip_prefix("usr/share/keyrings")
        && Path::new("/usr/share/keyrings").is_dir()
    {
        return Ok(Location::Rootfs(
            rootfs.join(super::exec::GUEST_KEYRINGS).join(rest),
        ));
    }
    for d in ["bin", "sbin", "lib", "lib64", "libexec", "share"] {
        if let Ok(rest) = rel.strip_prefix(Path::new("usr").join(d))
            && Path::new("/usr").join(d).is_dir()
        {
            return Ok(Location::Machine(Path::new("/usr").join(d).join(rest)));
        }
    }
    Ok(Location::Rootfs(full))
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
    let target = match locate(&ctx.rootfs, dest, false)
        .with_context(|| format!("CT {}: push to '{dest}'", ctx.vmid))?
    {
        Location::Rootfs(p) => p,
        Location::Machine(_) => {
            bail!(
                "CT {}: failed to open {dest} for writing: Read-only file system",
                ctx.vmid
            )
        }
    };
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
    let (Location::Rootfs(source) | Location::Machine(source)) = locate(&ctx.rootfs, path, true)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_in_rootfs() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../etc", r.join("usr/rel")).unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        assert_eq!(resolve(r, "/abs/x", false).unwrap(), r.join("etc/x"));
        assert_eq!(resolve(r, "/usr/rel/x", false).unwrap(), r.join("etc/x"));
        assert_eq!(
            resolve(r, "/../../../etc/x", false).unwrap(),
            r.join("etc/x")
        );
        assert_eq!(resolve(r, "/bin/sh", false).unwrap(), r.join("usr/bin/sh"));
        // the last component is followed only on request
        assert_eq!(resolve(r, "/abs", false).unwrap(), r.join("abs"));
        assert_eq!(resolve(r, "/abs", true).unwrap(), r.join("etc"));
        assert!(resolve(r, "relative", false).is_err());
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert!(resolve(r, "/loop/x", false).is_err());
    }

    #[test]
    fn machine_dirs_are_located_on_the_machine() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        if Path::new("/usr/bin").is_dir() {
            assert_eq!(
                locate(r, "/bin/sh", false).unwrap(),
                Location::Machine(PathBuf::from("/usr/bin/sh"))
            );
        }
        assert_eq!(
            locate(r, "/usr/local/bin/x", false).unwrap(),
            Location::Rootfs(r.join("usr/local/bin/x"))
        );
        if Path::new("/usr/share/keyrings").is_dir() {
            assert_eq!(
                locate(r, "/usr/share/keyrings/k.gpg", false).unwrap(),
                Location::Rootfs(r.join(crate::guest::exec::GUEST_KEYRINGS).join("k.gpg"))
            );
        }
    }
}
