//! Conformance of the simulated `pct`/`pvesm`/`pveversion`/`pve-sim` binaries with Proxmox
//! (`proxmox.md`): each test runs the built binaries in a fresh host root and checks exit
//! code, stdout/stderr, the resulting config files, storage and the journal.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TPL: &str = "/fastData/shared-iso/template/cache/ubuntu-24.04-standard_24.04-2_amd64.tar.zst";

#[derive(Debug)]
struct Out {
    code: i32,
    out: String,
    err: String,
}

impl Out {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }
    #[track_caller]
    fn fails(self, code: i32, stderr: &str) -> Self {
        assert_eq!(self.code, code, "exit code: {self:?}");
        assert_eq!(self.err, stderr, "stderr: {self:?}");
        self
    }
    #[track_caller]
    fn dies(self, msg: &str) -> Self {
        self.fails(255, &format!("{msg}\n"))
    }
}

/// A simulated host in a temporary directory.
struct Sim {
    dir: tempfile::TempDir,
}

fn bin(name: &str) -> &'static str {
    match name {
        "pct" => env!("CARGO_BIN_EXE_pct"),
        "pvesm" => env!("CARGO_BIN_EXE_pvesm"),
        "pveversion" => env!("CARGO_BIN_EXE_pveversion"),
        "pve-sim" => env!("CARGO_BIN_EXE_pve-sim"),
        _ => unreachable!(),
    }
}

impl Sim {
    fn new() -> Sim {
        Sim::with(&[])
    }
    /// `pve-sim init` with the reference-config defaults plus `extra`.
    fn with(extra: &[&str]) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("host");
        let mut args = vec!["init", "--host-root", root.to_str().unwrap(), "--reference"];
        args.extend_from_slice(extra);
        let o = Command::new(bin("pve-sim")).args(&args).output().unwrap();
        assert!(
            o.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Sim { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("host")
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel.trim_start_matches('/'))
    }
    fn run(&self, tool: &str, args: &[&str]) -> Out {
        let o = Command::new(bin(tool))
            .args(args)
            .env("PHOENIX_HOST_ROOT", self.root())
            .env("TZ", "UTC")
            .output()
            .unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    fn pct(&self, args: &[&str]) -> Out {
        self.run("pct", args)
    }
    fn conf(&self, id: u32) -> String {
        fs::read_to_string(self.path(&format!("etc/pve/lxc/{id}.conf"))).unwrap()
    }
    fn has_conf(&self, id: u32) -> bool {
        self.path(&format!("etc/pve/lxc/{id}.conf")).exists()
    }
    fn write_conf(&self, id: u32, text: &str) {
        fs::write(self.path(&format!("etc/pve/lxc/{id}.conf")), text).unwrap();
    }
    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    /// Standard CT on the zfspool storage.
    fn create(&self, id: u32, extra: &[&str]) -> Out {
        let ids = id.to_string();
        let mut a = vec![
            "create",
            &ids,
            TPL,
            "--storage",
            "lxc-disks",
            "--rootfs",
            "lxc-disks:8",
        ];
        a.extend_from_slice(extra);
        self.pct(&a)
    }
    fn vol(&self, store: &str, name: &str) -> PathBuf {
        self.path(&format!("var/lib/pve-sim/storage/{store}/vols/{name}"))
    }
    fn journal(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.path("var/log/pve-sim/journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn conf_line<'a>(conf: &'a str, key: &str) -> Option<&'a str> {
    conf.lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
}

fn exec_ok() -> bool {
    match pve_sim::guest::exec_available() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIP: guest exec unavailable: {e:#}");
            false
        }
    }
}

// ------------------------------------------------------------------ init / host

#[test]
fn init_lays_out_host() {
    let s = Sim::new();
    assert_eq!(
        fs::read_to_string(s.path("etc/pve/storage.cfg")).unwrap(),
        "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\nzfspool: local-zfs\n\tpool rpool/data\n\tsparse 1\n\tcontent images,rootdir\n\nzfspool: lxc-disks\n\tpool rpool/lxc-disks\n\tsparse 1\n\tcontent images,rootdir\n"
    );
    assert!(s.path("etc/pve/lxc").is_dir());
    for d in [
        "dev/nvidia0",
        "dev/nvidia1",
        "dev/nvidiactl",
        "dev/nvidia-uvm",
        "dev/nvidia-uvm-tools",
    ] {
        assert!(s.path(d).is_file(), "{d}");
    }
    assert!(!s.path("dev/nvidia2").exists());
    assert!(s.path("dev/nvidia-caps").is_dir());
    let devices = fs::read_to_string(s.path("proc/devices")).unwrap();
    assert!(devices.contains("195 nvidia-frontend\n"));
    let uvm = devices
        .lines()
        .find(|l| l.ends_with(" nvidia-uvm"))
        .unwrap();
    assert_ne!(uvm.trim().split(' ').next().unwrap(), "243");
    let v = fs::read_to_string(s.path("proc/driver/nvidia/version")).unwrap();
    assert!(
        v.starts_with("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.76.05  "),
        "{v}"
    );
    assert!(s.path(TPL).is_file());
}

#[test]
fn init_refuses_existing_root_unless_force() {
    let s = Sim::new();
    let root = s.root();
    let r = Command::new(bin("pve-sim"))
        .args(["init", "--host-root", root.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--force"));
    s.create(100, &[]).ok();
    let r = Command::new(bin("pve-sim"))
        .args(["init", "--host-root", root.to_str().unwrap(), "--force"])
        .output()
        .unwrap();
    assert!(r.status.success());
    assert!(!s.has_conf(100), "--force starts a fresh host");
}

#[test]
fn binaries_refuse_missing_or_slash_host_root() {
    for tool in ["pct", "pvesm", "pveversion"] {
        let o = Command::new(bin(tool))
            .arg("list")
            .env_remove("PHOENIX_HOST_ROOT")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{tool} unset");
        let o = Command::new(bin(tool))
            .arg("list")
            .env("PHOENIX_HOST_ROOT", "/")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{tool} /");
    }
}

#[test]
fn pveversion_format_per_version() {
    let s = Sim::new();
    let o = s.run("pveversion", &[]).ok();
    let re = regex::Regex::new(
        r"^pve-manager/8\.4\.1/[0-9a-f]{16} \(running kernel: 6\.8\.12-4-pve\)\n$",
    )
    .unwrap();
    assert!(re.is_match(&o.out), "{}", o.out);
    let s9 = Sim::with(&["--pve-version", "9.1.1"]);
    assert!(
        s9.run("pveversion", &[])
            .ok()
            .out
            .starts_with("pve-manager/9.1.1/")
    );
}

/// pve-container's `debian/changelog`: the package version each PVE release ships gates its
/// options (`entrypoint`/`env` came with 6.0.15, PVE 9.1), and `pveversion -v` names it.
#[test]
fn options_are_gated_by_the_pve_container_of_the_release() {
    for (ver, pc, has_env) in [
        ("8.0.4", "5.0.3", false),
        ("8.4.1", "5.2.6", false),
        ("9.0.3", "6.0.9", false),
        ("9.1.1", "6.0.18", true),
    ] {
        let s = Sim::with(&["--pve-version", ver]);
        let o = s.run("pveversion", &["-v"]).ok();
        assert!(
            o.out.contains(&format!("\npve-container: {pc}\n")),
            "{ver}: {}",
            o.out
        );
        s.create(100, &[]).ok();
        let o = s.pct(&["set", "100", "--entrypoint", "/bin/sh"]);
        if has_env {
            o.ok();
            s.pct(&["set", "100", "--env", "A=1"]).ok();
        } else {
            assert_eq!(o.code, 255, "{ver}");
            assert!(
                o.err.starts_with("Unknown option: entrypoint\n"),
                "{ver}: {o:?}"
            );
        }
    }
}

// ------------------------------------------------------------------ options

#[test]
fn unknown_option_is_rejected_with_usage() {
    let s = Sim::new();
    s.pct(&["create", "100", TPL, "--storage", "lxc-disks", "--hwaddress", "52:54:00:AA:BB:CC"]).fails(
        255,
        "Unknown option: hwaddress\n400 unable to parse option\npct create <vmid> <ostemplate> [OPTIONS]\n",
    );
    assert!(!s.has_conf(100));
}

#[test]
fn option_forms_and_booleans() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&[
        "set",
        "100",
        "-memory",
        "1024",
        "--cores=2",
        "--onboot",
        "YES",
        "--protection",
        "--console",
        "off",
    ])
    .ok();
    let c = s.conf(100);
    assert_eq!(conf_line(&c, "memory"), Some("1024"));
    assert_eq!(conf_line(&c, "cores"), Some("2"));
    assert_eq!(conf_line(&c, "onboot"), Some("1"));
    assert_eq!(conf_line(&c, "protection"), Some("1"));
    assert_eq!(conf_line(&c, "console"), Some("0"));
}

#[test]
fn bad_boolean_value() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["set", "100", "--onboot", "maybe"]).fails(
        255,
        "400 unable to parse boolean option\npct set <vmid> [OPTIONS]\n",
    );
}

#[test]
fn positional_argument_count() {
    let s = Sim::new();
    s.pct(&["status"]).fails(
        255,
        "400 not enough arguments\npct status <vmid> [OPTIONS]\n",
    );
    s.pct(&["status", "100", "101"])
        .fails(255, "400 too many arguments\npct status <vmid> [OPTIONS]\n");
}

// ------------------------------------------------------------------ schema

#[test]
fn parameter_verification_lists_each_bad_param_and_changes_nothing() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    let before = s.conf(100);
    s.pct(&["set", "100", "--memory", "abc", "--hostname", "a_b"]).fails(
        255,
        "400 Parameter verification failed.\nhostname: invalid format - value does not look like a valid DNS name\n\nmemory: type check ('integer') failed - got 'abc'\npct set <vmid> [OPTIONS]\n",
    );
    assert_eq!(s.conf(100), before);
}

#[test]
fn vmid_format_checked_before_range() {
    let s = Sim::new();
    s.pct(&["status", "99"]).fails(
        255,
        "400 Parameter verification failed.\nvmid: invalid format - value does not look like a valid VM ID\n\npct status <vmid> [OPTIONS]\n",
    );
}

