//! Guest side of pve-sim driven directly: image, confined exec, push/pull, the doubles.
//! Tests that need root and mount namespaces print why and pass trivially where unavailable.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pve_sim::guest::{self, DeviceBind, GuestCtx};

/// One image per test process (building it costs a tar+zstd run).
fn image() -> &'static Path {
    static IMG: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = IMG.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ubuntu-24.04-standard_24.04-2_amd64.tar.zst");
        guest::write_ostemplate(&p).unwrap();
        (d, p)
    });
    p
}

struct Ct {
    _dir: tempfile::TempDir,
    ctx: GuestCtx,
}

impl Ct {
    fn root(&self) -> &Path {
        &self.ctx.rootfs
    }
    fn run(&self, argv: &[&str]) -> i32 {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        guest::exec(&self.ctx, &argv)
    }
    /// `bash -c SCRIPT` inside; returns (exit, stdout+stderr captured in the guest's /tmp).
    fn sh(&self, script: &str) -> (i32, String) {
        let code = self.run(&["bash", "-c", &format!("exec >/tmp/.out 2>&1; {script}")]);
        let out = fs::read_to_string(self.root().join("tmp/.out")).unwrap_or_default();
        (code, out)
    }
    fn sh_ok(&self, script: &str) -> String {
        let (code, out) = self.sh(script);
        assert_eq!(code, 0, "script failed: {script}\n{out}");
        out
    }
    fn host(&self) -> &Path {
        &self.ctx.host_root
    }
}

/// A fresh container from the image, or None (with the reason printed) without namespaces.
fn ct(devices: &[&str]) -> Option<Ct> {
    if let Err(e) = guest::exec_available() {
        eprintln!("SKIP: guest exec unavailable here: {e:#}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let host_root = dir.path().join("host");
    let rootfs = host_root.join("rpool/data/subvol-100-disk-0");
    fs::create_dir_all(&rootfs).unwrap();
    guest::extract_ostemplate(image(), &rootfs).unwrap();
    fs::create_dir_all(host_root.join("dev/nvidia-caps")).unwrap();
    let mut binds = Vec::new();
    for d in devices {
        let host = host_root.join(d.trim_start_matches('/'));
        if !host.exists() {
            fs::write(&host, b"").unwrap();
        }
        binds.push(DeviceBind {
            host_path: PathBuf::from(d),
            guest_path: PathBuf::from(d),
        });
    }
    Some(Ct {
        _dir: dir,
        ctx: GuestCtx {
            host_root,
            vmid: 100,
            rootfs,
            unprivileged: true,
            devices: binds,
        },
    })
}

#[test]
fn image_layout_is_ubuntu_noble() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("r");
    fs::create_dir(&root).unwrap();
    guest::extract_ostemplate(image(), &root).unwrap();
    let os = fs::read_to_string(root.join("etc/os-release")).unwrap();
    assert!(os.contains("VERSION_ID=\"24.04\"") && os.contains("VERSION_CODENAME=noble"));
    assert!(root.join("etc/apt/sources.list.d").is_dir());
    assert!(root.join("usr/local/bin/apt-get").is_file());
    assert_eq!(
        fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        fs::read_to_string(root.join(guest::image::MARKER)).unwrap(),
        guest::image::MARKER_TEXT
    );
    // extracting into a non-empty rootfs is refused
    let err = guest::extract_ostemplate(image(), &root).unwrap_err();
    assert!(format!("{err:#}").contains("not empty"), "{err:#}");
}

#[test]
fn extract_missing_template_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = guest::extract_ostemplate(&dir.path().join("nope.tar.zst"), dir.path()).unwrap_err();
    assert!(format!("{err:#}").contains("nope.tar.zst"), "{err:#}");
}

#[test]
fn exec_exit_codes() {
    let Some(ct) = ct(&[]) else { return };
    assert_eq!(ct.run(&["true"]), 0);
    assert_eq!(ct.run(&["false"]), 1);
    assert_eq!(ct.run(&["bash", "-c", "exit 42"]), 42);
    assert_eq!(ct.run(&["no-such-command-here"]), 127);
    assert_eq!(ct.run(&["/etc/os-release"]), 126);
    assert_eq!(ct.run(&["uptime"]), 0);
}

