//! The typed model of the two configuration files, `phoenix_hypervisor_config.json` and
//! `phoenix_lxc_configs.json`, and loading them with file-and-position parse errors.
//!
//! The model mirrors the shipped schemas in `etc/` (which accept the upstream reference files
//! unchanged); `deny_unknown_fields` everywhere, so a typo never passes silently. Validation
//! beyond types (schema, semantic rules) lives in `validate`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

pub use crate::types::Ctid;
use crate::types::{
    Bridge, DriverVersion, Features, GpuAssignment, Hostname, IfaceName, ImageRef, Ipv4Cidr,
    MacAddr, ModelName, OsTemplate, SnapshotName, Startup, StorageId, Tags,
};

// ---------------------------------------------------------------------------------------------
// phoenix_lxc_configs.json

/// `phoenix_lxc_configs.json`: the NVIDIA settings and the container blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LxcConfigFile {
    /// The `$schema` reference as written (not used to find the schema).
    #[serde(rename = "$schema")]
    pub schema: String,
    /// The NVIDIA driver version the host runs and containers get.
    pub nvidia_driver_version: DriverVersion,
    /// The CUDA apt repository (`deb [signed-by=...] <url> /`).
    pub nvidia_repo_url: String,
    /// The driver's `.run` installer, downloaded once on the host.
    pub nvidia_runfile_url: String,
    /// The container and template blocks by CTID.
    pub lxc_configs: BTreeMap<Ctid, ContainerSpec>,
}

/// A block's `net0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The interface name inside the container (`eth0`).
    pub name: IfaceName,
    /// The host bridge (`vmbr0`).
    pub bridge: Bridge,
    /// IPv4 with CIDR, e.g. `10.0.0.200/24`.
    pub ip: Ipv4Cidr,
    /// The default gateway.
    pub gw: Ipv4Addr,
}

/// What a container runs of Portainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortainerRole {
    /// The Portainer server.
    Server,
    /// A Portainer agent registered with `network.portainer_server_ip`.
    Agent,
    /// Neither.
    None,
}

/// One container or template block of `lxc_configs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The hostname.
    pub name: Hostname,
    /// `--memory`, MiB.
    pub memory_mb: u64,
    /// `--cores`.
    pub cores: u32,
    /// The OS template (ostemplate) a base container is created from.
    pub template: OsTemplate,
    /// The storage of the root disk (`--storage`, `--rootfs <pool>:<gb>`).
    pub storage_pool: StorageId,
    /// Root disk size, GiB.
    pub storage_size_gb: u64,
    /// `net0`.
    pub network_config: NetworkConfig,
    /// `nesting=1,keyctl=1`; may be empty (`""`) or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// Legacy duplicate of `network_config.ip`; wins when set (a difference is a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_ip: Option<Ipv4Cidr>,
    /// `hwaddr` of `net0`; Proxmox picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<MacAddr>,
    /// `none` or GPU indices `0,1`. Absent means `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_assignment: Option<GpuAssignment>,
    /// Portainer server, agent or none.
    pub portainer_role: PortainerRole,
    /// Set at creation (a clone inherits its source's).
    pub unprivileged: bool,
    /// `null` or `""` mean none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_as_none"
    )]
    pub vllm_model: Option<ModelName>,
    /// vLLM `--tensor-parallel-size`; at most the number of GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vllm_tensor_parallel_size: Option<u32>,
    /// This block is a template others are cloned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_template: Option<bool>,
    /// The snapshot a template's clones are made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_snapshot_name: Option<SnapshotName>,
    /// The template to clone from (a string in the file, as upstream writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_from_template_ctid: Option<Ctid>,
    /// Proxmox `onboot`; `None` leaves the CT's setting alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onboot: Option<bool>,
    /// Proxmox `startup` (`order=N,up=N,down=N`); `None` leaves the CT's setting alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Startup>,
    /// Proxmox `tags`; the ownership tag is kept whatever this says. `None` leaves them alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// `null`, absent and `""` are `None`; anything else must parse as `T`.
fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

impl ContainerSpec {
    /// `is_template`, absent meaning false.
    pub fn is_template(&self) -> bool {
        self.is_template.unwrap_or(false)
    }

    /// The clone source, if the block names one (validation guarantees it is defined).
    pub fn clone_source(&self) -> Option<Ctid> {
        self.clone_from_template_ctid
    }

    /// `features` as `(key, value)` pairs in the written order; empty for `""` or absent.
    pub fn feature_pairs(&self) -> Vec<(String, String)> {
        self.features
            .as_ref()
            .map(|f| f.pairs().to_vec())
            .unwrap_or_default()
    }

    /// `features` has `key=1`.
    pub fn feature_enabled(&self, key: &str) -> bool {
        self.features.as_ref().is_some_and(|f| f.enabled(key))
    }

    /// The address `net0` gets: `static_ip` when set, else `network_config.ip`.
    pub fn ip(&self) -> Ipv4Cidr {
        self.static_ip.unwrap_or(self.network_config.ip)
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
        self.gpu_assignment
            .as_ref()
            .map(|g| g.gpus().to_vec())
            .unwrap_or_default()
    }

    /// Any GPU assigned.
    pub fn has_gpus(&self) -> bool {
        !self.gpus().is_empty()
    }

    /// vLLM is set up (a model is named).
    pub fn wants_vllm(&self) -> bool {
        self.vllm_model.is_some()
    }
}

/// A `features` value as Proxmox writes it in a conf (not ours to validate):
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

// ---------------------------------------------------------------------------------------------
// phoenix_hypervisor_config.json

/// `phoenix_hypervisor_config.json`: host paths, network, defaults and behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HypervisorConfig {
    /// The `$schema` reference as written.
    #[serde(rename = "$schema")]
    pub schema: String,
    /// Configuration version.
    pub version: String,
    /// Who wrote it.
    pub author: String,
    /// Host paths.
    pub core_paths: CorePaths,
    /// Registry and Portainer addresses.
    pub network: Network,
    /// Pinned Portainer images (later upstream revision); defaults in [`DockerSettings`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSettings>,
    /// Upstream's defaults (kept for compatibility).
    pub proxmox_defaults: ProxmoxDefaults,
    /// Run behaviour.
    pub behavior: Behavior,
}

/// Host-absolute paths (read under `PHOENIX_HOST_ROOT`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorePaths {
    /// The LXC configuration file.
    pub lxc_config_file: String,
    /// Its schema (used when the file exists).
    pub lxc_config_schema_file: String,
    /// Hugging Face token file.
    pub hf_token_file: String,
    /// Docker Hub token file.
    pub docker_token_file: String,
    /// Shared directory of Docker images and contexts.
    pub docker_images_path: String,
    /// Directory of the initial-setup marker.
    pub hypervisor_marker_dir: String,
    /// The marker written when initial setup succeeded.
    pub hypervisor_marker: String,
}

/// Network settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// External Docker registry.
    pub external_registry_url: String,
    /// Optional in our schema: only containers with `portainer_role: agent` need it (semantic
    /// validation enforces that). Empty when absent.
    #[serde(default)]
    pub portainer_server_ip: String,
    /// Portainer UI port (HTTPS).
    pub portainer_server_port: u16,
    /// Portainer agent port.
    pub portainer_agent_port: u16,
}

/// The Portainer server image when `docker.portainer_server_image` is absent.
pub const DEFAULT_PORTAINER_SERVER_IMAGE: &str = "portainer/portainer-ce:2.33.1-lts";
/// The Portainer agent image when `docker.portainer_agent_image` is absent.
pub const DEFAULT_PORTAINER_AGENT_IMAGE: &str = "portainer/agent:2.33.1-lts";

/// Pinned Docker images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSettings {
    /// The Portainer server image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portainer_server_image: Option<ImageRef>,
    /// The Portainer agent image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portainer_agent_image: Option<ImageRef>,
}

