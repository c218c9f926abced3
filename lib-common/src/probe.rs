//! Many read-only questions about a guest in one `pct exec` (issue 14: on a real host every
//! `pct` call pays the Perl CLI's start-up, so a step asks everything it needs to decide at
//! once, then acts).
//!
//! A [`Probe`] lists the questions: which packages are installed, whether paths exist, the
//! state of systemd units, file contents, and the output of read-only commands. It can start
//! with the readiness wait of [`crate::step::READY_SCRIPT`], so "is the guest usable" and
//! "what is in it" are one call. [`PROBE_SCRIPT`] is fixed text; every value (package names,
//! paths, argv) reaches it as a positional parameter, never as code. The answers come back one
//! line per question, base64-encoded, so no content can break the framing.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::Ctid;
use crate::error::{Error, ErrorKind, Result};
use crate::guest::PACKAGE_NAME;
use crate::pct::{ExecOutput, PctClient};

/// The probe, run as `bash -c PROBE_SCRIPT _ READY_MS ITEMS...`. `READY_MS` is `-` (no wait) or
/// the readiness timeout in ms (the wait of [`crate::step::READY_SCRIPT`]: exit 124 with the
/// last `is-system-running` state when the time is up). Items: `pkgs N NAME...`,
/// `exists PATH`, `unit NAME`, `read PATH`, `cmd N ARG...`. Prints `phoenix-probe` and then,
/// per item, `CODE B64(STDOUT) B64(STDERR)` on one line.
pub const PROBE_SCRIPT: &str = r#"if [ "$1" != - ]; then
  end=$(( $(date +%s%3N) + $1 ))
  while command -v systemctl >/dev/null 2>&1; do
    s=$(systemctl is-system-running 2>/dev/null)
    case "$s" in running|degraded|offline) break ;; esac
    if [ "$(date +%s%3N)" -ge "$end" ]; then echo "$s"; exit 124; fi
    sleep 0.05
  done
fi
shift
o=$(mktemp) && e=$(mktemp) || exit 125
trap 'rm -f -- "$o" "$e"' EXIT
echo phoenix-probe
while [ $# -gt 0 ]; do
  k=$1; shift
  : >"$o"; : >"$e"
  case "$k" in
    pkgs) n=$1; shift; dpkg-query -W -f '${Package}\t${db:Status-Status}\n' "${@:1:$n}" >"$o" 2>"$e"; c=$?; shift "$n" ;;
    exists) [ -e "$1" ]; c=$?; shift ;;
    unit) x=$(systemctl is-enabled "$1" 2>/dev/null); y=$(systemctl is-active "$1" 2>/dev/null)
      printf '%s\n%s\n' "$x" "$y" >"$o"; c=0; shift ;;
    read) if [ -e "$1" ]; then cat -- "$1" >"$o" 2>"$e"; c=$?; else c=100; fi; shift ;;
    cmd) n=$1; shift; "${@:1:$n}" >"$o" 2>"$e" </dev/null; c=$?; shift "$n" ;;
    *) echo "probe: unknown item '$k'" >&2; exit 125 ;;
  esac
  printf '%s %s %s\n' "$c" "$(base64 -w0 <"$o")" "$(base64 -w0 <"$e")"
done"#;

/// The exit code of a `read` item whose file does not exist.
pub const ABSENT: i32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Item {
    Packages(Vec<String>),
    Exists(String),
    Unit(String),
    Read(String),
    Cmd(Vec<String>),
}

/// The questions of one probe.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    items: Vec<Item>,
    ready: Option<Duration>,
}

/// A read-only command's result inside the probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdResult {
    /// Its exit code (127: not found).
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl CmdResult {
    /// Exit 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// The answers of a probe. Asking for something the probe did not ask is a bug: it panics.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    answers: HashMap<Item, CmdResult>,
}

impl Probe {
    /// An empty probe.
    pub fn new() -> Probe {
        Probe::default()
    }

    /// Wait for the guest to have booted first (up to `timeout`), as [`crate::step::wait_ready`].
    pub fn ready(mut self, timeout: Duration) -> Probe {
        self.ready = Some(timeout);
        self
    }

    /// Which of `packages` are installed (one `dpkg-query -W`). Names must be valid Debian
    /// package names.
    pub fn packages(mut self, packages: &[&str]) -> Probe {
        if !packages.is_empty() {
            self.items.push(Item::Packages(
                packages.iter().map(|s| s.to_string()).collect(),
            ));
        }
        self
    }

    /// Whether `path` exists.
    pub fn exists(mut self, path: &str) -> Probe {
        self.items.push(Item::Exists(path.to_string()));
        self
    }

    /// Whether systemd unit `unit` is enabled and active.
    pub fn unit(mut self, unit: &str) -> Probe {
        self.items.push(Item::Unit(unit.to_string()));
        self
    }

