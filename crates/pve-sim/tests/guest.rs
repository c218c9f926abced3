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
fn hostname_and_users_are_the_guests() {
    let Some(ct) = ct(&[]) else { return };
    guest::set_hostname(ct.root(), "web01.example.com").unwrap();
    assert_eq!(
        fs::read_to_string(ct.root().join("etc/hostname")).unwrap(),
        "web01\n"
    );
    assert!(
        fs::read_to_string(ct.root().join("etc/hosts"))
            .unwrap()
            .contains("\n127.0.1.1 web01.example.com web01\n")
    );
    assert!(guest::set_hostname(ct.root(), "bad_name").is_err());
    let out = ct.sh_ok("hostname; useradd -m -s /bin/bash alice && grep -q '^docker:' /etc/group || groupadd docker; usermod -aG docker alice; id -nG alice; test -d /home/alice && echo home");
    assert_eq!(out, "web01\nalice docker\nhome\n");
    assert!(
        fs::read_to_string(ct.root().join("etc/passwd"))
            .unwrap()
            .contains("alice:")
    );
    assert!(
        !fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains("alice:x:"),
        "useradd leaked onto the machine"
    );
    // with a config file, LXC's uts name is the config's hostname (default CT<vmid>)
    let conf = ct.host().join("etc/pve/lxc/100.conf");
    fs::create_dir_all(conf.parent().unwrap()).unwrap();
    fs::write(
        &conf,
        "hostname: db01\nmemory: 512\n\n[snap]\nhostname: old\n",
    )
    .unwrap();
    assert_eq!(ct.sh_ok("hostname"), "db01\n");
    fs::write(&conf, "memory: 512\n").unwrap();
    assert_eq!(ct.sh_ok("hostname"), "CT100\n");
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
    // nested guest paths get their parent directories; bad targets are refused
    fs::create_dir_all(without.host().join("dev/dri")).unwrap();
    fs::write(without.host().join("dev/dri/renderD128"), b"").unwrap();
    ctx.devices = vec![DeviceBind {
        host_path: "/dev/dri/renderD128".into(),
        guest_path: "/dev/dri/renderD128".into(),
    }];
    assert_eq!(
        guest::exec(
            &ctx,
            &["test".into(), "-e".into(), "/dev/dri/renderD128".into()]
        ),
        0
    );
    ctx.devices[0].guest_path = "/dev".into();
    assert_eq!(guest::exec(&ctx, &["true".into()]), 255);
    ctx.devices[0].guest_path = "/dev/../etc/x".into();
    assert_eq!(guest::exec(&ctx, &["true".into()]), 255);
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
    let t = std::time::Instant::now();
    for _ in 0..n {
        assert!(
            std::process::Command::new("true")
                .status()
                .unwrap()
                .success()
        );
    }
    let plain = t.elapsed() / n;
    eprintln!("per-exec wall time (guest `true`): {per:?}; plain spawn of `true`: {plain:?}");
    assert!(per < std::time::Duration::from_millis(200), "{per:?}");
}

