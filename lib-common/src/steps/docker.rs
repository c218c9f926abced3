//! Step `lxc-docker CTID`: Docker Engine inside a container (gpu-docker.md, "Docker inside the
//! container").
//!
//! - Docker Engine and the compose plugin from Docker's repository, unless installed.
//! - For CTs with GPUs only: the NVIDIA container toolkit, `nvidia-ctk runtime configure
//!   --runtime=docker`, and in an unprivileged CT `no-cgroups = true` under
//!   `[nvidia-container-cli]`.
//! - `/etc/docker/daemon.json` merged in Rust (keys already there are kept), written only when
//!   it changes; the service enabled, started (restarted when its config changed) and checked
//!   with `docker info`, warning about the `vfs` storage driver.
//! - Portainer server or agent per `portainer_role`.
//!
//! Each part is checked through the guest API first and skipped when in place, so a second run
//! runs no install command and no mutating `pct` call. Values reach the guest as argv elements.

use serde_json::{Map, Value, json};

use crate::config::{Ctid, PortainerRole};
use crate::error::{Error, Result};
use crate::guest::Guest;
use crate::pct::{CtStatus, PctConfig};
use crate::step::{StepContext, ensure_running};
use crate::steps::Outcome;
use crate::steps::nvidia::FETCH_SCRIPT;

/// Docker Engine packages (Docker's install guide).
pub const DOCKER_PACKAGES: [&str; 5] = [
    "docker-ce",
    "docker-ce-cli",
    "containerd.io",
    "docker-buildx-plugin",
    "docker-compose-plugin",
];
pub const DOCKER_KEYRING: &str = "/etc/apt/keyrings/docker.asc";
pub const DOCKER_LIST: &str = "/etc/apt/sources.list.d/docker.list";
pub const TOOLKIT_PACKAGE: &str = "nvidia-container-toolkit";
pub const TOOLKIT_KEY_URL: &str = "https://nvidia.github.io/libnvidia-container/gpgkey";
pub const TOOLKIT_KEYRING: &str = "/etc/apt/keyrings/nvidia-container-toolkit.asc";
pub const TOOLKIT_LIST: &str = "/etc/apt/sources.list.d/nvidia-container-toolkit.list";
/// `$(ARCH)` is apt's own substitution, written literally.
pub const TOOLKIT_REPO_LINE: &str = "deb [signed-by=/etc/apt/keyrings/nvidia-container-toolkit.asc] https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n";
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";
pub const TOOLKIT_CONFIG: &str = "/etc/nvidia-container-runtime/config.toml";
pub const PORTAINER_SERVER_NAME: &str = "portainer";
pub const PORTAINER_AGENT_NAME: &str = "portainer_agent";

/// The Docker settings of one run: block and hypervisor config with the environment overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    pub role: PortainerRole,
    pub server_ip: Option<String>,
    pub server_port: u16,
    pub agent_port: u16,
    pub server_image: String,
    pub agent_image: String,
    pub gpus: bool,
}

impl DockerSettings {
    /// Overrides: `PORTAINER_ROLE` (server|agent|none), `PORTAINER_SERVER_IP` (IPv4),
    /// `PORTAINER_AGENT_PORT` (1..65535). Bad values are config errors naming the variable.
    pub fn resolve(
        ctx: &StepContext,
        ctid: Ctid,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<DockerSettings> {
        let spec = ctx.container(ctid)?;
        let hv = &ctx.configs.hypervisor;
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let bad = |var: &str, v: &str, want: &str| -> anyhow::Error {
            Error::config(format!(
                "CT {ctid}: environment variable {var} = {v:?} is not {want}"
            ))
            .into()
        };
        let role = match env(crate::env::PORTAINER_ROLE) {
            None => spec.portainer_role,
            Some(v) => match v.as_str() {
                "server" => PortainerRole::Server,
                "agent" => PortainerRole::Agent,
                "none" => PortainerRole::None,
                _ => return Err(bad(crate::env::PORTAINER_ROLE, &v, "server, agent or none")),
            },
        };
        let server_ip = match env(crate::env::PORTAINER_SERVER_IP) {
            Some(v) if v.parse::<std::net::Ipv4Addr>().is_err() => {
                return Err(bad(crate::env::PORTAINER_SERVER_IP, &v, "an IPv4 address"));
            }
            Some(v) => Some(v),
            None => hv.network.portainer_server_ip().map(str::to_string),
        };
        let agent_port = match env(crate::env::PORTAINER_AGENT_PORT) {
            Some(v) => match v.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad(crate::env::PORTAINER_AGENT_PORT, &v, "a port 1..65535")),
            },
            None => hv.network.portainer_agent_port,
        };
        let s = DockerSettings {
            role,
            server_ip,
            server_port: hv.network.portainer_server_port,
            agent_port,
            server_image: hv.portainer_server_image().to_string(),
            agent_image: hv.portainer_agent_image().to_string(),
            gpus: spec.has_gpus(),
        };
        for (field, image) in [
            ("docker.portainer_server_image", &s.server_image),
            ("docker.portainer_agent_image", &s.agent_image),
        ] {
            if !valid_image(image) {
                return Err(Error::config(format!(
                    "{field} = {image:?} in `{}` is not a Docker image reference like portainer/agent:2.33.1-lts",
                    ctx.configs.hypervisor_path.display()
                ))
                .into());
            }
        }
        if s.server_port == 0 {
            return Err(Error::config("network.portainer_server_port must be 1..65535").into());
        }
        Ok(s)
    }
}