#[test]
fn exec_writes_land_in_rootfs() {
    let Some(ct) = ct(&[]) else { return };
    let marker = format!("pve-sim-test-{}", std::process::id());
    let out = ct.sh_ok(&format!(
        "echo {marker} > /etc/{marker}; cat /etc/hostname; grep VERSION_CODENAME /etc/os-release; echo $PATH; echo $HOME; pwd"
    ));
    assert!(ct.root().join("etc").join(&marker).is_file());
    assert!(
        !Path::new("/etc").join(&marker).exists(),
        "write leaked onto the machine"
    );
    assert!(out.contains("VERSION_CODENAME=noble"), "{out}");
    assert!(out.contains("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    assert!(out.contains("\n/root\n/\n"), "{out}");
    // the machine's /usr is read-only inside
    let (code, _) = ct.sh("touch /usr/bin/pve-sim-should-fail");
    assert_ne!(code, 0);
    assert!(!Path::new("/usr/bin/pve-sim-should-fail").exists());
    // /usr/local is the guest's own
    ct.sh_ok("touch /usr/local/bin/mine");
    assert!(ct.root().join("usr/local/bin/mine").exists());
}

#[test]
fn exec_leaves_no_mounts() {
    let Some(ct) = ct(&["/dev/nvidia0"]) else {
        return;
    };
    assert_eq!(ct.run(&["true"]), 0);
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = ct.root().to_string_lossy().to_string();
    assert!(!mounts.contains(&root), "mounts leaked:\n{mounts}");
    // and the rootfs's own /dev and /proc stay empty directories
    assert_eq!(fs::read_dir(ct.root().join("dev")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(ct.root().join("proc")).unwrap().count(), 0);
}

#[test]
fn devices_appear_only_when_given() {
    let Some(with) = ct(&["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-caps"]) else {
        return;
    };
    let out = with.sh_ok("ls /dev; test -d /dev/nvidia-caps && echo caps-dir");
    assert!(
        out.contains("nvidia0") && out.contains("nvidiactl") && out.contains("caps-dir"),
        "{out}"
    );
    assert!(out.contains("null") && out.contains("urandom"), "{out}");
    let without = ct(&[]).unwrap();
    let out = without.sh_ok("ls /dev");
    assert!(!out.contains("nvidia"), "{out}");
    // a configured device missing on the host is skipped (lxc `optional`)
    let mut ctx = without.ctx.clone();
    ctx.devices.push(DeviceBind {
        host_path: "/dev/nvidia7".into(),
        guest_path: "/dev/nvidia7".into(),
    });
    assert_eq!(
        guest::exec(&ctx, &["test".into(), "-e".into(), "/dev/nvidia7".into()]),
        1
    );
    let _ = without.host();
}

#[test]
fn concurrent_execs() {
    let Some(ct) = ct(&["/dev/nvidia0"]) else {
        return;
    };
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let ct = &ct;
                s.spawn(move || {
                    ct.run(&[
                        "bash",
                        "-c",
                        &format!("sleep 0.3; test -e /dev/nvidia0 && echo {i} > /tmp/c{i}"),
                    ])
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), 0);
        }
    });
    for i in 0..4 {
        assert_eq!(
            fs::read_to_string(ct.root().join(format!("tmp/c{i}")))
                .unwrap()
                .trim(),
            i.to_string()
        );
    }
}

#[test]
fn exec_overhead_is_small() {
    let Some(ct) = ct(&["/dev/nvidia0"]) else {
        return;
    };
    let n = 20;
    let t = std::time::Instant::now();
    for _ in 0..n {
        assert_eq!(ct.run(&["true"]), 0);
    }
    let per = t.elapsed() / n;
    eprintln!("per-exec wall time (guest `true`): {per:?}");
    assert!(per < std::time::Duration::from_millis(200), "{per:?}");
}

#[test]
fn push_and_pull() {
    let Some(ct) = ct(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    fs::write(&src, "hello\n").unwrap();
    guest::push(&ct.ctx, &src, "/root/f", None, None, Some(0o600)).unwrap();
    let out = ct.sh_ok("stat -c %a /root/f; cat /root/f");
    assert_eq!(out, "600\nhello\n");
    // a guest symlink pointing at an absolute machine path resolves inside the rootfs
    std::os::unix::fs::symlink("/etc", ct.root().join("root/etc-link")).unwrap();
    guest::push(&ct.ctx, &src, "/root/etc-link/pushed", None, None, None).unwrap();
    assert!(ct.root().join("etc/pushed").is_file());
    assert!(!Path::new("/etc/pushed").exists());
    // missing parent directory fails
    assert!(guest::push(&ct.ctx, &src, "/nope/dir/f", None, None, None).is_err());
    assert!(guest::push(&ct.ctx, &src, "relative", None, None, None).is_err());
    let back = dir.path().join("os-release");
    guest::pull(&ct.ctx, "/etc/os-release", &back, None, None, Some(0o640)).unwrap();
    assert!(fs::read_to_string(&back).unwrap().contains("noble"));
    assert!(guest::pull(&ct.ctx, "/etc/missing", &back, None, None, None).is_err());
}
