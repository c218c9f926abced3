//! Phoenix Hypervisor's one library crate. The binaries (`establish`, the per-step programs, the
//! setup plugins) are thin `main.rs` files over it.
//!
//! - [`config`]: the typed model of both JSON files and loading them.
//! - [`error`]: the error kinds and the one place they become exit codes.
//! - [`paths`]: PREFIX, `PHOENIX_HOST_ROOT`, config file locations.
//! - [`logging`]: the shared log file format.

pub mod config;
pub mod error;
pub mod logging;
pub mod paths;
pub mod plan;
pub mod validate;

pub use error::{Error, ErrorKind, Result};
