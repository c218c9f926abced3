//! The setup-plugin SDK: what a `phoenix_hypervisor_setup_<CTID>` program is written against.
//!
//! [`run`] is the whole frame of a plugin: it parses the command line (`CTID`, `--dry-run`,
//! `--help`, `--version`; a CTID other than the plugin's own is a usage error, exit 2), logs to
//! the shared log as `phoenix_hypervisor_setup_<CTID>`, loads and validates both configuration
//! files, finds the CT's block, calls the plugin's body with a [`Ct`] handle, makes sure the CT
//! exists (exit 3 otherwise) and runs (a stopped CT is started), and turns any error into the
//! step exit code (`architecture.md`, "Step contracts") through [`crate::error::exit_code`].
//!
//! Every `pct` call costs the Perl CLI's start-up on a real host, so a plugin works in two
//! phases, each one `pct exec`:
//! - **look**: [`Ct::probe`] asks every question at once (a [`Probe`]: packages installed,
//!   paths, units enabled/active, file contents, results of read-only commands such as
//!   `nvidia-smi` or a `curl` of a health URL). The first probe of a run also waits for the
//!   guest to be ready (and starts a stopped CT first), in the same call;
//! - **change**: [`Ct::apply`] makes a list of [`Changes`] in one fixed-text script
//!   ([`APPLY_SCRIPT`]; every value is a positional parameter, never code): `apt-get update`,
//!   upgrade, install, locale, directories, files, commands (`systemctl enable`, `docker run`),
//!   checks that verify the result, and waits for a URL that poll inside the guest. A failing
//!   part stops the script; the error names the CTID and that part. Secret files go in by
//!   `pct push` of a 0600 host file, between two scripts, never on a command line or in the
//!   log. Nothing to change: no call.
//!
//! [`Want`] describes the state a plugin wants (upgraded once, packages, locale, directories,
//! files, secret files, services enabled and running, restarted when their files change): its
//! [`Want::probe`] asks what it needs to know, and [`Want::changes`] turns the answers into
//! the [`Changes`] that reach that state, nothing when it holds. [`Ct::ensure`] is both for a
//! plugin that needs nothing else. A converged CT therefore costs one call.
//!
//! For templates, [`Ct::finalize_template`]: skipped when the snapshot `template_snapshot_name`
//! exists; otherwise `pct shutdown --timeout` (falling back to `pct stop`), `pct snapshot CTID
//! <name>`, `pct start`, wait until ready.
//!
//! In dry-run mode the probe still runs and every change is printed (`would: apt-get install
//! -y htop`, `would run: pct exec ...`) instead of made; waits are skipped.
//!
//! A plugin is a few lines:
//! ```no_run
//! use lib_common::sdk::{self, Want};
//!
//! fn main() -> std::process::ExitCode {
//!     sdk::run(900, "Base template: tools, locale, snapshot", |ct| {
//!         let motd = format!("{} (CT {})\n", ct.spec().name, ct.ctid());
//!         let want = Want::new()
//!             .packages(&["curl", "jq", "locales"])
//!             .locale("en_US.UTF-8")
//!             .file("/etc/motd", &motd, 0o644);
//!         ct.ensure(&want)?; // one call to look, at most one to change
//!         ct.finalize_template()?;
//!         Ok(())
//!     })
//! }
//! ```
//! With checks of its own, a plugin adds its questions to the probe and its steps to the
//! changes:
//! ```no_run
//! use std::time::Duration;
//! use lib_common::error::Error;
//! use lib_common::sdk::{self, Want};
//!
//! const UI: &[&str] = &["curl", "-fsSk", "--max-time", "10", "https://localhost:9443"];
//!
//! fn main() -> std::process::ExitCode {
//!     sdk::run(910, "Docker running, and a UI that answers", |ct| {
//!         let want = Want::new().service("docker.service");
//!         let facts = ct.probe(&want.probe().packages(&["docker-ce"]).cmd(UI))?;
//!         if !facts.installed("docker-ce") {
//!             return Err(Error::precondition(format!("CT {}: no Docker", ct.ctid())).into());
//!         }
//!         let mut changes = want.changes(ct.ctid(), &facts)?;
//!         if !facts.cmd(UI).success() {
//!             changes = changes.wait_http(UI[4], Duration::from_secs(120));
//!         }
//!         ct.apply(&changes)?; // no call when there is nothing to do
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
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use regex::Regex;

use crate::config::{Configs, ContainerSpec, Ctid};
use crate::error::{Error, ErrorKind, Result};
use crate::guest::{Guest, PACKAGE_NAME};
use crate::pct::{ExecOutput, PctClient, display_argv};
pub use crate::probe::{CmdResult, Facts, Probe};
use crate::step::{CtidArgs, StepContext, wait_ready};

/// Where [`Changes::upgrade`] records that the template's packages were upgraded.
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
        let result = body(&ct).and_then(|()| ct.ensure_ready());
        match result {
            Err(e) if e.downcast_ref::<DryRunStopped>().is_some() => {
                ct.say(&format!(
                    "dry run: CT {own} is stopped; it would be started first, and what would change inside cannot be seen until it runs"
                ));
                Ok(())
            }
            Err(e) => Err(e),
            Ok(()) => {
                ct.summary();
                Ok(())
            }
        }
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

