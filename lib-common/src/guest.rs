//! Commands inside a container, over [`PctClient`]: run an argv, run a script with values as
//! positional parameters, write and read files, and the small checks steps use for
//! idempotency (package installed, service enabled/active, file exists).
//!
//! Values never become shell code: argv elements are passed as they are, scripts get their
//! values as `$1`, `$2`, ... File contents (which may be secrets) never appear on a command line:
//! they are written to a 0600 temporary file on the host and `pct push`ed.
//!
//! Mutating calls ([`Guest::run`], [`Guest::run_script`], [`Guest::write_file`]) are only printed
//! in dry-run mode; the checks and reads always run. A failed command is an
//! [`ErrorKind::Guest`](crate::error::ErrorKind::Guest) error naming the CTID, the command and
//! the tail of its stderr.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use regex::Regex;

use crate::config::Ctid;
use crate::error::{Error, Result};
use crate::pct::{ExecOutput, PctClient, display_argv};

/// How much of a failed command's stderr an error message carries.
const TAIL: usize = 1500;

/// Debian policy for package names (so a name can never be read as an option).
pub static PACKAGE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9][a-z0-9+.-]+$").expect("valid regex"));

/// What a command prints when the network is not up (yet): no name resolution, no route, no
/// connection. apt (`Temporary failure resolving 'archive.ubuntu.com'`, `Could not connect
/// to`), curl (`Could not resolve host`), pip (`Failed to establish a new connection: [Errno
/// -3] Temporary failure in name resolution`), docker pull (`dial tcp: lookup
/// registry-1.docker.io ...: no such host`, `i/o timeout`).
pub const NETWORK_DOWN: &[&str] = &[
    "temporary failure resolving",
    "temporary failure in name resolution",
    "could not resolve host",
    "could not resolve '",
    "name or service not known",
    "no such host",
    "network is unreachable",
    "could not connect to",
    "failed to establish a new connection",
    "dial tcp: lookup",
    "i/o timeout",
    "tls handshake timeout",
    "connection timed out",
];

/// Whether `out` says the network is down: it failed with one of [`NETWORK_DOWN`] (or curl's
/// exit 6 "could not resolve host").
pub fn network_down(out: &ExecOutput) -> bool {
    if out.success() {
        return false;
    }
    if out.code == 6 && out.stderr.to_ascii_lowercase().contains("curl") {
        return true;
    }
    mentions_network_down(out)
}

fn mentions_network_down(out: &ExecOutput) -> bool {
    let all = format!("{}\n{}", out.stdout, out.stderr).to_ascii_lowercase();
    // apt reached some sources (`Hit:`/`Get:` lines): the network is up and only the failing
    // source is wrong (a typo, a mirror that is gone); waiting will not help.
    let reached_some = out
        .stdout
        .lines()
        .any(|l| l.starts_with("Hit:") || l.starts_with("Get:"));
    !reached_some && NETWORK_DOWN.iter().any(|p| all.contains(p))
}

/// Prints the file `$1`, or exits [`READ_OPT_ABSENT`] when it does not exist: a test and a
/// read in one `pct exec`.
pub const READ_OPT_SCRIPT: &str = r#"[ -e "$1" ] || exit 100
exec cat -- "$1""#;

/// The exit code of [`READ_OPT_SCRIPT`] for a file that does not exist.
pub const READ_OPT_ABSENT: i32 = 100;

/// First pause before retrying a command the network failed; doubled each time up to
/// [`NETWORK_MAX_PAUSE`].
pub const NETWORK_FIRST_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between two retries of a command the network failed.
pub const NETWORK_MAX_PAUSE: Duration = Duration::from_secs(8);

/// One container, as seen from inside.
#[derive(Debug, Clone, Copy)]
pub struct Guest<'a> {
    pct: &'a PctClient,
    ctid: Ctid,
    /// How long a command that fails because the network is down is retried.
    network_timeout: Duration,
}

