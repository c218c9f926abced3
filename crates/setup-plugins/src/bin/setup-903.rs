//! `phoenix_hypervisor_setup_903`: the Docker + GPU template. The driver matches, Docker runs
//! and lists the `nvidia` runtime, then its snapshot.

use lib_common::sdk;

fn main() -> std::process::ExitCode {
    sdk::run(
        903,
        "Docker+GPU template: nvidia-smi, docker with the nvidia runtime, template snapshot",
        |ct| {
            setup_plugins::check_nvidia(ct)?;
            setup_plugins::ensure_docker(ct)?;
            setup_plugins::check_docker_nvidia_runtime(ct)?;
            ct.finalize_template()?;
            Ok(())
        },
    )
}