/// A dry run on a stopped CT: nothing can be asked inside, so the plugin ends there.
#[derive(Debug)]
struct DryRunStopped;

impl std::fmt::Display for DryRunStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dry run: the CT is stopped")
    }
}

impl std::error::Error for DryRunStopped {}

/// A setup plugin's handle on its container.
pub struct Ct<'a> {
    ctx: &'a StepContext,
    ctid: Ctid,
    spec: &'a ContainerSpec,
    guest: Guest<'a>,
    /// The CT was found running and ready (or started) in this run.
    ready: Cell<bool>,
    changes: Cell<u32>,
}

impl<'a> Ct<'a> {
    /// The handle for `ctid` (its block must be in the config: exit 2 otherwise). It makes no
    /// call: the first [`Ct::probe`] (or [`Ct::apply`]) waits for the CT to be ready.
    pub fn new(ctx: &'a StepContext, ctid: Ctid) -> Result<Ct<'a>> {
        let spec = ctx.container(ctid)?;
        Ok(Ct {
            ctx,
            ctid,
            spec,
            guest: Guest::new(&ctx.pct, ctid).with_network_timeout(ctx.ready_timeout()),
            ready: Cell::new(false),
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

    /// The Proxmox client, for what the SDK does not cover.
    pub fn pct(&self) -> &'a PctClient {
        &self.ctx.pct
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

    fn started(&self, started: bool) {
        self.ready.set(true);
        if started {
            self.say(if self.dry_run() {
                "is stopped; would start it"
            } else {
                "was stopped; started it"
            });
            self.changed();
        }
    }

    /// Make sure the CT runs and its guest has booted: one call when it runs (the readiness
    /// wait), a start first when it does not. Nothing once done in this run.
    pub fn ensure_ready(&self) -> Result<()> {
        if !self.ready.get() {
            let started = crate::step::ensure_running(self.pct(), self.ctid, self.ready_timeout())?;
            self.started(started);
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

    // -- look, change ----------------------------------------------------------------------------

    /// Ask every question of `probe` in one `pct exec` (also in dry-run mode: it changes
    /// nothing). The first call of a run also waits for the guest to be ready in that same
    /// call (a stopped CT is started first); a CT that does not exist is exit 3, one that does
    /// not become ready in time exit 6.
    pub fn probe(&self, probe: &Probe) -> Result<Facts> {
        if self.ready.get() {
            return probe.run(self.pct(), self.ctid);
        }
        let (started, facts) =
            crate::step::ensure_running_probe(self.pct(), self.ctid, self.ready_timeout(), probe)?;
        self.started(started);
        facts.ok_or_else(|| DryRunStopped.into())
    }

    /// Make `changes`: the script parts in one `pct exec` ([`APPLY_SCRIPT`]; one more per
    /// secret file, a `pct push` between two parts). No call when `changes` is empty; a part
    /// with only checks and waits changes nothing and does not count as a change. Each change
    /// is said (`[CTID] apt-get install -y htop`); in dry-run mode it is printed as `would:
    /// ...` and nothing runs. A part that fails is a Guest error (exit 5) naming the CTID and
    /// that part, with the end of its output; a wait that times out is exit 6; `pct` failing
    /// is exit 4. Returns what the waits read ([`Applied::body`]).
    pub fn apply(&self, changes: &Changes) -> Result<Applied> {
        if let Some(bad) = changes.invalid.first() {
            return Err(bad_input(format!("CT {}: {bad}", self.ctid)));
        }
        let mut applied = Applied::default();
        if changes.ops.is_empty() {
            return Ok(applied);
        }
        self.ensure_ready()?;
        let mut part: Vec<&Step> = Vec::new();
        for op in &changes.ops {
            match op {
                Op::Step(s) => part.push(s),
                Op::Secret(secret) => {
                    self.run_part(&part, &mut applied)?;
                    part.clear();
                    self.changed();
                    let what = format!(
                        "write {} ({} bytes, mode {:04o}, by pct push)",
                        secret.path,
                        secret.content.len(),
                        secret.mode
                    );
                    self.say(&self.would(&what));
                    self.guest.write_file(
                        &secret.path,
                        &secret.content,
                        &format!("{:04o}", secret.mode),
                    )?;
                }
            }
        }
        self.run_part(&part, &mut applied)?;
        Ok(applied)
    }

    /// [`Ct::probe`] of `want`'s questions, then [`Ct::apply`] of what differs: one call on a
    /// CT that is as wanted, two otherwise (more with secret files). Returns whether it changed
    /// anything.
    pub fn ensure(&self, want: &Want) -> Result<bool> {
        let facts = self.probe(&want.probe())?;
        let changes = want.changes(self.ctid, &facts)?;
        self.apply(&changes)?;
        Ok(changes.changes_anything())
    }

    fn would(&self, what: &str) -> String {
        if self.dry_run() {
            format!("would: {what}")
        } else {
            what.to_string()
        }
    }

    fn run_part(&self, part: &[&Step], applied: &mut Applied) -> Result<()> {
        if part.is_empty() {
            return Ok(());
        }
        let changing = part.iter().any(|s| s.changes);
        let args = part_args(part);
        let out = if changing {
            for s in part.iter().filter(|s| s.changes) {
                self.changed();
                self.say(&self.would(&s.what));
            }
            let label: Vec<&str> = part.iter().map(|s| s.what.as_str()).collect();
            let out = self
                .guest
                .run_script_unchecked(&label.join("; "), APPLY_SCRIPT, &args)?;
            if self.dry_run() {
                return Ok(());
            }
            out
        } else if self.dry_run() {
            for s in part {
                self.say(&format!("dry run: would {}", s.what));
            }
            return Ok(());
        } else {
            self.guest.query_script(APPLY_SCRIPT, &args)?
        };
        if !out.success() {
            return Err(part_error(self.ctid, part, &out));
        }
        applied.bodies.extend(part_bodies(self.ctid, part, &out)?);
        Ok(())
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
        self.ensure_ready()?;
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

// -- changes ---------------------------------------------------------------------------------

/// The script of [`Ct::apply`], run as `bash -c APPLY_SCRIPT _ STEP...`. Each step is a word
/// and its values: `update`; `upgrade STAMP`; `install N PACKAGE...`; `locale LOCALE`; `dir
/// PATH MODE`; `chmod PATH MODE`; `write PATH MODE CONTENT`; `cmd N ARG...` (a command, stdin
/// `/dev/null`); `http URL MS` (poll `URL` with curl until it answers, at most `MS` ms; print
/// `phoenix-http BASE64(BODY)`). Steps run in order; the first that fails ends the script with
/// its exit code after `phoenix-failed INDEX CODE` on stderr (a wait that times out: 124).
/// `apt-get update` that reaches no source because the network is down fails (exit 100, apt's
/// message kept) so that [`Guest::run_script_unchecked`] retries the whole script; every step
/// can run again after a failure. Its output is shown only when it fails (a later step's
/// failure is then judged on its own output: apt's `Hit:` lines mean "the network is up").
pub const APPLY_SCRIPT: &str = r#"export DEBIAN_FRONTEND=noninteractive
apt=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
e=$(mktemp) || exit 125
trap 'rm -f -- "$e"' EXIT
i=0
fail() { echo "phoenix-failed $i $1" >&2; exit "$1"; }
while [ $# -gt 0 ]; do
  op=$1; shift
  case "$op" in
    update)
      u=$(apt-get update -q 2>&1); c=$?
      if [ "$c" -ne 0 ]; then printf '%s\n' "$u"; fail "$c"; fi
      if ! grep -q '^\(Hit\|Get\):' <<<"$u" && grep -qi 'temporary failure resolving\|could not resolve\|could not connect\|network is unreachable' <<<"$u"; then
        printf '%s\n' "$u"; echo "apt-get update reached no source: the network is not up" >&2; fail 100
      fi ;;
    upgrade)
      apt-get "${apt[@]}" upgrade || fail $?
      { mkdir -p -- "$(dirname -- "$1")" && date -u +%Y-%m-%dT%H:%M:%SZ >"$1"; } || fail $?
      shift ;;
    install) n=$1; shift; apt-get install "${apt[@]}" "${@:1:$n}" || fail $?; shift "$n" ;;
    locale)
      f=/etc/locale.gen
      { touch "$f" && awk -v l="$1 UTF-8" '{ s = $0; sub(/^#[ \t]*/, "", s); if (s == l) { if (!d) print l; d = 1; next } print }
END { if (!d) print l }' "$f" >"$f.phoenix-new" && chmod 644 "$f.phoenix-new" && mv -f "$f.phoenix-new" "$f"; } || fail $?
      locale-gen || fail $?
      update-locale "LANG=$1" || fail $?
      shift ;;
    dir) { mkdir -p -m "$2" -- "$1" && chmod "$2" -- "$1"; } || fail $?; shift 2 ;;
    chmod) chmod "$2" -- "$1" || fail $?; shift 2 ;;
    write)
      { mkdir -p -- "$(dirname -- "$1")" && t=$(mktemp -- "$1.XXXXXX"); } || fail $?
      { printf '%s' "$3" >"$t" && chmod -- "$2" "$t" && mv -f -- "$t" "$1"; } || { c=$?; rm -f -- "$t"; fail "$c"; }
      shift 3 ;;
    cmd) n=$1; shift; "${@:1:$n}" </dev/null || fail $?; shift "$n" ;;
    http)
      end=$(( $(date +%s%3N) + $2 )); iv=20
      while :; do
        b=$(curl -fsSk --max-time 10 "$1" 2>"$e"); c=$?
        [ "$c" -eq 0 ] && break
        case "$c" in 7|22|28|35|52|56) ;; *) cat "$e" >&2; fail "$c" ;; esac
        if [ "$(date +%s%3N)" -ge "$end" ]; then echo "curl exit $c: $(cat "$e")" >&2; fail 124; fi
        sleep "$(printf '%d.%03d' $((iv / 1000)) $((iv % 1000)))"
        iv=$((iv * 3 / 2)); [ "$iv" -le 200 ] || iv=200
      done
      printf 'phoenix-http %s\n' "$(printf '%s' "$b" | base64 -w0)"
      shift 2 ;;
    *) echo "apply: unknown step '$op'" >&2; exit 125 ;;
  esac
  i=$((i + 1))