#[test]
fn net_property_string_errors() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    let o = s.pct(&["set", "100", "--net0", "bridge=vmbr0,ip=dhcp"]);
    assert_eq!(o.code, 255);
    assert!(
        o.err.contains("net0: invalid format - format error\n"),
        "{}",
        o.err
    );
    assert!(
        o.err
            .contains("net0.name: property is missing and it is not optional\n")
    );
    let o = s.pct(&["set", "100", "--net0", "name=eth0,hwaddr=01:00:00:00:00:00"]);
    assert!(
        o.err.contains(
            "net0.hwaddr: invalid format - value does not look like a valid unicast MAC address"
        ),
        "{}",
        o.err
    );
    let o = s.pct(&["set", "100", "--net0", "name=eth0,ip="]);
    assert!(
        o.err
            .contains("net0: invalid format - missing key in comma-separated list property\n")
    );
    let o = s.pct(&["set", "100", "--net0", "name=eth0,color=red"]);
    assert!(
        o.err.contains(
            "net0: invalid format - invalid key in comma-separated list property: color\n"
        )
    );
    let o = s.pct(&["set", "100", "--net32", "name=eth0"]);
    assert!(o.err.starts_with("Unknown option: net32\n"));
}

#[test]
fn range_enum_and_length_messages() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    let o = s.pct(&[
        "set", "100", "--tty", "7", "--arch", "sparc", "--memory", "8",
    ]);
    assert_eq!(o.code, 255);
    assert!(
        o.err
            .contains("tty: value must have a maximum value of 6\n")
    );
    assert!(
        o.err
            .contains("memory: value must have a minimum value of 16\n")
    );
    assert!(o.err.contains("arch: value 'sparc' does not have a value in the enumeration 'amd64, i386, arm64, armhf, riscv32, riscv64'\n"));
    let long = "x".repeat(8193);
    let o = s.pct(&["set", "100", "--description", &long]);
    assert!(
        o.err
            .contains("description: value may only be 8192 characters long\n")
    );
}

#[test]
fn snapshot_name_must_be_config_id() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    let o = s.pct(&["snapshot", "100", "1x"]);
    assert_eq!(o.code, 255);
    assert!(
        o.err
            .contains("snapname: invalid format - invalid configuration ID '1x'\n")
    );
}

// ------------------------------------------------------------------ create

#[test]
fn create_writes_v8_defaults() {
    let s = Sim::new();
    let o = s.create(100, &[]).ok();
    assert!(
        o.out.starts_with(&format!("extracting archive '{TPL}'\n")),
        "{}",
        o.out
    );
    assert!(o.out.contains("Detected container architecture: amd64\n"));
    assert_eq!(o.err, "");
    assert_eq!(
        s.conf(100),
        "arch: amd64\nhostname: CT100\nmemory: 512\nostype: ubuntu\nrootfs: lxc-disks:subvol-100-disk-0,size=8G\nswap: 512\n"
    );
    assert!(
        s.vol("lxc-disks", "subvol-100-disk-0")
            .join("etc/os-release")
            .is_file()
    );
}

#[test]
fn create_v9_defaults_unprivileged_and_warns_about_nesting() {
    let s = Sim::with(&["--pve-version", "9.1.1"]);
    let o = s.create(100, &[]).ok();
    assert!(
        o.out
            .contains("WARN: Systemd 255 detected. You may need to enable nesting.\n")
    );
    assert_eq!(o.err, "Task finished with 1 warning(s)!\n");
    assert_eq!(conf_line(&s.conf(100), "unprivileged"), Some("1"));
    let o = s.create(101, &["--features", "keyctl=1,nesting=on"]).ok();
    assert_eq!(o.err, "");
}

#[test]
fn create_needs_rootdir_storage() {
    let s = Sim::new();
    s.pct(&["create", "100", TPL]).fails(
        255,
        "400 Parameter verification failed.\nstorage: storage 'local' does not support container directories\npct create <vmid> <ostemplate> [OPTIONS]\n",
    );
    s.pct(&["create", "100", TPL, "--rootfs", "nope:8"])
        .dies("storage 'nope' does not exist");
    assert!(!s.has_conf(100));
}

#[test]
fn create_default_rootfs_is_storage_colon_4() {
    let s = Sim::new();
    s.pct(&["create", "100", TPL, "--storage", "lxc-disks"])
        .ok();
    assert_eq!(
        conf_line(&s.conf(100), "rootfs"),
        Some("lxc-disks:subvol-100-disk-0,size=4G")
    );
}

#[test]
fn create_missing_template_cleans_up() {
    let s = Sim::new();
    s.pct(&["create", "100", "/nope/x.tar.zst", "--storage", "lxc-disks"])
        .dies("unable to create CT 100 - can't find file '/nope/x.tar.zst'");
    assert!(!s.has_conf(100));
    assert!(!s.vol("lxc-disks", "subvol-100-disk-0").exists());
    s.pct(&["create", "100", "local:iso/x.iso", "--storage", "lxc-disks"])
        .dies("unable to use volume local:iso/x.iso - content type needs to be 'vztmpl'");
}

#[test]
fn create_existing_id_in_cluster_vmid_space() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.create(100, &[])
        .dies("CT 100 already exists on node 'pve'");
    s.write("etc/pve/qemu-server/200.conf", "memory: 512\n");
    s.create(200, &[])
        .dies("VM 200 already exists on node 'pve'");
}

#[test]
fn create_normalizes_net() {
    let s = Sim::new();
    s.create(
        100,
        &["--net0", "bridge=vmbr0,name=eth0,ip=dhcp,firewall=1"],
    )
    .ok();
    let net = conf_line(&s.conf(100), "net0").unwrap().to_string();
    let re = regex::Regex::new(r"^name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:[0-9A-F]{2}:[0-9A-F]{2}:[0-9A-F]{2},ip=dhcp,type=veth$").unwrap();
    assert!(re.is_match(&net), "{net}");
    s.create(
        101,
        &[
            "--net0",
            "name=eth0,hwaddr=52:54:00:AA:BB:CC,ip=10.0.0.5/24,gw=10.0.0.1",
        ],
    )
    .ok();
    assert_eq!(
        conf_line(&s.conf(101), "net0"),
        Some("name=eth0,gw=10.0.0.1,hwaddr=52:54:00:AA:BB:CC,ip=10.0.0.5/24,type=veth")
    );
}

#[test]
fn create_volume_naming_per_storage_type() {
    let s = Sim::with(&["--storage", "dirs:dir", "--storage", "thin:lvmthin"]);
    s.pct(&["create", "100", TPL, "--rootfs", "dirs:2"]).ok();
    assert_eq!(
        conf_line(&s.conf(100), "rootfs"),
        Some("dirs:100/vm-100-disk-0.raw,size=2G")
    );
    s.pct(&["create", "101", TPL, "--rootfs", "thin:0.5"]).ok();
    assert_eq!(
        conf_line(&s.conf(101), "rootfs"),
        Some("thin:vm-101-disk-0,size=512M")
    );
}

#[test]
fn create_tags_nameserver_description() {
    let s = Sim::new();
    s.create(
        100,
        &[
            "--tags",
            "Web;db,db",
            "--nameserver",
            "1.1.1.1,8.8.8.8",
            "--description",
            "line one\nline: two",
        ],
    )
    .ok();
    let c = s.conf(100);
    assert!(
        c.starts_with("#line one\n#line%3A two\narch: amd64\n"),
        "{c}"
    );
    assert_eq!(conf_line(&c, "tags"), Some("db;web"));
    assert_eq!(conf_line(&c, "nameserver"), Some("1.1.1.1 8.8.8.8"));
    let o = s.pct(&[
        "create",
        "101",
        TPL,
        "--storage",
        "lxc-disks",
        "--nameserver",
        "1.1.1",
    ]);
    assert!(
        o.err.contains(
            "nameserver: invalid format - value does not look like a valid IP address\n\n"
        )
    );
}

#[test]
fn create_start_flag_starts() {
    let s = Sim::new();
    s.create(100, &["--start", "1"]).ok();
    assert_eq!(s.pct(&["status", "100"]).ok().out, "status: running\n");
}

// ------------------------------------------------------------------ conf file

#[test]
fn raw_lxc_lines_survive_rewrites() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    let mut c = s.conf(100);
    c.push_str("lxc.cgroup2.devices.allow = c 195:* rwm\nlxc.mount.entry=/dev/nvidia0 dev/nvidia0 none bind,optional,create=file\nlxc.mount.entry: /dev/nvidiactl dev/nvidiactl none bind,optional,create=file\n");
    s.write_conf(100, &c);
    s.pct(&["set", "100", "--memory", "1024"]).ok();
    let c = s.conf(100);
    assert!(c.ends_with("swap: 512\nlxc.cgroup2.devices.allow: c 195:* rwm\nlxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\nlxc.mount.entry: /dev/nvidiactl dev/nvidiactl none bind,optional,create=file\n"), "{c}");
    assert_eq!(conf_line(&c, "memory"), Some("1024"));
}

/// pve-container `src/PVE/LXC/Config.pm` `parse_pct_config` (not strict) and
/// `is_valid_lxc_conf_key`: a value failing its check is warned about on every read and kept
/// (the assignment follows the warning), so it is written back; a raw key that is not valid is
/// warned about and dropped on the next write; keys with a message (`lxc.rootfs.path`) are
/// dropped with it; deprecated keys are kept with a warning naming the new key; `delete`
/// outside `[pve:pending]` is dropped.
#[test]
fn conf_file_keeps_unknown_values_and_drops_invalid_raw_keys() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    let mut c = s.conf(100);
    c.push_str("foo: bar\ndelete: swap\nlxc.bogus.key: 1\nlxc.proc.x: 1\nlxc.rootfs.path: /x\nlxc.aa_profile: unconfined\nlxc.cgroup.devices.allow: c 195:* rwm\n");
    s.write_conf(100, &c);
    let o = s.pct(&["config", "100"]).ok();
    assert_eq!(
        o.err,
        "vm 100 - unable to parse value of 'foo' - unknown setting 'foo'\n\
         vm 100 - property 'delete' is only allowed in [pve:pending]\n\
         vm 100 - unable to parse config: lxc.bogus.key: 1\n\
         vm 100 - unable to parse config: lxc.proc.x: 1\n\
         vm 100 - lxc.rootfs.path: lxc.rootfs.path is auto generated from rootfs\n\
         vm 100 - lxc.aa_profile is deprecated and was renamed to lxc.apparmor.profile\n"
    );
    s.pct(&["set", "100", "--cores", "1"]).ok();
    let c = s.conf(100);
    assert_eq!(conf_line(&c, "foo"), Some("bar"), "{c}");
    assert!(
        !c.contains("bogus") && !c.contains("lxc.proc") && !c.contains("rootfs.path"),
        "{c}"
    );
    assert!(!c.contains("delete:"), "{c}");
    assert_eq!(conf_line(&c, "lxc.aa_profile"), Some("unconfined"), "{c}");
    assert_eq!(
        conf_line(&c, "lxc.cgroup.devices.allow"),
        Some("c 195:* rwm"),
        "{c}"
    );
}

