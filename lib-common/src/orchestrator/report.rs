//! What the orchestrator prints for people: the plan of `--dry-run` and the summary table
//! that ends every run (CTID, name, action, result, seconds).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::output::{CtEntry, Document, DriftEntry, Mode, UnlistedEntry};
use super::runner::{Presence, Step, presence};
use super::{CONFIGURED_STATE, CtReport, CtResult, Orchestrator};
use crate::RunExit;
use crate::config::Ctid;
use crate::drift::Class;
use crate::pct::CtStatus;
use crate::plan::Action;

/// A line for people: stdout, or stderr with `--output json`.
macro_rules! out {
    ($($t:tt)*) => {
        super::output::human(&format!($($t)*))
    };
}

/// `1.2 s`.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The table, then one line of totals, on stdout; the rows and totals also in the log.
pub fn summary(reports: &BTreeMap<Ctid, CtReport>, elapsed: Duration) {
    let (table, total) = summary_lines(reports, elapsed);
    out!("");
    for (i, line) in table.iter().enumerate() {
        out!("{line}");
        if i > 0 {
            log::info!("summary: {}", line.trim_end());
        }
    }
    out!("{total}");
    log::info!("run finished: {total}");
}

/// The document of a run (`--output json`): one entry per CT of the summary.
pub fn run_document(reports: &BTreeMap<Ctid, CtReport>) -> Document {
    let mut doc = Document::new(Mode::Run);
    for r in reports.values() {
        if let CtResult::Unlisted { pruned, kept } = &r.result {
            doc.unlisted.push(UnlistedEntry {
                ctid: r.ctid.0,
                name: r.name.clone(),
                action: match (pruned, kept) {
                    (true, _) => "prune",
                    (false, Some(_)) => "kept",
                    (false, None) => "listed",
                }
                .into(),
                reason: kept.clone(),
            });
            continue;
        }
        doc.containers.push(CtEntry {
            ctid: r.ctid.0,
            name: r.name.clone(),
            action: Some(r.action.clone()),
            result: Some(r.result.describe()),
            success: Some(r.result.is_success()),
            seconds: Some((r.seconds * 10.0).round() / 10.0),
            ..Default::default()
        });
    }
    doc
}

/// The table's lines (header first, columns aligned) and the totals line.
pub fn summary_lines(
    reports: &BTreeMap<Ctid, CtReport>,
    elapsed: Duration,
) -> (Vec<String>, String) {
    let rows: Vec<[String; 5]> = reports
        .values()
        .map(|r| {
            [
                r.ctid.to_string(),
                r.name.clone(),
                r.action.clone(),
                r.result.describe(),
                format!("{:.1}", r.seconds),
            ]
        })
        .collect();
    let header = ["CTID", "NAME", "ACTION", "RESULT", "SECONDS"].map(String::from);
    let mut w = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (i, cell) in row.iter().enumerate() {
            w[i] = w[i].max(cell.chars().count());
        }
    }
    let line = |r: &[String; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        )
    };
    let table = std::iter::once(&header).chain(&rows).map(line).collect();
    let count = |f: fn(&CtResult) -> bool| reports.values().filter(|r| f(&r.result)).count();
    let done = count(|r| matches!(r, CtResult::Done));
    let up = count(|r| matches!(r, CtResult::UpToDate { .. }));
    let failed = count(|r| matches!(r, CtResult::Failed { .. }));
    let skipped = count(|r| matches!(r, CtResult::Skipped { .. }));
    let interrupted = count(|r| matches!(r, CtResult::Interrupted { .. }));
    let updated = count(|r| matches!(r, CtResult::Drift(_)));
    let pruned = count(|r| matches!(r, CtResult::Unlisted { pruned: true, .. }));
    let unlisted = count(|r| matches!(r, CtResult::Unlisted { pruned: false, .. }));
    let mut total = format!(
        "{} containers: {done} built, {up} up to date, {failed} failed, {skipped} skipped",
        reports.len()
    );
    if updated > 0 {
        total.push_str(&format!(", {updated} drifted"));
    }
    if pruned > 0 {
        total.push_str(&format!(", {pruned} pruned"));
    }
    if unlisted > 0 {
        total.push_str(&format!(", {unlisted} not configured"));
    }
    if interrupted > 0 {
        total.push_str(&format!(", {interrupted} interrupted"));
    }
    total.push_str(&format!(" ({})", secs(elapsed)));
    (table, total)
}

