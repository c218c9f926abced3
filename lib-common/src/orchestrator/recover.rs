//! Recovery from interruption (issue 12): what a killed run, step or `pct` leaves behind, found
//! at inspection and repaired without a person, each repair said on stdout and in the log.
//!
//! - A lock held by a task that is still running ([`crate::tasks`]) is waited for, bounded.
//! - Stale locks on a CT of ours: `lock: create` (an interrupted create or clone: it never
//!   finished, nothing of value is in it) → unlock and destroy, so it is built again (unlock
//!   first: pve-container `PVE::API2::LXC` `destroy_vm` calls `check_lock`; a clone takes
//!   `set_lock($vmid, 'disk')` on the source and `create_and_lock_config($newid)` on the target
//!   in `clone_vm`, and its worker, `vzclone`, is named after the source);
//!   `lock: disk` (the source of an interrupted clone), `lock: snapshot` / `snapshot-delete`
//!   (an interrupted snapshot or its removal) → unlock. Any other lock is not ours to lift: the
//!   CT fails naming it.
//! - Snapshots in state `prepare` or `delete` (`snapstate` in the conf; `pct listsnapshot` does
//!   not show it) → `pct delsnapshot --force` (`PVE::AbstractConfig::snapshot_delete`, which
//!   first takes `lock: snapshot-delete` through `set_lock` → `check_lock`, hence unlock
//!   first); the pipeline then takes them again.
//! - A create or clone of ours that returned but was not tagged yet → tagged.
//! - Temporary files of ours (`pct push` sources, which may hold secrets) left under
//!   `/var/cache/phoenix_hypervisor/push/` → removed ([`remove_leftover_push_files`]).
//!
//! A CT is ours when it has the mark, when our in-flight record names it, or when `--adopt`
//! names it; a CT that is not ours is never repaired (the ownership check refuses it).

use std::time::{Duration, Instant};

use super::{Orchestrator, say};
use crate::conffile::ConfFile;
use crate::config::Ctid;
use crate::ownership;

/// How long a lock held by a running task is waited for.
pub const TASK_WAIT: Duration = Duration::from_secs(300);

/// A conf as read for recovery.
struct Seen {
    lock: Option<String>,
    ours: bool,
    marked: bool,
    /// Snapshots whose `snapstate` is `prepare` or `delete`.
    incomplete: Vec<(String, String)>,
}

impl Orchestrator {
    fn see(&self, ctid: Ctid) -> Option<Seen> {
        let path = ConfFile::path_for(ctid);
        if !path.exists() {
            return None;
        }
        let conf = ConfFile::read(&path).ok()?;
        let marked = ownership::has_mark(conf.get("tags").as_deref());
        let incomplete = conf
            .snapshot_names()
            .into_iter()
            .filter_map(|s| {
                let st = conf.section_get(&s, "snapstate")?;
                Some((s, st))
            })
            .collect();
        Some(Seen {
            lock: conf.get("lock"),
            ours: marked || ownership::has_intent(ctid) || self.adopt.contains(&ctid),
            marked,
            incomplete,
        })
    }

    /// Repair what an interrupted run left on `ctid` (see the module doc). `Err`: a lock that
    /// cannot be lifted (held by a task that does not end, or not ours to lift).
    pub(super) fn repair(&self, ctid: Ctid) -> Result<(), String> {
        let started = Instant::now();
        let mut said_waiting = false;
        let seen = loop {
            let Some(seen) = self.see(ctid) else {
                if ownership::has_intent(ctid) {
                    // Killed before Proxmox wrote anything: nothing to repair but the record.
                    ownership::clear_intent(ctid);
                }
                return Ok(());
            };
            let Some(lock) = seen.lock.clone() else {
                break seen;
            };
            match crate::tasks::holder(ctid, &lock) {
                Some(task) => {
                    if started.elapsed() >= TASK_WAIT {
                        return Err(format!(
                            "CT {ctid} is locked ({lock}) by task {} that is still running after {} s\nhint: see `pvesh get /nodes/localhost/tasks`; re-run when it has finished",
                            task.upid,
                            TASK_WAIT.as_secs()
                        ));
                    }
                    if !said_waiting {
                        say(&format!(
                            "[{ctid}] locked ({lock}) by running task {}: waiting for it",
                            task.upid
                        ));
                        said_waiting = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                None => {
                    if !seen.ours {
                        // Not ours: the ownership check refuses it and says so.
                        return Ok(());
                    }
                    self.lift_stale_lock(ctid, &lock)?;
                    if lock == "create" {
                        return Ok(());
                    }
                }
            }
        };
        if !seen.ours {
            return Ok(());
        }
        for (name, state) in &seen.incomplete {
            self.pct
                .delsnapshot_force(ctid, name)
                .map_err(|e| format!("{e:#}"))?;
            say(&format!(
                "[{ctid}] repair: removed snapshot `{name}` left in state `{state}` by an interrupted run (it is taken again)"
            ));
        }
        if !seen.marked && ownership::has_intent(ctid) {
            self.pct.mark_ours(ctid).map_err(|e| format!("{e:#}"))?;
            say(&format!(
                "[{ctid}] repair: tagged `{}`: our create/clone of it had finished before an interruption",
                ownership::TAG
            ));
        }
        if ownership::has_intent(ctid) {
            ownership::clear_intent(ctid);
        }
        Ok(())
    }

    fn lift_stale_lock(&self, ctid: Ctid, lock: &str) -> Result<(), String> {
        let e = |e: anyhow::Error| format!("{e:#}");
        match lock {
            "create" => {
                self.pct.unlock(ctid).map_err(e)?;
                self.pct.destroy(ctid, true).map_err(e)?;
                ownership::clear_intent(ctid);
                say(&format!(
                    "[{ctid}] repair: destroyed the remains of an interrupted create/clone (`lock: create`, no task running); it is built again"
                ));
            }
            "disk" | "snapshot" | "snapshot-delete" => {
                self.pct.unlock(ctid).map_err(e)?;
                let why = match lock {
                    "disk" => "an interrupted clone from it",
                    "snapshot" => "an interrupted snapshot",
                    _ => "an interrupted snapshot removal",
                };
                say(&format!(
                    "[{ctid}] repair: removed the stale `lock: {lock}` left by {why} (no task running)"
                ));
            }
            other => {
                return Err(format!(
                    "CT {ctid} is locked ({other}) and no task holds the lock; this run does not lift a `{other}` lock\nhint: find out what left it; `pct unlock {ctid}` removes it, then re-run"
                ));
            }
        }
        Ok(())
    }
}

/// Remove the `pct push` sources a killed program left behind (run under the run lock: no other
/// program of ours is running). Returns how many.
pub fn remove_leftover_push_files() -> usize {
    let dir = crate::paths::host_path(format!("{}/push", crate::paths::CACHE_DIR));
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with("push-")
            && std::fs::remove_file(e.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}
