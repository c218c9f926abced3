//! `phoenix_hypervisor_setup_950`: the vLLM server. A systemd unit `vllm.service` serves
//! `vllm_model` with `vllm_tensor_parallel_size` on port 8000, enabled and started; `/health`
//! answers and `/v1/models` lists the model. The Hugging Face token (host file
//! `core_paths.hf_token_file`, if present) reaches the service only through the 0600
//! environment file `/etc/vllm/vllm.env`: never on a command line or in the log. With GPUs
//! assigned, `nvidia-smi` must see them with the configured driver first (exit 3 otherwise).
//!
//! One call looks at everything (the service answering included); when something differs, one
//! script writes the unit, reloads systemd, enables and (re)starts the service and waits for
//! `/health` inside the guest (with a new token: a `pct push` and a second script).

use lib_common::error::{Error, Result};
use lib_common::sdk::{self, Ct, Want};
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
            let mut want = Want::new().file(VLLM_UNIT_PATH, &vllm_unit(&model, tp), 0o644);
            match read_hf_token(ct)? {
                Some(token) => {
                    want = want.dir("/etc/vllm", 0o700).secret_file(
                        VLLM_ENV_PATH,
                        format!("HF_TOKEN={token}\n").as_bytes(),
                        0o600,
                    );
                }
                None => ct.say(&format!(
                    "no Hugging Face token file at `{}`; models are downloaded anonymously",
                    ct.configs().hypervisor.core_paths.hf_token_file
                )),
            }
            let want = want.service(VLLM_UNIT);

            let base = format!("http://localhost:{VLLM_PORT}");
            let health = format!("{base}/health");
            let models = format!("{base}/v1/models");
            let health_get = ["curl", "-fsSk", "--max-time", "10", health.as_str()];
            let models_get = ["curl", "-fsSk", "--max-time", "10", models.as_str()];
            let mut probe = setup_plugins::ask_vllm(want.probe())
                .cmd(&health_get)
                .cmd(&models_get);
            // vLLM on GPUs it cannot see would only fail at start, after the health timeout.
            if ct.spec().has_gpus() {
                probe = setup_plugins::ask_nvidia(probe);
            }
            let facts = ct.probe(&probe)?;
            if ct.spec().has_gpus() {
                setup_plugins::check_nvidia(ct, &facts)?;
            }

            let mut changes =
                setup_plugins::vllm_venv_changes(ct, &facts).then(want.changes(ct.ctid(), &facts)?);
            let listed = facts.cmd(&models_get);
            let serving = facts.cmd(&health_get).success()
                && listed.success()
                && model_listed(ct, &listed.stdout, &model).is_ok();
            if !changes.is_empty() || !serving {
                changes = changes
                    .wait_http(&health, VLLM_HEALTH_TIMEOUT)
                    .wait_http(&models, ct.ready_timeout());
            }
            let applied = ct.apply(&changes)?;
            if ct.dry_run() {
                return Ok(());
            }
            let body = applied.body(&models).unwrap_or(&listed.stdout);
            model_listed(ct, body, &model)?;
            ct.say(&format!("vLLM serves `{model}` on port {VLLM_PORT}"));
            Ok(())
        },
    )
}

/// `/v1/models` answered `body`, which lists `model`.
fn model_listed(ct: &Ct, body: &str, model: &str) -> Result<()> {
    let ctid = ct.ctid();
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| {
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
