//! Phoenix Hypervisor's one library crate. The binaries (`establish`, the per-step programs, the
//! setup plugins) are thin `main.rs` files over it.
//!
//! - [`cli`]: command-line definitions shared with `cargo xtask` (man page, completions).
//! - [`types`]: the domain's values (hostnames, storage IDs, MACs, ...), each format parsed once.
//! - [`config`]: the typed model of both JSON files and loading them.
//! - [`error`]: the error kinds and the one place they become exit codes.
//! - [`json`]: strict JSON reading (duplicate keys are errors).
//! - [`install`]: the installed layout (xtask install, the Debian package, the test harness).
//! - [`paths`]: PREFIX, `PHOENIX_HOST_ROOT`, config file locations.
//! - [`logging`]: the shared log file format.
//! - [`pct`]: the one client for `pct`/`pvesm`/`pveversion` (argv building, running, failures).
//! - [`conffile`]: the one reader/writer of `/etc/pve/lxc/<id>.conf` (sections, atomic writes).
//! - [`guest`]: commands and files inside a container, over [`pct`].
//! - [`host`]: host facts from its files (driver version, device majors, storages).
//! - [`steps`]: the logic of initial-setup, create-lxc and clone-lxc.
//! - [`orchestrator`]: `phoenix_establish_hypervisor` (lock, step runner, pipeline per CT, `--jobs`).
//! - [`step`]: the frame of every step program (arguments, logging, configs, exit codes) and `wait_ready`.
//! - [`sdk`]: the setup-plugin SDK (`phoenix_hypervisor_setup_<CTID>` programs), with an example.

pub mod cli;
pub mod config;
pub mod error;
pub mod install;
pub mod json;
pub mod logging;
pub mod orchestrator;
pub mod paths;
pub mod plan;
pub mod types;
pub mod validate;

pub use error::{Error, ErrorKind, Result};
pub mod conffile;
pub mod guest;
pub mod host;
pub mod pct;
pub mod sdk;
pub mod step;
pub mod steps;
