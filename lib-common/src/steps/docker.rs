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
//! One probe (issue 14: every `pct` call costs the Perl CLI's start-up) waits for the guest and
//! reads everything the step decides on: packages, distribution, keyrings and sources lists,
//! daemon.json, the docker unit, `docker info`, the smoke test with a local image, the
//! Portainer container, the toolkit's config. What is missing is then put in place by one
//! `pct exec` of [`APPLY_SCRIPT`], which checks its result at its end (`docker info`, the
//! Portainer container running, `docker run --rm hello-world`). A converged CT costs the probe
//! only, and a second run runs no install command and no mutating `pct` call. Values reach the
//! guest as positional parameters, never as code.

use serde_json::{Map, Value, json};

use crate::config::{Ctid, PortainerRole};
use crate::error::{Error, Result};
use crate::guest::Guest;
use crate::pct::PctConfig;
use crate::probe::{Facts, Probe};
use crate::step::{StepContext, ensure_running_probe};
use crate::steps::Outcome;

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

/// Packages the repository setup needs (the key download and apt over HTTPS).
pub const BASE_PACKAGES: [&str; 2] = ["ca-certificates", "curl"];
/// The guest's distribution (ID and codename name Docker's repository).
pub const OS_RELEASE: &str = "/etc/os-release";
/// The guest's Debian architecture, asked in the probe.
pub const ARCH_CMD: [&str; 2] = ["dpkg", "--print-architecture"];
/// How long the probe lets a Docker command run: a hung daemon fails the step (exit 124 from
/// coreutils' `timeout`) instead of hanging it.
pub const DOCKER_PROBE_TIMEOUT_S: &str = "60";
/// The daemon's answer and storage driver, asked in the probe.
pub const INFO_CMD: [&str; 6] = [
    "timeout",
    DOCKER_PROBE_TIMEOUT_S,
    "docker",
    "info",
    "--format",
    "{{.Driver}}",
];
/// The smoke test as the probe runs it: only with an image already there (`--pull=never`), so
/// the probe stays read-only in effect and needs no network. When it fails (no image yet, no
/// daemon), the setup script runs the real smoke test, which may pull.
pub const SMOKE_PROBE_CMD: [&str; 7] = [
    "timeout",
    DOCKER_PROBE_TIMEOUT_S,
    "docker",
    "run",
    "--rm",
    "--pull=never",
    SMOKE_IMAGE,
];
/// What [`APPLY_SCRIPT`] prints on stderr when its smoke test fails.
pub const SMOKE_FAILED: &str = "phoenix-docker: smoke test";
/// The line of [`APPLY_SCRIPT`]'s stdout that names the storage driver (`docker info`).
pub const DRIVER_LINE: &str = "phoenix-docker-driver ";

