//! The domain's values, parsed once: each type implements one Proxmox or guest format, in
//! [`FromStr`] (with serde's `Deserialize` going through it), and refuses anything else with a
//! [`ParseError`] that names the value and says why. A value of one of these types is known
//! good: code that holds a [`Hostname`] never checks it again, and nothing reaches `pct` or a
//! guest that was not parsed here.
//!
//! The formats are Proxmox's own, cited per type: pve-common `src/PVE/JSONSchema.pm` (the
//! `register_format` validators) and pve-container `src/PVE/LXC/Config.pm` (the `pct` option
//! descriptions). Where a guest program constrains a value further (Linux interface names, the
//! Docker image reference grammar), that is cited too. Where we are stricter than Proxmox (only
//! `0`/`1` for feature flags, ASCII only) the type says so.
//!
//! String-like types deref to `str` and display as their text, so `&spec.name` works where a
//! `&str` is expected.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a text is not a value of some type: `'<value>' is not a valid <what>: <why>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What was expected, e.g. `hostname`.
    pub what: &'static str,
    /// The refused text.
    pub value: String,
    /// Why, for people.
    pub why: String,
}

impl ParseError {
    fn new(what: &'static str, value: &str, why: impl Into<String>) -> Self {
        ParseError {
            what,
            value: value.to_string(),
            why: why.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // escape_debug: a newline or control character in a value shows as `\n`, never raw.
        write!(
            f,
            "'{}' is not a valid {}: {}",
            self.value.escape_debug(),
            self.what,
            self.why
        )
    }
}

impl std::error::Error for ParseError {}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("valid regex")
}

/// Serialize as the `Display` text; deserialize a JSON string through `FromStr`.
macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A validated text: `Deref<Target = str>`, `Display`, `as_str`, serde through `FromStr`.
macro_rules! text_type {
    ($(#[$m:meta])* $t:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $t(String);

        impl $t {
            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
        impl PartialEq<$t> for str {
            fn eq(&self, other: &$t) -> bool {
                self == other.0
            }
        }
        impl PartialEq<$t> for &str {
            fn eq(&self, other: &$t) -> bool {
                *self == other.0
            }
        }
        impl PartialEq<$t> for String {
            fn eq(&self, other: &$t) -> bool {
                *self == other.0
            }
        }
        serde_via_str!($t);
    };
}

// ---------------------------------------------------------------------------------------------
// Ctid

/// A Proxmox VMID (100..=999999999), the key of a container block.
///
/// pve-common `JSONSchema.pm` `pve_verify_vmid`: `^[1-9][0-9]{2,8}$`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ctid(pub u32);

impl fmt::Display for Ctid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Ctid {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (3..=9).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_digit())
            && !s.starts_with('0');
        if !ok {
            return Err(ParseError::new(
                "Proxmox CTID",
                s,
                "expected an integer 100..999999999 without leading zeros",
            ));
        }
        s.parse()
            .map(Ctid)
            .map_err(|_| ParseError::new("Proxmox CTID", s, "out of range"))
    }
}

serde_via_str!(Ctid);

// ---------------------------------------------------------------------------------------------
// Names

static CONFIGID: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^[a-z][a-z0-9_-]+$"));

/// The snapshot `establish` takes when a container is fully configured; reserved for it.
pub const CONFIGURED_STATE_SNAPSHOT: &str = "configured-state";

text_type!(
    /// A snapshot name a configuration may choose.
    ///
    /// pve-common `JSONSchema.pm`: `pve-snapshot-name` is `pve-configid` (`$CONFIGID_RE`,
    /// `^[a-z][a-z0-9_-]+$`, case-insensitive) with `maxLength => 40`; pve-container
    /// `src/PVE/API2/LXC/Snapshot.pm` (`snapshot`) refuses `current` and `vzdump` as reserved.
    /// We also reserve [`CONFIGURED_STATE_SNAPSHOT`], the snapshot the orchestrator owns.
    SnapshotName
);

