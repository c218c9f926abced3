//! pve-sim: a Proxmox VE host in a directory (`docs/simulator.md`), strict enough
//! that product tests against it mean something: it rejects what Proxmox rejects, with
//! Proxmox's messages and exit codes (`proxmox.md`).
//!
//! # State layout under the host root (`PHOENIX_HOST_ROOT`)
//!
//! - `etc/pve-sim/host.json`: node name, PVE version, kernel (written last by `pve-sim init`).
//! - `etc/pve/storage.cfg`; `etc/pve/nodes/<node>/lxc/<vmid>.conf` (the source of truth for
//!   every container's config, in Proxmox's format); `etc/pve/lxc` and `etc/pve/qemu-server`
//!   are symlinks into the node directory, as on a real host.
//! - `var/lib/pve-sim/storage/<storeid>/vols/<name>/`: a volume (a CT's root filesystem);
//!   `<name>` is the last component of the volume name (`subvol-100-disk-0`,
//!   `vm-100-disk-0.raw`, `basevol-100-disk-0`).
//! - `var/lib/pve-sim/storage/<storeid>/snaps/<name>@<snap>/`: frozen copy per snapshot.
//! - `var/lib/pve-sim/storage/<storeid>/meta/<name>.json`: size, owner, linked-clone origin,
//!   snapshots in creation order.
//! - `run/pve-sim/<vmid>.json`: present while the CT runs (start time, boot and network
//!   ready times); `run/pve-sim/<vmid>.conf`: the config it was started with (what the guest
//!   sees: raw lxc lines, devN, features); `var/lib/lxc/<vmid>/passthrough/dev/...`: its devN
//!   nodes.
//! - `run/pve-sim/host.lock`: host-wide state lock (held only while reading/writing state).
//! - `run/lock/lxc/pve-config-<vmid>.lock`: the config file lock (flock) every change holds.
//! - `var/log/pve/tasks/active` (+ `.active.lock`, `<digit>/<UPID>` logs): the task record.
//! - `var/log/pve-sim/journal.jsonl`: one line per `pct`/`pvesm` call.
//! - `etc/pve-sim/faults`: injected failures, `<tool> <subcommand> <vmid|*> [cmd] [count]`.
//! - `etc/pve-sim/latency`: `<subcommand> <ms>` (clone/create/snapshot/rollback sleep inside
//!   their lock window, so concurrent callers collide as on Proxmox), `call <ms>` (every
//!   invocation), `boot <ms>` (systemd in the guest says `starting` until then; exec works at
//!   once), `network <ms>` (guest DNS down until then), `shutdown <ms>` (longer than
//!   `--timeout` → `container did not stop`), `copy <ms>` per MiB written by a create or full
//!   clone.
//! - `dev/nvidia*`, `proc/devices`, `proc/driver/nvidia/version`: GPU host files.
//!
//! # Modules
//!
//! - [`host`]: the root, identity, paths, the state lock, atomic writes.
//! - [`options`], [`schema`], [`error`]: PVE's CLI parsing, API schema checks, messages.
//! - [`conf`]: the container config file format; [`storage`]: storages and volumes.
//! - [`pct`], [`pvesm`]: the commands; [`init`]: `pve-sim init`.
//! - [`journal`], [`faults`], [`latency`], [`runtime`]: the simulator's own machinery;
//!   [`task`]: commands that run as tasks (worker process, signals, `var/log/pve/tasks`);
//!   [`versions`]: the pve-container version of each simulated PVE release.
//! - [`guest`]: what runs inside a container: the guest image (ostemplate tarball), the
//!   confined `pct exec`, `pct push`/`pull`, and the guest doubles.

pub mod conf;
pub mod error;
pub mod faults;
pub mod guest;
pub mod host;
pub mod init;
pub mod journal;
pub mod latency;
pub mod options;
pub mod pct;
pub mod pvesm;
pub mod runtime;
pub mod schema;
pub mod storage;
pub mod task;
pub mod versions;

/// `pveversion [-v]` output for this host.
pub fn pveversion(host: &host::Host, verbose: bool) -> String {
    let v = &host.info.pve_version;
    let hash = init::manager_hash(v);
    let k = &host.info.kernel;
    if !verbose {
        return format!("pve-manager/{v}/{} (running kernel: {k})\n", &hash[..16]);
    }
    let major = host.info.major();
    format!(
        "proxmox-ve: {major}.{}.0 (running kernel: {k})\npve-manager: {v} (running version: {v}/{})\npve-container: {}\nlxc-pve: 6.0.0-1\n",
        v.split('.').nth(1).unwrap_or("0"),
        &hash[..16],
        versions::fmt(host.info.pve_container())
    )
}
