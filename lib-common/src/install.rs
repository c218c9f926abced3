//! The installed layout (`architecture.md`, "Installed layout"), written by `cargo xtask install`,
//! the Debian package build and the end-to-end test harness alike:
//!
//! - `PREFIX/bin/<installed name>` — the binary (copied, or a symlink for test installs), and
//!   `PREFIX/bin/<installed name>.sh` — a symlink to it, the path the orchestrator runs. A `.sh`
//!   that is not our symlink is an administrator's drop-in replacement and is never touched.
//! - `PREFIX/etc/*.json` — shipped configs and schemas, installed only where absent.
//! - `PREFIX/lib/` — where initial setup writes its marker.
//!
//! Every write is atomic (temporary file, then rename) and skipped when the content is already
//! the same, so installing twice changes nothing.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::paths::installed_name;

/// What an install did, for the caller to print.
#[derive(Debug, Default)]
pub struct InstallReport {
    /// Files written (new or changed).
    pub written: Vec<PathBuf>,
    /// Files already as they should be.
    pub unchanged: Vec<PathBuf>,
    /// Files left alone on purpose (existing configs, drop-in scripts), with why.
    pub kept: Vec<(PathBuf, String)>,
}

/// How binaries land in PREFIX/bin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinMode {
    /// Copy the file (real installs).
    Copy,
    /// Symlink to the build output (test installs: fast, always current).
    Symlink,
}

/// Install `bins` (workspace binary names, found in `build_dir`) and the files of `etc_src`
/// into `prefix`.
pub fn install(
    build_dir: &Path,
    bins: &[String],
    etc_src: &Path,
    prefix: &Path,
    mode: BinMode,
) -> Result<InstallReport> {
    let mut report = InstallReport::default();
    let bin_dir = prefix.join("bin");
    for dir in [bin_dir.clone(), prefix.join("etc"), prefix.join("lib")] {
        fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    for bin in bins {
        let Some(name) = installed_name(bin) else {
            continue;
        };
        let src = build_dir.join(bin);
        anyhow::ensure!(
            src.is_file(),
            "`{}` is not built (expected it in `{}`)",
            bin,
            build_dir.display()
        );
        let dest = bin_dir.join(&name);
        let changed = match mode {
            BinMode::Copy => copy_if_changed(&src, &dest, 0o755)?,
            BinMode::Symlink => symlink_if_changed(&fs::canonicalize(&src)?, &dest)?,
        };
        record(&mut report, dest, changed);
        let sh = bin_dir.join(format!("{name}.sh"));
        match fs::symlink_metadata(&sh) {
            Ok(meta)
                if !meta.file_type().is_symlink() || fs::read_link(&sh)? != Path::new(&name) =>
            {
                report.kept.push((
                    sh,
                    "not our symlink: a drop-in replacement, left as it is".into(),
                ));
            }
            Ok(_) => report.unchanged.push(sh),
            Err(_) => {
                std::os::unix::fs::symlink(&name, &sh)
                    .with_context(|| format!("cannot create `{}`", sh.display()))?;
                report.written.push(sh);
            }
        }
    }
    if etc_src.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(etc_src)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        entries.sort();
        for src in entries
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            let dest = prefix.join("etc").join(src.file_name().unwrap());
            if dest.exists() {
                let same = fs::read(&dest).ok() == fs::read(&src).ok();
                if same {
                    report.unchanged.push(dest);
                } else {
                    report.kept.push((dest, "exists and differs from the shipped file: kept (remove it to get the shipped one)".into()));
                }
            } else {
                copy_if_changed(&src, &dest, 0o644)?;
                report.written.push(dest);
            }
        }
    }
    Ok(report)
}

/// Remove what [`install`] put in PREFIX/bin for `bins`: the binaries and our `.sh` symlinks.
/// Configs, the marker and drop-in scripts stay. Returns the removed paths.
pub fn uninstall(bins: &[String], prefix: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for name in bins.iter().filter_map(|b| installed_name(b)) {
        let bin = prefix.join("bin").join(&name);
        let sh = prefix.join("bin").join(format!("{name}.sh"));
        if fs::symlink_metadata(&sh).is_ok_and(|m| m.file_type().is_symlink())
            && fs::read_link(&sh)? == Path::new(&name)
        {
            fs::remove_file(&sh)?;
            removed.push(sh);
        }
        if fs::symlink_metadata(&bin).is_ok() {
            fs::remove_file(&bin)?;
            removed.push(bin);
        }
    }
    Ok(removed)
}

