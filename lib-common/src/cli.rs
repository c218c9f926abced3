//! Command-line definitions shared by the binaries and by `cargo xtask` (which generates the man
//! page and shell completions from them).

use clap::Parser;

use crate::config::Ctid;

/// `phoenix_establish_hypervisor`: build the LXC templates and containers of the configuration.
#[derive(Debug, Clone, Parser)]
#[command(
    name = crate::paths::ESTABLISH,
    version,
    about = "Build Proxmox VE LXC templates and containers from the Phoenix Hypervisor configuration",
    long_about = "Build Proxmox VE LXC templates and containers from phoenix_hypervisor_config.json and \
phoenix_lxc_configs.json: create or clone each container in dependency order, pass GPUs through, \
install the NVIDIA user space, Docker and Portainer, run the per-container setup programs and take \
a `configured-state` snapshot. Re-running converges: a finished container's drift from its block is \
applied in place where Proxmox can (--dry-run shows it, --status checks it).",
    after_help = "Environment: HYPERVISOR_CONFIG_FILE, LXC_CONFIG_FILE (default PREFIX/etc), PHOENIX_ROOT (PREFIX, \
default /usr/local/phoenix_hypervisor), PHOENIX_LOG_FILE (default /var/log/phoenix_hypervisor.log).\n\
Exit status: 0 all processed; 1 some container failed; 2 invalid configuration; 3 initial setup failed; \
4 a required step program is missing; 5 another run holds the lock; 130/143/129 interrupted by \
SIGINT/SIGTERM/SIGHUP (running steps stopped; the next run repairs and goes on)."
)]
pub struct EstablishArgs {
    /// Validate both configuration files (schema and semantic rules), print every problem, touch no host.
    #[arg(long, conflicts_with_all = ["dry_run", "only", "jobs", "adopt"])]
    pub validate: bool,
    /// Look at the host read-only and print the plan per container; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only these CTIDs (comma-separated), plus the template ancestors they need.
    #[arg(long, value_name = "CTID[,CTID...]", value_delimiter = ',')]
    pub only: Vec<Ctid>,
    /// Converge these existing CTs although they lack the `phoenix-managed` mark (a CT the tool
    /// did not create), and mark them. Without it such a CT is left untouched and fails.
    #[arg(long, value_name = "CTID[,CTID...]", value_delimiter = ',')]
    pub adopt: Vec<Ctid>,
    /// Build independent branches of the template tree concurrently.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Read-only: one line per configured CT (exists, running, ours, configured-state, drift)
    /// and per CT of ours no longer configured. Exit 0 in sync, 1 anything differs or is
    /// missing, 2 invalid configuration.
    #[arg(long, conflicts_with_all = ["validate", "dry_run", "prune", "recreate", "restart", "adopt", "jobs"])]
    pub status: bool,
    /// Destroy (stop, destroy) the CTs of ours (`phoenix-managed` tag) the configuration no
    /// longer lists; never a template a remaining CT was cloned from.
    #[arg(long, conflicts_with = "validate")]
    pub prune: bool,
    /// Destroy and rebuild these CTs of ours: the way out of drift Proxmox cannot change in
    /// place (unprivileged, a smaller root disk, another storage pool).
    #[arg(
        long,
        value_name = "CTID[,CTID...]",
        value_delimiter = ',',
        conflicts_with = "validate"
    )]
    pub recreate: Vec<Ctid>,
    /// Restart a running CT when a change applied to it takes effect only at its next start.
    #[arg(long, conflicts_with = "validate")]
    pub restart: bool,
    /// `json`: one JSON document on stdout (schema `etc/phoenix_output.schema.json`), progress
    /// on stderr.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// The form of what `phoenix_establish_hypervisor` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// One JSON document (progress goes to stderr).
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn establish_cli_is_consistent() {
        EstablishArgs::command().debug_assert();
        let a = EstablishArgs::try_parse_from(["x", "--only", "901,950", "--jobs", "4"]).unwrap();
        assert_eq!(a.only, vec![Ctid(901), Ctid(950)]);
        assert!(
            EstablishArgs::try_parse_from(["x", "--validate"])
                .unwrap()
                .validate
        );
        assert!(EstablishArgs::try_parse_from(["x", "--only", "12"]).is_err());
        assert_eq!(a.jobs, 4);
        let a = EstablishArgs::try_parse_from(["x", "--adopt", "950,951"]).unwrap();
        assert_eq!(a.adopt, vec![Ctid(950), Ctid(951)]);
        assert!(EstablishArgs::try_parse_from(["x", "--validate", "--adopt", "950"]).is_err());
        assert!(EstablishArgs::try_parse_from(["x", "--validate", "--dry-run"]).is_err());
        assert!(EstablishArgs::try_parse_from(["x", "--jobs", "0"]).is_err());
        let a = EstablishArgs::try_parse_from(["x", "--recreate", "910", "--prune", "--restart"])
            .unwrap();
        assert_eq!(a.recreate, vec![Ctid(910)]);
        assert!(a.prune && a.restart && !a.status);
        assert!(EstablishArgs::try_parse_from(["x", "--status", "--dry-run"]).is_err());
        assert!(EstablishArgs::try_parse_from(["x", "--status", "--prune"]).is_err());
        let a = EstablishArgs::try_parse_from(["x", "--status", "--output", "json"]).unwrap();
        assert_eq!(a.output, Output::Json);
    }
}