done"#;

/// One step of [`APPLY_SCRIPT`].
#[derive(Clone)]
struct Step {
    /// What it does, for people (messages, errors).
    what: String,
    /// Its words in the script's arguments.
    words: Vec<String>,
    /// It changes the guest (a check or a wait does not).
    changes: bool,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Other,
    Http { url: String, timeout: Duration },
}

#[derive(Clone)]
enum Op {
    Step(Step),
    /// A file written by `pct push` (its content is never on a command line).
    Secret(SecretFile),
}

#[derive(Clone)]
struct SecretFile {
    path: String,
    content: Vec<u8>,
    mode: u32,
}

/// Changes to make inside the container, in order, by [`Ct::apply`] in one `pct exec`
/// (secret files are pushed between two parts). Built by [`Want::changes`] and by hand; every
/// value stays an argument. Invalid values (a package name that is not one, a relative path)
/// are reported by [`Ct::apply`] as config errors (exit 2) before anything runs.
#[derive(Clone, Default)]
pub struct Changes {
    ops: Vec<Op>,
    invalid: Vec<String>,
}

impl Changes {
    /// Nothing to change.
    pub fn new() -> Changes {
        Changes::default()
    }

    /// Whether there is nothing to do (then [`Ct::apply`] makes no call).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether something here changes the guest (not only checks and waits).
    pub fn changes_anything(&self) -> bool {
        self.ops.iter().any(|o| match o {
            Op::Step(s) => s.changes,
            Op::Secret(_) => true,
        })
    }

