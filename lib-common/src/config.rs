//! The typed model of the two configuration files, `phoenix_hypervisor_config.json` and
//! `phoenix_lxc_configs.json`, and loading them with file-and-position parse errors.
//!
//! The model mirrors the shipped schemas in `etc/` (which accept the upstream reference files
//! unchanged); `deny_unknown_fields` everywhere, so a typo never passes silently. Validation
//! beyond types (schema, semantic rules) lives in `validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A Proxmox VMID (100..=999999999), the key of a container block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ctid(pub u32);

impl Ctid {
    pub const MIN: u32 = 100;
    pub const MAX: u32 = 999_999_999;
}

impl fmt::Display for Ctid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Ctid {
    type Err = String;
    /// Proxmox's `pve-vmid` format: `^[1-9][0-9]{2,8}$`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (3..=9).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_digit())
            && !s.starts_with('0');
        if !ok {
            return Err(format!(
                "'{s}' is not a valid Proxmox CTID (an integer 100..999999999)"
            ));
        }
        Ok(Ctid(s.parse().map_err(|_| {
            format!("'{s}' is not a valid Proxmox CTID")
        })?))
    }
}

impl TryFrom<String> for Ctid {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Ctid> for String {
    fn from(c: Ctid) -> String {
        c.0.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// phoenix_lxc_configs.json

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LxcConfigFile {
    #[serde(rename = "$schema")]
    pub schema: String,
    pub nvidia_driver_version: String,
    pub nvidia_repo_url: String,
    pub nvidia_runfile_url: String,
    pub lxc_configs: BTreeMap<Ctid, ContainerSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub name: String,
    pub bridge: String,
    /// IPv4 with CIDR, e.g. `10.0.0.200/24`.
    pub ip: String,
    pub gw: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortainerRole {
    Server,
    Agent,
    None,
}

/// One container or template block of `lxc_configs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    pub memory_mb: u64,
    pub cores: u32,
    /// The OS template (ostemplate) a base container is created from.
    pub template: String,
    pub storage_pool: String,
    pub storage_size_gb: u64,
    pub network_config: NetworkConfig,
    /// `nesting=1,keyctl=1`; may be empty (`""`) or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// `none` or GPU indices `0,1`. Absent means `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_assignment: Option<String>,
    pub portainer_role: PortainerRole,
    pub unprivileged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vllm_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vllm_tensor_parallel_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_template: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_snapshot_name: Option<String>,
    /// The CTID (as a string, as upstream writes it) of the template to clone from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_from_template_ctid: Option<String>,
}

impl ContainerSpec {
    pub fn is_template(&self) -> bool {
        self.is_template.unwrap_or(false)
    }

    /// The clone source, if the block names one (the schema guarantees digits; semantic
    /// validation guarantees it is defined).
    pub fn clone_source(&self) -> Option<Ctid> {
        self.clone_from_template_ctid
            .as_deref()
            .and_then(|s| s.parse().ok())
    }

    /// `features` as `(key, value)` pairs in the written order; empty for `""` or absent.
    pub fn feature_pairs(&self) -> Vec<(String, String)> {
        parse_features(self.features.as_deref().unwrap_or(""))
    }

    /// `features` has `key=1`.
    pub fn feature_enabled(&self, key: &str) -> bool {
        self.feature_pairs()
            .iter()
            .any(|(k, v)| k == key && v == "1")
    }

    /// The `features` value Proxmox gets for this CT when it is (or, for a clone, turned out)
    /// `unprivileged`: the configured pairs, plus `keyctl=1` for an unprivileged CT that runs
    /// Docker (`nesting=1`) and does not set `keyctl` itself. Proxmox documents keyctl as
    /// required for Docker in unprivileged containers, and the upstream configs omit it (902,
    /// 910); validation warns where it is added. An explicit `keyctl=0` is respected.
    pub fn proxmox_features(&self, unprivileged: bool) -> String {
        let mut pairs = self.feature_pairs();
        if self.adds_keyctl(unprivileged) {
            pairs.push(("keyctl".into(), "1".into()));
        }
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// [`Self::proxmox_features`] adds `keyctl=1`.
    pub fn adds_keyctl(&self, unprivileged: bool) -> bool {
        unprivileged
            && self.wants_docker()
            && !self.feature_pairs().iter().any(|(k, _)| k == "keyctl")
    }

    /// Docker is set up where `features` has `nesting=1` (the design's rule).
    pub fn wants_docker(&self) -> bool {
        self.feature_enabled("nesting")
    }

    /// The assigned GPU indices; empty for `none` or absent.
    pub fn gpus(&self) -> Vec<u32> {
        parse_gpu_assignment(self.gpu_assignment.as_deref().unwrap_or("none"))
    }

    pub fn has_gpus(&self) -> bool {
        !self.gpus().is_empty()
    }

    pub fn wants_vllm(&self) -> bool {
        self.vllm_model.as_deref().is_some_and(|m| !m.is_empty())
    }
}

/// `nesting=1,keyctl=1` → `[("nesting","1"),("keyctl","1")]`; blanks ignored.
pub fn parse_features(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// `none` → `[]`; `0,1` → `[0, 1]` (sorted, unique). Unparseable entries are dropped here; the
/// schema rejects them first.
pub fn parse_gpu_assignment(s: &str) -> Vec<u32> {
    if s.trim() == "none" {
        return Vec::new();
    }
    let mut v: Vec<u32> = s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------------------------
// phoenix_hypervisor_config.json

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HypervisorConfig {
    #[serde(rename = "$schema")]
    pub schema: String,
    pub version: String,
    pub author: String,
    pub core_paths: CorePaths,
    pub network: Network,
    /// Pinned Portainer images (later upstream revision); defaults in [`DockerSettings`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSettings>,
    pub proxmox_defaults: ProxmoxDefaults,
    pub behavior: Behavior,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorePaths {
    pub lxc_config_file: String,
    pub lxc_config_schema_file: String,
    pub hf_token_file: String,
    pub docker_token_file: String,
    pub docker_images_path: String,
    pub hypervisor_marker_dir: String,
    pub hypervisor_marker: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub external_registry_url: String,
    /// Optional in our schema: only containers with `portainer_role: agent` need it (semantic
    /// validation enforces that). Empty when absent.
    #[serde(default)]
    pub portainer_server_ip: String,
    pub portainer_server_port: u16,
    pub portainer_agent_port: u16,
}

pub const DEFAULT_PORTAINER_SERVER_IMAGE: &str = "portainer/portainer-ce:2.33.1-lts";
pub const DEFAULT_PORTAINER_AGENT_IMAGE: &str = "portainer/agent:2.33.1-lts";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portainer_server_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portainer_agent_image: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxDefaults {
    pub zfs_lxc_pool: String,
    pub lxc: LxcDefaults,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LxcDefaults {
    pub cores: u32,
    pub memory_mb: u64,
    pub network_config: String,
    pub features: String,
    pub security: String,
    pub nesting: u8,
}

/// Default seconds to wait for a CT to become ready after a start.
pub const DEFAULT_READY_TIMEOUT_S: u64 = 120;
/// Default seconds `pct shutdown --timeout` waits before falling back to `pct stop`.
pub const DEFAULT_SHUTDOWN_TIMEOUT_S: u64 = 60;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behavior {
    pub rollback_on_failure: bool,
    pub debug_mode: bool,
    /// Seconds to wait for `pct exec CTID -- uptime` to succeed after a start (ours; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout_s: Option<u64>,
    /// `pct shutdown --timeout` before the `pct stop` fallback (ours; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout_s: Option<u64>,
}

impl Network {
    /// `portainer_server_ip`, or `None` when absent/empty.
    pub fn portainer_server_ip(&self) -> Option<&str> {
        Some(self.portainer_server_ip.as_str()).filter(|s| !s.is_empty())
    }
}

impl HypervisorConfig {
    pub fn portainer_server_image(&self) -> &str {
        self.docker
            .as_ref()
            .and_then(|d| d.portainer_server_image.as_deref())
            .unwrap_or(DEFAULT_PORTAINER_SERVER_IMAGE)
    }
    pub fn portainer_agent_image(&self) -> &str {
        self.docker
            .as_ref()
            .and_then(|d| d.portainer_agent_image.as_deref())
            .unwrap_or(DEFAULT_PORTAINER_AGENT_IMAGE)
    }
    pub fn ready_timeout_s(&self) -> u64 {
        self.behavior
            .ready_timeout_s
            .unwrap_or(DEFAULT_READY_TIMEOUT_S)
    }
    pub fn shutdown_timeout_s(&self) -> u64 {
        self.behavior
            .shutdown_timeout_s
            .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_S)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Read a file to a string; a missing or unreadable file is a config error naming the path.
pub fn read_file(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::config(format!(
            "cannot read `{}`: {e}\nhint: set LXC_CONFIG_FILE / HYPERVISOR_CONFIG_FILE or install the configs under PREFIX/etc",
            path.display()
        ))
    })
}

/// Parse JSON text into an untyped value; syntax errors and duplicate keys name the file, line
/// and column.
pub fn parse_json(path: &Path, text: &str) -> Result<serde_json::Value, Error> {
    crate::json::from_str_strict(text).map_err(|e| {
        Error::config(format!(
            "{}:{}:{}: invalid JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

/// Deserialize an (already schema-checked) value into the typed model.
pub fn from_value<T: serde::de::DeserializeOwned>(
    path: &Path,
    value: serde_json::Value,
) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| Error::config(format!("{}: {e}", path.display())))
}

/// Both files, loaded and typed (not yet validated: see `validate`).
#[derive(Debug, Clone)]
pub struct Configs {
    pub hypervisor_path: PathBuf,
    pub lxc_path: PathBuf,
    pub hypervisor: HypervisorConfig,
    pub lxc: LxcConfigFile,
}

impl Configs {
    /// The block of one CT, or a config error naming the CTID and file.
    pub fn container(&self, ctid: Ctid) -> Result<&ContainerSpec, Error> {
        self.lxc.lxc_configs.get(&ctid).ok_or_else(|| {
            Error::config(format!(
                "CT {ctid} is not defined in `{}` (lxc_configs.\"{ctid}\")",
                self.lxc_path.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctid_parsing_follows_pve_vmid() {
        assert_eq!("900".parse::<Ctid>().unwrap(), Ctid(900));
        assert_eq!("999999999".parse::<Ctid>().unwrap(), Ctid(999_999_999));
        for bad in ["99", "0100", "1000000000", "abc", "", "-100", "1e3"] {
            assert!(bad.parse::<Ctid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keyctl_is_added_for_docker_in_unprivileged_cts_only() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/upstream-214aa23/phoenix_lxc_configs.json");
        let lxc: LxcConfigFile = from_value(
            &root,
            parse_json(&root, &read_file(&root).unwrap()).unwrap(),
        )
        .unwrap();
        let mut ct = lxc.lxc_configs[&Ctid(902)].clone();
        assert_eq!(ct.proxmox_features(true), "nesting=1,keyctl=1");
        assert_eq!(ct.proxmox_features(false), "nesting=1");
        ct.features = Some("nesting=1,keyctl=0".into());
        assert_eq!(
            ct.proxmox_features(true),
            "nesting=1,keyctl=0",
            "an explicit keyctl=0 is respected"
        );
        ct.features = Some(String::new());
        assert_eq!(ct.proxmox_features(true), "", "no Docker, nothing added");
    }

    #[test]
    fn features_and_gpus() {
        assert_eq!(parse_features(""), vec![]);
        assert_eq!(
            parse_features("nesting=1,keyctl=1"),
            vec![
                ("nesting".into(), "1".into()),
                ("keyctl".into(), "1".into())
            ]
        );
        assert_eq!(parse_gpu_assignment("none"), Vec::<u32>::new());
        assert_eq!(parse_gpu_assignment("1,0,1"), vec![0, 1]);
    }

    #[test]
    fn reference_files_deserialize() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        for rev in ["upstream-185f0ab", "upstream-214aa23"] {
            let p = root.join(rev).join("phoenix_lxc_configs.json");
            let v = parse_json(&p, &read_file(&p).unwrap()).unwrap();
            let lxc: LxcConfigFile = from_value(&p, v).unwrap();
            assert_eq!(lxc.lxc_configs.len(), 7);
            let c950 = &lxc.lxc_configs[&Ctid(950)];
            assert_eq!(c950.clone_source(), Some(Ctid(920)));
            assert!(c950.wants_docker() && c950.has_gpus() && c950.wants_vllm());
            let p = root.join(rev).join("phoenix_hypervisor_config.json");
            let v = parse_json(&p, &read_file(&p).unwrap()).unwrap();
            let hv: HypervisorConfig = from_value(&p, v).unwrap();
            assert_eq!(hv.network.portainer_agent_port, 9001);
        }
    }
}
