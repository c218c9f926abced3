//! Loading and validating both configuration files: JSON Schema (draft-07, formats asserted,
//! every problem reported with its JSON Pointer) plus the semantic rules a schema cannot express
//! (clone sources and cycles, duplicates, hostnames, MACs, features, snapshot names, GPU counts,
//! Portainer, token file modes). [`load_and_validate`] is what steps and the orchestrator call
//! first; `phoenix_establish_hypervisor --validate` prints its [`Report`].
//!
//! Schemas: the LXC schema is `core_paths.lxc_config_schema_file` (under the host root) when that
//! file exists, else PREFIX/etc, else the copy compiled in; the hypervisor schema is PREFIX/etc,
//! else the compiled-in copy.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use crate::config::{self, Configs, ContainerSpec, Ctid, HypervisorConfig, LxcConfigFile};
use crate::json::escape_pointer;
use crate::paths;
use crate::types::{
    self, Bridge, DriverVersion, Features, GpuAssignment, Hostname, IfaceName, ImageRef, Ipv4Cidr,
    MacAddr, ModelName, OsTemplate, ParseError, SnapshotName, Startup, StorageId, Tags,
};

/// The shipped schemas, compiled into every binary (used when PREFIX/etc lacks them).
pub const EMBEDDED_HYPERVISOR_SCHEMA: &str =
    include_str!("../../etc/phoenix_hypervisor_config.schema.json");
/// The shipped LXC schema, compiled in.
pub const EMBEDDED_LXC_SCHEMA: &str = include_str!("../../etc/phoenix_lxc_configs.schema.json");

// ---------------------------------------------------------------------------------------------
// Diagnostics

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Invalid: nothing is done.
    Error,
    /// Worth knowing; the run goes on.
    Warning,
}

/// One problem found in a file. `Display` gives `<file>[:line:col][: <pointer>]: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file concerned (a config file or a schema file).
    pub file: PathBuf,
    /// JSON Pointer (RFC 6901) of the value concerned; empty for the whole file.
    pub pointer: String,
    /// Line and column (1-based), for JSON syntax errors.
    pub position: Option<(usize, usize)>,
    /// The container the problem belongs to, where there is one.
    pub ctid: Option<Ctid>,
    /// What is wrong and what to do.
    pub message: String,
}

impl Diagnostic {
    fn new(severity: Severity, file: &Path, pointer: impl Into<String>, msg: String) -> Self {
        let pointer = pointer.into();
        // Pointers into lxc_configs name their CT; keep it for callers that group by CTID.
        let ctid = pointer
            .strip_prefix("/lxc_configs/")
            .and_then(|r| r.split('/').next())
            .and_then(|c| c.parse().ok());
        Diagnostic {
            severity,
            file: file.to_path_buf(),
            pointer,
            position: None,
            ctid,
            message: msg,
        }
    }
    /// An error at `pointer` of `file`.
    pub fn error(file: &Path, pointer: impl Into<String>, message: String) -> Self {
        Self::new(Severity::Error, file, pointer, message)
    }
    /// A warning at `pointer` of `file`.
    pub fn warning(file: &Path, pointer: impl Into<String>, message: String) -> Self {
        Self::new(Severity::Warning, file, pointer, message)
    }
    /// An error, not a warning.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
    /// `error: <diagnostic>` / `warning: <diagnostic>`, the line printed for people.
    pub fn line(&self) -> String {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        format!("{label}: {self}")
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((l, c)) = self.position {
            write!(f, ":{l}:{c}")?;
        }
        if !self.pointer.is_empty() {
            write!(f, ": {}", self.pointer)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every diagnostic of a failed validation (errors and warnings, in file order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// Errors and warnings, grouped by file and CT.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }
    /// `2 errors, 1 warning`.
    pub fn summary(&self) -> String {
        let e = self.errors().count();
        let w = self.warnings().count();
        format!("{}, {}", plural(e, "error"), plural(w, "warning"))
    }
}

/// `1 warning`, `0 warnings`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{}", d.line())?;
        }
        write!(f, "{}", self.summary())
    }
}

impl std::error::Error for Report {}