/// A Docker image reference ([`crate::types::ImageRef`]'s format).
pub fn valid_image(s: &str) -> bool {
    s.parse::<crate::types::ImageRef>().is_ok()
}

/// The keys this tool wants in daemon.json (keys already set win).
pub fn daemon_defaults() -> Value {
    json!({
        "log-driver": "json-file",
        "log-opts": { "max-size": "10m", "max-file": "3" }
    })
}

/// Add `defaults` into `current` where missing, recursing into objects; values already there
/// are never replaced. Returns whether `current` changed.
pub fn merge_missing(current: &mut Map<String, Value>, defaults: &Map<String, Value>) -> bool {
    let mut changed = false;
    for (k, v) in defaults {
        match (current.get_mut(k), v) {
            (None, _) => {
                current.insert(k.clone(), v.clone());
                changed = true;
            }
            (Some(Value::Object(cur)), Value::Object(def)) => {
                changed |= merge_missing(cur, def);
            }
            (Some(_), _) => {}
        }
    }
    changed
}

/// Parse daemon.json text (empty = `{}`); it must be a JSON object.
pub fn parse_daemon_json(ctid: Ctid, text: &str) -> Result<Map<String, Value>> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::guest(format!(
            "CT {ctid}: `{DAEMON_JSON}` is not a JSON object; fix it by hand (it is never overwritten)"
        ))
        .into()),
        Err(e) => Err(Error::guest(format!(
            "CT {ctid}: `{DAEMON_JSON}` is not valid JSON ({e}); fix it by hand (it is never overwritten)"
        ))
        .into()),
    }
}

/// Whether the TOML text has `no-cgroups = true` in its `[nvidia-container-cli]` table.
pub fn toolkit_no_cgroups(toml: &str) -> bool {
    let mut table = String::new();
    for line in toml.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = name.trim().to_string();
            continue;
        }
        if table != "nvidia-container-cli" || t.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = t.split_once('=')
            && k.trim() == "no-cgroups"
        {
            let v = v.split('#').next().unwrap_or("").trim();
            return v == "true";
        }
    }
    false
}

/// `ID` and codename from `/etc/os-release` text.
pub fn os_release(text: &str) -> (Option<String>, Option<String>) {
    let mut id = None;
    let mut version_codename = None;
    let mut ubuntu_codename = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_string();
        match k.trim() {
            "ID" => id = Some(v),
            "VERSION_CODENAME" => version_codename = Some(v),
            "UBUNTU_CODENAME" => ubuntu_codename = Some(v),
            _ => {}
        }
    }
    let codename = ubuntu_codename
        .filter(|s| !s.is_empty())
        .or(version_codename.filter(|s| !s.is_empty()));
    (id, codename)
}