    fn step(mut self, what: String, words: Vec<String>, changes: bool) -> Changes {
        self.ops.push(Op::Step(Step {
            what,
            words,
            changes,
            kind: Kind::Other,
        }));
        self
    }

    fn has_update(&self) -> bool {
        self.ops
            .iter()
            .any(|o| matches!(o, Op::Step(s) if s.words.first().is_some_and(|w| w == "update")))
    }

    fn update(self) -> Changes {
        if self.has_update() {
            return self;
        }
        self.step("apt-get update".into(), vec!["update".into()], true)
    }

    /// `apt-get update` (once in these changes) and `apt-get -y upgrade` keeping changed
    /// config files; recorded in [`UPGRADE_STAMP`] ([`Want::upgraded`] upgrades once in the
    /// CT's life).
    pub fn upgrade(self) -> Changes {
        self.update().step(
            format!("apt-get upgrade (recorded in {UPGRADE_STAMP})"),
            vec!["upgrade".into(), UPGRADE_STAMP.into()],
            true,
        )
    }

    /// `apt-get update` (once in these changes) and `apt-get install -y PACKAGES` with no
    /// questions and changed config files kept. Nothing when `packages` is empty.
    pub fn install<S: AsRef<str>>(mut self, packages: &[S]) -> Changes {
        if packages.is_empty() {
            return self;
        }
        let names: Vec<String> = packages.iter().map(|p| p.as_ref().to_string()).collect();
        if let Some(bad) = names.iter().find(|p| !PACKAGE_NAME.is_match(p)) {
            self.invalid
                .push(format!("`{bad}` is not a valid Debian package name"));
            return self;
        }
        let mut words = vec!["install".to_string(), names.len().to_string()];
        words.extend(names.iter().cloned());
        self.update().step(
            format!("apt-get install -y {}", names.join(" ")),
            words,
            true,
        )
    }

    /// Generate `locale` (e.g. `en_US.UTF-8`: its line in `/etc/locale.gen` uncommented or
    /// added, `locale-gen`) and make it the default `LANG` (`update-locale`). Needs the
    /// `locales` package.
    pub fn locale(mut self, locale: &str) -> Changes {
        if !LOCALE_NAME.is_match(locale) {
            self.invalid
                .push(format!("`{locale}` is not a locale name like en_US.UTF-8"));
            return self;
        }
        self.step(
            format!("set the locale to {locale} (locale-gen, update-locale LANG={locale})"),
            vec!["locale".into(), locale.into()],
            true,
        )
    }

    /// `mkdir -p` directory `path`, then make its mode exactly `mode`.
    pub fn dir(mut self, path: &str, mode: u32) -> Changes {
        if let Err(e) = check_guest_path(path) {
            self.invalid.push(e);
            return self;
        }
        let m = format!("{mode:04o}");
        self.step(
            format!("mkdir -m {m} {path}"),
            vec!["dir".into(), path.into(), m],
            true,
        )
    }

    /// `chmod MODE PATH`.
    pub fn chmod(mut self, path: &str, mode: u32) -> Changes {
        if let Err(e) = check_guest_path(path) {
            self.invalid.push(e);
            return self;
        }
        let m = format!("{mode:04o}");
        self.step(
            format!("chmod {m} {path}"),
            vec!["chmod".into(), path.into(), m],
            true,
        )
    }

    /// Write `content` to file `path` with `mode` (a temporary file beside it, renamed over
    /// it; missing directories created). The content is an argument of the script, visible
    /// in the host's process list while it runs and in the log: never a secret (see
    /// [`Changes::secret`]). Content over 64 KiB goes through `pct push` (one more call).
    pub fn write(mut self, path: &str, content: &str, mode: u32) -> Changes {
        if let Err(e) = check_guest_path(path) {
            self.invalid.push(e);
            return self;
        }
        if content.len() > 64 * 1024 || content.contains('\0') {
            self.ops.push(Op::Secret(SecretFile {
                path: path.into(),
                content: content.as_bytes().to_vec(),
                mode,
            }));
            return self;
        }
        let m = format!("{mode:04o}");
        self.step(
            format!("write {path} ({} bytes, mode {m})", content.len()),
            vec!["write".into(), path.into(), m, content.into()],
            true,
        )
    }

