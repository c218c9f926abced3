//! Step `clone-lxc SOURCE_CTID SOURCE_SNAPSHOT TARGET_CTID`: a full clone of the source's
//! snapshot (`pct clone ... --snapname S --full 1`), then the target's own settings from its
//! block (`pct set` memory, cores, features, net0 with its own MAC and IP), inherited GPU
//! passthrough lines removed when the target has no GPUs, then start and wait until ready.
//! An existing target is converged: only what differs is set; nothing differs → no mutating
//! call.

use std::collections::BTreeMap;

use crate::conffile::{ConfFile, parse_lxc_line, parse_setting_line};
use crate::config::{ContainerSpec, Ctid, parse_features};
use crate::error::{Error, Result};
use crate::pct::{CloneSpec, CtStatus, PctConfig, disk_size_bytes, net0_value};
use crate::step::{StepContext, wait_ready};
use crate::steps::{Outcome, check_block, check_snapshot_name};

/// Clone `source`@`snapshot` to `target` (or converge an existing `target`).
pub fn run(ctx: &StepContext, source: Ctid, snapshot: &str, target: Ctid) -> Result<Outcome> {
    let spec = ctx.container(target)?;
    check_block(target, spec)?;
    let snapname = check_snapshot_name("SOURCE_SNAPSHOT", snapshot)?;
    if source == target {
        return Err(Error::config(format!(
            "CT {target}: SOURCE_CTID and TARGET_CTID are the same ({source})"
        ))
        .into());
    }
    let pct = &ctx.pct;
    // The conf files say what exists and which snapshots a source has: no `pct status`,
    // `pct listsnapshot` or `pct config --snapshot` call.
    if ConfFile::path_for(target).exists() {
        crate::ownership::require_ours(pct, target)?;
        ctx.say(
            Some(target),
            "already exists; converging its settings with the config",
        );
        return converge(ctx, target, spec, false);
    }
    if !ConfFile::path_for(source).exists() {
        return Err(Error::precondition(format!(
            "CT {target}: the clone source CT {source} does not exist\nhint: create the template first (phoenix_hypervisor_create_lxc {source} or the orchestrator)"
        ))
        .into());
    }
    let source_conf = ConfFile::load(source)?;
    let snapshots = source_conf.snapshot_names();
    if !snapshots.iter().any(|s| s == snapshot) {
        return Err(Error::precondition(format!(
            "CT {target}: snapshot '{snapshot}' of the clone source CT {source} does not exist (it has: {})\nhint: finish the template CT {source} first; its template_snapshot_name is taken at the end of its setup",
            if snapshots.is_empty() {
                "no snapshots".to_string()
            } else {
                snapshots.join(", ")
            }
        ))
        .into());
    }
    // Proxmox cannot shrink a disk: a clone asking for less than its source's root disk is a
    // configuration error, found before anything changes (validation checks the same between
    // configured sizes).
    let source_disk = source_conf
        .section_get(snapshot, "rootfs")
        .as_deref()
        .and_then(disk_size_bytes);
    if let Some(bytes) = source_disk
        && bytes > gib_bytes(spec.storage_size_gb)
    {
        return Err(Error::config(format!(
            "CT {target}: lxc_configs.\"{target}\".storage_size_gb is {} but the root disk of its clone source CT {source} (snapshot '{snapshot}') is {}; a clone inherits that disk and Proxmox cannot shrink it\nhint: set storage_size_gb to at least {}",
            spec.storage_size_gb,
            fmt_gib(bytes),
            bytes.div_ceil(1 << 30)
        ))
        .into());
    }
    ctx.say(
        Some(target),
        &format!("full clone of CT {source} at snapshot '{snapshot}'"),
    );
    pct.clone_ct(&CloneSpec {
        source,
        target,
        snapname: Some(snapname),
        hostname: spec.name.clone(),
        full: true,
        storage: Some(spec.storage_pool.clone()),
    })?;
    // In dry-run mode the clone does not exist for converge to look at: its disk is the
    // source's.
    if ctx.dry_run && source_disk.is_some_and(|b| b < gib_bytes(spec.storage_size_gb)) {
        println!(
            "would run: pct {}",
            crate::pct::display_argv(&crate::pct::resize_args(
                target,
                "rootfs",
                spec.storage_size_gb
            ))
        );
    }
    converge(ctx, target, spec, true)?;
    Ok(Outcome::Changed)
}

