//! `phoenix_hypervisor_setup_950`: the vLLM server. A systemd unit `vllm.service` serves
//! `vllm_model` with `vllm_tensor_parallel_size` on port 8000, enabled and started; `/health`
//! answers and `/v1/models` lists the model. The Hugging Face token (host file
//! `core_paths.hf_token_file`, if present) reaches the service only through the 0600
//! environment file `/etc/vllm/vllm.env`: never on a command line or in the log. With GPUs
//! assigned, `nvidia-smi` must see them with the configured driver first (exit 3 otherwise).

use lib_common::error::{Error, Result};
use lib_common::sdk::{self, Ct};
use setup_plugins::{
    VLLM_ENV_PATH, VLLM_HEALTH_TIMEOUT, VLLM_PORT, VLLM_UNIT, VLLM_UNIT_PATH, read_hf_token,
    vllm_model, vllm_unit,
};

fn main() -> std::process::ExitCode {
    sdk::run(
        950,
        "vLLM server: vllm.service serving the configured model on port 8000",
        |ct| {
            let model = vllm_model(ct)?;
            let tp = ct.spec().vllm_tensor_parallel_size.unwrap_or(1);
            // vLLM on GPUs it cannot see would only fail at start, after the health timeout.
            if ct.spec().has_gpus() {
                setup_plugins::check_nvidia(ct)?;
            }
            setup_plugins::ensure_vllm_venv(ct)?;
            let was_active = ct.service_active(VLLM_UNIT)?;
            let mut changed =
                ct.ensure_file(VLLM_UNIT_PATH, vllm_unit(&model, tp).as_bytes(), 0o644)?;
            if changed {
                ct.daemon_reload()?;
            }
            changed |= ensure_token(ct)?;
            ct.ensure_service(VLLM_UNIT)?;
            if changed && was_active {
                ct.restart_service(VLLM_UNIT)?;
            }
            if ct.dry_run() {
                return Ok(());
            }
            let base = format!("http://localhost:{VLLM_PORT}");
            ct.wait_http(&format!("{base}/health"), VLLM_HEALTH_TIMEOUT)?;
            check_model_listed(ct, &base, &model)?;
            ct.say(&format!("vLLM serves `{model}` on port {VLLM_PORT}"));
            Ok(())
        },
    )
}

/// The token file on the host → `/etc/vllm/vllm.env` (0600). Returns whether it changed.
fn ensure_token(ct: &Ct) -> Result<bool> {
    let Some(token) = read_hf_token(ct)? else {
        ct.say(&format!(
            "no Hugging Face token file at `{}`; models are downloaded anonymously",
            ct.configs().hypervisor.core_paths.hf_token_file
        ));
        return Ok(false);
    };
    ct.ensure_dir("/etc/vllm", 0o700)?;
    let changed = ct.ensure_file(
        VLLM_ENV_PATH,
        format!("HF_TOKEN={token}\n").as_bytes(),
        0o600,
    )?;
    if changed {
        ct.say(&format!(
            "wrote the Hugging Face token to {VLLM_ENV_PATH} (0600)"
        ));
    }
    Ok(changed)
}

fn check_model_listed(ct: &Ct, base: &str, model: &str) -> Result<()> {
    let ctid = ct.ctid();
    let body = ct.http_get(&format!("{base}/v1/models"))?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
        Error::guest(format!(
            "CT {ctid}: /v1/models answered something that is not JSON ({e})"
        ))
    })?;
    let ids: Vec<&str> = v["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    if !ids.contains(&model) {
        return Err(Error::guest(format!(
            "CT {ctid}: the vLLM server does not list `{model}` in /v1/models (it lists: {})\nhint: `pct exec {ctid} -- journalctl -u vllm`",
            ids.join(", ")
        ))
        .into());
    }
    Ok(())
}