    /// Write a secret (a token) to file `path` with `mode`: through a 0600 temporary file on
    /// the host and `pct push --perms`, one call of its own between two script parts; never on
    /// a command line or in the log. The directory must exist by then (a [`Changes::dir`]
    /// before it).
    pub fn secret(mut self, path: &str, content: &[u8], mode: u32) -> Changes {
        if let Err(e) = check_guest_path(path) {
            self.invalid.push(e);
            return self;
        }
        self.ops.push(Op::Secret(SecretFile {
            path: path.into(),
            content: content.to_vec(),
            mode,
        }));
        self
    }

    /// Run command `argv` (`systemctl enable docker`, `docker run ...`); a non-zero exit stops
    /// the changes there.
    pub fn cmd(self, argv: &[&str]) -> Changes {
        let mut words = vec!["cmd".to_string(), argv.len().to_string()];
        words.extend(argv.iter().map(|s| s.to_string()));
        self.step(display_argv(argv), words, true)
    }

    /// Run the read-only command `argv` to verify what the changes before it did (`python -c
    /// 'import vllm'`, `docker info`): a non-zero exit fails [`Ct::apply`] with its output.
    /// Not a change.
    pub fn check(self, argv: &[&str]) -> Changes {
        let mut words = vec!["cmd".to_string(), argv.len().to_string()];
        words.extend(argv.iter().map(|s| s.to_string()));
        self.step(display_argv(argv), words, false)
    }

    /// Wait until `url` answers with success (`curl -fsSk`: self-signed certificates are
    /// fine), polling inside the guest (every 20 ms at first, at most every 200 ms); a Timeout
    /// error (exit 6) after `timeout`. Cannot-connect, HTTP errors such as 503 while a model
    /// loads, timeouts and empty replies are waited out; any other curl failure fails at once.
    /// Its body is in [`Applied::body`]. Not a change; skipped in dry-run mode.
    pub fn wait_http(mut self, url: &str, timeout: Duration) -> Changes {
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            self.invalid.push(format!("`{url}` is not an http(s) URL"));
            return self;
        }
        self.ops.push(Op::Step(Step {
            what: format!("wait for {url}"),
            words: vec!["http".into(), url.into(), timeout.as_millis().to_string()],
            changes: false,
            kind: Kind::Http {
                url: url.into(),
                timeout,
            },
        }));
        self
    }

    /// These changes, then `next`'s (one `apt-get update` for both).
    pub fn then(mut self, next: Changes) -> Changes {
        let updated = self.has_update();
        for op in next.ops {
            let is_update =
                matches!(&op, Op::Step(s) if s.words.first().is_some_and(|w| w == "update"));
            if !(updated && is_update) {
                self.ops.push(op);
            }
        }
        self.invalid.extend(next.invalid);
        self
    }
}

/// What [`Ct::apply`] read: the bodies of the URLs it waited for.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    bodies: Vec<(String, String)>,
}

impl Applied {
    /// The body `url` answered when [`Changes::wait_http`] saw it answer; `None` when it was
    /// not waited for (or in dry-run mode).
    pub fn body(&self, url: &str) -> Option<&str> {
        self.bodies
            .iter()
            .find(|(u, _)| u == url)
            .map(|(_, b)| b.as_str())
    }
}

// -- the wanted state ------------------------------------------------------------------------

const LOCALE_GEN: &str = "/etc/locale.gen";
const DEFAULT_LOCALE: &str = "/etc/default/locale";

#[derive(Clone)]
struct WantedFile {
    path: String,
    content: Vec<u8>,
    mode: u32,
    secret: bool,
}

/// The state a plugin wants in its container. [`Want::probe`] lists what must be known to
/// compare (add the plugin's own questions to it); [`Want::changes`] turns the answers into
/// the [`Changes`] that reach the state, in this order: upgrade, packages, locale,
/// directories, files, `systemctl daemon-reload` (when a unit file changed), enable units,
/// secret files, start units that are not active, restart those that were when a file of
/// this `Want` changed.
#[derive(Clone, Default)]
pub struct Want {
    upgraded: bool,
    packages: Vec<String>,
    locale: Option<String>,
    dirs: Vec<(String, u32)>,
    files: Vec<WantedFile>,
    services: Vec<String>,
    invalid: Vec<String>,
}

/// What `stat -c '%F %a'` said of a path.
enum PathState {
    Absent,
    Dir(u32),
    File(u32),
    Other(String),
}

fn stat_argv(path: &str) -> [&str; 5] {
    ["stat", "-c", "%F %a", "--", path]
}

