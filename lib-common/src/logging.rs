//! The shared log: every program appends lines
//! `YYYY-mm-dd HH:MM:SS [LEVEL] <program>: [CTID] message` to `PHOENIX_LOG_FILE`
//! (default HOST_ROOT/var/log/phoenix_hypervisor.log). Warnings and errors are also shown on
//! stderr as `warning: ...` / `error: ...`; progress for people is printed by the callers on
//! stdout, not through here.
//!
//! Messages about a container start with `[CTID] ` (use [`ct`] to build that prefix).
//! Level: `PHOENIX_LOG_LEVEL` (`error`, `warn`, `info`, `debug`, `trace`), default `info`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    program: String,
    file: Mutex<Option<File>>,
    stderr: bool,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // `log::max_level` so a run can raise the level after start (behavior.debug_mode).
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(
            &timestamp_now(),
            record.level(),
            &self.program,
            &record.args().to_string(),
        );
        if let Ok(mut guard) = self.file.lock()
            && let Some(file) = guard.as_mut()
        {
            // One write per line: O_APPEND keeps lines from concurrent steps whole.
            let _ = file.write_all(line.as_bytes());
        }
        if self.stderr && record.level() <= Level::Warn {
            let label = if record.level() == Level::Error {
                "error"
            } else {
                "warning"
            };
            eprintln!("{label}: {}", record.args());
        }
    }

    fn flush(&self) {
        if let Ok(mut guard) = self.file.lock()
            && let Some(file) = guard.as_mut()
        {
            let _ = file.flush();
        }
    }
}

/// One log line, newline-terminated. Embedded newlines are kept on one line (`\n` -> ` | `) so
/// every line of the file starts with a timestamp.
pub fn format_line(timestamp: &str, level: Level, program: &str, message: &str) -> String {
    let message = message.trim_end().replace('\n', " | ");
    format!("{timestamp} [{level}] {program}: {message}\n")
}

/// `[CTID] ` — the prefix of every message about one container.
pub fn ct(ctid: u32) -> String {
    format!("[{ctid}]")
}

fn level_from_env() -> LevelFilter {
    match std::env::var(crate::env::LOG_LEVEL)
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "error" => LevelFilter::Error,
        "warn" | "warning" => LevelFilter::Warn,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        "off" => LevelFilter::Off,
        _ => LevelFilter::Info,
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Install the logger for `program` (its installed name without `.sh`, e.g.
/// `phoenix_hypervisor_create_lxc`). Returns the log file path. A log file that cannot be
/// opened is reported once on stderr; the program goes on without it.
pub fn init(program: &str) -> PathBuf {
    init_with(program, &crate::paths::log_file(), true)
}

/// As [`init`], with an explicit file and whether warnings and errors echo on stderr.
pub fn init_with(program: &str, path: &Path, stderr: bool) -> PathBuf {
    let file = match open_log(path) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!(
                "warning: cannot open log file `{}`: {e}; logging to stderr only",
                path.display()
            );
            None
        }
    };
    let level = level_from_env();
    let logger = Logger {
        program: program.to_string(),
        file: Mutex::new(file),
        stderr,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
    path.to_path_buf()
}

/// Local time as `YYYY-mm-dd HH:MM:SS`.
pub fn timestamp_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_local(secs)
}

/// `secs` since the epoch as local `YYYY-mm-dd HH:MM:SS` (UTC if the zone cannot be read).
#[allow(unsafe_code)]
pub fn format_local(secs: i64) -> String {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which we own; `t` outlives the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return format_utc(secs);
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// `secs` since the epoch as UTC `YYYY-mm-dd HH:MM:SS` (civil-from-days, proleptic Gregorian).
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_matches_the_contract() {
        let line = format_line(
            "2026-11-25 16:46:53",
            Level::Warn,
            "phoenix_hypervisor_clone_lxc",
            "[901] a\nb\n",
        );
        assert_eq!(
            line,
            "2026-11-25 16:46:53 [WARN] phoenix_hypervisor_clone_lxc: [901] a | b\n"
        );
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
    }

    #[test]
    fn timestamp_shape() {
        let ts = timestamp_now();
        assert_eq!(ts.len(), 19, "{ts}");
        assert_eq!(&ts[4..5], "-");
        assert_eq!(&ts[10..11], " ");
    }
}
