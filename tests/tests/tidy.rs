//! Tidy: the invariants of `ARCHITECTURE.md`, checked on the source tree (in the manner of
//! rust-analyzer's `xtask/src/tidy.rs`). Each check reads files, not behaviour; a failure
//! names the file and line and says which invariant it breaks.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The product: the library and every crate that is installed on a host (not pve-sim, not the
/// test harness, not xtask).
const PRODUCT_CRATES: &[&str] = &[
    "lib-common",
    "crates/establish",
    "crates/initial-setup",
    "crates/create-lxc",
    "crates/clone-lxc",
    "crates/lxc-nvidia",
    "crates/lxc-docker",
    "crates/setup-plugins",
];

/// Every file under `dir` whose name ends in one of `exts`, skipping build output and VCS data.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "node_modules") {
                    stack.push(p);
                }
            } else if exts.iter().any(|x| name.ends_with(x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The product's Rust sources under `src/` (not tests, benches or examples; `tests.rs` files
/// are `#[cfg(test)]` modules).
fn product_sources() -> Vec<PathBuf> {
    PRODUCT_CRATES
        .iter()
        .flat_map(|c| files(&root().join(c).join("src"), &[".rs"]))
        .filter(|p| !p.ends_with("tests.rs"))
        .collect()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// The lines of a Rust file that are code outside `#[cfg(test)]` modules, without `//`
/// comments, numbered from 1. (A `#[cfg(test)]` module runs to the end of the file by this
/// project's convention: tests come last.)
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push((i + 1, line.to_string()));
    }
    out
}

/// `path:line: text` for every code line of the product (outside `allowed`) that contains
/// one of `needles`.
fn offenders(needles: &[&str], allowed: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for f in product_sources() {
        let r = rel(&f);
        if allowed.contains(&r.as_str()) {
            continue;
        }
        for (n, line) in code_lines(&f) {
            if needles.iter().any(|x| line.contains(x)) {
                out.push(format!("{r}:{n}: {}", line.trim()));
            }
        }
    }
    out
}

#[test]
fn product_crates_never_depend_on_pve_sim() {
    // Dev-dependencies may reach the test harness; what ships must not.
    for c in PRODUCT_CRATES {
        let manifest = std::fs::read_to_string(root().join(c).join("Cargo.toml")).unwrap();
        let mut section = String::new();
        for (n, line) in manifest.lines().enumerate() {
            let t = line.trim();
            if t.starts_with('[') {
                section = t.to_string();
                continue;
            }
            let shipped = section == "[dependencies]" || section == "[build-dependencies]";
            let name = t.split(['=', '.', ' ']).next().unwrap_or("");
            assert!(
                !(shipped && (name == "pve-sim" || name == "phoenix-e2e")),
                "{c}/Cargo.toml:{}: a product crate depends on `{name}` (pve-sim is test-only)",
                n + 1
            );
        }
    }
}

#[test]
fn only_the_pct_client_spawns_or_names_proxmox_tools() {
    let bad = offenders(
        &["\"pct\"", "\"pvesm\"", "\"pveversion\""],
        &["lib-common/src/pct.rs"],
    );
    assert!(
        bad.is_empty(),
        "only lib-common/src/pct.rs builds pct argv and runs Proxmox's tools:\n{}",
        bad.join("\n")
    );
    // Processes are started in three places, each for its own kind of program.
    let spawners = offenders(
        &["Command::new("],
        &[
            "lib-common/src/pct.rs",                 // pct, pvesm, pveversion
            "lib-common/src/orchestrator/runner.rs", // the step programs
            "lib-common/src/steps/nvidia.rs",        // curl, the host-side download
        ],
    );
    assert!(
        spawners.is_empty(),
        "a new place that starts processes (Proxmox tools go through lib-common/src/pct.rs):\n{}",
        spawners.join("\n")
    );
}

#[test]
fn only_the_conf_module_writes_under_etc_pve() {
    // Files whose code names a path under /etc/pve: the conf module writes, the others only
    // read or name it in a message.
    let readers = [
        "lib-common/src/conffile.rs",            // the writer
        "lib-common/src/host.rs",                // reads storage.cfg, checks /etc/pve exists
        "lib-common/src/steps/initial_setup.rs", // names /etc/pve in messages
        "lib-common/src/steps/nvidia.rs",        // names the conf in a hint
    ];
    let bad = offenders(&["/etc/pve"], &readers);
    assert!(
        bad.is_empty(),
        "only lib-common/src/conffile.rs writes under /etc/pve (a new file names it):\n{}",
        bad.join("\n")
    );
    let writes = [
        "fs::write(",
        "File::create(",
        "OpenOptions::new(",
        "fs::rename(",
        "create_dir_all(",
    ];
    for r in &readers[1..] {
        for (n, line) in code_lines(&root().join(r)) {
            assert!(
                !(line.contains("/etc/pve") && writes.iter().any(|w| line.contains(w))),
                "{r}:{n}: writes under /etc/pve; go through lib-common/src/conffile.rs"
            );
        }
    }
}

#[test]
fn phoenix_host_root_is_read_in_one_place() {
    // The name is spelled in lib-common/src/env.rs and read in lib-common/src/paths.rs.
    let bad = offenders(
        &["PHOENIX_HOST_ROOT", "env::HOST_ROOT"],
        &["lib-common/src/env.rs", "lib-common/src/paths.rs"],
    );
    assert!(
        bad.is_empty(),
        "PHOENIX_HOST_ROOT is read only by lib-common/src/paths.rs (use paths::host_path):\n{}",
        bad.join("\n")
    );
}

#[test]
fn environment_variable_names_are_spelled_in_env_rs() {
    // Every name the programs read or pass on is a constant of lib-common/src/env.rs.
    let names = [
        "\"PHOENIX_",
        "\"HYPERVISOR_CONFIG_FILE\"",
        "\"LXC_CONFIG_FILE\"",
        "\"GPU_ASSIGNMENT\"",
        "\"NVIDIA_DRIVER_VERSION\"",
        "\"NVIDIA_REPO_URL\"",
        "\"NVIDIA_RUNFILE_URL\"",
        "\"PORTAINER_ROLE\"",
        "\"PORTAINER_SERVER_IP\"",
        "\"PORTAINER_AGENT_PORT\"",
    ];
    let bad = offenders(&names, &["lib-common/src/env.rs"]);
    assert!(
        bad.is_empty(),
        "environment variable names belong in lib-common/src/env.rs (use its constants):\n{}",
        bad.join("\n")
    );
}

#[test]
fn one_atomic_file_replacement() {
    // Files are replaced through lib-common/src/fsutil.rs; the other renames move what is not
    // written by us into place.
    let bad = offenders(
        &["fs::rename("],
        &[
            "lib-common/src/fsutil.rs",
            "lib-common/src/install.rs", // swaps a symlink into place
            "lib-common/src/steps/nvidia.rs", // moves curl's finished download into the cache
        ],
    );
    assert!(
        bad.is_empty(),
        "replace files with lib_common::fsutil::replace_file:\n{}",
        bad.join("\n")
    );
}

/// The argument text of each call of `name(` in `text`: (line, top-level arguments).
fn calls(text: &str, name: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let pat = format!(".{name}(");
    let mut from = 0;
    while let Some(i) = text[from..].find(&pat) {
        let start = from + i + pat.len();
        let line = text[..start].lines().count();
        let (mut depth, mut args, mut cur) = (1usize, Vec::new(), String::new());
        let mut in_str = false;
        let mut chars = text[start..].chars().peekable();
        while let Some(c) = chars.next() {
            if in_str {
                cur.push(c);
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == '"' {
                    in_str = false;
                }
                continue;
            }
            match c {
                '"' => {
                    in_str = true;
                    cur.push(c);
                }
                '(' | '[' | '{' => {
                    depth += 1;
                    cur.push(c);
                }
                ')' | ']' | '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                    cur.push(c);
                }
                ',' if depth == 1 => args.push(std::mem::take(&mut cur).trim().to_string()),
                _ => cur.push(c),
            }
        }
        if !cur.trim().is_empty() {
            args.push(cur.trim().to_string());
        }
        out.push((line, args));
        from = start;
    }
    out
}