fn path_state(facts: &Facts, ctid: Ctid, path: &str) -> Result<PathState> {
    let r = facts.cmd(&stat_argv(path));
    if !r.success() {
        if r.stderr.contains("No such file") {
            return Ok(PathState::Absent);
        }
        return Err(Error::guest(format!(
            "CT {ctid}: cannot look at `{path}` (stat exit {}): {}",
            r.code,
            r.stderr.trim()
        ))
        .into());
    }
    let line = r.stdout.trim();
    let (kind, mode) = line.rsplit_once(' ').unwrap_or((line, ""));
    let mode = u32::from_str_radix(mode, 8).unwrap_or(u32::MAX);
    Ok(match kind {
        "directory" => PathState::Dir(mode),
        k if k.starts_with("regular") => PathState::File(mode),
        k => PathState::Other(k.to_string()),
    })
}

fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

impl Want {
    /// Nothing wanted yet.
    pub fn new() -> Want {
        Want::default()
    }

    /// All packages upgraded once in the CT's life (`apt-get update`, `apt-get -y upgrade`
    /// keeping changed config files), recorded in [`UPGRADE_STAMP`].
    pub fn upgraded(mut self) -> Want {
        self.upgraded = true;
        self
    }

    /// These packages installed (only the missing ones are installed).
    pub fn packages(mut self, packages: &[&str]) -> Want {
        self.packages.extend(packages.iter().map(|s| s.to_string()));
        self
    }

    /// `locale` (e.g. `en_US.UTF-8`) generated and the default `LANG`.
    pub fn locale(mut self, locale: &str) -> Want {
        if !LOCALE_NAME.is_match(locale) {
            self.invalid
                .push(format!("`{locale}` is not a locale name like en_US.UTF-8"));
        }
        self.locale = Some(locale.to_string());
        self
    }

    /// Directory `path` with exactly `mode`.
    pub fn dir(mut self, path: &str, mode: u32) -> Want {
        if let Err(e) = check_guest_path(path) {
            self.invalid.push(e);
        }
        self.dirs.push((path.to_string(), mode));
        self
    }

    /// File `path` with exactly `content` and `mode`; written with [`Changes::write`], so
    /// never a secret. A file under `/etc/systemd/` that changes is followed by `systemctl
    /// daemon-reload`.
    pub fn file(mut self, path: &str, content: &str, mode: u32) -> Want {
        if let Err(e) = check_guest_path(path) {
            self.invalid.push(e);
        }
        self.files.push(WantedFile {
            path: path.to_string(),
            content: content.as_bytes().to_vec(),
            mode,
            secret: false,
        });
        self
    }

    /// A secret file: as [`Want::file`], written with [`Changes::secret`] (`pct push`, never
    /// a command line or the log). Its parent directory is created (0755) when missing unless
    /// a [`Want::dir`] names it.
    pub fn secret_file(mut self, path: &str, content: &[u8], mode: u32) -> Want {
        if let Err(e) = check_guest_path(path) {
            self.invalid.push(e);
        }
        self.files.push(WantedFile {
            path: path.to_string(),
            content: content.to_vec(),
            mode,
            secret: true,
        });
        self
    }

    /// systemd unit `unit` enabled and active; restarted when a file or secret file of this
    /// `Want` changed while it was active.
    pub fn service(mut self, unit: &str) -> Want {
        if !UNIT_NAME.is_match(unit) {
            self.invalid
                .push(format!("`{unit}` is not a systemd unit name"));
        }
        self.services.push(unit.to_string());
        self
    }

    /// The questions whose answers [`Want::changes`] needs.
    pub fn probe(&self) -> Probe {
        let mut p = Probe::new();
        if self.upgraded {
            p = p.exists(UPGRADE_STAMP);
        }
        let pk: Vec<&str> = self.packages.iter().map(String::as_str).collect();
        p = p.packages(&pk);
        if self.locale.is_some() {
            p = p.read(LOCALE_GEN).read(DEFAULT_LOCALE);
        }
        for (path, _) in &self.dirs {
            p = p.cmd(&stat_argv(path));
        }
        for f in &self.files {
            p = p.cmd(&stat_argv(&f.path)).read(&f.path);
            if f.secret {
                p = p.exists(parent_dir(&f.path));
            }
        }
        for u in &self.services {
            p = p.unit(u);
        }
        p
    }

