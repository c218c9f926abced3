//! Error kinds shared by every program, and the single mapping from an error to an exit code
//! (`architecture.md`, "Step contracts" and "Orchestrator").
//!
//! Code raises an [`Error`] of the right [`ErrorKind`] where the cause is known (bad config, CT
//! missing, `pct` failed, ...) and may wrap it in `anyhow` context on the way up; [`exit_code`]
//! finds the innermost kind in the chain. Anything without a kind is `1`.

use std::fmt;

/// What went wrong, as far as the caller (a person or the orchestrator) needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad usage, input or configuration; nothing was changed. Exit 2.
    Config,
    /// A precondition is unmet: CT or snapshot missing, host device or driver missing, not a
    /// Proxmox host. Exit 3.
    Precondition,
    /// A Proxmox command (`pct`, `pvesm`) failed. Exit 4.
    Proxmox,
    /// A command inside the container failed. Exit 5.
    Guest,
    /// Timed out waiting. Exit 6.
    Timeout,
    /// Anything else. Exit 1.
    Other,
}

/// The exit status of `phoenix_establish_hypervisor` (README, "Steps and exit codes"); a step's
/// is its [`ErrorKind`]. Both become numbers only here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunExit {
    /// Every container processed (`--validate`: valid; `--status`: the host matches).
    Ok,
    /// Some container failed or was skipped (`--status`: something differs or is missing).
    SomeFailed,
    /// Invalid configuration; nothing on the host was touched.
    Config,
    /// Initial setup failed.
    InitialSetup,
    /// A required step program is missing or not executable.
    MissingStep,
    /// Another run holds the run lock.
    Locked,
    /// A signal (its number) interrupted the run: exit 128 + the signal.
    Interrupted(i32),
}

impl RunExit {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            RunExit::Ok => 0,
            RunExit::SomeFailed => 1,
            RunExit::Config => 2,
            RunExit::InitialSetup => 3,
            RunExit::MissingStep => 4,
            RunExit::Locked => 5,
            RunExit::Interrupted(sig) => 128 + sig,
        }
    }
}

impl ErrorKind {
    /// The step exit code of this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Config => 2,
            ErrorKind::Precondition => 3,
            ErrorKind::Proxmox => 4,
            ErrorKind::Guest => 5,
            ErrorKind::Timeout => 6,
            ErrorKind::Other => 1,
        }
    }

    /// The kind a step's exit code stands for (the orchestrator reads its children this way).
    pub fn from_exit_code(code: i32) -> ErrorKind {
        match code {
            2 => ErrorKind::Config,
            3 => ErrorKind::Precondition,
            4 => ErrorKind::Proxmox,
            5 => ErrorKind::Guest,
            6 => ErrorKind::Timeout,
            _ => ErrorKind::Other,
        }
    }
}

/// An error with a kind and a message meant for an administrator: it names the CTID, field or
/// path and, where there is one, says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong, for the exit code.
    pub kind: ErrorKind,
    /// For people: names the CTID, field or path and says what to do.
    pub message: String,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    /// Bad usage, input or configuration (exit 2).
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    /// A precondition is unmet (exit 3).
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Precondition, message)
    }
    /// A Proxmox command failed (exit 4).
    pub fn proxmox(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Proxmox, message)
    }
    /// A command inside the container failed (exit 5).
    pub fn guest(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Guest, message)
    }
    /// Timed out waiting (exit 6).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// `anyhow`'s result, the library's default.
pub type Result<T, E = anyhow::Error> = std::result::Result<T, E>;

/// The kind of an error chain: the first [`Error`] found from the outside in; `Other` if none.
pub fn kind_of(err: &anyhow::Error) -> ErrorKind {
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>().map(|e| e.kind))
        .unwrap_or(ErrorKind::Other)
}

/// The exit code for an error chain. The one place errors become exit codes.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    kind_of(err).exit_code()
}

/// Shorthand: `bail_kind!(Config, "CT {ctid}: ...")`.
#[macro_export]
macro_rules! bail_kind {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::error::Error::new($crate::error::ErrorKind::$kind, format!($($arg)*)).into())
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn kind_survives_context() {
        let err: anyhow::Error = Error::proxmox("pct clone failed").into();
        let err = err.context("CT 901: clone");
        assert_eq!(exit_code(&err), 4);
        let plain = anyhow::anyhow!("boom");
        assert_eq!(exit_code(&plain), 1);
        let r: Result<()> = Err(Error::timeout("t")).context("x");
        assert_eq!(exit_code(&r.unwrap_err()), 6);
    }

    #[test]
    fn codes_round_trip() {
        for k in [
            ErrorKind::Config,
            ErrorKind::Precondition,
            ErrorKind::Proxmox,
            ErrorKind::Guest,
            ErrorKind::Timeout,
            ErrorKind::Other,
        ] {
            assert_eq!(ErrorKind::from_exit_code(k.exit_code()), k);
        }
    }
}
