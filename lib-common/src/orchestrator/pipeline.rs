//! One container's pipeline (decide → create/clone → start, wait ready → lxc-nvidia →
//! lxc-docker → setup_<CTID> → template snapshot → finalize), failure handling with the
//! optional rollback, and running many containers with `--jobs N`: a container starts once
//! its clone source is done; a failed or skipped source skips its descendants.
//!
//! Output: one line per container per stage, `[CTID] <stage> ... ok (1.2 s)`, printed when the
//! stage ends so concurrent containers never interleave inside a line.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::runner::{self, Step, StepFailure};
use super::{CONFIGURED_STATE, CtState, Orchestrator, error_line, say};
use crate::config::{ContainerSpec, Ctid, PortainerRole};
use crate::env;
use crate::pct::CtStatus;
use crate::plan::Action;

/// Per clone source, a mutex held around the clone step: Proxmox locks the source (`lock:
/// disk`) for the clone's duration, so concurrent clones from one source would collide.
pub type CloneLocks = Mutex<BTreeMap<Ctid, Arc<Mutex<()>>>>;

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtResult {
    /// Built (or resumed) and finalized in this run.
    Done,
    /// Already had `configured-state`; `started` when it was stopped and was started.
    UpToDate { started: bool },
    /// A stage failed; `rollback` says what happened to the container afterwards.
    Failed {
        stage: String,
        message: String,
        rollback: Option<String>,
    },
    /// Not attempted: the template it descends from failed.
    Skipped { failed_template: Ctid },
    /// A signal stopped the run: at `stage`, or before it started (`None`).
    Interrupted { stage: Option<String> },
    /// Had `configured-state` and drifted from its block: what was applied and what is left.
    Drift(super::apply::Applied),
    /// Not in the configuration but ours: listed (`pruned`: false) or destroyed by `--prune`.
    Unlisted { pruned: bool, kept: Option<String> },
}

impl CtResult {
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            CtResult::Done
                | CtResult::UpToDate { .. }
                | CtResult::Drift(_)
                | CtResult::Unlisted { .. }
        )
    }

    /// The failed template behind a failure or skip of `ctid`.
    fn failed_template(&self, ctid: Ctid) -> Option<Ctid> {
        match self {
            CtResult::Failed { .. } => Some(ctid),
            CtResult::Skipped { failed_template } => Some(*failed_template),
            _ => None,
        }
    }

    /// For the summary table.
    pub fn describe(&self) -> String {
        match self {
            CtResult::Done => "ok".into(),
            CtResult::UpToDate { started: false } => "up to date".into(),
            CtResult::UpToDate { started: true } => "up to date (started)".into(),
            CtResult::Failed {
                stage, rollback, ..
            } => match rollback {
                Some(r) => format!("FAILED at {stage}; {r}"),
                None => format!("FAILED at {stage}"),
            },
            CtResult::Skipped { failed_template } => {
                format!("skipped: template {failed_template} failed")
            }
            CtResult::Interrupted { stage: Some(s) } => format!("interrupted at {s}"),
            CtResult::Interrupted { stage: None } => "interrupted: not started".into(),
            CtResult::Drift(a) => {
                let mut parts = Vec::new();
                if !a.changed.is_empty() {
                    parts.push(format!("updated ({} change(s))", a.changed.len()));
                }
                if a.restarted {
                    parts.push("restarted".into());
                }
                if a.restart_needed {
                    parts.push("restart needed (--restart)".into());
                }
                if !a.recreate.is_empty() {
                    parts.push(format!("needs --recreate: {}", a.recreate.join(",")));
                }
                parts.join("; ")
            }
            CtResult::Unlisted {
                pruned: true,
                kept: _,
            } => "pruned: stopped and destroyed".into(),
            CtResult::Unlisted {
                pruned: false,
                kept: Some(k),
            } => format!("not configured; kept: {k}"),
            CtResult::Unlisted {
                pruned: false,
                kept: None,
            } => "not configured (--prune destroys it)".into(),
        }
    }
}