/// Everything this step changes in a container, in one `pct exec`: `bash -c APPLY_SCRIPT _
/// ACTION...`, each [`Action`] as a word and its values (positional parameters, never code).
/// Actions: `apt N PKG...` (`apt-get update`, then `apt-get install -y` without questions,
/// changed config files kept), `fetch URL DEST` (curl, atomically, mode 0644), `write PATH MODE
/// CONTENT` (atomically), `run N ARG...`, `service RESTART` (docker enabled and started;
/// restarted when RESTART is 1 and it was running), `info` (`docker info` answers; prints
/// [`DRIVER_LINE`]), `container NAME N ARG...` (the container started if it exists, else
/// `docker ARG...`; then it must be running), `smoke IMAGE` (`docker run --rm IMAGE`). The
/// first failure ends the script with that command's exit code and a last stderr line naming
/// it. Every action can run again (the whole script is retried while the network is down).
pub const APPLY_SCRIPT: &str = r#"export DEBIAN_FRONTEND=noninteractive
fail() { c=$1; shift; printf 'phoenix-docker: `%s` failed (exit %s)\n' "$*" "$c" >&2; exit "$c"; }
while [ $# -gt 0 ]; do
  op=$1; shift
  case "$op" in
    apt) n=$1; shift
      apt-get update -q || fail $? apt-get update -q
      apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${@:1:$n}" || fail $? apt-get install -y "${@:1:$n}"
      shift "$n" ;;
    fetch) mkdir -p -- "$(dirname -- "$2")" || fail $? mkdir -p "$(dirname -- "$2")"
      t="$2.part.$$"
      curl -fsSL -o "$t" -- "$1" || { c=$?; rm -f -- "$t"; fail "$c" curl -fsSL "$1"; }
      { chmod 0644 -- "$t" && mv -f -- "$t" "$2"; } || fail $? mv -f "$t" "$2"
      shift 2 ;;
    write) mkdir -p -- "$(dirname -- "$1")" || fail $? mkdir -p "$(dirname -- "$1")"
      t=$(mktemp -- "$1.XXXXXX") || fail $? mktemp "$1.XXXXXX"
      { printf '%s' "$3" >"$t" && chmod -- "$2" "$t" && mv -f -- "$t" "$1"; } || { c=$?; rm -f -- "$t"; fail "$c" write "$1"; }
      shift 3 ;;
    run) n=$1; shift
      "${@:1:$n}" || fail $? "${@:1:$n}"
      shift "$n" ;;
    service) systemctl is-enabled -q docker 2>/dev/null || systemctl enable docker || fail $? systemctl enable docker
      if ! systemctl is-active -q docker; then systemctl start docker || fail $? systemctl start docker
      elif [ "$1" = 1 ]; then systemctl restart docker || fail $? systemctl restart docker
      fi
      shift ;;
    info) d=$(docker info --format '{{.Driver}}') || fail $? docker info
      printf 'phoenix-docker-driver %s\n' "$d" ;;
    container) name=$1; n=$2; shift 2
      if s=$(docker inspect --format '{{.State.Status}}' "$name" 2>/dev/null); then
        [ "$s" = running ] || docker start "$name" || fail $? docker start "$name"
      else
        docker "${@:1:$n}" || fail $? docker "${@:1:$n}"
      fi
      shift "$n"
      s=$(docker inspect --format '{{.State.Status}}' "$name" 2>&1)
      [ "$s" = running ] || { printf 'phoenix-docker: container `%s` is not running after `docker run` (%s); see `docker logs %s`\n' "$name" "$s" "$name" >&2; exit 1; } ;;
    smoke) docker run --rm "$1" || { c=$?; printf 'phoenix-docker: smoke test `docker run --rm %s` failed (exit %s)\n' "$1" "$c" >&2; exit "$c"; }
      shift ;;
    *) printf 'phoenix-docker: unknown action %s\n' "$op" >&2; exit 125 ;;
  esac
done"#;

/// One change [`APPLY_SCRIPT`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `apt-get update`, then `apt-get install -y` of these packages.
    AptInstall(Vec<String>),
    /// A repository key downloaded from `url` to `dest`.
    Fetch { url: String, dest: String },
    /// A file that is not secret written with `mode`.
    Write {
        path: String,
        mode: String,
        content: String,
    },
    /// A command that must succeed.
    Run(Vec<String>),
    /// docker enabled and running; restarted if it ran and `restart`.
    Service { restart: bool },
    /// `docker info` answers (prints the storage driver).
    Info,
    /// Container `name` running: started when it exists, else `docker ARGS...`.
    Container { name: String, args: Vec<String> },
    /// `docker run --rm IMAGE`.
    Smoke(String),
}

impl Action {
    /// Its words for [`APPLY_SCRIPT`].
    pub fn args(&self) -> Vec<String> {
        let counted = |op: &str, v: &[String]| {
            let mut a = vec![op.to_string(), v.len().to_string()];
            a.extend(v.iter().cloned());
            a
        };
        match self {
            Action::AptInstall(p) => counted("apt", p),
            Action::Fetch { url, dest } => vec!["fetch".into(), url.clone(), dest.clone()],
            Action::Write {
                path,
                mode,
                content,
            } => vec!["write".into(), path.clone(), mode.clone(), content.clone()],
            Action::Run(argv) => counted("run", argv),
            Action::Service { restart } => {
                vec!["service".into(), if *restart { "1" } else { "0" }.into()]
            }
            Action::Info => vec!["info".into()],
            Action::Container { name, args } => {
                let mut a = vec!["container".to_string(), name.clone()];
                a.extend(counted("", args).into_iter().skip(1));
                a
            }
            Action::Smoke(image) => vec!["smoke".into(), image.clone()],
        }
    }

