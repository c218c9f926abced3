//! The one module that reads and writes a container's `/etc/pve/lxc/<id>.conf` (at
//! `PHOENIX_HOST_ROOT` + that path). It knows the file's sections: the main section (the
//! container's current config) is everything before the first `[...]` header; snapshot sections
//! and `[pve:pending]` follow. Edits touch only the main section, so a line is never appended
//! into the last snapshot (the bug the shell tool had, gpu-docker.md). Writes are atomic (temp
//! file in the same directory, fsync, rename) and happen only when the content changed.
//!
//! `pct set` cannot write `lxc.*` keys; this module is how they are edited. Everything else
//! goes through `pct` ([`crate::pct`]).
//!
//! Every edit holds the lock `pct` itself takes for a config change ([`lock_conf`]), so it
//! cannot race the GUI, a backup or a concurrent `pct set`: load, change and save happen
//! between [`ConfFile::load_locked`] and dropping its [`ConfLock`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Ctid;
use crate::error::{Error, Result};

/// How long an edit waits for a CT's config lock: Proxmox's own default
/// (pve-common `PVE::Tools::lock_file_full`: `$timeout = 10 if !$timeout`;
/// pve-guest-common `PVE::AbstractConfig::lock_config` passes 10).
pub const CONF_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Host-absolute path of a CT's config lock (pve-container `PVE::LXC::Config::config_file_lock`:
/// `/run/lock/lxc/pve-config-<vmid>.lock`).
pub fn lock_path_abs(ctid: Ctid) -> String {
    format!("/run/lock/lxc/pve-config-{ctid}.lock")
}

/// An exclusive `flock` on a CT's config lock file; released when dropped.
#[derive(Debug)]
pub struct ConfLock {
    _file: std::fs::File,
}

/// Take CT `ctid`'s config lock as `pct` does (pve-common `PVE::Tools::lock_file_full`: open
/// the file for appending, creating it, then an exclusive `flock`), waiting up to `timeout`.
/// While it waits it says so once (on stderr and in the log, like Proxmox's "trying to acquire
/// lock..."). Still held after `timeout`: a Timeout error (exit 6) naming the CT and the file.
pub fn lock_conf(ctid: Ctid, timeout: Duration) -> Result<ConfLock> {
    let abs = lock_path_abs(ctid);
    let path = crate::paths::host_path(&abs);
    let other = |what: &str, e: std::io::Error| -> anyhow::Error {
        Error::new(
            crate::error::ErrorKind::Other,
            format!("cannot {what} `{}`: {e}", path.display()),
        )
        .into()
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| other("create the directory of", e))?;
    }
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|e| other("open", e))?;
    let start = Instant::now();
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => {
                if said {
                    log::info!("[{ctid}] got the config lock `{abs}`");
                }
                return Ok(ConfLock { _file: file });
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(other("lock", e)),
        }
        if !said {
            said = true;
            eprintln!("[{ctid}] waiting for the config lock `{abs}` (held by another task)");
            log::info!("[{ctid}] waiting for the config lock `{abs}` (held by another task)");
        }
        if start.elapsed() >= timeout {
            return Err(Error::timeout(format!(
                "CT {ctid}: cannot acquire the config lock `{abs}` within {} s: another task (pct, the GUI, a backup) holds it\nhint: wait for that task to finish and run this again",
                crate::step::fmt_secs(timeout)
            ))
            .into());
        }
        let left = timeout.saturating_sub(start.elapsed());
        std::thread::sleep(
            crate::step::poll_interval(start.elapsed()).min(left.max(Duration::from_millis(1))),
        );
    }
}

/// A parsed conf file: its lines as read, and the edits made since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfFile {
    path: PathBuf,
    lines: Vec<String>,
    original: String,
}

/// `lxc.mount.entry: v`, `lxc.mount.entry = v`, `lxc.mount.entry=v` → `(key, value)` (Proxmox's
/// own parse rule); `None` for other lines.
pub fn parse_lxc_line(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if !line.starts_with("lxc.") {
        return None;
    }
    let key_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        .unwrap_or(line.len());
    let (key, rest) = line.split_at(key_end);
    let rest = rest.trim_start();
    let value = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?;
    Some((key.to_string(), value.trim().to_string()))
}