/// Upstream's Proxmox defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxDefaults {
    /// ZFS dataset of the container storage (informational).
    pub zfs_lxc_pool: String,
    /// Upstream's container defaults (every block states its own values).
    pub lxc: LxcDefaults,
}

/// Upstream's container defaults (informational).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LxcDefaults {
    /// Cores.
    pub cores: u32,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Network as upstream wrote it.
    pub network_config: String,
    /// Features as upstream wrote it.
    pub features: String,
    /// Security profile as upstream wrote it.
    pub security: String,
    /// Nesting as upstream wrote it.
    pub nesting: u8,
}

/// Default seconds to wait for a CT to become ready after a start.
pub const DEFAULT_READY_TIMEOUT_S: u64 = 120;
/// Default seconds `pct shutdown --timeout` waits before falling back to `pct stop`.
pub const DEFAULT_SHUTDOWN_TIMEOUT_S: u64 = 60;

/// Run behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behavior {
    /// Destroy a container this run created when its build fails.
    pub rollback_on_failure: bool,
    /// Log at debug level.
    pub debug_mode: bool,
    /// Seconds to wait for a started CT to have booted (`crate::step::wait_ready`; ours; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout_s: Option<u64>,
    /// `pct shutdown --timeout` before the `pct stop` fallback (ours; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout_s: Option<u64>,
    /// How GPUs are passed through (ours; optional, default `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_passthrough: Option<GpuPassthrough>,
}

/// `behavior.gpu_passthrough`: how lxc-nvidia passes GPUs into a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuPassthrough {
    /// `dev` on Proxmox VE 8.1 or newer (read from `pveversion`), `lxc` before.
    #[default]
    Auto,
    /// Proxmox's `devN:` entries (`pct set --devN`); refused on hosts older than 8.1.
    Dev,
    /// Raw `lxc.cgroup2.devices.allow` / `lxc.mount.entry` lines in the conf file.
    Lxc,
}

impl Network {
    /// `portainer_server_ip`, or `None` when absent/empty.
    pub fn portainer_server_ip(&self) -> Option<&str> {
        Some(self.portainer_server_ip.as_str()).filter(|s| !s.is_empty())
    }
}

impl HypervisorConfig {
    /// The Portainer server image (pinned default when absent).
    pub fn portainer_server_image(&self) -> &str {
        self.docker
            .as_ref()
            .and_then(|d| d.portainer_server_image.as_deref())
            .unwrap_or(DEFAULT_PORTAINER_SERVER_IMAGE)
    }
    /// The Portainer agent image (pinned default when absent).
    pub fn portainer_agent_image(&self) -> &str {
        self.docker
            .as_ref()
            .and_then(|d| d.portainer_agent_image.as_deref())
            .unwrap_or(DEFAULT_PORTAINER_AGENT_IMAGE)
    }
    /// Seconds to wait for a started container (default 120).
    pub fn ready_timeout_s(&self) -> u64 {
        self.behavior
            .ready_timeout_s
            .unwrap_or(DEFAULT_READY_TIMEOUT_S)
    }
    /// How GPUs are passed through (`behavior.gpu_passthrough`, default `auto`).
    pub fn gpu_passthrough(&self) -> GpuPassthrough {
        self.behavior.gpu_passthrough.unwrap_or_default()
    }
    /// `pct shutdown --timeout` seconds (default 60).
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
    /// Where the hypervisor configuration was read.
    pub hypervisor_path: PathBuf,
    /// Where the LXC configuration was read.
    pub lxc_path: PathBuf,
    /// The hypervisor configuration.
    pub hypervisor: HypervisorConfig,
    /// The LXC configuration.
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
        ct.features = Some("nesting=1,keyctl=0".parse().unwrap());
        assert_eq!(
            ct.proxmox_features(true),
            "nesting=1,keyctl=0",
            "an explicit keyctl=0 is respected"
        );
        ct.features = Some("".parse().unwrap());
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
