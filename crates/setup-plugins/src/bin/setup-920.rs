//! `phoenix_hypervisor_setup_920`: the vLLM template. vLLM in the virtual environment
//! `/opt/vllm`, importable, then its snapshot.

use lib_common::sdk;

fn main() -> std::process::ExitCode {
    sdk::run(
        920,
        "vLLM template: vLLM in the virtual environment /opt/vllm, template snapshot",
        |ct| {
            setup_plugins::ensure_vllm_venv(ct)?;
            ct.finalize_template()?;
            Ok(())
        },
    )
}