/// `key: value` (a Proxmox setting, not `lxc.*`, not a description `#` line) → `(key, value)`.
pub fn parse_setting_line(line: &str) -> Option<(String, String)> {
    let line = line.trim_end();
    if line.starts_with('#') || line.starts_with("lxc.") {
        return None;
    }
    let (k, v) = line.split_once(':')?;
    let ok = !k.is_empty()
        && k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    ok.then(|| (k.to_string(), v.trim().to_string()))
}

/// A `[section]` header line → its name.
pub fn section_name(line: &str) -> Option<&str> {
    line.trim_end()
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
}

/// `lxc.key: value`, the form Proxmox writes.
pub fn lxc_line(key: &str, value: &str) -> String {
    format!("{key}: {value}")
}

/// The section of changes waiting for the next start.
const PENDING: &str = "pve:pending";

impl ConfFile {
    /// Host path of a CT's conf file: `HOST_ROOT/etc/pve/lxc/<id>.conf`.
    pub fn path_for(ctid: Ctid) -> PathBuf {
        crate::paths::host_path(format!("/etc/pve/lxc/{ctid}.conf"))
    }

    /// Read the conf of a CT; a missing file is a precondition error naming the CT and path.
    pub fn load(ctid: Ctid) -> Result<ConfFile> {
        let path = Self::path_for(ctid);
        if !path.exists() {
            return Err(Error::precondition(format!(
                "CT {ctid} does not exist: `{}` is missing",
                path.display()
            ))
            .into());
        }
        Self::read(&path)
    }

