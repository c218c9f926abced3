//! `phoenix_establish_hypervisor`: the orchestrator. `--validate` checks both configuration
//! files and touches no host; otherwise `lib_common::orchestrator` builds the containers.

use std::process::ExitCode;

use clap::Parser;
use lib_common::cli::EstablishArgs;
use lib_common::{orchestrator, validate};

fn main() -> ExitCode {
    let cli = EstablishArgs::parse();
    let code = if cli.validate {
        let result = validate::load_and_validate();
        if cli.output == lib_common::cli::Output::Json {
            orchestrator::output::set_json(true);
            orchestrator::output::validate_document(&result)
        } else {
            validate::print_validation(&result, &mut std::io::stdout(), &mut std::io::stderr())
        }
    } else {
        orchestrator::run(&cli)
    };
    ExitCode::from(u8::try_from(code.code()).unwrap_or(1))
}
