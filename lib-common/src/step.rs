//! The frame every step program shares (`architecture.md`, "Step contracts"): its command line
//! (positional arguments as the design document names them, `--dry-run`, `--help`,
//! `--version`), logging under its installed name, loading the configuration, finding its CT
//! block, printing an error as `error: ...` and turning it into the step's exit code (through
//! [`crate::error::exit_code`], the one place that does). Also [`wait_ready`].
//!
//! A step binary is a few lines:
//! ```ignore
//! let args = CtidArgs::parse();
//! run_step(CREATE_LXC, &args.common, Some(args.ctid), |ctx| steps::create::run(ctx, args.ctid).map(drop))
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser};

use crate::config::{Configs, ContainerSpec, Ctid};
use crate::error::{Error, Result};
use crate::pct::{CtStatus, PctClient};

/// Installed program names (without `.sh`), used as the log's program field; the table is
/// [`crate::paths::PROGRAMS`].
pub use crate::paths::{CLONE_LXC, CREATE_LXC, INITIAL_SETUP, LXC_DOCKER, LXC_NVIDIA};

/// Options every step takes.
#[derive(Debug, Clone, Default, Args)]
pub struct CommonArgs {
    /// Print what would change (the Proxmox commands it would run) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_ctid(s: &str) -> std::result::Result<Ctid, String> {
    s.parse()
        .map_err(|e: crate::types::ParseError| e.to_string())
}

