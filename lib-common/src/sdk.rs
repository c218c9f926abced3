//! The setup-plugin SDK: what a `phoenix_hypervisor_setup_<CTID>` program is written against.
//!
//! [`run`] is the whole frame of a plugin: it parses the command line (`CTID`, `--dry-run`,
//! `--help`, `--version`; a CTID other than the plugin's own is a usage error, exit 2), logs to
//! the shared log as `phoenix_hypervisor_setup_<CTID>`, loads and validates both configuration
//! files, finds the CT's block, makes sure the CT exists (exit 3 otherwise) and is running, calls
//! the plugin's body with a [`Ct`] handle, and turns any error into the step exit code
//! (`architecture.md`, "Step contracts") through [`crate::error::exit_code`].
//!
//! [`Ct`] is the plugin's view of its container:
//! - the typed guest API over `pct exec` / `pct push` ([`Ct::run`], [`Ct::run_script`] with
//!   values as positional parameters, [`Ct::query`], [`Ct::write_file`], [`Ct::read_file_opt`],
//!   [`Ct::package_installed`], [`Ct::service_enabled`], [`Ct::service_active`],
//!   [`Ct::file_exists`]);
//! - idempotency helpers that look first and change only what differs: [`Ct::ensure_packages`]
//!   (installs only the missing ones with `DEBIAN_FRONTEND=noninteractive apt-get install -y`),
//!   [`Ct::ensure_upgraded`], [`Ct::ensure_dir`], [`Ct::ensure_file`] (writes only when the content
//!   or mode differs, through a 0600 host temp file and `pct push`, never on a command line),
//!   [`Ct::ensure_locale`], [`Ct::ensure_service`];
//! - checks of services inside: [`Ct::http_get`], [`Ct::wait_http`];
//! - for templates, [`Ct::finalize_template`]: skipped when the snapshot
//!   `template_snapshot_name` exists; otherwise `pct shutdown --timeout` (falling back to
//!   `pct stop`), `pct snapshot CTID <name>`, `pct start`, wait until ready.
//!
//! In dry-run mode every read-only check still runs and every change is printed
//! (`would run: pct exec ...`) instead of made. Values from the JSON never become shell code:
//! argv elements are passed as they are and scripts receive values as `$1`, `$2`, ...
//!
//! A plugin is a few lines:
//! ```no_run
//! use lib_common::sdk;
//!
//! fn main() -> std::process::ExitCode {
//!     sdk::run(900, "Base template: tools, locale, snapshot", |ct| {
//!         ct.ensure_packages(&["curl", "jq", "locales"])?;
//!         ct.ensure_locale("en_US.UTF-8")?;
//!         let motd = format!("{} (CT {})\n", ct.spec().name, ct.ctid());
//!         ct.ensure_file("/etc/motd", motd.as_bytes(), 0o644)?;
//!         ct.finalize_template()?;
//!         Ok(())
//!     })
//! }
//! ```
//! Build it as a binary named `setup-<CTID>` (crate `setup-plugins`, `src/bin/setup-<CTID>.rs`);
//! install places it as `PREFIX/bin/phoenix_hypervisor_setup_<CTID>` (+ `.sh` symlink), where the
//! orchestrator finds it.

use std::cell::Cell;
use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches};
use regex::Regex;

use crate::config::{Configs, ContainerSpec, Ctid};
use crate::error::{Error, ErrorKind, Result};
use crate::guest::Guest;
use crate::pct::{ExecOutput, PctClient};
use crate::step::{CtidArgs, StepContext, next_interval, wait_ready};

/// Where [`Ct::ensure_upgraded`] records that the template's packages were upgraded.
pub const UPGRADE_STAMP: &str = "/var/lib/phoenix_hypervisor/apt-upgraded";

/// `en_US.UTF-8`, `C.UTF-8`.
static LOCALE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([a-z]{2,3}_[A-Z]{2}|C)\.UTF-8$").expect("valid regex"));
/// systemd unit names we manage.
static UNIT_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9][A-Za-z0-9:_.@-]*(\.(service|socket|timer|target|path|mount))?$")
        .expect("valid regex")
});

