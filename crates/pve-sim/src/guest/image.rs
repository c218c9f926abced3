//! The guest image: a minimal Ubuntu 24.04 (noble) rootfs packed as an ostemplate tarball,
//! with the guest doubles (`guest-image/`) in `/usr/local/bin`.
//!
//! `/usr/{bin,sbin,lib,lib64,libexec,share}` are empty mount points: `exec` binds the
//! machine's directories there. `/bin`, `/sbin`, `/lib`, `/lib64` are merged-usr symlinks.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::exec::GUEST_KEYRINGS;

/// Marker file naming the distro and the image revision (tests and `pct create` may read it).
pub const MARKER: &str = "etc/pve-sim-image";
pub const MARKER_TEXT: &str = "ubuntu 24.04 noble amd64 pve-sim-guest 1\n";

/// Shell doubles: (name in /usr/local/bin, script).
const DOUBLES: &[(&str, &str)] = &[
    ("apt-get", include_str!("../../guest-image/bin/apt-get")),
    ("apt", include_str!("../../guest-image/bin/apt")),
    ("dpkg", include_str!("../../guest-image/bin/dpkg")),
    (
        "dpkg-query",
        include_str!("../../guest-image/bin/dpkg-query"),
    ),
    ("systemctl", include_str!("../../guest-image/bin/systemctl")),
    ("docker", include_str!("../../guest-image/bin/docker")),
    (
        "nvidia-smi",
        include_str!("../../guest-image/bin/nvidia-smi"),
    ),
    (
        "nvidia-ctk",
        include_str!("../../guest-image/bin/nvidia-ctk"),
    ),
    ("curl", include_str!("../../guest-image/bin/curl")),
    ("wget", include_str!("../../guest-image/bin/wget")),
    ("gpg", include_str!("../../guest-image/bin/gpg")),
    ("pip", include_str!("../../guest-image/bin/pip")),
    ("pip3", include_str!("../../guest-image/bin/pip")),
    ("python3", include_str!("../../guest-image/bin/python3")),
    (
        "locale-gen",
        include_str!("../../guest-image/bin/locale-gen"),
    ),
    (
        "update-locale",
        include_str!("../../guest-image/bin/update-locale"),
    ),
    (
        "update-ca-certificates",
        include_str!("../../guest-image/bin/update-ca-certificates"),
    ),
];

/// Shared shell library of the doubles, at /usr/local/lib/pve-sim/common.sh.
const COMMON_SH: &str = include_str!("../../guest-image/lib/common.sh");

/// The offline pip stand-in (run by the real python), at /usr/local/lib/pve-sim/pip_stub.py.
const PIP_STUB: &str = include_str!("../../guest-image/lib/pip_stub.py");

/// JSON/template side of the docker double, at /usr/local/lib/pve-sim/docker_helper.py.
const DOCKER_HELPER: &str = include_str!("../../guest-image/lib/docker_helper.py");

/// Packages present in the image as shipped (Proxmox's "standard" Ubuntu template has these).
pub const PREINSTALLED: &[(&str, &str)] = &[
    ("apt", "2.7.14build2"),
    ("base-files", "13ubuntu10"),
    ("bash", "5.2.21-2ubuntu4"),
    ("ca-certificates", "20240203"),
    ("coreutils", "9.4-3ubuntu6"),
    ("curl", "8.5.0-2ubuntu10.6"),
    ("dpkg", "1.22.6ubuntu6"),
    ("locales", "2.39-0ubuntu8"),
    ("python3", "3.12.3-0ubuntu2"),
    ("systemd", "255.4-1ubuntu8"),
    ("wget", "1.21.4-1ubuntu4.1"),
];

const OS_RELEASE: &str = "PRETTY_NAME=\"Ubuntu 24.04.2 LTS\"
NAME=\"Ubuntu\"
VERSION_ID=\"24.04\"
VERSION=\"24.04.2 LTS (Noble Numbat)\"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL=\"https://www.ubuntu.com/\"
SUPPORT_URL=\"https://help.ubuntu.com/\"
BUG_REPORT_URL=\"https://bugs.launchpad.net/ubuntu/\"
PRIVACY_POLICY_URL=\"https://www.ubuntu.com/legal/terms-and-policies/privacy-policy\"
UBUNTU_CODENAME=noble
LOGO=ubuntu-logo
";

const UBUNTU_SOURCES: &str = "Types: deb
URIs: http://archive.ubuntu.com/ubuntu/
Suites: noble noble-updates noble-security
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg
";