/// An invalid configuration is a config error (exit 2) whose message lists every problem.
impl From<Report> for crate::Error {
    fn from(r: Report) -> Self {
        crate::Error::config(format!("invalid configuration:\n{r}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Where things are

/// The files validation reads and the root host paths resolve under. [`Sources::from_env`] is
/// the production setting; tests build one by hand so they need no environment variables.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The hypervisor configuration file.
    pub hypervisor_config: PathBuf,
    /// The LXC configuration file.
    pub lxc_config: PathBuf,
    /// PREFIX/etc, where installed schemas are looked for.
    pub etc_dir: PathBuf,
    /// `PHOENIX_HOST_ROOT` (host-absolute paths of the config are read under it).
    pub host_root: PathBuf,
}

impl Sources {
    /// The locations the environment names (`HYPERVISOR_CONFIG_FILE`, `LXC_CONFIG_FILE`, `PHOENIX_ROOT`, `PHOENIX_HOST_ROOT`).
    pub fn from_env() -> Self {
        Sources {
            hypervisor_config: paths::hypervisor_config_file(),
            lxc_config: paths::lxc_config_file(),
            etc_dir: paths::etc_dir(),
            host_root: paths::host_root(),
        }
    }
}

/// Where a schema came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaSource {
    /// A schema file.
    File(PathBuf),
    /// The copy compiled into the binary, by file name.
    Embedded(&'static str),
}

impl SchemaSource {
    fn path(&self) -> PathBuf {
        match self {
            SchemaSource::File(p) => p.clone(),
            SchemaSource::Embedded(name) => PathBuf::from(format!("<built-in {name}>")),
        }
    }
}

impl fmt::Display for SchemaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path().display())
    }
}

/// A compiled draft-07 schema with format assertion on.
pub struct Schema {
    /// Where it came from.
    pub source: SchemaSource,
    validator: jsonschema::Validator,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schema({})", self.source)
    }
}

impl Schema {
    /// Compile schema text; a problem is a diagnostic on the schema file.
    pub fn compile(source: SchemaSource, text: &str) -> Result<Schema, Diagnostic> {
        let file = source.path();
        let value: Value = serde_json::from_str(text).map_err(|e| {
            let mut d = Diagnostic::error(&file, "", format!("invalid JSON in schema: {e}"));
            d.position = Some((e.line(), e.column()));
            d
        })?;
        let validator = jsonschema::draft7::options()
            .should_validate_formats(true)
            .build(&value)
            .map_err(|e| {
                Diagnostic::error(
                    &file,
                    e.instance_path().as_str().to_string(),
                    format!("not a usable draft-07 schema: {e}"),
                )
            })?;
        Ok(Schema { source, validator })
    }

    /// The compiled-in hypervisor schema.
    pub fn embedded_hypervisor() -> Schema {
        Self::compile(
            SchemaSource::Embedded(paths::HYPERVISOR_SCHEMA_NAME),
            EMBEDDED_HYPERVISOR_SCHEMA,
        )
        .expect("the embedded hypervisor schema compiles (tested)")
    }

    /// The compiled-in LXC schema.
    pub fn embedded_lxc() -> Schema {
        Self::compile(
            SchemaSource::Embedded(paths::LXC_SCHEMA_NAME),
            EMBEDDED_LXC_SCHEMA,
        )
        .expect("the embedded LXC schema compiles (tested)")
    }

    /// Every schema violation of `instance`, one diagnostic each, against `file`.
    pub fn check(&self, file: &Path, instance: &Value) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for err in self.validator.iter_errors(instance) {
            let at = err.instance_path().as_str().to_string();
            match err.kind() {
                // One diagnostic per unknown key, pointing at the key itself.
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for key in unexpected {
                        let ptr = format!("{at}/{}", escape_pointer(key));
                        let msg = if at == "/lxc_configs" {
                            format!(
                                "'{key}' is not a valid CTID key (a Proxmox VMID: 100..999999999, no leading zero)"
                            )
                        } else {
                            format!("unknown key '{key}' (not allowed here; check the spelling)")
                        };
                        out.push(Diagnostic::error(file, ptr, msg));
                    }
                }
                ValidationErrorKind::Required { property } => {
                    let name = property
                        .as_str()
                        .map_or(property.to_string(), str::to_string);
                    out.push(Diagnostic::error(
                        file,
                        at,
                        format!("missing required key '{name}'"),
                    ));
                }
                _ => out.push(Diagnostic::error(file, at, err.to_string())),
            }
        }
        out
    }
}

fn exists(p: &Path) -> bool {
    p.is_file()
}

