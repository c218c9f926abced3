//! `phoenix_hypervisor_create_lxc CTID`: create a base container from its block (see
//! `lib_common::steps::create`).

use lib_common::step::{self, CREATE_LXC, CtidArgs};
use lib_common::steps::create;

fn main() -> std::process::ExitCode {
    let args: CtidArgs = step::parse_args(
        CREATE_LXC,
        "Create a base LXC container from its block in the LXC config, start it and wait until ready",
    );
    step::run_step(CREATE_LXC, &args.common, Some(args.ctid), |ctx| {
        create::run(ctx, args.ctid).map(drop)
    })
}
