//! SIGINT, SIGTERM and SIGHUP in the orchestrator (issue 12, "Signals"): the first one stops
//! new work (the pipeline asks [`interrupted`] before every stage), is passed on to every
//! process below the orchestrator (its step programs and their `pct` calls: real `pct` then ends
//! its task with "received interrupt" and runs the task's cleanup), and after
//! [`GRACE`] what is still running is killed. A second SIGINT (Ctrl-C twice) kills everything
//! below at once and exits 130. The run lock is released by the caller, last.
//!
//! The orchestrator makes itself a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`), so a `pct`
//! whose step died is re-parented to it and still found (and waited for) as its descendant.
//!
//! The handler only records the signal (async-signal-safe); a watchdog thread does the rest.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// How long running programs get after the signal was passed on before they are killed.
pub const GRACE: Duration = Duration::from_secs(20);

static FIRST: AtomicI32 = AtomicI32::new(0);
static SECOND_INT: AtomicI32 = AtomicI32::new(0);

/// The signal that interrupted the run, if one did.
pub fn interrupted() -> Option<i32> {
    match FIRST.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `SIGTERM` → `"SIGTERM"`.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGKILL => "SIGKILL",
        _ => "a signal",
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    if FIRST
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
        && sig == libc::SIGINT
    {
        SECOND_INT.store(1, Ordering::SeqCst);
    }
}

/// Install the handlers, become a child subreaper and start the watchdog. Call once, before
/// the first step runs.
#[allow(unsafe_code)]
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only touches atomics; SA_RESTART so
        // reads and waits in the worker threads are not cut short.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // SAFETY: plain prctl call with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    std::thread::spawn(watchdog);
}

fn watchdog() {
    loop {
        if let Some(sig) = interrupted() {
            log::warn!(
                "received {}: starting no new work, passing it on to {} running program(s)",
                name(sig),
                descendants().len()
            );
            let mut told: Vec<i32> = Vec::new();
            let t = Instant::now();
            loop {
                // Also programs that started just as the signal came.
                for pid in descendants() {
                    if !told.contains(&pid) {
                        send(pid, sig);
                        told.push(pid);
                    }
                }
                if SECOND_INT.load(Ordering::SeqCst) == 1 {
                    signal_descendants(libc::SIGKILL);
                    eprintln!("interrupted twice: killed every running program");
                    std::process::exit(crate::RunExit::Interrupted(libc::SIGINT).code());
                }
                if t.elapsed() >= GRACE {
                    let left = descendants();
                    if !left.is_empty() {
                        log::warn!(
                            "{} program(s) still running {} s after {}: killing them",
                            left.len(),
                            GRACE.as_secs(),
                            name(sig)
                        );
                        signal_descendants(libc::SIGKILL);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every process below this one (via `/proc/*/stat` parent ids).
pub fn descendants() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let mut f = after.split_whitespace();
            let state = f.next().unwrap_or("");
            let ppid = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            if state != "Z" {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![me];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        for (c, pp) in &parent_of {
            if *pp == p && !found.contains(c) {
                found.push(*c);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

#[allow(unsafe_code)]
fn send(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid found below us.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn signal_descendants(sig: i32) {
    for pid in descendants() {
        send(pid, sig);
    }
}

/// After the workers ended: wait (within [`GRACE`] of now) for the processes still below this
/// one (`pct` calls whose step died, re-parented here), then kill and reap them, so none is
/// left running when the orchestrator exits.
#[allow(unsafe_code)]
pub fn reap_descendants() {
    let t = Instant::now();
    loop {
        // SAFETY: waitpid on any child, non-blocking; only called after every worker thread
        // (which wait for their own children) has ended.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        let left = descendants();
        if left.is_empty() {
            return;
        }
        if t.elapsed() >= GRACE {
            signal_descendants(libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        // 128 + the signal, as a shell reports it.
        let code = |sig| crate::RunExit::Interrupted(sig).code();
        assert_eq!(code(libc::SIGINT), 130);
        assert_eq!(code(libc::SIGTERM), 143);
        assert_eq!(code(libc::SIGHUP), 129);
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
    }

    #[test]
    fn descendants_include_a_grandchild() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .spawn()
            .unwrap();
        let t = Instant::now();
        let mut found = Vec::new();
        while t.elapsed() < Duration::from_secs(5) {
            found = descendants();
            if found.len() >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
        assert!(found.len() >= 2, "{found:?}");
        let _ = child.kill();
        let _ = child.wait();
    }
}