    /// Every CT conf on this host (`/etc/pve/lxc/<id>.conf`), by CTID; unreadable files and
    /// other names are skipped.
    pub fn load_all() -> std::collections::BTreeMap<Ctid, ConfFile> {
        let dir = crate::paths::host_path("/etc/pve/lxc");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Default::default();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let ctid: Ctid = name.strip_suffix(".conf")?.parse().ok()?;
                let conf = ConfFile::read(&e.path()).ok()?;
                Some((ctid, conf))
            })
            .collect()
    }

    /// Take the CT's config lock ([`lock_conf`], [`CONF_LOCK_TIMEOUT`]), then read its conf.
    /// Save before dropping the lock. In dry-run mode nothing is locked (nothing is written).
    pub fn load_locked(ctid: Ctid, dry_run: bool) -> Result<(Option<ConfLock>, ConfFile)> {
        let lock = if dry_run {
            None
        } else {
            Some(lock_conf(ctid, CONF_LOCK_TIMEOUT)?)
        };
        Ok((lock, Self::load(ctid)?))
    }

    /// Read the conf file at `path` (host-rooted).
    pub fn read(path: &Path) -> Result<ConfFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::proxmox(format!("cannot read `{}`: {e}", path.display())))?;
        Ok(Self::parse(path, &text))
    }

    /// The conf file `text`, as read from `path`.
    pub fn parse(path: &Path, text: &str) -> ConfFile {
        ConfFile {
            path: path.to_path_buf(),
            lines: text.lines().map(str::to_string).collect(),
            original: text.to_string(),
        }
    }

    /// Where it is read from and saved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Index of the first section header (= number of main-section lines).
    fn main_end(&self) -> usize {
        self.lines
            .iter()
            .position(|l| section_name(l).is_some())
            .unwrap_or(self.lines.len())
    }

    /// The lines of the main section (before the first `[...]` header).
    pub fn main_lines(&self) -> &[String] {
        &self.lines[..self.main_end()]
    }

    /// Names of the sections after the main one (`pve:pending` and snapshots), in file order.
    pub fn sections(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| section_name(l).map(str::to_string))
            .collect()
    }

    /// Snapshot section names (sections other than `pve:pending`).
    pub fn snapshot_names(&self) -> Vec<String> {
        self.sections()
            .into_iter()
            .filter(|s| s != "pve:pending")
            .collect()
    }

    /// Complete snapshots: those without a `snapstate` (`prepare` while it is taken, `delete`
    /// while it is removed: pve-guest-common `PVE::AbstractConfig::snapshot_prepare` and
    /// `snapshot_delete`). `pct listsnapshot` lists the incomplete ones too; this is what a
    /// caller that needs a usable snapshot wants, without a `pct` call.
    pub fn complete_snapshots(&self) -> Vec<String> {
        self.snapshot_names()
            .into_iter()
            .filter(|s| self.section_get(s, "snapstate").is_none())
            .collect()
    }

    /// Whether a complete snapshot with exactly this name exists ([`Self::complete_snapshots`]).
    pub fn has_complete_snapshot(&self, name: &str) -> bool {
        self.complete_snapshots().iter().any(|s| s == name)
    }

    /// What `pct config CTID` prints, read from the file instead of a `pct` call: the main
    /// section with, unless `current`, the `[pve:pending]` values merged in and its pending
    /// deletions removed (pve-container `PVE::API2::LXC::Config` `vm_config`, which merges the
    /// pending section unless `current` is set; `delete` is `PVE::LXC::Config->parse_pending_delete`,
    /// a comma list whose keys may carry a `!` force mark).
    pub fn to_config(&self, current: bool) -> crate::pct::PctConfig {
        let mut cfg = crate::pct::PctConfig {
            settings: self.settings().into_iter().collect(),
            lxc: self.lxc_entries(),
        };
        if !current && self.sections().iter().any(|s| s == PENDING) {
            for (k, v) in self.section_settings(PENDING) {
                if k == "delete" {
                    for key in v.split(',') {
                        cfg.settings.remove(key.trim().trim_start_matches('!'));
                    }
                } else {
                    cfg.settings.insert(k, v);
                }
            }
        }
        cfg
    }

    /// All settings of the section `[name]`, in file order.
    fn section_settings(&self, name: &str) -> Vec<(String, String)> {
        let Some(start) = self
            .lines
            .iter()
            .position(|l| section_name(l) == Some(name))
        else {
            return Vec::new();
        };
        self.lines[start + 1..]
            .iter()
            .take_while(|l| section_name(l).is_none())
            .filter_map(|l| parse_setting_line(l))
            .collect()
    }

    /// A setting of the section `[name]` (e.g. a snapshot's `snapstate`).
    pub fn section_get(&self, name: &str, key: &str) -> Option<String> {
        let start = self
            .lines
            .iter()
            .position(|l| section_name(l) == Some(name))?;
        self.lines[start + 1..]
            .iter()
            .take_while(|l| section_name(l).is_none())
            .filter_map(|l| parse_setting_line(l))
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// A setting of the main section (`memory`, `net0`, `dev0`, ...).
    pub fn get(&self, key: &str) -> Option<String> {
        self.main_lines()
            .iter()
            .filter_map(|l| parse_setting_line(l))
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// All settings of the main section, in file order.
    pub fn settings(&self) -> Vec<(String, String)> {
        self.main_lines()
            .iter()
            .filter_map(|l| parse_setting_line(l))
            .collect()
    }

    /// The `lxc.*` entries of the main section, in file order.
    pub fn lxc_entries(&self) -> Vec<(String, String)> {
        self.main_lines()
            .iter()
            .filter_map(|l| parse_lxc_line(l))
            .collect()
    }

    /// Replace the main-section lines matching `pred` by `new` lines. Every other line stays
    /// where it was; the new lines go at the end of the main section (before the blank line that
    /// separates it from the first section), never into a snapshot. When the matching lines
    /// already equal `new` (same lines, same order) nothing changes. Returns whether the content
    /// changed.
    pub fn replace_main_lines<F>(&mut self, pred: F, new: &[String]) -> bool
    where
        F: Fn(&str) -> bool,
    {
        let end = self.main_end();
        let current: Vec<&String> = self.lines[..end].iter().filter(|l| pred(l)).collect();
        if current.len() == new.len() && current.iter().zip(new).all(|(a, b)| *a == b) {
            return false;
        }
        let mut main: Vec<String> = self.lines[..end]
            .iter()
            .filter(|l| !pred(l))
            .cloned()
            .collect();
        // Insert before trailing blank lines so the section separator stays in place.
        let mut at = main.len();
        while at > 0 && main[at - 1].trim().is_empty() {
            at -= 1;
        }
        for (i, l) in new.iter().enumerate() {
            main.insert(at + i, l.clone());
        }
        let rest = self.lines[end..].to_vec();
        // A header right after the main section needs its blank separator line.
        if !rest.is_empty() && main.last().is_some_and(|l| !l.trim().is_empty()) {
            main.push(String::new());
        }
        main.extend(rest);
        self.lines = main;
        self.is_changed()
    }

    /// Remove main-section lines matching `pred`; returns whether anything changed.
    pub fn remove_main_lines<F>(&mut self, pred: F) -> bool
    where
        F: Fn(&str) -> bool,
    {
        self.replace_main_lines(pred, &[])
    }

    /// The file content as it would be written.
    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        if !self.lines.is_empty() {
            s.push('\n');
        }
        s
    }

    /// Whether [`ConfFile::text`] differs from what was read.
    pub fn is_changed(&self) -> bool {
        self.text() != self.original
    }

    /// Write the file atomically when its content changed; returns whether it wrote.
    pub fn save(&mut self) -> Result<bool> {
        if !self.is_changed() {
            return Ok(false);
        }
        let text = self.text();
        write_atomic(&self.path, text.as_bytes())?;
        self.original = text;
        Ok(true)
    }
}

