//! Running one step program: by full path under PREFIX/bin with the design document's `.sh`
//! name, positional arguments only, the configuration and log locations (and the step's own
//! variables) in its environment; every line it prints goes into the shared log as
//! `[CTID] <step>: <line>`, and the last lines are kept to explain a failure.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::Ctid;
use crate::error::ErrorKind;
use crate::paths;

/// Which program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    InitialSetup,
    CreateLxc,
    CloneLxc,
    LxcNvidia,
    LxcDocker,
    Setup(Ctid),
}

impl Step {
    /// The design document's program name, without `.sh`.
    pub fn design_name(self) -> String {
        match self {
            Step::InitialSetup => crate::step::INITIAL_SETUP.into(),
            Step::CreateLxc => crate::step::CREATE_LXC.into(),
            Step::CloneLxc => crate::step::CLONE_LXC.into(),
            Step::LxcNvidia => crate::step::LXC_NVIDIA.into(),
            Step::LxcDocker => crate::step::LXC_DOCKER.into(),
            Step::Setup(c) => paths::setup_step_name(c.0),
        }
    }

    /// Short name for output and log lines (`clone-lxc`, `setup_950`).
    pub fn label(self) -> String {
        match self {
            Step::InitialSetup => "initial-setup".into(),
            Step::CreateLxc => "create-lxc".into(),
            Step::CloneLxc => "clone-lxc".into(),
            Step::LxcNvidia => "lxc-nvidia".into(),
            Step::LxcDocker => "lxc-docker".into(),
            Step::Setup(c) => format!("setup_{c}"),
        }
    }

    /// `PREFIX/bin/<design name>.sh`.
    pub fn path(self) -> PathBuf {
        paths::step_path(&self.design_name())
    }
}

/// Whether `path` is there and executable (following symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    Executable,
    Missing,
    NotExecutable,
}

pub fn presence(path: &Path) -> Presence {
    match std::fs::metadata(path) {
        Err(_) => Presence::Missing,
        Ok(m) if !m.is_file() => Presence::NotExecutable,
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Presence::NotExecutable,
        Ok(_) => Presence::Executable,
    }
}

/// Whether the program at `step`'s path is our own build of that step (the installed binary,
/// or the build output it links to), not a drop-in: a compiled program (ELF) whose file name is
/// the step's. Our create-lxc and clone-lxc exit 0 only with the CT started and ready, so the
/// orchestrator does not ask again after them (one `pct exec` per CT, issue 14); after a
/// drop-in script it does.
pub fn is_own_program(step: Step) -> bool {
    let Ok(real) = std::fs::canonicalize(step.path()) else {
        return false;
    };
    let Some(name) = real.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let want = step.design_name();
    let named = name == want || paths::installed_name(name).as_deref() == Some(want.as_str());
    let mut magic = [0u8; 4];
    let elf = std::fs::File::open(&real)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == *b"\x7fELF";
    named && elf
}

/// Where the steps find the configuration and the log.
#[derive(Debug, Clone)]
pub struct StepEnv {
    pub lxc_config: PathBuf,
    pub hypervisor_config: PathBuf,
    pub log_file: PathBuf,
    /// `PHOENIX_LOG_LEVEL` for the steps when the run sets one (`behavior.debug_mode`).
    pub log_level: Option<&'static str>,
    /// This run's record of created CTs (`crate::ownership`), once the run holds the lock.
    pub created_record: Option<PathBuf>,
}

/// A step that did not succeed.
#[derive(Debug, Clone)]
pub struct StepFailure {
    pub step: String,
    /// Exit code; `None` when killed by a signal or when it could not be started.
    pub code: Option<i32>,
    /// The last lines of its stderr (stdout when stderr was empty), or why it did not start.
    pub tail: Vec<String>,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => {
                let what = match ErrorKind::from_exit_code(c) {
                    ErrorKind::Config => "bad input or config",
                    ErrorKind::Precondition => "a precondition is unmet",
                    ErrorKind::Proxmox => "a Proxmox command failed",
                    ErrorKind::Guest => "a command in the container failed",
                    ErrorKind::Timeout => "timed out",
                    ErrorKind::Other => "failed",
                };
                write!(f, "{} exited {c} ({what})", self.step)?;
            }
            None => write!(f, "{} did not finish", self.step)?,
        }
        if !self.tail.is_empty() {
            write!(f, ": {}", self.tail.join(" | "))?;
        }
        Ok(())
    }
}

/// Lines kept from a step's output, and shown of them in a failure message.
const TAIL_LINES: usize = 20;
const SHOWN_LINES: usize = 6;

