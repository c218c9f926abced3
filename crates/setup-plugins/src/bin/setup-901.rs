//! `phoenix_hypervisor_setup_901`: the GPU template. `nvidia-smi` works inside and reports the
//! configured `nvidia_driver_version` (installed by lxc-nvidia), then its snapshot.

use lib_common::sdk::{self, Probe};

fn main() -> std::process::ExitCode {
    sdk::run(
        901,
        "GPU template: check nvidia-smi reports the configured driver, template snapshot",
        |ct| {
            let facts = ct.probe(&setup_plugins::ask_nvidia(Probe::new()))?;
            setup_plugins::check_nvidia(ct, &facts)?;
            ct.finalize_template()?;
            Ok(())
        },
    )
}
