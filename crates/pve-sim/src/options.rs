//! Command-line parsing the way PVE's CLIHandler drives Getopt::Long: `--opt v`, `-opt v`,
//! `--opt=v`, bare booleans (= 1), boolean words in any case, `--` ending options,
//! options and positionals mixed, repeated `-list` options joined with `,`.

use std::collections::BTreeMap;

use crate::error::{PveError, PveResult};

/// How an option takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptKind {
    /// Getopt `name:s`: optional value; bare flag means 1.
    Boolean,
    /// Getopt `name=s`: mandatory value.
    Value,
    /// Getopt `name=s@`: may repeat, joined with `,`.
    List,
}

#[derive(Debug, Default, Clone)]
pub struct Parsed {
    pub positional: Vec<String>,
    pub opts: BTreeMap<String, String>,
    /// Whether a `--` was seen (everything after it is positional).
    pub saw_dashdash: bool,
}

/// PVE's `parse_boolean`: 1|on|yes|true / 0|off|no|false, any case.
pub fn parse_boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// Parse `args` (after the subcommand). `kind_of` names the option kind for a known
/// option name (exact canonical name returned), `None` for unknown ones.
pub fn parse(
    args: &[String],
    kind_of: &dyn Fn(&str) -> Option<(String, OptKind)>,
) -> PveResult<Parsed> {
    let mut out = Parsed::default();
    let mut unknown: Vec<String> = Vec::new();
    let mut bool_raw: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            out.saw_dashdash = true;
            out.positional.extend(args[i..].iter().cloned());
            break;
        }
        let body = if let Some(b) = a.strip_prefix("--") {
            b
        } else if let Some(b) = a.strip_prefix('-') {
            b
        } else {
            out.positional.push(a.clone());
            continue;
        };
        if body.is_empty() {
            // A lone `-` is an ordinary argument to Getopt::Long.
            out.positional.push(a.clone());
            continue;
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some((canon, kind)) = kind_of(name) else {
            unknown.push(format!("Unknown option: {}", name.to_ascii_lowercase()));
            continue;
        };
        let value = match (kind, inline) {
            (_, Some(v)) => v,
            (OptKind::Boolean, None) => {
                // Getopt's optional value: the next word is taken unless it looks like an
                // option (so `--skiplock 100` fails as in Proxmox).
                match args.get(i) {
                    Some(n) if !n.starts_with('-') => {
                        i += 1;
                        n.clone()
                    }
                    _ => String::new(),
                }
            }
            (_, None) => match args.get(i) {
                Some(n) if n != "--" => {
                    i += 1;
                    n.clone()
                }
                _ => {
                    unknown.push(format!("Option {canon} requires an argument"));
                    continue;
                }
            },
        };
        match kind {
            OptKind::Boolean => {
                bool_raw.push((canon.clone(), value.clone()));
                out.opts.insert(canon, value);
            }
            OptKind::List => {
                out.opts
                    .entry(canon)
                    .and_modify(|e| {
                        e.push(',');
                        e.push_str(&value)
                    })
                    .or_insert(value);
            }
            OptKind::Value => {
                out.opts.insert(canon, value);
            }
        }
    }
    if !unknown.is_empty() {
        return Err(PveError::Usage {
            pre: unknown,
            msg: "unable to parse option".into(),
        });
    }
    for (name, raw) in bool_raw {
        let v = if raw.is_empty() {
            true
        } else {
            match parse_boolean(&raw) {
                Some(b) => b,
                None => return Err(PveError::usage("unable to parse boolean option")),
            }
        };
        out.opts.insert(name, if v { "1" } else { "0" }.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(n: &str) -> Option<(String, OptKind)> {
        match n {
            "start" | "full" => Some((n.into(), OptKind::Boolean)),
            "delete" => Some((n.into(), OptKind::List)),
            "memory" | "hostname" => Some((n.into(), OptKind::Value)),
            _ => None,
        }
    }
    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn forms() {
        let p = parse(
            &s(&[
                "100",
                "-memory",
                "1024",
                "--hostname=a",
                "--start",
                "--full",
                "YES",
            ]),
            &kinds,
        )
        .unwrap();
        assert_eq!(p.positional, s(&["100"]));
        assert_eq!(p.opts["memory"], "1024");
        assert_eq!(p.opts["hostname"], "a");
        assert_eq!(p.opts["start"], "1");
        assert_eq!(p.opts["full"], "1");
    }

    #[test]
    fn unknown_and_bad_bool() {
        let e = parse(&s(&["--hwaddress", "x"]), &kinds).unwrap_err();
        assert!(
            matches!(e, PveError::Usage { ref pre, .. } if pre[0] == "Unknown option: hwaddress")
        );
        let e = parse(&s(&["--start", "maybe"]), &kinds).unwrap_err();
        assert!(
            matches!(e, PveError::Usage { ref msg, .. } if msg == "unable to parse boolean option")
        );
    }

    #[test]
    fn dashdash_and_lists() {
        let p = parse(&s(&["--delete", "a", "--delete=b", "--", "-la"]), &kinds).unwrap();
        assert_eq!(p.opts["delete"], "a,b");
        assert_eq!(p.positional, s(&["-la"]));
    }
}
