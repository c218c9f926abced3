//! `phoenix_hypervisor_setup_901`: the GPU template. `nvidia-smi` works inside and reports the
//! configured `nvidia_driver_version` (installed by lxc-nvidia), then its snapshot.

use lib_common::sdk;

fn main() -> std::process::ExitCode {
    sdk::run(
        901,
        "GPU template: check nvidia-smi reports the configured driver, template snapshot",
        |ct| {
            setup_plugins::check_nvidia(ct)?;
            ct.finalize_template()?;
            Ok(())
        },
    )
}
