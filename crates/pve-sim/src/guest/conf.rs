//! What guest execution reads from a container's Proxmox config (`etc/pve/lxc/<vmid>.conf`
//! under the host root): the main section only (snapshot sections do not apply), for the UTS
//! name, `features`, and the device cgroup rules that decide whether a bound GPU node may be
//! opened.

use std::path::{Path, PathBuf};

use super::GuestCtx;

/// The main section of a container config, as `(key, value)` in file order.
#[derive(Debug, Default)]
pub struct CtConf {
    entries: Vec<(String, String)>,
}

impl CtConf {
    /// The config `ctx`'s container was started with (`run/pve-sim/<vmid>.conf`, written by
    /// `pct start`: LXC reads its config only at the start, so later edits of the config file
    /// do not reach a running guest); without one (guest used directly, not through `pct
    /// start`) the config file; None when there is neither.
    pub fn load(ctx: &GuestCtx) -> Option<CtConf> {
        let started = ctx.host_root.join(format!("run/pve-sim/{}.conf", ctx.vmid));
        let path = ctx.host_root.join(format!("etc/pve/lxc/{}.conf", ctx.vmid));
        std::fs::read_to_string(started)
            .or_else(|_| std::fs::read_to_string(path))
            .ok()
            .map(|t| CtConf::parse(&t))
    }

    /// Parse: `key: value`; `lxc.*` keys also as `key = value` / `key=value` (Proxmox accepts
    /// those on read). Stops at the first `[section]`.
    pub fn parse(text: &str) -> CtConf {
        let mut entries = Vec::new();
        for line in text.lines() {
            if line.starts_with('[') {
                break;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let split = if line.starts_with("lxc.") {
                let colon = line.find(':');
                let eq = line.find('=');
                match (colon, eq) {
                    (Some(c), Some(e)) => Some(c.min(e)),
                    (c, e) => c.or(e),
                }
            } else {
                line.find(':')
            };
            if let Some(i) = split {
                entries.push((
                    line[..i].trim().to_string(),
                    line[i + 1..].trim().to_string(),
                ));
            }
        }
        CtConf { entries }
    }

    /// The last value of `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All values of `key`, in order.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Guest paths of `devN:` entries (PVE >= 8.1 passthrough: `update_lxc_config` adds the
    /// cgroup rule itself).
    fn dev_entries(&self) -> Vec<PathBuf> {
        self.entries
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix("dev")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .filter_map(|(_, v)| {
                v.split(',').find_map(|p| {
                    p.strip_prefix("path=")
                        .or(p.starts_with('/').then_some(p))
                        .map(PathBuf::from)
                })
            })
            .collect()
    }

    /// Whether a `lxc.cgroup2.devices.allow` (or deprecated `lxc.cgroup.devices.allow`) rule
    /// grants read/write on character device `major:minor`.
    fn allows(&self, major: u32, minor: Option<u32>) -> bool {
        let rules = self
            .values("lxc.cgroup2.devices.allow")
            .chain(self.values("lxc.cgroup.devices.allow"));
        for rule in rules {
            let mut f = rule.split_whitespace();
            let kind = f.next().unwrap_or_default();
            if kind == "a" {
                return true;
            }
            if kind != "c" {
                continue;
            }
            let (Some(numbers), Some(access)) = (f.next(), f.next()) else {
                continue;
            };
            let Some((maj, min)) = numbers.split_once(':') else {
                continue;
            };
            let maj_ok = maj == "*" || maj.parse::<u32>().ok() == Some(major);
            let min_ok = min == "*" || (minor.is_some() && min.parse::<u32>().ok() == minor);
            if maj_ok && min_ok && access.contains('r') && access.contains('w') {
                return true;
            }
        }
        false
    }
}

/// Character-device majors by name from the simulated host's `/proc/devices`.
fn host_major(host_root: &Path, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(host_root.join("proc/devices")).ok()?;
    let mut in_char = false;
    for line in text.lines() {
        if line.starts_with("Character devices") {
            in_char = true;
        } else if line.starts_with("Block devices") {
            in_char = false;
        } else if in_char {
            let mut f = line.split_whitespace();
            if let (Some(n), Some(dev)) = (f.next(), f.next())
                && dev == name
            {
                return n.parse().ok();
            }
        }
    }
    None
}

/// (major, minor) of an NVIDIA node by its name, as the driver registers them; None for
/// nodes this check does not know.
fn nvidia_numbers(host_root: &Path, name: &str) -> Option<(u32, Option<u32>)> {
    let frontend = || host_major(host_root, "nvidia-frontend").or(Some(195));
    if let Some(n) = name.strip_prefix("nvidia")
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        return Some((frontend()?, n.parse().ok()));
    }
    match name {
        "nvidiactl" => Some((frontend()?, Some(255))),
        "nvidia-modeset" => Some((frontend()?, Some(254))),
        "nvidia-uvm" => Some((host_major(host_root, "nvidia-uvm")?, Some(0))),
        "nvidia-uvm-tools" => Some((host_major(host_root, "nvidia-uvm")?, Some(1))),
        "nvidia-caps" => Some((host_major(host_root, "nvidia-caps")?, None)),
        _ => None,
    }
}