impl<'a> Guest<'a> {
    /// Container `ctid`, reached through `pct`.
    pub fn new(pct: &'a PctClient, ctid: Ctid) -> Guest<'a> {
        Guest {
            pct,
            ctid,
            network_timeout: Duration::from_secs(crate::config::DEFAULT_READY_TIMEOUT_S),
        }
    }

    /// Retry commands the network fails for up to `timeout` (steps pass
    /// `behavior.ready_timeout_s`: a network still coming up after a start is waited for as
    /// long as the start itself).
    pub fn with_network_timeout(mut self, timeout: Duration) -> Guest<'a> {
        self.network_timeout = timeout;
        self
    }

    /// The container.
    pub fn ctid(&self) -> Ctid {
        self.ctid
    }

    /// The Proxmox client it goes through.
    pub fn pct(&self) -> &'a PctClient {
        self.pct
    }

    fn check(&self, what: &str, out: ExecOutput) -> Result<ExecOutput> {
        if out.success() {
            return Ok(out);
        }
        Err(Error::guest(format!(
            "CT {}: `{what}` failed inside the container (exit {}): {}",
            self.ctid,
            out.code,
            out.tail(TAIL)
        ))
        .into())
    }

    /// Run `argv` (may change the guest); a non-zero exit is a Guest error. A failure that
    /// says the network is down (apt, curl, pip, `docker pull`/`run`: [`NETWORK_DOWN`]) is
    /// retried with back-off for up to the network timeout.
    pub fn run(&self, argv: &[&str]) -> Result<ExecOutput> {
        self.with_network_retry(
            &display_argv(argv),
            || self.pct.exec(self.ctid, argv),
            ExecOutput::success,
        )
    }

    /// Run a bash script with `args` as `$1`, `$2`, ... (may change the guest); a non-zero exit
    /// is a Guest error, retried as [`Guest::run`] when the network is down. `label` names the
    /// script in messages (e.g. `install nvidia runfile`).
    pub fn run_script(&self, label: &str, script: &str, args: &[&str]) -> Result<ExecOutput> {
        self.with_network_retry(
            label,
            || self.pct.exec_script(self.ctid, script, args),
            ExecOutput::success,
        )
    }

    /// Run `once` until `ok` says it succeeded. A result that says the network is down is
    /// retried after a pause (from [`NETWORK_FIRST_PAUSE`], doubling, at most
    /// [`NETWORK_MAX_PAUSE`]) until the network timeout has passed; then a Guest error with
    /// the last error. Any other failure is a Guest error at once.
    fn with_network_retry(
        &self,
        what: &str,
        once: impl Fn() -> Result<ExecOutput>,
        ok: impl Fn(&ExecOutput) -> bool,
    ) -> Result<ExecOutput> {
        let start = Instant::now();
        let mut pause = NETWORK_FIRST_PAUSE;
        let mut attempt = 1u32;
        loop {
            let out = once()?;
            if ok(&out) {
                if attempt > 1 {
                    log::info!(
                        "[{}] `{what}` succeeded at attempt {attempt}: the network is up",
                        self.ctid
                    );
                }
                return Ok(out);
            }
            let down = !out.success() && network_down(&out)
                || out.success() && mentions_network_down(&out);
            if !down || self.pct.dry_run() {
                return self.check(what, out);
            }
            let left = self.network_timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::guest(format!(
                    "CT {}: `{what}` failed inside the container: the network stayed down ({attempt} attempts over {} s; behavior.ready_timeout_s bounds the wait); last error (exit {}): {}\nhint: check the container's network (`pct exec {} -- cat /etc/resolv.conf`, its gateway and bridge)",
                    self.ctid,
                    crate::step::fmt_secs(start.elapsed()),
                    out.code,
                    out.tail(TAIL),
                    self.ctid
                ))
                .into());
            }
            let wait = pause.min(left);
            log::warn!(
                "[{}] `{what}`: the network is not up yet (attempt {attempt}: {}); retrying in {} s",
                self.ctid,
                out.tail(200),
                crate::step::fmt_secs(wait)
            );
            std::thread::sleep(wait);
            pause = (pause * 2).min(NETWORK_MAX_PAUSE);
            attempt += 1;
        }
    }

    /// Run a read-only `argv` (also in dry-run mode) and return its output whatever its exit.
    pub fn query(&self, argv: &[&str]) -> Result<ExecOutput> {
        self.pct.exec_query(self.ctid, argv)
    }

    /// Run a read-only script (also in dry-run mode) and return its output whatever its exit.
    pub fn query_script(&self, script: &str, args: &[&str]) -> Result<ExecOutput> {
        self.pct.exec_script_query(self.ctid, script, args)
    }

    /// Run a read-only `argv` that must succeed; returns its stdout.
    pub fn query_ok(&self, argv: &[&str]) -> Result<String> {
        let out = self.query(argv)?;
        Ok(self.check(&display_argv(argv), out)?.stdout)
    }

    /// A file's content (`cat`); a Guest error when it cannot be read.
    pub fn read_file(&self, path: &str) -> Result<String> {
        self.query_ok(&["cat", "--", path])
    }

    /// A file's content, or `None` when it does not exist: one call ([`READ_OPT_SCRIPT`]).
    pub fn read_file_opt(&self, path: &str) -> Result<Option<String>> {
        let out = self.query_script(READ_OPT_SCRIPT, &[path])?;
        if out.code == READ_OPT_ABSENT {
            return Ok(None);
        }
        Ok(Some(self.check(&format!("cat -- {path}"), out)?.stdout))
    }

    /// `test -e PATH`.
    pub fn file_exists(&self, path: &str) -> Result<bool> {
        Ok(self.query(&["test", "-e", path])?.success())
    }

    /// `dpkg -s PKG` says the package is installed.
    pub fn package_installed(&self, package: &str) -> Result<bool> {
        let out = self.query(&["dpkg", "-s", package])?;
        Ok(out.success()
            && out
                .stdout
                .lines()
                .any(|l| l.trim() == "Status: install ok installed"))
    }

    /// `systemctl is-active UNIT` prints `active`.
    pub fn service_active(&self, unit: &str) -> Result<bool> {
        let out = self.query(&["systemctl", "is-active", unit])?;
        Ok(out.success() && out.stdout.trim() == "active")
    }

    /// Write `content` to `dest` inside the container with `perms` (octal, e.g. `0644`): the
    /// content goes to a 0600 temporary file under the host's cache directory, is `pct push`ed,
    /// and the temporary file is removed whatever happens. In dry-run mode only says so.
    pub fn write_file(&self, dest: &str, content: &[u8], perms: &str) -> Result<()> {
        if self.pct.dry_run() {
            println!(
                "would write {} bytes to `{dest}` in CT {} (mode {perms})",
                content.len(),
                self.ctid
            );
            return Ok(());
        }
        let tmp = HostTempFile::create(content)?;
        log::info!(
            "[{}] write `{dest}` ({} bytes, mode {perms})",
            self.ctid,
            content.len()
        );
        self.pct.push(self.ctid, &tmp.host_abs, dest, Some(perms))
    }

    /// As [`Guest::run_script`] (may change the guest; printed only in dry-run mode; retried
    /// while the network is down), but a failure that is not the network's is returned as
    /// output, for a caller that tells its failures apart itself (which part of a batch
    /// script failed, a timeout inside). A network that stays down is still a Guest error.
    pub fn run_script_unchecked(
        &self,
        label: &str,
        script: &str,
        args: &[&str],
    ) -> Result<ExecOutput> {
        self.with_network_retry(
            label,
            || self.pct.exec_script(self.ctid, script, args),
            |out| out.success() || !network_down(out),
        )
    }
}

