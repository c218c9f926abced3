//! Setup plugins (`setup-<ctid>`) for the reference configuration. Each plugin is a binary in
//! `src/bin/` over the plugin SDK of `lib-common` ([`lib_common::sdk`]); this library holds
//! the pieces several of them share: the checks that lxc-nvidia / lxc-docker did their part,
//! the vLLM virtual environment, and the vLLM service's unit and token handling. Each piece
//! comes as its questions (`ask_*`, added to the plugin's one probe) and what it decides from
//! the answers (a check, or the changes to make), so a plugin looks once and changes once.

use std::time::Duration;

use lib_common::config::Ctid;
use lib_common::error::{Error, Result};
use lib_common::sdk::{Changes, CmdResult, Ct, Facts, Probe, Want};

/// Where the vLLM virtual environment lives.
pub const VLLM_VENV: &str = "/opt/vllm";
/// The interpreter of the venv.
pub const VLLM_PYTHON: &str = "/opt/vllm/bin/python";
/// The vLLM release the template installs (pinned so every template built from this config
/// gets the same one).
pub const VLLM_REQUIREMENT: &str = "vllm==0.10.1.1";
/// The port the vLLM server listens on inside the container.
pub const VLLM_PORT: u16 = 8000;
pub const VLLM_UNIT: &str = "vllm.service";
pub const VLLM_UNIT_PATH: &str = "/etc/systemd/system/vllm.service";
/// The environment file with the Hugging Face token (mode 0600, root only).
pub const VLLM_ENV_PATH: &str = "/etc/vllm/vllm.env";
/// Loading a large model takes minutes; how long `/health` may take to answer.
pub const VLLM_HEALTH_TIMEOUT: Duration = Duration::from_secs(900);

/// `nvidia-smi`'s driver version per GPU.
pub const NVIDIA_SMI: &[&str] = &[
    "nvidia-smi",
    "--query-gpu=driver_version",
    "--format=csv,noheader",
];
/// The Docker daemon's version (fails when the daemon does not answer).
pub const DOCKER_VERSION: &[&str] = &["docker", "info", "--format", "{{.ServerVersion}}"];
/// The Docker daemon's runtimes, as JSON.
pub const DOCKER_RUNTIMES: &[&str] = &["docker", "info", "--format", "{{json .Runtimes}}"];
/// Docker's unit.
pub const DOCKER_UNIT: &str = "docker.service";
/// `import vllm` in the venv.
pub const VLLM_IMPORT: &[&str] = &[VLLM_PYTHON, "-c", "import vllm"];
/// What the venv needs from the distribution.
pub const VLLM_PACKAGES: &[&str] = &["python3", "python3-venv", "python3-pip"];

fn precondition(msg: String) -> anyhow::Error {
    Error::precondition(msg).into()
}

/// The questions [`check_nvidia`] needs, added to `probe`.
pub fn ask_nvidia(probe: Probe) -> Probe {
    probe.cmd(NVIDIA_SMI)
}

/// The NVIDIA user space inside answers `nvidia-smi` with exactly the configured
/// `nvidia_driver_version`, for as many GPUs as `gpu_assignment` names (from the probe's
/// answers: no call). Exit 3 with a hint to run lxc-nvidia otherwise.
pub fn check_nvidia(ct: &Ct, facts: &Facts) -> Result<()> {
    let ctid = ct.ctid();
    let want = &ct.configs().lxc.nvidia_driver_version;
    let hint = format!("hint: run `phoenix_hypervisor_lxc_nvidia {ctid}` first");
    let out = facts.cmd(NVIDIA_SMI);
    if out.code == 127 {
        return Err(precondition(format!(
            "CT {ctid}: `nvidia-smi` is not installed in the container\n{hint}"
        )));
    }
    if !out.success() {
        let msg = format!("{}\n{}", out.stdout.trim(), out.stderr.trim());
        return Err(precondition(format!(
            "CT {ctid}: `nvidia-smi` fails inside the container (exit {}): {}\n{hint}",
            out.code,
            msg.trim()
        )));
    }
    let versions: Vec<&str> = out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if versions.iter().any(|v| v != want) || versions.is_empty() {
        return Err(precondition(format!(
            "CT {ctid}: `nvidia-smi` reports driver {} but nvidia_driver_version is {want}\n{hint}",
            versions.join(", ")
        )));
    }
    let assigned = ct.spec().gpus().len();
    if versions.len() != assigned {
        return Err(precondition(format!(
            "CT {ctid}: `nvidia-smi` sees {} GPU(s) but gpu_assignment names {assigned}\n{hint}",
            versions.len()
        )));
    }
    ct.say(&format!(
        "nvidia-smi reports driver {want} on {assigned} GPU(s)"
    ));
    Ok(())
}