/// `is_valid_lxc_conf_key` by pve-container version: `lxc.init.cwd` exists from 6.0.0
/// (PVE 9.0), `lxc.environment.runtime` from 6.0.14 (PVE 9.1).
#[test]
fn raw_keys_are_gated_by_the_pve_container_version() {
    for (ver, cwd_ok, env_ok) in [
        ("8.4.1", false, false),
        ("9.0.3", true, false),
        ("9.1.1", true, true),
    ] {
        let s = Sim::with(&["--pve-version", ver]);
        s.create(100, &[]).ok();
        let mut c = s.conf(100);
        c.push_str("lxc.init.cwd: /srv\nlxc.environment.runtime: A=1\n");
        s.write_conf(100, &c);
        s.pct(&["set", "100", "--cores", "1"]).ok();
        let c = s.conf(100);
        assert_eq!(
            conf_line(&c, "lxc.init.cwd").is_some(),
            cwd_ok,
            "{ver}: {c}"
        );
        assert_eq!(
            conf_line(&c, "lxc.environment.runtime").is_some(),
            env_ok,
            "{ver}: {c}"
        );
    }
}

/// `write_pct_config`: the description is written line by line with `split(/\n/, ...)`, so an
/// empty line inside stays as a bare `#` line (trailing ones go).
#[test]
fn description_keeps_inner_blank_lines() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["set", "100", "--description", "first\n\nthird\n\n"])
        .ok();
    assert!(
        s.conf(100).starts_with("#first\n#\n#third\narch"),
        "{}",
        s.conf(100)
    );
}

#[test]
fn config_output_sorted_with_lxc_last_and_description_encoded() {
    let s = Sim::new();
    s.create(100, &["--description", "hi: 100%"]).ok();
    let mut c = s.conf(100);
    c.push_str("lxc.apparmor.profile: unconfined\n");
    s.write_conf(100, &c);
    assert_eq!(
        s.pct(&["config", "100"]).ok().out,
        "arch: amd64\ndescription: hi%3A 100%25%0A\nhostname: CT100\nmemory: 512\nostype: ubuntu\nrootfs: lxc-disks:subvol-100-disk-0,size=8G\nswap: 512\nlxc.apparmor.profile: unconfined\n"
    );
}

#[test]
fn config_snapshot_and_current_options() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["snapshot", "100", "s1"]).ok();
    s.pct(&["set", "100", "--memory", "2048"]).ok();
    let o = s.pct(&["config", "100", "--snapshot", "s1"]).ok();
    assert!(
        o.out.contains("memory: 512\n") && o.out.contains("snaptime: "),
        "{}",
        o.out
    );
    s.pct(&["config", "100", "--snapshot", "s1", "--current", "1"])
        .dies("cannot use 'snapshot' parameter with 'current'");
    s.pct(&["config", "100", "--snapshot", "nope"])
        .dies("snapshot 'nope' does not exist");
}

// ------------------------------------------------------------------ set

#[test]
fn set_refuses_unprivileged_and_lxc_keys() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["set", "100", "--unprivileged", "1"])
        .dies("unable to modify read-only option: 'unprivileged'");
    s.pct(&["set", "100", "--lxc.cgroup2.devices.allow", "c 195:* rwm"])
        .fails(255, "Unknown option: lxc.cgroup2.devices.allow\n400 unable to parse option\npct set <vmid> [OPTIONS]\n");
    s.pct(&["set", "100"]).dies("no options specified");
}

#[test]
fn set_delete_rules() {
    let s = Sim::new();
    s.create(100, &["--cores", "2"]).ok();
    s.pct(&["set", "100", "--delete", "memory"])
        .dies("unable to delete required option 'memory'");
    s.pct(&["set", "100", "--delete", "foo"]).fails(
        255,
        "400 Parameter verification failed.\ndelete: unknown option 'foo'\npct set <vmid> [OPTIONS]\n",
    );
    s.pct(&["set", "100", "--delete", "onboot"]).fails(
        0,
        "cannot delete 'onboot' - not set in current configuration!\n",
    );
    s.pct(&["set", "100", "--delete", "cores"]).ok();
    assert_eq!(conf_line(&s.conf(100), "cores"), None);
}

/// pve-container `src/PVE/LXC/Config.pm` `update_pct_config`: `--delete unprivileged` is
/// refused as read-only; `src/PVE/API2/LXC/Config.pm` `update_vm`: setting and deleting one
/// key in a call is a parameter error (with Proxmox's unbalanced quote).
#[test]
fn set_refuses_deleting_read_only_and_set_plus_delete() {
    let s = Sim::new();
    s.create(100, &["--unprivileged", "1", "--cores", "2"]).ok();
    let before = s.conf(100);
    s.pct(&["set", "100", "--delete", "unprivileged"])
        .dies("unable to delete read-only option: 'unprivileged'");
    s.pct(&["set", "100", "--cores", "4", "--delete", "cores"]).fails(
        255,
        "400 Parameter verification failed.\ndelete: you can't use '-cores' and -delete cores' at the same time\npct set <vmid> [OPTIONS]\n",
    );
    assert_eq!(s.conf(100), before);
}

#[test]
fn set_on_running_ct_splits_pending() {
    let s = Sim::new();
    s.create(100, &["--start", "1"]).ok();
    s.pct(&[
        "set",
        "100",
        "--memory",
        "1024",
        "--features",
        "nesting=1",
        "--hostname",
        "web",
    ])
    .ok();
    let c = s.conf(100);
    assert!(c.ends_with("\n[pve:pending]\nfeatures: nesting=1\n"), "{c}");
    assert_eq!(conf_line(&c, "memory"), Some("1024"));
    assert_eq!(conf_line(&c, "hostname"), Some("web"));
    assert!(
        s.pct(&["config", "100"])
            .ok()
            .out
            .contains("features: nesting=1\n")
    );
    assert!(
        !s.pct(&["config", "100", "--current", "1"])
            .ok()
            .out
            .contains("features")
    );
    assert_eq!(
        s.pct(&["pending", "100"])
            .ok()
            .out
            .lines()
            .filter(|l| l.starts_with("new "))
            .collect::<Vec<_>>(),
        ["new features: nesting=1"]
    );
    s.pct(&["reboot", "100"]).ok();
    let c = s.conf(100);
    assert!(!c.contains("[pve:pending]"));
    assert_eq!(conf_line(&c, "features"), Some("nesting=1"));
}

#[test]
fn set_net_without_hwaddr_gets_new_mac() {
    let s = Sim::new();
    s.create(100, &["--net0", "name=eth0,bridge=vmbr0"]).ok();
    let a = conf_line(&s.conf(100), "net0").unwrap().to_string();
    s.pct(&["set", "100", "--net0", "name=eth0,bridge=vmbr0"])
        .ok();
    let b = conf_line(&s.conf(100), "net0").unwrap().to_string();
    assert_ne!(a, b);
    assert!(b.contains("hwaddr=BC:24:11:"));
}

#[test]
fn set_dev_path_rules() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&[
        "set",
        "100",
        "--dev0",
        "/dev/nvidia0,gid=44,mode=0666,uid=0",
    ])
    .ok();
    assert_eq!(
        conf_line(&s.conf(100), "dev0"),
        Some("/dev/nvidia0,gid=44,mode=0666,uid=0")
    );
    s.pct(&["set", "100", "--dev1", "/dev/nvidia9"])
        .dies("Device /dev/nvidia9 does not exist");
    let o = s.pct(&["set", "100", "--dev1", "/tmp/x"]);
    assert!(
        o.err.contains("dev1: invalid format - format error\n"),
        "{}",
        o.err
    );
    assert!(
        o.err
            .contains("dev1.path: invalid format - /tmp/x is not a valid device path\n"),
        "{}",
        o.err
    );
}

#[test]
fn set_on_locked_ct() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["set", "100", "--lock", "backup"]).ok();
    s.pct(&["set", "100", "--memory", "1024"])
        .dies("CT is locked (backup)");
    s.pct(&["unlock", "100"]).ok();
    s.pct(&["unlock", "100"])
        .dies("no lock found trying to remove any lock");
}

/// `src/PVE/API2/LXC/Config.pm` `update_vm` runs `check_lock` unconditionally: `--lock` on a
/// locked CT is refused too (only `pct unlock` clears a lock).
#[test]
fn set_checks_the_lock_also_when_setting_lock() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["set", "100", "--lock", "backup"]).ok();
    s.pct(&["set", "100", "--lock", "migrate"])
        .dies("CT is locked (backup)");
    s.pct(&["set", "100", "--delete", "lock"])
        .dies("CT is locked (backup)");
    assert_eq!(conf_line(&s.conf(100), "lock"), Some("backup"));
}

/// pve-guest-common `src/PVE/AbstractConfig.pm` `snapshot_delete`: `set_lock($vmid,
/// 'snapshot-delete')` checks the lock with or without `--force`.
#[test]
fn delsnapshot_refuses_a_locked_ct_even_with_force() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["snapshot", "100", "s1"]).ok();
    s.pct(&["set", "100", "--lock", "backup"]).ok();
    s.pct(&["delsnapshot", "100", "s1"])
        .dies("CT is locked (backup)");
    s.pct(&["delsnapshot", "100", "s1", "--force"])
        .dies("CT is locked (backup)");
    assert!(s.conf(100).contains("[s1]"));
}

/// `src/PVE/API2/LXC/Status.pm` `vm_shutdown`: `check_lock` without the `mounted` exemption
/// that start and stop have.
#[test]
fn shutdown_refuses_a_mounted_lock_that_stop_ignores() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["start", "100"]).ok();
    s.pct(&["set", "100", "--lock", "mounted"]).ok();
    s.pct(&["shutdown", "100"]).dies("CT is locked (mounted)");
    s.pct(&["stop", "100"]).ok();
}

