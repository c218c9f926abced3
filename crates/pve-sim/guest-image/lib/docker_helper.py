"""JSON side of the pve-sim docker double: daemon.json runtimes, `inspect` objects and the
small Go-template subset (`{{.A.B}}`, `{{json .A}}`) that `--format` needs. One process per
docker command keeps the double fast."""
import json
import os
import re
import sys

DAEMON = "/run/pve-sim/docker/daemon.json"


def daemon():
    try:
        with open(DAEMON) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def runtimes():
    rt = {
        "io.containerd.runc.v2": {"path": "runc", "status": {"org.opencontainers.runtime-spec.features": "{}"}},
        "runc": {"path": "runc", "status": {"org.opencontainers.runtime-spec.features": "{}"}},
    }
    for k, v in (daemon().get("runtimes") or {}).items():
        rt[k] = {"path": v.get("path", ""), "args": v.get("args", [])} if isinstance(v, dict) else {}
    return rt


def default_runtime():
    return daemon().get("default-runtime", "runc")


def render(obj, fmt):
    def get(path):
        v = obj
        for k in [p for p in path.split(".") if p]:
            if not isinstance(v, dict) or k not in v:
                print(f'template parsing error: map has no entry for key "{k}"', file=sys.stderr)
                sys.exit(1)
            v = v[k]
        return v

    def one(m):
        expr = m.group(1).strip()
        if expr.startswith("json "):
            return json.dumps(get(expr[5:].strip()), separators=(",", ":"))
        v = get(expr)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "map[" + " ".join(f"{k}:{v[k]}" for k in sorted(v)) + "]"
        if isinstance(v, list):
            return "[" + " ".join(map(str, v)) + "]"
        return str(v)

    return re.sub(r"\{\{(.*?)\}\}", one, fmt)


def inspect_obj(d, state):
    def r(f):
        try:
            return open(os.path.join(d, f)).read().strip()
        except OSError:
            return ""

    def lines(f):
        return [x for x in r(f).splitlines() if x]

    pb = {}
    for p in lines("ports"):
        parts = p.split(":")
        cp = parts[-1] if "/" in parts[-1] else parts[-1] + "/tcp"
        pb.setdefault(cp, []).append({"HostIp": parts[0] if len(parts) == 3 else "", "HostPort": parts[-2] if len(parts) > 1 else ""})
    return {
        "Id": r("id"),
        "Name": "/" + r("name"),
        "Created": r("created"),
        "State": {"Status": state, "Running": state == "running", "ExitCode": 0},
        "Config": {"Image": r("image"), "Env": lines("env")},
        "HostConfig": {
            "RestartPolicy": {"Name": r("restart").split(":")[0], "MaximumRetryCount": 0},
            "Runtime": r("runtime"),
            "PortBindings": pb,
            "Binds": lines("volumes"),
        },
        "Mounts": [{"Source": v.split(":")[0], "Destination": v.split(":")[1] if ":" in v else ""} for v in lines("volumes")],
    }


def main(argv):
    cmd = argv[0]
    if cmd == "runtimes":
        print("\n".join(runtimes()))
    elif cmd == "default-runtime":
        print(default_runtime())
    elif cmd == "info":
        fmt, total, running, version = argv[1], int(argv[2]), int(argv[3]), argv[4]
        info = {
            # dockerd honours "storage-driver" from daemon.json (vfs is also its fallback on ZFS < 2.2)
            "Driver": daemon().get("storage-driver", "overlay2"), "DefaultRuntime": default_runtime(), "Runtimes": runtimes(),
            "Containers": total, "ContainersRunning": running, "ServerVersion": version,
            "OperatingSystem": "Ubuntu 24.04.2 LTS", "CgroupDriver": "systemd", "CgroupVersion": "2",
            "DockerRootDir": "/var/lib/docker",
        }
        if fmt:
            print(render(info, fmt))
        else:
            print(" Runtimes: " + " ".join(sorted(info["Runtimes"])))
            print(" Default Runtime: " + info["DefaultRuntime"])
    elif cmd == "inspect":
        fmt, pairs = argv[1], argv[2:]
        objs = [inspect_obj(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]
        if fmt:
            for o in objs:
                print(render(o, fmt))
        else:
            print(json.dumps(objs, indent=4))
    else:
        print(f"docker_helper: unknown command {cmd}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
