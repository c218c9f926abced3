//! Which containers are ours (issue 12, "Ownership"): the Proxmox tag `phoenix-managed` on every
//! container the tool creates or clones, the record of a create/clone in flight (so that the
//! remains of one interrupted before Proxmox wrote the tag are still known as ours), and the
//! record of what this run created (so that rollback destroys only that).
//!
//! - The tag is what a person sees (`pct config`, the web UI) and what Proxmox keeps. Clones of
//!   our templates inherit it; it is set right after every create, and after a clone that did
//!   not inherit it ([`crate::pct::PctClient::create`], [`crate::pct::PctClient::clone_ct`]).
//! - `HOST_ROOT/var/lib/phoenix_hypervisor/creating/<CTID>` exists from just before our
//!   `pct create`/`pct clone` until the tag is set. A CT left `lock: create` by a killed run has
//!   only `lock: create` in its conf (pve-container writes the rest at the end of the task,
//!   `PVE::API2::LXC` `create_vm` → `PVE::LXC::Config->create_and_lock_config`), so this record
//!   is how the next run knows it is ours.
//! - `PHOENIX_CREATED_RECORD` (set by the orchestrator for its steps) names a file to which the
//!   CTID is appended the moment our own `pct create`/`pct clone` returned success: rollback reads
//!   it, instead of guessing from what it saw when it inspected.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Ctid;
use crate::error::{Error, ErrorKind, Result};

/// The ownership mark: a Proxmox tag (`pve-tag` format: lower case, digits, `-`).
pub const TAG: &str = "phoenix-managed";

/// Host-absolute directory of the tool's own state.
pub const STATE_DIR: &str = "/var/lib/phoenix_hypervisor";

/// Environment variable naming the file of CTIDs created by the current run.
pub const CREATED_RECORD_ENV: &str = crate::env::CREATED_RECORD;

/// Whether a `tags` value (Proxmox separates tags by `;`, also accepting `,` and spaces) has
/// our mark.
pub fn has_mark(tags: Option<&str>) -> bool {
    tags.is_some_and(|t| split_tags(t).any(|x| x == TAG))
}

fn split_tags(t: &str) -> impl Iterator<Item = &str> {
    t.split([';', ',', ' ']).filter(|s| !s.is_empty())
}

/// `tags` with our mark added (the others kept, in order).
pub fn with_mark(tags: Option<&str>) -> String {
    let mut v: Vec<&str> = tags.map(|t| split_tags(t).collect()).unwrap_or_default();
    if !v.contains(&TAG) {
        v.push(TAG);
    }
    v.join(";")
}

fn intent_path(ctid: Ctid) -> PathBuf {
    crate::paths::host_path(format!("{STATE_DIR}/creating/{ctid}"))
}

fn other(msg: String) -> anyhow::Error {
    Error::new(ErrorKind::Other, msg).into()
}

/// Record that we are about to create `ctid` (`what`: `create` or `clone`).
pub fn write_intent(ctid: Ctid, what: &str) -> Result<()> {
    let p = intent_path(ctid);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| other(format!("cannot create `{}`: {e}", dir.display())))?;
    }
    std::fs::write(&p, format!("{what} pid {}\n", std::process::id()))
        .map_err(|e| other(format!("cannot write `{}`: {e}", p.display())))
}

/// Whether a create/clone of ours for `ctid` began and did not finish marking it.
pub fn has_intent(ctid: Ctid) -> bool {
    intent_path(ctid).exists()
}

/// Forget the in-flight record of `ctid` (its create/clone finished, or it was repaired).
pub fn clear_intent(ctid: Ctid) {
    let _ = std::fs::remove_file(intent_path(ctid));
}

/// Append `ctid` to this run's record of created CTs, when a run set one.
pub fn record_created(ctid: Ctid) {
    let Some(path) = std::env::var_os(CREATED_RECORD_ENV).filter(|v| !v.is_empty()) else {
        return;
    };
    let r = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{ctid}\n").as_bytes()));
    if let Err(e) = r {
        log::warn!(
            "[{ctid}] cannot record the creation in `{}`: {e}",
            Path::new(&path).display()
        );
    }
}

