//! `phoenix_hypervisor_lxc_nvidia CTID`: GPU passthrough and the matching NVIDIA user space in
//! one container (see `lib_common::steps::nvidia`).

use lib_common::step::{self, CtidArgs, LXC_NVIDIA};
use lib_common::steps::nvidia;

fn main() -> std::process::ExitCode {
    let args: CtidArgs = step::parse_args(
        LXC_NVIDIA,
        "Pass the container's GPUs through (gpu_assignment) and install the NVIDIA user space matching the host driver; env GPU_ASSIGNMENT, NVIDIA_DRIVER_VERSION, NVIDIA_REPO_URL, NVIDIA_RUNFILE_URL override the config",
    );
    step::run_step(LXC_NVIDIA, &args.common, Some(args.ctid), |ctx| {
        nvidia::run(ctx, args.ctid).map(drop)
    })
}