fn record(report: &mut InstallReport, path: PathBuf, changed: bool) {
    if changed {
        report.written.push(path);
    } else {
        report.unchanged.push(path);
    }
}

/// Copy `src` to `dest` through a temporary file and rename, unless the bytes are equal.
fn copy_if_changed(src: &Path, dest: &Path, mode: u32) -> Result<bool> {
    let data = fs::read(src).with_context(|| format!("cannot read `{}`", src.display()))?;
    if fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_file())
        && fs::read(dest).ok().as_deref() == Some(&data[..])
    {
        return Ok(false);
    }
    crate::fsutil::replace_file(dest, &data, Some(mode))
        .with_context(|| format!("cannot install `{}`", dest.display()))?;
    Ok(true)
}

fn symlink_if_changed(target: &Path, dest: &Path) -> Result<bool> {
    if fs::read_link(dest).ok().as_deref() == Some(target) {
        return Ok(false);
    }
    let tmp = dest.with_file_name(format!(
        ".{}.tmp",
        dest.file_name().unwrap().to_string_lossy()
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, dest).with_context(|| format!("cannot install `{}`", dest.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let build = dir.path().join("build");
        let etc = dir.path().join("etc-src");
        fs::create_dir_all(&build).unwrap();
        fs::create_dir_all(&etc).unwrap();
        for b in ["create-lxc", "setup-950", "pct"] {
            fs::write(build.join(b), format!("#!/bin/sh\necho {b}\n")).unwrap();
        }
        fs::write(etc.join("phoenix_lxc_configs.json"), "{}").unwrap();
        let prefix = dir.path().join("prefix");
        (dir, build, etc, prefix)
    }

    fn bins() -> Vec<String> {
        ["create-lxc", "setup-950", "pct"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn installs_layout_once_and_is_idempotent() {
        let (_d, build, etc, prefix) = setup();
        let r = install(&build, &bins(), &etc, &prefix, BinMode::Copy).unwrap();
        assert!(prefix.join("bin/phoenix_hypervisor_create_lxc").is_file());
        assert_eq!(
            fs::read_link(prefix.join("bin/phoenix_hypervisor_setup_950.sh")).unwrap(),
            Path::new("phoenix_hypervisor_setup_950")
        );
        assert!(
            !prefix.join("bin/pct").exists(),
            "pve-sim binaries are never installed"
        );
        assert!(
            prefix.join("etc/phoenix_lxc_configs.json").is_file() && prefix.join("lib").is_dir()
        );
        assert_eq!(r.written.len(), 5);
        let again = install(&build, &bins(), &etc, &prefix, BinMode::Copy).unwrap();
        assert!(again.written.is_empty(), "{:?}", again.written);
    }

    #[test]
    fn keeps_configs_and_drop_in_scripts() {
        let (_d, build, etc, prefix) = setup();
        fs::create_dir_all(prefix.join("etc")).unwrap();
        fs::create_dir_all(prefix.join("bin")).unwrap();
        fs::write(prefix.join("etc/phoenix_lxc_configs.json"), "{\"mine\":1}").unwrap();
        fs::write(
            prefix.join("bin/phoenix_hypervisor_create_lxc.sh"),
            "#!/bin/sh\necho mine\n",
        )
        .unwrap();
        let r = install(&build, &bins(), &etc, &prefix, BinMode::Symlink).unwrap();
        assert_eq!(
            fs::read_to_string(prefix.join("etc/phoenix_lxc_configs.json")).unwrap(),
            "{\"mine\":1}"
        );
        assert_eq!(
            fs::read_to_string(prefix.join("bin/phoenix_hypervisor_create_lxc.sh")).unwrap(),
            "#!/bin/sh\necho mine\n"
        );
        assert_eq!(r.kept.len(), 2);
        let removed = uninstall(&bins(), &prefix).unwrap();
        assert!(
            prefix
                .join("bin/phoenix_hypervisor_create_lxc.sh")
                .is_file(),
            "drop-in survives uninstall"
        );
        assert!(!prefix.join("bin/phoenix_hypervisor_create_lxc").exists());
        assert_eq!(removed.len(), 3);
    }
}