/// Guest paths of bound NVIDIA nodes that the container's device cgroup would refuse to open:
/// bound by a raw `lxc.mount.entry` without a matching `lxc.cgroup2.devices.allow` rule
/// (`devN:` entries need none).
pub fn denied_devices(ctx: &GuestCtx, conf: &CtConf) -> Vec<PathBuf> {
    let dev_entries = conf.dev_entries();
    let mut out = Vec::new();
    for b in &ctx.devices {
        if dev_entries.contains(&b.guest_path) {
            continue;
        }
        let name = b
            .host_path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        if let Some((major, minor)) = nvidia_numbers(&ctx.host_root, &name)
            && !conf.allows(major, minor)
        {
            out.push(b.guest_path.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::DeviceBind;

    #[test]
    fn main_section_only_and_lxc_equals_forms() {
        let c = CtConf::parse(
            "#desc\nhostname: web\nlxc.cgroup2.devices.allow = c 195:* rwm\nlxc.mount.entry=/dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n\n[snap]\nhostname: old\n",
        );
        assert_eq!(c.value("hostname"), Some("web"));
        assert_eq!(c.value("lxc.cgroup2.devices.allow"), Some("c 195:* rwm"));
        assert_eq!(
            c.value("lxc.mount.entry"),
            Some("/dev/nvidia0 dev/nvidia0 none bind,optional,create=file")
        );
        assert!(c.allows(195, Some(0)));
        assert!(!c.allows(508, Some(0)));
    }

    #[test]
    fn denied_without_rules_for_the_dynamic_uvm_major() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::write(
            d.path().join("proc/devices"),
            "Character devices:\n  1 mem\n195 nvidia-frontend\n508 nvidia-uvm\n509 nvidia-caps\n\nBlock devices:\n  8 sd\n",
        )
        .unwrap();
        let bind = |p: &str| DeviceBind {
            host_path: p.into(),
            guest_path: p.into(),
        };
        let ctx = GuestCtx {
            host_root: d.path().to_path_buf(),
            vmid: 100,
            rootfs: d.path().join("r"),
            unprivileged: true,
            devices: vec![
                bind("/dev/nvidia0"),
                bind("/dev/nvidiactl"),
                bind("/dev/nvidia-uvm"),
                bind("/dev/null2"),
            ],
        };
        // the old shell tool's mistake: uvm allowed with a hard-coded 243
        let c = CtConf::parse(
            "lxc.cgroup2.devices.allow: c 195:* rwm\nlxc.cgroup2.devices.allow: c 243:* rwm\n",
        );
        assert_eq!(
            denied_devices(&ctx, &c),
            vec![PathBuf::from("/dev/nvidia-uvm")]
        );
        let c = CtConf::parse(
            "lxc.cgroup2.devices.allow: c 195:* rwm\nlxc.cgroup2.devices.allow: c 508:* rwm\n",
        );
        assert!(denied_devices(&ctx, &c).is_empty());
        let c = CtConf::parse("lxc.cgroup2.devices.allow: c 195:* r\n");
        assert_eq!(denied_devices(&ctx, &c).len(), 3);
        // devN entries need no rule
        let c = CtConf::parse(
            "dev0: /dev/nvidia0,mode=0666\ndev1: path=/dev/nvidiactl\ndev2: /dev/nvidia-uvm\n",
        );
        assert!(denied_devices(&ctx, &c).is_empty());
    }
}
