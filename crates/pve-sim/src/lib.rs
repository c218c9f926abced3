//! pve-sim: a Proxmox VE host in a directory (`../shared/docs/simulator.md`).
//!
//! - [`guest`]: what runs inside a container: the guest image (ostemplate tarball), the
//!   confined `pct exec`, `pct push`/`pull`, and the guest doubles.

pub mod guest;