fn load_schema(candidates: &[PathBuf], embedded: fn() -> Schema) -> Result<Schema, Diagnostic> {
    for c in candidates {
        if exists(c) {
            let text = std::fs::read_to_string(c)
                .map_err(|e| Diagnostic::error(c, "", format!("cannot read schema: {e}")))?;
            return Schema::compile(SchemaSource::File(c.clone()), &text);
        }
    }
    Ok(embedded())
}

/// The hypervisor schema: PREFIX/etc, else the compiled-in copy.
pub fn hypervisor_schema(src: &Sources) -> Result<Schema, Diagnostic> {
    load_schema(
        &[src.etc_dir.join(paths::HYPERVISOR_SCHEMA_NAME)],
        Schema::embedded_hypervisor,
    )
}

/// The LXC schema: `core_paths.lxc_config_schema_file` (read from the raw hypervisor document,
/// under the host root) when it exists, else PREFIX/etc, else the compiled-in copy.
pub fn lxc_schema(src: &Sources, hypervisor: Option<&Value>) -> Result<Schema, Diagnostic> {
    let mut candidates = Vec::new();
    if let Some(p) = hypervisor
        .and_then(|v| v.pointer("/core_paths/lxc_config_schema_file"))
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    {
        candidates.push(paths::under_root(&src.host_root, Path::new(p)));
    }
    candidates.push(src.etc_dir.join(paths::LXC_SCHEMA_NAME));
    load_schema(&candidates, Schema::embedded_lxc)
}

// ---------------------------------------------------------------------------------------------
// Entry points

/// Load both files (`HYPERVISOR_CONFIG_FILE`, `LXC_CONFIG_FILE`, else PREFIX/etc) and validate
/// them. `Ok` carries the typed configs and the warnings; `Err` every problem (exit 2 via
/// `crate::Error`: `Err(report.into())`).
pub fn load_and_validate() -> Result<(Configs, Vec<Diagnostic>), Report> {
    load_and_validate_from(&Sources::from_env())
}

/// [`load_and_validate`] with explicit locations.
pub fn load_and_validate_from(src: &Sources) -> Result<(Configs, Vec<Diagnostic>), Report> {
    let mut diags = Vec::new();
    let hv = read_document(&src.hypervisor_config, &mut diags);
    let lxc = read_document(&src.lxc_config, &mut diags);
    let hv_schema = hypervisor_schema(src).map_err(|d| diags.push(d)).ok();
    let lxc_schema = lxc_schema(src, hv.as_ref()).map_err(|d| diags.push(d)).ok();
    let outcome = check_documents(
        &Documents {
            hypervisor_path: &src.hypervisor_config,
            hypervisor: hv.as_ref(),
            lxc_path: &src.lxc_config,
            lxc: lxc.as_ref(),
        },
        hv_schema.as_ref(),
        lxc_schema.as_ref(),
        &src.host_root,
    );
    diags.extend(outcome.diagnostics);
    match outcome.configs {
        Some(c) if !diags.iter().any(Diagnostic::is_error) => Ok((c, diags)),
        _ => Err(Report { diagnostics: diags }),
    }
}

/// For steps: [`load_and_validate`], warnings logged (`log::warn!`), an invalid configuration
/// as a config error (exit 2) whose message lists every problem.
pub fn load_validated() -> Result<Configs, crate::Error> {
    let (configs, warnings) = load_and_validate()?;
    for w in &warnings {
        log::warn!("{w}");
    }
    Ok(configs)
}

/// `--validate` for people: print every diagnostic to `err` (`error: ...`, `warning: ...`) and
/// a final line to `out` (`configuration is valid (7 containers, 1 warning)` or
/// `2 errors, 1 warning`); returns the exit code (0 valid, 2 invalid).
pub fn print_validation(
    result: &Result<(Configs, Vec<Diagnostic>), Report>,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> crate::RunExit {
    // Output is best effort: a closed stdout must not turn a verdict into a panic.
    match result {
        Ok((configs, warnings)) => {
            for w in warnings {
                let _ = writeln!(err, "{}", w.line());
            }
            let _ = writeln!(
                out,
                "configuration is valid ({}, {})",
                plural(configs.lxc.lxc_configs.len(), "container"),
                plural(warnings.len(), "warning")
            );
            crate::RunExit::Ok
        }
        Err(report) => {
            for d in &report.diagnostics {
                let _ = writeln!(err, "{}", d.line());
            }
            let _ = writeln!(out, "{}", report.summary());
            crate::RunExit::Config
        }
    }
}

/// Read and parse one file; problems (missing, unreadable, bad JSON with line and column) go
/// to `diags`.
pub fn read_document(path: &Path, diags: &mut Vec<Diagnostic>) -> Option<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::error(
                path,
                "",
                format!(
                    "cannot read: {e} (set HYPERVISOR_CONFIG_FILE / LXC_CONFIG_FILE or install the file under PREFIX/etc)"
                ),
            ));
            return None;
        }
    };
    match crate::json::from_str_strict(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut d = Diagnostic::error(path, "", format!("invalid JSON: {e}"));
            d.position = Some((e.line(), e.column()));
            diags.push(d);
            None
        }
    }
}