#[test]
fn guest_symlinks_cannot_redirect_host_writes() {
    let Some(ct) = ct(&[]) else { return };
    // a guest whose /run points at an absolute path: exec's own marker stays in the rootfs
    let victim = ct.host().join("victim");
    fs::create_dir_all(&victim).unwrap();
    fs::remove_dir_all(ct.root().join("run")).unwrap();
    std::os::unix::fs::symlink(&victim, ct.root().join("run")).unwrap();
    assert_eq!(ct.run(&["true"]), 0);
    assert!(
        !victim.join("pve-sim").exists(),
        "exec wrote through a guest symlink"
    );
    assert!(
        ct.root()
            .join(victim.strip_prefix("/").unwrap())
            .join("pve-sim/unprivileged")
            .exists()
    );
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
    // the machine's /usr is read-only inside, so is it for push
    let err = guest::push(&ct.ctx, &src, "/usr/bin/pushed", None, None, None).unwrap_err();
    assert!(
        format!("{err:#}").contains("Read-only file system"),
        "{err:#}"
    );
    if Path::new("/usr/share/keyrings").is_dir() {
        guest::push(
            &ct.ctx,
            &src,
            "/usr/share/keyrings/pushed.gpg",
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(ct.sh_ok("cat /usr/share/keyrings/pushed.gpg"), "hello\n");
        assert!(!Path::new("/usr/share/keyrings/pushed.gpg").exists());
    }
    let back = dir.path().join("os-release");
    guest::pull(&ct.ctx, "/etc/os-release", &back, None, None, Some(0o640)).unwrap();
    assert!(fs::read_to_string(&back).unwrap().contains("noble"));
    assert!(guest::pull(&ct.ctx, "/etc/missing", &back, None, None, None).is_err());
}

/// Keyring directory for repository setup in tests: NVIDIA's docs use /usr/share/keyrings,
/// which the guest can write only where the machine has that directory to mount over.
fn keyring_dir() -> &'static str {
    if Path::new("/usr/share/keyrings").is_dir() {
        "/usr/share/keyrings"
    } else {
        "/etc/apt/keyrings"
    }
}

const DOCKER_REPO: &str = "set -e
curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o /etc/apt/keyrings/docker.asc
echo \"deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu $(. /etc/os-release && echo $VERSION_CODENAME) stable\" > /etc/apt/sources.list.d/docker.list
";

fn install_docker(ct: &Ct) {
    ct.sh_ok(&format!(
        "{DOCKER_REPO}apt-get update -qq; apt-get install -y docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin </dev/null"
    ));
}

fn nvidia_repo(kr: &str) -> String {
    format!(
        "set -e
apt-get install -y gnupg </dev/null
curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --dearmor -o {kr}/nvidia-container-toolkit-keyring.gpg
curl -s -L https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list | sed 's#deb https://#deb [signed-by={kr}/nvidia-container-toolkit-keyring.gpg] https://#g' > /etc/apt/sources.list.d/nvidia-container-toolkit.list
apt-get update
"
    )
}

#[test]
fn apt_get_catalogue_and_misuse() {
    let Some(ct) = ct(&[]) else { return };
    // a fresh template has no package lists yet
    let (code, out) = ct.sh("apt-get install -y jq </dev/null");
    assert_eq!(code, 100, "{out}");
    assert!(out.contains("E: Unable to locate package jq"), "{out}");
    ct.sh_ok("apt-get update");
    // without -y and no answer on stdin apt aborts
    let (code, out) = ct.sh("apt-get install jq </dev/null");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Do you want to continue? [Y/n] Abort."),
        "{out}"
    );
    let (code, _) = ct.sh("dpkg -s jq");
    assert_eq!(code, 1);
    ct.sh_ok("apt-get install -y jq htop rsync git vim nvtop locales python3-pip </dev/null");
    let out = ct.sh_ok("dpkg-query -W -f='${Status}|${Version}\\n' jq; dpkg -s htop | grep Status; dpkg -l 'nvt*' | tail -n1");
    assert!(out.starts_with("install ok installed|1.7.1"), "{out}");
    assert!(out.contains("Status: install ok installed"), "{out}");
    assert!(out.contains("ii  nvtop"), "{out}");
    // idempotent
    let out = ct.sh_ok("apt-get install -y jq </dev/null");
    assert!(out.contains("jq is already the newest version"), "{out}");
    let (code, out) = ct.sh("apt-get install -y jq no-such-package </dev/null");
    assert_eq!(code, 100);
    assert!(
        out.contains("E: Unable to locate package no-such-package"),
        "{out}"
    );
    // repository packages need their repository
    for p in ["docker-ce", "nvidia-container-toolkit", "cuda-toolkit-12-8"] {
        let (code, out) = ct.sh(&format!("apt-get install -y {p} </dev/null"));
        assert_eq!(code, 100, "{p}: {out}");
        assert!(
            out.contains(&format!("Unable to locate package {p}")),
            "{out}"
        );
    }
    ct.sh_ok("apt-get remove -y jq </dev/null; apt-get upgrade -y");
    let (code, _) = ct.sh("dpkg-query -W jq");
    assert_eq!(code, 1);
    let (code, out) = ct.sh("apt-get frobnicate");
    assert_eq!(code, 100, "{out}");
}

