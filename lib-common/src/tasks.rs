//! Proxmox's record of running tasks, read the way Proxmox reads it, to tell a lock held by a
//! task that still runs from one a killed run left behind.
//!
//! Source (pve-common): `PVE::INotify::read_active_workers` parses
//! `/var/log/pve/tasks/active`, one task a line: `<UPID> <saved 0|1>[ <endtime %08X>[ <status>]]`;
//! `PVE::UPID::decode` reads `UPID:<node>:<pid %08X>:<pstart %08X>:<starttime %08X>:<type>:<id>:<user>:`;
//! `PVE::RESTEnvironment::active_workers` keeps a task as running when
//! `PVE::ProcFSTools::check_process_running(pid, pstart)` holds: `/proc/<pid>/stat` exists, its
//! start time (field 22) equals `pstart`, and the process is not a zombie. A line with an end
//! time has finished.
//!
//! The file is at `HOST_ROOT` + that path; the processes are this machine's (`/proc`).

use crate::config::Ctid;

/// One running task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The task's UPID as Proxmox wrote it.
    pub upid: String,
    /// The worker's process ID.
    pub pid: u32,
    /// The worker's start time (field 22 of `/proc/<pid>/stat`), to tell a reused PID.
    pub pstart: u64,
    /// `vzcreate`, `vzclone`, `vzsnapshot`, `vzdelsnapshot`, ...
    pub kind: String,
    /// The guest ID the task was started for (for `vzclone`, the source).
    pub id: String,
}

/// Decode a UPID (`PVE::UPID::decode`); `None` when it is not one.
pub fn decode_upid(upid: &str) -> Option<Task> {
    let rest = upid.strip_prefix("UPID:")?.strip_suffix(':')?;
    let f: Vec<&str> = rest.split(':').collect();
    if f.len() != 7 || f[1].len() != 8 || !(8..=9).contains(&f[2].len()) || f[3].len() != 8 {
        return None;
    }
    Some(Task {
        upid: upid.to_string(),
        pid: u32::from_str_radix(f[1], 16).ok()?,
        pstart: u64::from_str_radix(f[2], 16).ok()?,
        kind: f[4].to_string(),
        id: f[5].to_string(),
    })
}

/// Tasks listed without an end time (`read_active_workers`'s line format).
pub fn parse_active(text: &str) -> Vec<Task> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let upid = it.next()?;
            let saved = it.next()?;
            if saved != "0" && saved != "1" {
                return None;
            }
            if it.next().is_some() {
                return None; // an end time: finished
            }
            decode_upid(upid)
        })
        .collect()
}

/// `check_process_running`: the process exists, is not a zombie, and started at `pstart`.
pub fn process_running(pid: u32, pstart: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`: comm may contain spaces and ')'; fields resume after the last ')'.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    // After comm: f[0] is field 3 (state); field 22 (starttime) is f[19].
    f.first().is_some_and(|s| *s != "Z") && f.get(19).and_then(|s| s.parse().ok()) == Some(pstart)
}

/// The tasks that are running now.
pub fn running() -> Vec<Task> {
    let path = crate::paths::host_path("/var/log/pve/tasks/active");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse_active(&text)
        .into_iter()
        .filter(|t| process_running(t.pid, t.pstart))
        .collect()
}

/// A running task that may hold `lock` on `ctid`: one started for it, or, for `lock: create` or
/// `lock: disk`, any running create or clone (a clone's task is named after its source, and
/// locks the source `disk` and the target `create`). `None`: the lock is stale.
pub fn holder(ctid: Ctid, lock: &str) -> Option<Task> {
    let id = ctid.to_string();
    running()
        .into_iter()
        .find(|t| t.id == id || (matches!(lock, "create" | "disk") && t.kind == "vzclone"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_upids_and_skips_finished_tasks() {
        let t = decode_upid("UPID:pve:0000A1B2:0012D687:65F0C0DE:vzclone:900:root@pam:").unwrap();
        assert_eq!((t.pid, t.pstart), (0xA1B2, 0x12D687));
        assert_eq!((t.kind.as_str(), t.id.as_str()), ("vzclone", "900"));
        assert!(decode_upid("UPID:pve:A1B2:0012D687:65F0C0DE:vzclone:900:root@pam:").is_none());
        assert!(decode_upid("nonsense").is_none());
        let text = "UPID:pve:0000A1B2:0012D687:65F0C0DE:vzclone:900:root@pam: 1\n\
                    UPID:pve:0000A1B3:0012D688:65F0C0DF:vzcreate:901:root@pam: 1 65F0C0EF OK\n";
        let active = parse_active(text);
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].kind, "vzclone");
    }

    #[test]
    fn a_process_runs_only_with_its_own_start_time() {
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        let start: u64 = after.split_whitespace().nth(19).unwrap().parse().unwrap();
        assert!(process_running(me, start));
        assert!(!process_running(me, start + 1));
        assert!(!process_running(u32::MAX - 1, start));
    }
}
