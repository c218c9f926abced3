//! `/etc/pve/lxc/<vmid>.conf` in Proxmox's exact format (pve-container's
//! `parse_pct_config` / `write_pct_config`): `#` description lines, sorted `key: value`
//! lines, raw `lxc.*` entries in stored order, then `[pve:pending]`, then one section per
//! snapshot sorted by name. The product edits these files directly, so parsing accepts what
//! Proxmox accepts (`lxc.k = v`, `lxc.k=v`) and writing produces what Proxmox writes.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;

use crate::schema;

/// One section: the main config, the pending changes or a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// Decoded description; each line ends with `\n` as Proxmox stores it.
    pub description: String,
    pub kv: BTreeMap<String, String>,
    /// `lxc.*` entries in file order.
    pub lxc: Vec<(String, String)>,
}

impl Section {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.kv.get(k).map(String::as_str)
    }
    pub fn set(&mut self, k: &str, v: impl Into<String>) {
        self.kv.insert(k.to_string(), v.into());
    }
    pub fn is_empty(&self) -> bool {
        self.description.is_empty() && self.kv.is_empty() && self.lxc.is_empty()
    }
    fn write(&self, out: &mut String) {
        for line in self.description.split('\n').filter(|l| !l.is_empty()) {
            out.push('#');
            out.push_str(&encode_text(line));
            out.push('\n');
        }
        for (k, v) in &self.kv {
            if matches!(k.as_str(), "digest" | "description" | "snapname") {
                continue;
            }
            out.push_str(&format!("{k}: {v}\n"));
        }
        for (k, v) in &self.lxc {
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conf {
    pub main: Section,
    pub pending: Section,
    pub snapshots: BTreeMap<String, Section>,
}

/// PVE::Tools::encode_text as used for `#` lines: bytes outside 0x20..0x7E, `%` and `:`
/// become `%XX`.
pub fn encode_text(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' && b != b':' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn decode_text(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
            && let Ok(h) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(h);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const LXC_KEYS: &[&str] = &[
    "lxc.apparmor.profile",
    "lxc.apparmor.allow_incomplete",
    "lxc.apparmor.allow_nesting",
    "lxc.apparmor.raw",
    "lxc.selinux.context",
    "lxc.include",
    "lxc.arch",
    "lxc.uts.name",
    "lxc.signal.halt",
    "lxc.signal.reboot",
    "lxc.signal.stop",
    "lxc.init.cmd",
    "lxc.init.cwd",
    "lxc.init.uid",
    "lxc.init.gid",
    "lxc.init.groups",
    "lxc.ephemeral",
    "lxc.no_new_privs",
    "lxc.sched.core",
    "lxc.time.offset.boot",
    "lxc.time.offset.monotonic",
    "lxc.monitor.unshare",
    "lxc.idmap",
    "lxc.keyring.session",
    "lxc.mount.auto",
    "lxc.mount.entry",
    "lxc.mount.fstab",
    "lxc.rootfs.managed",
    "lxc.rootfs.mount",
    "lxc.rootfs.options",
    "lxc.autodev",
    "lxc.autodev.tmpfs.size",
    "lxc.cap.drop",
    "lxc.cap.keep",
    "lxc.console.logfile",
    "lxc.console.path",
    "lxc.console.rotate",
    "lxc.console.buffer.size",
    "lxc.console.size",
    "lxc.environment",
    "lxc.environment.runtime",
    "lxc.environment.hooks",
    "lxc.hook.autodev",
    "lxc.hook.clone",
    "lxc.hook.destroy",
    "lxc.hook.mount",
    "lxc.hook.post-stop",
    "lxc.hook.pre-mount",
    "lxc.hook.pre-start",
    "lxc.hook.start",
    "lxc.hook.start-host",
    "lxc.hook.stop",
    "lxc.hook.version",
    "lxc.log.file",
    "lxc.log.level",
    "lxc.log.syslog",
    "lxc.pty.max",
    "lxc.seccomp.allow_nesting",
    "lxc.seccomp.notify.cookie",
    "lxc.seccomp.notify.proxy",
    "lxc.seccomp.profile",
    "lxc.start.auto",
    "lxc.start.delay",
    "lxc.start.order",
    "lxc.tty.dir",
    "lxc.tty.max",
];

const LXC_PREFIXES: &[&str] = &[
    "lxc.cgroup2.",
    "lxc.cgroup.",
    "lxc.prlimit.",
    "lxc.net.",
    "lxc.sysctl.",
    "lxc.proc.",
];

pub fn lxc_key_allowed(k: &str) -> bool {
    LXC_KEYS.contains(&k) || LXC_PREFIXES.iter().any(|p| k.starts_with(p))
}

/// Config keys Proxmox keeps besides the API options.
const INTERNAL_KEYS: &[&str] = &["parent", "snaptime", "snapstate", "lock", "digest"];

const CONFIG_EP: &str = "PUT /nodes/{node}/lxc/{vmid}/config";

/// Whether `k` is a config key (`pct set` option that is stored), numbered ones included.
pub fn is_config_key(k: &str) -> bool {
    if INTERNAL_KEYS.contains(&k) {
        return true;
    }
    if matches!(k, "node" | "vmid" | "delete" | "revert" | "digest") {
        return false;
    }
    schema::lookup(schema::endpoint(CONFIG_EP), k).is_some()
}

fn re_section() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"(?i)^\[([a-z][a-z0-9_\-]+)\]\s*$").unwrap())
}
fn re_lxc() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^(lxc\.[a-z0-9_\-\.]+)(:|\s*=)\s*(.*?)\s*$").unwrap())
}
fn re_kv() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^([a-z][a-z_]*[0-9]*):\s*(.+?)\s*$").unwrap())
}

