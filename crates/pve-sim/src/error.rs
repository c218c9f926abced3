//! The failures a simulated Proxmox command can end with, and how each one is printed
//! (`proxmox.md` section 0): getopt/usage errors, schema errors, plain `die`s and task
//! failures. One place decides stderr text and exit code.

use std::collections::BTreeMap;

#[derive(Debug)]
pub enum PveError {
    /// `400 <msg>` + usage line, after optional getopt warnings (`Unknown option: x`).
    Usage { pre: Vec<String>, msg: String },
    /// `400 Parameter verification failed.` + `param: msg` lines + usage.
    Params(BTreeMap<String, String>),
    /// A plain `die` or a failed task: the message on stderr, exit `code` (255 normally,
    /// 0 for task failures of template/push/pull).
    Fail { msg: String, code: i32 },
}

pub type PveResult<T> = Result<T, PveError>;

impl PveError {
    pub fn die(msg: impl Into<String>) -> Self {
        PveError::Fail {
            msg: msg.into(),
            code: 255,
        }
    }
    /// Task failure that Proxmox does not map to an exit code (template, push, pull).
    pub fn task_exit0(msg: impl Into<String>) -> Self {
        PveError::Fail {
            msg: msg.into(),
            code: 0,
        }
    }
    pub fn usage(msg: impl Into<String>) -> Self {
        PveError::Usage {
            pre: Vec::new(),
            msg: msg.into(),
        }
    }
    pub fn param(name: impl Into<String>, msg: impl Into<String>) -> Self {
        let mut m = BTreeMap::new();
        m.insert(name.into(), msg.into());
        PveError::Params(m)
    }

    /// Render for stderr given the command's usage line; returns (text, exit code).
    pub fn render(&self, usage: &str) -> (String, i32) {
        match self {
            PveError::Usage { pre, msg } => {
                let mut s = String::new();
                for p in pre {
                    s.push_str(p);
                    s.push('\n');
                }
                s.push_str(&format!("400 {msg}\n{usage}\n"));
                (s, 255)
            }
            PveError::Params(errs) => {
                let mut s = String::from("400 Parameter verification failed.\n");
                for (k, v) in errs {
                    s.push_str(&format!("{k}: {v}\n"));
                }
                s.push_str(usage);
                s.push('\n');
                (s, 255)
            }
            PveError::Fail { msg, code } => {
                let mut s = msg.clone();
                if !s.ends_with('\n') {
                    s.push('\n');
                }
                (s, *code)
            }
        }
    }
}

impl From<std::io::Error> for PveError {
    fn from(e: std::io::Error) -> Self {
        PveError::die(format!("pve-sim: {e}"))
    }
}

impl From<anyhow::Error> for PveError {
    fn from(e: anyhow::Error) -> Self {
        PveError::die(format!("{e:#}"))
    }
}