    /// The content of `path`, if it exists.
    pub fn read(mut self, path: &str) -> Probe {
        self.items.push(Item::Read(path.to_string()));
        self
    }

    /// The result of the read-only command `argv` (stdin is `/dev/null`).
    pub fn cmd(mut self, argv: &[&str]) -> Probe {
        self.items
            .push(Item::Cmd(argv.iter().map(|s| s.to_string()).collect()));
        self
    }

    /// The positional parameters of [`PROBE_SCRIPT`].
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![match self.ready {
            Some(t) => t.as_millis().to_string(),
            None => "-".to_string(),
        }];
        for item in &self.items {
            match item {
                Item::Packages(p) => {
                    a.push("pkgs".into());
                    a.push(p.len().to_string());
                    a.extend(p.iter().cloned());
                }
                Item::Exists(p) => a.extend(["exists".into(), p.clone()]),
                Item::Unit(u) => a.extend(["unit".into(), u.clone()]),
                Item::Read(p) => a.extend(["read".into(), p.clone()]),
                Item::Cmd(argv) => {
                    a.push("cmd".into());
                    a.push(argv.len().to_string());
                    a.extend(argv.iter().cloned());
                }
            }
        }
        a
    }

    /// Run the probe in CT `ctid` (one `pct exec`, also in dry-run mode: it changes nothing).
    /// A guest that does not become ready in time is a Timeout error (exit 6); `pct exec`
    /// failing (CT missing or not running) is the Proxmox/precondition error of
    /// [`PctClient::exec_script_query`].
    pub fn run(&self, pct: &PctClient, ctid: Ctid) -> Result<Facts> {
        for item in &self.items {
            if let Item::Packages(p) = item
                && let Some(bad) = p.iter().find(|p| !PACKAGE_NAME.is_match(p))
            {
                return Err(Error::config(format!(
                    "CT {ctid}: `{bad}` is not a valid Debian package name"
                ))
                .into());
            }
        }
        let args = self.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = pct.exec_script_query(ctid, PROBE_SCRIPT, &args)?;
        self.parse(ctid, &out)
    }

    fn parse(&self, ctid: Ctid, out: &ExecOutput) -> Result<Facts> {
        if out.code == 124 && self.ready.is_some() {
            let t = self.ready.unwrap_or_default();
            return Err(Error::timeout(format!(
                "CT {ctid} did not become ready within {} s (last: `systemctl is-system-running` says {:?})\nhint: check `pct status {ctid}` and the container's console; raise behavior.ready_timeout_s if it boots slowly",
                crate::step::fmt_secs(t),
                out.stdout.trim()
            ))
            .into());
        }
        let bad = |why: &str| -> anyhow::Error {
            Error::new(
                ErrorKind::Guest,
                format!(
                    "CT {ctid}: the state probe failed inside the container ({why}; exit {}): {}",
                    out.code,
                    out.tail(1500)
                ),
            )
            .into()
        };
        if out.code != 0 {
            return Err(bad("it did not finish"));
        }
        let mut lines = out.stdout.lines();
        if lines.next() != Some("phoenix-probe") {
            return Err(bad("no answer"));
        }
        let mut answers = HashMap::new();
        for item in &self.items {
            let line = lines.next().ok_or_else(|| bad("too few answers"))?;
            let mut f = line.split(' ');
            let (Some(code), Some(o), Some(e), None) = (f.next(), f.next(), f.next(), f.next())
            else {
                return Err(bad("a malformed answer"));
            };
            let code = code.parse().map_err(|_| bad("a malformed exit code"))?;
            let text = |b: &str| -> Result<String> {
                let bytes = decode_base64(b).ok_or_else(|| bad("malformed base64"))?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            };
            answers.insert(
                item.clone(),
                CmdResult {
                    code,
                    stdout: text(o)?,
                    stderr: text(e)?,
                },
            );
        }
        Ok(Facts { answers })
    }
}

impl Facts {
    fn get(&self, item: &Item) -> &CmdResult {
        self.answers
            .get(item)
            .unwrap_or_else(|| panic!("the probe did not ask for {item:?}"))
    }

    /// Those of `packages` that are not installed, in their order. Each must be in one
    /// [`Probe::packages`] set asked (any of them).
    pub fn missing(&self, packages: &[&str]) -> Vec<String> {
        let installed: Vec<&str> = self
            .answers
            .iter()
            .filter(|(k, _)| matches!(k, Item::Packages(_)))
            .flat_map(|(_, r)| r.stdout.lines())
            .filter_map(|l| l.split_once('\t'))
            .filter(|(_, status)| status.trim() == "installed")
            .map(|(name, _)| name.trim())
            .collect();
        for p in packages {
            assert!(
                self.answers
                    .keys()
                    .any(|k| matches!(k, Item::Packages(l) if l.iter().any(|x| x == p))),
                "the probe did not ask for package {p}"
            );
        }
        packages
            .iter()
            .filter(|p| !installed.contains(p))
            .map(|p| p.to_string())
            .collect()
    }

