//! `cargo xtask bench` (and `cargo xtask bench-orch [--debug]`): the orchestrator against
//! pve-sim with latency rules, measured from pve-sim's journal (`start_ms`/`end_ms` of every
//! `pct` call):
//!
//! - (a) overhead with `--jobs 1`: wall time minus the time Proxmox is busy on the critical
//!   path (the union of the `pct` call intervals and of the boot time after each `pct start`),
//!   for the reference configuration and a generated 50-CT tree; aim under 5 %.
//! - (b) readiness detection delay: from the guest being ready (end of `pct start` + boot
//!   latency, which errs late, so the delay errs high) to the end of the readiness `pct exec`
//!   (`lib_common::step::READY_SCRIPT`, which waits inside the guest); aim under 250 ms.
//! - (c) `--jobs 4` over `--jobs 1` on the 50-CT tree (one base template, 4 templates cloned
//!   from it, 45 containers cloned from those); aim 3x.
//! - (d) wall time of a re-run that has nothing to do, 50 CTs.
//! - (e) issue 14: `pct` calls per container for a build and a no-op re-run, and wall time with
//!   `call 300` added to the latency rules at `--jobs 1` and `--jobs 4`, for the reference
//!   configuration with every real step and for the 50-CT tree (`bench-orch --calls-only`
//!   runs only this), beside the figures recorded before the change.
//!
//! Step programs: the real initial-setup, create-lxc and clone-lxc; lxc-nvidia, lxc-docker and
//! setup programs are no-op drop-ins (their work inside the guest is not the orchestrator's).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lib_common::install::BinMode;
use serde_json::Value;

use crate::build::{build_bins, workspace_root};

const PREFIX_IN_HOST: &str = "usr/local/phoenix_hypervisor";
/// Latency rules: Proxmox-like proportions, scaled down so the benchmark takes minutes.
const LATENCY: &[(&str, u64)] = &[
    ("create", 600),
    ("clone", 300),
    ("snapshot", 100),
    ("start", 100),
    ("shutdown", 200),
    ("stop", 50),
    ("set", 30),
    ("destroy", 100),
    ("boot", 500),
];

fn boot_ms() -> u64 {
    LATENCY
        .iter()
        .find(|(k, _)| *k == "boot")
        .map_or(0, |l| l.1)
}

/// One `pct` call from the journal.
#[derive(Debug, Clone)]
struct Call {
    argv: Vec<String>,
    exit: i64,
    mutating: bool,
    start: u64,
    end: u64,
}

impl Call {
    fn sub(&self) -> &str {
        self.argv.get(1).map_or("", String::as_str)
    }
}

/// A pve-sim host with the product installed.
struct BenchHost {
    _dir: tempfile::TempDir,
    root: PathBuf,
    build_dir: PathBuf,
}

/// One orchestrator run.
struct RunStats {
    wall: Duration,
    calls: Vec<Call>,
}

impl BenchHost {
    fn new(build_dir: &Path, lxc: &Value) -> Result<BenchHost> {
        BenchHost::with(build_dir, lxc, false, &[])
    }

    /// `real`: every installed program runs (lxc-nvidia, lxc-docker and the setup programs
    /// too), as a real build does; `extra`: latency rules added to [`LATENCY`].
    fn with(build_dir: &Path, lxc: &Value, real: bool, extra: &[(&str, u64)]) -> Result<BenchHost> {
        let dir = tempfile::Builder::new()
            .prefix("phoenix-bench-")
            .tempdir()?;
        let root = dir.path().to_path_buf();
        crate::build::run(
            Command::new(build_dir.join("pve-sim"))
                .args(["init", "--host-root"])
                .arg(&root)
                .arg("--reference")
                .env("PHOENIX_HOST_ROOT", &root)
                .stdout(std::process::Stdio::null()),
        )?;
        let prefix = root.join(PREFIX_IN_HOST);
        let bins: Vec<String> = if real {
            std::fs::read_dir(build_dir)?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| lib_common::paths::installed_name(n).is_some())
                .collect()
        } else {
            ["establish", "initial-setup", "create-lxc", "clone-lxc"]
                .map(String::from)
                .to_vec()
        };
        lib_common::install::install(
            build_dir,
            &bins,
            &workspace_root().join("etc"),
            &prefix,
            BinMode::Symlink,
        )?;
        let fixtures = workspace_root().join("tests/fixtures/upstream-214aa23");
        std::fs::copy(
            fixtures.join("phoenix_hypervisor_config.json"),
            prefix.join("etc/phoenix_hypervisor_config.json"),
        )?;
        std::fs::write(
            prefix.join("etc/phoenix_lxc_configs.json"),
            serde_json::to_string_pretty(lxc)?,
        )?;
        let no_op_steps: &[&str] = if real {
            &[]
        } else {
            &[
                "phoenix_hypervisor_lxc_nvidia",
                "phoenix_hypervisor_lxc_docker",
            ]
        };
        for step in no_op_steps {
            use std::os::unix::fs::PermissionsExt;
            let p = prefix.join(format!("bin/{step}.sh"));
            std::fs::write(&p, "#!/bin/sh\nexit 0\n")?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
        let latency: String = LATENCY
            .iter()
            .chain(extra)
            .map(|(k, v)| format!("{k} {v}\n"))
            .collect();
        std::fs::create_dir_all(root.join("etc/pve-sim"))?;
        std::fs::write(root.join("etc/pve-sim/latency"), latency)?;
        Ok(BenchHost {
            _dir: dir,
            root,
            build_dir: build_dir.to_path_buf(),
        })
    }

