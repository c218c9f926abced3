"""pve-sim stand-in for pip (offline): `install` creates an importable stub package plus
dist-info metadata in the target site-packages, so `python -c 'import vllm'` works."""
import os
import re
import shutil
import sys
import sysconfig

# Console scripts real wheels install next to the interpreter.
CONSOLE_SCRIPTS = {"vllm": ["vllm"], "huggingface_hub": ["huggingface-cli", "hf"], "torch": ["torchrun"]}
DEFAULT_VERSIONS = {"vllm": "0.10.1.1", "torch": "2.7.1", "transformers": "4.55.0", "pip": "24.0"}
NAME = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)(\[[A-Za-z0-9,._ -]*\])?\s*(([=<>!~]=?|===)\s*([A-Za-z0-9.*+!_-]+))?(\s*;.*)?$")


def norm(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def target_dir(args):
    if "--pve-sim-target" in args:
        i = args.index("--pve-sim-target")
        t = args[i + 1]
        del args[i : i + 2]
        return t
    return sysconfig.get_paths()["purelib"]


def installed(site):
    out = {}
    if os.path.isdir(site):
        for e in sorted(os.listdir(site)):
            if e.endswith(".dist-info"):
                meta = dict(
                    l.split(": ", 1) for l in open(os.path.join(site, e, "METADATA")).read().splitlines() if ": " in l
                )
                out[norm(meta["Name"])] = (meta["Name"], meta["Version"], e)
    return out


def net_down():
    """The guest's network is not up yet (`network` latency rule, marker written by `pct start`)."""
    try:
        with open("/run/pve-sim/network-up-ms") as f:
            at = int(f.read().strip())
    except (OSError, ValueError):
        return False
    import time
    return time.time() * 1000 < at


def install(site, args):
    specs, i = [], 0
    value_opts = {"-i", "--index-url", "--extra-index-url", "-c", "--constraint", "--target", "-t", "--prefix",
                  "--trusted-host", "-f", "--find-links", "--cache-dir", "--timeout", "--retries", "--root"}
    while i < len(args):
        a = args[i]
        if a in ("-r", "--requirement"):
            try:
                for line in open(args[i + 1]):
                    line = line.split("#", 1)[0].strip()
                    if line and not line.startswith("-"):
                        specs.append(line)
            except OSError as e:
                print(f"ERROR: Could not open requirements file: {e}", file=sys.stderr)
                return 1
            i += 2
            continue
        if a in value_opts:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        specs.append(a)
        i += 1
    if not specs:
        print("ERROR: You must give at least one requirement to install (see \"pip help install\")", file=sys.stderr)
        return 1
    have = installed(site)
    done = []
    for s in specs:
        m = NAME.match(s.strip())
        if not m:
            print(f"ERROR: Invalid requirement: '{s}'", file=sys.stderr)
            return 1
        name = m.group(1)
        op, ver = m.group(5), m.group(6)
        version = ver if op in ("==", "===") and "*" not in ver else DEFAULT_VERSIONS.get(norm(name), "1.0.0")
        if norm(name) in have and (op not in ("==", "===") or have[norm(name)][1] == version):
            print(f"Requirement already satisfied: {name} in {site} ({have[norm(name)][1]})")
            continue
        if net_down():
            # pip without DNS: retries, then no index answers and nothing satisfies the requirement.
            for n in range(1, 6):
                print(f"WARNING: Retrying (Retry(total={5 - n}, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/{norm(name)}/", file=sys.stderr)
            print(f"ERROR: Could not find a version that satisfies the requirement {s} (from versions: none)", file=sys.stderr)
            print(f"ERROR: No matching distribution found for {s}", file=sys.stderr)
            return 1
        print(f"Collecting {name}")
        if norm(name) in have:
            shutil.rmtree(os.path.join(site, have[norm(name)][2]), ignore_errors=True)
        os.makedirs(site, exist_ok=True)
        mod = os.path.join(site, norm(name))
        if not os.path.exists(mod):
            os.makedirs(mod)
            with open(os.path.join(mod, "__init__.py"), "w") as f:
                f.write(f'"""pve-sim stub of {name}."""\n__version__ = "{version}"\n')
        dist = os.path.join(site, f"{norm(name)}-{version}.dist-info")
        os.makedirs(dist, exist_ok=True)
        with open(os.path.join(dist, "METADATA"), "w") as f:
            f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        with open(os.path.join(dist, "INSTALLER"), "w") as f:
            f.write("pip\n")
        bindir = os.path.join(sys.prefix, "bin") if sys.prefix != sys.base_prefix else "/usr/local/bin"
        for script in CONSOLE_SCRIPTS.get(norm(name), []):
            path = os.path.join(bindir, script)
            with open(path, "w") as f:
                f.write(f'#!/bin/sh\n# pve-sim stub console script of {name}\necho "{script} {version} (pve-sim stub)"\n')
            os.chmod(path, 0o755)
        done.append(f"{name}-{version}")
    if done:
        print("Successfully installed " + " ".join(done))
    return 0


def main(argv):
    args = list(argv)
    site = target_dir(args)
    args = [a for a in args if a not in ("-q", "--quiet", "-v", "--verbose", "--no-cache-dir",
                                         "--disable-pip-version-check", "--no-input", "--break-system-packages")]
    if not args or args[0] in ("-h", "--help", "help"):
        print("Usage:\n  pip <command> [options]")
        return 0
    cmd, rest = args[0], args[1:]
    if cmd in ("-V", "--version"):
        print(f"pip 24.0 from {site}/pip (python {sys.version_info[0]}.{sys.version_info[1]})")
        return 0
    if cmd == "install":
        return install(site, rest)
    if cmd in ("list", "freeze"):
        for _, (name, ver, _) in sorted(installed(site).items()):
            print(f"{name}=={ver}" if cmd == "freeze" else f"{name} {ver}")
        return 0
    if cmd == "show":
        have, missing = installed(site), []
        for n in rest:
            if norm(n) in have:
                print(f"Name: {have[norm(n)][0]}\nVersion: {have[norm(n)][1]}\nLocation: {site}")
            else:
                missing.append(n)
        if missing:
            print("WARNING: Package(s) not found: " + ", ".join(missing), file=sys.stderr)
            return 1
        return 0
    if cmd == "uninstall":
        have = installed(site)
        for n in [a for a in rest if not a.startswith("-")]:
            if norm(n) not in have:
                print(f"WARNING: Skipping {n} as it is not installed.", file=sys.stderr)
                continue
            shutil.rmtree(os.path.join(site, have[norm(n)][2]), ignore_errors=True)
            shutil.rmtree(os.path.join(site, norm(n)), ignore_errors=True)
            print(f"Successfully uninstalled {have[norm(n)][0]}-{have[norm(n)][1]}")
        return 0
    print(f'ERROR: unknown command "{cmd}"', file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
