//! Confined execution inside a container rootfs (`pct exec` → `lxc-attach`).
//!
//! The child process enters a private mount namespace, sees the machine's `/usr/{bin,sbin,lib,
//! lib64,libexec,share}` read-only (so real `bash`, `cat`, `python3` run), a fresh `/proc`, a
//! throw-away `/dev` tmpfs holding the standard nodes plus the container's passed-through devices,
//! and is chrooted into the rootfs. Everything else (`/etc`, `/var`, `/opt`, `/root`, `/tmp`,
//! `/usr/local`) is the container's own directory, so writes land in the rootfs. Mounts die with
//! the namespace when the command exits: nothing leaks onto the machine.
//!
//! All mount work is planned in the parent (paths as `CString`s) so the code between `fork` and
//! `exec` only makes raw syscalls (no allocation, async-signal-safe).

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

use super::GuestCtx;
use super::conf::CtConf;

/// `PATH` inside the guest: the doubles in `/usr/local` come before the machine's real tools.
pub const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Machine directories made visible read-only inside every guest (when they are real directories).
const HOST_USR_DIRS: &[&str] = &["bin", "sbin", "lib", "lib64", "libexec", "share"];

/// Standard character devices bound from the machine into the guest's `/dev`.
const STD_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Where the guest keeps its own `/usr/share/keyrings` (the machine's `/usr/share` is read-only
/// inside, but apt repository setup writes keyrings there).
pub const GUEST_KEYRINGS: &str = ".pve-sim/usr-share-keyrings";

/// One syscall-level step of the child's setup.
enum Step {
    /// Bind `src` on `dst`; `ro_flags` = Some(flags) remounts it read-only keeping `flags`.
    Bind {
        src: CString,
        dst: CString,
        ro_flags: Option<libc::c_ulong>,
    },
    Tmpfs {
        dst: CString,
    },
    Proc {
        dst: CString,
    },
    MkFile {
        path: CString,
    },
    MkDir {
        path: CString,
    },
    Symlink {
        target: CString,
        path: CString,
    },
}

/// A planned step with the text printed if it fails.
struct Planned {
    step: Step,
    what: CString,
    /// A failure skips the step instead of aborting the exec.
    optional: bool,
}

fn cstr(p: impl AsRef<OsStr>) -> anyhow::Result<CString> {
    CString::new(p.as_ref().as_bytes()).context("path contains a NUL byte")
}

/// Mount flags a read-only remount of a bind of `path` must keep (the kernel refuses to drop
/// nosuid/nodev/noexec that the source mount has).
fn locked_flags(path: &Path) -> anyhow::Result<libc::c_ulong> {
    let c = cstr(path)?;
    let mut st: libc::statvfs = unsafe_statvfs_zeroed();
    if statvfs(&c, &mut st) != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statvfs {}", path.display()));
    }
    let mut flags: libc::c_ulong = 0;
    for (vfs, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & vfs != 0 {
            flags |= ms;
        }
    }
    Ok(flags)
}