    fn journal(&self) -> Result<Vec<Call>> {
        let text = std::fs::read_to_string(self.root.join("var/log/pve-sim/journal.jsonl"))
            .unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l).context("journal line")?;
                Ok(Call {
                    argv: v["argv"]
                        .as_array()
                        .context("argv")?
                        .iter()
                        .filter_map(|a| a.as_str().map(String::from))
                        .collect(),
                    exit: v["exit"].as_i64().unwrap_or(-1),
                    mutating: v["mutating"].as_bool().unwrap_or(false),
                    start: v["start_ms"].as_u64().unwrap_or(0),
                    end: v["end_ms"].as_u64().unwrap_or(0),
                })
            })
            .collect()
    }

    fn establish(&self, args: &[&str]) -> Result<RunStats> {
        let mark = self.journal()?.len();
        let path = std::env::join_paths(std::iter::once(self.build_dir.clone()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))?;
        let prefix = self.root.join(PREFIX_IN_HOST);
        let t = Instant::now();
        let out = Command::new(prefix.join("bin/phoenix_establish_hypervisor.sh"))
            .args(args)
            .env("PATH", path)
            .env("PHOENIX_HOST_ROOT", &self.root)
            .env("PHOENIX_ROOT", &prefix)
            .env_remove("LXC_CONFIG_FILE")
            .env_remove("HYPERVISOR_CONFIG_FILE")
            .env_remove("PHOENIX_LOG_FILE")
            .output()
            .context("cannot run phoenix_establish_hypervisor")?;
        let wall = t.elapsed();
        if !out.status.success() {
            bail!(
                "phoenix_establish_hypervisor {} failed ({}):\n{}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut calls = self.journal()?;
        Ok(RunStats {
            wall,
            calls: calls.split_off(mark),
        })
    }
}

/// Milliseconds covered by the union of `intervals`.
fn union_ms(mut intervals: Vec<(u64, u64)>) -> u64 {
    intervals.sort_unstable();
    let mut total = 0;
    let mut cur: Option<(u64, u64)> = None;
    for (s, e) in intervals {
        match cur {
            Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    if let Some((cs, ce)) = cur {
        total += ce - cs;
    }
    total
}

/// Proxmox busy time of a `--jobs 1` run: `pct` calls and boots.
fn busy_ms(calls: &[Call]) -> u64 {
    let mut iv: Vec<(u64, u64)> = calls.iter().map(|c| (c.start, c.end)).collect();
    iv.extend(
        calls
            .iter()
            .filter(|c| c.sub() == "start" && c.exit == 0)
            .map(|c| (c.end, c.end + boot_ms())),
    );
    union_ms(iv)
}

/// Readiness detection delays (ms) after every successful `pct start`.
fn detection_delays(calls: &[Call]) -> Vec<u64> {
    let mut out = Vec::new();
    for (i, s) in calls.iter().enumerate() {
        if s.sub() != "start" || s.exit != 0 {
            continue;
        }
        let ctid = &s.argv[2];
        let ready = s.end + boot_ms();
        let found = calls[i + 1..].iter().find(|c| {
            c.sub() == "exec"
                && c.argv.get(2) == Some(ctid)
                && c.argv.iter().any(|a| a == lib_common::step::READY_SCRIPT)
                && c.exit == 0
        });
        if let Some(c) = found {
            out.push(c.end.saturating_sub(ready));
        }
    }
    out
}

fn overhead_line(label: &str, r: &RunStats) -> (String, f64) {
    let wall = r.wall.as_millis() as u64;
    let busy = busy_ms(&r.calls);
    let over = wall.saturating_sub(busy);
    let pct = 100.0 * over as f64 / wall.max(1) as f64;
    (
        format!(
            "{label}: wall {:.2} s, Proxmox busy {:.2} s ({} pct calls), overhead {:.2} s = {pct:.1} %",
            wall as f64 / 1000.0,
            busy as f64 / 1000.0,
            r.calls.len(),
            over as f64 / 1000.0
        ),
        pct,
    )
}

/// The 50-CT tree: base template 200, templates 210..=213 cloned from it, containers
/// 300..=344 cloned round-robin from those.
fn wide_tree(reference: &Value) -> Value {
    let base = reference["lxc_configs"]["900"].clone();
    let mut cts = serde_json::Map::new();
    let mut n = 0u32;
    let mut block = |template: bool, source: Option<u32>, snap: Option<&str>| {
        let mut b = base.clone();
        let o = b.as_object_mut().expect("block");
        o.insert("name".into(), format!("bench{n}").into());
        let ip = format!("10.0.0.{}/24", 100 + n);
        o.insert("static_ip".into(), ip.clone().into());
        o["network_config"]["ip"] = ip.into();
        o.insert(
            "mac_address".into(),
            format!("52:54:00:AB:{:02X}:{:02X}", n / 256, n % 256).into(),
        );
        for k in [
            "is_template",
            "template_snapshot_name",
            "clone_from_template_ctid",
        ] {
            o.remove(k);
        }
        if template {
            o.insert("is_template".into(), true.into());
            o.insert("template_snapshot_name".into(), snap.unwrap_or("s").into());
        }
        if let Some(s) = source {
            o.insert("clone_from_template_ctid".into(), s.to_string().into());
        }
        n += 1;
        b
    };
    cts.insert("200".into(), block(true, None, Some("base-snapshot")));
    for m in 0..4 {
        cts.insert(
            (210 + m).to_string(),
            block(true, Some(200), Some("mid-snapshot")),
        );
    }
    for l in 0..45 {
        cts.insert((300 + l).to_string(), block(false, Some(210 + l % 4), None));
    }
    let mut v = reference.clone();
    v["lxc_configs"] = Value::Object(cts);
    v
}

pub fn run(release: bool, calls_only: bool, before: Option<&Path>) -> Result<()> {
    let build_dir = build_bins(release)?;
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(
        workspace_root().join("tests/fixtures/upstream-214aa23/phoenix_lxc_configs.json"),
    )?)?;
    let tree = wide_tree(&reference);
    if calls_only {
        return calls_per_ct(&build_dir, &reference, &tree, before);
    }
    let rules: Vec<String> = LATENCY.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "== orchestrator against pve-sim ({} build; latency ms: {}; lxc-nvidia/lxc-docker as no-op drop-ins)",
        if release { "release" } else { "debug" },
        rules.join(", ")
    );

    let host = BenchHost::new(&build_dir, &reference)?;
    let ref1 = host.establish(&[])?;
    let mut delays = detection_delays(&ref1.calls);
    let (ref_line, _) = overhead_line("reference, 7 CTs", &ref1);
    println!("(a) overhead, --jobs 1: {ref_line}");

    let host = BenchHost::new(&build_dir, &tree)?;
    let tree1 = host.establish(&[])?;
    delays.extend(detection_delays(&tree1.calls));
    let (tree_line, _) = overhead_line("generated tree, 50 CTs", &tree1);
    println!("(a) overhead, --jobs 1: {tree_line}");

    delays.sort_unstable();
    if !delays.is_empty() {
        let mean = delays.iter().sum::<u64>() as f64 / delays.len() as f64;
        println!(
            "(b) readiness detection after boot: {} starts, mean {mean:.0} ms, median {} ms, max {} ms",
            delays.len(),
            delays[delays.len() / 2],
            delays[delays.len() - 1]
        );
    }

    let noop1 = host.establish(&[])?;
    let noop4 = host.establish(&["--jobs", "4"])?;
    let mutating = noop1
        .calls
        .iter()
        .chain(&noop4.calls)
        .filter(|c| c.mutating)
        .count();

    let host4 = BenchHost::new(&build_dir, &tree)?;
    let tree4 = host4.establish(&["--jobs", "4"])?;
    println!(
        "(c) generated tree, 50 CTs: --jobs 1 {:.2} s, --jobs 4 {:.2} s: speed-up {:.2}x",
        tree1.wall.as_secs_f64(),
        tree4.wall.as_secs_f64(),
        tree1.wall.as_secs_f64() / tree4.wall.as_secs_f64()
    );
    println!(
        "(d) no-op re-run, 50 CTs: --jobs 1 {:.2} s, --jobs 4 {:.2} s ({} pct calls, {mutating} mutating)",
        noop1.wall.as_secs_f64(),
        noop4.wall.as_secs_f64(),
        noop1.calls.len()
    );
    if mutating != 0 {
        bail!("a no-op re-run made {mutating} mutating pct calls");
    }
    calls_per_ct(&build_dir, &reference, &tree, before)
}

/// `pct` calls of `r` (pvesm and others not counted).
fn pct_calls(r: &RunStats) -> usize {
    r.calls
        .iter()
        .filter(|c| c.argv.first().is_some_and(|a| a == "pct"))
        .count()
}

/// Figures measured before issue 14 (binaries of commit 91b6733, the one before it, run by
/// `bench-orch --debug --calls-only --before` against this pve-sim on 2026-11-30), for the
/// table when `--before` is not given.
const BEFORE: &[(&str, &str)] = &[
    (
        "reference, real steps",
        "build 64.1 pct calls per CT (449), no-op re-run 21 in all; call 300: --jobs 1 169.86 s, --jobs 4 128.71 s, debug build",
    ),
    (
        "generated tree, 50 CTs",
        "build 23.1 pct calls per CT (1154), no-op re-run 150 in all; call 300: --jobs 1 438.54 s, --jobs 4 138.42 s, debug build",
    ),
];

/// (e) `pct` calls per container for a build and a no-op re-run, and wall time with `call
/// 300` (each `pct` call pays a real host's Perl start-up) at `--jobs 1` and `--jobs 4`: the
/// reference configuration with every real step, and the generated 50-CT tree. With `before`
/// (a build directory of the code before issue 14), the same runs with those binaries too, in
/// the same run, printed first.
fn calls_per_ct(
    build_dir: &Path,
    reference: &Value,
    tree: &Value,
    before: Option<&Path>,
) -> Result<()> {
    let call = [("call", 300)];
    for (label, lxc, real) in [
        ("reference, real steps", reference, true),
        ("generated tree, 50 CTs", tree, false),
    ] {
        let n = lxc["lxc_configs"].as_object().map_or(1, |m| m.len()).max(1) as f64;
        let builds: Vec<(&str, &Path)> = before
            .map(|b| ("before issue 14", b))
            .into_iter()
            .chain([("now", build_dir)])
            .collect();
        for (which, dir) in builds {
            let h1 = BenchHost::with(dir, lxc, real, &call)?;
            let b1 = h1.establish(&[])?;
            let noop = h1.establish(&[])?;
            let h4 = BenchHost::with(dir, lxc, real, &call)?;
            let b4 = h4.establish(&["--jobs", "4"])?;
            let recorded = if before.is_none() {
                BEFORE
                    .iter()
                    .find(|b| b.0 == label)
                    .map_or(String::new(), |b| format!(" (recorded before: {})", b.1))
            } else {
                String::new()
            };
            println!(
                "(e) {label}, {which}: build {:.1} pct calls per CT ({} in all), no-op re-run {:.1} per CT ({} in all); with call 300: --jobs 1 {:.2} s, --jobs 4 {:.2} s{recorded}",
                pct_calls(&b1) as f64 / n,
                pct_calls(&b1),
                pct_calls(&noop) as f64 / n,
                pct_calls(&noop),
                b1.wall.as_secs_f64(),
                b4.wall.as_secs_f64(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_merges_overlaps() {
        assert_eq!(union_ms(vec![(0, 10), (5, 20), (30, 40)]), 30);
        assert_eq!(union_ms(vec![]), 0);
        assert_eq!(union_ms(vec![(10, 20), (0, 5)]), 15);
    }

    #[test]
    fn tree_has_50_cts_in_three_levels() {
        let reference: Value = serde_json::from_str(
            &std::fs::read_to_string(
                workspace_root().join("tests/fixtures/upstream-214aa23/phoenix_lxc_configs.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let t = wide_tree(&reference);
        let cts = t["lxc_configs"].as_object().unwrap();
        assert_eq!(cts.len(), 50);
        assert_eq!(cts["344"]["clone_from_template_ctid"], "210");
        assert_eq!(cts["213"]["is_template"], true);
        assert!(cts["300"].get("is_template").is_none());
    }
}