/// The two parsed documents to check (either may be missing after a read/parse error).
pub struct Documents<'a> {
    /// Where the hypervisor configuration was read.
    pub hypervisor_path: &'a Path,
    /// Its parsed JSON, if it was read.
    pub hypervisor: Option<&'a Value>,
    /// Where the LXC configuration was read.
    pub lxc_path: &'a Path,
    /// Its parsed JSON, if it was read.
    pub lxc: Option<&'a Value>,
}

/// The result of [`check_documents`]: typed configs when both files deserialized, and every
/// diagnostic (errors and warnings).
#[derive(Debug)]
pub struct Outcome {
    /// The typed configurations, when both documents deserialized.
    pub configs: Option<Configs>,
    /// Every diagnostic.
    pub diagnostics: Vec<Diagnostic>,
}

/// Schema-check and semantically check parsed documents. Each file is checked as far as it
/// can be, so one run reports every problem. Where a semantic rule checks a value in full
/// (hostname, MAC, features, snapshot name) its clearer message replaces schema errors at the
/// same pointer.
pub fn check_documents(
    docs: &Documents<'_>,
    hv_schema: Option<&Schema>,
    lxc_schema: Option<&Schema>,
    host_root: &Path,
) -> Outcome {
    let mut schema_diags = Vec::new();
    let mut semantic = Semantic::default();

    // Parse: every value of a domain type, each error at its pointer.
    if let Some(v) = docs.hypervisor {
        parse_values(docs.hypervisor_path, v, HYPERVISOR_VALUES, &mut semantic);
    }
    if let Some(v) = docs.lxc {
        parse_values(docs.lxc_path, v, LXC_VALUES, &mut semantic);
        if let Some(map) = v.get("lxc_configs").and_then(Value::as_object) {
            for (key, block) in map {
                if let Ok(id) = key.parse::<Ctid>() {
                    parse_block(docs.lxc_path, id, block, &mut semantic);
                }
            }
        }
    }
    let hv_parse_failed = semantic.checked_wrong(docs.hypervisor_path);
    let lxc_parse_failed = semantic.checked_wrong(docs.lxc_path);

    // Type: schema errors, and the typed model when the document deserializes.
    let hv = docs.hypervisor.and_then(|v| {
        typed::<HypervisorConfig>(
            docs.hypervisor_path,
            v,
            hv_schema,
            hv_parse_failed,
            &mut schema_diags,
        )
    });
    let lxc = docs.lxc.and_then(|v| {
        typed::<LxcConfigFile>(
            docs.lxc_path,
            v,
            lxc_schema,
            lxc_parse_failed,
            &mut schema_diags,
        )
    });

    // Then the rules across fields, blocks and files.

    // Semantic rules run on every CT block that types, even when another block does not, so a
    // single typo does not hide the other problems.
    let partial;
    let (cts, untyped) = match (&lxc, docs.lxc) {
        (Some(l), _) => (&l.lxc_configs, BTreeSet::new()),
        (None, Some(v)) => {
            let (ok, bad) = typed_blocks(v);
            partial = ok;
            (&partial, bad)
        }
        (None, None) => {
            partial = BTreeMap::new();
            (&partial, BTreeSet::new())
        }
    };
    check_lxc(docs.lxc_path, cts, &untyped, &mut semantic);
    check_clone_disk_sizes(docs.lxc_path, cts, &mut semantic);
    if let Some(hv) = &hv {
        check_cross(docs.hypervisor_path, hv, docs.lxc_path, cts, &mut semantic);
    }
    if let Some(hv) = &hv {
        check_token_files(docs.hypervisor_path, hv, host_root, &mut semantic);
    }

    let mut diagnostics: Vec<Diagnostic> = schema_diags
        .into_iter()
        .filter(|d| {
            !semantic
                .supersedes
                .iter()
                .any(|(f, p)| *f == d.file && *p == d.pointer)
        })
        .collect();
    diagnostics.extend(semantic.diags);
    // Grouped for people: hypervisor file first, then each CT in ascending order (stable, so
    // each group keeps schema-before-semantic order).
    let file_rank = |d: &Diagnostic| usize::from(d.file != docs.hypervisor_path);
    diagnostics.sort_by_key(|d| (file_rank(d), d.ctid));
    let configs = match (hv, lxc) {
        (Some(hypervisor), Some(lxc)) => Some(Configs {
            hypervisor_path: docs.hypervisor_path.to_path_buf(),
            lxc_path: docs.lxc_path.to_path_buf(),
            hypervisor,
            lxc,
        }),
        _ => None,
    };
    Outcome {
        configs,
        diagnostics,
    }
}