#[test]
fn apt_repo_without_key_fails_update() {
    let Some(ct) = ct(&[]) else { return };
    ct.sh_ok("echo 'deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu noble stable' > /etc/apt/sources.list.d/docker.list");
    let (code, out) = ct.sh("apt-get update");
    assert_eq!(code, 100, "{out}");
    assert!(out.contains("NO_PUBKEY"), "{out}");
    ct.sh_ok("rm /etc/apt/sources.list.d/docker.list; echo 'deb http://ppa.example.org/x noble main' > /etc/apt/sources.list.d/x.list");
    let (code, out) = ct.sh("apt-get update");
    assert_eq!(code, 100, "{out}");
    assert!(
        out.contains("Temporary failure resolving 'ppa.example.org'"),
        "{out}"
    );
}

#[test]
fn systemctl_units() {
    let Some(ct) = ct(&[]) else { return };
    let (code, out) = ct.sh("systemctl enable docker");
    assert_eq!(code, 1);
    assert!(
        out.contains("Failed to enable unit: Unit file docker.service does not exist."),
        "{out}"
    );
    let (code, out) = ct.sh("systemctl start nope.service");
    assert_eq!(code, 5, "{out}");
    let (code, out) = ct.sh("systemctl is-active nope");
    assert_eq!((code, out.trim()), (3, "inactive"));
    // an admin unit whose program is missing fails to start
    ct.sh_ok("printf '[Service]\\nExecStart=/opt/app/bin/serve --port 8000\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/app.service; systemctl daemon-reload; systemctl enable app");
    assert!(
        ct.root()
            .join("etc/systemd/system/multi-user.target.wants/app.service")
            .is_symlink()
    );
    let (code, out) = ct.sh("systemctl start app");
    assert_eq!(code, 1, "{out}");
    let (code, out) = ct.sh("curl -fsS http://localhost:8000/health");
    assert_eq!(code, 7, "{out}");
    ct.sh_ok("mkdir -p /opt/app/bin; printf '#!/bin/sh\\n' > /opt/app/bin/serve; chmod +x /opt/app/bin/serve; systemctl restart app");
    let out = ct.sh_ok("systemctl is-active app; systemctl is-enabled app; curl -s -w ' %{http_code}' http://127.0.0.1:8000/v1/models");
    assert!(out.starts_with("active\nenabled\n{"), "{out}");
    assert!(out.ends_with(" 200"), "{out}");
    ct.sh_ok("systemctl disable --now app");
    let (code, _) = ct.sh("systemctl is-active app");
    assert_eq!(code, 3);
}

#[test]
fn guest_curl_is_offline() {
    let Some(ct) = ct(&[]) else { return };
    let (code, out) = ct.sh("curl -fsSL https://example.com/install.sh");
    assert_eq!(code, 6);
    assert_eq!(out.trim(), "curl: (6) Could not resolve host: example.com");
    let (code, out) = ct.sh("curl -s https://example.com/install.sh");
    assert_eq!((code, out.as_str()), (6, ""));
    let (code, out) = ct.sh("curl -fsS https://download.docker.com/linux/ubuntu/nope");
    assert_eq!(code, 22, "{out}");
    let (code, out) = ct.sh("wget -q https://example.com/x");
    assert_eq!(code, 4, "{out}");
    let (code, out) = ct.sh("gpg --dearmor -o /tmp/k.gpg < /etc/hostname");
    assert_eq!(code, 127, "gnupg is not installed yet: {out}");
}

