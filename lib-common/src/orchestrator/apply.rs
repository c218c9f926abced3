//! Drift in the orchestrator (issue 13): the differences of a finished CT ([`crate::drift`]),
//! applying the in-place ones, `--restart`, `--recreate`, and the CTs of ours that the
//! configuration no longer lists (listed by every run, destroyed with `--prune`).
//!
//! Decision: applying a change does **not** touch the `configured-state` snapshot. It records
//! the CT as its steps built it; a later `pct rollback` to it brings the old values back, and
//! the next run puts the configured ones again (they are drift then). Retaking it would need a
//! shutdown of a CT whose change may not need one, for no gain in what a run can do.
//!
//! Everything here reads conf files ([`ConfFile`]); it adds no `pct` call per CT to the
//! inspection.

use std::collections::{BTreeMap, BTreeSet};

use super::{CtReport, CtResult, Orchestrator, error_line, say};
use crate::conffile::ConfFile;
use crate::config::Ctid;
use crate::drift::{self, Class, Diff, Fix};
use crate::pct::CtStatus;

/// The pending section of a conf (`[pve:pending]`).
const PENDING: &str = "pve:pending";

/// What applying a CT's drift did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The differences changed in this run (`field: old -> new`).
    pub changed: Vec<String>,
    /// A change waits for the CT's next start and `--restart` was not given.
    pub restart_needed: bool,
    /// Restarted (`--restart`).
    pub restarted: bool,
    /// Differences that need `--recreate` (fields).
    pub recreate: Vec<&'static str>,
}

/// A CT of ours that the configuration does not list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlisted {
    /// Its CTID.
    pub ctid: Ctid,
    /// Its hostname.
    pub name: String,
    /// Why `--prune` keeps it, when it does (a CT cloned from it remains).
    pub kept_because: Option<String>,
}

impl Orchestrator {
    /// The drift of an existing CT, from its conf's main section.
    pub fn drift_of(&self, ctid: Ctid) -> crate::Result<Vec<Diff>> {
        let conf = ConfFile::load(ctid)?;
        Ok(self.drift_in(ctid, &conf))
    }

    pub(super) fn drift_in(&self, ctid: Ctid, conf: &ConfFile) -> Vec<Diff> {
        let spec = &self.configs.lxc.lxc_configs[&ctid];
        let is_clone = self.plan.entries[&ctid].action.source().is_some();
        drift::compare(spec, conf, is_clone, &crate::host::nvidia_majors())
    }

    /// Whether a `pct set` of `fix` already waits in the conf's `[pve:pending]` section.
    fn is_pending(conf: &ConfFile, fix: &Fix) -> bool {
        match fix {
            Fix::Set(k, v) => conf.section_get(PENDING, k).as_deref() == Some(v.as_str()),
            Fix::Delete(k) => conf
                .section_get(PENDING, "delete")
                .is_some_and(|d| d.split([',', ';', ' ']).any(|x| x == *k)),
            _ => false,
        }
    }