/// One line of the summary.
#[derive(Debug, Clone)]
pub struct CtReport {
    pub ctid: Ctid,
    pub name: String,
    pub action: String,
    pub result: CtResult,
    pub seconds: f64,
}

/// A failed stage.
struct StageError {
    stage: String,
    message: String,
}

impl From<StepFailure> for String {
    fn from(f: StepFailure) -> String {
        f.to_string()
    }
}

fn msg(e: anyhow::Error) -> String {
    format!("{e:#}")
}

impl Orchestrator {
    fn spec(&self, ctid: Ctid) -> &ContainerSpec {
        &self.configs.lxc.lxc_configs[&ctid]
    }

    pub(super) fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.configs.hypervisor.ready_timeout_s())
    }

    fn clone_lock(&self, source: Ctid) -> Arc<Mutex<()>> {
        let mut map = self.clone_locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(source).or_default().clone()
    }

    /// Run one stage, printing `[CTID] what ... ok (t)` or `... FAILED (t)` when it ends.
    fn stage<T>(
        &self,
        ctid: Ctid,
        what: &str,
        f: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, StageError> {
        let t = Instant::now();
        if let Some(sig) = crate::signals::interrupted() {
            return Err(StageError {
                stage: what.split(" (").next().unwrap_or(what).to_string(),
                message: format!("not started: interrupted by {}", crate::signals::name(sig)),
            });
        }
        let r = f();
        let el = super::report::secs(t.elapsed());
        match r {
            Ok(v) => {
                say(&format!("[{ctid}] {what} ... ok ({el})"));
                Ok(v)
            }
            Err(message) => {
                say(&format!("[{ctid}] {what} ... FAILED ({el})"));
                Err(StageError {
                    stage: what.split(" (").next().unwrap_or(what).to_string(),
                    message,
                })
            }
        }
    }

    /// A step program for this CT.
    pub(super) fn step(&self, step: Step, ctid: Ctid, args: &[String]) -> Result<(), String> {
        let mut vars = self.step_vars(step, ctid);
        match step {
            Step::CreateLxc | Step::CloneLxc
                if self.next_program(ctid).is_some_and(runner::is_own_program) =>
            {
                vars.push((env::SKIP_READY_WAIT, "1".into()));
            }
            Step::Setup(_) if self.template_snapshot(ctid).is_some() => {
                vars.push((env::TEMPLATE_SNAPSHOT_AT_FINALIZE, "1".into()));
            }
            _ => {}
        }
        runner::run_step(step, Some(ctid), args, &vars, &self.env).map_err(String::from)
    }

    /// The first program the pipeline runs on `ctid` after its create or clone: lxc-nvidia,
    /// lxc-docker or its setup program (when executable), in that order; `None` when there is
    /// none (finalize follows).
    fn next_program(&self, ctid: Ctid) -> Option<Step> {
        let spec = self.spec(ctid);
        if spec.has_gpus() {
            return Some(Step::LxcNvidia);
        }
        if spec.wants_docker() {
            return Some(Step::LxcDocker);
        }
        let setup = Step::Setup(ctid);
        (runner::presence(&setup.path()) == runner::Presence::Executable).then_some(setup)
    }

    /// The variables the step contracts name, from the configuration.
    pub fn step_vars(&self, step: Step, ctid: Ctid) -> Vec<(&'static str, String)> {
        let spec = self.spec(ctid);
        let lxc = &self.configs.lxc;
        let net = &self.configs.hypervisor.network;
        match step {
            Step::LxcNvidia => vec![
                (
                    env::GPU_ASSIGNMENT,
                    spec.gpu_assignment
                        .as_ref()
                        .map_or_else(|| "none".to_string(), ToString::to_string),
                ),
                (
                    env::NVIDIA_DRIVER_VERSION,
                    lxc.nvidia_driver_version.to_string(),
                ),
                (env::NVIDIA_REPO_URL, lxc.nvidia_repo_url.clone()),
                (env::NVIDIA_RUNFILE_URL, lxc.nvidia_runfile_url.clone()),
            ],
            Step::LxcDocker => {
                let role = match spec.portainer_role {
                    PortainerRole::Server => "server",
                    PortainerRole::Agent => "agent",
                    PortainerRole::None => "none",
                };
                let mut v = vec![
                    (env::PORTAINER_ROLE, role.to_string()),
                    (
                        env::PORTAINER_AGENT_PORT,
                        net.portainer_agent_port.to_string(),
                    ),
                ];
                if let Some(ip) = net.portainer_server_ip() {
                    v.push((env::PORTAINER_SERVER_IP, ip.to_string()));
                }
                v
            }
            _ => Vec::new(),
        }
    }

    /// Build one container; never panics on host errors, they become its result.
    pub fn process(&self, ctid: Ctid) -> CtReport {
        let t = Instant::now();
        let mut action = String::from("none");
        let result = match self.pipeline(ctid, &mut action) {
            Ok(r) => r,
            Err(e) if crate::signals::interrupted().is_some() => {
                // No rollback: a stopped run starts no new work; the next run resumes.
                log::warn!("[{ctid}] {}: {}", e.stage, e.message);
                CtResult::Interrupted {
                    stage: Some(e.stage),
                }
            }
            Err(e) => {
                error_line(&format!("[{ctid}] {} failed: {}", e.stage, e.message));
                let created = self
                    .env
                    .created_record
                    .as_deref()
                    .is_some_and(|r| crate::ownership::created_in(r, ctid));
                let rollback = self.rollback(ctid, created);
                CtResult::Failed {
                    stage: e.stage,
                    message: e.message,
                    rollback,
                }
            }
        };
        CtReport {
            ctid,
            name: self.spec(ctid).name.to_string(),
            action,
            result,
            seconds: t.elapsed().as_secs_f64(),
        }
    }

    fn pipeline(&self, ctid: Ctid, action: &mut String) -> Result<CtResult, StageError> {
        let spec = self.spec(ctid);
        let inspect_err = |e| StageError {
            stage: "inspect".into(),
            message: msg(e),
        };
        // What an interrupted run left behind is repaired first (`recover`).
        self.repair(ctid).map_err(|message| StageError {
            stage: "repair".into(),
            message,
        })?;
        let state = self.inspect(ctid).map_err(inspect_err)?;
        if state.exists() && !self.is_marked(ctid).map_err(inspect_err)? {
            if !self.adopt.contains(&ctid) {
                let cfg = self.pct.config(ctid).map_err(inspect_err)?;
                *action = "refused (not ours)".into();
                return Err(StageError {
                    stage: "ownership".into(),
                    message: crate::ownership::not_ours_message(ctid, &cfg),
                });
            }
            *action = "adopt".into();
            self.stage(ctid, "adopt: tag it `phoenix-managed`", || {
                self.pct.mark_ours(ctid).map(drop).map_err(msg)
            })?;
        }
        let mut state = state;
        if self.recreate.contains(&ctid) && state.exists() {
            *action = "recreate".into();
            self.stage(ctid, "recreate (--recreate): stop, destroy", || {
                self.destroy_ours(ctid).map_err(msg)
            })?;
            state = self.inspect(ctid).map_err(inspect_err)?;
        }
        if state.configured() {
            return self.up_to_date(ctid, &state, action);
        }
        let resume = if state.exists() {
            " (resume: exists without configured-state)"
        } else {
            ""
        };
        match &self.plan.entries[&ctid].action {
            Action::Create { ostemplate } => {
                *action = if state.exists() {
                    "resume (create)"
                } else {
                    "create"
                }
                .into();
                self.stage(ctid, &format!("create from {ostemplate}{resume}"), || {
                    self.step(Step::CreateLxc, ctid, &[ctid.to_string()])
                })?;
            }
            Action::Clone { source, snapshot } => {
                *action = if state.exists() {
                    format!("resume (clone from {source})")
                } else {
                    format!("clone from {source}")
                };
                let lock = self.clone_lock(*source);
                let waiting = Instant::now();
                let _serialized = lock.lock().unwrap_or_else(|p| p.into_inner());
                let waited = waiting.elapsed();
                // An interrupted clone leaves its source `lock: disk`; the source may be done
                // and not selected (`--only`), so it is looked at here too.
                self.repair(*source).map_err(|message| StageError {
                    stage: "repair".into(),
                    message: format!("clone source: {message}"),
                })?;
                let after = if waited >= Duration::from_millis(50) {
                    format!(
                        " (after {} waiting for another clone of {source})",
                        super::report::secs(waited)
                    )
                } else {
                    String::new()
                };
                self.stage(
                    ctid,
                    &format!("clone from {source}@{snapshot}{resume}{after}"),
                    || {
                        self.step(
                            Step::CloneLxc,
                            ctid,
                            &[source.to_string(), snapshot.clone(), ctid.to_string()],
                        )
                    },
                )?;
            }
        }
        let step = match self.plan.entries[&ctid].action {
            Action::Create { .. } => Step::CreateLxc,
            Action::Clone { .. } => Step::CloneLxc,
        };
        // Our own create-lxc/clone-lxc leave the CT started and ready; a drop-in may not.
        if !runner::is_own_program(step) {
            self.stage(ctid, "start, wait ready", || {
                crate::step::ensure_running(&self.pct, ctid, self.ready_timeout())
                    .map(drop)
                    .map_err(msg)
            })?;
        }
        if spec.has_gpus() {
            self.stage(ctid, "lxc-nvidia", || {
                self.step(Step::LxcNvidia, ctid, &[ctid.to_string()])
            })?;
        }
        if spec.wants_docker() {
            self.stage(ctid, "lxc-docker", || {
                self.step(Step::LxcDocker, ctid, &[ctid.to_string()])
            })?;
        }
        let setup = Step::Setup(ctid);
        match runner::presence(&setup.path()) {
            runner::Presence::Executable => {
                self.stage(ctid, &setup.label(), || {
                    self.step(setup, ctid, &[ctid.to_string()])
                })?;
            }
            runner::Presence::NotExecutable => log::warn!(
                "[{ctid}] `{}` exists but is not executable: not run (chmod +x it to run it)",
                setup.path().display()
            ),
            runner::Presence::Missing => {}
        }
        // The setup program may have taken the template snapshot itself (the design's rule).
        let take_template = match self.template_snapshot(ctid) {
            Some(name) => {
                let has = crate::conffile::ConfFile::load(ctid)
                    .map_err(|e| StageError {
                        stage: "template snapshot".into(),
                        message: msg(e),
                    })?
                    .snapshot_names()
                    .iter()
                    .any(|s| s == name);
                (!has).then_some(name)
            }
            None => None,
        };
        let mut what = String::from("finalize: shutdown, snapshot ");
        if let Some(t) = take_template {
            what.push_str(&format!("{t} + "));
        }
        what.push_str(CONFIGURED_STATE);
        what.push_str(", start");
        self.stage(ctid, &what, || {
            self.finalize(ctid, take_template).map_err(msg)
        })?;
        Ok(CtResult::Done)
    }

    /// A CT with `configured-state`: left alone; started when stopped; a template whose own
    /// snapshot has gone gets it back.
    fn up_to_date(
        &self,
        ctid: Ctid,
        state: &CtState,
        action: &mut String,
    ) -> Result<CtResult, StageError> {
        let applied = self
            .apply_drift(ctid, state.status == CtStatus::Running)
            .map_err(|e| StageError {
                stage: "drift".into(),
                message: msg(e),
            })?;
        let drifted = applied != super::apply::Applied::default();
        if drifted {
            *action = "apply drift".into();
        }
        let result = self.up_to_date_rest(ctid, state, action)?;
        Ok(match result {
            CtResult::UpToDate { .. } if drifted => CtResult::Drift(applied),
            r => r,
        })
    }

    fn up_to_date_rest(
        &self,
        ctid: Ctid,
        state: &CtState,
        action: &mut String,
    ) -> Result<CtResult, StageError> {
        if let Some(name) = self.template_snapshot(ctid)
            && !state.has_snapshot(name)
        {
            *action = format!("snapshot {name}");
            self.stage(
                ctid,
                &format!("template snapshot {name} is missing: shutdown, snapshot, start"),
                || self.snapshot_cycle(ctid, &[name]).map_err(msg),
            )?;
            return Ok(CtResult::Done);
        }
        if state.status == CtStatus::Stopped {
            let is_pve_template = crate::conffile::ConfFile::load(ctid)
                .map(|c| c.get("template").as_deref() == Some("1"))
                .unwrap_or(false);
            if !is_pve_template {
                *action = "start".into();
                self.stage(ctid, "up to date, was stopped: start, wait ready", || {
                    crate::step::ensure_running(&self.pct, ctid, self.ready_timeout())
                        .map(drop)
                        .map_err(msg)
                })?;
                return Ok(CtResult::UpToDate { started: true });
            }
        }
        say(&format!("[{ctid}] up to date (has {CONFIGURED_STATE})"));
        Ok(CtResult::UpToDate { started: false })
    }

    /// Shutdown (stop as fallback), take the template snapshot when needed and
    /// `configured-state`, start.
    fn finalize(&self, ctid: Ctid, template: Option<&str>) -> crate::Result<()> {
        let mut names: Vec<&str> = template.into_iter().collect();
        if !names.contains(&CONFIGURED_STATE) {
            names.push(CONFIGURED_STATE);
        }
        self.snapshot_cycle(ctid, &names)
    }

    fn snapshot_cycle(&self, ctid: Ctid, names: &[&str]) -> crate::Result<()> {
        let timeout = self.configs.hypervisor.shutdown_timeout_s();
        self.pct.shutdown_or_stop(ctid, timeout)?;
        for n in names {
            self.pct.snapshot(ctid, n)?;
        }
        // Started, not waited for: the guest booted and passed its checks before the
        // shutdown, the snapshot does not change its disk, and nothing in this run uses it
        // again (clones come from its snapshot). The design's finalize is "start"; a start
        // that fails is still this CT's failure. One call fewer per CT (issue 14).
        self.pct.start(ctid)
    }

    /// With `behavior.rollback_on_failure`, stop and destroy a CT this run created. A CT that
    /// existed before the run is never destroyed.
    fn rollback(&self, ctid: Ctid, created: bool) -> Option<String> {
        if !self.configs.hypervisor.behavior.rollback_on_failure {
            return None;
        }
        if !created {
            let m = "kept: it existed before this run (rollback destroys only what a run created)";
            say(&format!("[{ctid}] rollback: {m}"));
            return Some(m.into());
        }
        let r = (|| -> crate::Result<String> {
            match self.pct.status(ctid)? {
                CtStatus::Missing => return Ok("nothing to roll back (it was not created)".into()),
                CtStatus::Running => self.pct.stop(ctid)?,
                CtStatus::Stopped => {}
            }
            self.pct.destroy(ctid, false)?;
            Ok("rolled back: stopped and destroyed".into())
        })();
        match r {
            Ok(m) => {
                say(&format!("[{ctid}] rollback: {m}"));
                Some(m)
            }
            Err(e) => {
                error_line(&format!("[{ctid}] rollback failed: {e:#}"));
                Some(format!("rollback failed: {e:#}"))
            }
        }
    }

    /// Process `selected` with up to `jobs` containers at once. Returns a report per CT.
    pub fn run_all(&self, selected: &BTreeSet<Ctid>, jobs: usize) -> BTreeMap<Ctid, CtReport> {
        let board = Mutex::new(Board {
            pending: selected.clone(),
            running: BTreeSet::new(),
            done: BTreeMap::new(),
        });
        let cv = Condvar::new();
        let workers = jobs.clamp(1, selected.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| self.worker(&board, &cv, selected));
            }
        });
        board.into_inner().unwrap_or_else(|p| p.into_inner()).done
    }

    fn worker(&self, board: &Mutex<Board>, cv: &Condvar, selected: &BTreeSet<Ctid>) {
        let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match self.pick(&mut b, selected) {
                Pick::Run(ctid) => {
                    b.pending.remove(&ctid);
                    b.running.insert(ctid);
                    drop(b);
                    let report = self.process(ctid);
                    b = board.lock().unwrap_or_else(|p| p.into_inner());
                    b.running.remove(&ctid);
                    b.done.insert(ctid, report);
                    cv.notify_all();
                }
                Pick::Wait => b = cv.wait(b).unwrap_or_else(|p| p.into_inner()),
                Pick::Finished => {
                    cv.notify_all();
                    return;
                }
            }
        }
    }

    /// End every pending CT, none of them started, with `result`.
    fn end_pending(&self, b: &mut Board, result: impl Fn() -> CtResult) {
        for ctid in std::mem::take(&mut b.pending) {
            let report = CtReport {
                ctid,
                name: self.spec(ctid).name.to_string(),
                action: "none".into(),
                result: result(),
                seconds: 0.0,
            };
            b.done.insert(ctid, report);
        }
    }

    /// The lowest pending CTID whose source is done (the design's order with `--jobs 1`);
    /// descendants of failed templates are marked skipped on the way.
    fn pick(&self, b: &mut Board, selected: &BTreeSet<Ctid>) -> Pick {
        if crate::signals::interrupted().is_some() {
            self.end_pending(b, || CtResult::Interrupted { stage: None });
            return if b.running.is_empty() {
                Pick::Finished
            } else {
                Pick::Wait
            };
        }
        loop {
            let mut skipped_any = false;
            for ctid in b.pending.clone() {
                let parent = self.parent(ctid).filter(|p| selected.contains(p));
                let Some(p) = parent else {
                    return Pick::Run(ctid);
                };
                let Some(done) = b.done.get(&p) else {
                    continue;
                };
                match done.result.failed_template(p) {
                    None => return Pick::Run(ctid),
                    Some(failed_template) => {
                        say(&format!(
                            "[{ctid}] skipped: template {failed_template} failed"
                        ));
                        b.pending.remove(&ctid);
                        let name = self.spec(ctid).name.to_string();
                        b.done.insert(
                            ctid,
                            CtReport {
                                ctid,
                                name,
                                action: "none".into(),
                                result: CtResult::Skipped { failed_template },
                                seconds: 0.0,
                            },
                        );
                        skipped_any = true;
                    }
                }
            }
            if !skipped_any {
                break;
            }
        }
        if b.pending.is_empty() {
            return Pick::Finished;
        }
        if b.running.is_empty() {
            // Only reachable with a clone cycle, which validation rejects: fail them rather
            // than wait forever.
            self.end_pending(b, || CtResult::Failed {
                stage: "order".into(),
                message: "its clone sources form a cycle".into(),
                rollback: None,
            });
            return Pick::Finished;
        }
        Pick::Wait
    }
}

struct Board {
    pending: BTreeSet<Ctid>,
    running: BTreeSet<Ctid>,
    done: BTreeMap<Ctid, CtReport>,
}

enum Pick {
    Run(Ctid),
    Wait,
    Finished,
}