/// Schema-check one document and deserialize it. A deserialization error is reported only when
/// neither the schema nor the parse pass (`parse_failed`) found anything (otherwise it repeats
/// their errors less clearly).
fn typed<T: serde::de::DeserializeOwned>(
    path: &Path,
    value: &Value,
    schema: Option<&Schema>,
    parse_failed: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let before = diags.len();
    if let Some(s) = schema {
        diags.extend(s.check(path, value));
    }
    match T::deserialize(value) {
        Ok(t) => Some(t),
        Err(e) => {
            if diags.len() == before && !parse_failed {
                diags.push(Diagnostic::error(
                    path,
                    "",
                    format!("does not match the configuration model: {e}"),
                ));
            }
            None
        }
    }
}

/// The CT blocks of an LXC document that deserialize on their own, and the (valid) CTIDs of
/// those that do not (the schema reports why).
fn typed_blocks(lxc: &Value) -> (BTreeMap<Ctid, ContainerSpec>, BTreeSet<Ctid>) {
    let mut ok = BTreeMap::new();
    let mut bad = BTreeSet::new();
    if let Some(map) = lxc.get("lxc_configs").and_then(Value::as_object) {
        for (k, v) in map {
            let Ok(id) = k.parse::<Ctid>() else { continue };
            match ContainerSpec::deserialize(v) {
                Ok(ct) => {
                    ok.insert(id, ct);
                }
                Err(_) => {
                    bad.insert(id);
                }
            }
        }
    }
    (ok, bad)
}

// ---------------------------------------------------------------------------------------------
// Parse: every value of a domain type, with its pointer

/// Parses one text value; the error names the value and says why.
type Parser = fn(&str) -> Result<(), ParseError>;

fn parses<T: std::str::FromStr<Err = ParseError>>(s: &str) -> Result<(), ParseError> {
    s.parse::<T>().map(drop)
}

fn parses_ipv4(s: &str) -> Result<(), ParseError> {
    types::ipv4_addr(s).map(drop)
}

/// `vllm_model`: `""` means none (as `null` does).
fn parses_model(s: &str) -> Result<(), ParseError> {
    if s.is_empty() {
        Ok(())
    } else {
        parses::<ModelName>(s)
    }
}

/// `network.portainer_server_ip`: optional, `""` means unset.
fn parses_optional_ipv4(s: &str) -> Result<(), ParseError> {
    if s.is_empty() { Ok(()) } else { parses_ipv4(s) }
}

/// (JSON Pointer below the document, the field as people name it, its parser).
type ValueRule = (&'static str, &'static str, Parser);

/// The typed values of `phoenix_hypervisor_config.json`.
const HYPERVISOR_VALUES: &[ValueRule] = &[
    (
        "/docker/portainer_server_image",
        "docker.portainer_server_image",
        parses::<ImageRef>,
    ),
    (
        "/docker/portainer_agent_image",
        "docker.portainer_agent_image",
        parses::<ImageRef>,
    ),
    (
        "/network/portainer_server_ip",
        "network.portainer_server_ip",
        parses_optional_ipv4,
    ),
];

/// The typed top-level values of `phoenix_lxc_configs.json`.
const LXC_VALUES: &[ValueRule] = &[(
    "/nvidia_driver_version",
    "nvidia_driver_version",
    parses::<DriverVersion>,
)];

