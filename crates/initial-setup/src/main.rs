//! `phoenix_hypervisor_initial_setup [--force]`: host checks and the initialized marker (see
//! `lib_common::steps::initial_setup`).

use lib_common::step::{self, INITIAL_SETUP, InitialSetupArgs};
use lib_common::steps::initial_setup;

fn main() -> std::process::ExitCode {
    let args: InitialSetupArgs = step::parse_args(
        INITIAL_SETUP,
        "Check that this Proxmox VE host can run the configuration and mark it initialized",
    );
    step::run_step(INITIAL_SETUP, &args.common, None, |ctx| {
        initial_setup::run(ctx, args.force).map(drop)
    })
}