    /// What must change for the guest described by `facts` (answers to [`Want::probe`], and
    /// possibly more) to be as wanted: empty when it is. A path of the wrong kind (a directory
    /// where a file is wanted) is a Guest error (exit 5) naming it.
    pub fn changes(&self, ctid: Ctid, facts: &Facts) -> Result<Changes> {
        if let Some(bad) = self.invalid.first() {
            return Err(bad_input(format!("CT {ctid}: {bad}")));
        }
        let mut c = Changes::new();
        if self.upgraded && !facts.exists(UPGRADE_STAMP) {
            c = c.upgrade();
        }
        let pk: Vec<&str> = self.packages.iter().map(String::as_str).collect();
        c = c.install(&facts.missing(&pk));
        if let Some(l) = &self.locale {
            let gen_line = format!("{l} UTF-8");
            let lang_line = format!("LANG={l}");
            let has = |path: &str, line: &str| -> Result<bool> {
                Ok(facts
                    .read(ctid, path)?
                    .is_some_and(|t| t.lines().any(|x| x == line)))
            };
            if !(has(LOCALE_GEN, &gen_line)? && has(DEFAULT_LOCALE, &lang_line)?) {
                c = c.locale(l);
            }
        }
        let wrong_kind = |path: &str, what: &str, kind: &str| -> anyhow::Error {
            Error::guest(format!(
                "CT {ctid}: `{path}` exists and is a {kind}, not {what}; remove it or choose another path"
            ))
            .into()
        };
        for (path, mode) in &self.dirs {
            match path_state(facts, ctid, path)? {
                PathState::Absent => c = c.dir(path, *mode),
                PathState::Dir(m) if m == *mode => {}
                PathState::Dir(_) => c = c.chmod(path, *mode),
                PathState::File(_) => return Err(wrong_kind(path, "a directory", "file")),
                PathState::Other(k) => return Err(wrong_kind(path, "a directory", &k)),
            }
        }
        // Which files need writing (true) or only a chmod (false).
        let mut todo: Vec<(&WantedFile, bool)> = Vec::new();
        for f in &self.files {
            match path_state(facts, ctid, &f.path)? {
                PathState::Absent => todo.push((f, true)),
                PathState::File(m) => {
                    let same = facts
                        .read(ctid, &f.path)?
                        .is_some_and(|t| t.as_bytes() == f.content.as_slice());
                    if !same {
                        todo.push((f, true));
                    } else if m != f.mode {
                        todo.push((f, false));
                    }
                }
                PathState::Dir(_) => {
                    return Err(wrong_kind(&f.path, "a regular file", "directory"));
                }
                PathState::Other(k) => return Err(wrong_kind(&f.path, "a regular file", &k)),
            }
        }
        let mut units_changed = false;
        for (f, write) in todo.iter().filter(|(f, _)| !f.secret) {
            if *write {
                c = c.write(&f.path, &String::from_utf8_lossy(&f.content), f.mode);
                units_changed |= ["/etc/systemd/", "/lib/systemd/", "/usr/lib/systemd/"]
                    .iter()
                    .any(|d| f.path.starts_with(d));
            } else {
                c = c.chmod(&f.path, f.mode);
            }
        }
        if units_changed {
            c = c.cmd(&["systemctl", "daemon-reload"]);
        }
        for u in &self.services {
            if !facts.unit(u).0 {
                c = c.cmd(&["systemctl", "enable", u]);
            }
        }
        for (f, write) in todo.iter().filter(|(f, _)| f.secret) {
            if *write {
                let parent = parent_dir(&f.path);
                if !facts.exists(parent) && !self.dirs.iter().any(|(d, _)| d == parent) {
                    c = c.dir(parent, 0o755);
                }
                c = c.secret(&f.path, &f.content, f.mode);
            } else {
                c = c.chmod(&f.path, f.mode);
            }
        }
        for u in &self.services {
            if !facts.unit(u).1 {
                c = c.cmd(&["systemctl", "start", u]);
            } else if todo.iter().any(|(_, write)| *write) {
                c = c.cmd(&["systemctl", "restart", u]);
            }
        }
        Ok(c)
    }
}

/// The arguments of [`APPLY_SCRIPT`] for a script part.
fn part_args<'s>(part: &[&'s Step]) -> Vec<&'s str> {
    part.iter()
        .flat_map(|s| s.words.iter().map(String::as_str))
        .collect()
}

/// The bodies the waits of a script part that succeeded read (`phoenix-http BASE64` lines, in
/// the order of the waits).
fn part_bodies(ctid: Ctid, part: &[&Step], out: &ExecOutput) -> Result<Vec<(String, String)>> {
    let waits = part.iter().filter_map(|s| match &s.kind {
        Kind::Http { url, .. } => Some(url),
        Kind::Other => None,
    });
    let bodies = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("phoenix-http "));
    let mut got = Vec::new();
    for (url, b64) in waits.zip(bodies) {
        let body = crate::probe::decode_base64(b64.trim()).ok_or_else(|| {
            Error::guest(format!("CT {ctid}: malformed answer of the wait for {url}"))
        })?;
        got.push((url.clone(), String::from_utf8_lossy(&body).into_owned()));
    }
    Ok(got)
}

/// The error of a script part that failed: the step named by the script's `phoenix-failed
/// INDEX CODE` line, with the output less the framing lines; a wait that timed out is a
/// Timeout error (exit 6).
fn part_error(ctid: Ctid, part: &[&Step], out: &ExecOutput) -> anyhow::Error {
    let failed = out
        .stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("phoenix-failed "))
        .and_then(|l| l.split_once(' '))
        .and_then(|(i, c)| Some((i.parse::<usize>().ok()?, c.trim().parse::<i32>().ok()?)));
    let clean = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("phoenix-"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let shown = ExecOutput {
        code: out.code,
        stdout: clean(&out.stdout),
        stderr: clean(&out.stderr),
    };
    match failed.and_then(|(i, c)| Some((part.get(i)?, c))) {
        Some((step, 124)) if matches!(step.kind, Kind::Http { .. }) => {
            let Kind::Http { url, timeout } = &step.kind else {
                unreachable!()
            };
            Error::timeout(format!(
                "CT {ctid}: {url} did not answer within {} s (last: {})\nhint: look at the service inside (`pct exec {ctid} -- systemctl status`, `journalctl`)",
                crate::step::fmt_secs(*timeout),
                shown.tail(300)
            ))
            .into()
        }
        Some((step, code)) => Error::guest(format!(
            "CT {ctid}: `{}` failed inside the container (exit {code}): {}",
            step.what,
            shown.tail(1500)
        ))
        .into(),
        None => {
            let label: Vec<&str> = part.iter().map(|s| s.what.as_str()).collect();
            Error::guest(format!(
                "CT {ctid}: `{}` failed inside the container (exit {}): {}",
                label.join("; "),
                out.code,
                shown.tail(1500)
            ))
            .into()
        }
    }
}