impl FromStr for SnapshotName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let e = |why: &str| Err(ParseError::new("Proxmox snapshot name", s, why));
        if s.len() > 40 {
            return e("longer than 40 characters");
        }
        if !CONFIGID.is_match(s) {
            return e("expected a letter, then at least one letter, digit, '_' or '-'");
        }
        if s == "current" || s == "vzdump" {
            return e("the name is reserved by Proxmox");
        }
        if s == CONFIGURED_STATE_SNAPSHOT {
            return e("the name is reserved for the snapshot establish takes itself");
        }
        Ok(SnapshotName(s.to_string()))
    }
}

static DNS_LABEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$"));

text_type!(
    /// A container hostname (`pct --hostname`, the block's `name`).
    ///
    /// pve-container `Config.pm` `hostname`: `format => 'dns-name'`, `maxLength => 255`;
    /// pve-common `JSONSchema.pm` `pve_verify_dns_name`: dot-separated labels of ASCII letters,
    /// digits and `-`, not starting or ending with `-`. Labels are at most 63 characters (RFC
    /// 1035; the guest's resolver refuses longer ones).
    Hostname
);

impl FromStr for Hostname {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let e = |why: String| Err(ParseError::new("hostname", s, why));
        if s.is_empty() {
            return e("it is empty".into());
        }
        if s.len() > 255 {
            return e(format!("{} characters long (at most 255)", s.len()));
        }
        if s.contains('_') {
            return e("contains '_' (not allowed in a hostname; use '-')".into());
        }
        for label in s.split('.') {
            if label.len() > 63 {
                return e(format!(
                    "has a label of {} characters (at most 63)",
                    label.len()
                ));
            }
            if !DNS_LABEL.is_match(label) {
                return e("expected ASCII letters, digits and '-' in dot-separated labels, no label empty or starting or ending with '-'".into());
            }
        }
        Ok(Hostname(s.to_string()))
    }
}

static STORAGE_ID: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$"));

text_type!(
    /// A Proxmox storage ID (`--storage`, the first part of a volume ID).
    ///
    /// pve-common `JSONSchema.pm` `parse_storage_id` → `parse_id`: at least 2 characters,
    /// `^[a-z][a-z0-9\-\_\.]*[a-z0-9]$` (case-insensitive).
    StorageId
);

impl FromStr for StorageId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < 2 {
            return Err(ParseError::new(
                "Proxmox storage ID",
                s,
                "shorter than 2 characters",
            ));
        }
        if !STORAGE_ID.is_match(s) {
            return Err(ParseError::new(
                "Proxmox storage ID",
                s,
                "expected a letter, then letters, digits, '-', '_' or '.', ending in a letter or digit",
            ));
        }
        Ok(StorageId(s.to_string()))
    }
}

text_type!(
    /// The OS template a container is created from (`pct create <vmid> <ostemplate>`): a
    /// host-absolute path to a template archive, or a volume ID `<storage>:vztmpl/<file>`.
    ///
    /// pve-container `src/PVE/API2/LXC.pm` (`create_vm`): `ostemplate` is a string of at most
    /// 255 characters, a volume ID or a path. We refuse relative paths, `..` components,
    /// control characters and whitespace, and volume IDs whose storage is not a storage ID.
    OsTemplate
);

impl OsTemplate {
    /// A host-absolute path (not a volume ID).
    pub fn is_path(&self) -> bool {
        self.0.starts_with('/')
    }
}

