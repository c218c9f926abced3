//! `phoenix_hypervisor_setup_903`: the Docker + GPU template. The driver matches, Docker runs
//! and lists the `nvidia` runtime, then its snapshot.

use lib_common::sdk::{self, Probe};
use setup_plugins::{DOCKER_RUNTIMES, ask_docker, ask_nvidia};

fn main() -> std::process::ExitCode {
    sdk::run(
        903,
        "Docker+GPU template: nvidia-smi, docker with the nvidia runtime, template snapshot",
        |ct| {
            let mut facts = ct.probe(&ask_docker(ask_nvidia(Probe::new())))?;
            setup_plugins::check_nvidia(ct, &facts)?;
            let started = setup_plugins::ensure_docker(ct, &facts)?;
            if started && !ct.dry_run() {
                // Docker was not running when the probe asked it: ask it again.
                facts = ct.probe(&Probe::new().cmd(DOCKER_RUNTIMES))?;
            }
            if !(started && ct.dry_run()) {
                setup_plugins::check_docker_nvidia_runtime(ct, &facts)?;
            }
            ct.finalize_template()?;
            Ok(())
        },
    )
}
