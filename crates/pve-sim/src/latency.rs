//! Simulated durations: `etc/pve-sim/latency`, lines `<subcommand> <milliseconds>` and
//! `boot <ms>` (time after `start` until `exec` works).

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

/// Sleep the configured time for `key` (never with the host lock held).
pub fn sleep(host: &Host, key: &str) {
    let ms = get(host, key);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}