/// The questions [`ensure_docker`] needs (and [`check_docker_nvidia_runtime`]'s), added to
/// `probe`.
pub fn ask_docker(probe: Probe) -> Probe {
    probe
        .unit(DOCKER_UNIT)
        .packages(&["docker-ce"])
        .cmd(DOCKER_VERSION)
        .cmd(DOCKER_RUNTIMES)
}

/// Docker is installed (by lxc-docker; exit 3 otherwise), its service enabled and running,
/// and `docker info` answers. Only the enabling/starting is done here, in one call verified
/// by `docker info` at its end; nothing when the probe's answers say all is well. Returns
/// whether it changed anything (then the probe's `docker info` answers are stale).
pub fn ensure_docker(ct: &Ct, facts: &Facts) -> Result<bool> {
    let ctid = ct.ctid();
    if !facts.installed("docker-ce") {
        return Err(precondition(format!(
            "CT {ctid}: Docker (docker-ce) is not installed in the container\nhint: run `phoenix_hypervisor_lxc_docker {ctid}` first (it needs `nesting=1` in features)"
        )));
    }
    let changes = Want::new().service(DOCKER_UNIT).changes(ctid, facts)?;
    if changes.is_empty() {
        let out = facts.cmd(DOCKER_VERSION);
        if !out.success() {
            return Err(docker_info_failed(ctid, out));
        }
        ct.say(&format!("docker {} is running", out.stdout.trim()));
        return Ok(false);
    }
    ct.apply(&changes.check(DOCKER_VERSION))?;
    if !ct.dry_run() {
        ct.say("docker is enabled and running");
    }
    Ok(true)
}

/// `docker info` failed inside CT `ctid`: a Guest error (exit 5) with its exit code and stderr.
fn docker_info_failed(ctid: Ctid, out: &CmdResult) -> anyhow::Error {
    Error::guest(format!(
        "CT {ctid}: `docker info` fails inside the container (exit {}): {}",
        out.code,
        out.stderr.trim()
    ))
    .into()
}

/// Docker lists the `nvidia` runtime (lxc-docker configured the NVIDIA container toolkit),
/// from `facts` (answers to [`ask_docker`] taken while Docker ran).
pub fn check_docker_nvidia_runtime(ct: &Ct, facts: &Facts) -> Result<()> {
    let ctid = ct.ctid();
    let out = facts.cmd(DOCKER_RUNTIMES);
    if !out.success() {
        return Err(docker_info_failed(ctid, out));
    }
    let runtimes: serde_json::Value = serde_json::from_str(out.stdout.trim()).map_err(|e| {
        Error::guest(format!(
            "CT {ctid}: unexpected `docker info` runtimes output ({e}): {}",
            out.stdout.trim()
        ))
    })?;
    if runtimes.get("nvidia").is_none() {
        return Err(precondition(format!(
            "CT {ctid}: Docker does not list the `nvidia` runtime (it has: {})\nhint: run `phoenix_hypervisor_lxc_docker {ctid}` (it configures the NVIDIA container toolkit for CTs with GPUs)",
            runtimes
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        )));
    }
    ct.say("docker lists the nvidia runtime");
    Ok(())
}

/// The questions [`vllm_venv_changes`] needs, added to `probe`.
pub fn ask_vllm(probe: Probe) -> Probe {
    probe
        .cmd(VLLM_IMPORT)
        .packages(VLLM_PACKAGES)
        .exists(VLLM_PYTHON)
}

/// What it takes to have vLLM importable in the virtual environment [`VLLM_VENV`]: nothing
/// when `import vllm` works there; otherwise the missing Python packages, the venv (when it
/// has no interpreter), `pip install` of [`VLLM_REQUIREMENT`], and `import vllm` to verify.
pub fn vllm_venv_changes(ct: &Ct, facts: &Facts) -> Changes {
    if facts.cmd(VLLM_IMPORT).success() {
        ct.say("vLLM is importable in /opt/vllm");
        return Changes::new();
    }
    let mut c = Changes::new().install(&facts.missing(VLLM_PACKAGES));
    if !facts.exists(VLLM_PYTHON) {
        c = c.cmd(&["python3", "-m", "venv", VLLM_VENV]);
    }
    c.cmd(&[
        "/opt/vllm/bin/pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        VLLM_REQUIREMENT,
    ])
    .check(VLLM_IMPORT)
}

