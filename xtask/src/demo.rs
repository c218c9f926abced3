//! `cargo xtask demo`: the main job on the embedded default configuration, against a temporary
//! pve-sim host. Nothing on this machine outside that directory is touched.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use lib_common::install::BinMode;

use crate::build::{build_bins, installable_bins, print_report, workspace_root};

const PREFIX_IN_HOST: &str = "usr/local/phoenix_hypervisor";

pub fn run(host_root: Option<PathBuf>) -> Result<()> {
    let build_dir = build_bins(false)?;
    let (root, _keep) = match host_root {
        Some(p) => (p, None),
        None => {
            let dir = tempfile::Builder::new().prefix("phoenix-demo-").tempdir()?;
            (dir.path().to_path_buf(), Some(dir.keep()))
        }
    };
    println!("== Simulated Proxmox VE host in {}", root.display());
    let sim = |args: &[&str]| -> Command {
        let mut c = Command::new(build_dir.join(args[0]));
        c.args(&args[1..]).env("PHOENIX_HOST_ROOT", &root);
        c
    };
    let root_s = root.to_string_lossy().into_owned();
    crate::build::run(&mut sim(&[
        "pve-sim",
        "init",
        "--host-root",
        &root_s,
        "--force",
        "--reference",
    ]))?;
    let prefix = root.join(PREFIX_IN_HOST);
    println!("== Installing into {}", prefix.display());
    let report = lib_common::install::install(
        &build_dir,
        &installable_bins()?,
        &workspace_root().join("etc"),
        &prefix,
        BinMode::Copy,
    )?;
    print_report(&report);

    let path = std::env::join_paths(std::iter::once(build_dir.clone()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let establish = |label: &str| -> Result<i32> {
        println!("\n== {label}: phoenix_establish_hypervisor");
        let status = Command::new(prefix.join("bin/phoenix_establish_hypervisor.sh"))
            .env("PATH", &path)
            .env("PHOENIX_HOST_ROOT", &root)
            .env("PHOENIX_ROOT", &prefix)
            .status()
            .context("cannot run phoenix_establish_hypervisor")?;
        Ok(status.code().unwrap_or(1))
    };
    let first = establish("First run")?;
    show_list(&build_dir, &root)?;
    let second = establish("Second run (nothing should change)")?;
    println!(
        "\nLog file:  {}",
        root.join("var/log/phoenix_hypervisor.log").display()
    );
    println!(
        "Host root: {}  (pve-sim journal: var/log/pve-sim/journal.jsonl)",
        root.display()
    );
    if first != 0 || second != 0 {
        bail!("the orchestrator exited {first} (first run) and {second} (second run)");
    }
    Ok(())
}

fn show_list(build_dir: &Path, root: &Path) -> Result<()> {
    println!("\n== pct list");
    crate::build::run(
        Command::new(build_dir.join("pct"))
            .arg("list")
            .env("PHOENIX_HOST_ROOT", root),
    )
}