impl FromStr for OsTemplate {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let e = |why: &str| Err(ParseError::new("OS template", s, why));
        if s.len() > 255 {
            return e("longer than 255 characters");
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return e("contains whitespace or a control character");
        }
        if s.starts_with('/') {
            if s.split('/').any(|c| c == "..") {
                return e("a path with a '..' component");
            }
            if s.ends_with('/') {
                return e("a directory, not a template file");
            }
            return Ok(OsTemplate(s.to_string()));
        }
        match s.split_once(':') {
            Some((storage, file)) if storage.parse::<StorageId>().is_ok() => {
                match file.strip_prefix("vztmpl/") {
                    Some(name)
                        if !name.is_empty()
                            && !name.contains('/')
                            && name != "."
                            && name != ".." =>
                    {
                        Ok(OsTemplate(s.to_string()))
                    }
                    _ => e("a volume ID must be <storage>:vztmpl/<file>"),
                }
            }
            _ => e("expected an absolute path or a volume ID <storage>:vztmpl/<file>"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Network

static IFACE: LazyLock<Regex> = LazyLock::new(|| re(r"^[-_.a-zA-Z0-9]+$"));

/// Linux `IFNAMSIZ` is 16 bytes with the terminating NUL (include/uapi/linux/if.h); `ip link`
/// refuses longer names, and `.`/`..` (`dev_valid_name` in net/core/dev.c).
fn check_ifname(what: &'static str, s: &str) -> Result<String, ParseError> {
    if s.is_empty() || s.len() > 15 {
        return Err(ParseError::new(what, s, "expected 1 to 15 characters"));
    }
    if !IFACE.is_match(s) {
        return Err(ParseError::new(
            what,
            s,
            "expected ASCII letters, digits, '-', '_' or '.'",
        ));
    }
    if s == "." || s == ".." {
        return Err(ParseError::new(
            what,
            s,
            "'.' and '..' are not device names",
        ));
    }
    Ok(s.to_string())
}

text_type!(
    /// The interface name inside the container (`net0` `name=`).
    ///
    /// pve-container `Config.pm` network `name`: `pattern => '[-_.\w\d]+'`; at most 15
    /// characters (Linux `IFNAMSIZ`). ASCII only (we are stricter than Perl's `\w`).
    IfaceName
);

impl FromStr for IfaceName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_ifname("interface name", s).map(IfaceName)
    }
}

text_type!(
    /// The host bridge a container's interface attaches to (`net0` `bridge=`).
    ///
    /// pve-container `Config.pm` network `bridge`: `pattern => '[-_.\w\d]+'` (also pve-common
    /// `parse_bridge_id`); a Linux device name, so at most 15 characters. A value such as
    /// `vmbr0,ip=dhcp` would smuggle options into the `net0` property string: refused.
    Bridge
);

impl FromStr for Bridge {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_ifname("bridge name", s).map(Bridge)
    }
}

/// An IPv4 address with a prefix length, as `net0` `ip=` takes it.
///
/// pve-container `Config.pm` network `ip`: `format => 'pve-ipv4-config'`; pve-common
/// `JSONSchema.pm` `pve_verify_cidrv4`: `$IPV4RE/(\d+)` with the prefix `> 7` and `<= 32`.
/// (`dhcp` and `manual` are Proxmox options our configuration does not use.) Octets with
/// leading zeros are refused (ambiguous: octal to some tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// The address.
    pub addr: Ipv4Addr,
    /// The prefix length, 8..=32.
    pub prefix: u8,
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let e = |why: &str| Err(ParseError::new("IPv4/CIDR address", s, why));
        let Some((ip, len)) = s.split_once('/') else {
            return e("expected a.b.c.d/prefix, e.g. 10.0.0.200/24");
        };
        let Ok(addr) = ip.parse::<Ipv4Addr>() else {
            return e("the address is not a.b.c.d (0..255 each, no leading zeros)");
        };
        let prefix = match len.parse::<u8>() {
            Ok(p) if len.bytes().all(|b| b.is_ascii_digit()) && (8..=32).contains(&p) => p,
            _ => return e("the prefix length must be 8..32"),
        };
        Ok(Ipv4Cidr { addr, prefix })
    }
}

serde_via_str!(Ipv4Cidr);

/// An IPv4 address (a gateway, `net0` `gw=`): four decimal octets, no leading zeros.
///
/// pve-container `Config.pm` network `gw`: `format => 'ipv4'`; pve-common `JSONSchema.pm`
/// `pve_verify_ipv4` (`$IPV4RE`). This is [`Ipv4Addr`]'s own `FromStr` with our error.
pub fn ipv4_addr(s: &str) -> Result<Ipv4Addr, ParseError> {
    s.parse().map_err(|_| {
        ParseError::new(
            "IPv4 address",
            s,
            "expected a.b.c.d (0..255 each, no leading zeros)",
        )
    })
}