    /// Apply the in-place drift of finished CT `ctid` (`running`: its state now). Recreate-only
    /// differences are reported, never forced.
    pub fn apply_drift(&self, ctid: Ctid, running: bool) -> crate::Result<Applied> {
        let conf = ConfFile::load(ctid)?;
        let diffs = self.drift_in(ctid, &conf);
        let mut out = Applied::default();
        let mut sets: Vec<(&str, String)> = Vec::new();
        let mut deletes: Vec<&str> = Vec::new();
        let mut needs_restart = false;
        let mut run_gpu = false;
        let mut strip_gpu = false;
        let mut grow = None;
        for d in &diffs {
            if d.class == Class::Recreate {
                out.recreate.push(d.field);
                continue;
            }
            if d.class == Class::InPlaceRestart {
                needs_restart = true;
            }
            if Self::is_pending(&conf, &d.fix) {
                // Set by an earlier run while the CT ran: waits for its next start.
                continue;
            }
            out.changed.push(d.line());
            match &d.fix {
                Fix::Set(k, v) => sets.push((k, v.clone())),
                Fix::Delete(k) => deletes.push(k),
                Fix::Grow(n) => grow = Some(*n),
                Fix::Gpu => run_gpu = true,
                Fix::StripGpu => strip_gpu = true,
                Fix::Recreate => {}
            }
        }
        let pairs: Vec<(&str, &str)> = sets.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.pct.set(ctid, &pairs)?;
        self.pct.set_delete(ctid, &deletes)?;
        if let Some(n) = grow {
            self.pct.resize(ctid, "rootfs", n)?;
        }
        if strip_gpu {
            let (_lock, mut conf) = ConfFile::load_locked(ctid, false)?;
            let majors = crate::host::nvidia_majors();
            conf.remove_main_lines(|l| crate::steps::clone::is_gpu_line(l, &majors));
            conf.save()?;
        }
        if run_gpu {
            self.step(super::runner::Step::LxcNvidia, ctid, &[ctid.to_string()])
                .map_err(|m| crate::Error::proxmox(format!("CT {ctid}: lxc-nvidia: {m}")))?;
        }
        for c in &out.changed {
            say(&format!("[{ctid}] drift applied: {c}"));
        }
        // A raw `lxc.*` line leaves no trace in `[pve:pending]`: an earlier run's record says
        // that a change still waits for a start.
        let recorded = restart_record(ctid).exists();
        needs_restart |= recorded;
        if !running {
            clear_restart_record(ctid);
        }
        if needs_restart && running {
            if self.restart {
                let timeout = self.configs.hypervisor.shutdown_timeout_s();
                self.pct.shutdown_or_stop(ctid, timeout)?;
                self.pct.start(ctid)?;
                crate::step::wait_ready(&self.pct, ctid, self.ready_timeout())?;
                say(&format!(
                    "[{ctid}] restarted: the changes that wait for a start are applied"
                ));
                clear_restart_record(ctid);
                out.restarted = true;
            } else {
                if !recorded {
                    write_restart_record(ctid);
                }
                out.restart_needed = true;
                say(&format!(
                    "[{ctid}] restart needed: a change takes effect at its next start (run with --restart, or `pct reboot {ctid}`)"
                ));
            }
        }
        if !out.recreate.is_empty() {
            say(&format!(
                "[{ctid}] needs recreate: {} cannot be changed in place; `--recreate {ctid}` destroys and rebuilds it",
                out.recreate.join(", ")
            ));
        }
        Ok(out)
    }

    /// Stop (when running) and destroy a CT of ours, re-checking the mark right before.
    pub fn destroy_ours(&self, ctid: Ctid) -> crate::Result<()> {
        let conf = ConfFile::load(ctid)?;
        if !crate::ownership::has_mark(conf.get("tags").as_deref()) {
            return Err(crate::Error::precondition(format!(
                "CT {ctid} lacks the `{}` tag: not destroyed",
                crate::ownership::TAG
            ))
            .into());
        }
        if self.pct.status(ctid)? == CtStatus::Running {
            self.pct.stop(ctid)?;
        }
        self.pct.destroy(ctid, false)?;
        crate::ownership::record_lineage(ctid, None);
        Ok(())
    }

