//! Parameter verification against Proxmox's LXC API schema (`data/lxc-api-params.json`,
//! PVE 9.1): types, named formats (`pve-vmid`, `dns-name`, `mac-addr`, ...), property
//! strings (`net[n]`, `rootfs`, `mp[n]`, `features`, `dev[n]`), patterns, enums, ranges and
//! lengths, with JSONSchema.pm's messages. Errors are collected per parameter as Proxmox does.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::options::parse_boolean;

static SCHEMA_TEXT: &str = include_str!("../data/lxc-api-params.json");

fn schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(|| serde_json::from_str(SCHEMA_TEXT).expect("embedded API schema is valid JSON"))
}

/// The parameter properties of one endpoint (e.g. `POST /nodes/{node}/lxc`).
pub fn endpoint(key: &str) -> &'static Map<String, Value> {
    schema()["endpoints"][key]["parameters"]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("endpoint {key} missing from embedded schema"))
}

/// Upper bound (exclusive) of the numbered keys the schema collapses as `x[n]`.
fn numbered_limit(base: &str) -> Option<u32> {
    match base {
        "net" => Some(32),
        "mp" | "dev" | "unused" => Some(256),
        _ => None,
    }
}

/// Split `net12` into (`net`, 12).
pub fn split_numbered(name: &str) -> Option<(&str, u32)> {
    let pos = name.find(|c: char| c.is_ascii_digit())?;
    let (b, n) = name.split_at(pos);
    if n.len() > 1 && n.starts_with('0') {
        return None;
    }
    let n: u32 = n.parse().ok()?;
    Some((b, n))
}

/// Schema of parameter `name` in `props`, resolving `net0` to `net[n]`.
pub fn lookup<'a>(props: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = props.get(name)
        && !name.contains('[')
    {
        return Some(v);
    }
    let (base, n) = split_numbered(name)?;
    let lim = numbered_limit(base)?;
    if n >= lim {
        return None;
    }
    props.get(&format!("{base}[n]"))
}

pub fn is_boolean(s: &Value) -> bool {
    s.get("type").and_then(Value::as_str) == Some("boolean")
}

pub fn is_list_format(s: &Value) -> bool {
    s.get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| f.contains("-list"))
}