#[allow(unsafe_code)]
fn unsafe_statvfs_zeroed() -> libc::statvfs {
    // SAFETY: statvfs is a plain C struct of integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

#[allow(unsafe_code)]
fn statvfs(path: &CString, st: &mut libc::statvfs) -> i32 {
    // SAFETY: `path` is NUL-terminated and `st` is a valid, writable struct.
    unsafe { libc::statvfs(path.as_ptr(), st) }
}

/// The machine's `/usr` layout, computed once per process.
struct HostLayout {
    /// (host dir, guest-relative target, read-only flags)
    usr_binds: Vec<(PathBuf, PathBuf, libc::c_ulong)>,
    keyrings_exists: bool,
}

fn host_layout() -> anyhow::Result<&'static HostLayout> {
    static LAYOUT: OnceLock<Result<HostLayout, String>> = OnceLock::new();
    LAYOUT
        .get_or_init(|| compute_host_layout().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn compute_host_layout() -> anyhow::Result<HostLayout> {
    // The guest image is merged-usr (Ubuntu 24.04: /bin -> usr/bin ...). A machine whose /bin is
    // a real directory would hide half its tools from the guest.
    for top in ["bin", "sbin", "lib"] {
        let p = Path::new("/").join(top);
        let meta =
            std::fs::symlink_metadata(&p).with_context(|| format!("stat {}", p.display()))?;
        if !meta.file_type().is_symlink() {
            bail!(
                "this machine is not merged-usr ({} is a directory, not a symlink into /usr); \
                 pve-sim guests need a merged-usr machine (Debian 12+, Ubuntu 22.04+)",
                p.display()
            );
        }
    }
    let mut usr_binds = Vec::new();
    for d in HOST_USR_DIRS {
        let host = Path::new("/usr").join(d);
        if host.is_dir() {
            let flags = locked_flags(&host)?;
            usr_binds.push((host, Path::new("usr").join(d), flags));
        }
    }
    Ok(HostLayout {
        usr_binds,
        keyrings_exists: Path::new("/usr/share/keyrings").is_dir(),
    })
}

/// Whether guest exec can work in this process (root, mount namespaces). `Err` says why not.
pub fn available() -> anyhow::Result<()> {
    if !is_root() {
        bail!("pve-sim guest exec needs root (it uses a private mount namespace and chroot)");
    }
    host_layout()?;
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(probe_namespace)
        .clone()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Try `unshare(CLONE_NEWNS | CLONE_NEWUTS)` in a throw-away child (`true` under a pre_exec hook).
fn probe_namespace() -> Result<(), String> {
    let mut cmd = Command::new("/usr/bin/true");
    #[allow(unsafe_code)]
    // SAFETY: the hook only makes raw syscalls (no allocation) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("namespace probe exited with {s}")),
        Err(e) => Err(format!(
            "cannot create a mount namespace ({e}); pve-sim guest exec needs CAP_SYS_ADMIN"
        )),
    }
}

#[allow(unsafe_code)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Join a guest-absolute path (e.g. `/dev/nvidia0` or `dev/nvidia0`) under `root`, refusing `..`.
pub fn guest_join(root: &Path, guest_path: &Path) -> anyhow::Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in guest_path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                bail!("guest path {} must not contain '..'", guest_path.display())
            }
        }
    }
    Ok(out)
}

/// Refuse mount targets that are symlinks: a guest could otherwise point a mount anywhere.
fn check_target(p: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symlink inside the container rootfs; refusing to mount over it",
            p.display()
        ),
        Ok(_) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("missing mount point {}", p.display())),
    }
}

fn add(steps: &mut Vec<Planned>, step: Step, what: String) -> anyhow::Result<()> {
    add_step(steps, step, what, false)
}

fn add_step(
    steps: &mut Vec<Planned>,
    step: Step,
    what: String,
    optional: bool,
) -> anyhow::Result<()> {
    steps.push(Planned {
        step,
        what: CString::new(what).context("NUL in path")?,
        optional,
    });
    Ok(())
}