fn bad_input(msg: String) -> anyhow::Error {
    Error::new(ErrorKind::Config, msg).into()
}

fn check_guest_path(path: &str) -> std::result::Result<(), String> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && !path.split('/').any(|c| c == "..")
        && !path.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{path}` is not an absolute path to a file inside the container"
        ))
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

    fn steps(c: &Changes) -> Vec<&Step> {
        c.ops
            .iter()
            .filter_map(|o| match o {
                Op::Step(s) => Some(s),
                Op::Secret(_) => None,
            })
            .collect()
    }

    /// Runs the real script with bash on this machine (a stand-in for curl on PATH).
    fn run_apply(bin: &std::path::Path, part: &[&Step]) -> ExecOutput {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(APPLY_SCRIPT)
            .arg("_")
            .args(part_args(part))
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap();
        ExecOutput {
            code: out.status.code().unwrap(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    #[test]
    fn the_apply_script_runs_steps_in_order_and_names_the_one_that_fails() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let count = d.path().join("curl-calls");
        // Cannot connect twice (a service starting), then answers.
        let curl = bin.join("curl");
        std::fs::write(
            &curl,
            format!(
                "#!/bin/bash\nn=$(cat '{c}' 2>/dev/null || echo 0); echo $((n+1)) > '{c}'\n[ $n -ge 2 ] || {{ echo 'curl: (7) Failed to connect' >&2; exit 7; }}\nprintf '{{\"data\":[1]}}\\n'\n",
                c = count.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&curl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = d.path().join("sub/f");
        let marker = d.path().join("marker");
        let never = d.path().join("never");
        let weird = "a b\n\n$1 `x` 'q' \\ %s\n";
        let url = "http://localhost:1/v1/models";
        let c = Changes::new()
            .write(file.to_str().unwrap(), weird, 0o640)
            .cmd(&["touch", marker.to_str().unwrap()])
            .wait_http(url, Duration::from_secs(30))
            .check(&["false"])
            .cmd(&["touch", never.to_str().unwrap()]);
        let part = steps(&c);
        let out = run_apply(&bin, &part);
        assert_eq!(out.code, 1, "{out:?}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), weird);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(marker.exists() && !never.exists());
        assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "3");
        let got = part_bodies(Ctid(950), &part, &out).unwrap();
        assert_eq!(got, [(url.to_string(), "{\"data\":[1]}".to_string())]);
        let err = part_error(Ctid(950), &part, &out);
        assert_eq!(crate::error::exit_code(&err), 5);
        let msg = err.to_string();
        assert!(
            msg.contains("CT 950: `false` failed") && msg.contains("exit 1"),
            "{msg}"
        );
        assert!(!msg.contains("phoenix-"), "{msg}");

        // A URL that never answers: exit 124 at the timeout, a Timeout error (exit 6).
        std::fs::write(&count, "-1000\n").unwrap();
        let c = Changes::new().wait_http(url, Duration::from_millis(300));
        let part = steps(&c);
        let out = run_apply(&bin, &part);
        assert_eq!(out.code, 124, "{out:?}");
        let err = part_error(Ctid(910), &part, &out);
        assert_eq!(crate::error::exit_code(&err), 6);
        let msg = err.to_string();
        assert!(
            msg.contains("did not answer within 0.3 s") && msg.contains("Failed to connect"),
            "{msg}"
        );
    }

    #[test]
    fn input_checks() {
        assert!(PACKAGE_NAME.is_match("nvidia-container-toolkit"));
        assert!(PACKAGE_NAME.is_match("libstdc++6"));
        for bad in ["-y", "Curl", "a b", "x;rm", ""] {
            assert!(!PACKAGE_NAME.is_match(bad), "{bad}");
        }
        assert!(LOCALE_NAME.is_match("en_US.UTF-8"));
        assert!(!LOCALE_NAME.is_match("en_US.UTF-8; rm"));
        assert!(UNIT_NAME.is_match("vllm.service"));
        assert!(UNIT_NAME.is_match("docker"));
        assert!(!UNIT_NAME.is_match("--now"));
        assert!(check_guest_path("/etc/vllm/vllm.env").is_ok());
        for bad in ["etc/x", "/", "/etc/../x", "/etc/x/", "/a\nb"] {
            assert!(check_guest_path(bad).is_err(), "{bad}");
        }
        assert_eq!(parent_dir("/etc/vllm/vllm.env"), "/etc/vllm");
        assert_eq!(parent_dir("/x"), "/");
        // Bad values are kept out of the script and reported by apply.
        let c = Changes::new()
            .install(&["-y"])
            .locale("x; rm")
            .dir("rel", 0o755)
            .wait_http("file:///etc/shadow", Duration::from_secs(1));
        assert!(c.is_empty());
        assert_eq!(c.invalid.len(), 4);
    }
}