/// The Docker sources line for a distribution.
pub fn docker_list_content(arch: &str, distro: &str, codename: &str) -> String {
    format!(
        "deb [arch={arch} signed-by={DOCKER_KEYRING}] https://download.docker.com/linux/{distro} {codename} stable\n"
    )
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Run the step for `ctid`.
pub fn run(ctx: &StepContext, ctid: Ctid) -> Result<Outcome> {
    let spec = ctx.container(ctid)?;
    if !spec.wants_docker() {
        return Err(Error::config(format!(
            "CT {ctid}: lxc_configs.\"{ctid}\".features is {:?}: Docker inside an LXC container needs nesting=1\nhint: add nesting=1 to features (and keyctl=1 for an unprivileged CT)",
            spec.features.as_deref().unwrap_or("")
        ))
        .into());
    }
    if spec.unprivileged && !spec.proxmox_features(true).contains("keyctl=1") {
        log::warn!(
            "[{ctid}] lxc_configs.\"{ctid}\".features sets keyctl=0: Docker in an unprivileged container may fail (e.g. keyring errors from runc)"
        );
    }
    let settings = DockerSettings::resolve(ctx, ctid, &env_var)?;
    let pct = &ctx.pct;
    let mut outcome = Outcome::Unchanged;
    if pct.require_exists(ctid)? != CtStatus::Running {
        ensure_running(pct, ctid, ctx.ready_timeout())?;
        outcome = Outcome::Changed;
    }
    // What the CT runs with, not what `pct config` shows: a feature set while it ran waits in
    // `[pve:pending]` until the next start, and Docker sees only the running values.
    // Read from the conf file (`ConfFile::to_config`), not with two `pct config` calls.
    let conf = crate::conffile::ConfFile::load(ctid)?;
    let mut live = conf.to_config(true);
    if !ctx.dry_run {
        let pending = conf.to_config(false);
        let unprivileged = live.get("unprivileged") == Some("1");
        let needed = |c: &PctConfig| {
            has_feature(c, "nesting") && (!unprivileged || has_feature(c, "keyctl"))
        };
        if !needed(&live) && needed(&pending) {
            ctx.say(
                Some(ctid),
                &format!(
                    "features {:?} are pending until a restart (running with {:?}); restarting",
                    pending.get("features").unwrap_or(""),
                    live.get("features").unwrap_or("")
                ),
            );
            pct.shutdown_or_stop(ctid, ctx.configs.hypervisor.shutdown_timeout_s())?;
            ensure_running(pct, ctid, ctx.ready_timeout())?;
            live = crate::conffile::ConfFile::load(ctid)?.to_config(true);
            outcome = Outcome::Changed;
        }
    }
    if !has_feature(&live, "nesting") {
        return Err(Error::precondition(format!(
            "CT {ctid} runs without nesting=1 (its features are {:?}) although its block asks for it\nhint: `pct set {ctid} --features {}` and restart it, or run clone-lxc/create-lxc for it",
            live.get("features").unwrap_or(""),
            spec.features.as_deref().unwrap_or("nesting=1")
        ))
        .into());
    }
    let unprivileged = live.get("unprivileged") == Some("1");
    let lacks_keyctl = unprivileged && !has_feature(&live, "keyctl");
    let guest = Guest::new(pct, ctid).with_network_timeout(ctx.ready_timeout());

    let mut daemon_changed = false;
    if install_engine(ctx, &guest)? {
        outcome = Outcome::Changed;
    }
    let no_daemon_yet = ctx.dry_run && !guest.package_installed("docker-ce")?;
    if settings.gpus {
        let (changed, restart) = nvidia_toolkit(ctx, &guest, unprivileged)?;
        if changed {
            outcome = Outcome::Changed;
        }
        daemon_changed |= restart;
    }
    if merge_daemon_json(ctx, &guest, settings.gpus)? {
        outcome = Outcome::Changed;
        daemon_changed = true;
    }
    if service(ctx, &guest, daemon_changed)? {
        outcome = Outcome::Changed;
    }
    // In dry-run mode nothing was installed: there is no daemon to ask.
    if !no_daemon_yet {
        verify(&guest)?;
    }
    if !no_daemon_yet {
        smoke_test(ctx, &guest, unprivileged, lacks_keyctl)?;
    }
    if portainer(ctx, &guest, &settings, no_daemon_yet, lacks_keyctl)? {
        outcome = Outcome::Changed;
    }
    ctx.say(
        Some(ctid),
        if outcome.changed() {
            "Docker set up"
        } else {
            "Docker already as configured; nothing changed"
        },
    );
    Ok(outcome)
}

/// Whether a config's `features` turn `name` on (`name=1`).
fn has_feature(c: &PctConfig, name: &str) -> bool {
    crate::config::parse_features(c.get("features").unwrap_or(""))
        .iter()
        .any(|(k, v)| k == name && v == "1")
}

/// Docker Engine from Docker's repository unless all its packages are installed.
fn install_engine(ctx: &StepContext, guest: &Guest) -> Result<bool> {
    let ctid = guest.ctid();
    // One `dpkg-query` for all of them.
    let missing = guest.missing_packages(&DOCKER_PACKAGES)?;
    let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
    if missing.is_empty() {
        log::info!("[{ctid}] Docker Engine already installed");
        return Ok(false);
    }
    ctx.say(
        Some(ctid),
        &format!("installing Docker Engine ({})", missing.join(" ")),
    );
    let (id, codename) = os_release(&guest.read_file("/etc/os-release")?);
    let (Some(id), Some(codename)) = (id, codename) else {
        return Err(Error::precondition(format!(
            "CT {ctid}: /etc/os-release names no distribution ID or codename; Docker's repository needs both"
        ))
        .into());
    };
    if !matches!(id.as_str(), "ubuntu" | "debian") || !word(&codename) {
        return Err(Error::precondition(format!(
            "CT {ctid}: the container runs {id} {codename}; Docker is set up for Ubuntu or Debian containers only"
        ))
        .into());
    }
    let arch = guest
        .query_ok(&["dpkg", "--print-architecture"])?
        .trim()
        .to_string();
    if !word(&arch) {
        return Err(Error::guest(format!(
            "CT {ctid}: `dpkg --print-architecture` printed {arch:?}"
        ))
        .into());
    }
    guest.ensure_packages(&["ca-certificates", "curl"])?;
    if !guest.file_exists(DOCKER_KEYRING)? {
        let url = format!("https://download.docker.com/linux/{id}/gpg");
        guest.run_script(
            "download Docker's repository key",
            FETCH_SCRIPT,
            &[&url, DOCKER_KEYRING],
        )?;
    }
    let list = docker_list_content(&arch, &id, &codename);
    if guest.read_file_opt(DOCKER_LIST)?.as_deref() != Some(list.as_str()) {
        guest.write_file(DOCKER_LIST, list.as_bytes(), "0644")?;
    }
    guest.apt_update()?;
    guest.apt_install(&missing)?;
    Ok(true)
}

/// The NVIDIA container toolkit, its docker runtime and (unprivileged) `no-cgroups`. Returns
/// (changed anything, docker must restart).
fn nvidia_toolkit(ctx: &StepContext, guest: &Guest, unprivileged: bool) -> Result<(bool, bool)> {
    let ctid = guest.ctid();
    let mut changed = false;
    let mut restart = false;
    if !guest.package_installed(TOOLKIT_PACKAGE)? {
        ctx.say(Some(ctid), "installing the NVIDIA container toolkit");
        guest.ensure_packages(&["ca-certificates", "curl"])?;
        if !guest.file_exists(TOOLKIT_KEYRING)? {
            guest.run_script(
                "download the NVIDIA container toolkit key",
                FETCH_SCRIPT,
                &[TOOLKIT_KEY_URL, TOOLKIT_KEYRING],
            )?;
        }
        if guest.read_file_opt(TOOLKIT_LIST)?.as_deref() != Some(TOOLKIT_REPO_LINE) {
            guest.write_file(TOOLKIT_LIST, TOOLKIT_REPO_LINE.as_bytes(), "0644")?;
        }
        guest.apt_update()?;
        guest.apt_install(&[TOOLKIT_PACKAGE])?;
        changed = true;
    }
    let daemon = guest.read_file_opt(DAEMON_JSON)?.unwrap_or_default();
    let has_runtime = parse_daemon_json(ctid, &daemon)?
        .get("runtimes")
        .and_then(|r| r.get("nvidia"))
        .is_some();
    if !has_runtime {
        ctx.say(Some(ctid), "adding the nvidia runtime to Docker");
        guest.run(&["nvidia-ctk", "runtime", "configure", "--runtime=docker"])?;
        changed = true;
        restart = true;
    }
    if unprivileged {
        let toml = guest.read_file_opt(TOOLKIT_CONFIG)?.unwrap_or_default();
        if !toolkit_no_cgroups(&toml) {
            ctx.say(
                Some(ctid),
                "unprivileged container: setting no-cgroups = true under [nvidia-container-cli]",
            );
            guest.run(&[
                "nvidia-ctk",
                "config",
                "--set",
                "nvidia-container-cli.no-cgroups=true",
                "--in-place",
            ])?;
            changed = true;
        }
    }
    Ok((changed, restart))
}

/// Merge our keys into daemon.json; write it only when it changes. Returns whether it did.
fn merge_daemon_json(ctx: &StepContext, guest: &Guest, gpus: bool) -> Result<bool> {
    let ctid = guest.ctid();
    let text = guest.read_file_opt(DAEMON_JSON)?.unwrap_or_default();
    let mut current = parse_daemon_json(ctid, &text)?;
    if !gpus
        && current
            .get("runtimes")
            .and_then(|r| r.get("nvidia"))
            .is_some()
    {
        log::warn!(
            "[{ctid}] `{DAEMON_JSON}` has an nvidia runtime but the CT has no GPUs (gpu_assignment none); containers using it will fail. Left as it is."
        );
    }
    let Value::Object(defaults) = daemon_defaults() else {
        unreachable!("daemon_defaults is an object");
    };
    if !merge_missing(&mut current, &defaults) {
        return Ok(false);
    }
    let mut out = serde_json::to_string_pretty(&Value::Object(current))
        .map_err(|e| Error::guest(format!("CT {ctid}: cannot serialize daemon.json: {e}")))?;
    out.push('\n');
    ctx.say(
        Some(ctid),
        &format!("merging log settings into `{DAEMON_JSON}`"),
    );
    guest.write_file(DAEMON_JSON, out.as_bytes(), "0644")?;
    Ok(true)
}

/// Enable and start docker (restart when its config changed). Returns whether it did anything.
fn service(ctx: &StepContext, guest: &Guest, config_changed: bool) -> Result<bool> {
    let ctid = guest.ctid();
    let mut changed = false;
    let (enabled, active) = guest.service_state("docker")?;
    if !enabled {
        guest.run(&["systemctl", "enable", "docker"])?;
        changed = true;
    }
    if !active {
        ctx.say(Some(ctid), "starting docker");
        guest.run(&["systemctl", "start", "docker"])?;
        changed = true;
    } else if config_changed {
        ctx.say(Some(ctid), "restarting docker to apply its configuration");
        guest.run(&["systemctl", "restart", "docker"])?;
        changed = true;
    }
    Ok(changed)
}

/// `docker info` must answer; warn on the `vfs` storage driver.
fn verify(guest: &Guest) -> Result<()> {
    let ctid = guest.ctid();
    let out = guest.query(&["docker", "info", "--format", "{{.Driver}}"])?;
    if !out.success() {
        return Err(Error::guest(format!(
            "CT {ctid}: `docker info` failed (exit {}): {}",
            out.code,
            out.tail(500)
        ))
        .into());
    }
    let driver = out.stdout.trim();
    if driver == "vfs" {
        log::warn!(
            "[{ctid}] Docker uses the `vfs` storage driver (no overlay support on this storage, e.g. ZFS older than 2.2): every image layer is a full copy and disk use grows fast\nhint: upgrade the host to ZFS 2.2+ (PVE 8.1+) or put /var/lib/docker on a non-ZFS volume"
        );
    }
    Ok(())
}

/// The image of the smoke test: tiny, prints a greeting and exits 0.
pub const SMOKE_IMAGE: &str = "hello-world";

/// What runc prints when it cannot start a container in an unprivileged LXC container after
/// its fix for CVE-2025-52881 (runc 1.2.8 / 1.3.3 / 1.4.0-rc.3, November 2025): the host's
/// AppArmor profile for containers refuses runc's reopened procfs file descriptors
/// (opencontainers/runc#4968, moby/moby#51405). Proxmox fixed it in lxc-pve 6.0.5-2
/// (proxmox/lxc `debian/changelog`: "fix #7006: do not restrict /proc or /sys if nesting is
/// enabled", 2025-11-13); pve-container 6.0.16 depends on lxc-pve >= 6.0.5-3 (pve-container
/// commit 855b2d1, `debian/control`).
pub const RUNC_SYSCTL_DENIED: &str = "open sysctl net.ipv4.ip_unprivileged_port_start";

/// Whether a failed `docker run` is the CVE-2025-52881 runc/AppArmor failure.
pub fn is_runc_sysctl_denied(message: &str) -> bool {
    message.contains(RUNC_SYSCTL_DENIED) && message.contains("permission denied")
}

/// The diagnosis and remedy for [`is_runc_sysctl_denied`], with the host's package versions
/// (`pveversion -v` lines, when readable).
pub fn runc_sysctl_diagnosis(ctid: Ctid, unprivileged: bool, host_versions: &str) -> String {
    let versions: Vec<&str> = host_versions
        .lines()
        .filter(|l| l.starts_with("lxc-pve:") || l.starts_with("pve-container:"))
        .collect();
    format!(
        "CT {ctid}: Docker cannot start containers: runc's fix for CVE-2025-52881 (runc 1.2.8/1.3.3 and later, shipped with containerd.io/docker-ce since November 2025) is refused by the host's AppArmor profile for LXC containers{}.\nThe host has {}.\nhint: update the Proxmox host (`apt update && apt full-upgrade`): lxc-pve 6.0.5-2 or newer on Proxmox VE 9 (it stops restricting /proc and /sys in containers with nesting; pve-container 6.0.16 and later pull in lxc-pve 6.0.5-3), lxc-pve 6.0.0-2 or newer on Proxmox VE 8 where offered, else upgrade the host to Proxmox VE 9; then restart CT {ctid} (`pct reboot {ctid}`) and run this step again. Until then, holding containerd.io at a version with an older runc inside the container is the workaround.",
        if unprivileged {
            " (unprivileged container)"
        } else {
            ""
        },
        if versions.is_empty() {
            "unknown package versions (`pveversion -v` did not list lxc-pve/pve-container)"
                .to_string()
        } else {
            versions.join(", ")
        }
    )
}

/// `docker run --rm hello-world`: a container really starts (image, runc, cgroups, AppArmor),
/// not only the daemon answering. Recognises the CVE-2025-52881 runc failure and says how to
/// fix it. When the image cannot be pulled because the network stays down, warns and goes on
/// (Docker's own checks passed; the smoke test needs the image).
fn smoke_test(
    ctx: &StepContext,
    guest: &Guest,
    unprivileged: bool,
    lacks_keyctl: bool,
) -> Result<()> {
    let ctid = guest.ctid();
    if ctx.dry_run {
        println!("would run: pct exec {ctid} -- docker run --rm {SMOKE_IMAGE} (smoke test)");
        return Ok(());
    }
    match guest.run(&["docker", "run", "--rm", SMOKE_IMAGE]) {
        Ok(_) => {
            log::info!("[{ctid}] smoke test: `docker run --rm {SMOKE_IMAGE}` ran a container");
            Ok(())
        }
        Err(e) => {
            let msg = format!("{e:#}");
            if is_runc_sysctl_denied(&msg) {
                let versions = ctx.pct.pveversion_verbose().unwrap_or_default();
                return Err(Error::guest(format!(
                    "{}\n(docker said: {})",
                    runc_sysctl_diagnosis(ctid, unprivileged, &versions),
                    msg.lines()
                        .find(|l| l.contains(RUNC_SYSCTL_DENIED))
                        .unwrap_or("")
                        .trim()
                ))
                .into());
            }
            if msg.contains("network stayed down") {
                log::warn!(
                    "[{ctid}] smoke test skipped: `{SMOKE_IMAGE}` cannot be pulled while the network is down ({msg})"
                );
                return Ok(());
            }
            Err(keyctl_hint(ctid, e, lacks_keyctl).context(format!(
                "CT {ctid}: the Docker smoke test (`docker run --rm {SMOKE_IMAGE}`) failed: the daemon answers but cannot run a container"
            )))
        }
    }
}

/// The `docker run` argv of a Portainer role (without `docker`).
pub fn portainer_run_args(s: &DockerSettings) -> Option<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    match s.role {
        PortainerRole::None => None,
        PortainerRole::Server => {
            let mut a = v(&[
                "run",
                "-d",
                "--name",
                PORTAINER_SERVER_NAME,
                "--restart=always",
                "-p",
                "8000:8000",
                "-p",
            ]);
            a.push(format!("{}:9443", s.server_port));
            a.extend(v(&[
                "-v",
                "/var/run/docker.sock:/var/run/docker.sock",
                "-v",
                "portainer_data:/data",
            ]));
            a.push(s.server_image.clone());
            Some(a)
        }
        PortainerRole::Agent => {
            let mut a = v(&[
                "run",
                "-d",
                "--name",
                PORTAINER_AGENT_NAME,
                "--restart=always",
                "-p",
            ]);
            a.push(format!("{}:9001", s.agent_port));
            a.extend(v(&[
                "-v",
                "/var/run/docker.sock:/var/run/docker.sock",
                "-v",
                "/var/lib/docker/volumes:/var/lib/docker/volumes",
            ]));
            a.push(s.agent_image.clone());
            Some(a)
        }
    }
}

