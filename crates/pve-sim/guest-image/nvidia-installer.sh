#!/bin/sh
# pve-sim double of the NVIDIA Linux driver installer (makeself .run archive), version @VERSION@.
# Inside an LXC container only the user space can be installed: --no-kernel-module is required.
VERSION=@VERSION@
NVDB=/var/lib/pve-sim/nvidia
LOG=/var/log/nvidia-installer.log

silent=0
nokmod=0
for a in "$@"; do
    case "$a" in
        -s | --silent | --ui=none | --no-questions) silent=1 ;;
        --no-kernel-module | --no-kernel-modules) nokmod=1 ;;
        --no-x-check | --no-nouveau-check | --no-nvidia-modprobe | --no-dkms | --dkms=* | --accept-license | \
            --no-drm | --install-libglvnd | --no-install-libglvnd | --no-backup | --no-systemd | \
            --no-kernel-module-source | --disable-nouveau | --no-rpms | --no-distro-scripts | -q | -a | -N | \
            --no-network | --no-opengl-files | --no-check-for-alternate-installs | --tmpdir=* | --log-file-name=*) ;;
        --version | -v)
            echo "NVIDIA-Linux-x86_64-$VERSION.run: version $VERSION"
            exit 0
            ;;
        *)
            echo "nvidia-installer: unrecognized option: \"$a\"" >&2
            echo "ERROR: Invalid commandline, please run \`NVIDIA-Linux-x86_64-$VERSION.run --help\` for usage information." >&2
            exit 1
            ;;
    esac
done

echo "Verifying archive integrity... OK"
echo "Uncompressing NVIDIA Accelerated Graphics Driver for Linux-x86_64 $VERSION..........."
if [ "$silent" != 1 ] && [ ! -t 0 ]; then
    echo "ERROR: Unable to initialize the user interface (no terminal); rerun with --silent." >&2
    exit 1
fi
if [ "$nokmod" != 1 ]; then
    {
        echo "ERROR: Unable to find the kernel source tree for the currently running kernel.  Please make sure you have installed the kernel source files for your kernel and that they are properly configured; on Red Hat Linux systems, for example, be sure you have the 'kernel-source' or 'kernel-devel' RPM installed.  If you know the correct kernel source files are installed, you may specify the kernel source path with the '--kernel-source-path' command line option."
        echo "ERROR: Installation has failed.  Please see the file '$LOG' for details.  You may find suggestions on fixing installation problems in the README available on the Linux driver download page at www.nvidia.com."
    } | tee -a "$LOG" >&2
    exit 1
fi
mkdir -p "$NVDB" /var/log
printf '%s\n' "$VERSION" >"$NVDB/driver_version.tmp" && mv -f "$NVDB/driver_version.tmp" "$NVDB/driver_version"
rm -f "$NVDB/userspace-replaced"
echo "nvidia-installer log file '$LOG'" >"$LOG"
echo "Installation of the NVIDIA Accelerated Graphics Driver for Linux-x86_64 (version: $VERSION) is now complete." >>"$LOG"
exit 0