#[test]
fn docker_flow() {
    let Some(ct) = ct(&[]) else { return };
    let (code, out) = ct.sh("docker ps");
    assert_eq!(code, 127, "{out}");
    ct.sh_ok("apt-get update");
    let (code, _) = ct.sh(&format!(
        "{DOCKER_REPO}apt-get install -y docker-ce </dev/null"
    ));
    assert_eq!(
        code, 100,
        "install before apt-get update after adding the repo must fail"
    );
    install_docker(&ct);
    let out = ct.sh_ok("useradd -m bob && usermod -aG docker bob && id -nG bob");
    assert_eq!(out, "bob docker\n");
    let out = ct.sh_ok("systemctl is-active docker; systemctl is-enabled docker; docker info --format '{{.Driver}}'; docker info | grep 'Storage Driver'; docker version --format '{{.Server.Version}}'; docker compose version");
    assert!(
        out.starts_with("active\nenabled\noverlay2\n Storage Driver: overlay2\n28."),
        "{out}"
    );
    ct.sh_ok("docker volume create portainer_data");
    let id = ct.sh_ok("docker run -d -p 8000:8000 -p 9443:9443 --name portainer --restart=always -v /var/run/docker.sock:/var/run/docker.sock -v portainer_data:/data portainer/portainer-ce:2.21.5 2>/dev/null");
    assert_eq!(id.trim().len(), 64, "{id}");
    let out = ct.sh_ok("docker ps --filter name=^portainer$ --format '{{.Names}} {{.Image}} {{.State}}'; docker inspect -f '{{.State.Running}} {{.HostConfig.RestartPolicy.Name}}' portainer; curl -ks -o /dev/null -w '%{http_code}' https://localhost:9443/");
    assert_eq!(
        out,
        "portainer portainer/portainer-ce:2.21.5 running\ntrue always\n200"
    );
    ct.sh_ok("docker run -d -p 9001:9001 --name portainer_agent --restart=always -v /var/run/docker.sock:/var/run/docker.sock -v /var/lib/docker/volumes:/var/lib/docker/volumes portainer/agent:2.21.5");
    assert!(
        ct.root().join("run/docker.sock").is_file(),
        "the socket stays a socket, not a directory"
    );
    // name filters match like docker's (unanchored regular expression)
    let out = ct.sh_ok("docker ps --filter name=portainer --format '{{.Names}}' | sort");
    assert_eq!(out, "portainer\nportainer_agent\n");
    let (code, out) = ct.sh("docker run -d --name portainer portainer/portainer-ce:2.21.5");
    assert_eq!(code, 125);
    assert!(out.contains("is already in use"), "{out}");
    let (code, out) = ct.sh("docker run -d --name other -p 9443:9443 nginx");
    assert_eq!(code, 125);
    assert!(out.contains("port is already allocated"), "{out}");
    // `--pull never` uses only a local image (docker's "No such image"); `missing` pulls.
    let (code, out) = ct.sh("docker run --rm --pull=never hello-world");
    assert_eq!(code, 125, "{out}");
    assert!(out.contains("No such image: hello-world:latest"), "{out}");
    ct.sh_ok("docker run --rm --pull missing hello-world");
    ct.sh_ok("docker run --rm --pull never hello-world");
    let (code, out) = ct.sh("docker run --rm --pull sometimes hello-world");
    assert_eq!(code, 125);
    assert!(out.contains("invalid pull option"), "{out}");
    let (code, out) =
        ct.sh("docker run --rm --gpus all nvidia/cuda:12.8.0-base-ubuntu24.04 nvidia-smi");
    assert_eq!(code, 125, "no nvidia runtime: {out}");
    let (code, out) = ct.sh("docker rm portainer");
    assert_eq!(code, 1);
    assert!(out.contains("container is running"), "{out}");
    ct.sh_ok("docker rm -f portainer");
    let (code, out) = ct.sh("docker inspect portainer");
    assert_eq!(code, 1);
    assert!(out.contains("No such object: portainer"), "{out}");
    // the daemon must be running
    ct.sh_ok("systemctl stop docker");
    let (code, out) = ct.sh("docker ps");
    assert_eq!(code, 1);
    assert!(out.contains("Is the docker daemon running?"), "{out}");
}

