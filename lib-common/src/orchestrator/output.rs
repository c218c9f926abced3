//! `--output json`: one JSON document on stdout for `--validate`, `--dry-run`, `--status` and a
//! run's summary; the human lines go to stderr instead. Its shape is
//! `etc/phoenix_output.schema.json` (tested against the output).

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::config::Ctid;
use crate::drift::{Class, Diff};
use crate::validate::{Diagnostic, Severity};

static JSON: AtomicBool = AtomicBool::new(false);
static PRINTED: AtomicBool = AtomicBool::new(false);

/// Whether a document was printed already (each run prints exactly one in JSON mode).
pub fn printed() -> bool {
    PRINTED.load(Ordering::SeqCst)
}

/// Switch this process to JSON output (human lines go to stderr).
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::SeqCst);
}

/// Whether this process prints a JSON document on stdout.
pub fn is_json() -> bool {
    JSON.load(Ordering::SeqCst)
}

/// A line for people: stdout, or stderr in JSON mode.
pub fn human(line: &str) {
    if is_json() {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// What produced the document.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `--validate`.
    Validate,
    /// `--dry-run`.
    DryRun,
    /// `--status`.
    Status,
    /// A normal run (its summary).
    Run,
}

/// The document.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    /// Always `1` for this shape.
    pub version: u32,
    /// What produced it.
    pub mode: Mode,
    /// The program's exit status.
    pub exit_code: i32,
    /// `--status`: whether the host matches the configuration; `null` otherwise.
    pub in_sync: Option<bool>,
    /// One entry per configured CT (and, in a run, per CT of ours no longer configured).
    pub containers: Vec<CtEntry>,
    /// CTs of ours that the configuration no longer lists.
    pub unlisted: Vec<UnlistedEntry>,
    /// `--validate` (and a refused configuration): errors and warnings.
    pub diagnostics: Vec<DiagEntry>,
}

impl Document {
    /// An empty document.
    pub fn new(mode: Mode) -> Document {
        Document {
            version: 1,
            mode,
            exit_code: 0,
            in_sync: None,
            containers: Vec::new(),
            unlisted: Vec::new(),
            diagnostics: Vec::new(),
        }
    }

    /// Print it on stdout (JSON mode only), with `exit_code`, and return that code.
    pub fn finish(mut self, exit: crate::RunExit) -> crate::RunExit {
        self.exit_code = exit.code();
        if is_json() && !PRINTED.swap(true, Ordering::SeqCst) {
            match serde_json::to_string_pretty(&self) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("error: cannot write the JSON document: {e}"),
            }
        }
        exit
    }
}

/// One container.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CtEntry {
    /// CTID.
    pub ctid: u32,
    /// Its hostname in the configuration (or on the host for an unlisted CT).
    pub name: String,
    /// Whether it exists (`null` where not looked at).
    pub exists: Option<bool>,
    /// Whether it runs.
    pub running: Option<bool>,
    /// Whether it has the `phoenix-managed` tag.
    pub ours: Option<bool>,
    /// Whether it has a complete `configured-state` snapshot.
    pub configured_state: Option<bool>,
    /// Its differences from its block.
    pub drift: Vec<DriftEntry>,
    /// `--dry-run`: the plan's lines for this CT.
    pub plan: Vec<String>,
    /// A run: what was done (`create`, `clone from 900`, `apply drift`, ...).
    pub action: Option<String>,
    /// A run: how it ended, as in the summary table.
    pub result: Option<String>,
    /// A run: whether it counts as success.
    pub success: Option<bool>,
    /// A run: seconds spent on it.
    pub seconds: Option<f64>,
}

/// One difference.
#[derive(Debug, Clone, Serialize)]
pub struct DriftEntry {
    /// The block's field.
    pub field: String,
    /// What the CT has.
    pub old: String,
    /// What the block says.
    pub new: String,
    /// `in_place`, `in_place_restart` or `recreate`.
    pub class: Class,
}

impl From<&Diff> for DriftEntry {
    fn from(d: &Diff) -> Self {
        DriftEntry {
            field: d.field.to_string(),
            old: d.old.clone(),
            new: d.new.clone(),
            class: d.class,
        }
    }
}

/// A CT of ours the configuration does not list.
#[derive(Debug, Clone, Serialize)]
pub struct UnlistedEntry {
    /// CTID.
    pub ctid: u32,
    /// Its hostname.
    pub name: String,
    /// `listed` (left alone), `prune` (destroyed, or would be with `--dry-run`), or `kept`
    /// (a remaining CT needs it).
    pub action: String,
    /// Why it is kept.
    pub reason: Option<String>,
}

/// One validation problem.
#[derive(Debug, Clone, Serialize)]
pub struct DiagEntry {
    /// `error` or `warning`.
    pub severity: String,
    /// The file.
    pub file: String,
    /// JSON Pointer of the value (`""` for the whole file).
    pub pointer: String,
    /// The CT it belongs to.
    pub ctid: Option<u32>,
    /// What is wrong and what to do.
    pub message: String,
}

impl From<&Diagnostic> for DiagEntry {
    fn from(d: &Diagnostic) -> Self {
        DiagEntry {
            severity: match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            }
            .into(),
            file: d.file.display().to_string(),
            pointer: d.pointer.clone(),
            ctid: d.ctid.map(|c: Ctid| c.0),
            message: d.message.clone(),
        }
    }
}

/// `--validate --output json`: the document for a validation result (the human report goes to
/// stderr). Returns the exit code.
pub fn validate_document(
    result: &Result<(crate::config::Configs, Vec<Diagnostic>), crate::validate::Report>,
) -> crate::RunExit {
    let mut doc = Document::new(Mode::Validate);
    let code =
        crate::validate::print_validation(result, &mut std::io::stderr(), &mut std::io::stderr());
    let diags: &[Diagnostic] = match result {
        Ok((_, w)) => w,
        Err(r) => &r.diagnostics,
    };
    doc.diagnostics = diags.iter().map(DiagEntry::from).collect();
    doc.finish(code)
}