/// `src/PVE/API2/LXC.pm` `clone_vm`: the source's `disk` lock (check_lock) and the target's
/// `create_and_lock_config` come before the snapshot lookup, so a locked source or a taken
/// target id wins over a missing snapshot; `unusedN` keys are not copied.
#[test]
fn clone_locks_before_the_snapshot_check_and_leaves_unused() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.create(101, &[]).ok();
    s.pct(&["clone", "100", "101", "--snapname", "nope"])
        .dies("CT 101 already exists on node 'pve'");
    s.pct(&["set", "100", "--lock", "backup"]).ok();
    s.pct(&["clone", "100", "102", "--snapname", "nope"])
        .dies("CT is locked (backup)");
    s.pct(&["unlock", "100"]).ok();
    s.pct(&["clone", "100", "102", "--snapname", "nope"])
        .dies("snapshot 'nope' does not exist");
    assert!(!s.has_conf(102));
    assert_eq!(conf_line(&s.conf(100), "lock"), None);
    let mut c = s.conf(100);
    c.push_str("unused0: lxc-disks:subvol-100-disk-9\n");
    s.write_conf(100, &c);
    s.pct(&["clone", "100", "102"]).ok();
    assert_eq!(conf_line(&s.conf(102), "unused0"), None);
}

/// Every config change holds `/run/lock/lxc/pve-config-<vmid>.lock` (pve-container
/// `src/PVE/LXC/Config.pm` `config_file_lock`, pve-guest-common `lock_config`): a second
/// writer waits (`trying to acquire lock... OK`, pve-common `src/PVE/Tools.pm`
/// `lock_file_full`) and gives up after 10 s with `got timeout`.
#[test]
fn config_changes_wait_for_the_config_file_lock() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    let lock = s.path("run/lock/lxc/pve-config-100.lock");
    assert!(lock.exists());
    let f = fs::OpenOptions::new().append(true).open(&lock).unwrap();
    f.lock().unwrap();
    std::thread::scope(|sc| {
        let h = sc.spawn(|| s.pct(&["set", "100", "--cores", "3"]));
        std::thread::sleep(Duration::from_millis(500));
        // Still waiting: nothing changed yet.
        assert_eq!(conf_line(&s.conf(100), "cores"), None);
        f.unlock().unwrap();
        let o = h.join().unwrap().ok();
        assert_eq!(o.err, "trying to acquire lock... OK\n");
    });
    assert_eq!(conf_line(&s.conf(100), "cores"), Some("3"));
    f.lock().unwrap();
    s.pct(&["set", "100", "--cores", "4"]).dies(
        "trying to acquire lock...can't lock file '/run/lock/lxc/pve-config-100.lock' - got timeout",
    );
    assert_eq!(conf_line(&s.conf(100), "cores"), Some("3"));
}

// ------------------------------------------------------------------ power / status / list

#[test]
fn power_state_messages() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["stop", "100"]).dies("CT 100 not running");
    s.pct(&["shutdown", "100"]).dies("CT 100 not running");
    s.pct(&["reboot", "100"]).dies("VM 100 not running");
    s.pct(&["start", "100"]).ok();
    s.pct(&["start", "100"]).dies("CT 100 already running");
    s.pct(&["shutdown", "100", "--timeout", "5", "--forceStop", "1"])
        .ok();
    assert_eq!(s.pct(&["status", "100"]).ok().out, "status: stopped\n");
    s.pct(&["start", "101"])
        .dies("Configuration file 'nodes/pve/lxc/101.conf' does not exist");
}

#[test]
fn template_never_starts() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["template", "100"]).ok();
    s.pct(&["start", "100"])
        .dies("you can't start a CT if it's a template");
}

#[test]
fn status_verbose_fields() {
    let s = Sim::new();
    s.create(100, &["--hostname", "web01", "--cores", "2"]).ok();
    let o = s.pct(&["status", "100", "--verbose"]).ok();
    let keys: Vec<&str> = o
        .out
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(
        o.out.contains("name: web01\n")
            && o.out.contains("status: stopped\n")
            && o.out.contains("vmid: 100\n")
            && o.out.contains("cpus: 2\n")
    );
    assert!(!keys.contains(&"cpu"));
}

#[test]
fn list_is_byte_exact() {
    let s = Sim::new();
    assert_eq!(s.pct(&["list"]).ok().out, "");
    s.create(100, &["--hostname", "web01", "--start", "1"]).ok();
    s.create(101, &[]).ok();
    s.pct(&["mount", "101"]).ok();
    assert_eq!(
        s.pct(&["list"]).ok().out,
        "VMID       Status     Lock         Name                \n100        running                 web01               \n101        stopped    mounted      CT101               \n"
    );
}

// ------------------------------------------------------------------ snapshots

#[test]
fn snapshot_section_parent_and_frozen_rootfs() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    let rootfs = s.vol("lxc-disks", "subvol-100-disk-0");
    fs::write(rootfs.join("marker"), "before").unwrap();
    s.pct(&["snapshot", "100", "s1", "--description", "first"])
        .ok();
    let c = s.conf(100);
    assert_eq!(conf_line(&c, "parent"), Some("s1"));
    let snap = c.split("\n[s1]\n").nth(1).unwrap();
    assert!(snap.starts_with("#first\narch: amd64\n"), "{snap}");
    assert!(snap.contains("\nsnaptime: ") && !snap.contains("parent:"));
    fs::write(rootfs.join("marker"), "after").unwrap();
    s.pct(&["rollback", "100", "s1"]).ok();
    assert_eq!(fs::read_to_string(rootfs.join("marker")).unwrap(), "before");
    assert_eq!(conf_line(&s.conf(100), "parent"), Some("s1"));
}

#[test]
fn snapshot_reserved_duplicate_and_template() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["snapshot", "100", "current"])
        .dies("unable to use snapshot name 'current' (reserved name)");
    s.pct(&["snapshot", "100", "vzdump"])
        .dies("unable to use snapshot name 'vzdump' (reserved name)");
    s.pct(&["snapshot", "100", "s1"]).ok();
    s.pct(&["snapshot", "100", "s1"])
        .dies("snapshot name 's1' already used");
    s.create(101, &[]).ok();
    s.pct(&["template", "101"]).ok();
    s.pct(&["snapshot", "101", "s1"])
        .dies("you can't take a snapshot if it's a template");
}

#[test]
fn snapshot_needs_feature_dir_has_none() {
    let s = Sim::with(&["--storage", "dirs:dir"]);
    s.pct(&["create", "100", TPL, "--rootfs", "dirs:2"]).ok();
    s.pct(&["snapshot", "100", "s1"])
        .dies("snapshot feature is not available");
    assert!(!s.conf(100).contains("lock"));
}

#[test]
fn listsnapshot_tree_layout() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["snapshot", "100", "snap1"]).ok();
    s.pct(&[
        "snapshot",
        "100",
        "snap2",
        "--description",
        "first line\nsecond",
    ])
    .ok();
    let o = s.pct(&["listsnapshot", "100"]).ok();
    let re = regex::Regex::new(
        r"^`-> snap1                       \d{4}-\d\d-\d\d \d\d:\d\d:\d\d     no-description\n `-> snap2                      \d{4}-\d\d-\d\d \d\d:\d\d:\d\d     first line\n  `-> current                                           You are here!\n$",
    )
    .unwrap();
    assert!(re.is_match(&o.out), "{}", o.out);
}

#[test]
fn delsnapshot_reparents() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    for n in ["a1", "b2", "c3"] {
        s.pct(&["snapshot", "100", n]).ok();
    }
    s.pct(&["delsnapshot", "100", "b2"]).ok();
    let c = s.conf(100);
    assert!(!c.contains("[b2]"));
    let c3 = c.split("\n[c3]\n").nth(1).unwrap();
    assert!(c3.contains("parent: a1\n"), "{c}");
    s.pct(&["delsnapshot", "100", "c3"]).ok();
    assert_eq!(conf_line(&s.conf(100), "parent"), Some("a1"));
    s.pct(&["delsnapshot", "100", "zz"])
        .dies("snapshot 'zz' does not exist");
    assert!(
        !s.path("var/lib/pve-sim/storage/lxc-disks/snaps/subvol-100-disk-0@b2")
            .exists()
    );
}

/// pve-guest-common `src/PVE/AbstractConfig.pm` `snapshot_rollback`: a snapshot whose
/// `snapstate` is `prepare` or `delete` is incomplete and refused; the rollback builds a fresh
/// config (`__snapshot_apply_config`), so `[pve:pending]` is gone.
#[test]
fn rollback_refuses_incomplete_snapshots_and_drops_pending() {
    let s = Sim::new();
    s.create(100, &["--cores", "1"]).ok();
    s.pct(&["snapshot", "100", "s1"]).ok();
    s.pct(&["start", "100"]).ok();
    s.pct(&["set", "100", "--cores", "2", "--swap", "256"]).ok();
    s.pct(&["set", "100", "--arch", "arm64"]).ok();
    assert!(s.conf(100).contains("[pve:pending]"));
    s.pct(&["rollback", "100", "s1"]).ok();
    let c = s.conf(100);
    assert!(!c.contains("[pve:pending]"), "{c}");
    assert_eq!(conf_line(&c, "cores"), Some("1"));
    for st in ["prepare", "delete"] {
        let c = s
            .conf(100)
            .replace("[s1]\n", &format!("[s1]\nsnapstate: {st}\n"));
        s.write_conf(100, &c);
        s.pct(&["rollback", "100", "s1"]).dies(&format!(
            "unable to rollback to incomplete snapshot (snapstate = {st})"
        ));
        let c = s.conf(100).replace(&format!("snapstate: {st}\n"), "");
        s.write_conf(100, &c);
    }
}

#[test]
fn rollback_zfs_newest_only_and_start() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["snapshot", "100", "s1"]).ok();
    s.pct(&["snapshot", "100", "s2"]).ok();
    s.pct(&["rollback", "100", "s1"])
        .dies("can't rollback, 's1' is not most recent snapshot on 'lxc-disks:subvol-100-disk-0'");
    s.pct(&["start", "100"]).ok();
    s.pct(&["rollback", "100", "s2", "--start", "1"]).ok();
    assert_eq!(s.pct(&["status", "100"]).ok().out, "status: running\n");
    s.pct(&["rollback", "100", "nope"])
        .dies("snapshot 'nope' does not exist");
}

// ------------------------------------------------------------------ template / clone / destroy

#[test]
fn template_rules_and_base_volume() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["snapshot", "100", "s1"]).ok();
    s.pct(&["template", "100"])
        .dies("unable to create template, because CT contains snapshots");
    s.pct(&["delsnapshot", "100", "s1"]).ok();
    s.pct(&["start", "100"]).ok();
    s.pct(&["template", "100"])
        .dies("you can't convert a CT to template if the CT is running");
    s.pct(&["stop", "100"]).ok();
    s.pct(&["template", "100"]).ok();
    let c = s.conf(100);
    assert_eq!(
        conf_line(&c, "rootfs"),
        Some("lxc-disks:basevol-100-disk-0,size=8G")
    );
    assert_eq!(conf_line(&c, "template"), Some("1"));
    assert!(
        s.vol("lxc-disks", "basevol-100-disk-0")
            .join("etc/os-release")
            .exists()
    );
    assert!(!s.vol("lxc-disks", "subvol-100-disk-0").exists());
    s.pct(&["template", "100"])
        .dies("you can't convert a template to a template");
}

