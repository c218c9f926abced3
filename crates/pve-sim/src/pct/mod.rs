//! `pct`: the command table (usage line, positional parameters, the API endpoint whose
//! schema validates the options), the invocation wrapper (journal, faults, latency) and the
//! helpers the subcommands share (config load/save, lock checks, MACs, task output).

mod clone;
mod create;
pub mod devices;
mod exec;
mod info;
mod power;
mod set;
mod snapshot;
mod volume;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::conf::Conf;
use crate::error::{PveError, PveResult};
use crate::host::{Host, now_ms, write_atomic};
use crate::options::{self, OptKind, Parsed};
use crate::{faults, journal, latency, schema};

/// One parsed and validated invocation.
pub struct Call<'a> {
    pub host: &'a Host,
    pub sub: &'a str,
    /// Positional values by schema name (`vmid`, `ostemplate`, ...).
    pub pos: BTreeMap<String, String>,
    /// Arguments after the named positionals (`pct exec` command).
    pub extra: Vec<String>,
    pub opts: BTreeMap<String, String>,
    warnings: std::cell::Cell<u32>,
}

impl Call<'_> {
    pub fn vmid(&self) -> u32 {
        self.pos
            .get("vmid")
            .and_then(|v| v.parse().ok())
            .expect("vmid validated")
    }
    pub fn opt(&self, k: &str) -> Option<&str> {
        self.opts.get(k).map(String::as_str)
    }
    pub fn flag(&self, k: &str) -> bool {
        self.opt(k) == Some("1")
    }
    /// A task warning: `WARN: ...` on stdout, counted for `Task finished with N warning(s)!`.
    pub fn warn(&self, msg: &str) {
        println!("WARN: {msg}");
        self.warnings.set(self.warnings.get() + 1);
    }
    pub fn major(&self) -> u32 {
        self.host.info.major()
    }
    /// Whether the simulated release's pve-container is at least `v`.
    pub fn pc_at_least(&self, v: (u32, u32, u32)) -> bool {
        self.host.info.pve_container() >= v
    }
}

struct Cmd {
    usage: &'static str,
    positional: &'static [&'static str],
    endpoint: Option<&'static str>,
    /// Extra CLI-only options: (name, schema).
    extra_opts: Vec<(&'static str, Value)>,
    /// Collects remaining positionals (`exec`).
    extra_args: bool,
    /// Sleeps its latency inside its own lock window (clone, create, snapshot, rollback).
    own_latency: bool,
}

fn bool_schema() -> Value {
    serde_json::json!({"type": "boolean", "optional": 1})
}
fn string_schema() -> Value {
    serde_json::json!({"type": "string", "optional": 1})
}
fn vmid_schema() -> Value {
    serde_json::json!({"type": "integer", "format": "pve-vmid", "minimum": 100, "maximum": 999999999})
}