fn plan(ctx: &GuestCtx, root: &Path) -> anyhow::Result<Vec<Planned>> {
    let layout = host_layout()?;
    let mut steps = Vec::new();
    for (host, rel, flags) in &layout.usr_binds {
        let dst = root.join(rel);
        if !dst.exists() {
            // An old rootfs without the mount point: create it (it is an empty directory).
            std::fs::create_dir_all(&dst).with_context(|| format!("create {}", dst.display()))?;
        }
        check_target(&dst)?;
        add(
            &mut steps,
            Step::Bind {
                src: cstr(host)?,
                dst: cstr(&dst)?,
                ro_flags: Some(*flags),
            },
            format!("bind {} read-only", host.display()),
        )?;
    }
    let keyrings = super::files::resolve(root, &format!("/{GUEST_KEYRINGS}"), true)?;
    if layout.keyrings_exists && !keyrings.is_dir() {
        // A rootfs from an older image: give it the directory now.
        std::fs::create_dir_all(&keyrings)
            .with_context(|| format!("create {}", keyrings.display()))?;
    }
    if layout.keyrings_exists {
        add(
            &mut steps,
            Step::Bind {
                src: cstr(&keyrings)?,
                dst: cstr(root.join("usr/share/keyrings"))?,
                ro_flags: None,
            },
            "bind the guest's /usr/share/keyrings".into(),
        )?;
    }
    let proc_dir = root.join("proc");
    check_target(&proc_dir)?;
    add(
        &mut steps,
        Step::Proc {
            dst: cstr(&proc_dir)?,
        },
        "mount /proc".into(),
    )?;

    // The simulated host's kernel module version, where nvidia-smi inside looks for it (a
    // real container sees the host's /proc/driver/nvidia). Best effort: skipped if the
    // machine's procfs refuses the overmount.
    let version = ctx.host_root.join("proc/driver/nvidia/version");
    if version.is_file() {
        let driver = proc_dir.join("driver");
        let nv = driver.join("nvidia");
        add_step(
            &mut steps,
            Step::Tmpfs {
                dst: cstr(&driver)?,
            },
            "mount /proc/driver".into(),
            true,
        )?;
        add_step(
            &mut steps,
            Step::MkDir { path: cstr(&nv)? },
            "mkdir /proc/driver/nvidia".into(),
            true,
        )?;
        add_step(
            &mut steps,
            Step::MkFile {
                path: cstr(nv.join("version"))?,
            },
            "create /proc/driver/nvidia/version".into(),
            true,
        )?;
        add_step(
            &mut steps,
            Step::Bind {
                src: cstr(&version)?,
                dst: cstr(nv.join("version"))?,
                ro_flags: None,
            },
            "bind /proc/driver/nvidia/version".into(),
            true,
        )?;
    }

    let dev = root.join("dev");
    check_target(&dev)?;
    add(
        &mut steps,
        Step::Tmpfs { dst: cstr(&dev)? },
        "mount /dev tmpfs".into(),
    )?;
    for d in STD_DEVICES {
        let host = Path::new("/dev").join(d);
        if !host.exists() {
            continue;
        }
        let path = dev.join(d);
        add(
            &mut steps,
            Step::MkFile { path: cstr(&path)? },
            format!("create /dev/{d}"),
        )?;
        add(
            &mut steps,
            Step::Bind {
                src: cstr(&host)?,
                dst: cstr(&path)?,
                ro_flags: None,
            },
            format!("bind /dev/{d}"),
        )?;
    }
    for (target, name) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        add(
            &mut steps,
            Step::Symlink {
                target: cstr(target)?,
                path: cstr(dev.join(name))?,
            },
            format!("symlink /dev/{name}"),
        )?;
    }
    for d in ["pts", "shm"] {
        add(
            &mut steps,
            Step::MkDir {
                path: cstr(dev.join(d))?,
            },
            format!("mkdir /dev/{d}"),
        )?;
    }

    for b in &ctx.devices {
        let src = guest_join(&ctx.host_root, &b.host_path)?;
        let Ok(meta) = std::fs::metadata(&src) else {
            // `optional` in the mount entry: a missing host node does not block the container.
            continue;
        };
        let rel = guest_join(Path::new(""), &b.guest_path)?;
        if rel.as_os_str().is_empty() || rel == Path::new("dev") {
            bail!(
                "CT {}: cannot bind device {} onto {}",
                ctx.vmid,
                b.host_path.display(),
                b.guest_path.display()
            );
        }
        let mut dst = root.join(&rel);
        if rel.starts_with("dev") {
            // Parents inside the fresh /dev tmpfs are created by the child.
            let mut parent = PathBuf::new();
            let comps: Vec<_> = rel.components().collect();
            for c in &comps[1..comps.len().saturating_sub(1)] {
                parent.push(c);
                add(
                    &mut steps,
                    Step::MkDir {
                        path: cstr(dev.join(&parent))?,
                    },
                    format!("mkdir /dev/{}", parent.display()),
                )?;
            }
            let step = if meta.is_dir() {
                Step::MkDir { path: cstr(&dst)? }
            } else {
                Step::MkFile { path: cstr(&dst)? }
            };
            add(
                &mut steps,
                step,
                format!("create {}", b.guest_path.display()),
            )?;
        } else {
            // Outside /dev LXC's create=file/dir makes the mount point in the rootfs itself,
            // resolved as the guest sees it.
            dst = super::files::resolve(root, &format!("/{}", rel.display()), false)?;
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?;
            }
            if !dst.exists() {
                if meta.is_dir() {
                    std::fs::create_dir(&dst)
                } else {
                    std::fs::write(&dst, b"")
                }
                .with_context(|| format!("create mount point {}", dst.display()))?;
            }
            check_target(&dst)?;
        }
        add(
            &mut steps,
            Step::Bind {
                src: cstr(&src)?,
                dst: cstr(&dst)?,
                ro_flags: None,
            },
            format!("bind device {}", b.host_path.display()),
        )?;
    }
    Ok(steps)
}