#[test]
fn docker_needs_nesting_and_keyctl() {
    let Some(ct) = ct(&[]) else { return };
    ct.sh_ok("apt-get update");
    install_docker(&ct);
    let conf = ct.host().join("etc/pve/lxc/100.conf");
    fs::create_dir_all(conf.parent().unwrap()).unwrap();
    // features in a snapshot section do not count: only the main section does
    fs::write(
        &conf,
        "arch: amd64\nunprivileged: 1\n\n[snap]\nfeatures: keyctl=1,nesting=1\n",
    )
    .unwrap();
    let (code, out) = ct.sh("docker run -d --name a nginx");
    assert_eq!(code, 126);
    assert!(out.contains("error mounting \"proc\""), "{out}");
    fs::write(&conf, "arch: amd64\nfeatures: nesting=1\nunprivileged: 1\n").unwrap();
    let (code, out) = ct.sh("docker run -d --name a nginx");
    assert_eq!(code, 126);
    assert!(out.contains("session keyring"), "{out}");
    fs::write(
        &conf,
        "arch: amd64\nfeatures: keyctl=1,nesting=1\nunprivileged: 1\n",
    )
    .unwrap();
    ct.sh_ok("docker run -d --name a nginx");
    // a privileged CT needs nesting only
    let mut privileged = ct.ctx.clone();
    privileged.unprivileged = false;
    fs::write(&conf, "arch: amd64\nfeatures: nesting=1\n").unwrap();
    let argv: Vec<String> = ["docker", "run", "-d", "--name", "b", "nginx"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(guest::exec(&privileged, &argv), 0);
}

#[test]
fn nvidia_container_toolkit_flow() {
    let Some(ct) = ct(&["/dev/nvidia0", "/dev/nvidiactl"]) else {
        return;
    };
    ct.sh_ok("apt-get update");
    install_docker(&ct);
    let (code, _) = ct.sh("nvidia-ctk --version");
    assert_eq!(code, 127);
    ct.sh_ok(&nvidia_repo(keyring_dir()));
    ct.sh_ok("apt-get install -y nvidia-container-toolkit </dev/null");
    ct.sh_ok("echo '{\"log-driver\": \"json-file\"}' > /etc/docker/daemon.json; nvidia-ctk runtime configure --runtime=docker");
    let daemon: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(ct.root().join("etc/docker/daemon.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        daemon["log-driver"], "json-file",
        "merge keeps existing keys"
    );
    assert_eq!(
        daemon["runtimes"]["nvidia"]["path"],
        "nvidia-container-runtime"
    );
    // docker reads daemon.json at start only
    let out = ct.sh_ok("docker info --format '{{json .Runtimes}}'");
    assert!(!out.contains("nvidia"), "{out}");
    ct.sh_ok("systemctl restart docker");
    let out = ct.sh_ok("docker info --format '{{json .Runtimes}}'");
    assert!(out.contains("\"nvidia\""), "{out}");
    // unprivileged: GPU containers need no-cgroups under [nvidia-container-cli]
    let (code, out) = ct.sh("docker run --rm --gpus all nvidia/cuda:12.8.0-base-ubuntu24.04 true");
    assert_eq!(code, 125);
    assert!(out.contains("failed to add device rules"), "{out}");
    ct.sh_ok("nvidia-ctk config --set nvidia-container-cli.no-cgroups=true --in-place");
    let toml =
        fs::read_to_string(ct.root().join("etc/nvidia-container-runtime/config.toml")).unwrap();
    let section = toml
        .split("[nvidia-container-cli]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    assert!(section.contains("\nno-cgroups = true\n"), "{toml}");
    assert_eq!(toml.matches("no-cgroups").count(), 1, "{toml}");
    ct.sh_ok("docker run --rm --gpus all nvidia/cuda:12.8.0-base-ubuntu24.04 true");
    let (code, out) = ct.sh("nvidia-ctk runtime configure --runtime=podman");
    assert_eq!(code, 1, "{out}");
}

#[test]
fn nvidia_runfile_flow() {
    let Some(ct) = ct(&[
        "/dev/nvidia0",
        "/dev/nvidia1",
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
    ]) else {
        return;
    };
    let version = "570.148.08";
    let host_file = ct.host().join(format!("NVIDIA-Linux-x86_64-{version}.run"));
    // the host-side curl stand-in serves the runfile double
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_curl"))
        .env("PHOENIX_HOST_ROOT", ct.host())
        .args(["-fsSL", "--retry", "3", "-o"])
        .arg(&host_file)
        .arg(format!(
            "https://us.download.nvidia.com/XFree86/Linux-x86_64/{version}/NVIDIA-Linux-x86_64-{version}.run"
        ))
        .status()
        .unwrap();
    assert!(st.success());
    guest::push(
        &ct.ctx,
        &host_file,
        "/root/nvidia.run",
        None,
        None,
        Some(0o755),
    )
    .unwrap();
    let (code, _) = ct.sh("nvidia-smi");
    assert_eq!(code, 127, "no user space yet");
    let (code, out) = ct.sh("/root/nvidia.run --silent");
    assert_eq!(code, 1);
    assert!(out.contains("kernel source tree"), "{out}");
    let (code, out) = ct.sh("sh /root/nvidia.run --silent --bogus-flag");
    assert_eq!(code, 1, "{out}");
    ct.sh_ok("/root/nvidia.run --silent --no-kernel-module --no-x-check --no-nouveau-check --no-nvidia-modprobe --no-dkms");
    let out = ct.sh_ok("nvidia-smi --query-gpu=driver_version --format=csv,noheader");
    assert_eq!(out, format!("{version}\n{version}\n"));
    // host module version visible inside: equal -> fine, different -> NVML mismatch
    fs::create_dir_all(ct.host().join("proc/driver/nvidia")).unwrap();
    let nv = ct.host().join("proc/driver/nvidia/version");
    fs::write(
        &nv,
        format!("NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Tue Apr 1 2025\n"),
    )
    .unwrap();
    let (code, out) = ct.sh("cat /proc/driver/nvidia/version; nvidia-smi -L");
    if code == 0 {
        assert!(out.contains("GPU 1:"), "{out}");
        fs::write(
            &nv,
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.148.06  Tue Apr 1 2025\n",
        )
        .unwrap();
        let (code, out) = ct.sh("nvidia-smi");
        assert_eq!(code, 18, "{out}");
        assert!(out.contains("Driver/library version mismatch"), "{out}");
    } else {
        eprintln!("note: /proc/driver overmount unavailable here: {out}");
    }
    // bound by raw lxc.mount.entry lines without a cgroup rule the nodes cannot be opened
    let conf = ct.host().join("etc/pve/lxc/100.conf");
    fs::create_dir_all(conf.parent().unwrap()).unwrap();
    fs::write(
        &conf,
        "arch: amd64\nlxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n",
    )
    .unwrap();
    let (code, out) = ct.sh("nvidia-smi -L");
    assert_eq!(code, 255, "{out}");
    assert_eq!(out, "Failed to initialize NVML: Unknown Error\n");
    fs::write(
        &conf,
        "arch: amd64\nlxc.cgroup2.devices.allow: c 195:* rwm\n",
    )
    .unwrap();
    let (code, out) = ct.sh("nvidia-smi -L");
    assert!(code == 0 || code == 18, "{out}");
    fs::remove_file(&conf).unwrap();
    // without the device nodes the driver cannot be reached
    let mut bare = ct.ctx.clone();
    bare.devices.clear();
    let code = guest::exec(
        &bare,
        &[
            "bash".into(),
            "-c".into(),
            "nvidia-smi > /tmp/smi 2>&1".into(),
        ],
    );
    assert_eq!(code, 9);
    let out = fs::read_to_string(ct.root().join("tmp/smi")).unwrap();
    assert!(
        out.starts_with(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"
        ),
        "{out}"
    );
}

#[test]
fn cuda_drivers_breaks_user_space() {
    let Some(ct) = ct(&["/dev/nvidia0", "/dev/nvidiactl"]) else {
        return;
    };
    fs::write(
        ct.root().join("root/x.run"),
        guest::runfile::script("570.148.08"),
    )
    .unwrap();
    ct.sh_ok("sh /root/x.run --silent --no-kernel-module; apt-get update");
    // cuda repository via the keyring package, then the toolkit is fine
    ct.sh_ok("wget -q https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb && dpkg -i cuda-keyring_1.1-1_all.deb && apt-get update && apt-get install -y cuda-toolkit-12-8 </dev/null");
    let out = ct.sh_ok(
        "nvidia-smi --query-gpu=driver_version --format=csv,noheader; /usr/local/cuda/bin/nvcc --version | tail -n1",
    );
    assert_eq!(
        out,
        "570.148.08\nCuda compilation tools, release 12.8, V12.8.1\n"
    );
    ct.sh_ok("apt-get install -y cuda-drivers </dev/null");
    let (code, out) = ct.sh("nvidia-smi --query-gpu=driver_version --format=csv,noheader");
    assert_eq!(
        code, 18,
        "cuda-drivers must visibly break the user space: {out}"
    );
    assert!(out.contains("Driver/library version mismatch"), "{out}");
    // the runfile (re)installs the matched user space
    ct.sh_ok("sh /root/x.run --silent --no-kernel-module");
    let out = ct.sh_ok("nvidia-smi --query-gpu=driver_version --format=csv,noheader");
    assert_eq!(out, "570.148.08\n");
}

#[test]
fn python_venv_and_pip() {
    let Some(ct) = ct(&[]) else { return };
    if !Path::new("/usr/bin/python3").exists() {
        eprintln!("SKIP: no /usr/bin/python3 on this machine");
        return;
    }
    ct.sh_ok("apt-get update");
    let (code, out) = ct.sh("python3 -m venv /opt/vllm");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ensurepip is not"), "{out}");
    ct.sh_ok("apt-get install -y python3-venv python3-pip </dev/null; python3 -m venv /opt/vllm");
    ct.sh_ok("/opt/vllm/bin/pip install --upgrade pip && /opt/vllm/bin/pip install vllm");
    let out = ct.sh_ok(
        "/opt/vllm/bin/python -c 'import vllm, sys; print(vllm.__version__, sys.prefix)'; /opt/vllm/bin/vllm --version",
    );
    assert_eq!(out, "0.10.1.1 /opt/vllm\nvllm 0.10.1.1 (pve-sim stub)\n");
    let out = ct
        .sh_ok("/opt/vllm/bin/python -m pip show vllm | head -n2; /opt/vllm/bin/pip install vllm");
    assert!(
        out.contains("Name: vllm") && out.contains("Requirement already satisfied"),
        "{out}"
    );
    let (code, out) = ct.sh("/opt/vllm/bin/pip show nothere");
    assert_eq!(code, 1, "{out}");
    let (code, out) = ct.sh("pip install requests");
    assert_eq!(code, 1);
    assert!(out.contains("externally-managed-environment"), "{out}");
    let (code, _) = ct.sh("python3 -c 'import vllm'");
    assert_ne!(
        code, 0,
        "the venv package must not leak into the system python"
    );
}

#[test]
fn locales() {
    let Some(ct) = ct(&[]) else { return };
    let (code, out) = ct.sh("update-locale LANG=en_US.UTF-8");
    assert_eq!(code, 1, "not generated yet: {out}");
    ct.sh_ok("locale-gen en_US.UTF-8 && update-locale LANG=en_US.UTF-8");
    assert_eq!(
        fs::read_to_string(ct.root().join("etc/default/locale")).unwrap(),
        "LANG=en_US.UTF-8\n"
    );
    let (code, _) = ct.sh("locale-gen 'bad;locale'");
    assert_eq!(code, 1);
}

#[test]
fn boot_restores_enabled_services() {
    let Some(ct) = ct(&[]) else { return };
    ct.sh_ok("apt-get update");
    install_docker(&ct);
    ct.sh_ok("docker run -d --name keep --restart unless-stopped nginx; docker run -d --name gone nginx; docker run -d --name stopped --restart unless-stopped nginx; docker stop stopped; touch /run/scratch");
    guest::boot(ct.root()).unwrap();
    assert!(!ct.root().join("run/scratch").exists());
    let out = ct
        .sh_ok("systemctl is-active docker; docker ps -a --format '{{.Names}} {{.State}}' | sort");
    assert_eq!(out, "active\ngone exited\nkeep running\nstopped exited\n");
}

#[test]
fn host_curl_stand_in() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_curl");
    let out = std::process::Command::new(bin)
        .env_remove("PHOENIX_HOST_ROOT")
        .arg("https://x/y")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(bin)
        .env("PHOENIX_HOST_ROOT", "/")
        .arg("https://x/y")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(bin)
        .env("PHOENIX_HOST_ROOT", dir.path())
        .args(["-fsSL", "https://download.docker.com/linux/ubuntu/gpg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "curl: (6) Could not resolve host: download.docker.com\n"
    );
    let target = dir.path().join("cache/NVIDIA-Linux-x86_64-550.54.15.run");
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    let out = std::process::Command::new(bin)
        .env("PHOENIX_HOST_ROOT", dir.path())
        .args(["--fail", "--silent", "--show-error", "--location", "--connect-timeout", "10", "--output"])
        .arg(&target)
        .arg("https://us.download.nvidia.com/XFree86/Linux-x86_64/550.54.15/NVIDIA-Linux-x86_64-550.54.15.run")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fs::read_to_string(&target)
            .unwrap()
            .contains("VERSION=550.54.15")
    );
    let journal = fs::read_to_string(dir.path().join("var/log/pve-sim/journal.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["exit"], 6);
    assert_eq!(lines[0]["argv"][0], "curl");
    assert_eq!(lines[1]["exit"], 0);
    assert_eq!(lines[1]["mutating"], false);
    assert!(lines[1]["end_ms"].as_u64() >= lines[1]["start_ms"].as_u64());
}

/// Timing of common idempotency checks through the doubles (`cargo test -- --ignored --nocapture`).
#[test]
#[ignore]
fn bench_doubles() {
    let Some(ct) = ct(&[]) else { return };
    ct.sh_ok("apt-get update");
    install_docker(&ct);
    for argv in [
        &["true"][..],
        &["dpkg", "-s", "docker-ce"],
        &["systemctl", "is-active", "docker"],
        &["apt-get", "install", "-y", "curl"],
        &["docker", "ps", "--format", "{{.Names}}"],
        &["docker", "info", "--format", "{{json .Runtimes}}"],
    ] {
        let t = std::time::Instant::now();
        for _ in 0..5 {
            ct.run(&[&["bash", "-c", "\"$@\" >/dev/null 2>&1", "_"][..], argv].concat());
        }
        eprintln!("{:?}: {:?}", argv, t.elapsed() / 5);
    }
}

/// Cost of writing and extracting the image (`cargo test -- --ignored --nocapture`).
#[test]
#[ignore]
fn bench_image() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t.tar.zst");
    let t = std::time::Instant::now();
    guest::write_ostemplate(&p).unwrap();
    let w = t.elapsed();
    let r = d.path().join("r");
    fs::create_dir(&r).unwrap();
    let t = std::time::Instant::now();
    guest::extract_ostemplate(&p, &r).unwrap();
    eprintln!(
        "write_ostemplate {w:?}, extract {:?}, size {} bytes",
        t.elapsed(),
        fs::metadata(&p).unwrap().len()
    );
}
