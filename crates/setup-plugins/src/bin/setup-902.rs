//! `phoenix_hypervisor_setup_902`: the Docker template. Docker (installed by lxc-docker) is
//! enabled, running and answers `docker info`, then its snapshot.

use lib_common::sdk::{self, Probe};

fn main() -> std::process::ExitCode {
    sdk::run(
        902,
        "Docker template: docker enabled and answering, template snapshot",
        |ct| {
            let facts = ct.probe(&setup_plugins::ask_docker(Probe::new()))?;
            setup_plugins::ensure_docker(ct, &facts)?;
            ct.finalize_template()?;
            Ok(())
        },
    )
}