/// (path, mode, content) of the plain files in the image.
fn files() -> Vec<(String, u32, String)> {
    let mut v: Vec<(String, u32, String)> = vec![
        ("etc/os-release".into(), 0o644, OS_RELEASE.into()),
        (
            "etc/lsb-release".into(),
            0o644,
            "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=24.04\nDISTRIB_CODENAME=noble\nDISTRIB_DESCRIPTION=\"Ubuntu 24.04.2 LTS\"\n".into(),
        ),
        ("etc/debian_version".into(), 0o644, "trixie/sid\n".into()),
        ("etc/hostname".into(), 0o644, "localhost\n".into()),
        (
            "etc/hosts".into(),
            0o644,
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n".into(),
        ),
        ("etc/resolv.conf".into(), 0o644, "# offline (pve-sim)\n".into()),
        (
            "etc/passwd".into(),
            0o644,
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n".into(),
        ),
        (
            "etc/group".into(),
            0o644,
            "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\ndisk:x:6:\nmail:x:8:\nsudo:x:27:\nvideo:x:44:\nplugdev:x:46:\nstaff:x:50:\nusers:x:100:\nrender:x:993:\nnogroup:x:65534:\n".into(),
        ),
        (
            "etc/gshadow".into(),
            0o640,
            "root:*::\ndaemon:*::\nbin:*::\nsys:*::\nadm:*::\ntty:*::\ndisk:*::\nmail:*::\nsudo:*::\nvideo:*::\nplugdev:*::\nstaff:*::\nusers:*::\nrender:!::\nnogroup:*::\n".into(),
        ),
        (
            "etc/login.defs".into(),
            0o644,
            "MAIL_DIR /var/mail\nUID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nSYS_UID_MIN 100\nSYS_UID_MAX 999\nSYS_GID_MIN 100\nSYS_GID_MAX 999\nCREATE_HOME yes\nUSERGROUPS_ENAB yes\nUMASK 022\nENCRYPT_METHOD SHA512\n".into(),
        ),
        ("etc/shells".into(), 0o644, "/bin/sh\n/bin/bash\n/usr/bin/bash\n".into()),
        ("etc/shadow".into(), 0o640, "root:*:19900:0:99999:7:::\n".into()),
        (
            "etc/nsswitch.conf".into(),
            0o644,
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\n".into(),
        ),
        (
            "etc/apt/sources.list.d/ubuntu.sources".into(),
            0o644,
            UBUNTU_SOURCES.into(),
        ),
        (
            "etc/apt/sources.list".into(),
            0o644,
            "# Ubuntu sources have moved to /etc/apt/sources.list.d/ubuntu.sources\n".into(),
        ),
        ("etc/default/locale".into(), 0o644, String::new()),
        ("etc/locale.gen".into(), 0o644, "# en_US.UTF-8 UTF-8\n".into()),
        (MARKER.into(), 0o644, MARKER_TEXT.into()),
        ("usr/local/lib/pve-sim/common.sh".into(), 0o644, COMMON_SH.into()),
        ("usr/local/lib/pve-sim/pip_stub.py".into(), 0o644, PIP_STUB.into()),
        ("usr/local/lib/pve-sim/docker_helper.py".into(), 0o644, DOCKER_HELPER.into()),
    ];
    for (name, script) in DOUBLES {
        v.push((format!("usr/local/bin/{name}"), 0o755, (*script).into()));
    }
    for (pkg, ver) in PREINSTALLED {
        v.push((
            format!("var/lib/pve-sim/dpkg/{pkg}"),
            0o644,
            format!("{ver}\n"),
        ));
    }
    let mut status = String::new();
    for (pkg, ver) in PREINSTALLED {
        status.push_str(&format!(
            "Package: {pkg}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {ver}\n\n"
        ));
    }
    v.push(("var/lib/dpkg/status".into(), 0o644, status));
    v
}

/// Directories of the image with their modes.
const DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("run/lock", 0o1777),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("home", 0o755),
    ("etc/skel", 0o755),
    ("var/mail", 0o2775),
    ("opt", 0o755),
    ("mnt", 0o755),
    ("srv", 0o755),
    ("media", 0o755),
    ("boot", 0o755),
    ("etc/apt/keyrings", 0o755),
    ("etc/apt/apt.conf.d", 0o755),
    ("etc/apt/preferences.d", 0o755),
    ("etc/apt/trusted.gpg.d", 0o755),
    ("etc/systemd/system/multi-user.target.wants", 0o755),
    ("etc/profile.d", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("usr/lib", 0o755),
    ("usr/lib64", 0o755),
    ("usr/libexec", 0o755),
    ("usr/share", 0o755),
    ("usr/local/bin", 0o755),
    ("usr/local/sbin", 0o755),
    ("usr/local/share", 0o755),
    ("usr/local/include", 0o755),
    ("usr/local/src", 0o755),
    ("var/lib/apt/lists/partial", 0o755),
    ("var/lib/dpkg/info", 0o755),
    ("var/lib/dpkg/updates", 0o755),
    ("var/cache/apt/archives/partial", 0o755),
    ("var/log/apt", 0o755),
    ("var/tmp", 0o1777),
    ("var/lib/pve-sim/dpkg", 0o755),
    (GUEST_KEYRINGS, 0o755),
];