text_type!(
    /// A unicast MAC address (`net0` `hwaddr=`), kept as written.
    ///
    /// pve-common `JSONSchema.pm` `pve_verify_mac_addr`: `^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$`
    /// (case-insensitive): six hex octets, the I/G (multicast) bit of the first clear.
    MacAddr
);

static MAC: LazyLock<Regex> = LazyLock::new(|| re(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"));

impl FromStr for MacAddr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !MAC.is_match(s) {
            return Err(ParseError::new(
                "MAC address",
                s,
                "expected six hex octets separated by ':'",
            ));
        }
        let first = u8::from_str_radix(&s[..2], 16).unwrap_or(0);
        if first & 1 == 1 {
            return Err(ParseError::new(
                "MAC address",
                s,
                format!(
                    "it is a multicast address (first octet {first:02X} is odd); Proxmox accepts only unicast MACs, e.g. {:02X}{}",
                    first & !1,
                    &s[2..]
                ),
            ));
        }
        Ok(MacAddr(s.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// Features, GPUs

/// The `features` keys Proxmox knows (pve-container `Config.pm` `$features_desc`).
pub const KNOWN_FEATURES: &[&str] = &[
    "nesting",
    "keyctl",
    "fuse",
    "mknod",
    "force_rw_sys",
    "mount",
];

static FSTYPES: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9]+(;[a-z0-9]+)*$"));

/// The container's `features` (`nesting=1,keyctl=1`), possibly empty; kept in the written
/// order.
///
/// pve-container `Config.pm` `$features_desc`: `mount` (`fstype;fstype`, pattern
/// `[a-zA-Z0-9_; ]+`) and the booleans `nesting`, `keyctl`, `fuse`, `mknod`, `force_rw_sys`.
/// We accept only `0`/`1` for booleans, lower-case file system names, each key once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Features {
    text: String,
    pairs: Vec<(String, String)>,
}

impl Features {
    /// `(key, value)` pairs in the written order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// `key=1`.
    pub fn enabled(&self, key: &str) -> bool {
        self.get(key) == Some("1")
    }
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Deref for Features {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Features {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if s.is_empty() {
            return Ok(Features::default());
        }
        let mut problems = Vec::new();
        for item in s.split(',') {
            let Some((k, v)) = item.split_once('=') else {
                problems.push(format!("item '{}' is not key=value", item.escape_debug()));
                continue;
            };
            if !KNOWN_FEATURES.contains(&k) {
                problems.push(format!(
                    "unknown key '{}' (Proxmox knows {})",
                    k.escape_debug(),
                    KNOWN_FEATURES.join(", ")
                ));
            } else if k == "mount" {
                if !FSTYPES.is_match(v) {
                    problems.push(format!(
                        "mount={}: expected file system types separated by ';', e.g. mount=nfs;cifs",
                        v.escape_debug()
                    ));
                }
            } else if v != "0" && v != "1" {
                problems.push(format!(
                    "{k}={}: the value must be 0 or 1",
                    v.escape_debug()
                ));
            }
            if pairs.iter().any(|(seen, _)| seen == k) {
                problems.push(format!("key '{k}' appears more than once"));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        if !problems.is_empty() {
            return Err(ParseError::new("features list", s, problems.join("; ")));
        }
        Ok(Features {
            text: s.to_string(),
            pairs,
        })
    }
}

serde_via_str!(Features);

/// `none` or the host GPU indices a container gets (`0,1`): sorted, each once.
///
/// Our format (the upstream schema's `^(none|[0-9]+(,[0-9]+)*)$`); an index is an NVIDIA minor
/// number, `/dev/nvidia<N>`, so at most 255 (a character device's minor on the host side of
/// pve-container `devN`). Duplicates and leading zeros are refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuAssignment {
    text: String,
    gpus: Vec<u32>,
}

impl GpuAssignment {
    /// The indices, ascending; empty for `none`.
    pub fn gpus(&self) -> &[u32] {
        &self.gpus
    }
    /// `none`.
    pub fn none() -> Self {
        GpuAssignment {
            text: "none".into(),
            gpus: Vec::new(),
        }
    }
}

impl Deref for GpuAssignment {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for GpuAssignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for GpuAssignment {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(GpuAssignment::none());
        }
        let e = |why: &str| Err(ParseError::new("GPU assignment", s, why));
        let mut gpus = Vec::new();
        for item in s.split(',') {
            let ok = !item.is_empty()
                && item.bytes().all(|b| b.is_ascii_digit())
                && (item == "0" || !item.starts_with('0'));
            match item.parse::<u32>() {
                Ok(n) if ok && n <= 255 => {
                    if gpus.contains(&n) {
                        return e("an index appears more than once");
                    }
                    gpus.push(n);
                }
                _ => return e("expected 'none' or GPU indices 0..255 separated by ',', e.g. 0,1"),
            }
        }
        gpus.sort_unstable();
        Ok(GpuAssignment {
            text: s.to_string(),
            gpus,
        })
    }
}

serde_via_str!(GpuAssignment);

// ---------------------------------------------------------------------------------------------
// Guest software

static DRIVER_VERSION: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[0-9]{1,4}\.[0-9]{1,4}(\.[0-9]{1,4})?$"));

text_type!(
    /// An NVIDIA driver version, `580.76.05` or `550.54` (as `nvidia-smi
    /// --query-gpu=driver_version` prints it and the runfile `NVIDIA-Linux-x86_64-<v>.run` is
    /// named). Goes into a file name and a URL, so nothing else is allowed.
    DriverVersion
);

impl FromStr for DriverVersion {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !DRIVER_VERSION.is_match(s) {
            return Err(ParseError::new(
                "NVIDIA driver version",
                s,
                "expected numbers separated by '.', e.g. 580.76.05",
            ));
        }
        Ok(DriverVersion(s.to_string()))
    }
}

// The Docker reference grammar (distribution/reference `reference.go`, as documented there):
//   reference := name [ ":" tag ] [ "@" digest ]
//   name      := [domain '/'] remote-name; components [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
//   domain    := host [':' port]; tag := [\w][\w.-]{0,127}
static IMAGE_REF: LazyLock<Regex> = LazyLock::new(|| {
    let comp = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*";
    let domain = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?";
    re(&format!(
        r"^{domain}{comp}(?:/{comp})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?$"
    ))
});

text_type!(
    /// A Docker image reference (`portainer/agent:2.33.1-lts`), by the grammar of
    /// distribution/reference (`reference.go`): optional registry host, lower-case path
    /// components, optional tag, optional `@sha256:` digest; at most 255 characters.
    ImageRef
);

impl FromStr for ImageRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 255 || !IMAGE_REF.is_match(s) {
            return Err(ParseError::new(
                "Docker image reference",
                s,
                "expected [registry/]name[:tag][@sha256:digest], e.g. portainer/agent:2.33.1-lts",
            ));
        }
        Ok(ImageRef(s.to_string()))
    }
}