fn command(sub: &str) -> Option<Cmd> {
    let c = |usage, positional, endpoint| Cmd {
        usage,
        positional,
        endpoint,
        extra_opts: Vec::new(),
        extra_args: false,
        own_latency: false,
    };
    let mut cmd = match sub {
        "create" => Cmd {
            own_latency: true,
            ..c(
                "pct create <vmid> <ostemplate> [OPTIONS]",
                &["vmid", "ostemplate"],
                Some("POST /nodes/{node}/lxc"),
            )
        },
        "clone" => Cmd {
            own_latency: true,
            ..c(
                "pct clone <vmid> <newid> [OPTIONS]",
                &["vmid", "newid"],
                Some("POST /nodes/{node}/lxc/{vmid}/clone"),
            )
        },
        "set" => c(
            "pct set <vmid> [OPTIONS]",
            &["vmid"],
            Some("PUT /nodes/{node}/lxc/{vmid}/config"),
        ),
        "config" => c(
            "pct config <vmid> [OPTIONS]",
            &["vmid"],
            Some("GET /nodes/{node}/lxc/{vmid}/config"),
        ),
        "pending" => c("pct pending <vmid>", &["vmid"], None),
        "start" => c(
            "pct start <vmid> [OPTIONS]",
            &["vmid"],
            Some("POST /nodes/{node}/lxc/{vmid}/status/start"),
        ),
        "stop" => c(
            "pct stop <vmid> [OPTIONS]",
            &["vmid"],
            Some("POST /nodes/{node}/lxc/{vmid}/status/stop"),
        ),
        "shutdown" => Cmd {
            own_latency: true,
            ..c(
                "pct shutdown <vmid> [OPTIONS]",
                &["vmid"],
                Some("POST /nodes/{node}/lxc/{vmid}/status/shutdown"),
            )
        },
        "reboot" => c(
            "pct reboot <vmid> [OPTIONS]",
            &["vmid"],
            Some("POST /nodes/{node}/lxc/{vmid}/status/reboot"),
        ),
        "status" => Cmd {
            extra_opts: vec![("verbose", bool_schema())],
            ..c(
                "pct status <vmid> [OPTIONS]",
                &["vmid"],
                Some("GET /nodes/{node}/lxc/{vmid}/status/current"),
            )
        },
        "list" => c("pct list", &[], None),
        "snapshot" => Cmd {
            own_latency: true,
            ..c(
                "pct snapshot <vmid> <snapname> [OPTIONS]",
                &["vmid", "snapname"],
                Some("POST /nodes/{node}/lxc/{vmid}/snapshot"),
            )
        },
        "listsnapshot" => c(
            "pct listsnapshot <vmid>",
            &["vmid"],
            Some("GET /nodes/{node}/lxc/{vmid}/snapshot"),
        ),
        "delsnapshot" => Cmd {
            own_latency: true,
            ..c(
                "pct delsnapshot <vmid> <snapname> [OPTIONS]",
                &["vmid", "snapname"],
                Some("DELETE /nodes/{node}/lxc/{vmid}/snapshot/{snapname}"),
            )
        },
        "rollback" => Cmd {
            own_latency: true,
            ..c(
                "pct rollback <vmid> <snapname> [OPTIONS]",
                &["vmid", "snapname"],
                Some("POST /nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback"),
            )
        },
        "resize" => Cmd {
            extra_opts: vec![
                (
                    "disk",
                    serde_json::json!({"type": "string", "enum": disk_keys()}),
                ),
                (
                    "size",
                    serde_json::json!({"type": "string", "pattern": "\\+?\\d+(\\.\\d+)?[KMGT]?"}),
                ),
                (
                    "digest",
                    serde_json::json!({"type": "string", "maxLength": 40, "optional": 1}),
                ),
            ],
            ..c(
                "pct resize <vmid> <disk> <size> [OPTIONS]",
                &["vmid", "disk", "size"],
                None,
            )
        },
        "template" => c(
            "pct template <vmid>",
            &["vmid"],
            Some("POST /nodes/{node}/lxc/{vmid}/template"),
        ),
        "destroy" => c(
            "pct destroy <vmid> [OPTIONS]",
            &["vmid"],
            Some("DELETE /nodes/{node}/lxc/{vmid}"),
        ),
        "unlock" => c("pct unlock <vmid>", &["vmid"], None),
        "mount" => c("pct mount <vmid>", &["vmid"], None),
        "unmount" => c("pct unmount <vmid>", &["vmid"], None),
        "exec" => Cmd {
            extra_opts: vec![("keep-env", bool_schema())],
            extra_args: true,
            ..c("pct exec <vmid> [<extra-args>] [OPTIONS]", &["vmid"], None)
        },
        "push" | "pull" => {
            let usage = if sub == "push" {
                "pct push <vmid> <file> <destination> [OPTIONS]"
            } else {
                "pct pull <vmid> <path> <destination> [OPTIONS]"
            };
            let pos: &'static [&'static str] = if sub == "push" {
                &["vmid", "file", "destination"]
            } else {
                &["vmid", "path", "destination"]
            };
            Cmd {
                extra_opts: vec![
                    ("user", string_schema()),
                    ("group", string_schema()),
                    ("perms", string_schema()),
                ],
                ..c(usage, pos, None)
            }
        }
        _ => return None,
    };
    if cmd.endpoint.is_none() && !cmd.positional.is_empty() {
        cmd.extra_opts.push(("vmid", vmid_schema()));
    }
    Some(cmd)
}