/// Build the rootfs tree in `dir` (must exist and be empty).
pub fn populate(dir: &Path) -> anyhow::Result<()> {
    for (d, _) in DIRS {
        let p = dir.join(d);
        fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
    }
    for (d, mode) in DIRS {
        fs::set_permissions(dir.join(d), fs::Permissions::from_mode(*mode))?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("var/run", "/run"),
        ("var/lock", "/run/lock"),
    ] {
        std::os::unix::fs::symlink(target, dir.join(link))?;
    }
    copy_alternatives(
        Path::new("/etc/alternatives"),
        &dir.join("etc/alternatives"),
    )?;
    for (path, mode, content) in files() {
        let p = dir.join(&path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&p, content).with_context(|| format!("write {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The machine's `/usr/bin/awk`, `editor`, ... are symlinks through `/etc/alternatives`; the
/// guest has its own `/etc`, so the image carries the same links (as a real image has its own).
fn copy_alternatives(host: &Path, guest: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(guest)?;
    let Ok(rd) = fs::read_dir(host) else {
        return Ok(());
    };
    for entry in rd {
        let entry = entry?;
        if entry.file_type()?.is_symlink() {
            let target = fs::read_link(entry.path())?;
            // Manual pages are most of them and no guest command needs them.
            if target.components().any(|c| c.as_os_str() == "man") {
                continue;
            }
            std::os::unix::fs::symlink(&target, guest.join(entry.file_name()))
                .with_context(|| format!("link alternative {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn run_pipeline(mut first: Command, mut second: Command, what: &str) -> anyhow::Result<()> {
    let mut a = first
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: cannot run {:?}", first.get_program()))?;
    let out = a.stdout.take().context("no pipe")?;
    let b = second
        .stdin(out)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: cannot run {:?}", second.get_program()));
    let b = match b {
        Ok(b) => b,
        Err(e) => {
            let _ = a.kill();
            let _ = a.wait();
            return Err(e);
        }
    };
    let b_out = b.wait_with_output()?;
    let a_status = a.wait()?;
    if !a_status.success() || !b_out.status.success() {
        bail!(
            "{what} failed ({:?}: {a_status}, {:?}: {}): {}",
            first.get_program(),
            second.get_program(),
            b_out.status,
            String::from_utf8_lossy(&b_out.stderr).trim()
        );
    }
    Ok(())
}

/// See [`super::write_ostemplate`].
pub fn write(path: &Path) -> anyhow::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!(
            "cannot write ostemplate {}: directory {} does not exist",
            path.display(),
            parent.display()
        );
    }
    let name = path
        .file_name()
        .context("ostemplate path has no file name")?
        .to_string_lossy()
        .to_string();
    let pid = std::process::id();
    let staging = parent.join(format!(".{name}.staging-{pid}"));
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let result = (|| {
        fs::create_dir(&staging).with_context(|| format!("create {}", staging.display()))?;
        populate(&staging)?;
        let mut tar = Command::new("tar");
        tar.args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&staging)
            .args(["-cf", "-", "."]);
        let compress = compression_for_name(&name);
        match compress {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(["-q", "-c"]).stdout(fs::File::create(&tmp)?);
                run_pipeline(tar, c, "packing the guest image")?;
            }
            None => {
                let st = tar
                    .stdout(fs::File::create(&tmp)?)
                    .status()
                    .context("cannot run tar")?;
                if !st.success() {
                    bail!("tar failed packing the guest image: {st}");
                }
            }
        }
        fs::rename(&tmp, path).with_context(|| format!("rename onto {}", path.display()))?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&staging);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing ostemplate {}", path.display()))
}

fn compression_for_name(name: &str) -> Option<&'static str> {
    if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else if name.ends_with(".xz") {
        Some("xz")
    } else {
        None
    }
}

/// See [`super::extract_ostemplate`]. Compression is detected from the file's magic bytes.
pub fn extract(tarball: &Path, rootfs: &Path) -> anyhow::Result<()> {
    let mut magic = [0u8; 6];
    let mut f = fs::File::open(tarball)
        .with_context(|| format!("can't find file '{}'", tarball.display()))?;
    let n = f.read(&mut magic)?;
    drop(f);
    if !rootfs.is_dir() {
        bail!("rootfs directory {} does not exist", rootfs.display());
    }
    if fs::read_dir(rootfs)?.next().is_some() {
        bail!("rootfs directory {} is not empty", rootfs.display());
    }
    let tool = match &magic[..n] {
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
        [0x1f, 0x8b, ..] => Some("gzip"),
        [0xfd, b'7', b'z', b'X', b'Z', 0] => Some("xz"),
        _ => None,
    };
    let mut tar = Command::new("tar");
    tar.args(["--numeric-owner", "-xpf", "-", "-C"]).arg(rootfs);
    match tool {
        Some(t) => {
            let mut d = Command::new(t);
            d.arg("-dc").arg(tarball);
            run_pipeline(d, tar, "extracting the ostemplate")
        }
        None => {
            let out = tar
                .stdin(fs::File::open(tarball)?)
                .output()
                .context("cannot run tar")?;
            if !out.status.success() {
                bail!(
                    "tar failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        }
    }
    .with_context(|| format!("extracting archive '{}'", tarball.display()))
}

/// See [`super::boot`]: a fresh `/run`, enabled units active again, docker containers with a
/// restart policy running again (when docker itself comes up), the others exited.
pub fn boot(rootfs: &Path) -> anyhow::Result<()> {
    let run = rootfs.join("run");
    if fs::symlink_metadata(&run).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!("{} is a symlink; refusing to clear it", run.display());
    }
    if run.is_dir() {
        for entry in fs::read_dir(&run)? {
            let p = entry?.path();
            if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            }
            .with_context(|| format!("clear {}", p.display()))?;
        }
    } else {
        fs::create_dir_all(&run)?;
    }
    fs::create_dir_all(run.join("lock"))?;
    fs::set_permissions(run.join("lock"), fs::Permissions::from_mode(0o1777))?;
    let active = run.join("pve-sim/systemd/active");
    fs::create_dir_all(&active)?;
    let wants = super::files::resolve(rootfs, "/etc/systemd/system/multi-user.target.wants", true)?;
    let mut docker_up = false;
    if let Ok(rd) = fs::read_dir(&wants) {
        for entry in rd {
            let name = entry?.file_name();
            let name_s = name.to_string_lossy().to_string();
            let exists = rootfs.join("etc/systemd/system").join(&name).is_file()
                || rootfs.join("var/lib/pve-sim/units").join(&name).is_file();
            if !exists {
                continue;
            }
            if name_s == "docker.service" {
                let snap = run.join("pve-sim/docker");
                fs::create_dir_all(&snap)?;
                let conf = super::files::resolve(rootfs, "/etc/docker/daemon.json", true)?;
                let text = fs::read_to_string(&conf).unwrap_or_else(|_| "{}".into());
                if serde_json::from_str::<serde_json::Value>(&text).is_err() {
                    continue; // dockerd refuses an invalid daemon.json: the unit stays failed
                }
                fs::write(snap.join("daemon.json"), text)?;
                fs::write(run.join("docker.sock"), "")?;
                docker_up = true;
            }
            fs::write(active.join(&name), "0\n")?;
        }
    }
    let containers = super::files::resolve(rootfs, "/var/lib/docker-sim/containers", true)?;
    if let Ok(rd) = fs::read_dir(&containers) {
        for entry in rd {
            let dir = entry?.path();
            let read = |f: &str| {
                fs::read_to_string(dir.join(f))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            let policy = read("restart");
            let was = read("state");
            let up = docker_up
                && (policy == "always" || (policy == "unless-stopped" && was != "stopped-by-user"));
            let state = if up {
                "running"
            } else if was == "stopped-by-user" {
                was.as_str()
            } else {
                "exited"
            };
            fs::write(dir.join("state"), format!("{state}\n"))?;
        }
    }
    Ok(())
}

/// See [`super::set_hostname`].
pub fn set_hostname(rootfs: &Path, hostname: &str) -> anyhow::Result<()> {
    let valid = !hostname.is_empty()
        && hostname.len() <= 255
        && hostname.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        bail!("invalid hostname '{hostname}'");
    }
    let short = hostname.split('.').next().unwrap_or(hostname);
    let hostname_file = super::files::resolve(rootfs, "/etc/hostname", false)?;
    write_replace(&hostname_file, &format!("{short}\n"))?;
    let hosts_file = super::files::resolve(rootfs, "/etc/hosts", false)?;
    let old = fs::read_to_string(&hosts_file).unwrap_or_default();
    let entry = if short == hostname {
        format!("127.0.1.1 {hostname}")
    } else {
        format!("127.0.1.1 {hostname} {short}")
    };
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| !l.starts_with("127.0.1.1"))
        .map(str::to_string)
        .collect();
    lines.push(entry);
    write_replace(&hosts_file, &(lines.join("\n") + "\n"))
}

/// Replace `path` atomically (temp file in the same directory, then rename).
fn write_replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("pve-sim-{}", std::process::id()));
    fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    fs::rename(&tmp, path).with_context(|| format!("rename onto {}", path.display()))
}
