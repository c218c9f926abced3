//! The orchestrator, `phoenix_establish_hypervisor` (`architecture.md`, "Orchestrator"; the
//! design document's execution flow): load and validate both files, check the step programs,
//! take the run lock, run initial setup, then build every container in dependency order by
//! running the step programs, and end with a summary table.
//!
//! Order of the checks, so that a refusal touches nothing: configuration (exit 2) → step
//! programs present (exit 4) → `--dry-run` stops here and only reads → run lock (exit 5) →
//! log file → initial setup (exit 3) → containers (exit 1 if any failed or was skipped).
//!
//! Decisions per container (`pipeline`): *up to date* (it has `configured-state`: its drift
//! from the block is applied in place, `apply`; started when stopped), *resume* (it exists without `configured-state`: every idempotent step
//! runs again), or *create* / *clone* (it does not exist). Template snapshots the setup
//! program did not take are taken by the orchestrator while the container is shut down, right
//! before `configured-state`, so both are consistent (no running processes, no half-written
//! files) and one shutdown/start cycle serves both.
//!
//! `--dry-run` runs no step program and no mutating command (its `PctClient` is in dry-run mode
//! as a safety net), takes no lock and writes no file, not even the log.
//!
//! Ownership and recovery (issue 12): a CT at a configured CTID that lacks the
//! `phoenix-managed` mark is refused (that CT fails, the others go on) unless `--adopt` names it;
//! what an interrupted run left behind is repaired at inspection (`recover`); rollback destroys
//! only what this run's own `pct create`/`pct clone` made (`crate::ownership`). SIGINT, SIGTERM
//! and SIGHUP stop new work, are passed on to the running programs, and end the run with
//! 128 + the signal's number once they are gone, the lock released last (`crate::signals`).
//!
//! Modules: [`lock`] (the run lock), [`runner`] (spawning a step), `pipeline` (one container,
//! and running many with `--jobs`), `recover` (repairs at inspection), `apply` (drift,
//! `--recreate`, `--prune`), `report` (plan, `--status` and summary output), [`output`] (the
//! `--output json` document).

mod apply;
pub mod lock;
pub mod output;
mod pipeline;
mod recover;
mod report;
pub mod runner;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::RunExit;
use crate::cli::EstablishArgs;
use crate::config::{Configs, Ctid};
use crate::paths;
use crate::pct::{CtStatus, PctClient};
use crate::plan::{self, Action, Plan};
use crate::validate;

pub use pipeline::{CtReport, CtResult};
use runner::{Presence, Step, StepEnv};

/// The snapshot every finished container has.
pub const CONFIGURED_STATE: &str = crate::types::CONFIGURED_STATE_SNAPSHOT;

/// The orchestrator's log program name.
pub const PROGRAM: &str = crate::paths::ESTABLISH;

/// Everything one run works with.
pub struct Orchestrator {
    pub configs: Configs,
    pub plan: Plan,
    pub pct: PctClient,
    pub env: StepEnv,
    /// `--adopt`: existing CTs without our mark to converge and mark anyway.
    pub adopt: BTreeSet<Ctid>,
    /// `--recreate`: CTs of ours to destroy and rebuild.
    pub recreate: BTreeSet<Ctid>,
    /// `--restart`: restart a CT whose applied change waits for its next start.
    pub restart: bool,
    clone_locks: pipeline::CloneLocks,
    /// Power states from one `pct list`, taken at the first inspection ([`Orchestrator::inspect`]).
    listing: std::sync::Mutex<Option<std::collections::BTreeMap<Ctid, CtStatus>>>,
}

/// `error: ...` on stderr and in the log.
fn error_line(msg: &str) {
    if log::log_enabled!(log::Level::Error) {
        // The logger echoes errors on stderr.
        log::error!("{msg}");
    } else {
        eprintln!("error: {msg}");
    }
}