    /// What it does, for people (`--dry-run` prints one line per action).
    pub fn describe(&self, ctid: Ctid) -> String {
        let run = |argv: &str| format!("would run: pct exec {ctid} -- {argv}");
        match self {
            Action::AptInstall(p) => run(&format!(
                "apt-get update -q && apt-get install -y {}",
                p.join(" ")
            )),
            Action::Fetch { url, dest } => run(&format!("curl -fsSL -o {dest} {url}")),
            Action::Write {
                path,
                mode,
                content,
            } => format!(
                "would write {} bytes to `{path}` in CT {ctid} (mode {mode})",
                content.len()
            ),
            Action::Run(argv) => run(&crate::pct::display_argv(
                &argv.iter().map(String::as_str).collect::<Vec<_>>(),
            )),
            Action::Service { restart: true } => {
                run("systemctl enable docker && systemctl restart docker")
            }
            Action::Service { restart: false } => {
                run("systemctl enable docker && systemctl start docker")
            }
            Action::Info => run(&crate::pct::display_argv(&INFO_CMD[2..])),
            Action::Container { args, .. } => run(&format!(
                "docker {}",
                crate::pct::display_argv(&args.iter().map(String::as_str).collect::<Vec<_>>())
            )),
            Action::Smoke(image) => run(&format!("docker run --rm {image} (smoke test)")),
        }
    }
}

/// The `docker inspect` argv that asks a container's state.
fn inspect_cmd(name: &str) -> [&str; 5] {
    ["docker", "inspect", "--format", "{{.State.Status}}", name]
}

/// The name of the Portainer container of a role.
fn portainer_name(role: PortainerRole) -> Option<&'static str> {
    match role {
        PortainerRole::Server => Some(PORTAINER_SERVER_NAME),
        PortainerRole::Agent => Some(PORTAINER_AGENT_NAME),
        PortainerRole::None => None,
    }
}

/// Everything the step needs to decide, in one probe: packages, distribution and architecture,
/// keyrings and sources lists, daemon.json, the docker unit, `docker info`, the smoke test with
/// a local image, the Portainer container's state and (GPUs) the toolkit's config.
pub fn state_probe(s: &DockerSettings) -> Probe {
    let mut pkgs: Vec<&str> = DOCKER_PACKAGES.to_vec();
    pkgs.extend(BASE_PACKAGES);
    if s.gpus {
        pkgs.push(TOOLKIT_PACKAGE);
    }
    let mut p = Probe::new()
        .packages(&pkgs)
        .read(OS_RELEASE)
        .cmd(&ARCH_CMD)
        .exists(DOCKER_KEYRING)
        .read(DOCKER_LIST)
        .read(DAEMON_JSON)
        .unit("docker")
        .cmd(&INFO_CMD)
        .cmd(&SMOKE_PROBE_CMD);
    if s.gpus {
        p = p
            .exists(TOOLKIT_KEYRING)
            .read(TOOLKIT_LIST)
            .read(TOOLKIT_CONFIG);
    }
    if let Some(name) = portainer_name(s.role) {
        p = p.cmd(&inspect_cmd(name));
    }
    p
}