/// A 0600 file under `HOST_ROOT/var/cache/phoenix_hypervisor/push/`, removed on drop. Its
/// host-absolute path (without the host root) is what `pct push` is given.
struct HostTempFile {
    host_abs: String,
    real: std::path::PathBuf,
}

static TEMP_SEQ: AtomicU32 = AtomicU32::new(0);

impl HostTempFile {
    fn create(content: &[u8]) -> Result<HostTempFile> {
        use std::os::unix::fs::DirBuilderExt;
        let dir_abs = format!("{}/push", crate::paths::CACHE_DIR);
        let dir = crate::paths::host_path(&dir_abs);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                Error::new(
                    crate::error::ErrorKind::Other,
                    format!("cannot create `{}`: {e}", dir.display()),
                )
            })?;
        let name = format!(
            "push-{}-{}",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let real = dir.join(&name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&real)
            .map_err(|e| {
                Error::new(
                    crate::error::ErrorKind::Other,
                    format!("cannot create `{}`: {e}", real.display()),
                )
            })?;
        let tmp = HostTempFile {
            host_abs: format!("{dir_abs}/{name}"),
            real,
        };
        f.write_all(content)
            .and_then(|()| f.sync_all())
            .map_err(|e| {
                Error::new(
                    crate::error::ErrorKind::Other,
                    format!("cannot write `{}`: {e}", tmp.real.display()),
                )
            })?;
        Ok(tmp)
    }
}