pub type Errors = BTreeMap<String, String>;

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn fmt_num(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Compiled regexes are cached: a `pct` call checks the same few patterns many times
/// (every config line on load), and compiling dominates in unoptimised builds.
fn re(pat: &str) -> Regex {
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, Regex>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    CACHE.with(|c| {
        c.borrow_mut()
            .entry(pat.to_string())
            .or_insert_with(|| Regex::new(pat).expect("internal regex"))
            .clone()
    })
}

/// Perl `(?^:...)` → Rust `(?:...)`, anchored as JSONSchema.pm does (`m/^$pattern$/`).
fn perl_pattern(p: &str) -> Regex {
    re(&format!("^(?:{})$", perl_to_rust(p)))
}

/// Translate a Perl pattern from the schema: `(?^:` groups, `\0`, and `\w`/`\d` as Perl
/// applies them to Proxmox's byte strings (ASCII only; also far cheaper to compile than
/// Rust's Unicode classes).
fn perl_to_rust(p: &str) -> String {
    let p = p.replace("(?^:", "(?:");
    let mut out = String::with_capacity(p.len() + 16);
    let mut in_class = false;
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('w') if in_class => out.push_str("0-9A-Za-z_"),
                Some('w') => out.push_str("[0-9A-Za-z_]"),
                Some('d') if in_class => out.push_str("0-9"),
                Some('d') => out.push_str("[0-9]"),
                Some('0') => out.push_str("\\x00"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // a leading `]` or `^]` is literal
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().unwrap_or('^'));
                }
                if chars.peek() == Some(&']') {
                    out.push(chars.next().unwrap_or(']'));
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

fn is_integer(v: &str) -> bool {
    re(r"^[+-]?[0-9]+$").is_match(v)
}
fn is_number(v: &str) -> bool {
    re(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$").is_match(v)
}

/// Check one parameter value against its schema, adding `path: msg` entries to `errs`.
pub fn check_prop(path: &str, s: &Value, value: &str, errs: &mut Errors) {
    let ty = s.get("type").and_then(Value::as_str).unwrap_or("string");
    match ty {
        "integer" if !is_integer(value) => {
            errs.insert(
                path.into(),
                format!("type check ('integer') failed - got '{value}'"),
            );
            return;
        }
        "number" if !is_number(value) => {
            errs.insert(
                path.into(),
                format!("type check ('number') failed - got '{value}'"),
            );
            return;
        }
        "boolean" if parse_boolean(value).is_none() => {
            errs.insert(
                path.into(),
                format!("type check ('boolean') failed - got '{value}'"),
            );
            return;
        }
        _ => {}
    }
    if let Some(max) = s.get("maxLength").and_then(num)
        && value.chars().count() as f64 > max
    {
        errs.insert(
            path.into(),
            format!("value may only be {max} characters long"),
        );
        return;
    }
    if let Some(min) = s.get("minLength").and_then(num)
        && (value.chars().count() as f64) < min
    {
        errs.insert(
            path.into(),
            format!("value must be at least {min} characters long"),
        );
        return;
    }
    if let Some(f) = s.get("format") {
        match f {
            Value::String(name) => {
                if let Err(msg) = check_named_format(name, value) {
                    errs.insert(path.into(), format!("invalid format - {msg}\n"));
                    return;
                }
            }
            Value::Object(obj) => {
                if let Err(sub) = parse_property_string(obj, value) {
                    match sub {
                        PropErr::Parse(msg) => {
                            errs.insert(path.into(), format!("invalid format - {msg}\n"));
                        }
                        PropErr::Fields(fields) => {
                            errs.insert(path.into(), "invalid format - format error\n".into());
                            for (k, m) in fields {
                                errs.insert(format!("{path}.{k}"), m);
                            }
                        }
                    }
                    return;
                }
            }
            _ => {}
        }
    }
    if (ty == "integer" || ty == "number")
        && let Ok(v) = value.parse::<f64>()
    {
        if let Some(min) = s.get("minimum")
            && let Some(m) = num(min)
            && v < m
        {
            errs.insert(
                path.into(),
                format!("value must have a minimum value of {}", fmt_num(min)),
            );
            return;
        }
        if let Some(max) = s.get("maximum")
            && let Some(m) = num(max)
            && v > m
        {
            errs.insert(
                path.into(),
                format!("value must have a maximum value of {}", fmt_num(max)),
            );
            return;
        }
    }
    if let Some(Value::Array(en)) = s.get("enum") {
        let items: Vec<String> = en.iter().map(fmt_num).collect();
        if !items.iter().any(|i| i == value) {
            errs.insert(
                path.into(),
                format!(
                    "value '{value}' does not have a value in the enumeration '{}'",
                    items.join(", ")
                ),
            );
            return;
        }
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str)
        && !perl_pattern(p).is_match(value)
    {
        errs.insert(path.into(), "value does not match the regex pattern".into());
    }
}

pub enum PropErr {
    Parse(String),
    Fields(Vec<(String, String)>),
}

/// PVE::JSONSchema::parse_property_string + check_object: `k=v,k=v` with an optional
/// default key; returns the parsed keys (booleans normalised to 1/0).
pub fn parse_property_string(
    format: &Map<String, Value>,
    data: &str,
) -> Result<BTreeMap<String, String>, PropErr> {
    let mut res: BTreeMap<String, String> = BTreeMap::new();
    let default_key = format
        .iter()
        .find(|(_, v)| v.get("default_key").is_some_and(|d| d.as_i64() == Some(1)))
        .map(|(k, _)| k.clone());
    for part in data.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        if let Some((k, v)) = part.split_once('=')
            && !k.is_empty()
            && !v.is_empty()
        {
            if res.contains_key(k) {
                return Err(PropErr::Parse(format!(
                    "duplicate key in comma-separated list property: {k}"
                )));
            }
            let Some(ks) = format.get(k) else {
                return Err(PropErr::Parse(format!(
                    "invalid key in comma-separated list property: {k}"
                )));
            };
            let v = if is_boolean(ks) {
                match parse_boolean(v) {
                    Some(b) => (if b { "1" } else { "0" }).to_string(),
                    None => v.to_string(),
                }
            } else {
                v.to_string()
            };
            res.insert(k.to_string(), v);
        } else if !part.contains('=') {
            let Some(dk) = &default_key else {
                return Err(PropErr::Parse(
                    "value without key, but schema does not define a default key".into(),
                ));
            };
            if res.contains_key(dk) {
                return Err(PropErr::Parse(format!(
                    "duplicate key in comma-separated list property: {dk}"
                )));
            }
            res.insert(dk.clone(), part.to_string());
        } else {
            return Err(PropErr::Parse(
                "missing key in comma-separated list property".into(),
            ));
        }
    }
    let mut fields = Errors::new();
    for (k, ks) in format {
        match res.get(k) {
            None => {
                if ks.get("optional").and_then(Value::as_i64) != Some(1) {
                    fields.insert(
                        k.clone(),
                        "property is missing and it is not optional".into(),
                    );
                }
            }
            Some(v) => check_prop(k, ks, v, &mut fields),
        }
    }
    if !fields.is_empty() {
        return Err(PropErr::Fields(fields.into_iter().collect()));
    }
    Ok(res)
}

fn ipv4_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| {
        re(r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$")
    })
}

pub fn is_ipv4(s: &str) -> bool {
    ipv4_re().is_match(s)
}

pub fn is_ipv6(s: &str) -> bool {
    s.parse::<std::net::Ipv6Addr>().is_ok()
}

fn is_dns_name(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| {
        re(r"^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$")
    })
    .is_match(s)
}

