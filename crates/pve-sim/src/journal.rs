//! The invocation journal: one JSON line per `pct`/`pvesm` call in
//! `var/log/pve-sim/journal.jsonl` (`simulator.md`, "Journal"), appended with a single
//! `O_APPEND` write so parallel callers never interleave lines.

use std::fs::{self, OpenOptions};
use std::io::Write;

use crate::host::Host;

/// Subcommands that change state (`simulator.md`).
pub const MUTATING: &[&str] = &[
    "create",
    "clone",
    "set",
    "start",
    "stop",
    "shutdown",
    "reboot",
    "snapshot",
    "delsnapshot",
    "rollback",
    "destroy",
    "template",
    "push",
    "mount",
    "unmount",
    "unlock",
    "resize",
    "restore",
    "migrate",
];

pub fn is_mutating(tool: &str, sub: &str) -> bool {
    tool == "pct" && MUTATING.contains(&sub)
}

pub fn append(host: &Host, argv: &[String], exit: i32, mutating: bool, start_ms: u64, end_ms: u64) {
    let line = serde_json::json!({
        "argv": argv,
        "exit": exit,
        "mutating": mutating,
        "start_ms": start_ms,
        "end_ms": end_ms,
    });
    let p = host.journal_path();
    if let Some(d) = p.parent() {
        let _ = fs::create_dir_all(d);
    }
    let mut text = line.to_string();
    text.push('\n');
    match OpenOptions::new().create(true).append(true).open(&p) {
        Ok(mut f) => {
            if let Err(e) = f.write_all(text.as_bytes()) {
                eprintln!("pve-sim: cannot append to {}: {e}", p.display());
            }
        }
        Err(e) => eprintln!("pve-sim: cannot open {}: {e}", p.display()),
    }
}