/// Run `step args...` for `ctid`, with `vars` set (and the other [`crate::env::STEP_OVERRIDES`] removed); wait
/// for it. Its output goes to the log line by line.
pub fn run_step(
    step: Step,
    ctid: Option<Ctid>,
    args: &[String],
    vars: &[(&str, String)],
    env: &StepEnv,
) -> Result<(), StepFailure> {
    let label = step.label();
    let prefix = ctid.map(|c| format!("[{c}] ")).unwrap_or_default();
    let path = step.path();
    let mut cmd = Command::new(&path);
    cmd.args(args)
        .env(crate::env::LXC_CONFIG_FILE, &env.lxc_config)
        .env(crate::env::HYPERVISOR_CONFIG_FILE, &env.hypervisor_config)
        .env(crate::env::LOG_FILE, &env.log_file)
        .env(crate::env::PREFIX, paths::prefix())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in crate::env::STEP_OVERRIDES {
        cmd.env_remove(v);
    }
    if let Some(level) = env.log_level {
        cmd.env(crate::env::LOG_LEVEL, level);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    // The steps share this run's lock (`lock::for_step`) and record what they create.
    cmd.env(super::lock::HOLDER_ENV, std::process::id().to_string());
    match &env.created_record {
        Some(r) => cmd.env(crate::ownership::CREATED_RECORD_ENV, r),
        None => cmd.env_remove(crate::ownership::CREATED_RECORD_ENV),
    };
    if let Some(sig) = crate::signals::interrupted() {
        return Err(StepFailure {
            step: label,
            code: None,
            tail: vec![format!(
                "not started: the run was interrupted by {}",
                crate::signals::name(sig)
            )],
        });
    }
    log::info!(
        "{prefix}running {} {}",
        path.display(),
        crate::pct::display_argv(args)
    );
    let mut child = cmd.spawn().map_err(|e| StepFailure {
        step: label.clone(),
        code: None,
        tail: vec![format!("cannot run `{}`: {e}", path.display())],
    })?;
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout = child.stdout.take().expect("piped stdout");
    let (out_tail, err_tail) = std::thread::scope(|s| {
        let err = s.spawn(|| pump(stderr, &prefix, &label));
        let out = pump(stdout, &prefix, &label);
        (out, err.join().unwrap_or_default())
    });
    let status = child.wait().map_err(|e| StepFailure {
        step: label.clone(),
        code: None,
        tail: vec![format!("cannot wait for `{}`: {e}", path.display())],
    })?;
    if status.success() {
        return Ok(());
    }
    let tail = if err_tail.is_empty() {
        out_tail
    } else {
        err_tail
    };
    // The step's warnings (e.g. about the config) are in the log; the error says why it failed.
    let mut tail: Vec<String> = if tail.iter().any(|l| !is_warning(l)) {
        tail.into_iter().filter(|l| !is_warning(l)).collect()
    } else {
        tail.into_iter().collect()
    };
    if tail.len() > SHOWN_LINES {
        tail.drain(..tail.len() - SHOWN_LINES);
    }
    if status.code().is_none() {
        tail.push(format!("killed by a signal ({status})"));
    }
    Err(StepFailure {
        step: label,
        code: status.code(),
        tail,
    })
}

fn is_warning(line: &str) -> bool {
    line.starts_with("warning:")
}

/// Copy lines of `r` into the log; return the last few (non-empty) ones.
fn pump(r: impl Read, prefix: &str, label: &str) -> VecDeque<String> {
    let mut tail = VecDeque::new();
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end();
                if line.is_empty() {
                    continue;
                }
                // Our steps start their lines with the same `[CTID] `: say it once.
                let shown = if prefix.is_empty() {
                    line
                } else {
                    line.strip_prefix(prefix).unwrap_or(line)
                };
                log::info!("{prefix}{label}: {shown}");
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.to_string());
            }
        }
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design_document() {
        assert_eq!(
            Step::CloneLxc.path().file_name().unwrap(),
            "phoenix_hypervisor_clone_lxc.sh"
        );
        assert_eq!(
            Step::Setup(Ctid(950)).path().file_name().unwrap(),
            "phoenix_hypervisor_setup_950.sh"
        );
        assert_eq!(Step::Setup(Ctid(950)).label(), "setup_950");
    }

    #[test]
    fn presence_checks_the_execute_bit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.sh");
        assert_eq!(presence(&p), Presence::Missing);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        assert_eq!(presence(&p), Presence::NotExecutable);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(presence(&p), Presence::Executable);
        assert_eq!(presence(d.path()), Presence::NotExecutable);
    }

    #[test]
    fn failure_message_names_step_code_and_tail() {
        let f = StepFailure {
            step: "clone-lxc".into(),
            code: Some(4),
            tail: vec!["error: CT 902: `pct clone` failed".into()],
        };
        assert_eq!(
            f.to_string(),
            "clone-lxc exited 4 (a Proxmox command failed): error: CT 902: `pct clone` failed"
        );
    }
}