static HF_REPO_ID: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$"));
static MODEL_PATH: LazyLock<Regex> = LazyLock::new(|| re(r"^(/[A-Za-z0-9._-]+)+$"));

text_type!(
    /// The model vLLM serves: a Hugging Face repository ID (`org/name`: letters, digits, `-`,
    /// `_`, `.`; no `--` or `..`; at most 96 characters, as huggingface_hub's
    /// `validate_repo_id` requires) or an absolute path inside the container without `..`.
    ModelName
);

impl FromStr for ModelName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let e = |why: &str| Err(ParseError::new("model name", s, why));
        if s.starts_with('/') {
            if !MODEL_PATH.is_match(s) || s.split('/').any(|c| c == "." || c == "..") {
                return e(
                    "a path must be absolute, of letters, digits, '.', '_' and '-', without '.' or '..' components",
                );
            }
            return Ok(ModelName(s.to_string()));
        }
        if s.len() > 96 || !HF_REPO_ID.is_match(s) || s.contains("--") || s.contains("..") {
            return e(
                "expected a Hugging Face repository ID org/name (letters, digits, '.', '_', '-'; no '--' or '..') or an absolute path",
            );
        }
        Ok(ModelName(s.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// Proxmox guest options

static TAG: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^[a-z0-9_][a-z0-9_\-+.]*$"));

/// A guest's tags (`pct set --tags`), in order, each once.
///
/// pve-container `Config.pm` `tags`: `format => 'pve-tag-list'`; pve-common `JSONSchema.pm`
/// `pve_verify_tag` (`$PVE_TAG_RE`, `[a-z0-9_][a-z0-9_\-\+\.]*`, case-insensitive), the list
/// split by `PVE::ParseUtils::split_list` (`,`, `;` or spaces). Displayed joined by `;`, as
/// Proxmox writes them to the conf.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags(Vec<String>);

impl Tags {
    /// The tags, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
    /// Has `tag` (Proxmox compares tags without case).
    pub fn contains(&self, tag: &str) -> bool {
        self.0.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }
    /// Add `tag` unless present; `false` when it is not a valid tag.
    pub fn insert(&mut self, tag: &str) -> bool {
        if !TAG.is_match(tag) {
            return false;
        }
        if !self.contains(tag) {
            self.0.push(tag.to_string());
        }
        true
    }
}

impl fmt::Display for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(";"))
    }
}