/// Run the step for `ctid`: one probe (readiness and state), then, when anything is missing,
/// one `pct exec` of [`APPLY_SCRIPT`] that changes it and checks the result (`docker info`,
/// the Portainer container running, the smoke test).
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
    let probe = state_probe(&settings);
    let (started, facts) = ensure_running_probe(pct, ctid, ctx.ready_timeout(), &probe)?;
    let mut outcome = if started {
        Outcome::Changed
    } else {
        Outcome::Unchanged
    };
    let Some(mut facts) = facts else {
        // Dry run of a CT that is not running: nothing inside can be asked.
        ctx.say(
            Some(ctid),
            "is not running: would start it, then set up Docker as far as it is missing (its state cannot be read while it is stopped)",
        );
        return Ok(Outcome::Changed);
    };
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
            let (_, again) = ensure_running_probe(pct, ctid, ctx.ready_timeout(), &probe)?;
            facts = again
                .ok_or_else(|| Error::guest(format!("CT {ctid}: no state after its restart")))?;
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

    let actions = plan(ctx, ctid, &settings, &facts, unprivileged)?;
    // The smoke test alone (its image was not there yet, or it failed in the probe) checks;
    // it changes no configuration.
    if actions.iter().any(|a| !matches!(a, Action::Smoke(_))) {
        outcome = Outcome::Changed;
    }
    if !actions.is_empty() {
        if ctx.dry_run {
            for a in &actions {
                println!("{}", a.describe(ctid));
            }
        } else {
            apply(ctx, ctid, &actions, unprivileged, lacks_keyctl)?;
        }
    }
    if settings.role == PortainerRole::Agent {
        match &settings.server_ip {
            Some(ip) => ctx.say(
                Some(ctid),
                &format!(
                    "Portainer agent listens on port {}; add it in the Portainer server at https://{ip}:{}",
                    settings.agent_port, settings.server_port
                ),
            ),
            None => log::warn!(
                "[{ctid}] network.portainer_server_ip is not set: register this agent (port {}) in the Portainer server by hand",
                settings.agent_port
            ),
        }
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

/// What is missing, from the probe's answers, as the actions that put it in place (empty: all
/// in place). Says what it will do; warns about the `vfs` driver when nothing changes.
fn plan(
    ctx: &StepContext,
    ctid: Ctid,
    s: &DockerSettings,
    facts: &Facts,
    unprivileged: bool,
) -> Result<Vec<Action>> {
    let mut actions = Vec::new();
    let engine_missing = facts.missing(&DOCKER_PACKAGES);
    let toolkit_missing = s.gpus && !facts.installed(TOOLKIT_PACKAGE);
    let mut apt: Vec<String> = Vec::new();
    if !engine_missing.is_empty() || toolkit_missing {
        let base = facts.missing(&BASE_PACKAGES);
        if !base.is_empty() {
            actions.push(Action::AptInstall(base));
        }
    }
    if engine_missing.is_empty() {
        log::info!("[{ctid}] Docker Engine already installed");
    } else {
        ctx.say(
            Some(ctid),
            &format!("installing Docker Engine ({})", engine_missing.join(" ")),
        );
        let (id, codename) = os_release(facts.read(ctid, OS_RELEASE)?.unwrap_or(""));
        let (Some(id), Some(codename)) = (id, codename) else {
            return Err(Error::precondition(format!(
                "CT {ctid}: {OS_RELEASE} names no distribution ID or codename; Docker's repository needs both"
            ))
            .into());
        };
        if !matches!(id.as_str(), "ubuntu" | "debian") || !word(&codename) {
            return Err(Error::precondition(format!(
                "CT {ctid}: the container runs {id} {codename}; Docker is set up for Ubuntu or Debian containers only"
            ))
            .into());
        }
        let arch_out = facts.cmd(&ARCH_CMD);
        let arch = arch_out.stdout.trim();
        if !arch_out.success() || !word(arch) {
            return Err(Error::guest(format!(
                "CT {ctid}: `dpkg --print-architecture` printed {arch:?} (exit {}) {}",
                arch_out.code,
                arch_out.stderr.trim()
            ))
            .into());
        }
        if !facts.exists(DOCKER_KEYRING) {
            actions.push(Action::Fetch {
                url: format!("https://download.docker.com/linux/{id}/gpg"),
                dest: DOCKER_KEYRING.into(),
            });
        }
        let list = docker_list_content(arch, &id, &codename);
        if facts.read(ctid, DOCKER_LIST)? != Some(list.as_str()) {
            actions.push(Action::Write {
                path: DOCKER_LIST.into(),
                mode: "0644".into(),
                content: list,
            });
        }
        apt.extend(engine_missing.iter().cloned());
    }
    if toolkit_missing {
        ctx.say(Some(ctid), "installing the NVIDIA container toolkit");
        if !facts.exists(TOOLKIT_KEYRING) {
            actions.push(Action::Fetch {
                url: TOOLKIT_KEY_URL.into(),
                dest: TOOLKIT_KEYRING.into(),
            });
        }
        if facts.read(ctid, TOOLKIT_LIST)? != Some(TOOLKIT_REPO_LINE) {
            actions.push(Action::Write {
                path: TOOLKIT_LIST.into(),
                mode: "0644".into(),
                content: TOOLKIT_REPO_LINE.into(),
            });
        }
        apt.push(TOOLKIT_PACKAGE.into());
    }
    let installs = !apt.is_empty();
    if installs {
        actions.push(Action::AptInstall(apt));
    }

    // daemon.json: our keys merged in Rust and written first; `nvidia-ctk runtime configure`
    // then adds its runtime to that file (it keeps the keys there).
    let mut restart = false;
    let mut current = parse_daemon_json(ctid, facts.read(ctid, DAEMON_JSON)?.unwrap_or(""))?;
    let has_runtime = current
        .get("runtimes")
        .and_then(|r| r.get("nvidia"))
        .is_some();
    if !s.gpus && has_runtime {
        log::warn!(
            "[{ctid}] `{DAEMON_JSON}` has an nvidia runtime but the CT has no GPUs (gpu_assignment none); containers using it will fail. Left as it is."
        );
    }
    let Value::Object(defaults) = daemon_defaults() else {
        unreachable!("daemon_defaults is an object");
    };
    if merge_missing(&mut current, &defaults) {
        let mut out = serde_json::to_string_pretty(&Value::Object(current))
            .map_err(|e| Error::guest(format!("CT {ctid}: cannot serialize daemon.json: {e}")))?;
        out.push('\n');
        ctx.say(
            Some(ctid),
            &format!("merging log settings into `{DAEMON_JSON}`"),
        );
        actions.push(Action::Write {
            path: DAEMON_JSON.into(),
            mode: "0644".into(),
            content: out,
        });
        restart = true;
    }
    if s.gpus && !has_runtime {
        ctx.say(Some(ctid), "adding the nvidia runtime to Docker");
        actions.push(Action::Run(strings(&[
            "nvidia-ctk",
            "runtime",
            "configure",
            "--runtime=docker",
        ])));
        restart = true;
    }
    if s.gpus
        && unprivileged
        && !toolkit_no_cgroups(facts.read(ctid, TOOLKIT_CONFIG)?.unwrap_or(""))
    {
        ctx.say(
            Some(ctid),
            "unprivileged container: setting no-cgroups = true under [nvidia-container-cli]",
        );
        actions.push(Action::Run(strings(&[
            "nvidia-ctk",
            "config",
            "--set",
            "nvidia-container-cli.no-cgroups=true",
            "--in-place",
        ])));
    }
    let (enabled, active) = facts.unit("docker");
    if installs || restart || !enabled || !active {
        if installs {
            ctx.say(Some(ctid), "enabling and (re)starting docker");
        } else if !active {
            ctx.say(Some(ctid), "starting docker");
        } else if restart {
            ctx.say(Some(ctid), "restarting docker to apply its configuration");
        } else {
            ctx.say(Some(ctid), "enabling docker");
        }
        actions.push(Action::Service { restart });
    }
    let docker_changed = !actions.is_empty();
    if docker_changed {
        actions.push(Action::Info);
    } else {
        let info = facts.cmd(&INFO_CMD);
        if !info.success() {
            return Err(Error::guest(format!(
                "CT {ctid}: `docker info` failed (exit {}): {}",
                info.code,
                tail(&info.stderr, &info.stdout)
            ))
            .into());
        }
        warn_vfs(ctid, info.stdout.trim());
    }

    if let (Some(name), Some(args)) = (portainer_name(s.role), portainer_run_args(s)) {
        let r = facts.cmd(&inspect_cmd(name));
        let state = if r.success() {
            Some(r.stdout.trim().to_string())
        } else if r.stderr.contains("No such object")
            || r.stderr.contains("No such container")
            || docker_changed
        {
            None
        } else {
            return Err(Error::guest(format!(
                "CT {ctid}: `docker inspect {name}` failed (exit {}): {}",
                r.code,
                tail(&r.stderr, &r.stdout)
            ))
            .into());
        };
        match state.as_deref() {
            Some("running") => log::info!("[{ctid}] container `{name}` already running"),
            Some(other) => ctx.say(
                Some(ctid),
                &format!("starting the existing `{name}` container (was {other})"),
            ),
            None => ctx.say(Some(ctid), &format!("starting Portainer ({name})")),
        }
        if state.as_deref() != Some("running") {
            actions.push(Action::Container {
                name: name.into(),
                args,
            });
        }
    }
    // The smoke test of the probe ran with a local image only; it runs again (and may pull)
    // after any change to Docker, or when it failed.
    if docker_changed || !facts.cmd(&SMOKE_PROBE_CMD).success() {
        actions.push(Action::Smoke(SMOKE_IMAGE.into()));
    } else {
        log::info!("[{ctid}] smoke test: `docker run --rm {SMOKE_IMAGE}` ran a container");
    }
    Ok(actions)
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The last 500 characters of `stderr`, or of `stdout` when stderr is empty.
fn tail(stderr: &str, stdout: &str) -> String {
    let s = if stderr.trim().is_empty() {
        stdout.trim()
    } else {
        stderr.trim()
    };
    let n = s.chars().count();
    s.chars().skip(n.saturating_sub(500)).collect()
}

/// Warn about the `vfs` storage driver.
fn warn_vfs(ctid: Ctid, driver: &str) {
    if driver == "vfs" {
        log::warn!(
            "[{ctid}] Docker uses the `vfs` storage driver (no overlay support on this storage, e.g. ZFS older than 2.2): every image layer is a full copy and disk use grows fast\nhint: upgrade the host to ZFS 2.2+ (PVE 8.1+) or put /var/lib/docker on a non-ZFS volume"
        );
    }
}

/// Run the actions in one `pct exec` of [`APPLY_SCRIPT`] (retried while the network is down).
/// A failure is a Guest error naming the CTID and the failing command; the CVE-2025-52881 runc
/// failure gets its diagnosis, a missing keyctl its hint, and a smoke test that cannot pull its
/// image because the network stays down only a warning (everything before it was done).
fn apply(
    ctx: &StepContext,
    ctid: Ctid,
    actions: &[Action],
    unprivileged: bool,
    lacks_keyctl: bool,
) -> Result<()> {
    let guest = Guest::new(&ctx.pct, ctid).with_network_timeout(ctx.ready_timeout());
    let args: Vec<String> = actions.iter().flat_map(Action::args).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = match guest.run_script("set up Docker", APPLY_SCRIPT, &args) {
        Ok(out) => {
            if let Some(d) = out.stdout.lines().find_map(|l| l.strip_prefix(DRIVER_LINE)) {
                warn_vfs(ctid, d.trim());
            }
            if actions.iter().any(|a| matches!(a, Action::Smoke(_))) {
                log::info!("[{ctid}] smoke test: `docker run --rm {SMOKE_IMAGE}` ran a container");
            }
            return Ok(());
        }
        Err(e) => e,
    };
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
    if !msg.contains(SMOKE_FAILED) {
        return Err(keyctl_hint(ctid, e, lacks_keyctl));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`APPLY_SCRIPT`] with bash on this machine, with stand-ins for apt-get, curl,
    /// systemctl and docker on PATH that log their argv, so the framing of the actions, their
    /// order and the failure line are tested end to end.
    fn run_apply(
        actions: &[Action],
        tools: &[(&str, &str)],
    ) -> (tempfile::TempDir, crate::pct::ExecOutput, String) {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = d.path().join("log");
        for (name, body) in tools {
            let p = bin.join(name);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/bash\necho \"{name} $*\" >>'{}'\n{body}\n",
                    log.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let args: Vec<String> = actions.iter().flat_map(Action::args).collect();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(APPLY_SCRIPT)
            .arg("_")
            .args(&args)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("STATE", d.path().join("state"))
            .output()
            .unwrap();
        let out = crate::pct::ExecOutput {
            code: out.status.code().unwrap(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        };
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        (d, out, log)
    }

    /// A docker stand-in: `inspect` prints the state in $STATE (none: no such object), `run -d`
    /// and `start` make it running, `info` prints a driver.
    const DOCKER: &str = r#"case "$1" in
  inspect) [ -f "$STATE" ] || { echo "Error: No such object: ${@: -1}" >&2; exit 1; }; cat "$STATE" ;;
  start) echo running >"$STATE" ;;
  run) if [ "$2" = -d ]; then echo running >"$STATE"; else echo 'Hello from Docker!'; fi ;;
  info) echo overlay2 ;;
esac"#;

    #[test]
    fn the_setup_script_runs_every_action_in_order_with_values_as_data() {
        let d0 = tempfile::tempdir().unwrap();
        let list = d0.path().join("etc/apt/sources.list.d/x.list");
        let key = d0.path().join("keyrings/x.asc");
        let weird = "deb [a=b] https://x/$1 `id` 'q' \"z\"\n";
        let actions = vec![
            Action::Fetch {
                url: "https://example.invalid/gpg".into(),
                dest: key.to_str().unwrap().into(),
            },
            Action::Write {
                path: list.to_str().unwrap().into(),
                mode: "0640".into(),
                content: weird.into(),
            },
            Action::AptInstall(strings(&["docker-ce", "containerd.io"])),
            Action::Service { restart: true },
            Action::Info,
            Action::Container {
                name: "portainer".into(),
                args: strings(&["run", "-d", "--name", "portainer", "img:1"]),
            },
            Action::Smoke(SMOKE_IMAGE.into()),
        ];
        let (_d, out, log) = run_apply(
            &actions,
            &[
                ("apt-get", ""),
                ("curl", r#"printf key >"$3""#),
                ("systemctl", r#"[ "$1" != is-enabled ]"#),
                ("docker", DOCKER),
            ],
        );
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(std::fs::read_to_string(&list).unwrap(), weird);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&list), 0o640);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "key");
        assert_eq!(mode(&key), 0o644);
        assert!(
            out.stdout.contains(&format!("{DRIVER_LINE}overlay2\n")),
            "{out:?}"
        );
        let calls: Vec<&str> = log.lines().collect();
        let want = [
            &format!("curl -fsSL -o {}.part.", key.display())[..],
            "apt-get update -q",
            "apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold docker-ce containerd.io",
            "systemctl is-enabled -q docker",
            "systemctl enable docker",
            "systemctl is-active -q docker",
            "systemctl restart docker",
            "docker info --format {{.Driver}}",
            "docker inspect --format {{.State.Status}} portainer",
            "docker run -d --name portainer img:1",
            "docker inspect --format {{.State.Status}} portainer",
            "docker run --rm hello-world",
        ];
        assert_eq!(calls.len(), want.len(), "{log}");
        for (w, g) in want.iter().zip(&calls) {
            assert!(g.starts_with(w), "`{g}` is not `{w}...`:\n{log}");
        }
    }

    #[test]
    fn the_setup_script_stops_at_the_first_failure_and_names_it() {
        let d0 = tempfile::tempdir().unwrap();
        let daemon = d0.path().join("daemon.json");
        let actions = vec![
            Action::AptInstall(strings(&["docker-ce"])),
            Action::Write {
                path: daemon.to_str().unwrap().into(),
                mode: "0644".into(),
                content: "{}\n".into(),
            },
        ];
        let (_d, out, log) = run_apply(
            &actions,
            &[(
                "apt-get",
                r#"[ "$1" = install ] && { echo 'E: Unable to locate package docker-ce' >&2; exit 100; }; exit 0"#,
            )],
        );
        assert_eq!(out.code, 100, "{out:?}");
        assert_eq!(
            out.stderr.lines().last(),
            Some("phoenix-docker: `apt-get install -y docker-ce` failed (exit 100)"),
            "{out:?}"
        );
        assert!(out.stderr.contains("Unable to locate package"));
        assert!(!daemon.exists(), "{log}");

        // A stopped container is started, not created again; one that does not stay up fails.
        let start = Action::Container {
            name: "portainer".into(),
            args: strings(&["run", "-d", "--name", "portainer", "img:1"]),
        };
        let (d, out, log) = run_apply(
            std::slice::from_ref(&start),
            &[(
                "docker",
                r#"case "$1" in inspect) [ -f "$STATE" ] && cat "$STATE" || echo exited ;; start) echo running >"$STATE" ;; esac"#,
            )],
        );
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            log.contains("docker start portainer") && !log.contains("docker run"),
            "{log}"
        );
        drop(d);
        let (_d, out, _) = run_apply(
            &[start, Action::Smoke(SMOKE_IMAGE.into())],
            &[("docker", r#"[ "$1" = inspect ] && echo exited; exit 0"#)],
        );
        assert_eq!(out.code, 1, "{out:?}");
        assert!(
            out.stderr
                .contains("container `portainer` is not running after `docker run` (exited)"),
            "{out:?}"
        );
        // The smoke test's failure line is what `apply` recognises.
        let (_d, out, _) = run_apply(
            &[Action::Smoke(SMOKE_IMAGE.into())],
            &[("docker", "echo 'docker: no' >&2; exit 125")],
        );
        assert_eq!(out.code, 125);
        assert!(
            out.stderr.lines().last().unwrap().starts_with(SMOKE_FAILED),
            "{out:?}"
        );
    }

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