/// `--dry-run`: read-only queries, the plan per CT; no step program, lock or file.
pub fn dry_run(
    orch: &Orchestrator,
    only: &BTreeSet<Ctid>,
    candidates: &BTreeSet<Ctid>,
    prune: bool,
) -> RunExit {
    out!("Dry run: nothing is changed, no step program runs, no file is written.");
    let marker = &orch.configs.hypervisor.core_paths.hypervisor_marker;
    out!(
        "initial setup: would run `{}` ({})",
        Step::InitialSetup.path().display(),
        if crate::paths::host_path(marker).exists() {
            "the host is marked initialized: it will do nothing"
        } else {
            "the host is not marked initialized yet: it checks the host and writes the marker"
        }
    );
    let mut doc = Document::new(Mode::DryRun);
    let selected = match orch.select(only, candidates) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot read the host's containers: {e:#}");
            return doc.finish(RunExit::SomeFailed);
        }
    };
    for ctid in orch
        .plan
        .order()
        .into_iter()
        .filter(|c| selected.contains(c))
    {
        let mut entry = CtEntry {
            ctid: ctid.0,
            name: orch.configs.lxc.lxc_configs[&ctid].name.to_string(),
            ..Default::default()
        };
        match plan_lines(orch, ctid, &mut entry) {
            Ok(lines) => {
                for l in &lines {
                    out!("{l}");
                }
                entry.plan = lines;
                doc.containers.push(entry);
            }
            Err(e) => {
                eprintln!("error: [{ctid}] cannot read its state: {e:#}");
                return doc.finish(RunExit::SomeFailed);
            }
        }
    }
    for u in orch.unlisted() {
        doc.unlisted.push(unlisted_entry(&u, prune));
        out!(
            "{}",
            match (&u.kept_because, prune) {
                (Some(k), _) =>
                    format!("[{}] ours but not in the configuration; kept: {k}", u.ctid),
                (None, true) => format!(
                    "[{}] ours but not in the configuration: would stop and destroy it (--prune)",
                    u.ctid
                ),
                (None, false) => format!(
                    "[{}] ours but not in the configuration: would leave it alone (--prune destroys it)",
                    u.ctid
                ),
            }
        );
    }
    doc.finish(RunExit::Ok)
}

fn unlisted_entry(u: &super::apply::Unlisted, prune: bool) -> UnlistedEntry {
    UnlistedEntry {
        ctid: u.ctid.0,
        name: u.name.clone(),
        action: match (&u.kept_because, prune) {
            (Some(_), _) => "kept",
            (None, true) => "prune",
            (None, false) => "listed",
        }
        .into(),
        reason: u.kept_because.clone(),
    }
}

/// `--status`: read-only; one line per configured CT and per CT of ours that is not
/// configured. 0 when the host matches the configuration, 1 otherwise.
pub fn status(orch: &Orchestrator) -> RunExit {
    let mut in_sync = true;
    let mut doc = Document::new(Mode::Status);
    for ctid in orch.plan.order() {
        let name = &orch.configs.lxc.lxc_configs[&ctid].name;
        let mut entry = CtEntry {
            ctid: ctid.0,
            name: name.to_string(),
            ..Default::default()
        };
        let line = match status_line(orch, ctid, &mut entry) {
            Ok((line, ok)) => {
                in_sync &= ok;
                line
            }
            Err(e) => {
                in_sync = false;
                format!("cannot read its state: {e:#}")
            }
        };
        out!("[{ctid}] {name}: {line}");
        doc.containers.push(entry);
    }
    for u in orch.unlisted() {
        in_sync = false;
        doc.unlisted.push(unlisted_entry(&u, false));
        out!(
            "[{}] {}: exists, ours, not in the configuration{}",
            u.ctid,
            u.name,
            match &u.kept_because {
                Some(k) => format!(" (kept by --prune: {k})"),
                None => " (--prune destroys it)".into(),
            }
        );
    }
    out!(
        "{}",
        if in_sync {
            "in sync: the host matches the configuration"
        } else {
            "not in sync: run phoenix_establish_hypervisor (--dry-run shows the plan)"
        }
    );
    doc.in_sync = Some(in_sync);
    doc.finish(if in_sync {
        RunExit::Ok
    } else {
        RunExit::SomeFailed
    })
}