/// The `pct set` pairs that make `current` match the block, and the keys to delete.
pub fn settings_diff(
    spec: &ContainerSpec,
    current: &PctConfig,
) -> (Vec<(&'static str, String)>, Vec<&'static str>) {
    let mut set = Vec::new();
    let mut delete = Vec::new();
    if current.get("hostname") != Some(spec.name.as_str()) {
        set.push(("hostname", spec.name.to_string()));
    }
    if current.get("memory") != Some(spec.memory_mb.to_string().as_str()) {
        set.push(("memory", spec.memory_mb.to_string()));
    }
    if current.get("cores") != Some(spec.cores.to_string().as_str()) {
        set.push(("cores", spec.cores.to_string()));
    }
    // A clone is as (un)privileged as its source, whatever the block says.
    let want_features = spec.proxmox_features(current.get("unprivileged") == Some("1"));
    let want_features = want_features.as_str();
    let have_features = current.get("features").unwrap_or("");
    if sorted_pairs(want_features) != sorted_pairs(have_features) {
        if want_features.is_empty() {
            delete.push("features");
        } else {
            set.push(("features", want_features.to_string()));
        }
    }
    let have_net = current.get("net0").unwrap_or("");
    let mut want_net = net0_value(spec);
    // Proxmox gives an interface set without `hwaddr` a new random MAC (proxmox.md, "net[n]"):
    // a block without mac_address keeps the MAC the CT already has, so converging never
    // changes it (nor re-plugs the NIC).
    if spec.mac_address.is_none()
        && let Some(mac) = net_hwaddr(have_net)
    {
        want_net.push_str(&format!(",hwaddr={mac}"));
    }
    if !same_net(&want_net, have_net) {
        set.push(("net0", want_net));
    }
    // The optional fields: absent in the block = not managed (whatever the CT has stays).
    if let Some(want) = spec.onboot
        && (current.get("onboot") == Some("1")) != want
    {
        set.push(("onboot", if want { "1" } else { "0" }.to_string()));
    }
    if let Some(want) = spec.startup
        && current
            .get("startup")
            .and_then(|s| s.parse::<crate::types::Startup>().ok())
            != Some(want)
    {
        set.push(("startup", want.to_string()));
    }
    if let Some(want) = &spec.tags
        && !same_tags(want, current.get("tags"))
    {
        set.push(("tags", tags_with_mark(want)));
    }
    (set, delete)
}

/// The block's tags plus the ownership mark (`crate::ownership`), which is always kept.
pub fn tags_with_mark(want: &crate::types::Tags) -> String {
    crate::ownership::with_mark(Some(&want.to_string()))
}

/// The CT's tags are the block's, not counting the ownership mark; order and case do not count
/// (Proxmox compares tags without case, [`crate::types::Tags::contains`], and may store them in
/// another order than given).
pub fn same_tags(want: &crate::types::Tags, have: Option<&str>) -> bool {
    let norm = |it: &mut dyn Iterator<Item = &str>| -> std::collections::BTreeSet<String> {
        it.map(str::to_ascii_lowercase)
            .filter(|t| t != crate::ownership::TAG)
            .collect()
    };
    let have = have.unwrap_or("");
    norm(&mut want.iter()) == norm(&mut have.split([';', ',', ' ']).filter(|t| !t.is_empty()))
}

fn sorted_pairs(s: &str) -> BTreeMap<String, String> {
    parse_features(s).into_iter().collect()
}

/// The `hwaddr` of a `netN` value, if it has one.
pub fn net_hwaddr(net: &str) -> Option<String> {
    parse_features(net)
        .into_iter()
        .find(|(k, _)| k == "hwaddr")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Same interface settings: Proxmox adds `type=veth` and may reorder keys or change the MAC's
/// case; anything else is a difference.
fn same_net(want: &str, have: &str) -> bool {
    let norm = |s: &str| -> BTreeMap<String, String> {
        parse_features(s)
            .into_iter()
            .filter(|(k, v)| !(k == "type" && v == "veth"))
            .map(|(k, v)| {
                if k == "hwaddr" {
                    (k, v.to_ascii_uppercase())
                } else {
                    (k, v)
                }
            })
            .collect()
    };
    norm(want) == norm(have)
}

/// Whether a main-section conf line passes a GPU through: cgroup allows for the NVIDIA majors,
/// bind mounts of `/dev/nvidia*`, `devN: /dev/nvidia*`.
pub fn is_gpu_line(line: &str, nvidia_majors: &[u32]) -> bool {
    if let Some((key, value)) = parse_lxc_line(line) {
        if key == "lxc.cgroup2.devices.allow" || key == "lxc.cgroup.devices.allow" {
            // `c 195:* rwm`
            let major = value
                .split_whitespace()
                .nth(1)
                .and_then(|mm| mm.split(':').next())
                .and_then(|m| m.parse::<u32>().ok());
            return major.is_some_and(|m| nvidia_majors.contains(&m));
        }
        if key == "lxc.mount.entry" {
            return value
                .split_whitespace()
                .next()
                .is_some_and(|src| src.starts_with("/dev/nvidia"));
        }
        return false;
    }
    if let Some((key, value)) = parse_setting_line(line)
        && key
            .strip_prefix("dev")
            .is_some_and(|n| n.parse::<u32>().is_ok())
    {
        let path = value.split(',').next().unwrap_or("");
        let path = path.strip_prefix("path=").unwrap_or(path);
        return path.starts_with("/dev/nvidia");
    }
    false
}

/// Make an existing (or, with `fresh`, just cloned) target match its block, then start it.
/// Bring an existing (or, `fresh`, just cloned) CT in line with its block: `pct set` only what
/// differs, strip GPU lines it must not have, start it and wait until ready. create-lxc uses it
/// for a CT that already exists too.
pub(crate) fn converge(
    ctx: &StepContext,
    target: Ctid,
    spec: &ContainerSpec,
    fresh: bool,
) -> Result<Outcome> {
    let pct = &ctx.pct;
    let mut outcome = if fresh {
        Outcome::Changed
    } else {
        Outcome::Unchanged
    };
    // In dry-run mode a fresh clone does not exist yet: show every setting it would get.
    let current = if fresh && ctx.dry_run {
        PctConfig::default()
    } else {
        ConfFile::load(target)?.to_config(false)
    };
    let (set, delete) = settings_diff(spec, &current);
    if !set.is_empty() {
        let pairs: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pct.set(target, &pairs)?;
        outcome = Outcome::Changed;
    }
    if !delete.is_empty() {
        pct.set_delete(target, &delete)?;
        outcome = Outcome::Changed;
    }
    if grow_rootfs(ctx, target, spec, &current)? {
        outcome = Outcome::Changed;
    }
    let inherited_unpriv = current.get("unprivileged") == Some("1");
    if !(fresh && ctx.dry_run) && inherited_unpriv != spec.unprivileged {
        log::warn!(
            "[{target}] lxc_configs.\"{target}\".unprivileged is {} but the container is {} (inherited from its clone source); Proxmox cannot change this after creation (read-only option)",
            spec.unprivileged,
            if inherited_unpriv {
                "unprivileged"
            } else {
                "privileged"
            }
        );
    }
    if spec.gpus().is_empty() && strip_gpu_lines(ctx, target)? {
        outcome = Outcome::Changed;
    }
    // A fresh clone is stopped (pve-container `PVE::API2::LXC` `clone_vm` never starts it).
    let running = if fresh {
        false
    } else {
        pct.status(target)? == CtStatus::Running
    };
    if running {
        if outcome.changed() {
            log::warn!(
                "[{target}] settings changed while the container runs; some apply only at its next start"
            );
        }
    } else {
        pct.start(target)?;
        outcome = Outcome::Changed;
    }
    // Started by this step, and the next program waits for the boot in its first call.
    let skip_wait = !running && crate::env::flag(crate::env::SKIP_READY_WAIT);
    if !skip_wait {
        wait_ready(pct, target, ctx.ready_timeout())?;
    }
    ctx.say(
        Some(target),
        if skip_wait {
            "converged with its block and started"
        } else if outcome.changed() {
            "converged with its block, started and ready"
        } else {
            "already as configured; nothing changed"
        },
    );
    Ok(outcome)
}

fn gib_bytes(gib: u64) -> u64 {
    gib.saturating_mul(1 << 30)
}

/// `32G`, or `31.5G` for sizes that are not whole GiB.
fn fmt_gib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}G", bytes >> 30)
    } else {
        format!("{:.1}G", bytes as f64 / (1u64 << 30) as f64)
    }
}

