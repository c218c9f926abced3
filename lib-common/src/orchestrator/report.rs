//! What the orchestrator prints for people: the plan of `--dry-run` and the summary table
//! that ends every run (CTID, name, action, result, seconds).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::runner::{Presence, Step, presence};
use super::{CONFIGURED_STATE, CtReport, CtResult, Orchestrator, exit};
use crate::config::Ctid;
use crate::pct::CtStatus;
use crate::plan::Action;

/// `1.2 s`.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The table, then one line of totals, on stdout; the rows and totals also in the log.
pub fn summary(reports: &BTreeMap<Ctid, CtReport>, elapsed: Duration) {
    let (table, total) = summary_lines(reports, elapsed);
    println!();
    for (i, line) in table.iter().enumerate() {
        println!("{line}");
        if i > 0 {
            log::info!("summary: {}", line.trim_end());
        }
    }
    println!("{total}");
    log::info!("run finished: {total}");
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
    let mut total = format!(
        "{} containers: {done} built, {up} up to date, {failed} failed, {skipped} skipped",
        reports.len()
    );
    if interrupted > 0 {
        total.push_str(&format!(", {interrupted} interrupted"));
    }
    total.push_str(&format!(" ({})", secs(elapsed)));
    (table, total)
}

/// `--dry-run`: read-only queries, the plan per CT; no step program, lock or file.
pub fn dry_run(orch: &Orchestrator, only: &BTreeSet<Ctid>, candidates: &BTreeSet<Ctid>) -> i32 {
    println!("Dry run: nothing is changed, no step program runs, no file is written.");
    let marker = &orch.configs.hypervisor.core_paths.hypervisor_marker;
    println!(
        "initial setup: would run `{}` ({})",
        Step::InitialSetup.path().display(),
        if crate::paths::host_path(marker).exists() {
            "the host is marked initialized: it will do nothing"
        } else {
            "the host is not marked initialized yet: it checks the host and writes the marker"
        }
    );
    let selected = match orch.select(only, candidates) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot read the host's containers: {e:#}");
            return exit::SOME_FAILED;
        }
    };
    for ctid in orch
        .plan
        .order()
        .into_iter()
        .filter(|c| selected.contains(c))
    {
        match plan_lines(orch, ctid) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
            }
            Err(e) => {
                eprintln!("error: [{ctid}] cannot read its state: {e:#}");
                return exit::SOME_FAILED;
            }
        }
    }
    exit::OK
}

fn plan_lines(orch: &Orchestrator, ctid: Ctid) -> crate::Result<Vec<String>> {
    let spec = &orch.configs.lxc.lxc_configs[&ctid];
    let planned = &orch.plan.entries[&ctid];
    let st = orch.inspect(ctid)?;
    let mut out = Vec::new();
    if st.exists() && !orch.is_marked(ctid)? {
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
    if st.configured() {
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
    if st.exists() {
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
