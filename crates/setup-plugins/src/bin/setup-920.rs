//! `phoenix_hypervisor_setup_920`: the vLLM template. vLLM in the virtual environment
//! `/opt/vllm`, importable, then its snapshot.

use lib_common::sdk::{self, Probe};

fn main() -> std::process::ExitCode {
    sdk::run(
        920,
        "vLLM template: vLLM in the virtual environment /opt/vllm, template snapshot",
        |ct| {
            let facts = ct.probe(&setup_plugins::ask_vllm(Probe::new()))?;
            let changes = setup_plugins::vllm_venv_changes(ct, &facts);
            ct.apply(&changes)?;
            if changes.changes_anything() && !ct.dry_run() {
                ct.say("vLLM installed and importable");
            }
            ct.finalize_template()?;
            Ok(())
        },
    )
}