impl Cmd {
    fn props(&self) -> Map<String, Value> {
        let mut m = match self.endpoint {
            Some(ep) => schema::endpoint(ep).clone(),
            None => Map::new(),
        };
        m.remove("node");
        for (k, v) in &self.extra_opts {
            m.insert((*k).to_string(), v.clone());
        }
        for p in self.positional {
            m.entry(p.to_string())
                .or_insert_with(|| serde_json::json!({"type": "string"}));
        }
        m
    }
}

/// `rootfs`, `mp0` .. `mp255`: the disks `pct resize` accepts.
fn disk_keys() -> Vec<String> {
    std::iter::once("rootfs".to_string())
        .chain((0..256).map(|i| format!("mp{i}")))
        .collect()
}

/// The embedded schema is PVE 9.1's: drop what older versions do not have, by the
/// pve-container version that added it (debian/changelog; [`crate::versions`]):
/// `devN` 5.0.7 ("allow passing raw device nodes through to containers"), its `deny-write`
/// 5.2.0, `entrypoint`/`env` and `net[n]`'s `host-managed` 6.0.15; `--ha-managed` is
/// pve-manager's, new in PVE 9.
fn version_filter(host: &Host, props: &mut Map<String, Value>) {
    let pc = host.info.pve_container();
    if host.info.major() < 9 {
        props.remove("ha-managed");
    }
    if pc < devices::DEV_SINCE {
        props.remove("dev[n]");
    } else if pc < devices::DENY_WRITE_SINCE
        && let Some(Value::Object(f)) = props.get_mut("dev[n]").and_then(|n| n.get_mut("format"))
    {
        f.remove("deny-write");
    }
    if pc < ENTRYPOINT_SINCE {
        props.remove("entrypoint");
        props.remove("env");
        if let Some(Value::Object(f)) = props.get_mut("net[n]").and_then(|n| n.get_mut("format")) {
            f.remove("host-managed");
        }
    }
}

/// pve-container 6.0.15 (PVE 9.1): "add support to configure the runtime environment of a
/// container" (`env`), OCI application containers (`entrypoint`), host-managed DHCP.
pub const ENTRYPOINT_SINCE: (u32, u32, u32) = (6, 0, 15);

fn die_unknown_command(sub: &str) -> i32 {
    eprintln!("ERROR: unknown command 'pct {sub}'");
    eprintln!("USAGE: pct <COMMAND> [ARGS] [OPTIONS]");
    255
}

/// Entry point of the `pct` binary: returns the process exit code.
pub fn main(argv: Vec<String>) -> i32 {
    let host = match Host::from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let sub = argv.get(1).cloned().unwrap_or_default();
    if crate::task::is_worker() {
        // The task worker (forked by the `pct` below): no CLI start-up, no journal line.
        let vmid = argv.get(2).cloned().unwrap_or_default();
        let upid = crate::task::worker_start(&host, &sub, &vmid);
        let code = run(&host, &sub, &argv[argv.len().min(2)..]);
        let msg = LAST_ERROR.with(|e| e.borrow().clone());
        if code != 0 && LAST_RAW.with(|r| r.get()) {
            crate::task::worker_end_raw(&host, upid.as_deref(), msg.as_deref().unwrap_or(""));
        } else {
            let res = if code == 0 {
                Ok(LAST_WARNINGS.with(|w| w.get()))
            } else {
                Err(msg.as_deref().unwrap_or("command failed"))
            };
            crate::task::worker_end(&host, upid.as_deref(), res);
        }
        return code;
    }
    let start_ms = now_ms();
    // Every invocation first pays the Perl CLI's start-up (`call` latency), whatever it does.
    latency::sleep(&host, "call");
    let mut jargv = vec!["pct".to_string()];
    jargv.extend(argv.iter().skip(1).cloned());
    let code = if crate::task::task_type(&sub).is_some() {
        // The CLI checks the parameters before the API call forks its worker.
        match parse_only(&host, &sub, &argv[argv.len().min(2)..]) {
            Ok(()) => crate::task::run_parent(&host, &argv[1..]),
            Err(code) => code,
        }
    } else {
        run(&host, &sub, &argv[argv.len().min(2)..])
    };
    journal::append(
        &host,
        &jargv,
        code,
        journal::is_mutating("pct", &sub),
        start_ms,
        now_ms(),
    );
    code
}

