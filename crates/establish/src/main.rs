//! `phoenix_establish_hypervisor`: the orchestrator. For now only `--validate` (load and check
//! both configuration files, touching no host); the other flags are reserved.

use std::process::ExitCode;

use clap::Parser;
use lib_common::config::Ctid;
use lib_common::validate;

/// Build the Proxmox LXC templates and containers described by the two configuration files.
#[derive(Debug, Parser)]
#[command(name = "phoenix_establish_hypervisor", version)]
struct Cli {
    /// Load and validate both configuration files (schema and semantic rules), print every
    /// problem, exit 0 (valid; warnings may print) or 2. Touches no host.
    #[arg(long, conflicts_with_all = ["dry_run", "only", "jobs"])]
    validate: bool,
    /// Look at the host read-only and print the plan per CTID (not implemented yet).
    #[arg(long)]
    dry_run: bool,
    /// Only these CTIDs plus the template ancestors they need (not implemented yet).
    #[arg(long, value_name = "CTID[,CTID...]", value_delimiter = ',')]
    only: Vec<Ctid>,
    /// Independent branches to build at once (not implemented yet).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.validate {
        let result = validate::load_and_validate();
        let code =
            validate::print_validation(&result, &mut std::io::stdout(), &mut std::io::stderr());
        return ExitCode::from(code as u8);
    }
    eprintln!("error: building containers is not implemented yet (only --validate is)");
    ExitCode::from(1)
}