/// Progress for people on stdout, and the same line in the log.
fn say(msg: &str) {
    output::human(msg);
    log::info!("{msg}");
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `behavior.debug_mode` logs at debug level (this run and its steps), unless
/// `PHOENIX_LOG_LEVEL` already says otherwise.
fn debug_level(configs: &crate::config::Configs) -> Option<&'static str> {
    (configs.hypervisor.behavior.debug_mode && std::env::var_os(crate::env::LOG_LEVEL).is_none())
        .then_some("debug")
}

/// Run the orchestrator with parsed arguments (not `--validate`); returns the exit code. With
/// `--output json` exactly one document goes to stdout, also when the run ends early.
pub fn run(args: &EstablishArgs) -> RunExit {
    output::set_json(args.output == crate::cli::Output::Json);
    let code = run_inner(args);
    if output::is_json() && !output::printed() {
        let mode = if args.status {
            output::Mode::Status
        } else if args.dry_run {
            output::Mode::DryRun
        } else {
            output::Mode::Run
        };
        output::Document::new(mode).finish(code);
    }
    code
}

fn run_inner(args: &EstablishArgs) -> RunExit {
    let started = Instant::now();
    // 1. Configuration: nothing on the host is touched when it is invalid.
    let configs = match validate::load_and_validate() {
        Ok((configs, warnings)) => {
            for w in &warnings {
                eprintln!("{}", w.line());
            }
            configs
        }
        Err(report) => {
            for d in &report.diagnostics {
                eprintln!("{}", d.line());
            }
            if output::is_json() {
                let mut doc = output::Document::new(if args.status {
                    output::Mode::Status
                } else if args.dry_run {
                    output::Mode::DryRun
                } else {
                    output::Mode::Run
                });
                doc.diagnostics = report.diagnostics.iter().map(Into::into).collect();
                doc.finish(RunExit::Config);
            }
            eprintln!(
                "error: invalid configuration ({}); nothing was changed\nhint: run `phoenix_establish_hypervisor --validate` after fixing it",
                report.summary()
            );
            return RunExit::Config;
        }
    };
    let plan = plan::plan(&configs.lxc);
    let only: BTreeSet<Ctid> = args.only.iter().copied().collect();
    if let Some(bad) = only.iter().find(|c| !plan.entries.contains_key(c)) {
        eprintln!(
            "error: --only names CT {bad}, which is not defined in `{}` (lxc_configs)",
            configs.lxc_path.display()
        );
        return RunExit::Config;
    }
    let adopt: BTreeSet<Ctid> = args.adopt.iter().copied().collect();
    if let Some(bad) = adopt.iter().find(|c| !plan.entries.contains_key(c)) {
        eprintln!(
            "error: --adopt names CT {bad}, which is not defined in `{}` (lxc_configs)",
            configs.lxc_path.display()
        );
        return RunExit::Config;
    }
    let recreate: BTreeSet<Ctid> = args.recreate.iter().copied().collect();
    if let Some(bad) = recreate.iter().find(|c| !plan.entries.contains_key(c)) {
        eprintln!(
            "error: --recreate names CT {bad}, which is not defined in `{}` (lxc_configs)",
            configs.lxc_path.display()
        );
        return RunExit::Config;
    }
    // A template is recreated only with the existing CTs cloned from it: they were made from
    // the snapshot that goes with it.
    for &t in &recreate {
        let clones: Vec<Ctid> = plan
            .entries
            .iter()
            .filter(|(c, e)| {
                e.action.source() == Some(t)
                    && !recreate.contains(c)
                    && crate::conffile::ConfFile::path_for(**c).exists()
            })
            .map(|(c, _)| *c)
            .collect();
        if !clones.is_empty() {
            eprintln!(
                "error: --recreate names the template CT {t} but not the existing CT(s) cloned from it: {}\nhint: name them too (--recreate {t},{}), or leave {t} alone; nothing was changed",
                join(&clones.iter().copied().collect()),
                join(&clones.iter().copied().collect())
            );
            return RunExit::Config;
        }
    }
    let candidates = if only.is_empty() {
        plan.entries.keys().copied().collect()
    } else {
        plan.with_ancestors(&only)
    };
    // 2. Step programs, before touching the host.
    let missing = missing_steps(&configs, &plan, &candidates);
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("error: {m}");
        }
        eprintln!(
            "hint: install the programs (`cargo xtask install` or the Debian package) or put an executable drop-in script at that path; nothing was changed"
        );
        return RunExit::MissingStep;
    }
    let log_file = absolute(&paths::log_file());
    let orch = Orchestrator {
        env: StepEnv {
            lxc_config: absolute(&configs.lxc_path),
            hypervisor_config: absolute(&configs.hypervisor_path),
            log_file: log_file.clone(),
            log_level: debug_level(&configs),
            created_record: None,
        },
        pct: PctClient::new(args.dry_run),
        plan,
        configs,
        adopt,
        recreate,
        restart: args.restart,
        clone_locks: Default::default(),
        listing: Default::default(),
    };
    let mut orch = orch;
    if args.status {
        return report::status(&orch);
    }
    if args.dry_run {
        return report::dry_run(&orch, &only, &candidates, args.prune);
    }
    // 3. One run at a time.
    let _lock = match lock::acquire(&paths::host_path(paths::LOCK_FILE)) {
        Ok(l) => l,
        Err(e @ lock::LockError::Held { .. }) => {
            eprintln!("error: {e}");
            return RunExit::Locked;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return RunExit::SomeFailed;
        }
    };
    // From here on a signal stops new work and ends the run cleanly (`crate::signals`).
    crate::signals::install();
    // What this run's own creates and clones made (`crate::ownership`), for rollback.
    let record = paths::host_path(format!("{}/created-by-run", crate::ownership::STATE_DIR));
    if let Some(dir) = record.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&record, "") {
        eprintln!("error: cannot write `{}`: {e}", record.display());
        return RunExit::SomeFailed;
    }
    orch.env.created_record = Some(record);
    let orch = orch;
    crate::logging::init_with(PROGRAM, &log_file, true);
    if orch.env.log_level.is_some() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    log::info!(
        "run started (pid {}, --jobs {}, {} configured containers{})",
        std::process::id(),
        args.jobs,
        orch.plan.entries.len(),
        if only.is_empty() {
            String::new()
        } else {
            format!(", --only {}", join(&only))
        }
    );
    let removed = recover::remove_leftover_push_files();
    if removed > 0 {
        say(&format!(
            "repair: removed {removed} temporary file(s) an interrupted run left in {}/push",
            crate::paths::CACHE_DIR
        ));
    }
    // 4. Initial setup.
    let t = Instant::now();
    match runner::run_step(Step::InitialSetup, None, &[], &[], &orch.env) {
        Ok(()) => say(&format!(
            "initial setup ... ok ({})",
            report::secs(t.elapsed())
        )),
        Err(f) => {
            if let Some(code) = interrupted_exit() {
                return code;
            }
            say(&format!(
                "initial setup ... FAILED ({})",
                report::secs(t.elapsed())
            ));
            error_line(&format!(
                "initial setup failed: {f}\nhint: see {} for the whole output; no container was touched",
                log_file.display()
            ));
            return RunExit::InitialSetup;
        }
    }
    // 5. Containers.
    let selected = match orch.select(&only, &candidates) {
        Ok(s) => s,
        Err(e) => {
            error_line(&format!("cannot read the host's containers: {e:#}"));
            return RunExit::SomeFailed;
        }
    };
    let mut reports = orch.run_all(&selected, args.jobs as usize);
    if crate::signals::interrupted().is_none() {
        for r in orch.prune_or_list(args.prune) {
            reports.insert(r.ctid, r);
        }
    }
    report::summary(&reports, started.elapsed());
    let doc = report::run_document(&reports);
    if let Some(code) = interrupted_exit() {
        return doc.finish(code);
    }
    doc.finish(if reports.values().all(|r| r.result.is_success()) {
        RunExit::Ok
    } else {
        RunExit::SomeFailed
    })
}

