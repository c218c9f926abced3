//! Project automation, reached as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! - `install [--root PREFIX] [--debug]`: build and lay out the installed tree.
//! - `uninstall [--root PREFIX]`: remove the installed programs (configs stay).
//! - `demo`: the main job against a temporary pve-sim host.
//! - `bench`: the benchmarks whose figures the README records.
//! - `bench-orch [--debug] [--calls-only]`: only the orchestrator benchmark (or only its `pct`
//!   call counts and `call 300` wall times).
//! - `deb`: a Debian package for Proxmox VE hosts.

mod bench_orch;
mod build;
mod deb;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Phoenix Hypervisor project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Release build, then install into PREFIX (binaries, `.sh` symlinks, etc/ where absent, lib/).
    Install {
        /// Install prefix (default: $PHOENIX_ROOT or /usr/local/phoenix_hypervisor).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Install the debug build instead (faster to build).
        #[arg(long)]
        debug: bool,
    },
    /// Remove the installed programs and their `.sh` symlinks; configs, marker and drop-in scripts stay.
    Uninstall {
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Build, install into a temporary pve-sim host, run the orchestrator twice, show the result.
    Demo {
        /// Keep the host directory here instead of a new temporary one.
        #[arg(long)]
        host_root: Option<PathBuf>,
    },
    /// Run the benchmarks (validation, pct call cost, orchestrator).
    Bench,
    /// Only the orchestrator benchmark (pve-sim with latency rules).
    BenchOrch {
        /// Use the debug build (faster to build, slower to run).
        #[arg(long)]
        debug: bool,
        /// Only (e): `pct` calls per container and wall time with `call 300`.
        #[arg(long)]
        calls_only: bool,
        /// (e) also for the binaries in this build directory (e.g. a build of the commit
        /// before issue 14, `91b6733`), measured in the same run: the "before" column.
        #[arg(long, value_name = "BUILD_DIR")]
        before: Option<PathBuf>,
    },
    /// Build a Debian package (amd64) into target/deb/.
    Deb {
        /// Package the debug build instead (faster to build).
        #[arg(long)]
        debug: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Install { root, debug } => build::install(root, !debug),
        Command::Uninstall { root } => build::uninstall(root),
        Command::Demo { host_root } => demo::run(host_root),
        Command::Bench => build::bench(),
        Command::BenchOrch {
            debug,
            calls_only,
            before,
        } => bench_orch::run(!debug, calls_only, before.as_deref()),
        Command::Deb { debug } => deb::build(!debug),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
