//! Injected failures: `etc/pve-sim/faults`, one rule a line
//! `<tool> <subcommand> <vmid|*> [count]` (for `exec`, an optional fourth field `cmd=<name>`
//! or a bare command name matches the command run). A matching call fails like a Proxmox
//! task (`simulated fault: <argv>`, exit 255) and changes nothing; a count is decremented in
//! place (a rule at 0 no longer matches).

use std::fs;

use crate::host::{Host, write_atomic};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    tool: String,
    sub: String,
    vmid: String,
    cmd: Option<String>,
    count: Option<u64>,
}

fn parse_line(line: &str) -> Option<Rule> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 3 || f[0].starts_with('#') {
        return None;
    }
    let mut cmd = None;
    let mut count = None;
    for extra in &f[3..] {
        if let Ok(n) = extra.parse::<u64>() {
            count = Some(n);
        } else {
            cmd = Some(extra.trim_start_matches("cmd=").to_string());
        }
    }
    Some(Rule {
        tool: f[0].into(),
        sub: f[1].into(),
        vmid: f[2].into(),
        cmd,
        count,
    })
}

fn format_rule(r: &Rule) -> String {
    let mut s = format!("{} {} {}", r.tool, r.sub, r.vmid);
    if let Some(c) = &r.cmd {
        s.push(' ');
        s.push_str(c);
    }
    if let Some(n) = r.count {
        s.push_str(&format!(" {n}"));
    }
    s
}

/// Check the fault rules for this call; consumes one count of the first matching rule.
/// Call with the host lock held. Returns true if the call must fail.
pub fn check(host: &Host, tool: &str, sub: &str, vmid: Option<&str>, cmd: Option<&str>) -> bool {
    let p = host.sim_etc().join("faults");
    let Ok(text) = fs::read_to_string(&p) else {
        return false;
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut hit = false;
    for line in lines.iter_mut() {
        let Some(mut r) = parse_line(line) else {
            continue;
        };
        if r.tool != tool || r.sub != sub {
            continue;
        }
        if r.vmid != "*" && Some(r.vmid.as_str()) != vmid {
            continue;
        }
        if let Some(c) = &r.cmd {
            let base = cmd.map(|c| c.rsplit('/').next().unwrap_or(c));
            if Some(c.as_str()) != base {
                continue;
            }
        }
        if r.count == Some(0) {
            continue;
        }
        hit = true;
        if let Some(n) = r.count {
            r.count = Some(n - 1);
            *line = format_rule(&r);
            let mut out = lines.join("\n");
            out.push('\n');
            if let Err(e) = write_atomic(&p, out.as_bytes()) {
                eprintln!("pve-sim: cannot update {}: {e}", p.display());
            }
        }
        break;
    }
    hit
}