#[test]
fn clone_linked_from_template() {
    let s = Sim::new();
    s.create(
        900,
        &["--net0", "name=eth0,bridge=vmbr0,hwaddr=52:54:00:AA:BB:CC"],
    )
    .ok();
    s.pct(&["template", "900"]).ok();
    let o = s.pct(&["clone", "900", "901", "--hostname", "child"]).ok();
    assert_eq!(
        o.out,
        "create linked clone of mount point rootfs (lxc-disks:basevol-900-disk-0)\n"
    );
    let c = s.conf(901);
    assert_eq!(
        conf_line(&c, "rootfs"),
        Some("lxc-disks:basevol-900-disk-0/subvol-901-disk-0,size=8G")
    );
    assert_eq!(conf_line(&c, "hostname"), Some("child"));
    assert_eq!(conf_line(&c, "template"), None);
    assert!(!conf_line(&c, "net0").unwrap().contains("52:54:00:AA:BB:CC"));
    assert!(
        s.vol("lxc-disks", "subvol-901-disk-0")
            .join("etc/os-release")
            .exists()
    );
    assert!(!s.conf(900).contains("lock"));
    s.pct(&["destroy", "900"])
        .dies("base volume 'basevol-900-disk-0' is still in use by linked clones");
}

#[test]
fn clone_full_default_and_storage_rules() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    let o = s.pct(&["clone", "100", "101"]).ok();
    assert_eq!(
        o.out,
        "create full clone of mountpoint rootfs (lxc-disks:subvol-100-disk-0)\n"
    );
    assert_eq!(
        conf_line(&s.conf(101), "rootfs"),
        Some("lxc-disks:subvol-101-disk-0,size=8G")
    );
    s.pct(&["clone", "100", "102", "--full", "0"])
        .dies("Linked clone feature for 'lxc-disks:subvol-100-disk-0' is not available");
    assert!(!s.has_conf(102));
    s.pct(&["template", "100"]).ok();
    s.pct(&["clone", "100", "102", "--storage", "local-zfs"])
        .dies("parameter 'storage' not allowed for linked clones");
    s.pct(&[
        "clone",
        "100",
        "102",
        "--full",
        "1",
        "--storage",
        "local-zfs",
    ])
    .ok();
    assert_eq!(
        conf_line(&s.conf(102), "rootfs"),
        Some("local-zfs:subvol-102-disk-0,size=8G")
    );
    s.pct(&["clone", "100", "101"])
        .dies("CT 101 already exists on node 'pve'");
}

#[test]
fn clone_running_source_needs_snapshot_for_full() {
    let s = Sim::new();
    s.create(100, &["--start", "1"]).ok();
    let rootfs = s.vol("lxc-disks", "subvol-100-disk-0");
    fs::write(rootfs.join("marker"), "snap").unwrap();
    s.pct(&["snapshot", "100", "base"]).ok();
    fs::write(rootfs.join("marker"), "later").unwrap();
    s.pct(&["clone", "100", "101"])
        .dies("Cannot do full clones on a running container without snapshots");
    s.pct(&["clone", "100", "101", "--snapname", "base"]).ok();
    let c = s.conf(101);
    assert!(
        !c.contains("parent") && !c.contains("snaptime") && !c.contains('['),
        "{c}"
    );
    assert_eq!(
        fs::read_to_string(s.vol("lxc-disks", "subvol-101-disk-0").join("marker")).unwrap(),
        "snap"
    );
    s.pct(&["clone", "100", "102", "--snapname", "nope"])
        .dies("snapshot 'nope' does not exist");
    let s9 = Sim::with(&["--pve-version", "9.1.1"]);
    s9.create(100, &["--start", "1"]).ok();
    s9.pct(&["clone", "100", "101"])
        .dies("Full clone of a running container is only possible from a snapshot");
}

#[test]
fn clone_dir_template_needs_full() {
    let s = Sim::with(&["--storage", "dirs:dir"]);
    s.pct(&["create", "100", TPL, "--rootfs", "dirs:2"]).ok();
    s.pct(&["template", "100"]).ok();
    assert_eq!(
        conf_line(&s.conf(100), "rootfs"),
        Some("dirs:100/base-100-disk-0.raw,size=2G")
    );
    s.pct(&["clone", "100", "101"])
        .dies("Linked clone feature for 'dirs:100/base-100-disk-0.raw' is not available");
    s.pct(&["clone", "100", "101", "--full", "1"]).ok();
    assert_eq!(
        conf_line(&s.conf(101), "rootfs"),
        Some("dirs:101/vm-101-disk-0.raw,size=2G")
    );
}

#[test]
fn clone_source_locked_disk_collides() {
    let s = Sim::new();
    s.create(900, &[]).ok();
    s.pct(&["template", "900"]).ok();
    s.write("etc/pve-sim/latency", "clone 1500\n");
    let root = s.root();
    let first = std::thread::spawn(move || {
        Command::new(bin("pct"))
            .args(["clone", "900", "901"])
            .env("PHOENIX_HOST_ROOT", &root)
            .output()
            .unwrap()
    });
    // Wait until the first clone holds the source lock.
    let t = Instant::now();
    while !(s.conf(900).contains("lock: disk") && s.has_conf(901)) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "first clone never locked the source"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(conf_line(&s.conf(901), "lock"), Some("create"));
    s.pct(&["clone", "900", "902"]).dies("CT is locked (disk)");
    let o = first.join().unwrap();
    assert!(o.status.success());
    assert!(!s.conf(900).contains("lock"));
    assert!(!s.conf(901).contains("lock"));
}

#[test]
fn destroy_rules() {
    let s = Sim::new();
    s.create(100, &["--start", "1"]).ok();
    s.pct(&["destroy", "100"])
        .dies("unable to destroy CT 100 - container is running");
    s.pct(&["set", "100", "--protection", "1"]).ok();
    s.pct(&["destroy", "100", "--force", "1"])
        .dies("can't remove CT 100 - protection mode enabled");
    s.pct(&["set", "100", "--delete", "protection"]).ok();
    s.pct(&["snapshot", "100", "s1"]).ok();
    let o = s
        .pct(&["destroy", "100", "--force", "1", "--purge", "1"])
        .ok();
    assert_eq!(o.out, "forced to stop CT 100 before destroying!\n");
    assert!(!s.has_conf(100));
    assert!(!s.vol("lxc-disks", "subvol-100-disk-0").exists());
    assert!(
        !s.path("var/lib/pve-sim/storage/lxc-disks/snaps/subvol-100-disk-0@s1")
            .exists()
    );
    s.pct(&["destroy", "100"])
        .dies("Configuration file 'nodes/pve/lxc/100.conf' does not exist");
}

#[test]
fn mount_unmount_locks() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["unmount", "100"])
        .dies("no lock found trying to remove 'mounted'  lock");
    assert_eq!(
        s.pct(&["mount", "100"]).ok().out,
        "mounted CT 100 in '/var/lib/lxc/100/rootfs'\n"
    );
    s.pct(&["mount", "100"]).dies("CT is locked (mounted)");
    s.pct(&["start", "100"]).ok();
    s.pct(&["stop", "100"]).ok();
    s.pct(&["unmount", "100"]).ok();
    assert!(!s.conf(100).contains("lock"));
}

// ------------------------------------------------------------------ exec / push / pull

#[test]
fn exec_preconditions() {
    let s = Sim::new();
    s.pct(&["exec", "100", "--", "true"])
        .dies("Configuration file 'nodes/pve/lxc/100.conf' does not exist");
    s.create(100, &[]).ok();
    s.pct(&["exec", "100", "--", "true"])
        .dies("container '100' not running!");
    s.pct(&["start", "100"]).ok();
    let o = s.pct(&["exec", "100"]);
    assert_eq!(o.code, 255);
    assert!(o.err.starts_with("missing command at "));
    s.pct(&["exec", "100", "ls", "-la"])
        .fails(255, "Unknown option: la\n400 unable to parse option\npct exec <vmid> [<extra-args>] [OPTIONS]\n");
}

#[test]
fn exec_runs_inside_rootfs_with_its_exit_code() {
    if !exec_ok() {
        return;
    }
    let s = Sim::new();
    s.create(100, &["--start", "1"]).ok();
    let o = s.pct(&[
        "exec",
        "100",
        "--",
        "sh",
        "-c",
        "echo hi > /etc/pve-sim-test; exit 3",
    ]);
    assert_eq!(o.code, 3, "{o:?}");
    assert_eq!(
        fs::read_to_string(
            s.vol("lxc-disks", "subvol-100-disk-0")
                .join("etc/pve-sim-test")
        )
        .unwrap(),
        "hi\n"
    );
    assert!(!Path::new("/etc/pve-sim-test").exists());
    assert_eq!(s.pct(&["exec", "100", "--", "no-such-command"]).code, 127);
}

/// pve-container `src/PVE/LXC.pm` `vm_start` (lxc-start, then `lxc-wait -s RUNNING`) and
/// `src/PVE/CLI/pct.pm` `exec` (lxc-attach): `pct exec` works as soon as `pct start` returned;
/// the guest's own boot goes on, so systemd says `starting` until the `boot` latency passed.
#[test]
fn exec_works_at_once_and_systemd_reports_starting_until_boot() {
    if !exec_ok() {
        return;
    }
    let s = Sim::new();
    s.create(100, &[]).ok();
    // An enabled unit, started by the guest's boot.
    s.pct(&["start", "100"]).ok();
    let sh = |cmd: &str| s.pct(&["exec", "100", "--", "bash", "-c", cmd]);
    sh("printf '[Service]\\nExecStart=/bin/true\\n' > /etc/systemd/system/foo.service && systemctl enable -q foo").ok();
    s.pct(&["stop", "100"]).ok();
    s.write("etc/pve-sim/latency", "boot 60000\n");
    s.pct(&["start", "100"]).ok();
    s.pct(&["exec", "100", "--", "true"]).ok();
    let o = s.pct(&["exec", "100", "--", "systemctl", "is-system-running"]);
    assert_eq!((o.code, o.out.as_str()), (1, "starting\n"), "{o:?}");
    // Units the boot starts are still activating; one started by hand is active at once.
    let o = sh("systemctl is-active foo");
    assert_eq!((o.code, o.out.as_str()), (3, "activating\n"), "{o:?}");
    sh("systemctl restart foo && systemctl is-active -q foo").ok();
    // Restarted without the rule: booted at once.
    s.pct(&["stop", "100"]).ok();
    s.write("etc/pve-sim/latency", "");
    s.pct(&["start", "100"]).ok();
    let o = s.pct(&["exec", "100", "--", "systemctl", "is-system-running"]);
    assert_eq!((o.code, o.out.as_str()), (0, "running\n"), "{o:?}");
}

