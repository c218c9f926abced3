//! Building the workspace and installing it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use lib_common::install::{BinMode, InstallReport};
use lib_common::paths::installed_name;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// The target directory `cargo` uses for this workspace.
pub fn target_dir() -> Result<PathBuf> {
    Ok(PathBuf::from(
        metadata()?["target_directory"]
            .as_str()
            .context("cargo metadata: target_directory")?,
    ))
}

fn metadata() -> Result<serde_json::Value> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Every workspace binary that is installed (has an installed name), sorted.
pub fn installable_bins() -> Result<Vec<String>> {
    let meta = metadata()?;
    let mut bins: Vec<String> = meta["packages"]
        .as_array()
        .context("cargo metadata: packages")?
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str().map(String::from))
        .filter(|n| installed_name(n).is_some())
        .collect();
    bins.sort();
    Ok(bins)
}

/// Build every workspace binary; returns the directory they are in.
pub fn build_bins(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--workspace", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    Ok(target_dir()?.join(if release { "release" } else { "debug" }))
}

fn prefix_or_default(root: Option<PathBuf>) -> PathBuf {
    root.unwrap_or_else(lib_common::paths::prefix)
}

pub fn print_report(report: &InstallReport) {
    for p in &report.written {
        println!("  installed  {}", p.display());
    }
    for (p, why) in &report.kept {
        println!("  kept       {} ({why})", p.display());
    }
    println!(
        "  {} written, {} unchanged, {} kept",
        report.written.len(),
        report.unchanged.len(),
        report.kept.len()
    );
}

pub fn install(root: Option<PathBuf>, release: bool) -> Result<()> {
    let prefix = prefix_or_default(root);
    let build_dir = build_bins(release)?;
    let bins = installable_bins()?;
    println!("Installing into {}", prefix.display());
    let report = lib_common::install::install(
        &build_dir,
        &bins,
        &workspace_root().join("etc"),
        &prefix,
        BinMode::Copy,
    )?;
    print_report(&report);
    Ok(())
}

pub fn uninstall(root: Option<PathBuf>) -> Result<()> {
    let prefix = prefix_or_default(root);
    let removed = lib_common::install::uninstall(&installable_bins()?, &prefix)?;
    for p in &removed {
        println!("  removed    {}", p.display());
    }
    println!(
        "  {} removed; {} and {} are kept (configuration and marker)",
        removed.len(),
        prefix.join("etc").display(),
        prefix.join("lib").display()
    );
    Ok(())
}

pub fn bench() -> Result<()> {
    println!("== configuration validation (1,000 containers)");
    run(cargo().args(["bench", "-p", "lib-common"]))?;
    println!("== pve-sim: cost of one pct call");
    run(cargo().args(["bench", "-p", "pve-sim"]))?;
    crate::bench_orch::run(true, false, None)
}