#[test]
fn guest_values_are_arguments_never_shell_code() {
    // Scripts run inside a guest are fixed text (a literal or a constant); configuration values
    // reach them as positional parameters ($1, $2, ...), never by formatting them in.
    let script_arg = [
        ("run_script", 1),
        ("run_script_unchecked", 1),
        ("query_script", 0),
        ("exec_script", 1),
        ("exec_script_query", 1),
    ];
    let fixed = |a: &str| {
        let a = a.trim_start_matches('&');
        a.starts_with('"')
            || a.starts_with("r#\"")
            || a.starts_with("r\"")
            || a == "script"
            || (!a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == ':'))
    };
    let mut bad = Vec::new();
    let mut seen = 0;
    for f in product_sources() {
        let text: String = code_lines(&f).into_iter().map(|(_, l)| l + "\n").collect();
        for (name, idx) in script_arg {
            for (line, args) in calls(&text, name) {
                seen += 1;
                match args.get(idx) {
                    Some(a) if fixed(a) => {}
                    other => bad.push(format!("{} (code line {line}): {name}({other:?})", rel(&f))),
                }
            }
        }
        let shell = text.contains("\"bash\", \"-c\"") || text.contains("\"sh\", \"-c\"");
        if shell && !f.ends_with("lib-common/src/pct.rs") {
            bad.push(format!(
                "{}: builds a shell command line itself (use Guest::run_script with arguments)",
                rel(&f)
            ));
        }
    }
    assert!(
        seen >= 5,
        "found only {seen} script calls: the check lost its target"
    );
    assert!(
        bad.is_empty(),
        "guest scripts must be fixed text with values as arguments:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_reference_to_a_document_outside_the_repository() {
    // docs/simulator.md is written on another branch; it counts as present.
    let present = |name: &str| {
        name == "simulator.md"
            || root().join(name).is_file()
            || root().join("docs").join(name).is_file()
    };
    // Other projects' files that docs/style.md points to as examples.
    let external = ["STYLE.md"];
    let mut bad = Vec::new();
    let mut refs = 0;
    for f in files(root(), &[".rs", ".md", ".toml", ".json"]) {
        let r = rel(&f);
        if r.starts_with("tests/fixtures/") {
            continue; // upstream's files, kept unchanged
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices(".md") {
                let after = line[i + 3..].chars().next();
                if after.is_some_and(|c| c.is_ascii_alphanumeric()) {
                    continue;
                }
                let start = line[..i]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || "-_./".contains(c)))
                    .map_or(0, |s| s + 1);
                let path = &line[start..i + 3];
                let name = path.rsplit('/').next().unwrap_or(path);
                if name == ".md" || external.contains(&name) {
                    continue;
                }
                refs += 1;
                let outside = path.starts_with("../") || path.contains("shared/");
                let resolves = if path.contains('/') && !path.starts_with("docs/") {
                    root().join(path).is_file() || name == "simulator.md"
                } else {
                    present(path.trim_start_matches("docs/"))
                };
                if outside || !(resolves || present(name)) {
                    bad.push(format!("{r}:{}: `{path}`", n + 1));
                }
            }
        }
    }
    assert!(
        refs >= 10,
        "found only {refs} document references: the check lost its target"
    );
    assert!(
        bad.is_empty(),
        "references to documents that are not in the repository (bring them into docs/):\n{}",
        bad.join("\n")
    );
}

#[test]
fn installed_program_names_come_from_one_table() {
    // The names are spelled once, in lib-common/src/paths.rs (`PROGRAMS` and its constants);
    // messages may mention them in prose.
    let names = [
        "\"phoenix_establish_hypervisor\"",
        "\"phoenix_hypervisor_initial_setup\"",
        "\"phoenix_hypervisor_create_lxc\"",
        "\"phoenix_hypervisor_clone_lxc\"",
        "\"phoenix_hypervisor_lxc_nvidia\"",
        "\"phoenix_hypervisor_lxc_docker\"",
        "\"configured-state\"",
    ];
    let bad = offenders(
        &names,
        &["lib-common/src/paths.rs", "lib-common/src/types.rs"],
    );
    assert!(
        bad.is_empty(),
        "use lib_common::paths's constants (and types::CONFIGURED_STATE_SNAPSHOT):\n{}",
        bad.join("\n")
    );
}