/// The guest's network (DHCP/DNS) comes up after `pct start` returned (pve-container
/// `src/PVE/LXC.pm` `vm_start` only waits for init to run): until the `network` latency has
/// passed, every network-using guest tool fails as it does without DNS. The messages and exit
/// codes are the tools' own (curl 6, wget 4, apt-get install 100, docker run 125, docker pull 1,
/// pip 1); `apt-get update` only warns and exits 0, keeping the old lists, as apt 2.7 does.
#[test]
fn network_rule_makes_guest_tools_fail_like_without_dns() {
    if !exec_ok() {
        return;
    }
    let s = Sim::new();
    s.create(100, &[]).ok();
    let sh = |cmd: &str| s.pct(&["exec", "100", "--", "bash", "-c", cmd]);
    // With its network up, the guest fetches its package lists.
    s.pct(&["start", "100"]).ok();
    sh("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-pip").ok();
    s.pct(&["stop", "100"]).ok();
    s.write("etc/pve-sim/latency", "network 60000\n");
    s.pct(&["start", "100"]).ok();
    let o = sh("curl -fsSL https://download.docker.com/linux/ubuntu/gpg");
    assert_eq!(o.code, 6, "{o:?}");
    assert!(
        o.err
            .contains("Could not resolve host: download.docker.com"),
        "{o:?}"
    );
    let o = sh("apt-get update");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.err.contains("W: Some index files failed to download"),
        "{o:?}"
    );
    let o = sh("DEBIAN_FRONTEND=noninteractive apt-get install -y jq");
    assert_eq!(o.code, 100, "{o:?}");
    assert!(
        o.err
            .contains("Temporary failure resolving 'archive.ubuntu.com'"),
        "{o:?}"
    );
    assert_ne!(sh("dpkg -s jq").code, 0);
    let o = sh("pip install --break-system-packages requests");
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.err
            .contains("No matching distribution found for requests"),
        "{o:?}"
    );
    let o = sh("wget -q https://nvidia.github.io/libnvidia-container/gpgkey");
    assert_eq!(o.code, 4, "{o:?}");
    // The same guest once its network is up: the same commands work.
    s.pct(&["stop", "100"]).ok();
    s.write("etc/pve-sim/latency", "network 0\n");
    s.pct(&["start", "100"]).ok();
    sh("curl -fsSL https://download.docker.com/linux/ubuntu/gpg >/dev/null").ok();
    sh("DEBIAN_FRONTEND=noninteractive apt-get install -y jq").ok();
    sh("dpkg -s jq >/dev/null").ok();
}

/// `call <ms>`: every `pct`/`pvesm` invocation pays the Perl CLI's start-up (PVE::CLIHandler
/// loads the whole API before it parses anything), whatever the subcommand, failures included.
#[test]
fn call_latency_costs_every_invocation() {
    let s = Sim::new();
    s.write("etc/pve-sim/latency", "call 300\n");
    s.pct(&["list"]).ok();
    s.pct(&["status", "999"]);
    s.pct(&["bogus"]);
    s.run("pvesm", &["status"]).ok();
    let j = s.journal();
    assert_eq!(j.len(), 4);
    for e in &j {
        let took = e["end_ms"].as_u64().unwrap() - e["start_ms"].as_u64().unwrap();
        assert!(took >= 300, "{e}");
    }
}

#[test]
fn push_pull_require_running_ct() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.write("tmp/f.txt", "data");
    s.pct(&["push", "100", "/tmp/f.txt", "/root/f.txt"])
        .dies("can only push files to a running CT");
    let o = s.pct(&["pull", "100", "/etc/hostname", "/tmp/h"]);
    assert_eq!(o.code, 255);
    assert!(
        o.err
            .starts_with("can only pull files from a running VM at ")
    );
    s.pct(&["start", "100"]).ok();
    s.pct(&["push", "100", "/tmp/missing", "/root/x"])
        .fails(0, "failed to open /tmp/missing for reading\n");
    if exec_ok() {
        s.pct(&[
            "push",
            "100",
            "/tmp/f.txt",
            "/root/f.txt",
            "--perms",
            "0600",
        ])
        .ok();
        assert_eq!(
            fs::read_to_string(s.vol("lxc-disks", "subvol-100-disk-0").join("root/f.txt")).unwrap(),
            "data"
        );
        s.pct(&["pull", "100", "/root/f.txt", "/tmp/back.txt"]).ok();
        assert_eq!(fs::read_to_string(s.path("tmp/back.txt")).unwrap(), "data");
    }
}

// ------------------------------------------------------------------ journal / faults / latency

#[test]
fn journal_records_every_call() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["status", "100"]).ok();
    s.pct(&["start", "101"]);
    let j = s.journal();
    assert_eq!(j.len(), 3);
    assert_eq!(j[0]["argv"][0], "pct");
    assert_eq!(j[0]["argv"][1], "create");
    assert_eq!(j[0]["mutating"], true);
    assert_eq!(j[0]["exit"], 0);
    assert_eq!(j[1]["mutating"], false);
    assert_eq!(j[2]["argv"], serde_json::json!(["pct", "start", "101"]));
    assert_eq!(j[2]["exit"], 255);
    assert!(j[2]["end_ms"].as_u64().unwrap() >= j[2]["start_ms"].as_u64().unwrap());
    s.run("pvesm", &["status"]).ok();
    assert_eq!(s.journal()[3]["argv"][0], "pvesm");
}

#[test]
fn faults_fail_once_and_count_down() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.write("etc/pve-sim/faults", "pct start 100 1\n");
    s.pct(&["start", "100"])
        .dies("simulated fault: pct start 100");
    assert_eq!(s.pct(&["status", "100"]).ok().out, "status: stopped\n");
    assert_eq!(
        fs::read_to_string(s.path("etc/pve-sim/faults")).unwrap(),
        "pct start 100 0\n"
    );
    s.pct(&["start", "100"]).ok();
}

#[test]
fn faults_match_clone_newid_and_exec_command() {
    let s = Sim::new();
    s.create(100, &["--start", "1"]).ok();
    s.pct(&["snapshot", "100", "base"]).ok();
    s.write("etc/pve-sim/faults", "pct clone 101\npct exec * apt-get\n");
    s.pct(&["clone", "100", "102", "--snapname", "base"]).ok();
    s.pct(&["clone", "100", "101", "--snapname", "base"])
        .dies("simulated fault: pct clone 100 101 --snapname base");
    assert!(!s.has_conf(101));
    s.pct(&["exec", "100", "--", "apt-get", "update"])
        .dies("simulated fault: pct exec 100 -- apt-get update");
    if exec_ok() {
        s.pct(&["exec", "100", "--", "true"]).ok();
    }
}

#[test]
fn latency_delays_the_subcommand() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.write("etc/pve-sim/latency", "status 400\n");
    let t = Instant::now();
    s.pct(&["status", "100"]).ok();
    assert!(t.elapsed() >= Duration::from_millis(400));
    let t = Instant::now();
    s.pct(&["config", "100"]).ok();
    assert!(t.elapsed() < Duration::from_millis(400));
}

// ------------------------------------------------------------------ pvesm

#[test]
fn pvesm_status_headers_per_version() {
    let s = Sim::new();
    let o = s.run("pvesm", &["status"]).ok();
    let mut lines = o.out.lines();
    assert_eq!(
        lines.next().unwrap(),
        "Name             Type     Status           Total            Used       Available        %"
    );
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("local             dir     active ")
    );
    let s9 = Sim::with(&["--pve-version", "9.1.1"]);
    let o = s9.run("pvesm", &["status"]).ok();
    assert!(o.out.starts_with("Name             Type     Status     Total (KiB)      Used (KiB) Available (KiB)        %\n"), "{}", o.out);
}

#[test]
fn pvesm_list_shows_volumes() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    assert_eq!(
        s.run("pvesm", &["list", "lxc-disks"]).ok().out,
        "Volid                        Format  Type            Size VMID\nlxc-disks:subvol-100-disk-0  subvol  rootdir   8589934592 100\n"
    );
    s.run("pvesm", &["list", "nope"])
        .dies("storage 'nope' does not exist");
}

#[test]
fn exec_sees_devices_from_mount_entries_and_dev_lines() {
    if !exec_ok() {
        return;
    }
    let s = Sim::new();
    s.create(100, &["--dev0", "/dev/nvidia1,mode=0666"]).ok();
    let mut c = s.conf(100);
    c.push_str("lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n");
    s.write_conf(100, &c);
    s.pct(&["start", "100"]).ok();
    s.pct(&["exec", "100", "--", "test", "-e", "/dev/nvidia0"])
        .ok();
    s.pct(&["exec", "100", "--", "test", "-e", "/dev/nvidia1"])
        .ok();
    assert_eq!(
        s.pct(&["exec", "100", "--", "test", "-e", "/dev/nvidiactl"])
            .code,
        1
    );
}

/// pve-container `src/PVE/LXC.pm` `update_lxc_config` runs when the container starts
/// (`vm_start`): raw `lxc.*` lines added to a running CT's config are not live until the next
/// start.
#[test]
fn raw_lxc_lines_take_effect_at_the_next_start() {
    if !exec_ok() {
        return;
    }
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["start", "100"]).ok();
    let mut c = s.conf(100);
    c.push_str("lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n");
    s.write_conf(100, &c);
    assert_eq!(
        s.pct(&["exec", "100", "--", "test", "-e", "/dev/nvidia0"])
            .code,
        1
    );
    s.pct(&["stop", "100"]).ok();
    s.pct(&["start", "100"]).ok();
    s.pct(&["exec", "100", "--", "test", "-e", "/dev/nvidia0"])
        .ok();
}

/// `src/PVE/LXC.pm` `create_passthrough_device_node`: the node in the guest has the entry's
/// mode (default 0660) and uid/gid (default 0).
#[test]
fn dev_node_in_the_guest_has_the_given_uid_gid_and_mode() {
    if !exec_ok() {
        return;
    }
    let s = Sim::new();
    s.create(
        100,
        &[
            "--dev0",
            "/dev/nvidia1,gid=44,mode=0640,uid=7",
            "--dev1",
            "path=/dev/nvidiactl",
        ],
    )
    .ok();
    s.pct(&["start", "100"]).ok();
    let o = s
        .pct(&[
            "exec",
            "100",
            "--",
            "stat",
            "-c",
            "%a %u %g",
            "/dev/nvidia1",
            "/dev/nvidiactl",
        ])
        .ok();
    assert_eq!(o.out, "640 7 44\n660 0 0\n");
}

