//! The logic of the step programs, in the library so the step binaries, the orchestrator and
//! the tests all reach the same code. Each step is idempotent (a second run changes nothing)
//! and honest in dry-run mode (mutating commands are printed, not run).

pub mod clone;
pub mod create;
pub mod docker;
pub mod initial_setup;
pub mod nvidia;

use std::sync::LazyLock;

use regex::Regex;

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

// Proxmox's formats for the values we put on a pct command line (proxmox.md).
static DNS_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$")
        .expect("valid regex")
});
static UNICAST_MAC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$").expect("valid regex")
});
static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[-_.\w\d]+$").expect("valid regex"));
static STORAGE_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$").expect("valid regex"));
static CONFIG_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^[a-z][a-z0-9_-]+$").expect("valid regex"));

fn ipv4(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok()
}

fn ipv4_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, len)) => ipv4(ip) && len.parse::<u8>().is_ok_and(|l| (8..=32).contains(&l)),
        None => false,
    }
}

/// Check the values of a block that go onto a `pct` command line, so a bad value is a config
/// error (exit 2, nothing changed) naming the field instead of a failed Proxmox call. The full
/// schema and semantic validation happens when the configs are loaded; this is the last guard
/// before values reach `pct`.
pub fn check_block(ctid: Ctid, spec: &ContainerSpec) -> Result<()> {
    let field = |f: &str| format!("lxc_configs.\"{ctid}\".{f}");
    let bad = |f: &str, v: &str, why: &str| -> anyhow::Error {
        Error::config(format!("CT {ctid}: {} = {v:?} {why}", field(f))).into()
    };
    if spec.name.len() > 255 || !DNS_NAME.is_match(&spec.name) {
        return Err(bad(
            "name",
            &spec.name,
            "is not a valid hostname (letters, digits, '-' and '.'; no '_', spaces or quotes)",
        ));
    }
    if !STORAGE_ID.is_match(&spec.storage_pool) {
        return Err(bad(
            "storage_pool",
            &spec.storage_pool,
            "is not a valid Proxmox storage ID",
        ));
    }
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
    let net = &spec.network_config;
    if !WORD.is_match(&net.name) {
        return Err(bad(
            "network_config.name",
            &net.name,
            "is not a valid interface name",
        ));
    }
    if !WORD.is_match(&net.bridge) {
        return Err(bad(
            "network_config.bridge",
            &net.bridge,
            "is not a valid bridge name",
        ));
    }
    let ip = spec.static_ip.as_deref().unwrap_or(&net.ip);
    if !(ipv4_cidr(ip) || ip == "dhcp" || ip == "manual") {
        let f = if spec.static_ip.is_some() {
            "static_ip"
        } else {
            "network_config.ip"
        };
        return Err(bad(
            f,
            ip,
            "is not IPv4/CIDR (e.g. 10.0.0.200/24), dhcp or manual",
        ));
    }
    if !net.gw.is_empty() && !ipv4(&net.gw) {
        return Err(bad("network_config.gw", &net.gw, "is not an IPv4 address"));
    }
    if let Some(mac) = &spec.mac_address
        && !UNICAST_MAC.is_match(mac)
    {
        return Err(bad(
            "mac_address",
            mac,
            "is not a unicast MAC address (XX:XX:XX:XX:XX:XX, first octet even)",
        ));
    }
    for (k, v) in spec.feature_pairs() {
        let ok = crate::validate::KNOWN_FEATURES.contains(&k.as_str())
            && if k == "mount" {
                !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == ';')
            } else {
                v == "0" || v == "1"
            };
        if !ok {
            return Err(bad(
                "features",
                spec.features.as_deref().unwrap_or(""),
                &format!(
                    "has an invalid item '{k}={v}' (known: {}=0|1)",
                    crate::validate::KNOWN_FEATURES.join(", ")
                ),
            ));
        }
    }
    if !spec.template.starts_with('/') && !spec.template.contains(":vztmpl/") {
        return Err(bad(
            "template",
            &spec.template,
            "must be an absolute path or a `storage:vztmpl/...` volume ID",
        ));
    }
    Ok(())
}

/// A snapshot name Proxmox accepts (`pve-configid`, at most 40, not reserved); else a config
/// error naming `what`.
pub fn check_snapshot_name(what: &str, name: &str) -> Result<()> {
    if name.len() > 40 || !CONFIG_ID.is_match(name) || name == "current" || name == "vzdump" {
        return Err(Error::config(format!(
            "{what} {name:?} is not a valid Proxmox snapshot name (a letter, then letters, digits, '_' or '-'; at most 40; not 'current' or 'vzdump')"
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{NetworkConfig, PortainerRole};

    pub(crate) fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            memory_mb: 2048,
            cores: 2,
            template: "/fastData/shared-iso/template/cache/ubuntu.tar.zst".into(),
            storage_pool: "lxc-disks".into(),
            storage_size_gb: 32,
            network_config: NetworkConfig {
                name: "eth0".into(),
                bridge: "vmbr0".into(),
                ip: "10.0.0.200/24".into(),
                gw: "10.0.0.1".into(),
            },
            features: Some("nesting=1,keyctl=1".into()),
            static_ip: None,
            mac_address: Some("52:54:00:AA:BB:CC".into()),
            gpu_assignment: Some("none".into()),
            portainer_role: PortainerRole::None,
            unprivileged: true,
            vllm_model: None,
            vllm_tensor_parallel_size: None,
            is_template: None,
            template_snapshot_name: None,
            clone_from_template_ctid: None,
        }
    }

    #[test]
    fn block_checks_name_the_field() {
        assert!(check_block(Ctid(900), &spec("BaseTemplate")).is_ok());
        let err = check_block(Ctid(900), &spec("x'; touch /tmp/pwned; '")).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(
            err.to_string().contains("lxc_configs.\"900\".name"),
            "{err}"
        );
        let mut s = spec("ok");
        s.mac_address = Some("53:54:00:AA:BB:CC".into());
        assert!(
            check_block(Ctid(900), &s)
                .unwrap_err()
                .to_string()
                .contains("mac_address")
        );
        let mut s = spec("ok");
        s.static_ip = Some("10.0.0.300/24".into());
        assert!(
            check_block(Ctid(900), &s)
                .unwrap_err()
                .to_string()
                .contains("static_ip")
        );
        let mut s = spec("ok");
        s.features = Some("nesting=1,evil=1".into());
        assert!(
            check_block(Ctid(900), &s)
                .unwrap_err()
                .to_string()
                .contains("features")
        );
        assert!(check_snapshot_name("snapshot", "base-snapshot").is_ok());
        for bad in ["current", "1x", "a", "a b", "x;y"] {
            assert!(check_snapshot_name("snapshot", bad).is_err(), "{bad}");
        }
    }
}
