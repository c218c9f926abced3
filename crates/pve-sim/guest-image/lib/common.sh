# Shared helpers of the pve-sim guest doubles (sourced by /usr/local/bin/*).
# State lives inside the container rootfs:
#   /var/lib/pve-sim/dpkg/<pkg>        installed package -> version (dpkg/apt)
#   /var/lib/pve-sim/units/<unit>      unit files provided by installed packages (systemctl)
#   /run/pve-sim/systemd/active/<unit> active units (cleared at container boot)
#   /var/lib/pve-sim/nvidia/           driver user space (runfile), cuda-drivers damage
#   /var/lib/docker-sim/               docker containers, images, volumes
#   /var/lib/apt/lists/pve-sim-repos   repositories known at the last `apt-get update`

SIM=/var/lib/pve-sim
PKGDB=$SIM/dpkg
UNITDB=$SIM/units
ACTIVE=/run/pve-sim/systemd/active
DOCKERDB=/var/lib/docker-sim
NVDB=$SIM/nvidia
REPOSNAP=/var/lib/apt/lists/pve-sim-repos

# Timing markers `pct start` writes (epoch milliseconds, from the host's latency rules):
# the guest's systemd reports `running` from /run/pve-sim/boot-done-ms on (`boot <ms>`), its
# network (DHCP, DNS) works from /run/pve-sim/network-up-ms on (`network <ms>`).
now_ms() { date +%s%3N; }
# True while the time in marker file $1 has not come yet.
before_marker() {
    local at
    at=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$at" ] && [ "$(now_ms)" -lt "$at" ]
}
net_down() { before_marker /run/pve-sim/network-up-ms; }
booting() { before_marker /run/pve-sim/boot-done-ms; }

pkg_installed() { [ -f "$PKGDB/$1" ]; }
pkg_version() { cat "$PKGDB/$1" 2>/dev/null; }

# A command provided by a package that is not installed is simply not there.
need_pkg() {
    pkg_installed "$2" && return 0
    echo "bash: $1: command not found" >&2
    exit 127
}

# write_atomic PATH < content: no half-written state files.
write_atomic() {
    local tmp
    tmp="$1.pve-sim.$$"
    cat >"$tmp" && mv -f "$tmp" "$1"
}

unit_name() {
    case "$1" in
        *.service | *.socket | *.timer | *.target | *.mount | *.path) printf '%s\n' "$1" ;;
        *) printf '%s.service\n' "$1" ;;
    esac
}

unit_file() {
    if [ -f "/etc/systemd/system/$1" ]; then
        printf '%s\n' "/etc/systemd/system/$1"
    elif [ -f "$UNITDB/$1" ]; then
        printf '%s\n' "$UNITDB/$1"
    else
        return 1
    fi
}

# Units the boot starts (marker content 0, written at `pct start`) are only `activating` until
# the guest's boot is done (`boot` latency); units started by hand are active at once.
unit_activating() { [ -f "$ACTIVE/$1" ] && booting && [ "$(cat "$ACTIVE/$1")" = 0 ]; }
unit_active() { [ -f "$ACTIVE/$1" ] && ! unit_activating "$1"; }

docker_active() { unit_active docker.service; }

# The port a systemd unit listens on: `X-PveSim-Listen=PORT` or `--port N` in ExecStart.
unit_listen_port() {
    local f
    f=$(unit_file "$1") || return 1
    sed -n -e 's/^X-PveSim-Listen=\([0-9]*\).*/\1/p' \
        -e 's/^ExecStart=.*--port[= ]\([0-9][0-9]*\).*/\1/p' "$f" | head -n1
}

# The model a vLLM unit serves: `--served-model-name` or `--model` of its ExecStart, unquoted
# as systemd does (double quotes, backslash escapes, `%%` and `$$`).
unit_model() {
    local f py
    f=$(unit_file "$1") || return 1
    py=$(host_python) || return 1
    "$py" - "$f" <<'PY'
import shlex, sys
line = next((l[len("ExecStart="):] for l in open(sys.argv[1]) if l.startswith("ExecStart=")), "")
args = [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(line)]
found = None
for flag in ("--model", "--served-model-name"):
    if flag in args and args.index(flag) + 1 < len(args):
        found = args[args.index(flag) + 1]
if found is None:
    sys.exit(1)
print(found)
PY
}