/// `devN` on a running CT (`src/PVE/LXC/Config.pm` `vmconfig_hotplug_pending`): before
/// pve-container 6.0.4 it stays in `[pve:pending]` until the next start; from 6.0.4 (PVE 9.0,
/// "implement device hotplug") a new one is hot-plugged, an edited one stays pending.
#[test]
fn dev_on_a_running_ct_is_pending_before_pve9_and_hotplugged_from_it() {
    if !exec_ok() {
        return;
    }
    for (ver, hot) in [("8.4.1", false), ("9.0.3", true)] {
        let s = Sim::with(&["--pve-version", ver]);
        s.create(100, &[]).ok();
        s.pct(&["start", "100"]).ok();
        s.pct(&["set", "100", "--dev0", "/dev/nvidia0,mode=0666"])
            .ok();
        let c = s.conf(100);
        let main = c.split("[pve:pending]").next().unwrap();
        assert_eq!(main.contains("dev0:"), hot, "{ver}: {c}");
        assert_eq!(c.contains("[pve:pending]"), !hot, "{ver}: {c}");
        let seen = s
            .pct(&["exec", "100", "--", "test", "-e", "/dev/nvidia0"])
            .code
            == 0;
        assert_eq!(seen, hot, "{ver}");
        if hot {
            s.pct(&["set", "100", "--dev0", "/dev/nvidia1"]).ok();
            assert!(
                s.conf(100).contains("[pve:pending]\ndev0: /dev/nvidia1"),
                "{}",
                s.conf(100)
            );
        }
        s.pct(&["stop", "100"]).ok();
        s.pct(&["start", "100"]).ok();
        s.pct(&[
            "exec",
            "100",
            "--",
            "test",
            "-e",
            if hot { "/dev/nvidia1" } else { "/dev/nvidia0" },
        ])
        .ok();
    }
}

/// `devN` exists from pve-container 5.0.7 (PVE 8.1, "allow passing raw device nodes through
/// to containers"), `deny-write` from 5.2.0 (PVE 8.3); `PVE::LXC::Tools::get_device_mode_and_rdev`:
/// the path must exist on the host and be a device, checked by `pct set` and again at start.
#[test]
fn dev_is_gated_by_version_and_needs_a_host_device() {
    let s = Sim::with(&["--pve-version", "8.0.4"]);
    s.create(100, &[]).ok();
    let o = s.pct(&["set", "100", "--dev0", "/dev/nvidia0"]);
    assert_eq!(o.code, 255);
    assert!(o.err.starts_with("Unknown option: dev0\n"), "{o:?}");
    let s = Sim::with(&["--pve-version", "8.2.4"]);
    s.create(100, &[]).ok();
    s.pct(&["set", "100", "--dev0", "/dev/nvidia0"]).ok();
    let o = s.pct(&["set", "100", "--dev1", "/dev/nvidia1,deny-write=1"]);
    assert!(
        o.err.contains(
            "dev1: invalid format - invalid key in comma-separated list property: deny-write"
        ),
        "{o:?}"
    );
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["set", "100", "--dev1", "/dev/nvidia1,deny-write=1"])
        .ok();
    s.pct(&["set", "100", "--dev2", "/dev/nvidia-caps"])
        .dies("/dev/nvidia-caps is not a device");
    let mut c = s.conf(100);
    c.push_str("dev3: /dev/nvidia7\n");
    s.write_conf(100, &c);
    s.pct(&["start", "100"])
        .dies("Device /dev/nvidia7 does not exist");
    assert_eq!(s.pct(&["status", "100"]).ok().out, "status: stopped\n");
}

#[test]
fn create_ssh_public_keys_is_a_host_file() {
    let s = Sim::new();
    s.create(100, &["--ssh-public-keys", "/root/keys.pub"])
        .dies("can't open '/root/keys.pub' - No such file or directory");
    s.write("root/bad.pub", "not a key\n");
    let o = s.create(100, &["--ssh-public-keys", "/root/bad.pub"]);
    assert_eq!(o.code, 255);
    assert!(
        o.err.starts_with("SSH public key validation error"),
        "{}",
        o.err
    );
    s.write(
        "root/keys.pub",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0 admin@host\n",
    );
    s.create(100, &["--ssh-public-keys", "/root/keys.pub"]).ok();
    let ak = s
        .vol("lxc-disks", "subvol-100-disk-0")
        .join("root/.ssh/authorized_keys");
    assert!(fs::read_to_string(ak).unwrap().contains("admin@host"));
}

#[test]
fn init_uses_phoenix_host_root_without_flag() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("h");
    let o = Command::new(bin("pve-sim"))
        .args(["init", "--node", "prox"])
        .env("PHOENIX_HOST_ROOT", &root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(bin("pct"))
        .args(["start", "100"])
        .env("PHOENIX_HOST_ROOT", &root)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Configuration file 'nodes/prox/lxc/100.conf' does not exist\n"
    );
    let o = Command::new(bin("pve-sim"))
        .args(["init"])
        .env("PHOENIX_HOST_ROOT", "/")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn shutdown_slower_than_timeout_fails_unless_force_stop() {
    let s = Sim::new();
    s.create(100, &["--start", "1"]).ok();
    s.write("etc/pve-sim/latency", "shutdown 3000\n");
    s.pct(&["shutdown", "100", "--timeout", "1"])
        .dies("container did not stop");
    assert_eq!(s.pct(&["status", "100"]).ok().out, "status: running\n");
    s.pct(&["shutdown", "100", "--timeout", "1", "--forceStop", "1"])
        .ok();
    assert_eq!(s.pct(&["status", "100"]).ok().out, "status: stopped\n");
}

#[test]
fn start_fails_on_missing_non_optional_device_entry() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    let base = s.conf(100);
    s.write_conf(
        100,
        &format!(
            "{base}lxc.mount.entry: /dev/nvidia5 dev/nvidia5 none bind,optional,create=file\n"
        ),
    );
    s.pct(&["start", "100"]).ok();
    s.pct(&["stop", "100"]).ok();
    s.write_conf(
        100,
        &format!("{base}lxc.mount.entry: /dev/nvidia5 dev/nvidia5 none bind,create=file\n"),
    );
    let o = s
        .pct(&["start", "100"])
        .dies("startup for container '100' failed");
    assert!(
        o.out.contains("Failed to mount \"/dev/nvidia5\""),
        "{}",
        o.out
    );
    assert_eq!(s.pct(&["status", "100"]).ok().out, "status: stopped\n");
}

#[test]
fn resize_grows_and_refuses_shrink() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["resize", "100", "rootfs", "+2G"]).ok();
    assert_eq!(
        conf_line(&s.conf(100), "rootfs"),
        Some("lxc-disks:subvol-100-disk-0,size=10G")
    );
    s.pct(&["resize", "100", "rootfs", "4G"])
        .dies("unable to shrink disk size");
    let o = s.pct(&["resize", "100", "rootfs", "lots"]);
    assert!(
        o.err
            .contains("size: value does not match the regex pattern\n"),
        "{}",
        o.err
    );
    assert!(s.pct(&["resize", "100", "disk0", "1G"]).err.contains(
        "disk: value 'disk0' does not have a value in the enumeration 'rootfs, mp0, mp1"
    ));
}

#[test]
fn create_unique_requires_restore() {
    let s = Sim::new();
    s.create(100, &["--unique", "1"]).fails(
        255,
        "400 Parameter verification failed.\nrestore: missing property - 'unique' requires this property\npct create <vmid> <ostemplate> [OPTIONS]\n",
    );
}

#[test]
fn template_chain_of_linked_clones() {
    let s = Sim::new();
    s.create(900, &[]).ok();
    s.pct(&["template", "900"]).ok();
    s.pct(&["clone", "900", "901"]).ok();
    s.pct(&["template", "901"]).ok();
    assert_eq!(
        conf_line(&s.conf(901), "rootfs"),
        Some("lxc-disks:basevol-900-disk-0/basevol-901-disk-0,size=8G")
    );
    s.pct(&["clone", "901", "902"]).ok();
    assert_eq!(
        conf_line(&s.conf(902), "rootfs"),
        Some("lxc-disks:basevol-901-disk-0/subvol-902-disk-0,size=8G")
    );
    s.pct(&["destroy", "901"])
        .dies("base volume 'basevol-901-disk-0' is still in use by linked clones");
    s.pct(&["destroy", "902"]).ok();
    s.pct(&["destroy", "901"]).ok();
    s.pct(&["destroy", "900"]).ok();
    assert_eq!(
        s.run("pvesm", &["list", "lxc-disks"])
            .ok()
            .out
            .lines()
            .count(),
        1
    );
}

#[test]
fn set_digest_must_match_the_file() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    let digest = sha1_smol::Sha1::from(s.conf(100).as_bytes())
        .digest()
        .to_string();
    s.pct(&[
        "set",
        "100",
        "--cores",
        "1",
        "--digest",
        "0000000000000000000000000000000000000000",
    ])
    .dies("detected modified configuration - file changed by other user? Try again.");
    s.pct(&["set", "100", "--cores", "1", "--digest", &digest])
        .ok();
    assert_eq!(conf_line(&s.conf(100), "cores"), Some("1"));
}

#[test]
fn start_writes_hostname_into_the_guest() {
    let s = Sim::new();
    s.create(100, &["--hostname", "web01"]).ok();
    s.pct(&["start", "100"]).ok();
    let h =
        fs::read_to_string(s.vol("lxc-disks", "subvol-100-disk-0").join("etc/hostname")).unwrap();
    assert_eq!(h.trim(), "web01");
}