/// Grow the root disk to `storage_size_gb` with `pct resize CTID rootfs <N>G` when it is
/// smaller (a clone inherits its source's disk). A larger disk is left as it is, with a
/// warning: Proxmox cannot shrink. Returns whether it resized.
fn grow_rootfs(
    ctx: &StepContext,
    target: Ctid,
    spec: &ContainerSpec,
    current: &PctConfig,
) -> Result<bool> {
    let Some(have) = current.get("rootfs").and_then(disk_size_bytes) else {
        return Ok(false);
    };
    let want = gib_bytes(spec.storage_size_gb);
    if have > want {
        log::warn!(
            "[{target}] the root disk is {} but lxc_configs.\"{target}\".storage_size_gb is {}; Proxmox cannot shrink a disk, it stays as it is",
            fmt_gib(have),
            spec.storage_size_gb
        );
        return Ok(false);
    }
    if have == want {
        return Ok(false);
    }
    ctx.say(
        Some(target),
        &format!(
            "growing the root disk from {} to {}G",
            fmt_gib(have),
            spec.storage_size_gb
        ),
    );
    ctx.pct.resize(target, "rootfs", spec.storage_size_gb)?;
    Ok(true)
}

/// Remove inherited GPU passthrough lines from the target's main section. Returns whether it
/// changed (or, in dry-run mode, would change) the file.
fn strip_gpu_lines(ctx: &StepContext, target: Ctid) -> Result<bool> {
    let path = ConfFile::path_for(target);
    if ctx.dry_run && !path.exists() {
        return Ok(false);
    }
    let (_lock, mut conf) = ConfFile::load_locked(target, ctx.dry_run)?;
    let majors = crate::host::nvidia_majors();
    let removed: Vec<String> = conf
        .main_lines()
        .iter()
        .filter(|l| is_gpu_line(l, &majors))
        .cloned()
        .collect();
    if removed.is_empty() {
        return Ok(false);
    }
    if ctx.dry_run {
        for l in &removed {
            println!("would remove from `{}`: {l}", path.display());
        }
        return Ok(true);
    }
    conf.remove_main_lines(|l| is_gpu_line(l, &majors));
    conf.save()?;
    ctx.say(
        Some(target),
        &format!(
            "removed {} inherited GPU passthrough line(s): gpu_assignment is none",
            removed.len()
        ),
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::tests::spec;

    #[test]
    fn gpu_lines() {
        let m = [195, 508, 509];
        assert!(is_gpu_line("lxc.cgroup2.devices.allow: c 195:* rwm", &m));
        assert!(is_gpu_line("lxc.cgroup2.devices.allow = c 508:* rwm", &m));
        assert!(!is_gpu_line("lxc.cgroup2.devices.allow: c 10:200 rwm", &m));
        assert!(is_gpu_line(
            "lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file",
            &m
        ));
        assert!(!is_gpu_line(
            "lxc.mount.entry: /dev/net/tun dev/net/tun none bind,create=file",
            &m
        ));
        assert!(is_gpu_line("dev0: /dev/nvidia0,gid=44,mode=0666", &m));
        assert!(is_gpu_line("dev3: path=/dev/nvidia-uvm", &m));
        assert!(!is_gpu_line("dev1: /dev/fuse", &m));
        assert!(!is_gpu_line("memory: 195", &m));
    }

    #[test]
    fn diff_is_empty_when_converged_and_names_what_differs() {
        let s = spec("gpu");
        let cfg = PctConfig::parse(
            "cores: 2\nfeatures: keyctl=1,nesting=1\nhostname: gpu\nmemory: 2048\nnet0: name=eth0,bridge=vmbr0,gw=10.0.0.1,hwaddr=52:54:00:aa:bb:cc,ip=10.0.0.200/24,type=veth\n",
        );
        assert_eq!(settings_diff(&s, &cfg), (vec![], vec![]));
        let cfg = PctConfig::parse(
            "cores: 4\nhostname: gpu\nmemory: 2048\nnet0: name=eth0,bridge=vmbr0,gw=10.0.0.1,hwaddr=BC:24:11:00:00:01,ip=10.0.0.200/24,type=veth\n",
        );
        let (set, del) = settings_diff(&s, &cfg);
        let keys: Vec<&str> = set.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["cores", "features", "net0"]);
        assert!(set[2].1.contains("hwaddr=52:54:00:AA:BB:CC"));
        assert!(del.is_empty());
        let mut s2 = spec("gpu");
        s2.features = Some("".parse().unwrap());
        let cfg = PctConfig::parse("cores: 2\nhostname: gpu\nmemory: 2048\nfeatures: nesting=1\n");
        let (_, del) = settings_diff(&s2, &cfg);
        assert_eq!(del, ["features"]);
    }

    #[test]
    fn a_block_without_mac_keeps_the_mac_the_ct_has() {
        let mut s = spec("gpu");
        s.mac_address = None;
        let have = "cores: 2\nfeatures: keyctl=1,nesting=1\nhostname: gpu\nmemory: 2048\nnet0: name=eth0,bridge=vmbr0,gw=10.0.0.1,hwaddr=BC:24:11:5E:7A:01,ip=10.0.0.200/24,type=veth\n";
        assert_eq!(settings_diff(&s, &PctConfig::parse(have)), (vec![], vec![]));
        // Another difference in net0: set with the MAC it has, never a new one.
        s.network_config.ip = "10.0.0.210/24".parse().unwrap();
        let (set, _) = settings_diff(&s, &PctConfig::parse(have));
        assert_eq!(set.len(), 1);
        assert!(set[0].1.contains("hwaddr=BC:24:11:5E:7A:01"), "{set:?}");
        assert!(set[0].1.contains("ip=10.0.0.210/24"), "{set:?}");
        // A block with a MAC still wins.
        s.mac_address = Some("52:54:00:AA:BB:CC".parse().unwrap());
        let (set, _) = settings_diff(&s, &PctConfig::parse(have));
        assert!(set[0].1.contains("hwaddr=52:54:00:AA:BB:CC"), "{set:?}");
    }

    #[test]
    fn an_unprivileged_clone_that_runs_docker_gets_keyctl() {
        let mut s = spec("dock");
        s.features = Some("nesting=1".parse().unwrap());
        let base = "cores: 2\nfeatures: nesting=1\nhostname: dock\nmemory: 2048\nnet0: name=eth0,bridge=vmbr0,gw=10.0.0.1,hwaddr=52:54:00:aa:bb:cc,ip=10.0.0.200/24,type=veth\n";
        // The source decides: unprivileged inherited -> keyctl=1 added; privileged -> as written.
        let (set, _) = settings_diff(&s, &PctConfig::parse(&format!("{base}unprivileged: 1\n")));
        assert_eq!(set, vec![("features", "nesting=1,keyctl=1".to_string())]);
        let (set, _) = settings_diff(&s, &PctConfig::parse(base));
        assert!(set.is_empty(), "{set:?}");
    }
}