/// When a signal interrupted the run: wait for (and, past the grace time, kill) every program
/// still running below it, say so, and return the exit code. The caller returns it, which
/// releases the run lock last.
fn interrupted_exit() -> Option<RunExit> {
    let sig = crate::signals::interrupted()?;
    crate::signals::reap_descendants();
    error_line(&format!(
        "interrupted by {}: the run stopped; every program it started has ended\nhint: run it again: it repairs what was interrupted and goes on",
        crate::signals::name(sig)
    ));
    Some(RunExit::Interrupted(sig))
}

fn join(set: &BTreeSet<Ctid>) -> String {
    set.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The step programs `candidates` may need that are missing or not executable, as messages.
fn missing_steps(configs: &Configs, plan: &Plan, candidates: &BTreeSet<Ctid>) -> Vec<String> {
    let mut needed = BTreeSet::from([Step::InitialSetup]);
    for c in candidates {
        let spec = &configs.lxc.lxc_configs[c];
        needed.insert(match plan.entries[c].action {
            Action::Create { .. } => Step::CreateLxc,
            Action::Clone { .. } => Step::CloneLxc,
        });
        if spec.has_gpus() {
            needed.insert(Step::LxcNvidia);
        }
        if spec.wants_docker() {
            needed.insert(Step::LxcDocker);
        }
    }
    needed
        .into_iter()
        .filter_map(|s| {
            let p = s.path();
            match runner::presence(&p) {
                Presence::Executable => None,
                Presence::Missing => Some(format!(
                    "required step program `{}` is missing",
                    p.display()
                )),
                Presence::NotExecutable => Some(format!(
                    "required step program `{}` is not an executable file (chmod +x?)",
                    p.display()
                )),
            }
        })
        .collect()
}

/// What the host says about one container.
#[derive(Debug, Clone)]
pub struct CtState {
    pub status: CtStatus,
    /// Complete snapshots (one in state `prepare` or `delete` does not count).
    pub snapshots: Vec<String>,
}

impl CtState {
    pub fn exists(&self) -> bool {
        self.status != CtStatus::Missing
    }
    pub fn has_snapshot(&self, name: &str) -> bool {
        self.snapshots.iter().any(|s| s == name)
    }
    /// Finished by an earlier run.
    pub fn configured(&self) -> bool {
        self.has_snapshot(CONFIGURED_STATE)
    }
}

impl Orchestrator {
    /// Whether an existing CT carries our mark (its conf file's `tags`).
    pub fn is_marked(&self, ctid: Ctid) -> crate::Result<bool> {
        let conf = crate::conffile::ConfFile::load(ctid)?;
        Ok(crate::ownership::has_mark(conf.get("tags").as_deref()))
    }

    /// The CT's power state from one `pct list` for the whole run (taken at the first call):
    /// a no-op re-run then costs one `pct` call in all. Only CTs that have not been processed
    /// yet are inspected, and nothing but their own pipeline changes their power state, so the
    /// listing is current for them. A CT the listing lacks (it appeared since) is asked with
    /// `pct status`.
    fn listed_status(&self, ctid: Ctid) -> crate::Result<CtStatus> {
        self.ensure_listing()?;
        let listing = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        match listing.as_ref().and_then(|l| l.get(&ctid)) {
            Some(s) => Ok(*s),
            None => {
                drop(listing);
                self.pct.status(ctid)
            }
        }
    }
}

impl Orchestrator {
    /// Take the run's one `pct list` unless it was taken.
    fn ensure_listing(&self) -> crate::Result<()> {
        let mut listing = self.listing.lock().unwrap_or_else(|p| p.into_inner());
        if listing.is_none() {
            *listing = Some(self.pct.list()?);
        }
        Ok(())
    }

    /// What the host has of `ctid`, read-only: its conf file (whether it exists, its complete
    /// snapshots; `/etc/pve/lxc/<ctid>.conf` is the node's own, so a missing file is a missing
    /// CT) and its power state from the run's one `pct list`.
    pub fn inspect(&self, ctid: Ctid) -> crate::Result<CtState> {
        // The listing first: even a host with none of our CTs yet is asked once.
        self.ensure_listing()?;
        let path = crate::conffile::ConfFile::path_for(ctid);
        if !path.exists() {
            return Ok(CtState {
                status: CtStatus::Missing,
                snapshots: Vec::new(),
            });
        }
        let conf = crate::conffile::ConfFile::read(&path)?;
        let status = self.listed_status(ctid)?;
        Ok(CtState {
            status,
            snapshots: conf.complete_snapshots(),
        })
    }

    /// The template snapshot this CT must have, if it is a template.
    pub fn template_snapshot(&self, ctid: Ctid) -> Option<&str> {
        let spec = &self.configs.lxc.lxc_configs[&ctid];
        spec.is_template()
            .then_some(spec.template_snapshot_name.as_deref())
            .flatten()
    }

    /// Finished and usable as a clone source: `configured-state` and its template snapshot.
    fn is_ready(&self, ctid: Ctid) -> crate::Result<bool> {
        let st = self.inspect(ctid)?;
        Ok(st.configured()
            && self
                .template_snapshot(ctid)
                .is_none_or(|s| st.has_snapshot(s)))
    }

    /// The clone source of `ctid` when it is a configured CT.
    pub fn parent(&self, ctid: Ctid) -> Option<Ctid> {
        self.plan.entries[&ctid]
            .action
            .source()
            .filter(|s| self.plan.entries.contains_key(s))
    }

    /// A ready CT of ours that is stopped (and not a Proxmox template): its finished state is
    /// running. A run killed while it was shut down for its snapshots leaves it so, and the
    /// task's worker may still complete `configured-state` after the kill (pve-container's
    /// snapshot runs in a `fork_worker` task that outlives a killed `pct`), so such a CT looks
    /// ready and only its status tells.
    fn stopped_but_ready(&self, ctid: Ctid) -> crate::Result<bool> {
        if self.inspect(ctid)?.status != CtStatus::Stopped {
            return Ok(false);
        }
        let conf = self.pct.config(ctid)?;
        Ok(conf.get("template") != Some("1") && crate::ownership::has_mark(conf.get("tags")))
    }

    /// The CTs to process: all, or the `--only` ones plus the ancestors they need that are not
    /// ready yet (walking up stops at the first ready one: a clone needs only its source's
    /// snapshot), and a ready ancestor of ours that is stopped (it is started, as a full run
    /// starts it: e.g. one an interrupted run left shut down).
    pub fn select(
        &self,
        only: &BTreeSet<Ctid>,
        candidates: &BTreeSet<Ctid>,
    ) -> crate::Result<BTreeSet<Ctid>> {
        if only.is_empty() {
            return Ok(candidates.clone());
        }
        let mut set = only.clone();
        let mut to_start = BTreeSet::new();
        for &c in only {
            let mut cur = self.parent(c);
            while let Some(p) = cur {
                if set.contains(&p) {
                    break;
                }
                if self.is_ready(p)? {
                    if self.stopped_but_ready(p)? {
                        set.insert(p);
                        to_start.insert(p);
                    }
                    break;
                }
                set.insert(p);
                cur = self.parent(p);
            }
        }
        let added: BTreeSet<Ctid> = set
            .difference(only)
            .filter(|c| !to_start.contains(c))
            .copied()
            .collect();
        if !added.is_empty() {
            say(&format!(
                "--only {}: also building the templates they need that are not ready yet: {}",
                join(only),
                join(&added)
            ));
        }
        if !to_start.is_empty() {
            say(&format!(
                "--only {}: also starting the templates they need that are ready but stopped: {}",
                join(only),
                join(&to_start)
            ));
        }
        Ok(set)
    }
}