/// Run a setup plugin for CT `ctid` with the process's command line. `about` is the one-line
/// description `--help` shows. Returns the exit code for `main`.
pub fn run<F>(ctid: u32, about: &str, body: F) -> ExitCode
where
    F: FnOnce(&Ct) -> Result<()>,
{
    run_from(ctid, about, std::env::args_os(), body)
}

/// As [`run`] with an explicit command line (`args[0]` is the program name).
pub fn run_from<I, F>(ctid: u32, about: &str, args: I, body: F) -> ExitCode
where
    I: IntoIterator<Item = OsString>,
    F: FnOnce(&Ct) -> Result<()>,
{
    let program = crate::paths::setup_step_name(ctid);
    let args = match parse_args(ctid, &program, about, args) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    crate::logging::init(&program);
    let own = Ctid(ctid);
    if args.ctid != own {
        return crate::step::report_error(
            &Error::config(format!(
                "`{program}` is the setup plugin of CT {own}; it was given CT {}\nhint: run `phoenix_hypervisor_setup_{}` for CT {}, or pass {own}",
                args.ctid, args.ctid, args.ctid
            ))
            .into(),
        );
    }
    crate::step::run_step(&program, &args.common, Some(own), |ctx| {
        let ct = Ct::new(ctx, own)?;
        ct.start_if_stopped()?;
        body(&ct)?;
        ct.summary();
        Ok(())
    })
}

/// Parse `PROGRAM [--dry-run] CTID` under the installed name (help and errors show it).
fn parse_args<I>(ctid: u32, program: &str, about: &str, args: I) -> clap::error::Result<CtidArgs>
where
    I: IntoIterator<Item = OsString>,
{
    // clap wants 'static names; a plugin parses its command line once per process.
    let name: &'static str = Box::leak(program.to_string().into_boxed_str());
    let cmd = CtidArgs::command()
        .name(name)
        .bin_name(name)
        .about(format!("{about} (setup plugin of CT {ctid})"));
    let matches = cmd.try_get_matches_from(args)?;
    CtidArgs::from_arg_matches(&matches)
}

/// A setup plugin's handle on its container.
pub struct Ct<'a> {
    ctx: &'a StepContext,
    ctid: Ctid,
    spec: &'a ContainerSpec,
    guest: Guest<'a>,
    apt_updated: Cell<bool>,
    changes: Cell<u32>,
}

impl<'a> Ct<'a> {
    /// The handle for `ctid` (its block must be in the config: exit 2 otherwise).
    pub fn new(ctx: &'a StepContext, ctid: Ctid) -> Result<Ct<'a>> {
        let spec = ctx.container(ctid)?;
        Ok(Ct {
            ctx,
            ctid,
            spec,
            guest: Guest::new(&ctx.pct, ctid).with_network_timeout(ctx.ready_timeout()),
            apt_updated: Cell::new(false),
            changes: Cell::new(0),
        })
    }

    /// The plugin's container.
    pub fn ctid(&self) -> Ctid {
        self.ctid
    }

    /// The CT's block of the LXC config.
    pub fn spec(&self) -> &'a ContainerSpec {
        self.spec
    }