impl Drop for HostTempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.real);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fake_pct(dir: &Path, body: &str) -> PctClient {
        let p = crate::pct::test_support::fake_tool(dir, body);
        PctClient::with_tools(false, &p, &p, &p)
    }

    #[test]
    fn failed_command_is_a_guest_error_with_stderr_tail() {
        let d = tempfile::tempdir().unwrap();
        let pct = fake_pct(
            d.path(),
            "echo 'E: Unable to locate package nope' >&2; exit 100",
        );
        let g = Guest::new(&pct, Ctid(950));
        let err = g.run(&["apt-get", "install", "-y", "nope"]).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 5);
        let msg = err.to_string();
        assert!(msg.contains("CT 950"), "{msg}");
        assert!(msg.contains("apt-get install -y nope"), "{msg}");
        assert!(msg.contains("Unable to locate package"), "{msg}");
    }

    #[test]
    fn network_failures_are_retried_until_the_network_is_up() {
        let d = tempfile::tempdir().unwrap();
        // Fails twice the way apt does without DNS, then works.
        let count = d.path().join("count");
        let pct = fake_pct(
            d.path(),
            &format!(
                "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{c}'\n[ $n -le 2 ] && {{ echo \"E: Failed to fetch http://archive.ubuntu.com/x  Temporary failure resolving 'archive.ubuntu.com'\" >&2; exit 100; }}\nexit 0",
                c = count.display()
            ),
        );
        let g = Guest::new(&pct, Ctid(950)).with_network_timeout(Duration::from_secs(30));
        g.run(&["apt-get", "install", "-y", "curl"]).unwrap();
        assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "3");

        // Other failures are not retried.
        let d = tempfile::tempdir().unwrap();
        let count = d.path().join("count");
        let pct = fake_pct(
            d.path(),
            &format!(
                "n=$(cat '{c}' 2>/dev/null || echo 0); echo $((n+1)) > '{c}'\necho 'E: Unable to locate package nope' >&2; exit 100",
                c = count.display()
            ),
        );
        let g = Guest::new(&pct, Ctid(950)).with_network_timeout(Duration::from_secs(30));
        let err = g.run(&["apt-get", "install", "nope"]).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 5);
        assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "1");
    }

    #[test]
    fn a_network_that_stays_down_reports_the_last_error() {
        let d = tempfile::tempdir().unwrap();
        let pct = fake_pct(
            d.path(),
            "echo 'curl: (6) Could not resolve host: download.docker.com' >&2; exit 6",
        );
        let g = Guest::new(&pct, Ctid(950)).with_network_timeout(Duration::ZERO);
        let err = g
            .run_script("download", "curl -fsSL \"$1\"", &["https://x/"])
            .unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 5);
        let msg = err.to_string();
        assert!(msg.contains("network stayed down"), "{msg}");
        assert!(msg.contains("Could not resolve host"), "{msg}");
    }

    #[test]
    fn checks_read_exit_codes_and_output() {
        let d = tempfile::tempdir().unwrap();
        let pct = fake_pct(
            d.path(),
            r#"shift 3; case "$1 $2" in
  "dpkg -s") [ "$3" = docker-ce ] && printf 'Package: docker-ce\nStatus: install ok installed\n' || exit 1;;
  "systemctl is-enabled") echo disabled; exit 1;;
  "systemctl is-active") echo active;;
  "test -e") [ "$3" = /etc/hosts ];;
esac"#,
        );
        let g = Guest::new(&pct, Ctid(950));
        assert!(g.package_installed("docker-ce").unwrap());
        assert!(!g.package_installed("nvtop").unwrap());
        assert!(g.service_active("docker").unwrap());
        assert!(g.file_exists("/etc/hosts").unwrap());
        assert!(!g.file_exists("/nope").unwrap());
    }
}