/// Write `msg`, `what`, errno to stderr and `_exit(255)` without allocating (child side).
#[allow(unsafe_code)]
fn child_fail(what: &CString) -> ! {
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut num = [0u8; 12];
    let mut n = errno.unsigned_abs();
    let mut i = num.len();
    loop {
        i -= 1;
        num[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let parts: [&[u8]; 4] = [
        b"pve-sim: guest exec setup failed: ",
        what.as_bytes(),
        b": errno ",
        &num[i..],
    ];
    for p in parts {
        // SAFETY: writing a valid buffer to fd 2.
        unsafe { libc::write(2, p.as_ptr().cast(), p.len()) };
    }
    // SAFETY: as above; then terminate the child without running Rust destructors.
    unsafe {
        libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::_exit(255)
    }
}

/// Child side: run the planned steps, then chroot. Only raw syscalls.
#[allow(unsafe_code)]
fn child_setup(root: &CString, hostname: &[u8], steps: &[Planned]) {
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY (whole function): every pointer is a NUL-terminated CString prepared by the parent
    // or null where the syscall allows it; we are in the forked child before exec.
    unsafe {
        // A UTS namespace too: the guest's `hostname` is its own, as in a real container.
        if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
            child_fail(&CString::from(c"unshare(CLONE_NEWNS | CLONE_NEWUTS)"));
        }
        if !hostname.is_empty() && libc::sethostname(hostname.as_ptr().cast(), hostname.len()) != 0
        {
            child_fail(&CString::from(c"sethostname"));
        }
        // Keep our mounts from propagating back to the machine's namespace.
        if libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            child_fail(&CString::from(c"make / private"));
        }
        for p in steps {
            let ok = match &p.step {
                Step::Bind { src, dst, ro_flags } => {
                    libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        null,
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ) == 0
                        && ro_flags.is_none_or(|f| {
                            libc::mount(
                                null,
                                dst.as_ptr(),
                                null,
                                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | f,
                                std::ptr::null(),
                            ) == 0
                        })
                }
                Step::Tmpfs { dst } => {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        dst.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID,
                        c"mode=755,size=65536k".as_ptr().cast(),
                    ) == 0
                }
                Step::Proc { dst } => {
                    libc::mount(
                        c"proc".as_ptr(),
                        dst.as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ) == 0
                        // Where a fresh proc is refused (masked /proc), reuse the machine's.
                        || libc::mount(c"/proc".as_ptr(), dst.as_ptr(), null, libc::MS_BIND | libc::MS_REC, std::ptr::null()) == 0
                }
                Step::MkFile { path } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o666,
                    );
                    fd >= 0 && libc::close(fd) == 0
                }
                Step::MkDir { path } => {
                    libc::mkdir(path.as_ptr(), 0o755) == 0
                        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST)
                }
                Step::Symlink { target, path } => {
                    libc::symlink(target.as_ptr(), path.as_ptr()) == 0
                }
            };
            if !ok && !p.optional {
                child_fail(&p.what);
            }
        }
        if libc::chroot(root.as_ptr()) != 0 {
            child_fail(&CString::from(c"chroot into the container rootfs"));
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            child_fail(&CString::from(c"chdir /"));
        }
    }
}