    /// Both configuration files (globals such as `nvidia_driver_version`, the hypervisor
    /// config's `network` and `core_paths`).
    pub fn configs(&self) -> &'a Configs {
        &self.ctx.configs
    }

    /// Print changes instead of making them.
    pub fn dry_run(&self) -> bool {
        self.ctx.dry_run
    }

    /// The Proxmox client.
    pub fn pct(&self) -> &'a PctClient {
        &self.ctx.pct
    }

    /// The guest API this handle wraps.
    pub fn guest(&self) -> &Guest<'a> {
        &self.guest
    }

    /// Seconds to wait for readiness (`behavior.ready_timeout_s`).
    pub fn ready_timeout(&self) -> Duration {
        self.ctx.ready_timeout()
    }

    /// Progress for people (stdout) and the log, prefixed `[CTID]`.
    pub fn say(&self, msg: &str) {
        self.ctx.say(Some(self.ctid), msg);
    }

    /// How many changes this run made (or, in dry-run mode, would make).
    pub fn changes(&self) -> u32 {
        self.changes.get()
    }

    fn changed(&self) {
        self.changes.set(self.changes.get() + 1);
    }

    fn start_if_stopped(&self) -> Result<()> {
        // One call when it runs (the readiness wait); status and start only when it does not.
        if crate::step::ensure_running(self.pct(), self.ctid, self.ready_timeout())? {
            self.say("was stopped; started it");
            self.changed();
        }
        Ok(())
    }

    fn summary(&self) {
        match (self.changes(), self.dry_run()) {
            (0, _) => self.say("set up; nothing to change"),
            (n, true) => self.say(&format!("dry run: {n} change(s) would be made")),
            (n, false) => self.say(&format!("set up ({n} change(s))")),
        }
    }

    // -- the guest API ---------------------------------------------------------------------------

    /// Run `argv` inside (a change: printed only in dry-run mode); non-zero exit → exit 5.
    pub fn run(&self, argv: &[&str]) -> Result<ExecOutput> {
        self.changed();
        self.guest.run(argv)
    }

    /// Run a bash script with `args` as `$1`, `$2`, ... (a change); non-zero exit → exit 5.
    pub fn run_script(&self, label: &str, script: &str, args: &[&str]) -> Result<ExecOutput> {
        self.changed();
        self.guest.run_script(label, script, args)
    }

    /// Run a read-only `argv` (also in dry-run mode); its output whatever its exit code.
    pub fn query(&self, argv: &[&str]) -> Result<ExecOutput> {
        self.guest.query(argv)
    }

    /// Run a read-only script with `args` as positional parameters (also in dry-run mode).
    pub fn query_script(&self, script: &str, args: &[&str]) -> Result<ExecOutput> {
        self.guest.query_script(script, args)
    }

    /// Run a read-only `argv` that must succeed (exit 5 otherwise); its stdout.
    pub fn query_ok(&self, argv: &[&str]) -> Result<String> {
        self.guest.query_ok(argv)
    }

    /// Write `content` to `path` with `mode` unconditionally (see [`Ct::ensure_file`]).
    pub fn write_file(&self, path: &str, content: &[u8], mode: u32) -> Result<()> {
        self.changed();
        self.guest.write_file(path, content, &format!("{mode:04o}"))
    }

    /// A file inside the container, `None` when absent.
    pub fn read_file_opt(&self, path: &str) -> Result<Option<String>> {
        self.guest.read_file_opt(path)
    }

    /// A file exists inside the container.
    pub fn file_exists(&self, path: &str) -> Result<bool> {
        self.guest.file_exists(path)
    }

    /// A Debian package is installed inside the container.
    pub fn package_installed(&self, package: &str) -> Result<bool> {
        self.guest.package_installed(package)
    }

    /// A systemd unit is enabled inside the container.
    pub fn service_enabled(&self, unit: &str) -> Result<bool> {
        self.guest.service_enabled(unit)
    }

    /// A systemd unit is active inside the container.
    pub fn service_active(&self, unit: &str) -> Result<bool> {
        self.guest.service_active(unit)
    }

    // -- idempotency helpers ---------------------------------------------------------------------

    /// The packages of `packages` that are not installed (one `dpkg-query` call).
    pub fn missing_packages(&self, packages: &[&str]) -> Result<Vec<String>> {
        self.guest.missing_packages(packages)
    }

    /// `apt-get update`, at most once per run.
    pub fn apt_update(&self) -> Result<()> {
        if self.apt_updated.get() {
            return Ok(());
        }
        self.changed();
        self.guest.apt_update()?;
        self.apt_updated.set(true);
        Ok(())
    }

    /// Install the packages of `packages` that are missing (after one `apt-get update`);
    /// nothing when all are installed. Returns whether it installed anything.
    pub fn ensure_packages(&self, packages: &[&str]) -> Result<bool> {
        let missing = self.missing_packages(packages)?;
        if missing.is_empty() {
            log::debug!("[{}] packages present: {}", self.ctid, packages.join(" "));
            return Ok(false);
        }
        self.say(&format!("installing {}", missing.join(" ")));
        self.apt_update()?;
        self.changed();
        self.guest
            .apt_install(&missing.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(true)
    }

    /// Upgrade all packages once in the CT's life (`apt-get update` + `apt-get -y upgrade`,
    /// keeping changed config files), recorded in [`UPGRADE_STAMP`] so later runs change
    /// nothing. Returns whether it upgraded.
    pub fn ensure_upgraded(&self) -> Result<bool> {
        if self.file_exists(UPGRADE_STAMP)? {
            return Ok(false);
        }
        self.say("upgrading packages");
        self.apt_update()?;
        self.run(&[
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "-y",
            "-q",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            "upgrade",
        ])?;
        self.run_script(
            "record the upgrade",
            r#"mkdir -p -- "$(dirname -- "$1")" && date -u +%Y-%m-%dT%H:%M:%SZ > "$1""#,
            &[UPGRADE_STAMP],
        )?;
        Ok(true)
    }

    /// Make sure directory `path` exists with `mode`. Returns whether it changed anything.
    pub fn ensure_dir(&self, path: &str, mode: u32) -> Result<bool> {
        check_guest_path(self.ctid, path)?;
        let out = self.query_script(
            r#"if [ -d "$1" ]; then stat -c %a -- "$1"; elif [ -e "$1" ]; then echo notdir; else echo absent; fi"#,
            &[path],
        )?;
        let want = format!("{mode:o}");
        match out.stdout.trim() {
            "notdir" => Err(Error::guest(format!(
                "CT {}: `{path}` exists and is not a directory",
                self.ctid
            ))
            .into()),
            m if m == want => Ok(false),
            "absent" => {
                let mode = format!("{mode:04o}");
                self.run(&["mkdir", "-p", "-m", &mode, "--", path])?;
                // -m applies to the last component only; make it exact anyway (umask).
                self.run(&["chmod", &mode, "--", path])?;
                Ok(true)
            }
            _ => {
                self.run(&["chmod", &format!("{mode:04o}"), "--", path])?;
                Ok(true)
            }
        }
    }

    /// Make sure file `path` has exactly `content` and `mode`: nothing is written when both
    /// match; a mode-only difference is a `chmod`; otherwise the content goes in through a 0600
    /// host temp file and `pct push --perms` (missing parent directories are created 0755).
    /// Content never appears on a command line or in the log. Returns whether it changed it.
    pub fn ensure_file(&self, path: &str, content: &[u8], mode: u32) -> Result<bool> {
        check_guest_path(self.ctid, path)?;
        let out = self.query_script(
            r#"d=$(dirname -- "$1")
if [ ! -d "$d" ]; then echo nodir; exit 0; fi
if [ ! -e "$1" ]; then echo absent; exit 0; fi
if [ -L "$1" ] || [ ! -f "$1" ]; then echo notfile; exit 0; fi
printf 'file %s\n' "$(stat -c %a -- "$1")" && cat -- "$1""#,
            &[path],
        )?;
        if !out.success() {
            return Err(Error::guest(format!(
                "CT {}: cannot read `{path}` (exit {})",
                self.ctid, out.code
            ))
            .into());
        }
        let (status, current) = out.stdout.split_once('\n').unwrap_or((&out.stdout, ""));
        let want_mode = format!("{mode:o}");
        match status.split_once(' ') {
            Some(("file", m)) if current.as_bytes() == content => {
                if m == want_mode {
                    return Ok(false);
                }
                self.run(&["chmod", &format!("{mode:04o}"), "--", path])?;
                return Ok(true);
            }
            Some(("file", _)) => {}
            _ => match status {
                "absent" => {}
                "nodir" => {
                    let parent = parent_dir(path);
                    self.run(&["mkdir", "-p", "-m", "0755", "--", parent])?;
                }
                _ => {
                    return Err(Error::guest(format!(
                        "CT {}: `{path}` exists and is not a regular file; remove it or choose another path",
                        self.ctid
                    ))
                    .into());
                }
            },
        }
        self.write_file(path, content, mode)?;
        Ok(true)
    }

    /// Generate `locale` (e.g. `en_US.UTF-8`) and make it the default `LANG`, unless both are
    /// already so. Needs the `locales` package. Returns whether it changed anything.
    pub fn ensure_locale(&self, locale: &str) -> Result<bool> {
        if !LOCALE_NAME.is_match(locale) {
            return Err(bad_input(format!(
                "CT {}: `{locale}` is not a locale name like en_US.UTF-8",
                self.ctid
            )));
        }
        let out = self.query_script(
            r#"grep -qx "$1 UTF-8" /etc/locale.gen 2>/dev/null && grep -qx "LANG=$1" /etc/default/locale 2>/dev/null"#,
            &[locale],
        )?;
        if out.success() {
            return Ok(false);
        }
        self.say(&format!("setting the locale to {locale}"));
        // Uncomment (or add) its line in /etc/locale.gen and generate what that file lists:
        // the same on Debian and Ubuntu, whatever `locale-gen ARG` does with arguments.
        self.run_script(
            "enable the locale in /etc/locale.gen",
            r#"f=/etc/locale.gen; touch "$f"
awk -v l="$1 UTF-8" '{ s = $0; sub(/^#[ \t]*/, "", s); if (s == l) { if (!d) print l; d = 1; next } print }
END { if (!d) print l }' "$f" > "$f.phoenix-new" && chmod 644 "$f.phoenix-new" && mv -f "$f.phoenix-new" "$f""#,
            &[locale],
        )?;
        self.run(&["locale-gen"])?;
        self.run(&["update-locale", &format!("LANG={locale}")])?;
        Ok(true)
    }

    /// Make sure systemd unit `unit` is enabled and active (`systemctl enable`, `systemctl
    /// start` only where needed). Returns whether it changed anything.
    pub fn ensure_service(&self, unit: &str) -> Result<bool> {
        check_unit(self.ctid, unit)?;
        let mut changed = false;
        let (enabled, active) = self.guest.service_state(unit)?;
        if !enabled {
            self.say(&format!("enabling {unit}"));
            self.run(&["systemctl", "enable", unit])?;
            changed = true;
        }
        if !active {
            self.say(&format!("starting {unit}"));
            self.run(&["systemctl", "start", unit])?;
            changed = true;
        }
        Ok(changed)
    }

    /// `systemctl daemon-reload` (after a unit file changed).
    pub fn daemon_reload(&self) -> Result<()> {
        self.run(&["systemctl", "daemon-reload"]).map(drop)
    }

    /// `systemctl restart UNIT`.
    pub fn restart_service(&self, unit: &str) -> Result<()> {
        check_unit(self.ctid, unit)?;
        self.say(&format!("restarting {unit}"));
        self.run(&["systemctl", "restart", unit]).map(drop)
    }

    // -- services inside -------------------------------------------------------------------------

    /// `curl -fsSk URL` inside the CT (read-only; `-k` because services inside use self-signed
    /// certificates): the body, or a Guest error (exit 5) with curl's message.
    pub fn http_get(&self, url: &str) -> Result<String> {
        let out = self.query(&curl_argv(self.ctid, url)?)?;
        if out.success() {
            return Ok(out.stdout);
        }
        Err(Error::guest(format!(
            "CT {}: `curl {url}` failed inside the container (exit {}): {}",
            self.ctid,
            out.code,
            out.tail(300)
        ))
        .into())
    }

    /// Poll `url` inside the CT until it answers with success, quickly at first; a Timeout
    /// error (exit 6) after `timeout`. In dry-run mode checks once and does not wait.
    pub fn wait_http(&self, url: &str, timeout: Duration) -> Result<()> {
        let argv = curl_argv(self.ctid, url)?;
        let start = Instant::now();
        let mut interval = crate::step::FIRST_POLL;
        loop {
            let out = self.query(&argv)?;
            if out.success() {
                log::debug!("[{}] {url} answered after {:?}", self.ctid, start.elapsed());
                return Ok(());
            }
            // No curl (127), a bad URL or option: waiting will not help.
            if !curl_retryable(out.code) {
                return Err(Error::guest(format!(
                    "CT {}: `curl {url}` failed inside the container (exit {}): {}",
                    self.ctid,
                    out.code,
                    out.tail(300)
                ))
                .into());
            }
            if self.dry_run() {
                self.say(&format!(
                    "dry run: {url} does not answer yet ({})",
                    out.tail(200)
                ));
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(Error::timeout(format!(
                    "CT {}: {url} did not answer within {} s (last: curl exit {}: {})\nhint: look at the service inside (`pct exec {} -- systemctl status`, `journalctl`)",
                    self.ctid,
                    crate::step::fmt_secs(timeout),
                    out.code,
                    out.tail(300),
                    self.ctid
                ))
                .into());
            }
            let left = timeout.saturating_sub(start.elapsed());
            std::thread::sleep(interval.min(left.max(Duration::from_millis(1))));
            interval = next_interval(interval);
        }
    }

    // -- templates -------------------------------------------------------------------------------

    /// For a template: take its snapshot `template_snapshot_name` unless it exists. Shuts the
    /// CT down (`pct shutdown --timeout`, `pct stop` if that fails), snapshots, starts it again
    /// and waits until ready. Returns whether it took the snapshot. Run by the orchestrator
    /// (`env::TEMPLATE_SNAPSHOT_AT_FINALIZE` set), it leaves the snapshot to the orchestrator's
    /// finalize, which takes it in the same shutdown as `configured-state`.
    pub fn finalize_template(&self) -> Result<bool> {
        let ctid = self.ctid;
        if !self.spec.is_template() {
            return Err(bad_input(format!(
                "CT {ctid} is not a template (lxc_configs.\"{ctid}\".is_template is not true); only templates are finalized with a snapshot"
            )));
        }
        let Some(name) = self
            .spec
            .template_snapshot_name
            .as_deref()
            .filter(|s| !s.is_empty())
        else {
            return Err(Error::config(format!(
                "CT {ctid}: lxc_configs.\"{ctid}\".template_snapshot_name is missing; a template needs the name of its snapshot"
            ))
            .into());
        };
        crate::steps::check_snapshot_name(
            &format!("lxc_configs.\"{ctid}\".template_snapshot_name"),
            name,
        )?;
        let pct = self.pct();
        // The conf file lists the snapshots (no `pct listsnapshot` call).
        if crate::conffile::ConfFile::load(ctid)?
            .snapshot_names()
            .iter()
            .any(|s| s == name)
        {
            if self.changes() > 0 {
                log::warn!(
                    "[{ctid}] this run changed the template after its snapshot `{name}` was taken; clones from `{name}` do not have those changes (to retake it: `pct delsnapshot {ctid} {name}` and run this again)"
                );
            }
            self.say(&format!("snapshot `{name}` exists; not taking it again"));
            return Ok(false);
        }
        // Run by the orchestrator: it takes the snapshot at finalize, in the same shutdown as
        // `configured-state` (`env::TEMPLATE_SNAPSHOT_AT_FINALIZE`; four calls fewer).
        if crate::env::flag(crate::env::TEMPLATE_SNAPSHOT_AT_FINALIZE) {
            self.say(&format!(
                "snapshot `{name}`: taken by the orchestrator at finalize, with `configured-state`"
            ));
            return Ok(false);
        }
        self.say(&format!(
            "finalizing: shutting down to take snapshot `{name}`"
        ));
        pct.shutdown_or_stop(ctid, self.configs().hypervisor.shutdown_timeout_s())?;
        pct.snapshot(ctid, name)?;
        pct.start(ctid)?;
        wait_ready(pct, ctid, self.ready_timeout())?;
        self.changed();
        self.say(&format!("snapshot `{name}` taken; running again"));
        Ok(true)
    }
}