thread_local! {
    /// The message of the last failure reported (the task worker's `TASK ERROR`).
    static LAST_ERROR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// The warnings of a successful task (`TASK WARNINGS: n`).
    static LAST_WARNINGS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Whether that failure is one Proxmox raises before forking a task (usage, parameters).
    static LAST_RAW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Command lookup and parameter checks only (reported as `run` reports them).
fn parse_only(host: &Host, sub: &str, args: &[String]) -> Result<(), i32> {
    let Some(cmd) = command(sub) else {
        return Err(die_unknown_command(sub));
    };
    let mut props = cmd.props();
    version_filter(host, &mut props);
    match parse_call(host, sub, &cmd, &props, args) {
        Ok(_) => Ok(()),
        Err(e) => Err(report(e, cmd.usage)),
    }
}

/// The program an `exec` runs, for fault rules: the first word, or for `env [NAME=VALUE]... cmd`
/// the `cmd` (so `pct exec 950 apt-get` also matches `env DEBIAN_FRONTEND=noninteractive apt-get`).
fn exec_program(extra: &[String]) -> Option<&str> {
    let first = extra.first()?;
    if first.rsplit('/').next() != Some("env") {
        return Some(first);
    }
    extra[1..]
        .iter()
        .find(|a| a.starts_with('-') || !a.contains('='))
        .filter(|a| !a.starts_with('-'))
        .map_or(Some(first.as_str()), |a| Some(a.as_str()))
}

fn run(host: &Host, sub: &str, args: &[String]) -> i32 {
    if sub.is_empty() {
        eprintln!("USAGE: pct <COMMAND> [ARGS] [OPTIONS]");
        return 255;
    }
    let Some(cmd) = command(sub) else {
        return die_unknown_command(sub);
    };
    let mut props = cmd.props();
    version_filter(host, &mut props);
    let call = match parse_call(host, sub, &cmd, &props, args) {
        Ok(c) => c,
        Err(e) => return report(e, cmd.usage),
    };
    // Faults: the vmid is the new id for clone; exec may also match the command name.
    let fault_vmid = if sub == "clone" {
        call.pos.get("newid")
    } else {
        call.pos.get("vmid")
    };
    let hit = match host.lock() {
        Ok(_g) => faults::check(
            host,
            "pct",
            sub,
            fault_vmid.map(String::as_str),
            exec_program(&call.extra),
        ),
        Err(e) => {
            eprintln!("pve-sim: cannot lock host state: {e}");
            return 255;
        }
    };
    if hit {
        let mut shown = vec!["pct".to_string(), sub.to_string()];
        shown.extend(args.iter().cloned());
        return report(
            PveError::die(format!("simulated fault: {}", shown.join(" "))),
            cmd.usage,
        );
    }
    if !cmd.own_latency {
        latency::sleep(host, sub);
        if let Err(e) = crate::task::check() {
            return report(e, cmd.usage);
        }
    }
    let res = match sub {
        "create" => create::create(&call),
        "clone" => clone::clone(&call),
        "set" => set::set(&call),
        "config" => info::config(&call),
        "pending" => info::pending(&call),
        "status" => info::status(&call),
        "list" => info::list(&call),
        "start" => power::start(&call),
        "stop" => power::stop(&call),
        "shutdown" => power::shutdown(&call),
        "reboot" => power::reboot(&call),
        "snapshot" => snapshot::snapshot(&call),
        "listsnapshot" => snapshot::listsnapshot(&call),
        "delsnapshot" => snapshot::delsnapshot(&call),
        "rollback" => snapshot::rollback(&call),
        "template" => volume::template(&call),
        "resize" => volume::resize(&call),
        "destroy" => volume::destroy(&call),
        "unlock" => volume::unlock(&call),
        "mount" => volume::mount(&call),
        "unmount" => volume::unmount(&call),
        "exec" => exec::exec(&call),
        "push" => exec::push(&call),
        "pull" => exec::pull(&call),
        _ => unreachable!("command table and dispatch agree"),
    };
    match res {
        Ok(code) => {
            let w = call.warnings.get();
            if crate::task::is_worker() {
                // The parent prints it from the task's end line.
                LAST_WARNINGS.with(|c| c.set(w));
            } else if w > 0 && code == 0 {
                eprintln!("Task finished with {w} warning(s)!");
            }
            code
        }
        Err(e) => report(e, cmd.usage),
    }
}

fn report(e: PveError, usage: &str) -> i32 {
    let (text, code) = e.render(usage);
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(text.clone()));
    let raw = !matches!(e, PveError::Fail { .. });
    LAST_RAW.with(|r| r.set(raw));
    if crate::task::is_worker() {
        // A task's error reaches `pct`'s stderr through the control pipe.
        return code;
    }
    eprint!("{text}");
    code
}