pub fn is_configid(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| re(r"(?i)^[a-z][a-z0-9_-]+$")).is_match(s)
}

pub fn is_unicast_mac(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| re(r"(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$"))
        .is_match(s)
}

pub fn is_storage_id(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| re(r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$"))
        .is_match(s)
}

fn cidr(s: &str, v4: bool) -> bool {
    let Some((ip, mask)) = s.split_once('/') else {
        return false;
    };
    let Ok(m) = mask.parse::<u32>() else {
        return false;
    };
    if !mask.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    if v4 {
        is_ipv4(ip) && (8..=32).contains(&m)
    } else {
        is_ipv6(ip) && (8..=128).contains(&m)
    }
}

/// JSONSchema.pm's registered format checkers used by the LXC endpoints.
pub fn check_named_format(name: &str, v: &str) -> Result<(), String> {
    let ok = match name {
        "pve-vmid" => {
            return if re(r"^[1-9][0-9]{2,8}$").is_match(v) {
                Ok(())
            } else {
                Err("value does not look like a valid VM ID".into())
            };
        }
        "pve-configid" => {
            return if is_configid(v) {
                Ok(())
            } else {
                Err(format!("invalid configuration ID '{v}'"))
            };
        }
        "pve-configid-list" => {
            for id in v.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
                if !is_configid(id) {
                    return Err(format!("invalid configuration ID '{id}'"));
                }
            }
            return Ok(());
        }
        "dns-name" => {
            return if is_dns_name(v) {
                Ok(())
            } else {
                Err("value does not look like a valid DNS name".into())
            };
        }
        "dns-name-list" => {
            for d in v
                .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
                .filter(|s| !s.is_empty())
            {
                if !is_dns_name(d) {
                    return Err("value does not look like a valid DNS name".into());
                }
            }
            return Ok(());
        }
        "lxc-ip-with-ll-iface-list" => {
            for ip in v
                .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
                .filter(|s| !s.is_empty())
            {
                // link-local IPv6 may carry an interface: fe80::1%eth0
                let addr = match ip.split_once('%') {
                    Some((a, iface))
                        if a.to_ascii_lowercase().starts_with("fe80") && !iface.is_empty() =>
                    {
                        a
                    }
                    _ => ip,
                };
                if !(is_ipv4(addr) || is_ipv6(addr)) {
                    return Err("value does not look like a valid IP address".into());
                }
            }
            return Ok(());
        }
        "ip" => is_ipv4(v) || is_ipv6(v),
        "ipv4" => {
            return if is_ipv4(v) {
                Ok(())
            } else {
                Err("value does not look like a valid IPv4 address".into())
            };
        }
        "ipv6" => {
            return if is_ipv6(v) {
                Ok(())
            } else {
                Err("value does not look like a valid IPv6 address".into())
            };
        }
        "mac-addr" => {
            return if is_unicast_mac(v) {
                Ok(())
            } else {
                Err("value does not look like a valid unicast MAC address".into())
            };
        }
        "pve-ipv4-config" => {
            return if v == "dhcp" || v == "manual" || cidr(v, true) {
                Ok(())
            } else {
                Err("value does not look like a valid IPv4 network configuration".into())
            };
        }
        "pve-ipv6-config" => {
            return if v == "dhcp" || v == "manual" || v == "auto" || cidr(v, false) {
                Ok(())
            } else {
                Err("value does not look like a valid IPv6 network configuration".into())
            };
        }
        "pve-lxc-dev-string" => {
            return if v.starts_with("/dev/") && !v.contains("/./") && !v.contains("/../") {
                Ok(())
            } else {
                Err(format!("{v} is not a valid device path"))
            };
        }
        "pve-lxc-mp-string" => {
            let bad = v.contains("/./")
                || v.contains("/../")
                || v.starts_with("./")
                || v.starts_with("../")
                || v.ends_with("/.")
                || v.ends_with("/..");
            return if bad {
                Err(format!("{v} contains illegal character sequences"))
            } else {
                Ok(())
            };
        }
        "disk-size" => {
            return if re(r"^([0-9]+(\.[0-9]+)?)([KMGT])?$").is_match(v) {
                Ok(())
            } else {
                Err(format!("unable to parse size '{v}'"))
            };
        }
        "pve-volume-id" => {
            return match v.split_once(':') {
                Some((st, rest)) if is_storage_id(st) && !rest.is_empty() => Ok(()),
                _ => Err(format!("unable to parse volume ID '{v}'")),
            };
        }
        "pve-storage-id" => {
            return if is_storage_id(v) {
                Ok(())
            } else {
                Err(format!("storage ID '{v}' contains illegal characters"))
            };
        }
        "pve-poolid" => {
            return if re(r"^[A-Za-z0-9_\-]+$").is_match(v) {
                Ok(())
            } else {
                Err(format!("pool name '{v}' contains invalid characters"))
            };
        }
        "pve-node" => {
            return if re(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$").is_match(v) {
                Ok(())
            } else {
                Err("value does not look like a valid node name".into())
            };
        }
        "pve-startup-order" => {
            for part in v.split(',') {
                let ok = re(r"^(order=)?[0-9]+$").is_match(part)
                    || re(r"^(up|down)=[0-9]+$").is_match(part);
                if !ok {
                    return Err("invalid startup order".into());
                }
            }
            return Ok(());
        }
        "pve-tag-list" => {
            let tags: Vec<&str> = v.split([';', ',', ' ']).filter(|s| !s.is_empty()).collect();
            if tags.is_empty() {
                return Err("no tags given".into());
            }
            for t in tags {
                if !re(r"(?i)^[a-z0-9_][a-z0-9_\-+.]*$").is_match(t) {
                    return Err(format!("invalid characters in tag '{t}'"));
                }
            }
            return Ok(());
        }
        "pve-ct-timezone" => {
            return if v == "host"
                || re(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$").is_match(v)
            {
                Ok(())
            } else {
                Err(format!("invalid time zone '{v}'"))
            };
        }
        // Unknown named formats are not checked (none used by the LXC endpoints remain).
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err("value does not look like a valid IP address".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ep: &str, name: &str, v: &str) -> Errors {
        let props = endpoint(ep);
        let mut e = Errors::new();
        check_prop(name, lookup(props, name).unwrap(), v, &mut e);
        e
    }
    const CREATE: &str = "POST /nodes/{node}/lxc";

    #[test]
    fn net_requires_name() {
        let e = check(CREATE, "net0", "bridge=vmbr0");
        assert_eq!(e["net0"], "invalid format - format error\n");
        assert_eq!(e["net0.name"], "property is missing and it is not optional");
    }
    #[test]
    fn scalar_messages() {
        assert_eq!(
            check(CREATE, "memory", "abc")["memory"],
            "type check ('integer') failed - got 'abc'"
        );
        assert_eq!(
            check(CREATE, "memory", "8")["memory"],
            "value must have a minimum value of 16"
        );
        assert_eq!(
            check(CREATE, "tty", "7")["tty"],
            "value must have a maximum value of 6"
        );
        assert!(
            check(CREATE, "arch", "x")["arch"]
                .starts_with("value 'x' does not have a value in the enumeration 'amd64, i386")
        );
        assert_eq!(
            check(CREATE, "vmid", "99")["vmid"],
            "invalid format - value does not look like a valid VM ID\n"
        );
        assert_eq!(
            check(CREATE, "hostname", "a_b")["hostname"],
            "invalid format - value does not look like a valid DNS name\n"
        );
        assert!(
            check(CREATE, "net0", "name=eth0,hwaddr=01:00:00:00:00:00").contains_key("net0.hwaddr")
        );
        assert!(check(CREATE, "net31", "name=eth0,ip=dhcp").is_empty());
        assert!(lookup(endpoint(CREATE), "net32").is_none());
        assert_eq!(
            check(CREATE, "net0", "name=eth0,ip=")["net0"],
            "invalid format - missing key in comma-separated list property\n"
        );
        assert!(check(CREATE, "features", "nesting=1,keyctl=1").is_empty());
        assert!(check(CREATE, "dev0", "/dev/nvidia0,gid=44,mode=0666").is_empty());
        assert!(check(CREATE, "rootfs", "lxc-disks:32").is_empty());
    }

    #[test]
    fn every_schema_pattern_compiles() {
        fn walk(v: &Value, n: &mut usize) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(p)) = m.get("pattern") {
                        let p = perl_to_rust(p);
                        Regex::new(&format!("^(?:{p})$")).unwrap_or_else(|e| panic!("{p}: {e}"));
                        *n += 1;
                    }
                    m.values().for_each(|x| walk(x, n));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, n)),
                _ => {}
            }
        }
        let mut n = 0;
        walk(schema(), &mut n);
        assert!(n > 5);
        assert_eq!(perl_to_rust(r"[-_.\w\d]+"), "[-_.0-9A-Za-z_0-9]+");
        assert_eq!(perl_to_rust(r"(?^:\d+(?:;\d+)*)"), "(?:[0-9]+(?:;[0-9]+)*)");
        assert!(!perl_pattern(r"[-_.\w\d]+").is_match("eth\u{e9}"));
    }
}