/// Check and normalise one stored value (booleans to 1/0).
fn check_value(k: &str, v: &str) -> Result<String, String> {
    if matches!(k, "parent") {
        return if schema::is_configid(v) {
            Ok(v.into())
        } else {
            Err(format!("invalid configuration ID '{v}'"))
        };
    }
    if matches!(k, "snaptime") {
        return if v.chars().all(|c| c.is_ascii_digit()) {
            Ok(v.into())
        } else {
            Err(format!("type check ('integer') failed - got '{v}'"))
        };
    }
    if matches!(k, "snapstate" | "digest") {
        return Ok(v.into());
    }
    let Some(s) = schema::lookup(schema::endpoint(CONFIG_EP), k) else {
        return Err(format!("unknown setting '{k}'"));
    };
    let mut errs = schema::Errors::new();
    schema::check_prop(k, s, v, &mut errs);
    if let Some(e) = errs.get(k) {
        return Err(e.trim_end().to_string());
    }
    if schema::is_boolean(s) {
        let b = crate::options::parse_boolean(v).unwrap_or(false);
        return Ok(if b { "1" } else { "0" }.into());
    }
    Ok(v.into())
}

impl Conf {
    /// Parse a config file; returns the warnings Proxmox prints for lines it drops.
    pub fn parse(vmid: u32, text: &str) -> (Conf, Vec<String>) {
        let mut conf = Conf::default();
        let mut warnings = Vec::new();
        // None = main, Some("") = pending, Some(name) = snapshot
        let mut cur: Option<String> = None;
        for raw in text.split('\n') {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            if line == "[pve:pending]" {
                cur = Some(String::new());
                continue;
            }
            if let Some(c) = re_section().captures(line) {
                let name = c[1].to_string();
                conf.snapshots.entry(name.clone()).or_default();
                cur = Some(name);
                continue;
            }
            let sect = match &cur {
                None => &mut conf.main,
                Some(n) if n.is_empty() => &mut conf.pending,
                Some(n) => conf.snapshots.get_mut(n).expect("section exists"),
            };
            if let Some(d) = line.strip_prefix('#') {
                sect.description.push_str(&decode_text(d));
                sect.description.push('\n');
                continue;
            }
            if let Some(c) = re_lxc().captures(line) {
                let k = c[1].to_string();
                let v = c[3].to_string();
                if k == "lxc.rootfs.path" {
                    warnings.push(format!(
                        "vm {vmid} - lxc.rootfs.path: lxc.rootfs.path is auto generated from rootfs"
                    ));
                } else if lxc_key_allowed(&k) {
                    sect.lxc.push((k, v));
                } else {
                    warnings.push(format!("vm {vmid} - unable to parse config: {line}"));
                }
                continue;
            }
            if let Some(c) = re_kv().captures(line) {
                let k = c[1].to_string();
                let v = c[2].to_string();
                if k == "description" {
                    sect.description = format!("{}\n", decode_text(&v));
                    continue;
                }
                if k == "delete" && cur.as_deref() == Some("") {
                    sect.set("delete", v);
                    continue;
                }
                match check_value(&k, &v) {
                    Ok(v) => sect.set(&k, v),
                    Err(e) => {
                        warnings.push(format!("vm {vmid} - unable to parse value of '{k}' - {e}"))
                    }
                }
                continue;
            }
            warnings.push(format!("vm {vmid} - unable to parse config: {line}"));
        }
        (conf, warnings)
    }