fn parse_call<'a>(
    host: &'a Host,
    sub: &'a str,
    cmd: &Cmd,
    props: &Map<String, Value>,
    args: &[String],
) -> PveResult<Call<'a>> {
    let kind_of = |name: &str| -> Option<(String, OptKind)> {
        let lname = name.to_ascii_lowercase();
        let canon = props
            .keys()
            .find(|k| k.to_ascii_lowercase() == lname && !cmd.positional.contains(&k.as_str()))
            .cloned()
            .or_else(|| {
                // numbered keys (net0) resolve through `net[n]`
                schema::lookup(props, &lname).map(|_| lname.clone())
            })?;
        if canon.contains('[') || cmd.positional.contains(&canon.as_str()) {
            return None;
        }
        let s = schema::lookup(props, &canon)?;
        let kind = if schema::is_boolean(s) {
            OptKind::Boolean
        } else if schema::is_list_format(s) {
            OptKind::List
        } else {
            OptKind::Value
        };
        Some((canon, kind))
    };
    let parsed: Parsed = options::parse(args, &kind_of)?;
    let npos = cmd.positional.len();
    if parsed.positional.len() < npos {
        return Err(PveError::usage("not enough arguments"));
    }
    if parsed.positional.len() > npos && !cmd.extra_args {
        return Err(PveError::usage("too many arguments"));
    }
    let mut pos = BTreeMap::new();
    for (i, name) in cmd.positional.iter().enumerate() {
        pos.insert(name.to_string(), parsed.positional[i].clone());
    }
    let extra = parsed.positional[npos..].to_vec();
    let mut errs = schema::Errors::new();
    for (k, v) in pos.iter().chain(parsed.opts.iter()) {
        if let Some(s) = schema::lookup(props, k) {
            schema::check_prop(k, s, v, &mut errs);
        }
    }
    // JSONSchema `requires`: the other property must be present too.
    for k in parsed.opts.keys() {
        if let Some(req) = schema::lookup(props, k)
            .and_then(|s| s.get("requires"))
            .and_then(Value::as_str)
            && !parsed.opts.contains_key(req)
        {
            errs.insert(
                req.to_string(),
                format!("missing property - '{k}' requires this property"),
            );
        }
    }
    if !errs.is_empty() {
        return Err(PveError::Params(errs));
    }
    Ok(Call {
        host,
        sub,
        pos,
        extra,
        opts: parsed.opts,
        warnings: std::cell::Cell::new(0),
    })
}

// ---------------------------------------------------------------- shared helpers

/// Load a container config; a missing one is Proxmox's `Configuration file ... does not exist`.
pub fn load_conf(host: &Host, vmid: u32) -> PveResult<Conf> {
    let p = host.conf_path(vmid);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PveError::die(format!(
                "Configuration file '{}' does not exist",
                host.conf_display(vmid)
            )));
        }
        Err(e) => return Err(PveError::die(format!("{}: {e}", p.display()))),
    };
    let (conf, warnings) = Conf::parse_for(vmid, &text, host.info.pve_container());
    for w in warnings {
        eprintln!("{w}");
    }
    Ok(conf)
}