/// `STEP [--dry-run] CTID` (create-lxc, lxc-nvidia, lxc-docker, setup-<ctid>).
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct CtidArgs {
    /// The container's ID, a key of `lxc_configs` in the LXC config file.
    #[arg(value_name = "CTID", value_parser = parse_ctid)]
    pub ctid: Ctid,
    /// `--dry-run`.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `clone-lxc [--dry-run] SOURCE_CTID SOURCE_SNAPSHOT TARGET_CTID`.
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct CloneArgs {
    /// The template container to clone from.
    #[arg(value_name = "SOURCE_CTID", value_parser = parse_ctid)]
    pub source_ctid: Ctid,
    /// The snapshot of the source to clone from (exact name).
    #[arg(value_name = "SOURCE_SNAPSHOT")]
    pub source_snapshot: String,
    /// The new container; its block in the LXC config gives its settings.
    #[arg(value_name = "TARGET_CTID", value_parser = parse_ctid)]
    pub target_ctid: Ctid,
    /// `--dry-run`.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `initial-setup [--dry-run] [--force]`.
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct InitialSetupArgs {
    /// Run the checks again even when the host is already marked initialized.
    #[arg(long)]
    pub force: bool,
    /// `--dry-run`.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Parse a step's command line under its installed name (so `--help` and errors show
/// `phoenix_hypervisor_create_lxc`, not the crate name). Exits 2 on bad usage, 0 for
/// `--help` / `--version`.
pub fn parse_args<T: Parser>(program: &'static str, about: &'static str) -> T {
    let cmd = T::command().name(program).bin_name(program).about(about);
    let matches = cmd.get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Load both configuration files (from `LXC_CONFIG_FILE` / `HYPERVISOR_CONFIG_FILE` or
/// PREFIX/etc), validated (schema + semantic rules; warnings logged). An invalid configuration
/// is a config error (exit 2) listing every problem. The one place steps load configs.
pub fn load_configs() -> Result<Configs> {
    Ok(crate::validate::load_validated()?)
}

/// What a step works with.
#[derive(Debug)]
pub struct StepContext {
    /// Installed program name (log field).
    pub program: String,
    /// Print what would change and change nothing.
    pub dry_run: bool,
    /// Both configurations, validated.
    pub configs: Configs,
    /// The Proxmox client (dry-run aware).
    pub pct: PctClient,
}

impl StepContext {
    /// The context of `program` (its installed name) over validated `configs`.
    pub fn new(program: &str, configs: Configs, dry_run: bool) -> StepContext {
        StepContext {
            program: program.to_string(),
            dry_run,
            configs,
            pct: PctClient::new(dry_run),
        }
    }

    /// A CT's block, or a config error (exit 2) naming the CTID and the file.
    pub fn container(&self, ctid: Ctid) -> Result<&ContainerSpec> {
        Ok(self.configs.container(ctid)?)
    }

    /// Seconds to wait for readiness (`behavior.ready_timeout_s`, default 120).
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.configs.hypervisor.ready_timeout_s())
    }

    /// Progress for people on stdout (and info in the log).
    pub fn say(&self, ctid: Option<Ctid>, msg: &str) {
        match ctid {
            Some(c) => {
                println!("[{c}] {msg}");
                log::info!("[{c}] {msg}");
            }
            None => {
                println!("{msg}");
                log::info!("{msg}");
            }
        }
    }
}

/// Run one step: logging as `program`, configs loaded, `ctid`'s block required when given, then
/// `body`. An error is printed as `error: ...` on stderr (and logged) and becomes the exit code.
pub fn run_step<F>(program: &str, common: &CommonArgs, ctid: Option<Ctid>, body: F) -> ExitCode
where
    F: FnOnce(&StepContext) -> Result<()>,
{
    crate::logging::init(program);
    // Run by hand, a step takes the run lock (one run at a time); under the orchestrator it
    // shares the orchestrator's. A dry run only reads.
    let _lock = if common.dry_run {
        None
    } else {
        match crate::orchestrator::lock::for_step(&crate::paths::host_path(crate::paths::LOCK_FILE))
        {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("{e}");
                if log::log_enabled!(log::Level::Error) {
                    log::error!("{msg}");
                } else {
                    eprintln!("error: {msg}");
                }
                let code = match e {
                    crate::orchestrator::lock::LockError::Held { .. } => {
                        crate::RunExit::Locked.code()
                    }
                    crate::orchestrator::lock::LockError::Io { .. } => 1,
                };
                return ExitCode::from(code as u8);
            }
        }
    };
    let result = (|| -> Result<()> {
        let configs = load_configs()?;
        let ctx = StepContext::new(program, configs, common.dry_run);
        if let Some(c) = ctid {
            ctx.container(c)?;
        }
        body(&ctx)
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report_error(&e),
    }
}

/// Print and log an error; return its exit code.
pub fn report_error(err: &anyhow::Error) -> ExitCode {
    let msg = format!("{err:#}");
    if log::log_enabled!(log::Level::Error) {
        // The logger echoes errors on stderr as `error: ...`.
        log::error!("{msg}");
    } else {
        eprintln!("error: {msg}");
    }
    let code = crate::error::exit_code(err);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The longest pause between two readiness polls. It bounds how late readiness is noticed
/// (`cargo xtask bench` measures it; the aim is under 250 ms), at the cost of one `pct status`
/// and one `pct exec` per poll while a CT boots.
pub const MAX_POLL: Duration = Duration::from_millis(200);

/// Next poll interval: start ~20 ms, ×1.5, at most [`MAX_POLL`].
pub fn next_interval(current: Duration) -> Duration {
    (current.mul_f64(1.5)).min(MAX_POLL)
}

/// The first readiness poll interval.
pub const FIRST_POLL: Duration = Duration::from_millis(20);

/// Pause before the next readiness poll, `elapsed` into the wait: a tenth of the time waited so
/// far, within [`FIRST_POLL`]..=[`MAX_POLL`]. Readiness is then noticed at most ~10 % of the
/// boot time (and at most `MAX_POLL`) late, with few polls for slow boots.
pub fn poll_interval(elapsed: Duration) -> Duration {
    (elapsed / 10).clamp(FIRST_POLL, MAX_POLL)
}

/// The readiness wait, run inside the guest in one `pct exec` (`$1`: the timeout in ms): polls
/// `systemctl is-system-running` until the guest has booted (`running`; `degraded`: up with a
/// failed unit; `offline` or no systemctl: no systemd as PID 1, nothing to wait for). Exit 0 when
/// ready; 124 with the last state on stdout when the time is up.
pub const READY_SCRIPT: &str = r#"end=$(( $(date +%s%3N) + $1 ))
while :; do
  command -v systemctl >/dev/null 2>&1 || exit 0
  s=$(systemctl is-system-running 2>/dev/null)
  case "$s" in running|degraded|offline) exit 0 ;; esac
  if [ "$(date +%s%3N)" -ge "$end" ]; then echo "$s"; exit 124; fi
  sleep 0.05
done"#;

/// Wait until the CT is usable, in one call: on Proxmox `pct exec` works as soon as `pct start`
/// returned (pve-container `PVE::LXC::vm_start`: `lxc-start`, then `lxc-wait -s RUNNING`), so
/// the guest's own boot is waited for inside the guest ([`READY_SCRIPT`]), not polled from the
/// host. Only a failure of `pct exec` itself (lxc-attach cannot attach yet) is retried, backing
/// off ([`poll_interval`]). Timeout → a Timeout error (exit 6) naming the CTID and seconds; a
/// CT that is missing or not running → a precondition error. In dry-run mode returns at once.
pub fn wait_ready(pct: &PctClient, ctid: Ctid, timeout: Duration) -> Result<()> {
    if pct.dry_run() {
        return Ok(());
    }
    let start = Instant::now();
    loop {
        if let Some(sig) = crate::signals::interrupted() {
            return Err(Error::new(
                crate::error::ErrorKind::Other,
                format!(
                    "CT {ctid}: stopped waiting for it to become ready: interrupted by {}",
                    crate::signals::name(sig)
                ),
            )
            .into());
        }
        let left = timeout.saturating_sub(start.elapsed());
        let left_ms = left.as_millis().to_string();
        let last = match pct.exec_script_query(ctid, READY_SCRIPT, &[&left_ms]) {
            Ok(out) if out.success() => {
                log::debug!("[{ctid}] ready after {:?}", start.elapsed());
                return Ok(());
            }
            Ok(out) => format!(
                "`systemctl is-system-running` says {:?} (exit {})",
                out.stdout.trim(),
                out.code
            ),
            Err(e) if crate::error::kind_of(&e) == crate::error::ErrorKind::Proxmox => {
                format!("{e:#}")
            }
            Err(e) => return Err(e),
        };
        if start.elapsed() >= timeout {
            return Err(Error::timeout(format!(
                "CT {ctid} did not become ready within {} s (last: {last})\nhint: check `pct status {ctid}` and the container's console; raise behavior.ready_timeout_s if it boots slowly",
                fmt_secs(timeout)
            ))
            .into());
        }
        let left = timeout.saturating_sub(start.elapsed());
        let interval = poll_interval(start.elapsed());
        std::thread::sleep(interval.min(left.max(Duration::from_millis(1))));
    }
}

/// `120` for whole seconds, `0.3` otherwise.
pub fn fmt_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

/// Start the CT unless it is running, then wait until ready. Returns whether it started it.
/// A running CT costs one call (the readiness wait); `pct status` is asked only when that
/// call says the CT is not running (or missing).
pub fn ensure_running(pct: &PctClient, ctid: Ctid, timeout: Duration) -> Result<bool> {
    if !pct.dry_run() {
        match wait_ready(pct, ctid, timeout) {
            Ok(()) => return Ok(false),
            Err(e) if crate::error::kind_of(&e) == crate::error::ErrorKind::Precondition => {}
            Err(e) => return Err(e),
        }
    }
    let started = start_unless_running(pct, ctid)?;
    wait_ready(pct, ctid, timeout)?;
    Ok(started)
}

/// `pct start` unless `pct status` says it runs (a missing CT is a precondition error).
/// Returns whether it started it.
fn start_unless_running(pct: &PctClient, ctid: Ctid) -> Result<bool> {
    match pct.require_exists(ctid)? {
        CtStatus::Running => Ok(false),
        _ => {
            pct.start(ctid)?;
            Ok(true)
        }
    }
}

/// [`ensure_running`] and a [`Probe`](crate::probe::Probe) in one call when the CT runs: the
/// probe waits for readiness inside the guest, then answers. A CT that is not running is
/// started (then probed: two more calls, no `pct status`). Returns whether it started the CT, and the answers;
/// in dry-run mode a CT that is not running is reported as "would start" and the answers are
/// `None` (nothing can be asked of a stopped guest).
pub fn ensure_running_probe(
    pct: &PctClient,
    ctid: Ctid,
    timeout: Duration,
    probe: &crate::probe::Probe,
) -> Result<(bool, Option<crate::probe::Facts>)> {
    let probe = probe.clone().ready(timeout);
    match probe.run(pct, ctid) {
        Ok(facts) => return Ok((false, Some(facts))),
        Err(e) if crate::error::kind_of(&e) == crate::error::ErrorKind::Precondition => {}
        Err(e) => return Err(e),
    }
    // `pct exec` refused: the CT is missing or not running. Its conf file tells which without
    // a call (a missing one gets `pct status`'s precondition error, naming it).
    if !crate::conffile::ConfFile::path_for(ctid).exists() {
        pct.require_exists(ctid)?;
    }
    pct.start(ctid)?;
    if pct.dry_run() {
        return Ok((true, None));
    }
    // On Proxmox `pct exec` works once `pct start` returned (`PVE::LXC::vm_start` waits for
    // `lxc-wait -s RUNNING`); the probe then waits for the boot inside: three calls in all.
    Ok((true, Some(probe.run(pct, ctid)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn backoff_grows_to_cap() {
        let mut i = FIRST_POLL;
        let mut seen = vec![i];
        for _ in 0..20 {
            i = next_interval(i);
            seen.push(i);
        }
        assert_eq!(seen[1], Duration::from_millis(30));
        assert_eq!(*seen.last().unwrap(), MAX_POLL);
        assert_eq!(poll_interval(Duration::ZERO), FIRST_POLL);
        assert_eq!(
            poll_interval(Duration::from_millis(500)),
            Duration::from_millis(50)
        );
        assert_eq!(poll_interval(Duration::from_secs(60)), MAX_POLL);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn args_parse_per_contract() {
        CtidArgs::command().debug_assert();
        CloneArgs::command().debug_assert();
        InitialSetupArgs::command().debug_assert();
        let a = CtidArgs::try_parse_from(["x", "950", "--dry-run"]).unwrap();
        assert_eq!(a.ctid, Ctid(950));
        assert!(a.common.dry_run);
        let e = CtidArgs::try_parse_from(["x", "95"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let c = CloneArgs::try_parse_from(["x", "900", "base-snapshot", "901"]).unwrap();
        assert_eq!((c.source_ctid, c.target_ctid), (Ctid(900), Ctid(901)));
        assert_eq!(c.source_snapshot, "base-snapshot");
        assert!(CloneArgs::try_parse_from(["x", "900", "s"]).is_err());
        let i = InitialSetupArgs::try_parse_from(["x", "--force"]).unwrap();
        assert!(i.force && !i.common.dry_run);
        let v = CtidArgs::try_parse_from(["x", "--version"]).unwrap_err();
        assert_eq!(v.exit_code(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn wait_ready_times_out_with_ctid_and_seconds() {
        let d = tempfile::tempdir().unwrap();
        let p = crate::pct::test_support::fake_tool(
            d.path(),
            "[ \"$1\" = status ] && { echo 'status: running'; exit 0; }\necho 'Failed to get init pid' >&2; exit 255",
        );
        let pct = PctClient::with_tools(false, &p, &p, &p);
        let t = Instant::now();
        let err = wait_ready(&pct, Ctid(901), Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3));
        assert_eq!(crate::error::exit_code(&err), 6);
        let msg = err.to_string();
        assert!(msg.contains("CT 901") && msg.contains("0.3 s"), "{msg}");
    }
}