/// `curl` for a check inside; the URL must be http(s) (so it can never read as an option).
fn curl_argv(ctid: Ctid, url: &str) -> Result<Vec<&str>> {
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.chars().any(char::is_whitespace)
    {
        return Err(bad_input(format!(
            "CT {ctid}: `{url}` is not an http(s) URL"
        )));
    }
    Ok(vec!["curl", "-fsSk", "--max-time", "10", url])
}

/// curl exit codes worth waiting out: cannot connect (7), HTTP error such as 503 while a
/// model loads (22), timeout (28), SSL handshake (35), empty reply (52), receive error (56).
fn curl_retryable(code: i32) -> bool {
    matches!(code, 7 | 22 | 28 | 35 | 52 | 56)
}

fn bad_input(msg: String) -> anyhow::Error {
    Error::new(ErrorKind::Config, msg).into()
}

fn check_guest_path(ctid: Ctid, path: &str) -> Result<()> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && !path.split('/').any(|c| c == "..")
        && !path.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(bad_input(format!(
            "CT {ctid}: `{path}` is not an absolute path to a file inside the container"
        )))
    }
}

fn check_unit(ctid: Ctid, unit: &str) -> Result<()> {
    if UNIT_NAME.is_match(unit) {
        Ok(())
    } else {
        Err(bad_input(format!(
            "CT {ctid}: `{unit}` is not a systemd unit name"
        )))
    }
}