pub fn save_conf(host: &Host, vmid: u32, conf: &Conf) -> PveResult<()> {
    write_atomic(&host.conf_path(vmid), conf.write().as_bytes())
        .map_err(|e| PveError::die(format!("unable to write config for CT {vmid}: {e}")))
}

pub fn check_lock(conf: &Conf) -> PveResult<()> {
    match conf.lock() {
        Some(l) => Err(PveError::die(format!("CT is locked ({l})"))),
        None => Ok(()),
    }
}

/// The cluster-wide VMID space: fails if `vmid` is a CT or VM on any node.
pub fn check_vmid_free(host: &Host, vmid: u32) -> PveResult<()> {
    let nodes = host.root.join("etc/pve/nodes");
    if let Ok(rd) = std::fs::read_dir(&nodes) {
        for n in rd.flatten() {
            let node = n.file_name().to_string_lossy().into_owned();
            if n.path().join(format!("lxc/{vmid}.conf")).exists() {
                return Err(PveError::die(format!(
                    "CT {vmid} already exists on node '{node}'"
                )));
            }
            if n.path().join(format!("qemu-server/{vmid}.conf")).exists() {
                return Err(PveError::die(format!(
                    "VM {vmid} already exists on node '{node}'"
                )));
            }
        }
    }
    Ok(())
}

/// Random locally administered MAC with Proxmox's `BC:24:11` prefix.
pub fn random_mac() -> String {
    let mut buf = [0u8; 3];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_ok();
    if !ok {
        let n = now_ms() ^ (std::process::id() as u64) << 20;
        buf = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
    }
    format!("BC:24:11:{:02X}:{:02X}:{:02X}", buf[0], buf[1], buf[2])
}

/// Normalise a `netN` value as Proxmox stores it: name first, other keys sorted, a new
/// random hwaddr when none is given, `type=veth`.
pub fn normalize_net(v: &str) -> PveResult<String> {
    let props = schema::endpoint("POST /nodes/{node}/lxc");
    let fmt = props["net[n]"]["format"].as_object().expect("net format");
    let Ok(mut kv) = schema::parse_property_string(fmt, v) else {
        return Err(PveError::die(format!(
            "unable to parse network setting '{v}'"
        )));
    };
    kv.entry("hwaddr".into()).or_insert_with(random_mac);
    kv.entry("type".into()).or_insert_with(|| "veth".into());
    let name = kv.remove("name").unwrap_or_default();
    let mut out = format!("name={name}");
    for (k, v) in kv {
        out.push_str(&format!(",{k}={v}"));
    }
    Ok(out)
}

/// Parse a mount point value (`rootfs`/`mpN`) into its keys (`volume` is the default key).
pub fn parse_mp(key: &str, v: &str) -> Option<BTreeMap<String, String>> {
    let props = schema::endpoint("POST /nodes/{node}/lxc");
    let sk = if key == "rootfs" { "rootfs" } else { "mp[n]" };
    let fmt = props[sk]["format"].as_object()?;
    schema::parse_property_string(fmt, v).ok()
}

/// Print a mount point: volume first, then the other keys sorted.
pub fn print_mp(kv: &BTreeMap<String, String>) -> String {
    let mut out = kv.get("volume").cloned().unwrap_or_default();
    for (k, v) in kv {
        if k != "volume" {
            out.push_str(&format!(",{k}={v}"));
        }
    }
    out
}

/// Storage volumes of a config section: (key, volid) for rootfs and volume mount points
/// (bind mounts and device paths excluded).
pub fn volumes(sect: &crate::conf::Section) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in &sect.kv {
        let is_mp = k == "rootfs"
            || (k.starts_with("mp") && schema::split_numbered(k).is_some_and(|(b, _)| b == "mp"));
        if !is_mp {
            continue;
        }
        if let Some(kv) = parse_mp(k, v)
            && let Some(vol) = kv.get("volume")
            && !vol.starts_with('/')
        {
            out.push((k.clone(), vol.clone()));
        }
    }
    out.sort_by_key(|(k, _)| {
        if k == "rootfs" {
            String::new()
        } else {
            k.clone()
        }
    });
    out
}

