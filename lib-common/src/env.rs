//! The environment variables the programs read or pass on, by name: the one place their
//! names are spelled. `paths` reads the locations; steps read their overrides.

/// The install PREFIX (default `/usr/local/phoenix_hypervisor`).
pub const PREFIX: &str = "PHOENIX_ROOT";
/// The host's `/` (tests and pve-sim); read only by [`crate::paths::host_root`].
pub const HOST_ROOT: &str = "PHOENIX_HOST_ROOT";
/// The hypervisor configuration file (default PREFIX/etc).
pub const HYPERVISOR_CONFIG_FILE: &str = "HYPERVISOR_CONFIG_FILE";
/// The LXC configuration file (default PREFIX/etc).
pub const LXC_CONFIG_FILE: &str = "LXC_CONFIG_FILE";
/// The shared log file (default HOST_ROOT/var/log/phoenix_hypervisor.log).
pub const LOG_FILE: &str = "PHOENIX_LOG_FILE";
/// Log level: `error`, `warn`, `info` (default), `debug`, `trace`, `off`.
pub const LOG_LEVEL: &str = "PHOENIX_LOG_LEVEL";

/// lxc-nvidia's override of the block's `gpu_assignment`.
pub const GPU_ASSIGNMENT: &str = "GPU_ASSIGNMENT";
/// lxc-nvidia's override of `nvidia_driver_version`.
pub const NVIDIA_DRIVER_VERSION: &str = "NVIDIA_DRIVER_VERSION";
/// lxc-nvidia's override of `nvidia_repo_url`.
pub const NVIDIA_REPO_URL: &str = "NVIDIA_REPO_URL";
/// lxc-nvidia's override of `nvidia_runfile_url`.
pub const NVIDIA_RUNFILE_URL: &str = "NVIDIA_RUNFILE_URL";
/// lxc-docker's override of the block's `portainer_role`.
pub const PORTAINER_ROLE: &str = "PORTAINER_ROLE";
/// lxc-docker's override of `network.portainer_server_ip`.
pub const PORTAINER_SERVER_IP: &str = "PORTAINER_SERVER_IP";
/// lxc-docker's override of `network.portainer_agent_port`.
pub const PORTAINER_AGENT_PORT: &str = "PORTAINER_AGENT_PORT";

/// Set by the orchestrator for its children: its PID, so a step it runs shares its run lock.
pub const RUN_LOCK_PID: &str = "PHOENIX_RUN_LOCK_PID";
/// Set by the orchestrator for its children: the file recording the CTs this run created.
pub const CREATED_RECORD: &str = "PHOENIX_CREATED_RECORD";
/// Set to `1` by the orchestrator for create-lxc/clone-lxc when the next program it runs on
/// the CT is our own step, which waits for the guest's boot in its first `pct exec`: the CT
/// is started and not waited for here (one call fewer per CT, issue 14). Unset (by hand, or
/// before a drop-in script), the step waits as its contract says.
pub const SKIP_READY_WAIT: &str = "PHOENIX_SKIP_READY_WAIT";
/// Set to `1` by the orchestrator for a template's setup program: the orchestrator takes the
/// template snapshot at finalize, in the same shutdown as `configured-state`, so the setup
/// program does not shut the CT down for it (four calls fewer per template, issue 14). Unset
/// (by hand), a setup program takes it itself, as the design says.
pub const TEMPLATE_SNAPSHOT_AT_FINALIZE: &str = "PHOENIX_TEMPLATE_SNAPSHOT_AT_FINALIZE";

/// The step overrides: the orchestrator sets the ones that apply to a step and removes the
/// rest, so a value in the caller's environment never leaks into the wrong container.
pub const STEP_OVERRIDES: &[&str] = &[
    GPU_ASSIGNMENT,
    NVIDIA_DRIVER_VERSION,
    NVIDIA_REPO_URL,
    NVIDIA_RUNFILE_URL,
    PORTAINER_ROLE,
    PORTAINER_SERVER_IP,
    PORTAINER_AGENT_PORT,
    SKIP_READY_WAIT,
    TEMPLATE_SNAPSHOT_AT_FINALIZE,
];

/// Whether `name` is set to `1`.
pub fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}