/// `/etc/vllm/vllm.env` → `/etc/vllm`; `/x` → `/`.
fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> clap::error::Result<CtidArgs> {
        parse_args(
            900,
            "phoenix_hypervisor_setup_900",
            "test",
            v.iter().map(OsString::from),
        )
    }

    #[test]
    fn command_line_per_contract() {
        let a = parse(&["x", "900", "--dry-run"]).unwrap();
        assert_eq!(a.ctid, Ctid(900));
        assert!(a.common.dry_run);
        // Another CTID parses; run_from refuses it with exit 2 (e2e test).
        assert_eq!(parse(&["x", "901"]).unwrap().ctid, Ctid(901));
        assert_eq!(parse(&["x"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["x", "9"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["x", "900", "1"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["x", "--version"]).unwrap_err().exit_code(), 0);
        let help = parse(&["x", "--help"]).unwrap_err();
        assert_eq!(help.exit_code(), 0);
        let text = help.to_string();
        assert!(text.contains("phoenix_hypervisor_setup_900"), "{text}");
        assert!(text.contains("setup plugin of CT 900"), "{text}");
    }

    #[test]
    fn input_checks() {
        assert!(crate::guest::PACKAGE_NAME.is_match("nvidia-container-toolkit"));
        assert!(crate::guest::PACKAGE_NAME.is_match("libstdc++6"));
        for bad in ["-y", "Curl", "a b", "x;rm", ""] {
            assert!(!crate::guest::PACKAGE_NAME.is_match(bad), "{bad}");
        }
        assert!(LOCALE_NAME.is_match("en_US.UTF-8"));
        assert!(!LOCALE_NAME.is_match("en_US.UTF-8; rm"));
        assert!(check_unit(Ctid(1), "vllm.service").is_ok());
        assert!(check_unit(Ctid(1), "docker").is_ok());
        assert!(check_unit(Ctid(1), "--now").is_err());
        assert!(check_guest_path(Ctid(1), "/etc/vllm/vllm.env").is_ok());
        for bad in ["etc/x", "/", "/etc/../x", "/etc/x/", "/a\nb"] {
            assert!(check_guest_path(Ctid(1), bad).is_err(), "{bad}");
        }
        assert_eq!(parent_dir("/etc/vllm/vllm.env"), "/etc/vllm");
        assert_eq!(parent_dir("/x"), "/");
    }
}