#[test]
fn full_clone_costs_time_per_mib_copied() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["clone", "100", "101"]).ok();
    fs::write(
        s.vol("lxc-disks", "subvol-100-disk-0").join("big"),
        vec![0u8; 3 << 20],
    )
    .unwrap();
    s.write("etc/pve-sim/latency", "copy 200\n");
    let t = Instant::now();
    s.pct(&["clone", "100", "102"]).ok();
    // at least 3 MiB (the file) at 200 ms each
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn pvesm_status_filters_by_content_and_marks_disabled() {
    let s = Sim::new();
    let o = s.run("pvesm", &["status", "--content", "rootdir"]).ok();
    let names: Vec<&str> = o
        .out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["local-zfs", "lxc-disks"]);
    let cfg = fs::read_to_string(s.path("etc/pve/storage.cfg")).unwrap();
    s.write(
        "etc/pve/storage.cfg",
        &cfg.replace("zfspool: lxc-disks\n", "zfspool: lxc-disks\n\tdisable\n"),
    );
    let o = s.run("pvesm", &["status"]).ok();
    let row = o.out.lines().find(|l| l.starts_with("lxc-disks")).unwrap();
    assert_eq!(
        row,
        "lxc-disks     zfspool   disabled               0               0               0      N/A"
    );
    let o = s.run("pvesm", &["status", "--enabled"]).ok();
    assert!(!o.out.contains("lxc-disks"));
}

#[test]
fn options_new_in_pve9_are_unknown_on_8() {
    let s = Sim::new();
    let o = s.create(100, &["--ha-managed", "1"]);
    assert!(o.err.starts_with("Unknown option: ha-managed\n"), "{o:?}");
    let o = s.create(100, &["--net0", "name=eth0,host-managed=1"]);
    assert!(
        o.err.contains(
            "net0: invalid format - invalid key in comma-separated list property: host-managed\n"
        ),
        "{o:?}"
    );
    let s9 = Sim::with(&["--pve-version", "9.1.1"]);
    s9.create(
        100,
        &[
            "--net0",
            "name=eth0,host-managed=1",
            "--features",
            "nesting=1",
        ],
    )
    .ok();
}

#[test]
fn push_resolves_user_and_group_names_in_the_guest() {
    if !exec_ok() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let s = Sim::new();
    s.create(100, &["--start", "1"]).ok();
    s.write("tmp/f.txt", "data");
    s.pct(&[
        "push",
        "100",
        "/tmp/f.txt",
        "/root/f.txt",
        "--user",
        "nobody",
        "--group",
        "video",
    ])
    .ok();
    let md = fs::metadata(s.vol("lxc-disks", "subvol-100-disk-0").join("root/f.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 44));
    s.pct(&[
        "push",
        "100",
        "/tmp/f.txt",
        "/root/g.txt",
        "--user",
        "nosuchuser",
    ])
    .fails(0, "no such user 'nosuchuser' in CT 100\n");
}

#[test]
fn listsnapshot_current_sorts_after_sibling_snapshots() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["snapshot", "100", "s1"]).ok();
    s.pct(&["snapshot", "100", "s2"]).ok();
    s.pct(&["delsnapshot", "100", "s2"]).ok();
    s.pct(&["snapshot", "100", "s3"]).ok();
    // s1 -> s3 -> current; now branch: roll back is zfs-newest-only, so fake a sibling by
    // re-pointing current at s1 as a rollback to s1 would.
    let c = s.conf(100).replacen("parent: s3", "parent: s1", 1);
    s.write_conf(100, &c);
    let out = s.pct(&["listsnapshot", "100"]).ok().out;
    let names: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(names, ["s1", "s3", "current"], "{out}");
    assert!(out.lines().nth(2).unwrap().starts_with(" `-> current"));
}

#[test]
fn set_mp_with_storage_size_allocates_a_volume() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["set", "100", "--mp0", "lxc-disks:2,mp=/data,backup=yes"])
        .ok();
    assert_eq!(
        conf_line(&s.conf(100), "mp0"),
        Some("lxc-disks:subvol-100-disk-1,backup=1,mp=/data,size=2G")
    );
    assert!(s.vol("lxc-disks", "subvol-100-disk-1").is_dir());
    s.pct(&["set", "100", "--mp1", "local:2,mp=/x"]).fails(
        255,
        "400 Parameter verification failed.\nmp1: storage 'local' does not support container directories\npct set <vmid> [OPTIONS]\n",
    );
    s.pct(&["set", "100", "--mp1", "/srv/share,mp=/share"]).ok();
    assert_eq!(conf_line(&s.conf(100), "mp1"), Some("/srv/share,mp=/share"));
    // both volumes go with the CT
    s.pct(&["destroy", "100"]).ok();
    assert!(!s.vol("lxc-disks", "subvol-100-disk-1").exists());
}

// ------------------------------------------------------------------ tasks (fork_worker)

/// Poll `cond` up to ~20 s (a bound, not a timed assertion).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// The lines of `var/log/pve/tasks/active`.
fn active_tasks(s: &Sim) -> Vec<String> {
    fs::read_to_string(s.path("var/log/pve/tasks/active"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn spawn_pct(s: &Sim, args: &[&str]) -> std::process::Child {
    Command::new(bin("pct"))
        .args(args)
        .env("PHOENIX_HOST_ROOT", s.root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[allow(unsafe_code)]
fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a child we spawned.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// pve-common `src/PVE/RESTEnvironment.pm` `fork_worker`/`active_workers`, `src/PVE/UPID.pm`
/// `encode`, `src/PVE/INotify.pm` `write_active_workers`: a running task is listed in
/// `var/log/pve/tasks/active` as `<UPID> 0` with the worker's pid and start time; when it
/// ends the line gets its end time and status (`UPID 1 ENDTIME OK`).
#[test]
fn a_task_is_listed_as_running_then_with_its_end_status() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.write("etc/pve-sim/latency", "clone 60000\n");
    let child = spawn_pct(&s, &["clone", "100", "101"]);
    wait_until("the clone task", || {
        active_tasks(&s).iter().any(|l| l.contains(":vzclone:100:"))
    });
    let line = active_tasks(&s)
        .into_iter()
        .find(|l| l.contains(":vzclone:"))
        .unwrap();
    let (upid, rest) = line.split_once(' ').unwrap();
    assert_eq!(rest, "0", "{line}");
    assert!(
        upid.starts_with("UPID:pve:") && upid.ends_with(":vzclone:100:root@pam:"),
        "{upid}"
    );
    let (pid, pstart, _) = pve_sim::task::decode_upid(upid).unwrap();
    assert!(pve_sim::task::process_running(pid, pstart));
    assert_ne!(pid, child.id(), "the worker is its own process");
    // SIGTERM to pct: forwarded to the worker, the clone cleans up after itself.
    signal(child.id(), libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "clone failed: interrupted by signal\n"
    );
    assert!(!s.has_conf(101));
    assert_eq!(conf_line(&s.conf(100), "lock"), None);
    let line = active_tasks(&s)
        .into_iter()
        .find(|l| l.starts_with(upid))
        .unwrap();
    let f: Vec<&str> = line.splitn(4, ' ').collect();
    assert_eq!(
        (f[1], f[3]),
        ("1", "clone failed: interrupted by signal"),
        "{line}"
    );
    // A task that succeeds ends with OK.
    s.write("etc/pve-sim/latency", "");
    s.pct(&["start", "100"]).ok();
    assert!(
        active_tasks(&s)
            .iter()
            .any(|l| l.contains(":vzstart:100:") && l.ends_with(" OK")),
        "{:?}",
        active_tasks(&s)
    );
}

/// `fork_worker`: the worker runs in its own session (`setsid`) with `$SIG{PIPE} = 'DEFAULT'`.
/// SIGKILL of `pct` leaves it running; the next line it writes to the dead parent's pipe kills
/// it with no cleanup: the clone's locks stay and its task line has no end status while its
/// process is gone, i.e. a stale task whose locks a caller may clear.
#[test]
fn sigkill_of_pct_leaves_the_worker_and_then_stale_locks() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.write("etc/pve-sim/latency", "clone 1500\n");
    let mut child = spawn_pct(&s, &["clone", "100", "101"]);
    wait_until("the clone's locks", || s.has_conf(101));
    let line = active_tasks(&s)
        .into_iter()
        .find(|l| l.contains(":vzclone:"))
        .unwrap();
    let upid = line.split(' ').next().unwrap().to_string();
    let (pid, pstart, _) = pve_sim::task::decode_upid(&upid).unwrap();
    signal(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    // The worker goes on: still running, locks held.
    assert!(pve_sim::task::process_running(pid, pstart));
    assert_eq!(conf_line(&s.conf(100), "lock"), Some("disk"));
    // It dies at its next output line (SIGPIPE), leaving everything as it was.
    wait_until("the worker to die", || {
        !pve_sim::task::process_running(pid, pstart)
    });
    assert_eq!(conf_line(&s.conf(100), "lock"), Some("disk"));
    assert_eq!(conf_line(&s.conf(101), "lock"), Some("create"));
    assert!(
        active_tasks(&s).contains(&format!("{upid} 0")),
        "{:?}",
        active_tasks(&s)
    );
}

/// SIGINT during `delsnapshot` (`AbstractConfig.pm` `snapshot_delete` has no cleanup): the
/// worker dies with `received interrupt`, the CT stays locked `snapshot-delete` and the
/// snapshot `snapstate: delete`, which a rollback then refuses as incomplete.
#[test]
fn interrupted_delsnapshot_leaves_an_incomplete_snapshot() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.pct(&["snapshot", "100", "s1"]).ok();
    s.write("etc/pve-sim/latency", "delsnapshot 60000\n");
    let child = spawn_pct(&s, &["delsnapshot", "100", "s1"]);
    wait_until("the delete to start", || {
        s.conf(100).contains("snapstate: delete")
    });
    signal(child.id(), libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "received interrupt\n");
    assert_eq!(conf_line(&s.conf(100), "lock"), Some("snapshot-delete"));
    s.pct(&["rollback", "100", "s1"])
        .dies("unable to rollback to incomplete snapshot (snapstate = delete)");
}

/// SIGTERM during `snapshot` (`AbstractConfig.pm` `snapshot_create`): the error path warns
/// `snapshot create failed: starting cleanup` and deletes the half-made snapshot, so neither
/// the lock nor the `snapstate: prepare` section stays.
#[test]
fn interrupted_snapshot_is_cleaned_up() {
    let s = Sim::new();
    s.create(100, &[]).ok();
    s.write("etc/pve-sim/latency", "snapshot 60000\n");
    let child = spawn_pct(&s, &["snapshot", "100", "s1"]);
    wait_until("the snapshot to start", || {
        s.conf(100).contains("snapstate: prepare")
    });
    assert_eq!(conf_line(&s.conf(100), "lock"), Some("snapshot"));
    signal(child.id(), libc::SIGTERM);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(255));
    // The worker's warnings go to stdout (its STDERR is its STDOUT), the error to stderr.
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "snapshot create failed: starting cleanup\n"
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr), "received interrupt\n");
    let c = s.conf(100);
    assert!(
        !c.contains("[s1]") && conf_line(&c, "lock").is_none(),
        "{c}"
    );
}
