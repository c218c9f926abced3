//! Simulated durations: `etc/pve-sim/latency`, lines `<subcommand> <milliseconds>` and the
//! rules that are not subcommands: `call <ms>` (every `pct`/`pvesm` invocation: the Perl CLI's
//! start-up on a real host), `boot <ms>` (after `start`, the guest's systemd says `starting`
//! until then; `exec` works at once), `network <ms>` (after `start`, network-using guest doubles
//! fail as without DNS until then) and `copy <ms>` (per MiB a full clone or a create writes, so
//! copies cost time in proportion to their size).

use std::fs;
use std::time::Duration;

use crate::host::Host;

/// Configured milliseconds for `key` (a subcommand or `boot`), 0 if none.
pub fn get(host: &Host, key: &str) -> u64 {
    let Ok(text) = fs::read_to_string(host.sim_etc().join("latency")) else {
        return 0;
    };
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let k = f.next()?;
            let v = f.next()?.parse::<u64>().ok()?;
            (k == key).then_some(v)
        })
        .next_back()
        .unwrap_or(0)
}

/// Sleep the configured time for `key` (never with the host lock held); a task worker that
/// gets interrupted stops sleeping at once (the caller then checks [`crate::task::check`]).
pub fn sleep(host: &Host, key: &str) {
    sleep_ms(get(host, key));
}

/// Sleep `ms`, in slices, ending early when the task worker is interrupted.
pub fn sleep_ms(ms: u64) {
    let end = std::time::Instant::now() + Duration::from_millis(ms);
    while !crate::task::interrupted() {
        let now = std::time::Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// Bytes in a directory tree (regular files, not following links).
pub fn tree_bytes(p: &std::path::Path) -> u64 {
    let Ok(md) = fs::symlink_metadata(p) else {
        return 0;
    };
    if md.is_dir() {
        fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| tree_bytes(&e.path())).sum())
            .unwrap_or(0)
    } else if md.is_file() {
        md.len()
    } else {
        0
    }
}

/// Sleep `copy` ms per MiB of `dir`'s contents (after a create or full clone wrote it).
pub fn sleep_copy(host: &Host, dir: &std::path::Path) {
    let per_mib = get(host, "copy");
    if per_mib == 0 {
        return;
    }
    let mib = tree_bytes(dir).div_ceil(1 << 20).max(1);
    sleep_ms(per_mib * mib);
}
