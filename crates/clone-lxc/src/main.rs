//! `phoenix_hypervisor_clone_lxc SOURCE_CTID SOURCE_SNAPSHOT TARGET_CTID`: full clone of a
//! template's snapshot, configured from the target's block (see `lib_common::steps::clone`).

use lib_common::step::{self, CLONE_LXC, CloneArgs};
use lib_common::steps::clone;

fn main() -> std::process::ExitCode {
    let args: CloneArgs = step::parse_args(
        CLONE_LXC,
        "Clone a container from a template's snapshot and apply the target's settings from the LXC config",
    );
    step::run_step(CLONE_LXC, &args.common, Some(args.target_ctid), |ctx| {
        clone::run(
            ctx,
            args.source_ctid,
            &args.source_snapshot,
            args.target_ctid,
        )
        .map(drop)
    })
}