/// One argument of a systemd `ExecStart=` line: double-quoted, with `\` and `"` escaped and
/// `%` / `$` doubled so systemd expands neither specifiers nor variables. Values with control
/// characters cannot be written on one line and are refused by the caller.
pub fn systemd_quote(arg: &str) -> String {
    let mut s = String::with_capacity(arg.len() + 2);
    s.push('"');
    for c in arg.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '%' => s.push_str("%%"),
            '$' => s.push_str("$$"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// The `vllm.service` unit serving `model` with `tensor_parallel` GPUs on [`VLLM_PORT`]. The
/// token reaches the service only through [`VLLM_ENV_PATH`] (`EnvironmentFile=`; `-` so a
/// missing file is no error).
pub fn vllm_unit(model: &str, tensor_parallel: u32) -> String {
    format!(
        "# Written by phoenix_hypervisor_setup (vLLM OpenAI-compatible server); changes are overwritten.
[Unit]
Description=vLLM OpenAI-compatible API server
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile=-{VLLM_ENV_PATH}
ExecStart={VLLM_PYTHON} -m vllm.entrypoints.openai.api_server --model {} --tensor-parallel-size {tensor_parallel} --port {VLLM_PORT}
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
",
        systemd_quote(model)
    )
}

/// The Hugging Face token in the host file `core_paths.hf_token_file` (read under the host
/// root): `None` when the file does not exist. The file holds the token alone or a
/// `HF_TOKEN=...` line; comments and blank lines are ignored. A token with characters a token
/// never has is a config error that does not show the value.
pub fn read_hf_token(ct: &Ct) -> Result<Option<String>> {
    let file = &ct.configs().hypervisor.core_paths.hf_token_file;
    let real = lib_common::paths::host_path(file);
    let text = match std::fs::read_to_string(&real) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(precondition(format!(
                "cannot read the Hugging Face token file `{file}` (core_paths.hf_token_file): {e}"
            )));
        }
    };
    if let Ok(meta) = std::fs::metadata(&real) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "the Hugging Face token file `{file}` can be read by other users (mode {:o}); `chmod 600 {file}`",
                meta.permissions().mode() & 0o777
            );
        }
    }
    let token = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.strip_prefix("HF_TOKEN=")
                .or_else(|| l.strip_prefix("HUGGING_FACE_HUB_TOKEN="))
                .unwrap_or(l)
                .trim_matches(|c| c == '"' || c == '\'')
        })
        .next();
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(Error::config(format!(
            "the Hugging Face token file `{file}` (core_paths.hf_token_file) holds no token\nhint: put the token (hf_...) alone on one line, or remove the file"
        ))
        .into());
    };
    if !token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(Error::config(format!(
            "the Hugging Face token in `{file}` (core_paths.hf_token_file) has characters a token never has (value not shown)\nhint: the file should hold only the token, e.g. hf_AbC..."
        ))
        .into());
    }
    Ok(Some(token.to_string()))
}

/// `vllm_model`, checked: present, non-empty, one line.
pub fn vllm_model(ct: &Ct) -> Result<String> {
    let ctid = ct.ctid();
    let field = format!("lxc_configs.\"{ctid}\".vllm_model");
    let Some(model) = ct
        .spec()
        .vllm_model
        .as_deref()
        .filter(|m| !m.trim().is_empty())
    else {
        return Err(Error::config(format!(
            "CT {ctid}: {field} is not set; the vLLM server needs the model to serve"
        ))
        .into());
    };
    if model.chars().any(char::is_control) {
        return Err(Error::config(format!(
            "CT {ctid}: {field} contains control characters (newline, tab, ...)"
        ))
        .into());
    }
    Ok(model.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_quoting_neutralises_specials() {
        assert_eq!(systemd_quote("org/model"), "\"org/model\"");
        assert_eq!(
            systemd_quote(r#"x'; touch /tmp/pwned; '"#),
            r#""x'; touch /tmp/pwned; '""#
        );
        assert_eq!(systemd_quote(r#"a"b\c%d$e"#), r#""a\"b\\c%%d$$e""#);
    }

    #[test]
    fn unit_has_the_contract_command_line() {
        let u = vllm_unit("lmstudio-community/Qwen3-Coder", 2);
        assert!(u.contains(
            "ExecStart=/opt/vllm/bin/python -m vllm.entrypoints.openai.api_server --model \"lmstudio-community/Qwen3-Coder\" --tensor-parallel-size 2 --port 8000\n"
        ), "{u}");
        assert!(u.contains("EnvironmentFile=-/etc/vllm/vllm.env\n"));
        assert!(u.contains("WantedBy=multi-user.target"));
    }
}
