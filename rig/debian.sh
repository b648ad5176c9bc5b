# Debian packages for the rig and the guest images: download once with apt-get, unpack once
# with dpkg-deb, cache under .build/rig. Sourced by rig/rig and guests/linux/build.
DEBIAN_CACHE="${DEBIAN_CACHE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.build/rig}"

# Downloads a package, following a kernel meta-package (linux-image-amd64) to the versioned
# package it depends on; prints the .deb's path.
debian_download() {
    local name="$1" dir="$DEBIAN_CACHE/debs" deb target
    mkdir -p "$dir"
    deb=$(ls "$dir"/"${name}"_*.deb 2>/dev/null | head -1 || true)
    if [ -z "$deb" ]; then
        (cd "$dir" && apt-get download -q "$name" >/dev/null 2>&1) || { echo "debian: apt-get download $name failed" >&2; return 1; }
        deb=$(ls "$dir"/"${name}"_*.deb | head -1)
    fi
    target=$(dpkg-deb -f "$deb" Depends | sed -n 's/^\(linux-image-[0-9][^ ,]*\).*/\1/p')
    if [ -n "$target" ] && [ "$target" != "$name" ]; then
        debian_download "$target"
    else
        echo "$deb"
    fi
}

# Unpacks a package into $DEBIAN_CACHE/<dir>, unless that exact package is already there.
debian_unpack() {
    local deb="$1" dir="$DEBIAN_CACHE/$2"
    if [ ! -f "$dir/.from" ] || [ "$(cat "$dir/.from")" != "$(basename "$deb")" ]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        dpkg-deb -x "$deb" "$dir"
        basename "$deb" > "$dir/.from"
    fi
}