impl FromStr for Tags {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tags = Tags::default();
        for t in s.split([',', ';', ' ', '\t']).filter(|t| !t.is_empty()) {
            if !tags.insert(t) {
                return Err(ParseError::new(
                    "tag list",
                    s,
                    format!(
                        "tag '{}': expected a letter, digit or '_', then letters, digits, '_', '-', '+' or '.'",
                        t.escape_debug()
                    ),
                ));
            }
        }
        Ok(tags)
    }
}

serde_via_str!(Tags);

/// Startup and shutdown order (`pct set --startup order=2,up=30,down=60`).
///
/// pve-common `JSONSchema.pm` `pve_parse_startup_order`: comma-separated `[order=]N`, `up=N`,
/// `down=N` (non-negative integers); empty items are skipped; an empty value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Startup {
    /// Start order (lower first).
    pub order: Option<u64>,
    /// Seconds to wait after starting this guest.
    pub up: Option<u64>,
    /// Seconds to wait after stopping this guest.
    pub down: Option<u64>,
}

impl fmt::Display for Startup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(o) = self.order {
            parts.push(format!("order={o}"));
        }
        if let Some(u) = self.up {
            parts.push(format!("up={u}"));
        }
        if let Some(d) = self.down {
            parts.push(format!("down={d}"));
        }
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Startup {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let e = || {
            Err(ParseError::new(
                "startup order",
                s,
                "expected [order=]N[,up=N][,down=N] with non-negative integers",
            ))
        };
        let num = |v: &str| -> Option<u64> {
            (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse().ok())
                .flatten()
        };
        let mut out = Startup::default();
        let mut any = false;
        for p in s.split(',').filter(|p| !p.trim().is_empty()) {
            any = true;
            let (slot, v) = match p.split_once('=') {
                None => (&mut out.order, p),
                Some(("order", v)) => (&mut out.order, v),
                Some(("up", v)) => (&mut out.up, v),
                Some(("down", v)) => (&mut out.down, v),
                Some(_) => return e(),
            };
            match num(v) {
                Some(n) => *slot = Some(n),
                None => return e(),
            }
        }
        if !any {
            return e();
        }
        Ok(out)
    }
}