/// The typed values of one container block, below `/lxc_configs/<ctid>`.
const BLOCK_VALUES: &[ValueRule] = &[
    ("/name", "name", parses::<Hostname>),
    ("/template", "template", parses::<OsTemplate>),
    ("/storage_pool", "storage_pool", parses::<StorageId>),
    (
        "/network_config/name",
        "network_config.name",
        parses::<IfaceName>,
    ),
    (
        "/network_config/bridge",
        "network_config.bridge",
        parses::<Bridge>,
    ),
    (
        "/network_config/ip",
        "network_config.ip",
        parses::<Ipv4Cidr>,
    ),
    ("/network_config/gw", "network_config.gw", parses_ipv4),
    ("/features", "features", parses::<Features>),
    ("/static_ip", "static_ip", parses::<Ipv4Cidr>),
    ("/mac_address", "mac_address", parses::<MacAddr>),
    ("/gpu_assignment", "gpu_assignment", parses::<GpuAssignment>),
    ("/vllm_model", "vllm_model", parses_model),
    (
        "/template_snapshot_name",
        "template_snapshot_name",
        parses::<SnapshotName>,
    ),
    (
        "/clone_from_template_ctid",
        "clone_from_template_ctid",
        parses::<Ctid>,
    ),
    ("/startup", "startup", parses::<Startup>),
    ("/tags", "tags", parses::<Tags>),
];

/// Parse each string at the rules' pointers; a value that does not parse is an error at its
/// pointer naming the field and the value (replacing the schema's less precise errors there).
/// Values of other JSON types are the schema's to report.
fn parse_values(file: &Path, doc: &Value, rules: &[ValueRule], s: &mut Semantic) {
    for &(pointer, field, parse) in rules {
        if let Some(Value::String(text)) = doc.pointer(pointer)
            && let Err(e) = parse(text)
        {
            s.value_error(file, pointer.to_string(), format!("{field} {e}"));
        }
    }
}

