//! `phoenix_establish_hypervisor`: the orchestrator. For now only `--validate` (load and check
//! both configuration files, touching no host); the other flags are reserved.

use std::process::ExitCode;

use clap::Parser;
use lib_common::cli::EstablishArgs;
use lib_common::validate;

fn main() -> ExitCode {
    let cli = EstablishArgs::parse();
    if cli.validate {
        let result = validate::load_and_validate();
        let code =
            validate::print_validation(&result, &mut std::io::stdout(), &mut std::io::stderr());
        return ExitCode::from(code as u8);
    }
    eprintln!("error: building containers is not implemented yet (only --validate is)");
    ExitCode::from(1)
}