/// The Portainer container of the role, running. Returns whether it did anything.
/// `no_daemon_yet`: dry-run without Docker installed (nothing to ask, everything would be done).
/// `lacks_keyctl`: an unprivileged CT without keyctl=1 (runc then cannot start containers).
fn portainer(
    ctx: &StepContext,
    guest: &Guest,
    s: &DockerSettings,
    no_daemon_yet: bool,
    lacks_keyctl: bool,
) -> Result<bool> {
    let ctid = guest.ctid();
    let Some(args) = portainer_run_args(s) else {
        return Ok(false);
    };
    let name = if s.role == PortainerRole::Server {
        PORTAINER_SERVER_NAME
    } else {
        PORTAINER_AGENT_NAME
    };
    let state = if no_daemon_yet {
        None
    } else {
        container_state(guest, name)?
    };
    let changed = match state.as_deref() {
        Some("running") => {
            log::info!("[{ctid}] container `{name}` already running");
            false
        }
        Some(other) => {
            ctx.say(
                Some(ctid),
                &format!("starting the existing `{name}` container (was {other})"),
            );
            guest.run(&["docker", "start", name])?;
            true
        }
        None => {
            ctx.say(Some(ctid), &format!("starting Portainer ({name})"));
            let mut argv = vec!["docker"];
            argv.extend(args.iter().map(String::as_str));
            guest
                .run(&argv)
                .map_err(|e| keyctl_hint(ctid, e, lacks_keyctl))?;
            true
        }
    };
    if changed && !ctx.dry_run && container_state(guest, name)?.as_deref() != Some("running") {
        return Err(Error::guest(format!(
            "CT {ctid}: container `{name}` is not running after `docker run`; see `pct exec {ctid} -- docker logs {name}`"
        ))
        .into());
    }
    if s.role == PortainerRole::Agent {
        match &s.server_ip {
            Some(ip) => ctx.say(
                Some(ctid),
                &format!(
                    "Portainer agent listens on port {}; add it in the Portainer server at https://{ip}:{}",
                    s.agent_port, s.server_port
                ),
            ),
            None => log::warn!(
                "[{ctid}] network.portainer_server_ip is not set: register this agent (port {}) in the Portainer server by hand",
                s.agent_port
            ),
        }
    }
    Ok(changed)
}

