//! Phoenix Hypervisor's one library crate. The binaries (`establish`, the per-step programs, the
//! setup plugins) are thin `main.rs` files over it.
//!
//! - [`cli`]: command-line definitions shared with `cargo xtask` (man page, completions).
//! - [`config`]: the typed model of both JSON files and loading them.
//! - [`error`]: the error kinds and the one place they become exit codes.
//! - [`install`]: the installed layout (xtask install, the Debian package, the test harness).
//! - [`paths`]: PREFIX, `PHOENIX_HOST_ROOT`, config file locations.
//! - [`logging`]: the shared log file format.

pub mod cli;
pub mod config;
pub mod error;
pub mod install;
pub mod logging;
pub mod paths;
pub mod plan;
pub mod validate;

pub use error::{Error, ErrorKind, Result};
