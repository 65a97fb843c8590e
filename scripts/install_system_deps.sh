#!/usr/bin/env bash
# Install the Debian/Ubuntu packages a headless napari + Qt6 + OpenGL test run needs
# (a virtual X server, Mesa's software OpenGL, the xcb libraries Qt's xcb platform
# plugin loads), but only those that are missing: on a machine that has them all
# this does nothing and needs no network. Uses sudo only when not run as root.
set -euo pipefail

# One entry per package; "a|b" means either will do (names differ between releases,
# e.g. Ubuntu 24.04's libglib2.0-0t64); the first one apt knows is installed.
packages=(
    xvfb                  # Xvfb: the virtual display pytest-xvfb starts
    xauth
    libgl1                # libGL.so.1, loaded by Qt's GLX integration and by vispy
    libglx-mesa0          # Mesa's GLX vendor library for libglvnd
    libgl1-mesa-dri       # llvmpipe: OpenGL without a GPU
    libegl1
    'libglib2.0-0t64|libglib2.0-0'  # libQt6Core links against GLib
    libfontconfig1
    libdbus-1-3
    libxkbcommon-x11-0
    libxcb-cursor0        # required by Qt >= 6.5's xcb plugin
    libxcb-icccm4
    libxcb-image0
    libxcb-keysyms1
    libxcb-randr0
    libxcb-render-util0
    libxcb-xinerama0
    libxcb-xfixes0
    libxcb-shape0
)

# `python3 -m venv` needs ensurepip, which Debian and Ubuntu ship separately.
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip' 2>/dev/null; then
    packages+=(python3-venv)
fi

is_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

missing=()
for entry in "${packages[@]}"; do
    IFS='|' read -r -a choices <<<"$entry"
    found=0
    for name in "${choices[@]}"; do
        if is_installed "$name"; then
            found=1
            break
        fi
    done
    if [ "$found" -eq 0 ]; then
        missing+=("$entry")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install_system_deps: all system packages present"
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "install_system_deps: missing ${missing[*]}, and there is no apt-get;" \
        "install them with your package manager" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "install_system_deps: missing ${missing[*]}; run as root or install sudo" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "+ ${sudo[*]:+sudo }apt-get update"
"${sudo[@]}" apt-get update -q

# Resolve "a|b" to the first alternative that has an installation candidate.
to_install=()
for entry in "${missing[@]}"; do
    IFS='|' read -r -a choices <<<"$entry"
    pick=${choices[-1]}
    for name in "${choices[@]}"; do
        if apt-cache policy "$name" 2>/dev/null | grep -q 'Candidate: [^(]'; then
            pick=$name
            break
        fi
    done
    to_install+=("$pick")
done

echo "+ ${sudo[*]:+sudo }apt-get install -y --no-install-recommends ${to_install[*]}"
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${to_install[@]}"
