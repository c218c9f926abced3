//! `phoenix_hypervisor_lxc_docker CTID`: Docker Engine, the NVIDIA container toolkit where the
//! container has GPUs, and Portainer per `portainer_role` (see `lib_common::steps::docker`).

use lib_common::step::{self, CtidArgs, LXC_DOCKER};
use lib_common::steps::docker;

fn main() -> std::process::ExitCode {
    let args: CtidArgs = step::parse_args(
        LXC_DOCKER,
        "Install Docker in the container (NVIDIA runtime when it has GPUs) and run Portainer per portainer_role; env PORTAINER_ROLE, PORTAINER_SERVER_IP, PORTAINER_AGENT_PORT override the config",
    );
    step::run_step(LXC_DOCKER, &args.common, Some(args.ctid), |ctx| {
        docker::run(ctx, args.ctid).map(drop)
    })
}