    /// Whether `package` is installed.
    pub fn installed(&self, package: &str) -> bool {
        self.missing(&[package]).is_empty()
    }

    /// Whether `path` exists.
    pub fn exists(&self, path: &str) -> bool {
        self.get(&Item::Exists(path.to_string())).success()
    }

    /// Whether `unit` is enabled and whether it is active.
    pub fn unit(&self, unit: &str) -> (bool, bool) {
        let r = self.get(&Item::Unit(unit.to_string()));
        let mut lines = r.stdout.lines().map(str::trim);
        let enabled = lines.next() == Some("enabled");
        let active = lines.next() == Some("active");
        (enabled, active)
    }

    /// The content of `path`, `None` when it does not exist. A file that exists but cannot be
    /// read is a Guest error.
    pub fn read(&self, ctid: Ctid, path: &str) -> Result<Option<&str>> {
        let r = self.get(&Item::Read(path.to_string()));
        match r.code {
            0 => Ok(Some(&r.stdout)),
            ABSENT => Ok(None),
            c => Err(Error::guest(format!(
                "CT {ctid}: cannot read `{path}` (exit {c}): {}",
                r.stderr.trim()
            ))
            .into()),
        }
    }

    /// The result of command `argv`.
    pub fn cmd(&self, argv: &[&str]) -> &CmdResult {
        self.get(&Item::Cmd(argv.iter().map(|s| s.to_string()).collect()))
    }
}

/// Standard base64 (RFC 4648, with padding), as `base64 -w0` prints it (a probe's answers and
/// other framed guest output), decoded; `None` when malformed.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for chunk in b.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_what_coreutils_prints() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64("aGVsbG8KIHdvcmxk").unwrap(), b"hello\n world");
        assert!(decode_base64("Zm9").is_none());
        assert!(decode_base64("Zm9*").is_none());
    }

    /// Runs the real script with bash on this machine (stand-ins for dpkg-query and systemctl
    /// on PATH), so the framing is tested end to end.
    #[test]
    fn the_script_answers_every_question_in_order() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = |name: &str, body: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        tool(
            "dpkg-query",
            r#"shift 3; for p in "$@"; do [ "$p" = jq ] && printf 'jq\tinstalled\n'; done; [ "$#" = 1 ]"#,
        );
        tool(
            "systemctl",
            r#"case "$1" in is-system-running) echo running;; is-enabled) echo enabled;; is-active) echo inactive; exit 3;; esac"#,
        );
        let file = d.path().join("f");
        std::fs::write(&file, "a b\n\nweird $1 `x` 'q'\n").unwrap();
        let p = Probe::new()
            .ready(Duration::from_secs(5))
            .packages(&["jq", "nvtop"])
            .exists(file.to_str().unwrap())
            .exists("/nonexistent/x")
            .unit("docker")
            .read(file.to_str().unwrap())
            .read("/nonexistent/y")
            .cmd(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
        let args = p.args();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(PROBE_SCRIPT)
            .arg("_")
            .args(&args)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap();
        let out = ExecOutput {
            code: out.status.code().unwrap(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        };
        let f = p.parse(Ctid(901), &out).unwrap();
        assert_eq!(f.missing(&["jq", "nvtop"]), vec!["nvtop".to_string()]);
        assert!(f.installed("jq"));
        assert!(f.exists(file.to_str().unwrap()));
        assert!(!f.exists("/nonexistent/x"));
        assert_eq!(f.unit("docker"), (true, false));
        assert_eq!(
            f.read(Ctid(901), file.to_str().unwrap()).unwrap(),
            Some("a b\n\nweird $1 `x` 'q'\n")
        );
        assert_eq!(f.read(Ctid(901), "/nonexistent/y").unwrap(), None);
        let c = f.cmd(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
        assert_eq!(
            (c.code, c.stdout.as_str(), c.stderr.as_str()),
            (3, "out\n", "err\n")
        );
    }

    #[test]
    fn a_guest_that_does_not_boot_is_a_timeout() {
        let p = Probe::new().ready(Duration::from_millis(300)).exists("/x");
        let out = ExecOutput {
            code: 124,
            stdout: "starting\n".into(),
            stderr: String::new(),
        };
        let err = p.parse(Ctid(950), &out).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 6);
        assert!(err.to_string().contains("CT 950"), "{err}");
        let out = ExecOutput {
            code: 0,
            stdout: "phoenix-probe\n".into(),
            stderr: String::new(),
        };
        let err = p.parse(Ctid(950), &out).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 5);
    }
}
