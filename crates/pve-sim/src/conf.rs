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
        // `split(/\n/, $descr)`: inner empty lines stay (as `#`), trailing ones go.
        let descr = self.description.trim_end_matches('\n');
        for line in descr.split('\n').filter(|_| !descr.is_empty()) {
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

/// pve-container `src/PVE/LXC/Config.pm` `$valid_lxc_conf_keys` (keys valid as they are),
/// with the pve-container version that added each one that is newer than PVE 8.0 (git log of
/// Config.pm against debian/changelog): `lxc.init.cwd` 6.0.0, `lxc.environment.runtime` /
/// `lxc.environment.hooks` 6.0.14. (`lxc.init.uid`/`gid`/`groups` came with 6.1.0, after
/// every release pve-sim simulates, so they are not valid here.)
const LXC_KEYS: &[(&str, (u32, u32, u32))] = &[
    ("lxc.apparmor.profile", (0, 0, 0)),
    ("lxc.apparmor.allow_incomplete", (0, 0, 0)),
    ("lxc.apparmor.allow_nesting", (0, 0, 0)),
    ("lxc.apparmor.raw", (0, 0, 0)),
    ("lxc.selinux.context", (0, 0, 0)),
    ("lxc.include", (0, 0, 0)),
    ("lxc.arch", (0, 0, 0)),
    ("lxc.uts.name", (0, 0, 0)),
    ("lxc.signal.halt", (0, 0, 0)),
    ("lxc.signal.reboot", (0, 0, 0)),
    ("lxc.signal.stop", (0, 0, 0)),
    ("lxc.init.cmd", (0, 0, 0)),
    ("lxc.init.cwd", (6, 0, 0)),
    ("lxc.pty.max", (0, 0, 0)),
    ("lxc.console.logfile", (0, 0, 0)),
    ("lxc.console.path", (0, 0, 0)),
    ("lxc.tty.max", (0, 0, 0)),
    ("lxc.devtty.dir", (0, 0, 0)),
    ("lxc.hook.autodev", (0, 0, 0)),
    ("lxc.autodev", (0, 0, 0)),
    ("lxc.kmsg", (0, 0, 0)),
    ("lxc.mount.fstab", (0, 0, 0)),
    ("lxc.mount.entry", (0, 0, 0)),
    ("lxc.mount.auto", (0, 0, 0)),
    ("lxc.rootfs.mount", (0, 0, 0)),
    ("lxc.cap.drop", (0, 0, 0)),
    ("lxc.cap.keep", (0, 0, 0)),
    ("lxc.seccomp.profile", (0, 0, 0)),
    ("lxc.seccomp.notify.proxy", (0, 0, 0)),
    ("lxc.seccomp.notify.cookie", (0, 0, 0)),
    ("lxc.idmap", (0, 0, 0)),
    ("lxc.hook.pre-start", (0, 0, 0)),
    ("lxc.hook.pre-mount", (0, 0, 0)),
    ("lxc.hook.mount", (0, 0, 0)),
    ("lxc.hook.start", (0, 0, 0)),
    ("lxc.hook.stop", (0, 0, 0)),
    ("lxc.hook.post-stop", (0, 0, 0)),
    ("lxc.hook.clone", (0, 0, 0)),
    ("lxc.hook.destroy", (0, 0, 0)),
    ("lxc.hook.version", (0, 0, 0)),
    ("lxc.log.level", (0, 0, 0)),
    ("lxc.log.file", (0, 0, 0)),
    ("lxc.start.auto", (0, 0, 0)),
    ("lxc.start.delay", (0, 0, 0)),
    ("lxc.start.order", (0, 0, 0)),
    ("lxc.group", (0, 0, 0)),
    ("lxc.environment", (0, 0, 0)),
    ("lxc.environment.runtime", (6, 0, 14)),
    ("lxc.environment.hooks", (6, 0, 14)),
    ("lxc.sysctl.fs.mqueue", (0, 0, 0)),
    ("lxc.sysctl.kernel.msgmax", (0, 0, 0)),
    ("lxc.sysctl.kernel.msgmnb", (0, 0, 0)),
    ("lxc.sysctl.kernel.msgmni", (0, 0, 0)),
    ("lxc.sysctl.kernel.sem", (0, 0, 0)),
    ("lxc.sysctl.kernel.shmall", (0, 0, 0)),
    ("lxc.sysctl.kernel.shmmax", (0, 0, 0)),
    ("lxc.sysctl.kernel.shmmni", (0, 0, 0)),
    ("lxc.sysctl.kernel.shm_rmid_forced", (0, 0, 0)),
];

/// Keys in `$valid_lxc_conf_keys` with a message instead of 1: warned and dropped.
const LXC_KEYS_REFUSED: &[(&str, &str)] = &[
    (
        "lxc.rootfs.path",
        "lxc.rootfs.path is auto generated from rootfs",
    ),
    (
        "lxc.rootfs.options",
        "lxc.rootfs.options is not supported, please use mount point options in the \"rootfs\" key",
    ),
];

/// `$deprecated_lxc_conf_keys`: kept, with a warning naming the new key.
const LXC_KEYS_DEPRECATED: &[(&str, &str)] = &[
    ("lxc.aa_profile", "lxc.apparmor.profile"),
    ("lxc.aa_allow_incomplete", "lxc.apparmor.allow_incomplete"),
    ("lxc.console", "lxc.console.path"),
    ("lxc.devttydir", "lxc.tty.dir"),
    ("lxc.haltsignal", "lxc.signal.halt"),
    ("lxc.rebootsignal", "lxc.signal.reboot"),
    ("lxc.stopsignal", "lxc.signal.stop"),
    ("lxc.id_map", "lxc.idmap"),
    ("lxc.init_cmd", "lxc.init.cmd"),
    ("lxc.loglevel", "lxc.log.level"),
    ("lxc.logfile", "lxc.log.file"),
    ("lxc.mount", "lxc.mount.fstab"),
    ("lxc.network.type", "lxc.net.INDEX.type"),
    ("lxc.network.flags", "lxc.net.INDEX.flags"),
    ("lxc.network.link", "lxc.net.INDEX.link"),
    ("lxc.network.mtu", "lxc.net.INDEX.mtu"),
    ("lxc.network.name", "lxc.net.INDEX.name"),
    ("lxc.network.hwaddr", "lxc.net.INDEX.hwaddr"),
    ("lxc.network.ipv4", "lxc.net.INDEX.ipv4.address"),
    ("lxc.network.ipv4.gateway", "lxc.net.INDEX.ipv4.gateway"),
    ("lxc.network.ipv6", "lxc.net.INDEX.ipv6.address"),
    ("lxc.network.ipv6.gateway", "lxc.net.INDEX.ipv6.gateway"),
    ("lxc.network.script.up", "lxc.net.INDEX.script.up"),
    ("lxc.network.script.down", "lxc.net.INDEX.script.down"),
    ("lxc.pts", "lxc.pty.max"),
    ("lxc.se_context", "lxc.selinux.context"),
    ("lxc.seccomp", "lxc.seccomp.profile"),
    ("lxc.tty", "lxc.tty.max"),
    ("lxc.utsname", "lxc.uts.name"),
];

/// What `is_valid_lxc_conf_key` says about a raw key.
#[derive(Debug, PartialEq, Eq)]
pub enum LxcKey {
    /// Kept (possibly after a warning).
    Valid(Option<String>),
    /// Dropped with this message (`vm <vmid> - <key>: <msg>`).
    Refused(String),
    /// Dropped: `vm <vmid> - unable to parse config: <line>`.
    Invalid,
}

/// pve-container `src/PVE/LXC/Config.pm` `is_valid_lxc_conf_key` for pve-container `pc`.
/// `lxc.cgroup.*` is accepted silently: its deprecation warning came with 6.1.6, after every
/// simulated release.
pub fn lxc_key(vmid: u32, k: &str, pc: (u32, u32, u32)) -> LxcKey {
    if k.starts_with("lxc.limit.") {
        return LxcKey::Valid(Some(format!(
            "vm {vmid} - {k}: lxc.limit.* was renamed to lxc.prlimit.*"
        )));
    }
    if let Some((_, new)) = LXC_KEYS_DEPRECATED.iter().find(|(o, _)| *o == k) {
        return LxcKey::Valid(Some(format!(
            "vm {vmid} - {k} is deprecated and was renamed to {new}"
        )));
    }
    if let Some((_, msg)) = LXC_KEYS_REFUSED.iter().find(|(o, _)| *o == k) {
        return LxcKey::Refused((*msg).to_string());
    }
    if LXC_KEYS.iter().any(|(o, since)| *o == k && pc >= *since)
        || ["lxc.cgroup.", "lxc.cgroup2.", "lxc.prlimit.", "lxc.net."]
            .iter()
            .any(|p| k.starts_with(p))
    {
        return LxcKey::Valid(None);
    }
    LxcKey::Invalid
}

/// Whether a raw key is kept in the config (newest simulated pve-container).
pub fn lxc_key_allowed(k: &str) -> bool {
    matches!(lxc_key(0, k, NEWEST), LxcKey::Valid(_))
}

/// The newest pve-container pve-sim simulates.
const NEWEST: (u32, u32, u32) = (6, 0, 18);

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
fn re_pending() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"(?i)^\[pve:pending\]\s*$").unwrap())
}
fn re_description() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^description:\s*(.*\S)\s*$").unwrap())
}
fn re_snapstate() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"snapstate:\s*(prepare|delete)\s*$").unwrap())
}
fn re_delete() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^delete:\s*(.*\S)\s*$").unwrap())
}
fn re_lxc() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^(lxc\.[a-z0-9_\-\.]+)(:|\s*=)\s*(.*?)\s*$").unwrap())
}
fn re_kv() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^([a-z][a-z_]*\d*):\s*(.+?)\s*$").unwrap())
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
    /// Parse a config file as the newest simulated pve-container does.
    pub fn parse(vmid: u32, text: &str) -> (Conf, Vec<String>) {
        Conf::parse_for(vmid, text, NEWEST)
    }

    /// pve-container `src/PVE/LXC/Config.pm` `parse_pct_config` (not strict, as
    /// `load_config` calls it) for pve-container `pc`; returns the warnings it prints. A value
    /// that fails its type check is warned about and still kept (the assignment follows the
    /// warning), so it is written back; dropped are raw keys that are not valid, `delete`
    /// outside `[pve:pending]` and lines that parse as nothing.
    pub fn parse_for(vmid: u32, text: &str, pc: (u32, u32, u32)) -> (Conf, Vec<String>) {
        let mut conf = Conf::default();
        let mut warnings = Vec::new();
        // None = main, Some("") = pending, Some(name) = snapshot
        let mut cur: Option<String> = None;
        for raw in text.split('\n') {
            let line = raw;
            if line.trim().is_empty() {
                continue;
            }
            if re_pending().is_match(line) {
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
                match lxc_key(vmid, &k, pc) {
                    LxcKey::Valid(w) => {
                        warnings.extend(w);
                        sect.lxc.push((k, v));
                    }
                    LxcKey::Refused(msg) => warnings.push(format!("vm {vmid} - {k}: {msg}")),
                    LxcKey::Invalid => {
                        warnings.push(format!("vm {vmid} - unable to parse config: {line}"))
                    }
                }
                continue;
            }
            if let Some(c) = re_description().captures(line) {
                // `$descr .= decode_text($2)`: no newline of its own.
                sect.description.push_str(&decode_text(&c[1]));
                continue;
            }
            if let Some(c) = re_snapstate().captures(line) {
                sect.set("snapstate", &c[1]);
                continue;
            }
            if let Some(c) = re_delete().captures(line) {
                if cur.as_deref() == Some("") {
                    sect.set("delete", &c[1]);
                } else {
                    warnings.push(format!(
                        "vm {vmid} - property 'delete' is only allowed in [pve:pending]"
                    ));
                }
                continue;
            }
            if let Some(c) = re_kv().captures(line) {
                let k = c[1].to_string();
                let v = c[2].to_string();
                match check_value(&k, &v) {
                    Ok(v) => sect.set(&k, v),
                    Err(e) => {
                        warnings.push(format!("vm {vmid} - unable to parse value of '{k}' - {e}"));
                        sect.set(&k, v);
                    }
                }
                continue;
            }
            warnings.push(format!("vm {vmid} - unable to parse config: {line}"));
        }
        // `delete $res->{snapstate}; # just to be sure`
        conf.main.kv.remove("snapstate");
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
        // parse_pct_config keeps a value that fails its check (it warns, then assigns).
        assert_eq!(
            c.write(),
            "foo: bar\nmemory: 512\nonboot: 1\nlxc.mount.entry: /dev/a dev/a none bind\nlxc.cap.drop: \n"
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