/// Write `content` to `path` atomically: a temporary file in the same directory, fsync, rename
/// over `path`, fsync the directory. The file keeps `path`'s permissions when it existed
/// (0640 otherwise, the mode pmxcfs gives files under `/etc/pve`). The temporary file is in
/// the same directory because pmxcfs renames only within a directory. A reader sees the old or
/// the new content, never a mix.
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o640);
    crate::fsutil::replace_file(path, content, Some(mode)).map_err(|e| {
        Error::new(
            crate::error::ErrorKind::Other,
            format!("cannot replace `{}`: {e}", path.display()),
        )
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_pct_config_and_listsnapshot_would_say() {
        let text = "\
cores: 2
features: nesting=1
memory: 2048
tags: phoenix-managed
lxc.cgroup2.devices.allow: c 195:* rwm

[pve:pending]
delete: !cores
dev0: /dev/nvidia0,mode=0666
features: nesting=1,keyctl=1

[base]
cores: 2
snaptime: 1

[half]
cores: 2
snapstate: prepare
";
        let c = ConfFile::parse(Path::new("/x/900.conf"), text);
        let cur = c.to_config(true);
        assert_eq!(cur.get("features"), Some("nesting=1"));
        assert_eq!(cur.get("cores"), Some("2"));
        assert_eq!(cur.get("dev0"), None);
        assert_eq!(cur.lxc.len(), 1);
        let merged = c.to_config(false);
        assert_eq!(merged.get("features"), Some("nesting=1,keyctl=1"));
        assert_eq!(merged.get("dev0"), Some("/dev/nvidia0,mode=0666"));
        assert_eq!(merged.get("cores"), None);
        assert_eq!(merged.get("tags"), Some("phoenix-managed"));
        assert_eq!(c.complete_snapshots(), vec!["base".to_string()]);
        assert!(c.has_complete_snapshot("base") && !c.has_complete_snapshot("half"));
    }

    const WITH_SNAPSHOTS: &str = "\
arch: amd64
cores: 2
hostname: gpu
memory: 2048
net0: name=eth0,bridge=vmbr0,hwaddr=52:54:00:AA:BB:CD,ip=10.0.0.201/24,type=veth
parent: gpu-snapshot
rootfs: lxc-disks:subvol-901-disk-0,size=32G
lxc.cgroup2.devices.allow = c 195:* rwm
lxc.mount.entry=/dev/nvidia0 dev/nvidia0 none bind,optional,create=file

[base-snapshot]
arch: amd64
cores: 2
lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file
snaptime: 1700000000

[gpu-snapshot]
arch: amd64
parent: base-snapshot
snaptime: 1700000100
";

    fn conf(text: &str) -> ConfFile {
        ConfFile::parse(Path::new("/x/901.conf"), text)
    }

    #[test]
    fn parses_all_lxc_forms() {
        for l in [
            "lxc.mount.entry: /a b none bind",
            "lxc.mount.entry = /a b none bind",
            "lxc.mount.entry=/a b none bind",
        ] {
            assert_eq!(
                parse_lxc_line(l),
                Some(("lxc.mount.entry".into(), "/a b none bind".into())),
                "{l}"
            );
        }
        assert_eq!(parse_lxc_line("memory: 5"), None);
        assert_eq!(
            parse_setting_line("memory: 512"),
            Some(("memory".into(), "512".into()))
        );
        assert_eq!(parse_setting_line("lxc.a: b"), None);
        assert_eq!(parse_setting_line("#desc: x"), None);
    }

    #[test]
    fn main_section_and_sections() {
        let c = conf(WITH_SNAPSHOTS);
        assert_eq!(c.get("memory").as_deref(), Some("2048"));
        assert_eq!(c.get("snaptime"), None, "snapshot keys are not main keys");
        assert_eq!(c.lxc_entries().len(), 2);
        assert_eq!(c.snapshot_names(), ["base-snapshot", "gpu-snapshot"]);
        assert!(!c.is_changed());
        assert_eq!(c.text(), WITH_SNAPSHOTS);
    }

    #[test]
    fn replace_appends_into_main_not_last_snapshot() {
        let mut c = conf(WITH_SNAPSHOTS);
        let changed = c.replace_main_lines(
            |l| parse_lxc_line(l).is_some_and(|(k, _)| k == "lxc.cgroup2.devices.allow"),
            &[
                lxc_line("lxc.cgroup2.devices.allow", "c 195:* rwm"),
                lxc_line("lxc.cgroup2.devices.allow", "c 508:* rwm"),
            ],
        );
        assert!(changed);
        let text = c.text();
        let (main, snaps) = text.split_once("\n[base-snapshot]").unwrap();
        assert!(main.ends_with(
            "lxc.mount.entry=/dev/nvidia0 dev/nvidia0 none bind,optional,create=file\nlxc.cgroup2.devices.allow: c 195:* rwm\nlxc.cgroup2.devices.allow: c 508:* rwm\n"
        ), "{main}");
        assert!(!snaps.contains("508"));
        assert!(text.ends_with("snaptime: 1700000100\n"));
        // Re-applying the same lines changes nothing.
        let mut again = conf(&text);
        assert!(!again.replace_main_lines(
            |l| parse_lxc_line(l).is_some_and(|(k, _)| k == "lxc.cgroup2.devices.allow"),
            &[
                lxc_line("lxc.cgroup2.devices.allow", "c 195:* rwm"),
                lxc_line("lxc.cgroup2.devices.allow", "c 508:* rwm"),
            ],
        ));
    }

    #[test]
    fn remove_touches_only_main() {
        let mut c = conf(WITH_SNAPSHOTS);
        assert!(c.remove_main_lines(|l| l.starts_with("lxc.")));
        let text = c.text();
        let (main, snaps) = text.split_once("[base-snapshot]").unwrap();
        assert!(!main.contains("lxc."));
        assert!(snaps.contains("lxc.mount.entry: /dev/nvidia0"));
        assert!(main.ends_with("size=32G\n\n"), "{main:?}");
        assert!(!c.remove_main_lines(|l| l.starts_with("lxc.")));
    }

    #[test]
    fn append_to_file_without_sections() {
        let mut c = conf("arch: amd64\nmemory: 512\n");
        assert!(c.replace_main_lines(|_| false, &["lxc.mount.entry: /a a none bind".into()]));
        assert_eq!(
            c.text(),
            "arch: amd64\nmemory: 512\nlxc.mount.entry: /a a none bind\n"
        );
    }

    #[test]
    fn new_files_are_0640() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("new.conf");
        write_atomic(&p, b"x\n").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, b"y\n").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "an existing file keeps its mode");
    }

    #[test]
    fn save_writes_atomically_only_when_changed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("901.conf");
        std::fs::write(&p, WITH_SNAPSHOTS).unwrap();
        let mut c = ConfFile::read(&p).unwrap();
        let before = std::fs::metadata(&p).unwrap().modified().unwrap();
        assert!(!c.save().unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), before);
        c.remove_main_lines(|l| l.starts_with("lxc.cgroup2"));
        assert!(c.save().unwrap());
        let written = std::fs::read_to_string(&p).unwrap();
        assert!(!written.contains("lxc.cgroup2"));
        assert!(written.contains("[gpu-snapshot]"));
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(!c.save().unwrap());
    }
}