    pub fn write(&self) -> String {
        let mut out = String::new();
        self.main.write(&mut out);
        if !self.pending.is_empty() {
            out.push_str("\n[pve:pending]\n");
            self.pending.write(&mut out);
        }
        for (name, s) in &self.snapshots {
            out.push_str(&format!("\n[{name}]\n"));
            s.write(&mut out);
        }
        out
    }

    pub fn lock(&self) -> Option<&str> {
        self.main.get("lock")
    }
    pub fn is_template(&self) -> bool {
        self.main.get("template") == Some("1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "#web server\narch: amd64\nhostname: web01\nmemory: 2048\nparent: pre\nrootfs: local-zfs:subvol-100-disk-0,size=8G\nswap: 512\nunprivileged: 1\nlxc.mount.entry: /dev/net/tun dev/net/tun none bind,create=file\nlxc.cgroup2.devices.allow: c 195:* rwm\n\n[pre]\n#before\narch: amd64\nhostname: web01\nmemory: 2048\nrootfs: local-zfs:subvol-100-disk-0,size=8G\nsnaptime: 1700000000\nswap: 512\n";

    #[test]
    fn roundtrip_is_exact() {
        let (c, w) = Conf::parse(100, SAMPLE);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.write(), SAMPLE);
        assert_eq!(c.snapshots["pre"].get("snaptime"), Some("1700000000"));
    }

    #[test]
    fn lxc_equals_forms_are_rewritten() {
        let (c, _) = Conf::parse(
            100,
            "memory: 512\nlxc.mount.entry = /dev/a dev/a none bind\nlxc.cap.drop=\nlxc.bogus.key: 1\nfoo: bar\nonboot: yes\n",
        );
        assert_eq!(
            c.write(),
            "memory: 512\nonboot: 1\nlxc.mount.entry: /dev/a dev/a none bind\nlxc.cap.drop: \n"
        );
        let (_, w) = Conf::parse(100, "lxc.bogus.key: 1\nfoo: bar\n");
        assert_eq!(w[0], "vm 100 - unable to parse config: lxc.bogus.key: 1");
        assert_eq!(
            w[1],
            "vm 100 - unable to parse value of 'foo' - unknown setting 'foo'"
        );
    }

    #[test]
    fn description_encoding() {
        assert_eq!(encode_text("a:b%c"), "a%3Ab%25c");
        assert_eq!(decode_text("a%3Ab%25c"), "a:b%c");
    }
}