serde_via_str!(Startup);

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T: FromStr<Err = ParseError>>(good: &[&str]) {
        for g in good {
            if let Err(e) = g.parse::<T>() {
                panic!("{g:?} refused: {e}");
            }
        }
    }

    fn refused<T: FromStr<Err = ParseError> + fmt::Debug>(bad: &[&str]) {
        for b in bad {
            match b.parse::<T>() {
                Ok(v) => panic!("{b:?} accepted as {v:?}"),
                Err(e) => assert!(
                    e.to_string().contains(&b.escape_debug().to_string()),
                    "the error names the value: {e}"
                ),
            }
        }
    }

    #[test]
    fn ctid_follows_pve_vmid() {
        assert_eq!("900".parse::<Ctid>().unwrap(), Ctid(900));
        assert_eq!("999999999".parse::<Ctid>().unwrap(), Ctid(999_999_999));
        refused::<Ctid>(&[
            "99",
            "0100",
            "1000000000",
            "abc",
            "",
            "-100",
            "1e3",
            "+100",
            " 100",
        ]);
    }

    #[test]
    fn snapshot_names() {
        ok::<SnapshotName>(&["base-snapshot", "ab", "A_1-x", &"a".repeat(40)]);
        refused::<SnapshotName>(&[
            "a",
            "1abc",
            "current",
            "vzdump",
            "configured-state",
            "has space",
            "a.b",
            "é-x",
            &"a".repeat(41),
        ]);
    }

    #[test]
    fn hostnames() {
        ok::<Hostname>(&["web01", "vllmQwen3Coder", "a.b-c.d", "1", &"a".repeat(63)]);
        refused::<Hostname>(&[
            "",
            "-web",
            "web-",
            "a..b",
            "wéb",
            "bad_name",
            "a b",
            "x;y",
            "a.",
            &"a".repeat(64),
        ]);
        assert!(
            "bad_name"
                .parse::<Hostname>()
                .unwrap_err()
                .to_string()
                .contains("'_'")
        );
    }

    #[test]
    fn storage_ids() {
        ok::<StorageId>(&["local", "lxc-disks", "local-zfs", "a1", "my.store_2"]);
        refused::<StorageId>(&["a", "1abc", "lxc;rm", "x-", "lxc disks", "sto:re", "lxç"]);
    }

    #[test]
    fn os_templates() {
        ok::<OsTemplate>(&[
            "/fastData/shared-iso/template/cache/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        ]);
        refused::<OsTemplate>(&[
            "",
            "ubuntu.tar.zst",
            "../ubuntu.tar.zst",
            "/var/lib/vz/../../etc/shadow",
            "/tmp/",
            "/a b.tar",
            "/a\nb",
            "local:iso/x.iso",
            "local:vztmpl/",
            "local:vztmpl/../x",
            "x:vztmpl/y",
        ]);
        assert!("/x.tar".parse::<OsTemplate>().unwrap().is_path());
    }

    #[test]
    fn interface_and_bridge_names() {
        ok::<IfaceName>(&["eth0", "net-1", "a.b", "x_y", &"e".repeat(15)]);
        ok::<Bridge>(&["vmbr0", "vmbr0.100", "br_lan"]);
        refused::<IfaceName>(&[
            "",
            "eth`id`",
            "eth 0",
            "eth0,x",
            ".",
            "..",
            "éth0",
            &"e".repeat(16),
        ]);
        refused::<Bridge>(&["vmbr0,ip=dhcp", "vmbr0;", "", "vm br", "vmbr0=x"]);
    }

    #[test]
    fn ipv4_cidr() {
        let c: Ipv4Cidr = "10.0.0.200/24".parse().unwrap();
        assert_eq!((c.addr, c.prefix), (Ipv4Addr::new(10, 0, 0, 200), 24));
        assert_eq!(c.to_string(), "10.0.0.200/24");
        ok::<Ipv4Cidr>(&["0.0.0.0/8", "255.255.255.255/32"]);
        refused::<Ipv4Cidr>(&[
            "10.0.0.200",
            "10.0.0.300/24",
            "10.0.0.1/7",
            "10.0.0.1/33",
            "10.0.0.1/+24",
            "010.0.0.1/24",
            "dhcp",
            "10.0.0.1/24,gw=1.2.3.4",
        ]);
    }

    #[test]
    fn macs_are_unicast() {
        ok::<MacAddr>(&[
            "52:54:00:AA:BB:CC",
            "bc:24:11:5e:7a:01",
            "02:00:00:00:00:01",
        ]);
        refused::<MacAddr>(&[
            "53:54:00:AA:BB:CC",
            "01:00:5e:00:00:01",
            "52:54:00:67:89",
            "52-54-00-aa-bb-cc",
            "zz:54:00:aa:bb:cc",
        ]);
        let e = "53:54:00:67:89:B0"
            .parse::<MacAddr>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("multicast") && e.contains("52:54:00:67:89:B0"),
            "{e}"
        );
    }

    #[test]
    fn features() {
        let f: Features = "nesting=1,keyctl=0,mount=nfs;cifs".parse().unwrap();
        assert!(f.enabled("nesting") && !f.enabled("keyctl"));
        assert_eq!(f.get("mount"), Some("nfs;cifs"));
        assert_eq!(&*f, "nesting=1,keyctl=0,mount=nfs;cifs");
        ok::<Features>(&[
            "",
            "nesting=1",
            "nesting=1,keyctl=1,fuse=0,mknod=1,force_rw_sys=0",
        ]);
        refused::<Features>(&[
            "nesting",
            "nesting=2",
            "nesting=1,nesting=0",
            "nesting=1,foo=1",
            "nesting=1,",
            " nesting=1",
            "mount=nfs cifs",
            "mount=",
        ]);
    }

    #[test]
    fn gpu_assignments() {
        assert_eq!(
            "none".parse::<GpuAssignment>().unwrap().gpus(),
            &[] as &[u32]
        );
        assert_eq!("1,0".parse::<GpuAssignment>().unwrap().gpus(), &[0, 1]);
        refused::<GpuAssignment>(&["", "0,0", "01", "0,", "a", "-1", "256", "0 1", "None"]);
    }

    #[test]
    fn driver_versions() {
        ok::<DriverVersion>(&["580.76.05", "550.54", "535.183.01"]);
        refused::<DriverVersion>(&[
            "",
            "580",
            "580.76.05;reboot",
            "v580.76",
            "580..1",
            "580.76.05\n",
        ]);
    }

    #[test]
    fn image_refs() {
        ok::<ImageRef>(&[
            "portainer/agent:2.33.1-lts",
            "portainer/portainer-ce:2.33.1-lts",
            "ubuntu",
            "docker.io/library/ubuntu:24.04",
            "localhost:5000/x/y",
            &format!("nginx@sha256:{}", "a".repeat(64)),
        ]);
        refused::<ImageRef>(&[
            "",
            "portainer/Agent",
            "a b",
            "x:tag;rm",
            "x:",
            "-x",
            "x:tag\n",
        ]);
    }

    #[test]
    fn model_names() {
        ok::<ModelName>(&[
            "lmstudio-community/Qwen3-Coder-30B-A3B-Instruct-MLX-5bit",
            "gpt2",
            "/models/test-model",
        ]);
        refused::<ModelName>(&[
            "",
            "org/name\n--x",
            "org/name/extra",
            "a--b",
            "a..b",
            "/models/../etc",
            "/models/x y",
            "org/$(id)",
            "modèle",
            &"a".repeat(97),
        ]);
    }

    #[test]
    fn tags() {
        let mut t: Tags = "phoenix-managed;b,c d".parse().unwrap();
        assert_eq!(t.to_string(), "phoenix-managed;b;c;d");
        assert!(t.contains("PHOENIX-managed"));
        assert!(t.insert("e") && !t.insert("-bad"));
        ok::<Tags>(&["", "a+b.c_d"]);
        refused::<Tags>(&["-x", "a,b$c", "é"]);
    }

    #[test]
    fn startup() {
        let s: Startup = "2,up=30,down=60".parse().unwrap();
        assert_eq!((s.order, s.up, s.down), (Some(2), Some(30), Some(60)));
        assert_eq!(s.to_string(), "order=2,up=30,down=60");
        ok::<Startup>(&["order=1", "up=5"]);
        refused::<Startup>(&["", "order=-1", "up=x", "later=1", "order=1;x"]);
    }

    #[test]
    fn serde_goes_through_from_str() {
        let h: Hostname = serde_json::from_value(serde_json::json!("web01")).unwrap();
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            serde_json::json!("web01")
        );
        let e = serde_json::from_value::<Bridge>(serde_json::json!("vmbr0,ip=dhcp")).unwrap_err();
        assert!(e.to_string().contains("vmbr0,ip=dhcp"), "{e}");
        let c: Ctid = serde_json::from_value(serde_json::json!("900")).unwrap();
        assert_eq!(c, Ctid(900));
    }
}
