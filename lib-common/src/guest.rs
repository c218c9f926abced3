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

use regex::Regex;

use crate::config::Ctid;
use crate::error::{Error, Result};
use crate::pct::{ExecOutput, PctClient, display_argv};

/// How much of a failed command's stderr an error message carries.
const TAIL: usize = 1500;

/// Debian policy for package names (so a name can never be read as an option).
pub static PACKAGE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9][a-z0-9+.-]+$").expect("valid regex"));

/// One container, as seen from inside.
#[derive(Debug, Clone, Copy)]
pub struct Guest<'a> {
    pct: &'a PctClient,
    ctid: Ctid,
}

impl<'a> Guest<'a> {
    /// Container `ctid`, reached through `pct`.
    pub fn new(pct: &'a PctClient, ctid: Ctid) -> Guest<'a> {
        Guest { pct, ctid }
    }

    /// The container.
    pub fn ctid(&self) -> Ctid {
        self.ctid
    }

    /// The Proxmox client it goes through.
    pub fn pct(&self) -> &'a PctClient {
        self.pct
    }

    /// Those of `packages` that are not installed, in their order (one `dpkg-query` call).
    pub fn missing_packages(&self, packages: &[&str]) -> Result<Vec<String>> {
        if let Some(bad) = packages.iter().find(|p| !PACKAGE_NAME.is_match(p)) {
            return Err(Error::config(format!(
                "CT {}: `{bad}` is not a valid Debian package name",
                self.ctid
            ))
            .into());
        }
        if packages.is_empty() {
            return Ok(Vec::new());
        }
        let mut argv = vec![
            "dpkg-query",
            "-W",
            "-f",
            "${Package}\t${db:Status-Status}\n",
        ];
        argv.extend_from_slice(packages);
        // Exit 1 when some are unknown to dpkg: the installed ones are still listed.
        let out = self.query(&argv)?;
        if out.code != 0 && out.code != 1 {
            return Err(Error::guest(format!(
                "CT {}: `dpkg-query -W` failed (exit {}): {}",
                self.ctid,
                out.code,
                out.tail(TAIL)
            ))
            .into());
        }
        let installed: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(_, status)| status.trim() == "installed")
            .map(|(name, _)| name.trim())
            .collect();
        Ok(packages
            .iter()
            .filter(|p| !installed.contains(p))
            .map(|p| p.to_string())
            .collect())
    }

    /// `apt-get update`.
    pub fn apt_update(&self) -> Result<()> {
        self.run(&["apt-get", "update", "-q"]).map(drop)
    }

    /// `apt-get install -y PACKAGES` with no questions (debconf non-interactive) and changed
    /// config files kept.
    pub fn apt_install(&self, packages: &[&str]) -> Result<()> {
        let mut argv = vec![
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-q",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
        ];
        argv.extend_from_slice(packages);
        self.run(&argv).map(drop)
    }

    /// Install those of `packages` that are missing (after an `apt-get update`); nothing when
    /// all are installed. Returns whether it installed anything.
    pub fn ensure_packages(&self, packages: &[&str]) -> Result<bool> {
        let missing = self.missing_packages(packages)?;
        if missing.is_empty() {
            return Ok(false);
        }
        self.apt_update()?;
        self.apt_install(&missing.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(true)
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

    /// Run `argv` (may change the guest); a non-zero exit is a Guest error.
    pub fn run(&self, argv: &[&str]) -> Result<ExecOutput> {
        let out = self.pct.exec(self.ctid, argv)?;
        self.check(&display_argv(argv), out)
    }

    /// Run a bash script with `args` as `$1`, `$2`, ... (may change the guest); a non-zero exit
    /// is a Guest error. `label` names the script in messages (e.g. `install nvidia runfile`).
    pub fn run_script(&self, label: &str, script: &str, args: &[&str]) -> Result<ExecOutput> {
        let out = self.pct.exec_script(self.ctid, script, args)?;
        self.check(label, out)
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

    /// A file's content, or `None` when it does not exist.
    pub fn read_file_opt(&self, path: &str) -> Result<Option<String>> {
        if !self.file_exists(path)? {
            return Ok(None);
        }
        self.read_file(path).map(Some)
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

    /// `systemctl is-enabled UNIT` prints `enabled`.
    pub fn service_enabled(&self, unit: &str) -> Result<bool> {
        let out = self.query(&["systemctl", "is-enabled", unit])?;
        Ok(out.success() && out.stdout.trim() == "enabled")
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
        assert!(!g.service_enabled("docker").unwrap());
        assert!(g.service_active("docker").unwrap());
        assert!(g.file_exists("/etc/hosts").unwrap());
        assert!(!g.file_exists("/nope").unwrap());
    }
}