model_list_json() {
    local py
    py=$(host_python) || return 1
    "$py" -c 'import json,sys; print(json.dumps({"object":"list","data":[{"id":sys.argv[1],"object":"model","owned_by":"vllm"}]}))' "$1"
}

# Who answers on localhost:PORT (prints a description), or fail.
port_owner() {
    local port=$1 c u p
    if docker_active && [ -d "$DOCKERDB/containers" ]; then
        for c in "$DOCKERDB"/containers/*/; do
            [ -f "$c/state" ] || continue
            [ "$(cat "$c/state")" = running ] || continue
            if grep -qx "$port" "$c/hostports" 2>/dev/null; then
                echo "docker container $(cat "$c/name")"
                return 0
            fi
        done
    fi
    if [ -d "$ACTIVE" ]; then
        for u in "$ACTIVE"/*; do
            [ -f "$u" ] || continue
            p=$(unit_listen_port "${u##*/}")
            if [ "$p" = "$port" ]; then
                echo "systemd unit ${u##*/}"
                return 0
            fi
        done
    fi
    return 1
}

FAKE_KEY_BEGIN='-----BEGIN PGP PUBLIC KEY BLOCK-----'
fake_key() {
    printf '%s\n\nmQINBPveSimFakeKeyFor%s\n=pveS\n-----END PGP PUBLIC KEY BLOCK-----\n' "$FAKE_KEY_BEGIN" "$1"
}

# sim_fetch URL: body on stdout. Returns 0 (HTTP 200), 6 (unresolvable host),
# 7 (nothing listening) or 22 (HTTP 404). Sets FETCH_HOST.
sim_fetch() {
    local url=$1 rest hostport host port path owner
    case "$url" in
        http://* | https://*) rest=${url#*://} ;;
        *) rest=$url ;;
    esac
    hostport=${rest%%/*}
    path=/${rest#"$hostport"}
    path=${path#//}
    [ "$path" = "" ] && path=/
    case "$path" in /*) ;; *) path=/$path ;; esac
    host=${hostport%%:*}
    port=${hostport#"$host"}
    port=${port#:}
    FETCH_HOST=$host
    # Without the guest's network (DHCP/DNS not up yet) no name resolves; localhost still does.
    case "$host" in
        localhost | 127.0.0.1 | "[::1]" | ::1) ;;
        *) net_down && return 6 ;;
    esac
    case "$host" in
        localhost | 127.0.0.1 | "[::1]" | ::1)
            if [ -z "$port" ]; then
                case "$url" in https://*) port=443 ;; *) port=80 ;; esac
            fi
            FETCH_PORT=$port
            owner=$(port_owner "$port") || return 7
            case "$path" in
                */v1/models*)
                    local model=model
                    case "$owner" in "systemd unit "*) model=$(unit_model "${owner#systemd unit }") || model=model ;; esac
                    model_list_json "$model"
                    ;;
                */health*) ;;
                *) printf 'pve-sim: %s answered %s\n' "$owner" "$path" ;;
            esac
            return 0
            ;;
        download.docker.com)
            case "$path" in
                /linux/ubuntu/gpg) fake_key docker ;;
                *) return 22 ;;
            esac
            ;;
        nvidia.github.io)
            case "$path" in
                /libnvidia-container/gpgkey) fake_key libnvidia-container ;;
                /libnvidia-container/stable/deb/nvidia-container-toolkit.list)
                    printf 'deb https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n'
                    printf '#deb https://nvidia.github.io/libnvidia-container/experimental/deb/$(ARCH) /\n'
                    ;;
                *) return 22 ;;
            esac
            ;;
        developer.download.nvidia.com)
            case "$path" in
                /compute/cuda/repos/ubuntu2404/x86_64/3bf863cc.pub) fake_key cuda ;;
                /compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_*_all.deb)
                    printf 'PVE-SIM-DEB cuda-keyring 1.1-1\n'
                    ;;
                *) return 22 ;;
            esac
            ;;
        *) return 6 ;;
    esac
    return 0
}

# Python of the machine, used for JSON/TOML editing and venvs.
host_python() {
    if [ -x /usr/bin/python3 ]; then
        printf '%s\n' /usr/bin/python3
    else
        echo "pve-sim: this double needs the machine's /usr/bin/python3" >&2
        return 1
    fi
}