/// The rootfs directory of a container on this machine.
pub fn rootfs_dir(host: &Host, conf: &crate::conf::Section) -> PveResult<std::path::PathBuf> {
    let v = conf
        .get("rootfs")
        .ok_or_else(|| PveError::die("container has no rootfs"))?;
    let kv = parse_mp("rootfs", v)
        .ok_or_else(|| PveError::die(format!("unable to parse rootfs '{v}'")))?;
    let vol = kv.get("volume").cloned().unwrap_or_default();
    if vol.starts_with('/') {
        return Ok(host.path(&vol));
    }
    let (st, name) = crate::storage::parse_volid(&vol)
        .ok_or_else(|| PveError::die(format!("unable to parse volume ID '{vol}'")))?;
    Ok(crate::storage::vol_dir(host, st, name))
}

/// Seconds `lock_config` waits for a container's config lock (pve-guest-common
/// `src/PVE/AbstractConfig.pm` `lock_config` → `lock_config_full($vmid, 10, ...)`).
pub const CONF_LOCK_TIMEOUT_S: u64 = 10;

/// Guard of a container's config lock and the host state lock (released on drop).
pub struct CtLock {
    _host: crate::host::HostLock,
    _conf: Vec<std::fs::File>,
}

/// The container's config lock: an exclusive flock on
/// `<host root>/run/lock/lxc/pve-config-<vmid>.lock` (pve-container `src/PVE/LXC/Config.pm`
/// `config_file_lock`), taken as pve-common `src/PVE/Tools.pm` `lock_file_full` takes it: when
/// contended, `trying to acquire lock...` on stderr, then ` OK` once acquired, or after 10 s
/// `can't lock file '<path>' - got timeout`. Every config change holds it, so a second writer
/// (another `pct`, or the product editing the file under the same lock) waits. The host state
/// lock is taken after it (never the other way round).
pub fn lock_ct(host: &Host, vmid: u32) -> PveResult<CtLock> {
    lock_cts(host, &[vmid])
}

/// [`lock_ct`] for several containers, in the order given (a clone: source, then target).
pub fn lock_cts(host: &Host, vmids: &[u32]) -> PveResult<CtLock> {
    let mut files = Vec::new();
    for vmid in vmids {
        files.push(conf_flock(host, *vmid)?);
    }
    Ok(CtLock {
        _host: lock_host(host)?,
        _conf: files,
    })
}

/// Only the container's config lock (held across a long wait, e.g. a shutdown, while the
/// host state lock is taken briefly inside).
pub fn lock_conf_only(host: &Host, vmid: u32) -> PveResult<std::fs::File> {
    conf_flock(host, vmid)
}

fn conf_flock(host: &Host, vmid: u32) -> PveResult<std::fs::File> {
    let shown = format!("/run/lock/lxc/pve-config-{vmid}.lock");
    let path = host.path(&shown);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| PveError::die(format!("can't lock file '{shown}' - can't open file - {e}")))?;
    if f.try_lock().is_err() {
        eprint!("trying to acquire lock...");
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_secs(CONF_LOCK_TIMEOUT_S);
        loop {
            std::thread::sleep(std::time::Duration::from_millis(10));
            if f.try_lock().is_ok() {
                eprintln!(" OK");
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(PveError::die(format!(
                    "can't lock file '{shown}' - got timeout"
                )));
            }
        }
    }
    Ok(f)
}

/// Take the host lock, mapping I/O errors to a Proxmox-style failure.
pub fn lock_host(host: &Host) -> PveResult<crate::host::HostLock> {
    host.lock()
        .map_err(|e| PveError::die(format!("can't lock file '/run/pve-sim/host.lock' - {e}")))
}

#[cfg(test)]
mod tests {
    use super::exec_program;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fault_rules_see_through_env() {
        assert_eq!(exec_program(&v(&["apt-get", "update"])), Some("apt-get"));
        assert_eq!(
            exec_program(&v(&[
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "install"
            ])),
            Some("apt-get")
        );
        assert_eq!(
            exec_program(&v(&["/usr/bin/env", "-i", "x"])),
            Some("/usr/bin/env")
        );
        assert_eq!(exec_program(&v(&["env"])), Some("env"));
        assert_eq!(exec_program(&[]), None);
    }
}