/// Run `argv` confined to the container; returns its exit code (see [`super::exec`]).
pub fn run(ctx: &GuestCtx, argv: &[String]) -> anyhow::Result<i32> {
    let Some((prog, args)) = argv.split_first() else {
        bail!("CT {}: missing command", ctx.vmid);
    };
    available()?;
    let root = std::fs::canonicalize(&ctx.rootfs).with_context(|| {
        format!(
            "CT {}: rootfs {} is missing",
            ctx.vmid,
            ctx.rootfs.display()
        )
    })?;
    if !root.join("etc").is_dir() {
        bail!(
            "CT {}: rootfs {} has no /etc; was the ostemplate extracted?",
            ctx.vmid,
            root.display()
        );
    }
    let steps = plan(ctx, &root)?;
    let croot = cstr(&root)?;
    let conf = CtConf::load(ctx);
    let hostname = guest_hostname(&root, ctx, conf.as_ref());
    sync_markers(&root, ctx, conf.as_ref())?;

    let mut cmd = Command::new(prog);
    cmd.args(args).env_clear();
    cmd.env("PATH", GUEST_PATH)
        .env("HOME", "/root")
        .env("USER", "root")
        .env("LOGNAME", "root")
        .env("SHELL", "/bin/bash")
        .env("LANG", "C.UTF-8");
    if let Some(term) = std::env::var_os("TERM") {
        cmd.env("TERM", term);
    }
    #[allow(unsafe_code)]
    // SAFETY: the hook only makes raw syscalls on data prepared before the fork (child_setup).
    unsafe {
        cmd.pre_exec(move || {
            child_setup(&croot, &hostname, &steps);
            Ok(())
        });
    }
    match cmd.status() {
        Ok(status) => Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))),
        Err(e) => {
            // exec itself failed inside the guest: report it the way lxc-attach does.
            let code = match e.raw_os_error() {
                Some(libc::ENOENT) => 127,
                _ => 126,
            };
            eprintln!(
                "lxc-attach: {}: ../src/lxc/attach.c: lxc_attach_run_command: 1841 {} - Failed to exec \"{}\"",
                ctx.vmid,
                std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::ENOENT))
                    .to_string()
                    .split(" (os error")
                    .next()
                    .unwrap_or_default(),
                prog
            );
            Ok(code)
        }
    }
}

/// The container's UTS name, as LXC sets it: the config's `hostname` (default `CT<vmid>`);
/// without a config file, the first line of the guest's /etc/hostname. Empty (keep the
/// machine's name) when that is not a plausible host name.
fn guest_hostname(root: &Path, ctx: &GuestCtx, conf: Option<&CtConf>) -> Vec<u8> {
    let name = match conf {
        Some(c) => c
            .value("hostname")
            .map_or_else(|| format!("CT{}", ctx.vmid), str::to_string),
        None => super::files::resolve(root, "/etc/hostname", true)
            .ok()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
            .unwrap_or_default(),
    };
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok { name.into_bytes() } else { Vec::new() }
}

/// What the doubles need to know about the container's config, kept in its `/run/pve-sim`:
/// `unprivileged` (the docker double refuses GPU containers there unless `no-cgroups = true`,
/// like the real hook) and `features` (the `features:` value of the main section of
/// `etc/pve/lxc/<vmid>.conf` under the host root; docker needs `nesting=1`, and `keyctl=1` when
/// unprivileged). Without a config file no `features` marker is written (nothing is enforced).
fn sync_markers(root: &Path, ctx: &GuestCtx, conf: Option<&CtConf>) -> anyhow::Result<()> {
    let unpriv = ctx.unprivileged.then(|| "1\n".to_string());
    let feat = conf.map(|c| format!("{}\n", c.value("features").unwrap_or_default()));
    let denied = conf
        .map(|c| super::conf::denied_devices(ctx, c))
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.iter()
                .map(|p| format!("{}\n", p.display()))
                .collect::<String>()
        });
    // Resolved as the guest sees it: a guest symlink (/run -> /etc) cannot point these writes
    // at the machine.
    for (name, want) in [
        ("unprivileged", unpriv),
        ("features", feat),
        ("denied-devices", denied),
    ] {
        let marker = super::files::resolve(root, &format!("/run/pve-sim/{name}"), true)?;
        let have = std::fs::read_to_string(&marker).ok();
        if have == want {
            continue;
        }
        match want {
            Some(text) => {
                let dir = super::files::resolve(root, "/run/pve-sim", true)?;
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("create {}", dir.display()))?;
                std::fs::write(&marker, text)
                    .with_context(|| format!("write {}", marker.display()))?;
            }
            None => std::fs::remove_file(&marker)
                .with_context(|| format!("remove {}", marker.display()))?,
        }
    }
    Ok(())
}
