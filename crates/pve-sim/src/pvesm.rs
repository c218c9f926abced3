//! `pvesm status` and `pvesm list <storage>` over the same state the `pct` commands use.

use crate::host::{Host, now_ms};
use crate::storage::{self, StorageType};
use crate::{faults, journal};

/// Simulated capacity of every storage, in KiB (1 TiB).
const TOTAL_KIB: u64 = 1 << 30;

pub fn main(argv: Vec<String>) -> i32 {
    let host = match Host::from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let start = now_ms();
    // Every invocation first pays the Perl CLI's start-up (`call` latency).
    crate::latency::sleep(&host, "call");
    let mut jargv = vec!["pvesm".to_string()];
    jargv.extend(argv.iter().skip(1).cloned());
    let sub = argv.get(1).cloned().unwrap_or_default();
    let hit = host
        .lock()
        .map(|_g| faults::check(&host, "pvesm", &sub, argv.get(2).map(String::as_str), None))
        .unwrap_or(false);
    let code = if hit {
        eprintln!("simulated fault: {}", jargv.join(" "));
        255
    } else {
        run(&host, &sub, &argv[argv.len().min(2)..])
    };
    journal::append(&host, &jargv, code, false, start, now_ms());
    code
}

fn run(host: &Host, sub: &str, args: &[String]) -> i32 {
    let storages = match storage::read_all(host) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 255;
        }
    };
    match sub {
        "status" => {
            let mut filter: Option<&str> = None;
            let mut content: Option<&str> = None;
            let mut enabled = false;
            let mut i = 0;
            while i < args.len() {
                match args[i].trim_start_matches('-') {
                    "storage" if i + 1 < args.len() => {
                        filter = Some(&args[i + 1]);
                        i += 1;
                    }
                    "content" if i + 1 < args.len() => {
                        content = Some(&args[i + 1]);
                        i += 1;
                    }
                    "enabled" => {
                        enabled = true;
                        if let Some(v) = args.get(i + 1)
                            && !v.starts_with('-')
                        {
                            enabled = crate::options::parse_boolean(v).unwrap_or(true);
                            i += 1;
                        }
                    }
                    "target" | "format" if i + 1 < args.len() => i += 1,
                    other => {
                        eprintln!(
                            "Unknown option: {other}\n400 unable to parse option\npvesm status [OPTIONS]"
                        );
                        return 255;
                    }
                }
                i += 1;
            }
            let mut list: Vec<&storage::Storage> = storages
                .iter()
                .filter(|s| filter.is_none_or(|f| f == s.id))
                .filter(|s| content.is_none_or(|c| s.has_content(c)))
                .filter(|s| !enabled || !s.disabled)
                .collect();
            if let Some(f) = filter
                && list.is_empty()
            {
                eprintln!("storage '{f}' does not exist");
                return 255;
            }
            list.sort_by(|a, b| a.id.cmp(&b.id));
            let w = list.iter().map(|s| s.id.len()).max().unwrap_or(4).max(4) + 1;
            let v9 = host.info.major() >= 9;
            let (t, u, a) = if v9 {
                ("Total (KiB)", "Used (KiB)", "Available (KiB)")
            } else {
                ("Total", "Used", "Available")
            };
            println!(
                "{:<w$} {:>10} {:>10} {:>15} {:>15} {:>15} {:>8}",
                "Name", "Type", "Status", t, u, a, "%"
            );
            for s in list {
                if s.disabled {
                    println!(
                        "{:<w$} {:>10} {:>10} {:>15} {:>15} {:>15} {:>8}",
                        s.id,
                        s.ty.name(),
                        "disabled",
                        0,
                        0,
                        0,
                        "N/A"
                    );
                    continue;
                }
                let used: u64 = storage::list_volumes(host, s)
                    .iter()
                    .map(|(_, m)| m.size / 1024)
                    .sum();
                let used = used.min(TOTAL_KIB);
                let pct = used as f64 * 100.0 / TOTAL_KIB as f64;
                println!(
                    "{:<w$} {:>10} {:>10} {:>15} {:>15} {:>15} {:>7.2}%",
                    s.id,
                    s.ty.name(),
                    "active",
                    TOTAL_KIB,
                    used,
                    TOTAL_KIB - used,
                    pct
                );
            }
            0
        }
        "list" => {
            let Some(id) = args.first() else {
                eprintln!("400 not enough arguments\npvesm list <storage> [OPTIONS]");
                return 255;
            };
            let Some(st) = storages.iter().find(|s| &s.id == id) else {
                eprintln!("storage '{id}' does not exist");
                return 255;
            };
            let vols = storage::list_volumes(host, st);
            let rows: Vec<(String, &str, &str, u64, u32)> = vols
                .iter()
                .map(|(name, m)| {
                    let fmt = match st.ty {
                        StorageType::ZfsPool => "subvol",
                        _ => "raw",
                    };
                    (format!("{}:{name}", st.id), fmt, "rootdir", m.size, m.vmid)
                })
                .collect();
            let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5) + 1;
            println!(
                "{:<w$} {:<7} {:<9} {:>10} VMID",
                "Volid", "Format", "Type", "Size"
            );
            for (v, f, t, s, id) in rows {
                println!("{v:<w$} {f:<7} {t:<9} {s:>10} {id}");
            }
            0
        }
        "" => {
            eprintln!("USAGE: pvesm <COMMAND> [ARGS] [OPTIONS]");
            255
        }
        other => {
            eprintln!(
                "ERROR: unknown command 'pvesm {other}'\nUSAGE: pvesm <COMMAND> [ARGS] [OPTIONS]"
            );
            255
        }
    }
}