fn lineage_path(ctid: Ctid) -> PathBuf {
    crate::paths::host_path(format!("{STATE_DIR}/cloned-from/{ctid}"))
}

/// Record that `target` was cloned from `source` (`STATE_DIR/cloned-from/<target>`), or, with
/// `None`, that it was created from an OS template. A full clone's conf does not name its
/// source, and `--prune` must never destroy a template a remaining CT was cloned from.
pub fn record_lineage(target: Ctid, source: Option<Ctid>) {
    let p = lineage_path(target);
    let r = match source {
        Some(s) => p
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&p, format!("{s}\n"))),
        None => match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    };
    if let Err(e) = r {
        log::warn!(
            "[{target}] cannot record its clone source in `{}`: {e}",
            p.display()
        );
    }
}

/// The CT `ctid` was cloned from, as recorded by [`record_lineage`].
pub fn cloned_from(ctid: Ctid) -> Option<Ctid> {
    std::fs::read_to_string(lineage_path(ctid))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `record` (a file written through [`record_created`]) lists `ctid`.
pub fn created_in(record: &Path, ctid: Ctid) -> bool {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim() == ctid.to_string())
}

/// Before a step changes an existing CT: it must carry our mark. A CT whose create or clone of
/// ours returned but was not marked yet (its in-flight record is still there) is marked now.
/// Otherwise a precondition error (exit 3) that says what is there and how to proceed.
pub fn require_ours(pct: &crate::pct::PctClient, ctid: Ctid) -> Result<()> {
    // Read from the conf file: `pct config` would cost a call for what the file says.
    let cfg = crate::conffile::ConfFile::load(ctid)?.to_config(false);
    if has_mark(cfg.get("tags")) {
        return Ok(());
    }
    if has_intent(ctid) && cfg.get("lock").is_none() {
        pct.mark_ours(ctid)?;
        clear_intent(ctid);
        log::info!("[{ctid}] marked `{TAG}`: our create/clone of it had finished unmarked");
        return Ok(());
    }
    Err(Error::precondition(not_ours_message(ctid, &cfg)).into())
}

/// What a person needs to know about a CT that is not ours at a configured CTID.
pub fn not_ours_message(ctid: Ctid, cfg: &crate::pct::PctConfig) -> String {
    let mut what = Vec::new();
    if let Some(h) = cfg.get("hostname") {
        what.push(format!("hostname `{h}`"));
    }
    if let Some(t) = cfg.get("tags") {
        what.push(format!("tags `{t}`"));
    }
    if let Some(l) = cfg.get("lock") {
        what.push(format!("lock `{l}`"));
    }
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(" ({})", what.join(", "))
    };
    format!(
        "CT {ctid} exists but was not created by Phoenix Hypervisor{what}: it lacks the `{TAG}` tag, so it is left untouched\nhint: if it should become this configuration's CT {ctid}, re-run with `--adopt {ctid}` (it is converged and tagged); otherwise give lxc_configs.\"{ctid}\" a free CTID"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_is_found_among_other_tags_and_added_once() {
        assert!(!has_mark(None));
        assert!(!has_mark(Some("prod;phoenix")));
        assert!(has_mark(Some("prod;phoenix-managed")));
        assert!(has_mark(Some("phoenix-managed")));
        assert_eq!(with_mark(None), "phoenix-managed");
        assert_eq!(with_mark(Some("a;b")), "a;b;phoenix-managed");
        assert_eq!(with_mark(Some("a;phoenix-managed")), "a;phoenix-managed");
    }

    #[test]
    fn created_record_lists_exact_ctids() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("created");
        std::fs::write(&p, "9010\n902\n").unwrap();
        assert!(created_in(&p, Ctid(902)));
        assert!(!created_in(&p, Ctid(901)));
        assert!(!created_in(&d.path().join("none"), Ctid(902)));
    }
}