/// One CT's status line and whether it matches its block.
fn status_line(
    orch: &Orchestrator,
    ctid: Ctid,
    entry: &mut CtEntry,
) -> crate::Result<(String, bool)> {
    let st = orch.inspect(ctid)?;
    entry.exists = Some(st.exists());
    if !st.exists() {
        return Ok(("missing".into(), false));
    }
    let conf = crate::conffile::ConfFile::load(ctid)?;
    let ours = crate::ownership::has_mark(conf.get("tags").as_deref());
    entry.running = Some(st.status == CtStatus::Running);
    entry.ours = Some(ours);
    entry.configured_state = Some(st.configured());
    let mut parts = vec![
        "exists".to_string(),
        match st.status {
            CtStatus::Running => "running",
            _ => "stopped",
        }
        .to_string(),
        if ours { "ours" } else { "NOT ours" }.to_string(),
        if st.configured() {
            CONFIGURED_STATE.to_string()
        } else {
            format!("no {CONFIGURED_STATE}")
        },
    ];
    let template_missing = orch.template_snapshot(ctid).filter(|n| !st.has_snapshot(n));
    if let Some(n) = template_missing {
        parts.push(format!("template snapshot {n} missing"));
    }
    let restart_needed =
        st.status == CtStatus::Running && super::apply::restart_record(ctid).exists();
    if restart_needed {
        parts.push("restart needed (--restart)".into());
    }
    let drift = orch.drift_in(ctid, &conf);
    entry.drift = drift.iter().map(DriftEntry::from).collect();
    let mut line = parts.join(", ");
    if drift.is_empty() {
        line.push_str("; no drift");
    } else {
        let d: Vec<String> = drift.iter().map(|d| d.line()).collect();
        line.push_str(&format!("; drift: {}", d.join("; ")));
    }
    let ok = ours
        && !restart_needed
        && st.configured()
        && template_missing.is_none()
        && drift.is_empty()
        && st.status == CtStatus::Running;
    Ok((line, ok))
}

