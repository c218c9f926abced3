//! pve-sim: a Proxmox VE host in a directory (`../shared/docs/simulator.md`).
