//! Host-side `curl` stand-in of pve-sim: offline. It serves only the NVIDIA driver runfile URL
//! pattern (`.../NVIDIA-Linux-x86_64-<version>.run`) with the installer double for that version
//! and fails every other URL like an offline curl (`curl: (6) Could not resolve host`, exit 6).
//! Each call appends a line to `$PHOENIX_HOST_ROOT/var/log/pve-sim/journal.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};

use pve_sim::guest::runfile;
use pve_sim::host::now_ms;

/// One journal line, appended with a single write (O_APPEND keeps concurrent lines whole).
fn journal(host_root: &Path, argv: &[String], exit: i32, start_ms: u64) {
    let dir = host_root.join("var/log/pve-sim");
    let line = serde_json::json!({
        "argv": argv,
        "exit": exit,
        "mutating": false,
        "start_ms": start_ms,
        "end_ms": now_ms(),
    });
    let result = std::fs::create_dir_all(&dir).and_then(|()| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("journal.jsonl"))?;
        f.write_all(format!("{line}\n").as_bytes())
    });
    if let Err(e) = result {
        eprintln!(
            "pve-sim curl: cannot write the journal in {}: {e}",
            dir.display()
        );
    }
}

#[derive(Debug, Default, PartialEq)]
struct Opts {
    fail: bool,
    silent: bool,
    show_error: bool,
    output: Option<PathBuf>,
    remote_name: bool,
    url: Option<String>,
}

/// Parse the download flags products use. Err = (exit code, message).
fn parse(args: &[String]) -> Result<Opts, (i32, String)> {
    let mut o = Opts::default();
    let mut it = args.iter();
    let need = |it: &mut std::slice::Iter<String>, flag: &str| -> Result<String, (i32, String)> {
        it.next()
            .cloned()
            .ok_or_else(|| (2, format!("curl: option {flag}: requires parameter")))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--fail" => o.fail = true,
            "--silent" => o.silent = true,
            "--show-error" => o.show_error = true,
            "--location" | "--insecure" | "--compressed" | "--no-progress-meter" => {}
            "--output" => o.output = Some(need(&mut it, a)?.into()),
            "--remote-name" => o.remote_name = true,
            "--retry" | "--connect-timeout" | "--max-time" | "--retry-delay"
            | "--retry-max-time" => {
                let v = need(&mut it, a)?;
                if v.parse::<f64>().is_err() {
                    return Err((
                        2,
                        format!("curl: option {a}: expected a proper numerical parameter"),
                    ));
                }
            }
            s if s.starts_with("--") => {
                if let Some(v) = s.strip_prefix("--output=") {
                    o.output = Some(v.into());
                } else {
                    return Err((
                        2,
                        format!(
                            "curl: option {s}: is unknown\ncurl: try 'curl --help' or 'curl --manual' for more information"
                        ),
                    ));
                }
            }
            s if s.starts_with('-') && s.len() > 1 => {
                let flags: Vec<char> = s[1..].chars().collect();
                let mut i = 0;
                while i < flags.len() {
                    match flags[i] {
                        'f' => o.fail = true,
                        's' => o.silent = true,
                        'S' => o.show_error = true,
                        'L' | 'k' => {}
                        'O' => o.remote_name = true,
                        'o' | 'm' => {
                            let rest: String = flags[i + 1..].iter().collect();
                            let v = if rest.is_empty() {
                                need(&mut it, &format!("-{}", flags[i]))?
                            } else {
                                rest
                            };
                            if flags[i] == 'o' {
                                o.output = Some(v.into());
                            }
                            break;
                        }
                        c => {
                            return Err((
                                2,
                                format!(
                                    "curl: option -{c}: is unknown\ncurl: try 'curl --help' or 'curl --manual' for more information"
                                ),
                            ));
                        }
                    }
                    i += 1;
                }
            }
            url => o.url = Some(url.to_string()),
        }
    }
    Ok(o)
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or_default();
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    hostport.split(':').next().unwrap_or_default()
}

/// Run one invocation; returns the exit code.
fn run(args: &[String]) -> i32 {
    let o = match parse(args) {
        Ok(o) => o,
        Err((code, msg)) => {
            eprintln!("{msg}");
            return code;
        }
    };
    let report = |code: i32, msg: String| {
        if !o.silent || o.show_error {
            eprintln!("curl: ({code}) {msg}");
        }
        code
    };
    let Some(url) = o.url.as_deref() else {
        eprintln!(
            "curl: no URL specified\ncurl: try 'curl --help' or 'curl --manual' for more information"
        );
        return 2;
    };
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let Some(version) = runfile::version_from_url(url).filter(|_| scheme_ok) else {
        return report(6, format!("Could not resolve host: {}", host_of(url)));
    };
    let body = runfile::script(version);
    let out = match (&o.output, o.remote_name) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(PathBuf::from(format!("NVIDIA-Linux-x86_64-{version}.run"))),
        (None, false) => None,
    };
    match out {
        None => {
            let _ = std::io::stdout().write_all(body.as_bytes());
            0
        }
        Some(path) => match write_atomic(&path, body.as_bytes()) {
            Ok(()) => 0,
            Err(e) => report(
                23,
                format!(
                    "Failure writing output to destination {}: {e}",
                    path.display()
                ),
            ),
        },
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.curl-{}", std::process::id()));
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

fn main() {
    let start = now_ms();
    let argv: Vec<String> = std::env::args().collect();
    let host_root = match std::env::var_os("PHOENIX_HOST_ROOT") {
        Some(r) if !r.is_empty() && Path::new(&r) != Path::new("/") => PathBuf::from(r),
        _ => {
            eprintln!(
                "pve-sim curl: PHOENIX_HOST_ROOT must name the simulated host's root directory (unset or '/' refused)"
            );
            std::process::exit(2);
        }
    };
    let mut jargv = vec!["curl".to_string()];
    jargv.extend(argv.iter().skip(1).cloned());
    let code = run(&argv[1..]);
    journal(&host_root, &jargv, code, start);
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_combined_flags() {
        let o = parse(&s(&[
            "-fsSL",
            "--retry",
            "3",
            "-o",
            "/x/y.run",
            "https://h/p",
        ]))
        .unwrap();
        assert!(o.fail && o.silent && o.show_error);
        assert_eq!(o.output, Some(PathBuf::from("/x/y.run")));
        assert_eq!(o.url.as_deref(), Some("https://h/p"));
        let o = parse(&s(&["-o/x/z", "--output=/a", "u"])).unwrap();
        assert_eq!(o.output, Some(PathBuf::from("/a")));
        assert_eq!(parse(&s(&["--retry", "x", "u"])).unwrap_err().0, 2);
        assert_eq!(parse(&s(&["--bogus", "u"])).unwrap_err().0, 2);
        assert_eq!(parse(&s(&["-o"])).unwrap_err().0, 2);
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host_of("https://download.docker.com/linux/ubuntu/gpg"),
            "download.docker.com"
        );
        assert_eq!(host_of("http://u@h:8080/x"), "h");
    }

    #[test]
    fn offline_urls_fail_with_6() {
        assert_eq!(run(&s(&["-fsS", "https://example.com/x"])), 6);
        assert_eq!(
            run(&s(&["-fsS", "ftp://h/NVIDIA-Linux-x86_64-570.1.run"])),
            6
        );
    }
}