fn plan_lines(orch: &Orchestrator, ctid: Ctid, entry: &mut CtEntry) -> crate::Result<Vec<String>> {
    let spec = &orch.configs.lxc.lxc_configs[&ctid];
    let planned = &orch.plan.entries[&ctid];
    let st = orch.inspect(ctid)?;
    entry.exists = Some(st.exists());
    entry.running = Some(st.status == CtStatus::Running);
    entry.configured_state = Some(st.configured());
    let mut out = Vec::new();
    let marked = st.exists() && orch.is_marked(ctid)?;
    if st.exists() {
        entry.ours = Some(marked);
    }
    if st.exists() && !marked {
        if !orch.adopt.contains(&ctid) {
            out.push(format!(
                "[{ctid}] not ours (no `{}` tag): would leave it untouched and fail it (--adopt {ctid} converges it)",
                crate::ownership::TAG
            ));
            return Ok(out);
        }
        out.push(format!(
            "[{ctid}] adopt: would tag it `{}` and converge it",
            crate::ownership::TAG
        ));
    }
    if orch.recreate.contains(&ctid) && st.exists() {
        out.push(format!(
            "[{ctid}] recreate (--recreate): would stop and destroy it, then build it again:"
        ));
    } else if st.configured() {
        let template_missing = orch.template_snapshot(ctid).filter(|n| !st.has_snapshot(n));
        out.push(match (template_missing, st.status) {
            (Some(n), _) => format!(
                "[{ctid}] up to date (has {CONFIGURED_STATE}) but its template snapshot {n} is missing: would shut it down, take {n}, start it"
            ),
            (None, CtStatus::Stopped) => {
                format!("[{ctid}] up to date (has {CONFIGURED_STATE}), stopped: would start it")
            }
            (None, _) => format!("[{ctid}] up to date (has {CONFIGURED_STATE}): nothing to do"),
        });
        if st.status == CtStatus::Running && super::apply::restart_record(ctid).exists() {
            out.push(format!(
                "      a change applied earlier waits for a restart: {}",
                if orch.restart {
                    "would restart it (--restart)"
                } else {
                    "--restart does it"
                }
            ));
        }
        let drift = orch.drift_of(ctid)?;
        entry.drift = drift.iter().map(DriftEntry::from).collect();
        if !drift.is_empty() {
            out.pop();
            out.push(format!(
                "[{ctid}] has {CONFIGURED_STATE}; drift from its block, would change:"
            ));
            for d in &drift {
                out.push(format!("      {}", d.line()));
            }
            if drift.iter().any(|d| d.class == Class::Recreate) {
                out.push(format!(
                    "      not done: `--recreate {ctid}` destroys and rebuilds it"
                ));
            }
            if drift.iter().any(|d| d.class == Class::InPlaceRestart)
                && st.status == CtStatus::Running
            {
                out.push(format!(
                    "      {}",
                    if orch.restart {
                        "would restart it (--restart)"
                    } else {
                        "a restart is needed for some (--restart does it)"
                    }
                ));
            }
        }
        return Ok(out);
    }
    let (what, step_cmd) = match &planned.action {
        Action::Create { ostemplate } => (
            format!("create from {ostemplate}"),
            format!("{} {ctid}", Step::CreateLxc.path().display()),
        ),
        Action::Clone { source, snapshot } => (
            format!("clone from {source}@{snapshot}"),
            format!(
                "{} {source} {snapshot} {ctid}",
                Step::CloneLxc.path().display()
            ),
        ),
    };
    if st.exists() && !orch.recreate.contains(&ctid) {
        out.push(format!(
            "[{ctid}] resume: exists without {CONFIGURED_STATE}; the steps run again (they are idempotent)"
        ));
    } else {
        out.push(format!("[{ctid}] {what}"));
    }
    out.push(format!("      why: {}", planned.reason));
    let mut steps = vec![step_cmd, "start, wait ready".to_string()];
    if spec.has_gpus() {
        steps.push(format!(
            "lxc-nvidia (gpu_assignment {})",
            spec.gpu_assignment.as_deref().unwrap_or("none")
        ));
    }
    if spec.wants_docker() {
        steps.push(format!("lxc-docker (portainer_role {:?})", spec.portainer_role).to_lowercase());
    }
    let setup = Step::Setup(ctid);
    steps.push(match presence(&setup.path()) {
        Presence::Executable => format!("{} (present)", setup.label()),
        Presence::NotExecutable => {
            format!("{} (present but not executable: not run)", setup.label())
        }
        Presence::Missing => format!("{} (absent: skipped)", setup.label()),
    });
    if let Some(n) = orch.template_snapshot(ctid) {
        if st.has_snapshot(n) {
            steps.push(format!("template snapshot {n} (exists)"));
        } else {
            steps.push(format!(
                "template snapshot {n} (unless the setup program takes it)"
            ));
        }
    }
    steps.push(format!(
        "finalize: shutdown, snapshot {CONFIGURED_STATE}, start, wait ready"
    ));
    out.push(format!("      steps: {}", steps.join("; ")));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ctid: u32, name: &str, action: &str, result: CtResult, seconds: f64) -> CtReport {
        CtReport {
            ctid: Ctid(ctid),
            name: name.into(),
            action: action.into(),
            result,
            seconds,
        }
    }

    #[test]
    fn summary_table_is_aligned_and_counts_results() {
        let mut reports = BTreeMap::new();
        for r in [
            report(900, "BaseTemplate", "create", CtResult::Done, 3.21),
            report(
                902,
                "Docker",
                "clone from 900",
                CtResult::Failed {
                    stage: "clone from 900@base-snapshot".into(),
                    message: "x".into(),
                    rollback: None,
                },
                0.4,
            ),
            report(
                910,
                "Portainer",
                "none",
                CtResult::Skipped {
                    failed_template: Ctid(902),
                },
                0.0,
            ),
            report(
                901,
                "Gpu",
                "none",
                CtResult::UpToDate { started: true },
                12.0,
            ),
        ] {
            reports.insert(r.ctid, r);
        }
        let (table, total) = summary_lines(&reports, Duration::from_millis(15_600));
        assert_eq!(
            table,
            [
                "CTID  NAME          ACTION          RESULT                                  SECONDS",
                "900   BaseTemplate  create          ok                                          3.2",
                "901   Gpu           none            up to date (started)                       12.0",
                "902   Docker        clone from 900  FAILED at clone from 900@base-snapshot      0.4",
                "910   Portainer     none            skipped: template 902 failed                0.0",
            ]
        );
        assert_eq!(
            total,
            "4 containers: 1 built, 1 up to date, 1 failed, 1 skipped (15.6 s)"
        );
    }
}
