//! `cargo xtask deb`: a Debian package (amd64) for Proxmox VE hosts (Debian 12/13), built with
//! `dpkg-deb` from a staged tree that has the installed layout under
//! `/usr/local/phoenix_hypervisor` — the paths the design and its configuration files name —
//! plus the man page and shell completions in the standard Debian places.
//!
//! The two configuration files are conffiles: dpkg keeps an administrator's edits on upgrade.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::CommandFactory;
use lib_common::cli::EstablishArgs;
use lib_common::install::BinMode;

use crate::build::{build_bins, installable_bins, target_dir, workspace_root};

pub const PACKAGE: &str = "phoenix-hypervisor";
const PREFIX: &str = "usr/local/phoenix_hypervisor";
const PROGRAM: &str = "phoenix_establish_hypervisor";

pub fn build(release: bool) -> Result<()> {
    let build_dir = build_bins(release)?;
    let out_dir = target_dir()?.join("deb");
    let deb = package(&build_dir, &installable_bins()?, &out_dir)?;
    println!("Built {}", deb.display());
    crate::build::run(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    Ok(())
}

/// Stage and build the package from binaries in `build_dir`; returns the `.deb` path.
pub fn package(build_dir: &Path, bins: &[String], out_dir: &Path) -> Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let stage = out_dir.join(format!("{PACKAGE}_{version}_amd64"));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    let prefix = stage.join(PREFIX);
    lib_common::install::install(
        build_dir,
        bins,
        &workspace_root().join("etc"),
        &prefix,
        BinMode::Copy,
    )?;
    write_docs(&stage)?;

    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let size_kib = dir_size(&stage)? / 1024;
    fs::write(
        debian.join("control"),
        format!(
            "Package: {PACKAGE}\n\
Version: {version}\n\
Architecture: amd64\n\
Maintainer: Phoenix Hypervisor developers <root@localhost>\n\
Section: admin\n\
Priority: optional\n\
Depends: libc6 (>= 2.36), pve-container\n\
Installed-Size: {size_kib}\n\
Description: build Proxmox VE LXC templates and containers from JSON\n \
phoenix_establish_hypervisor creates a hierarchy of LXC templates and the application\n \
containers cloned from them, with NVIDIA GPU passthrough, Docker and Portainer, from\n \
phoenix_hypervisor_config.json and phoenix_lxc_configs.json. Re-running converges.\n"
        ),
    )?;
    let conffiles: String = [
        lib_common::paths::HYPERVISOR_CONFIG_NAME,
        lib_common::paths::LXC_CONFIG_NAME,
    ]
    .iter()
    .filter(|name| prefix.join("etc").join(name).is_file())
    .map(|name| format!("/{PREFIX}/etc/{name}\n"))
    .collect();
    fs::write(debian.join("conffiles"), conffiles)?;
    let deb = out_dir.join(format!("{PACKAGE}_{version}_amd64.deb"));
    Command::new("dpkg-deb")
        .arg("--version")
        .output()
        .context("dpkg-deb is needed to build the package: apt-get install dpkg")?;
    crate::build::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb)
            .stdout(std::process::Stdio::null()),
    )?;
    Ok(deb)
}

/// Man page (section 8: administration) and bash/zsh/fish completions, from the clap definition.
pub fn write_docs(stage: &Path) -> Result<()> {
    let man_dir = stage.join("usr/share/man/man8");
    fs::create_dir_all(&man_dir)?;
    let mut roff = Vec::new();
    clap_mangen::Man::new(EstablishArgs::command())
        .section("8")
        .render(&mut roff)?;
    let man = man_dir.join(format!("{PROGRAM}.8"));
    fs::write(&man, roff)?;
    crate::build::run(Command::new("gzip").args(["-9nf"]).arg(&man))?;

    use clap_complete::Shell;
    for (shell, dir, name) in [
        (
            Shell::Bash,
            "usr/share/bash-completion/completions",
            PROGRAM.to_string(),
        ),
        (
            Shell::Zsh,
            "usr/share/zsh/vendor-completions",
            format!("_{PROGRAM}"),
        ),
        (
            Shell::Fish,
            "usr/share/fish/vendor_completions.d",
            format!("{PROGRAM}.fish"),
        ),
    ] {
        let dir = stage.join(dir);
        fs::create_dir_all(&dir)?;
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut EstablishArgs::command(), PROGRAM, &mut out);
        fs::write(dir.join(name), out)?;
    }
    let doc = stage.join(format!("usr/share/doc/{PACKAGE}"));
    fs::create_dir_all(&doc)?;
    fs::copy(workspace_root().join("README.md"), doc.join("README.md"))?;
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the package from the debug binaries `cargo test --workspace` built and inspects it.
    #[test]
    fn package_has_the_installed_layout() {
        if Command::new("dpkg-deb").arg("--version").output().is_err() {
            eprintln!("skipped: dpkg-deb is not installed (apt-get install dpkg)");
            return;
        }
        let build_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let bins: Vec<String> = lib_common::paths::PROGRAMS
            .iter()
            .map(|(b, _)| b.to_string())
            .collect();
        if let Some(missing) = bins.iter().find(|b| !build_dir.join(b).is_file()) {
            panic!(
                "`{missing}` is not built in {}: run `cargo test --workspace`",
                build_dir.display()
            );
        }
        let out = tempfile::tempdir().unwrap();
        let deb = package(&build_dir, &bins, out.path()).unwrap();
        let listing = Command::new("dpkg-deb")
            .arg("--contents")
            .arg(&deb)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&listing.stdout);
        for (_, name) in lib_common::paths::PROGRAMS {
            assert!(
                listing.contains(&format!("./{PREFIX}/bin/{name}\n")),
                "{name} missing:\n{listing}"
            );
            assert!(
                listing.contains(&format!("./{PREFIX}/bin/{name}.sh -> {name}")),
                "{name}.sh link missing:\n{listing}"
            );
        }
        for path in [
            format!("./{PREFIX}/etc/phoenix_lxc_configs.schema.json"),
            format!("./{PREFIX}/lib/"),
            format!("./usr/share/man/man8/{PROGRAM}.8.gz"),
            format!("./usr/share/bash-completion/completions/{PROGRAM}"),
        ] {
            assert!(listing.contains(&path), "{path} missing:\n{listing}");
        }
        assert!(
            listing.contains("root/root"),
            "files are owned by root:\n{listing}"
        );
        assert!(!listing.contains("/bin/pct"), "pve-sim is never packaged");
        let control = Command::new("dpkg-deb")
            .args(["--field"])
            .arg(&deb)
            .args(["Package", "Architecture"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&control.stdout),
            format!("Package: {PACKAGE}\nArchitecture: amd64\n")
        );
        let conffiles = Command::new("dpkg-deb")
            .args(["--ctrl-tarfile"])
            .arg(&deb)
            .output()
            .unwrap();
        assert!(!conffiles.stdout.is_empty());
    }
}
