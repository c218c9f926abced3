//! Where things are: the install PREFIX, the host root every host-absolute path is read and
//! written under, and the locations of the two configuration files (`architecture.md`,
//! "Installed layout" and "Host paths").

use std::path::{Path, PathBuf};

use crate::env;

/// Default install prefix on a Proxmox host.
pub const DEFAULT_PREFIX: &str = "/usr/local/phoenix_hypervisor";
/// File name of the hypervisor configuration.
pub const HYPERVISOR_CONFIG_NAME: &str = "phoenix_hypervisor_config.json";
/// File name of the LXC configuration.
pub const LXC_CONFIG_NAME: &str = "phoenix_lxc_configs.json";
/// File name of the LXC configuration's schema.
pub const LXC_SCHEMA_NAME: &str = "phoenix_lxc_configs.schema.json";
/// File name of the hypervisor configuration's schema.
pub const HYPERVISOR_SCHEMA_NAME: &str = "phoenix_hypervisor_config.schema.json";
/// Host-absolute path of the run lock.
pub const LOCK_FILE: &str = "/run/lock/phoenix_hypervisor.lock";
/// Host-absolute default log file.
pub const DEFAULT_LOG_FILE: &str = "/var/log/phoenix_hypervisor.log";
/// Host-absolute cache for downloads (NVIDIA runfile).
pub const CACHE_DIR: &str = "/var/cache/phoenix_hypervisor";

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// PREFIX: `PHOENIX_ROOT` or `/usr/local/phoenix_hypervisor`.
pub fn prefix() -> PathBuf {
    env_path(env::PREFIX).unwrap_or_else(|| PathBuf::from(DEFAULT_PREFIX))
}

/// The host's `/`: `PHOENIX_HOST_ROOT` (tests and the simulator) or `/`.
pub fn host_root() -> PathBuf {
    env_path(env::HOST_ROOT).unwrap_or_else(|| PathBuf::from("/"))
}

/// A host-absolute path as this process must open it: `host_root() + path`.
/// Relative paths are returned unchanged (they are relative to the working directory).
pub fn host_path(path: impl AsRef<Path>) -> PathBuf {
    under_root(&host_root(), path.as_ref())
}

/// `root + path` for an absolute `path`; `path` itself when relative.
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix("/") {
        Ok(rel) => root.join(rel),
        Err(_) => path.to_path_buf(),
    }
}

/// PREFIX/bin.
pub fn bin_dir() -> PathBuf {
    prefix().join("bin")
}

/// PREFIX/etc.
pub fn etc_dir() -> PathBuf {
    prefix().join("etc")
}

/// `HYPERVISOR_CONFIG_FILE`, else PREFIX/etc/phoenix_hypervisor_config.json.
pub fn hypervisor_config_file() -> PathBuf {
    env_path(env::HYPERVISOR_CONFIG_FILE).unwrap_or_else(|| etc_dir().join(HYPERVISOR_CONFIG_NAME))
}

/// `LXC_CONFIG_FILE`, else PREFIX/etc/phoenix_lxc_configs.json.
pub fn lxc_config_file() -> PathBuf {
    env_path(env::LXC_CONFIG_FILE).unwrap_or_else(|| etc_dir().join(LXC_CONFIG_NAME))
}

/// `PHOENIX_LOG_FILE`, else HOST_ROOT/var/log/phoenix_hypervisor.log.
pub fn log_file() -> PathBuf {
    env_path(env::LOG_FILE).unwrap_or_else(|| host_path(DEFAULT_LOG_FILE))
}

/// The installed path of a step under the design document's name, e.g.
/// `PREFIX/bin/phoenix_hypervisor_create_lxc.sh`.
pub fn step_path(design_name: &str) -> PathBuf {
    bin_dir().join(format!("{design_name}.sh"))
}

/// Installed name of the orchestrator.
pub const ESTABLISH: &str = "phoenix_establish_hypervisor";
/// Installed name of the initial-setup step.
pub const INITIAL_SETUP: &str = "phoenix_hypervisor_initial_setup";
/// Installed name of the create-lxc step.
pub const CREATE_LXC: &str = "phoenix_hypervisor_create_lxc";
/// Installed name of the clone-lxc step.
pub const CLONE_LXC: &str = "phoenix_hypervisor_clone_lxc";
/// Installed name of the lxc-nvidia step.
pub const LXC_NVIDIA: &str = "phoenix_hypervisor_lxc_nvidia";
/// Installed name of the lxc-docker step.
pub const LXC_DOCKER: &str = "phoenix_hypervisor_lxc_docker";

/// The workspace binaries that are installed, with their installed names (`architecture.md`,
/// "Installed layout"): the one table of installed program names. Setup plugins
/// (`setup-<ctid>`) follow [`installed_name`]'s rule.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("establish", ESTABLISH),
    ("initial-setup", INITIAL_SETUP),
    ("create-lxc", CREATE_LXC),
    ("clone-lxc", CLONE_LXC),
    ("lxc-nvidia", LXC_NVIDIA),
    ("lxc-docker", LXC_DOCKER),
];

/// Installed name of a workspace binary: the table above, or `setup-<ctid>` ->
/// `phoenix_hypervisor_setup_<ctid>`. `None` for binaries that are never installed (pve-sim's).
pub fn installed_name(bin: &str) -> Option<String> {
    if let Some((_, name)) = PROGRAMS.iter().find(|(b, _)| *b == bin) {
        return Some((*name).to_string());
    }
    let ctid = bin.strip_prefix("setup-")?;
    if ctid.is_empty() || !ctid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ctid.parse().ok().map(setup_step_name)
}

/// The design document's name of the setup step of one CT (without `.sh`).
pub fn setup_step_name(ctid: u32) -> String {
    format!("phoenix_hypervisor_setup_{ctid}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn installed_names() {
        assert_eq!(
            installed_name("clone-lxc").as_deref(),
            Some("phoenix_hypervisor_clone_lxc")
        );
        assert_eq!(
            installed_name("setup-950").as_deref(),
            Some("phoenix_hypervisor_setup_950")
        );
        assert_eq!(installed_name("setup-"), None);
        assert_eq!(installed_name("pct"), None);
        assert_eq!(
            step_path("phoenix_hypervisor_create_lxc")
                .file_name()
                .unwrap(),
            "phoenix_hypervisor_create_lxc.sh"
        );
    }

    use super::*;

    #[test]
    fn under_root_joins_absolute_paths_only() {
        let root = Path::new("/tmp/host");
        assert_eq!(
            under_root(root, Path::new("/etc/pve/lxc/100.conf")),
            Path::new("/tmp/host/etc/pve/lxc/100.conf")
        );
        assert_eq!(
            under_root(Path::new("/"), Path::new("/dev/nvidia0")),
            Path::new("/dev/nvidia0")
        );
        assert_eq!(under_root(root, Path::new("rel/x")), Path::new("rel/x"));
    }
}
