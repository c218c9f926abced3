//! One run at a time: an exclusive advisory lock (`flock`, through `File::try_lock`) on
//! `HOST_ROOT/run/lock/phoenix_hypervisor.lock`, with the holder's pid written into the file
//! for the message a second run prints.
//!
//! Step programs run by hand take the same lock ([`for_step`]); the orchestrator's own steps
//! share the orchestrator's: it names itself in `PHOENIX_RUN_LOCK_PID` for its children, and a
//! step accepts that only when the lock is really held by that pid and that pid is an ancestor
//! of the step (so a stray variable in a shell does not bypass the lock).
//!
//! The lock is on the open file, not on its existence: a file left behind by a run that was
//! killed blocks nobody, because the kernel drops the lock when its holder dies. The file is
//! never removed (unlinking a lock file races with a process that has just opened it).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A held run lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; its pid as written in the file, if readable.
    Held { path: PathBuf, pid: Option<u32> },
    /// The file could not be created or locked.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { path, pid } => {
                let who = pid.map_or_else(
                    || "a process whose pid is not known yet".to_string(),
                    |p| format!("pid {p}"),
                );
                write!(
                    f,
                    "another phoenix_establish_hypervisor run (or a step run by hand) holds the lock `{}` ({who})\nhint: wait for it to finish; if no such process is running, the lock is free again and you can re-run",
                    path.display()
                )
            }
            LockError::Io { path, error } => {
                write!(f, "cannot take the run lock `{}`: {error}", path.display())
            }
        }
    }
}

/// Take the lock at `path` (creating the file and its directory), or say who holds it.
pub fn acquire(path: &Path) -> Result<RunLock, LockError> {
    let io = |error| LockError::Io {
        path: path.to_path_buf(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                path: path.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    // Ours now: replace whatever pid a dead run left with ours.
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(io)?;
    file.flush().map_err(io)?;
    Ok(RunLock {
        _file: file,
        path: path.to_path_buf(),
    })
}

/// Environment variable by which the orchestrator tells its steps that it holds the run lock.
pub const HOLDER_ENV: &str = crate::env::RUN_LOCK_PID;

/// The pid written in the lock file at `path`, if readable.
fn holder_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The parent pid of `pid` (`/proc/<pid>/stat`, field 4).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is this process's parent, grandparent, ...
fn is_ancestor(pid: u32) -> bool {
    let mut cur = std::process::id();
    for _ in 0..64 {
        match parent_of(cur) {
            Some(p) if p == pid => return true,
            Some(p) if p > 1 => cur = p,
            _ => return false,
        }
    }
    false
}

/// The run lock for a step program: `None` when the orchestrator that runs this step holds it
/// (shared), the lock itself when the step runs by hand, or who holds it.
pub fn for_step(path: &Path) -> Result<Option<RunLock>, LockError> {
    if let Some(pid) = std::env::var(HOLDER_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        && holder_pid(path) == Some(pid)
        && is_ancestor(pid)
    {
        return Ok(None);
    }
    acquire(path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_pid_and_a_stale_file_is_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/lock/x.lock");
        // A stale file from a dead run: no lock on it, a pid inside.
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "999999\n").unwrap();
        let held = acquire(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\n", std::process::id())
        );
        // flock locks belong to the open file description: a second open conflicts even
        // within one process.
        match acquire(&p) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(held);
        assert!(acquire(&p).is_ok());
    }

    #[test]
    fn a_step_shares_only_its_ancestors_lock() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        let held = acquire(&p).unwrap();
        // Held by this very process, which is not its own ancestor: refused.
        assert!(matches!(for_step(&p), Err(LockError::Held { .. })));
        drop(held);
        // Free: a hand-run step takes it.
        assert!(for_step(&p).unwrap().is_some());
        assert!(parent_of(std::process::id()).is_some());
    }
}
