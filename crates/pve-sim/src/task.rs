//! Commands that run as tasks, modelled on pve-common `src/PVE/RESTEnvironment.pm`
//! `fork_worker` in its CLI (synchronous) form:
//!
//! - `pct` (the parent) starts a worker process in its own session (`POSIX::setsid`) whose
//!   output it relays through pipes (`$tee_worker`), and waits for it.
//! - SIGINT/SIGTERM/SIGQUIT to `pct` are forwarded as SIGTERM to the worker's process group
//!   (SIGKILL from the fourth on); the worker dies with `received interrupt` at its next
//!   interruptible point, and the command's own error cleanup runs (a clone frees what it made
//!   and unlocks the source, a snapshot is removed again, ...).
//! - SIGKILL of `pct` leaves the worker running (own session). The worker has SIGPIPE at its
//!   default (`$SIG{PIPE} = 'DEFAULT'`), so the next line it writes to the dead parent's pipe
//!   kills it without any cleanup: its locks stay. A worker that writes nothing more finishes.
//! - The record of tasks is PVE's: `<host root>/var/log/pve/tasks/active`, one line per task,
//!   `<UPID> <saved>` while it runs, `<UPID> <saved> <endtime %08X> <status>` once ended
//!   (pve-common `src/PVE/INotify.pm` `write_active_workers`), rewritten under
//!   `var/log/pve/tasks/.active.lock` by `active_workers`; the UPID is
//!   `UPID:<node>:<pid %08X>:<pstart %08X>:<starttime %08X>:<type>:<vmid>:<user>:`
//!   (`src/PVE/UPID.pm` `encode`) with the worker's pid and its start time in clock ticks
//!   (field 22 of `/proc/<pid>/stat`). A task is running iff its line has no end time and
//!   process `<pid>` is alive with that start time (`PVE::ProcFSTools::check_process_running`);
//!   a listed task whose process is gone is stale (its locks are left-overs). The task log
//!   `var/log/pve/tasks/<hex digit>/<UPID>` ends with `TASK OK` or `TASK ERROR: <msg>`.
//!
//! - The worker's stderr is its stdout; its end message (`TASK OK`, `TASK WARNINGS: n`,
//!   `TASK ERROR: msg`) travels over a control pipe (fd 3 in the worker, fork_worker's
//!   `@ctrlfd`) and `pct` prints it on stderr as `$tee_worker` does.
//!
//! Parameter errors are reported before the worker starts (the CLI checks them before the API
//! forks); other checks that Proxmox runs before `fork_worker` (e.g. a clone's locks) run in
//! pve-sim's worker, so a task record is written for such early failures too.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

use crate::error::{PveError, PveResult};
use crate::host::{Host, write_atomic};

/// Set in the worker's environment (the UPID is computed by the worker itself).
pub const WORKER_ENV: &str = "PVE_SIM_TASK_WORKER";

/// Task type per `pct` subcommand (the `fork_worker` dtype in pve-container's API).
pub fn task_type(sub: &str) -> Option<&'static str> {
    Some(match sub {
        "create" => "vzcreate",
        "clone" => "vzclone",
        "start" => "vzstart",
        "stop" => "vzstop",
        "shutdown" => "vzshutdown",
        "snapshot" => "vzsnapshot",
        "delsnapshot" => "vzdelsnapshot",
        "rollback" => "vzrollback",
        "destroy" => "vzdestroy",
        "resize" => "resize",
        _ => return None,
    })
}

pub fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether the worker got SIGINT/SIGTERM/SIGQUIT.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An interruptible point of a task: `received interrupt` once the worker was signalled.
pub fn check() -> PveResult<()> {
    check_msg("received interrupt")
}

/// As [`check`] with the command's own message (a clone's copy dies with
/// `interrupted by signal`, `src/PVE/API2/LXC.pm` `clone_vm`).
pub fn check_msg(msg: &str) -> PveResult<()> {
    if interrupted() {
        Err(PveError::die(msg))
    } else {
        Ok(())
    }
}

extern "C" fn on_worker_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