    /// The CTs of ours (with the mark) that the configuration does not list, read from the conf
    /// files in `/etc/pve/lxc`. `--prune` keeps one that a remaining CT was cloned from: by our
    /// record ([`crate::ownership::cloned_from`]), or because a remaining CT's disk is a linked
    /// clone of it (`base-<id>-`/`basevol-<id>-` volumes, `PVE::Storage::parse_volname`).
    pub fn unlisted(&self) -> Vec<Unlisted> {
        let confs = ConfFile::load_all();
        let ours: BTreeMap<Ctid, &ConfFile> = confs
            .iter()
            .filter(|(c, conf)| {
                !self.plan.entries.contains_key(c)
                    && crate::ownership::has_mark(conf.get("tags").as_deref())
            })
            .map(|(c, conf)| (*c, conf))
            .collect();
        let gone: BTreeSet<Ctid> = ours.keys().copied().collect();
        ours.iter()
            .map(|(&ctid, conf)| {
                let kept_because = confs
                    .iter()
                    .filter(|(c, _)| !gone.contains(c))
                    .find(|(_, other)| {
                        other.settings().iter().any(|(k, v)| {
                            (k == "rootfs" || k.starts_with("mp"))
                                && (v.contains(&format!("base-{ctid}-"))
                                    || v.contains(&format!("basevol-{ctid}-")))
                        })
                    })
                    .map(|(c, _)| format!("CT {c} is a linked clone of it"))
                    .or_else(|| {
                        confs
                            .keys()
                            .filter(|c| !gone.contains(c))
                            .find(|c| crate::ownership::cloned_from(**c) == Some(ctid))
                            .map(|c| format!("CT {c} was cloned from it"))
                    });
                Unlisted {
                    ctid,
                    name: conf.get("hostname").unwrap_or_default(),
                    kept_because,
                }
            })
            .collect()
    }
}

impl Orchestrator {
    /// The CTs of ours the configuration does not list: each is said, and with `prune`
    /// destroyed unless a remaining CT needs it. One report per CT.
    pub fn prune_or_list(&self, prune: bool) -> Vec<CtReport> {
        self.unlisted()
            .into_iter()
            .map(|u| {
                let t = std::time::Instant::now();
                let (action, result) = match (&u.kept_because, prune) {
                    (Some(k), _) => {
                        say(&format!(
                            "[{}] ours but not in the configuration; kept: {k}",
                            u.ctid
                        ));
                        ("none", CtResult::Unlisted { pruned: false, kept: Some(k.clone()) })
                    }
                    (None, false) => {
                        say(&format!(
                            "[{}] ours but not in the configuration: left alone (--prune destroys it)",
                            u.ctid
                        ));
                        ("none", CtResult::Unlisted { pruned: false, kept: None })
                    }
                    (None, true) => match self.destroy_ours(u.ctid) {
                        Ok(()) => {
                            say(&format!(
                                "[{}] prune: not in the configuration: stopped and destroyed",
                                u.ctid
                            ));
                            ("prune", CtResult::Unlisted { pruned: true, kept: None })
                        }
                        Err(e) => {
                            error_line(&format!("[{}] prune failed: {e:#}", u.ctid));
                            (
                                "prune",
                                CtResult::Failed {
                                    stage: "prune".into(),
                                    message: format!("{e:#}"),
                                    rollback: None,
                                },
                            )
                        }
                    },
                };
                CtReport {
                    ctid: u.ctid,
                    name: u.name,
                    action: action.into(),
                    result,
                    seconds: t.elapsed().as_secs_f64(),
                }
            })
            .collect()
    }
}

/// `STATE_DIR/restart-needed/<CTID>`: a change applied to the running CT takes effect only at
/// its next start. Written when a run applied one without `--restart`; removed when a run
/// restarts it or finds it stopped. A restart by hand is not seen: the next `--restart` run
/// restarts it once more.
pub fn restart_record(ctid: Ctid) -> std::path::PathBuf {
    crate::paths::host_path(format!(
        "{}/restart-needed/{ctid}",
        crate::ownership::STATE_DIR
    ))
}

fn write_restart_record(ctid: Ctid) {
    let p = restart_record(ctid);
    let r = p
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&p, ""));
    if let Err(e) = r {
        log::warn!("[{ctid}] cannot write `{}`: {e}", p.display());
    }
}

fn clear_restart_record(ctid: Ctid) {
    let _ = std::fs::remove_file(restart_record(ctid));
}
