//! Phoenix Hypervisor's one library crate. The binaries (`establish`, the per-step programs, the
//! setup plugins) are thin `main.rs` files over it.
//!
//! - [`error`]: the error kinds and the one place they become exit codes.
//! - [`paths`]: PREFIX, `PHOENIX_HOST_ROOT`, config file locations.
//! - [`logging`]: the shared log file format.

pub mod error;
pub mod logging;
pub mod paths;

pub use error::{Error, ErrorKind, Result};