static WORKER_PID: AtomicI32 = AtomicI32::new(0);
static FORWARDED: AtomicU32 = AtomicU32::new(0);
static PENDING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_parent_signal(_: libc::c_int) {
    let pid = WORKER_PID.load(Ordering::SeqCst);
    if pid <= 0 {
        // Before the worker exists: forwarded once it does.
        PENDING.store(true, Ordering::SeqCst);
    } else {
        let n = FORWARDED.fetch_add(1, Ordering::SeqCst);
        let sig = if n < 3 { libc::SIGTERM } else { libc::SIGKILL };
        #[allow(unsafe_code)]
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

#[allow(unsafe_code)]
fn set_handler(sigs: &[libc::c_int], h: extern "C" fn(libc::c_int)) {
    for s in sigs {
        // SAFETY: installs a handler that only touches atomics / calls kill.
        unsafe {
            libc::signal(*s, h as *const () as libc::sighandler_t);
        }
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot); None if gone or a
/// zombie.
pub fn proc_starttime(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state)
    if f.first() == Some(&"Z") {
        return None;
    }
    f.get(22 - 3)?.parse().ok()
}

/// `PVE::ProcFSTools::check_process_running`.
pub fn process_running(pid: u32, pstart: u64) -> bool {
    proc_starttime(pid) == Some(pstart)
}

pub fn encode_upid(
    node: &str,
    pid: u32,
    pstart: u64,
    starttime: u64,
    ty: &str,
    id: &str,
) -> String {
    format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{ty}:{id}:root@pam:")
}

/// (pid, pstart, starttime) of a UPID.
pub fn decode_upid(upid: &str) -> Option<(u32, u64, u64)> {
    let f: Vec<&str> = upid.split(':').collect();
    if f.len() != 9 || f[0] != "UPID" {
        return None;
    }
    Some((
        u32::from_str_radix(f[2], 16).ok()?,
        u64::from_str_radix(f[3], 16).ok()?,
        u64::from_str_radix(f[4], 16).ok()?,
    ))
}

fn tasks_dir(host: &Host) -> std::path::PathBuf {
    host.root.join("var/log/pve/tasks")
}

/// The task log path (`src/PVE/UPID.pm` `decode`: subdirectory = last hex digit of the
/// start time).
pub fn log_path(host: &Host, upid: &str) -> std::path::PathBuf {
    let st = upid.split(':').nth(4).unwrap_or("0");
    let sub = &st[st.len().saturating_sub(1)..];
    tasks_dir(host).join(sub).join(upid)
}

/// `PVE::UPID::read_status`: the last line of the task log.
fn read_status(host: &Host, upid: &str) -> String {
    let Ok(t) = fs::read_to_string(log_path(host, upid)) else {
        return "unable to get last line from task log".into();
    };
    let last = t.lines().next_back().unwrap_or_default();
    if last == "TASK OK" {
        "OK".into()
    } else if let Some(e) = last.strip_prefix("TASK ERROR: ") {
        e.into()
    } else if let Some(w) = last.strip_prefix("TASK ") {
        w.into()
    } else {
        "unexpected status".into()
    }
}

/// `PVE::RESTEnvironment::active_workers`: under `.active.lock`, list `new_upid` (as running,
/// `nocheck`), give every listed task whose process is gone its end time and status, and
/// rewrite the file: running tasks first, then finished ones newest first, 25 lines at most
/// (pve-sim keeps no `index` archive of older ones).
pub fn active_workers(host: &Host, new_upid: Option<&str>) {
    let dir = tasks_dir(host);
    let _ = fs::create_dir_all(&dir);
    let Ok(lockf) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(".active.lock"))
    else {
        return;
    };
    if lockf.lock().is_err() {
        return;
    }
    let text = fs::read_to_string(dir.join("active")).unwrap_or_default();
    let mut running = Vec::new();
    let mut ended = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let now = crate::host::now_ms() / 1000;
    for line in text.lines() {
        let f: Vec<&str> = line.splitn(4, ' ').collect();
        let Some(upid) = f.first().map(|s| s.to_string()) else {
            continue;
        };
        if !seen.insert(upid.clone()) {
            continue;
        }
        if f.len() >= 3 {
            ended.push(format!("{upid} 1 {}", f[2..].join(" ")));
            continue;
        }
        let alive = decode_upid(&upid).is_some_and(|(pid, ps, _)| process_running(pid, ps));
        if alive || Some(upid.as_str()) == new_upid {
            running.push(format!("{upid} 0"));
        } else {
            ended.push(format!("{upid} 1 {now:08X} {}", read_status(host, &upid)));
        }
    }
    if let Some(u) = new_upid
        && seen.insert(u.to_string())
    {
        running.push(format!("{u} 0"));
    }
    // Finished tasks newest first (by start time), at most 25 entries in all.
    ended.sort_by_key(|l| {
        std::cmp::Reverse(
            l.split(' ')
                .next()
                .and_then(decode_upid)
                .map_or(0, |(_, _, st)| st),
        )
    });
    let keep = 25usize.saturating_sub(running.len());
    let mut out = String::new();
    for l in running.iter().chain(ended.iter().take(keep)) {
        out.push_str(l);
        out.push('\n');
    }
    let _ = write_atomic(&dir.join("active"), out.as_bytes());
}

/// In the worker: install the interrupt handlers, SIGPIPE at its default, register the task.
/// Returns its UPID.
pub fn worker_start(host: &Host, sub: &str, vmid: &str) -> Option<String> {
    set_handler(
        &[libc::SIGINT, libc::SIGTERM, libc::SIGQUIT],
        on_worker_signal,
    );
    #[allow(unsafe_code)]
    // SAFETY: restores the default disposition of SIGPIPE; dup2 of the standard descriptors.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // fork_worker: the worker's STDERR is redirected to its STDOUT; only the end status
        // reaches `pct`'s stderr (printed by the parent).
        libc::dup2(1, 2);
        // Programs the worker runs do not inherit the control pipe.
        libc::fcntl(CTRL_FD, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    let ty = task_type(sub)?;
    let pid = std::process::id();
    let pstart = proc_starttime(pid)?;
    let upid = encode_upid(
        host.node(),
        pid,
        pstart,
        crate::host::now_ms() / 1000,
        ty,
        vmid,
    );
    let log = log_path(host, &upid);
    if let Some(d) = log.parent() {
        let _ = fs::create_dir_all(d);
    }
    let _ = fs::write(&log, "");
    active_workers(host, Some(&upid));
    Some(upid)
}

/// The worker's end of the control pipe.
const CTRL_FD: libc::c_int = 3;
/// Control message prefix for an error Proxmox raises before it forks the worker (a parameter
/// error): `pct` prints the text as it is.
const RAW: &str = "RAW:";

/// In the worker, for an error that Proxmox raises before `fork_worker` (parameter
/// verification): `pct` prints `text` as it is; the task log records it too.
pub fn worker_end_raw(host: &Host, upid: Option<&str>, text: &str) {
    send_ctrl(&format!("{RAW}{text}"));
    if let Some(u) = upid {
        append_log(
            host,
            u,
            &format!("TASK ERROR: {}\n", text.trim_end().replace('\n', " ")),
        );
    }
}

fn send_ctrl(msg: &str) {
    #[allow(unsafe_code)]
    // SAFETY: writes a buffer we own to the control descriptor, then closes it.
    unsafe {
        libc::write(CTRL_FD, msg.as_ptr().cast(), msg.len());
        libc::close(CTRL_FD);
    }
}

fn append_log(host: &Host, upid: &str, line: &str) {
    if let Ok(mut f) = OpenOptions::new().append(true).open(log_path(host, upid)) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// In the worker: the task's end message (control pipe and task log).
pub fn worker_end(host: &Host, upid: Option<&str>, result: Result<u32, &str>) {
    let line = match result {
        Ok(0) => "TASK OK\n".to_string(),
        Err(e) if e.trim().is_empty() => "TASK ERROR: command failed\n".to_string(),
        Ok(n) => format!("TASK WARNINGS: {n}\n"),
        Err(e) => format!("TASK ERROR: {}\n", e.trim_end().replace('\n', " ")),
    };
    send_ctrl(&line);
    if let Some(u) = upid {
        append_log(host, u, &line);
    }
}

/// The parent: run this same command as the worker, relay its output, forward interrupts,
/// wait, record the end of the task. Returns the exit code.
pub fn run_parent(host: &Host, args: &[String]) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("unable to fork worker - {e}");
            return 255;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(WORKER_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The control pipe (fork_worker's `@ctrlfd`): the worker's end message, fd 3 in the worker.
    let mut fds = [0 as libc::c_int; 2];
    #[allow(unsafe_code)]
    // SAFETY: pipe2 fills the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!(
            "unable to fork worker - {}",
            std::io::Error::last_os_error()
        );
        return 255;
    }
    let (ctrl_r, ctrl_w) = (fds[0], fds[1]);
    // Handlers first, so an interrupt during the start-up is not lost.
    set_handler(
        &[libc::SIGINT, libc::SIGTERM, libc::SIGQUIT],
        on_parent_signal,
    );
    #[allow(unsafe_code)]
    // SAFETY: setsid and signal are async-signal-safe; nothing else runs between fork and
    // exec. The worker starts with the interrupts ignored (fork_worker's `local $SIG{INT} =
    // ... 'IGNORE'`) until it installs its own handlers.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::dup2(ctrl_w, CTRL_FD);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT] {
                libc::signal(s, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    #[allow(unsafe_code)]
    // SAFETY: our copy of the write end; the worker has its own.
    unsafe {
        libc::close(ctrl_w);
    }
    #[allow(unsafe_code)]
    // SAFETY: ctrl_r is a descriptor we own from here on.
    let mut ctrl = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(ctrl_r) };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            eprintln!("unable to fork worker - {e}");
            return 255;
        }
    };
    WORKER_PID.store(child.id() as i32, Ordering::SeqCst);
    if PENDING.swap(false, Ordering::SeqCst) {
        on_parent_signal(libc::SIGTERM);
    }
    let relay = |mut from: Box<dyn Read + Send>, to_err: bool| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let r = if to_err {
                            std::io::stderr().write_all(&buf[..n])
                        } else {
                            std::io::stdout()
                                .write_all(&buf[..n])
                                .and_then(|_| std::io::stdout().flush())
                        };
                        if r.is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        })
    };
    let out = child.stdout.take().map(|o| relay(Box::new(o), false));
    let err = child.stderr.take().map(|e| relay(Box::new(e), true));
    let status = loop {
        match child.wait() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return 255,
        }
    };
    for h in [out, err].into_iter().flatten() {
        let _ = h.join();
    }
    // log_task_result: the worker is gone, so its entry gets its end status.
    active_workers(host, None);
    // $tee_worker: the control message goes to stderr: nothing for `TASK OK`, `Task finished
    // with N warning(s)!`, or the error.
    let mut msg = String::new();
    let _ = ctrl.read_to_string(&mut msg);
    if let Some(raw) = msg.strip_prefix(RAW) {
        eprint!("{raw}");
    } else if msg.trim_end() == "TASK OK" {
    } else if let Some(n) = msg.trim_end().strip_prefix("TASK WARNINGS: ") {
        eprintln!("Task finished with {n} warning(s)!");
    } else if let Some(e) = msg.trim_end().strip_prefix("TASK ERROR: ") {
        eprintln!("{e}");
    } else {
        eprintln!("got unexpected control message: {msg}");
    }
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(_)) => 255,
        _ => 255,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upid_format_and_process_check() {
        // src/PVE/UPID.pm `encode`: upper-case hex, 8 digits, trailing colon.
        let u = encode_upid("pve", 0x1a2b, 0x3c4d, 0x6b0dd525, "vzclone", "100");
        assert_eq!(
            u,
            "UPID:pve:00001A2B:00003C4D:6B0DD525:vzclone:100:root@pam:"
        );
        assert_eq!(decode_upid(&u), Some((0x1a2b, 0x3c4d, 0x6b0dd525)));
        assert_eq!(decode_upid("UPID:pve:x"), None);
        let me = std::process::id();
        let ps = proc_starttime(me).unwrap();
        assert!(process_running(me, ps));
        assert!(!process_running(me, ps + 1));
    }
}