/// [`parse_values`] for one container block.
fn parse_block(file: &Path, id: Ctid, block: &Value, s: &mut Semantic) {
    for &(pointer, field, parse) in BLOCK_VALUES {
        if let Some(Value::String(text)) = block.pointer(pointer)
            && let Err(e) = parse(text)
        {
            s.value_error(
                file,
                format!("/lxc_configs/{id}{pointer}"),
                format!("CT {id}: {field} {e}"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Semantic rules

#[derive(Default)]
struct Semantic {
    diags: Vec<Diagnostic>,
    /// (file, pointer) whose value a semantic rule checked in full and found wrong.
    supersedes: Vec<(PathBuf, String)>,
}

impl Semantic {
    fn error(&mut self, file: &Path, ptr: String, msg: String) {
        self.diags.push(Diagnostic::error(file, ptr, msg));
    }
    fn warning(&mut self, file: &Path, ptr: String, msg: String) {
        self.diags.push(Diagnostic::warning(file, ptr, msg));
    }
    /// A rule that checks whole values found one wrong in `file`.
    fn checked_wrong(&self, file: &Path) -> bool {
        self.supersedes.iter().any(|(f, _)| f == file)
    }
    /// An error from a rule that checks the whole value (replaces schema errors there).
    fn value_error(&mut self, file: &Path, ptr: String, msg: String) {
        self.supersedes.push((file.to_path_buf(), ptr.clone()));
        self.error(file, ptr, msg);
    }
}

fn ptr(ctid: Ctid, field: &str) -> String {
    if field.is_empty() {
        format!("/lxc_configs/{ctid}")
    } else {
        format!("/lxc_configs/{ctid}/{field}")
    }
}

/// Whether CT `id` ends up unprivileged: a clone inherits its source's setting (Proxmox cannot
/// change it), so follow the explicit clone sources to the CT that is created. Cycles and
/// undefined sources are reported elsewhere; here they end the walk.
fn effective_unprivileged(id: Ctid, cts: &BTreeMap<Ctid, ContainerSpec>) -> bool {
    let mut ct = &cts[&id];
    for _ in 0..cts.len() {
        match ct.clone_source().and_then(|src| cts.get(&src)) {
            Some(src) => ct = src,
            None => break,
        }
    }
    ct.unprivileged
}

/// The rules on `phoenix_lxc_configs.json` alone. `untyped`: CTs defined in the file whose block
/// is broken (rules about them as clone sources are skipped, not misreported).
fn check_lxc(
    file: &Path,
    cts: &BTreeMap<Ctid, ContainerSpec>,
    untyped: &BTreeSet<Ctid>,
    s: &mut Semantic,
) {
    let mut macs: HashMap<String, Ctid> = HashMap::new();
    let mut ips: HashMap<String, Ctid> = HashMap::new();
    let mut names: HashMap<String, Ctid> = HashMap::new();

    for (&id, ct) in cts {
        // Clone source.
        if let Some(src) = ct.clone_from_template_ctid {
            let p = ptr(id, "clone_from_template_ctid");
            match cts.get(&src) {
                // A broken source block is reported where it is broken.
                None if untyped.contains(&src) => {}
                None => s.error(
                    file,
                    p,
                    format!(
                        "CT {id}: clone_from_template_ctid {src} names a container not defined in lxc_configs (define CT {src} as a template or fix the CTID)"
                    ),
                ),
                Some(sct) => {
                    if !sct.is_template() {
                        s.error(
                            file,
                            p.clone(),
                            format!(
                                "CT {id}: clone source {src} is not a template (set \"is_template\": true and a template_snapshot_name on CT {src}, or clone from a template)"
                            ),
                        );
                    } else if sct.template_snapshot_name.is_none() {
                        s.error(
                            file,
                            p.clone(),
                            format!(
                                "CT {id}: clone source {src} has no template_snapshot_name to clone from"
                            ),
                        );
                    }
                    let src_unprivileged = effective_unprivileged(src, cts);
                    if src_unprivileged != ct.unprivileged && src != id {
                        s.warning(
                            file,
                            ptr(id, "unprivileged"),
                            format!(
                                "CT {id}: unprivileged is {} but its clone source {src} is {}; Proxmox cannot change unprivileged after creation, so the clone will be {} like {src}",
                                ct.unprivileged,
                                if src_unprivileged { "unprivileged" } else { "privileged" },
                                if src_unprivileged { "unprivileged" } else { "privileged" },
                            ),
                        );
                    }
                }
            }
        }

        let unprivileged = effective_unprivileged(id, cts);
        if ct.adds_keyctl(unprivileged) {
            s.warning(
                file,
                ptr(id, "features"),
                format!(
                    "CT {id}: Docker (nesting=1) in an unprivileged container needs keyctl=1, which features lacks; keyctl=1 will be set on the container (add it to features to make this explicit, or set keyctl=0 to refuse it)"
                ),
            );
        }

        if ct.is_template() && ct.template_snapshot_name.is_none() {
            s.error(
                file,
                ptr(id, ""),
                format!(
                    "CT {id}: is_template is true but template_snapshot_name is missing (name the snapshot its clones are made from)"
                ),
            );
        }
        if let Some(tp) = ct.vllm_tensor_parallel_size {
            let gpus = ct.gpus().len();
            if tp as usize > gpus {
                s.error(
                    file,
                    ptr(id, "vllm_tensor_parallel_size"),
                    format!(
                        "CT {id}: vllm_tensor_parallel_size {tp} is larger than the {} in gpu_assignment '{}'",
                        plural(gpus, "GPU"),
                        ct.gpu_assignment.as_deref().unwrap_or("none")
                    ),
                );
            }
        }

        if let Some(sip) = &ct.static_ip
            && *sip != ct.network_config.ip
        {
            s.warning(
                file,
                ptr(id, "static_ip"),
                format!(
                    "CT {id}: static_ip {sip} differs from network_config.ip {}; network_config.ip is the one used",
                    ct.network_config.ip
                ),
            );
        }

        // Duplicates: reported on the later CT, naming the first.
        if let Some(mac) = &ct.mac_address
            && let Some(first) = macs.insert(mac.to_ascii_lowercase(), id)
        {
            macs.insert(mac.to_ascii_lowercase(), first);
            s.error(
                file,
                ptr(id, "mac_address"),
                format!("CT {id}: mac_address {mac} is also used by CT {first}"),
            );
        }
        let addr = ct.network_config.ip.addr.to_string();
        if let Some(first) = ips.insert(addr.clone(), id) {
            ips.insert(addr.clone(), first);
            s.error(
                file,
                ptr(id, "network_config/ip"),
                format!("CT {id}: network_config.ip address {addr} is also used by CT {first}"),
            );
        }
        if let Some(first) = names.insert(ct.name.to_ascii_lowercase(), id) {
            names.insert(ct.name.to_ascii_lowercase(), first);
            s.error(
                file,
                ptr(id, "name"),
                format!(
                    "CT {id}: name '{}' is also used by CT {first} (hostnames compare without case)",
                    ct.name
                ),
            );
        }
    }

    for cycle in clone_cycles(cts) {
        let text: Vec<String> = cycle.iter().map(Ctid::to_string).collect();
        s.error(
            file,
            ptr(cycle[0], "clone_from_template_ctid"),
            format!(
                "CT {}: clone sources form a cycle: {} -> {}",
                cycle[0],
                text.join(" -> "),
                cycle[0]
            ),
        );
    }
}

/// A clone inherits its source's root disk, which Proxmox can grow (`pct resize`) but never
/// shrink: a clone may not ask for less `storage_size_gb` than its explicit clone source.
fn check_clone_disk_sizes(file: &Path, cts: &BTreeMap<Ctid, ContainerSpec>, s: &mut Semantic) {
    for (&id, ct) in cts {
        let Some(src) = ct.clone_source().filter(|&c| c != id) else {
            continue;
        };
        // A source that is no template is reported by `check_lxc`; one error per mistake.
        let Some(sct) = cts.get(&src).filter(|s| s.is_template()) else {
            continue;
        };
        if ct.storage_size_gb < sct.storage_size_gb {
            s.error(
                file,
                ptr(id, "storage_size_gb"),
                format!(
                    "CT {id}: storage_size_gb {} is smaller than the {} GB root disk of its clone source {src}; a clone inherits that disk and Proxmox cannot shrink it (set at least {})",
                    ct.storage_size_gb, sct.storage_size_gb, sct.storage_size_gb
                ),
            );
        }
    }
}

/// Each cycle of explicit clone sources once, starting at its lowest CTID.
pub fn clone_cycles(cts: &BTreeMap<Ctid, ContainerSpec>) -> Vec<Vec<Ctid>> {
    // Every CT has at most one source, so walking from each CT finds each cycle; `done` keeps
    // the whole thing linear.
    let mut done: HashMap<Ctid, bool> = HashMap::new();
    let mut cycles = Vec::new();
    for &start in cts.keys() {
        let mut path: Vec<Ctid> = Vec::new();
        let mut cur = Some(start);
        while let Some(c) = cur {
            if done.contains_key(&c) {
                break;
            }
            if let Some(pos) = path.iter().position(|&p| p == c) {
                let mut cyc = path[pos..].to_vec();
                let min = cyc
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, c)| **c)
                    .map(|(i, _)| i);
                cyc.rotate_left(min.unwrap_or(0));
                cycles.push(cyc);
                break;
            }
            path.push(c);
            cur = cts
                .get(&c)
                .and_then(ContainerSpec::clone_source)
                .filter(|s| cts.contains_key(s));
        }
        for p in path {
            done.insert(p, true);
        }
    }
    cycles.sort();
    cycles
}

/// Rules that need both files.
fn check_cross(
    hv_file: &Path,
    hv: &HypervisorConfig,
    lxc_file: &Path,
    cts: &BTreeMap<Ctid, ContainerSpec>,
    s: &mut Semantic,
) {
    if hv.network.portainer_server_ip().is_none() {
        for (&id, ct) in cts {
            if ct.portainer_role == config::PortainerRole::Agent {
                s.error(
                    lxc_file,
                    ptr(id, "portainer_role"),
                    format!(
                        "CT {id}: portainer_role 'agent' needs network.portainer_server_ip in {} (the server the agent is registered with)",
                        hv_file.display()
                    ),
                );
            }
        }
    }
}

/// Token files others can read are a leak: warn with the mode (the file need not exist).
fn check_token_files(file: &Path, hv: &HypervisorConfig, host_root: &Path, s: &mut Semantic) {
    use std::os::unix::fs::PermissionsExt;
    for (field, p) in [
        ("hf_token_file", &hv.core_paths.hf_token_file),
        ("docker_token_file", &hv.core_paths.docker_token_file),
    ] {
        let at = paths::under_root(host_root, Path::new(p));
        if let Ok(md) = std::fs::metadata(&at) {
            let mode = md.permissions().mode() & 0o7777;
            if mode & 0o004 != 0 {
                s.warning(
                    file,
                    format!("/core_paths/{field}"),
                    format!(
                        "token file {} is readable by others (mode {mode:04o}); run: chmod 600 {}",
                        at.display(),
                        at.display()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
