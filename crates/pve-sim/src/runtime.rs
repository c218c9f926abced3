//! Power state of containers: `run/pve-sim/<vmid>.json` exists while the CT runs and
//! records when it started, when the guest's systemd reports `running` (`boot` latency) and
//! when its network is up (`network` latency).

use std::fs;

use serde::{Deserialize, Serialize};

use crate::host::{Host, write_atomic};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Runtime {
    pub start_ms: u64,
    /// When `systemctl is-system-running` starts to say `running` (`exec` works at once).
    pub boot_ready_ms: u64,
    /// When the guest's DHCP/DNS work (network-using guest doubles fail before).
    #[serde(default)]
    pub network_ready_ms: u64,
    pub pid: u32,
}

pub fn get(host: &Host, vmid: u32) -> Option<Runtime> {
    let t = fs::read_to_string(host.runtime_path(vmid)).ok()?;
    serde_json::from_str(&t).ok()
}

pub fn is_running(host: &Host, vmid: u32) -> bool {
    host.runtime_path(vmid).exists()
}

pub fn set_running(host: &Host, vmid: u32, rt: &Runtime) -> std::io::Result<()> {
    write_atomic(
        &host.runtime_path(vmid),
        serde_json::to_string(rt)
            .expect("runtime serialises")
            .as_bytes(),
    )
}

pub fn set_stopped(host: &Host, vmid: u32) -> std::io::Result<()> {
    // The LXC config of the last start goes with the running container.
    match fs::remove_file(host.run_dir().join(format!("{vmid}.conf"))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match fs::remove_file(host.runtime_path(vmid)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        o => o,
    }
}
