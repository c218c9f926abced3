//! The logic of the step programs, in the library so the step binaries, the orchestrator and
//! the tests all reach the same code. Each step is idempotent (a second run changes nothing)
//! and honest in dry-run mode (mutating commands are printed, not run).

pub mod clone;
pub mod create;
pub mod docker;
pub mod initial_setup;
pub mod nvidia;

use crate::config::{ContainerSpec, Ctid};
use crate::error::{Error, Result};

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It changed the host (or, in dry-run mode, would have).
    Changed,
    /// Everything was already as configured.
    Unchanged,
}

impl Outcome {
    pub fn changed(self) -> bool {
        self == Outcome::Changed
    }

    /// `Changed` if either is.
    pub fn or(self, other: Outcome) -> Outcome {
        if self.changed() || other.changed() {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        }
    }
}

/// Check the numbers of a block that go onto a `pct` command line, so a bad value is a config
/// error (exit 2, nothing changed) naming the field instead of a failed Proxmox call. Every
/// text value (hostname, storage, template, network, MAC, features) is already a parsed
/// [`crate::types`] value; the full validation happens when the configs are loaded.
pub fn check_block(ctid: Ctid, spec: &ContainerSpec) -> Result<()> {
    let field = |f: &str| format!("lxc_configs.\"{ctid}\".{f}");
    let bad = |f: &str, v: &str, why: &str| -> anyhow::Error {
        Error::config(format!("CT {ctid}: {} = {v:?} {why}", field(f))).into()
    };
    if spec.memory_mb < 16 {
        return Err(bad(
            "memory_mb",
            &spec.memory_mb.to_string(),
            "is below Proxmox's minimum of 16",
        ));
    }
    if !(1..=8192).contains(&spec.cores) {
        return Err(bad("cores", &spec.cores.to_string(), "must be 1..8192"));
    }
    if spec.storage_size_gb == 0 {
        return Err(bad("storage_size_gb", "0", "must be at least 1"));
    }
    Ok(())
}

/// A snapshot name a configuration may use ([`crate::types::SnapshotName`]); else a config
/// error naming `what`.
pub fn check_snapshot_name(what: &str, name: &str) -> Result<crate::types::SnapshotName> {
    match name.parse::<crate::types::SnapshotName>() {
        Ok(s) => Ok(s),
        Err(e) => Err(Error::config(format!("{what}: {e}")).into()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{NetworkConfig, PortainerRole};

    pub(crate) fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.parse().unwrap(),
            memory_mb: 2048,
            cores: 2,
            template: "/fastData/shared-iso/template/cache/ubuntu.tar.zst"
                .parse()
                .unwrap(),
            storage_pool: "lxc-disks".parse().unwrap(),
            storage_size_gb: 32,
            network_config: NetworkConfig {
                name: "eth0".parse().unwrap(),
                bridge: "vmbr0".parse().unwrap(),
                ip: "10.0.0.200/24".parse().unwrap(),
                gw: "10.0.0.1".parse().unwrap(),
            },
            features: Some("nesting=1,keyctl=1".parse().unwrap()),
            static_ip: None,
            mac_address: Some("52:54:00:AA:BB:CC".parse().unwrap()),
            gpu_assignment: Some("none".parse().unwrap()),
            portainer_role: PortainerRole::None,
            unprivileged: true,
            vllm_model: None,
            vllm_tensor_parallel_size: None,
            is_template: None,
            template_snapshot_name: None,
            clone_from_template_ctid: None,
            onboot: None,
            startup: None,
            tags: None,
        }
    }

    #[test]
    fn block_checks_name_the_field() {
        assert!(check_block(Ctid(900), &spec("BaseTemplate")).is_ok());
        let mut s = spec("ok");
        s.memory_mb = 8;
        let err = check_block(Ctid(900), &s).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(
            err.to_string().contains("lxc_configs.\"900\".memory_mb"),
            "{err}"
        );
        // Text values cannot be wrong here: they are parsed types (see crate::types).
        assert!(
            "x'; touch /tmp/pwned; '"
                .parse::<crate::types::Hostname>()
                .is_err()
        );
        assert!(check_snapshot_name("snapshot", "base-snapshot").is_ok());
        for bad in ["current", "1x", "a", "a b", "x;y", "configured-state"] {
            assert!(check_snapshot_name("snapshot", bad).is_err(), "{bad}");
        }
    }
}