/// A failed `docker run` in an unprivileged CT without keyctl=1 (runc cannot create its
/// session keyring): the error with the hint that fixes it.
fn keyctl_hint(ctid: Ctid, e: anyhow::Error, lacks_keyctl: bool) -> anyhow::Error {
    let msg = format!("{e:#}");
    if lacks_keyctl && msg.contains("keyring") {
        Error::guest(format!(
            "{msg}\nhint: CT {ctid} is unprivileged without keyctl=1; add keyctl=1 to lxc_configs.\"{ctid}\".features, apply it (`pct set {ctid} --features nesting=1,keyctl=1`, restart) and run this step again"
        ))
        .into()
    } else {
        e
    }
}

/// `docker inspect` state of a container, `None` when there is none of that name.
fn container_state(guest: &Guest, name: &str) -> Result<Option<String>> {
    let out = guest.query(&["docker", "inspect", "--format", "{{.State.Status}}", name])?;
    if out.success() {
        return Ok(Some(out.stdout.trim().to_string()));
    }
    if out.stderr.contains("No such object") || out.stderr.contains("No such container") {
        return Ok(None);
    }
    Err(Error::guest(format!(
        "CT {}: `docker inspect {name}` failed (exit {}): {}",
        guest.ctid(),
        out.code,
        out.tail(500)
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_existing_values_and_adds_missing() {
        let mut cur = parse_daemon_json(
            Ctid(910),
            r#"{"storage-driver":"vfs","log-opts":{"max-size":"50m"}}"#,
        )
        .unwrap();
        let Value::Object(d) = daemon_defaults() else {
            panic!()
        };
        assert!(merge_missing(&mut cur, &d));
        assert_eq!(
            Value::Object(cur.clone()),
            json!({"storage-driver":"vfs","log-opts":{"max-size":"50m","max-file":"3"},"log-driver":"json-file"})
        );
        assert!(!merge_missing(&mut cur, &d));
        assert!(parse_daemon_json(Ctid(910), "").unwrap().is_empty());
        for bad in ["[1]", "{", "\"x\""] {
            let e = parse_daemon_json(Ctid(910), bad).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 5, "{bad}");
        }
    }

    #[test]
    fn the_runc_cve_failure_is_recognised_with_its_remedy() {
        let docker = "docker: Error response from daemon: failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: open sysctl net.ipv4.ip_unprivileged_port_start file: reopen fd 8: permission denied: unknown";
        assert!(is_runc_sysctl_denied(docker));
        assert!(!is_runc_sysctl_denied(
            "unable to join session keyring: unable to create session key: permission denied"
        ));
        let d = runc_sysctl_diagnosis(
            Ctid(910),
            true,
            "proxmox-ve: 8.4.0\npve-container: 5.2.7\nlxc-pve: 6.0.0-1\n",
        );
        assert!(d.contains("CVE-2025-52881"), "{d}");
        assert!(d.contains("pve-container: 5.2.7, lxc-pve: 6.0.0-1"), "{d}");
        assert!(
            d.contains("lxc-pve 6.0.0-2") && d.contains("lxc-pve 6.0.5-2"),
            "{d}"
        );
        assert!(d.contains("pct reboot 910"), "{d}");
    }

    #[test]
    fn no_cgroups_only_under_its_table() {
        let base = "[nvidia-container-cli]\n#no-cgroups = false\nldconfig = \"@/sbin/ldconfig.real\"\n\n[nvidia-container-runtime]\nlog-level = \"info\"\n";
        assert!(!toolkit_no_cgroups(base));
        assert!(toolkit_no_cgroups(
            "[nvidia-container-cli]\nno-cgroups = true\n[x]\n"
        ));
        // The old shell tool's bug: the key under another table.
        assert!(!toolkit_no_cgroups(
            "[nvidia-container-cli]\n[nvidia-container-runtime]\nno-cgroups = true\n"
        ));
        assert!(!toolkit_no_cgroups("no-cgroups = true\n"));
        assert!(!toolkit_no_cgroups(
            "[nvidia-container-cli]\nno-cgroups = false\n"
        ));
    }

    #[test]
    fn os_release_and_sources() {
        let (id, code) = os_release(
            "ID=ubuntu\nVERSION_CODENAME=noble\nUBUNTU_CODENAME=noble\nNAME=\"Ubuntu\"\n",
        );
        assert_eq!(
            (id.as_deref(), code.as_deref()),
            (Some("ubuntu"), Some("noble"))
        );
        let (id, code) = os_release("ID=debian\nVERSION_CODENAME=bookworm\n");
        assert_eq!(
            (id.as_deref(), code.as_deref()),
            (Some("debian"), Some("bookworm"))
        );
        assert_eq!(
            docker_list_content("amd64", "ubuntu", "noble"),
            "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu noble stable\n"
        );
    }

    #[test]
    fn portainer_argv() {
        let mut s = DockerSettings {
            role: PortainerRole::Server,
            server_ip: None,
            server_port: 9443,
            agent_port: 9001,
            server_image: "portainer/portainer-ce:2.33.1-lts".into(),
            agent_image: "portainer/agent:2.33.1-lts".into(),
            gpus: false,
        };
        assert_eq!(
            portainer_run_args(&s).unwrap().join(" "),
            "run -d --name portainer --restart=always -p 8000:8000 -p 9443:9443 -v /var/run/docker.sock:/var/run/docker.sock -v portainer_data:/data portainer/portainer-ce:2.33.1-lts"
        );
        s.role = PortainerRole::Agent;
        s.agent_port = 9101;
        assert_eq!(
            portainer_run_args(&s).unwrap().join(" "),
            "run -d --name portainer_agent --restart=always -p 9101:9001 -v /var/run/docker.sock:/var/run/docker.sock -v /var/lib/docker/volumes:/var/lib/docker/volumes portainer/agent:2.33.1-lts"
        );
        s.role = PortainerRole::None;
        assert!(portainer_run_args(&s).is_none());
        assert!(valid_image("portainer/agent:2.33.1-lts"));
        assert!(!valid_image("-x"));
        assert!(!valid_image("a b"));
        assert!(!valid_image("a;b"));
    }
}
