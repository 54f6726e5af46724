#!/usr/bin/env bash
# Build the container base image locally, with nothing pulled from a registry:
# debootstrap a Debian bookworm rootfs with Python 3.11, add uv (the installer
# BentoML's generated Dockerfile uses) and import the result into podman.
# Does nothing when the image already exists, so `make image` stays cheap.
#
#   build-base-image.sh [IMAGE]     default: localhost/visiontune-base:bookworm
set -euo pipefail

IMAGE=${1:-localhost/visiontune-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# BentoML's Dockerfile installs uv with pip unless uv >= 0.13.4 is present.
# uv is told to trust the system's CA store (UV_SYSTEM_CERTS): Debian's roots,
# or a site's own CA bundle mounted by the build (deploy/local/build-image.sh).
UV_VERSION=0.13.4
PACKAGES=python3,python3-venv,ca-certificates,libgomp1

if podman image exists "$IMAGE"; then
    echo "build-base-image: $IMAGE exists"
    exit 0
fi

WORK=$(mktemp -d /var/tmp/visiontune-base.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOTFS=$WORK/rootfs

bootstrap() {
    echo "build-base-image: debootstrap bookworm from $MIRROR"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS" "$MIRROR" \
        > "$WORK/debootstrap.log" || { tail -30 "$WORK/debootstrap.log"; exit 1; }
}

add_uv() {
    pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
        --dest "$WORK/uv" "uv==$UV_VERSION"
    python3 -m zipfile -e "$WORK"/uv/uv-*.whl "$WORK/uv/unpacked"
    install -m 0755 "$WORK"/uv/unpacked/uv-*.data/scripts/uv "$ROOTFS/usr/local/bin/uv"
}

slim_down() {
    chroot "$ROOTFS" apt-get clean
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
        "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/var/log/*.log
}

import_image() {
    tar --numeric-owner -C "$ROOTFS" -c . | podman import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV UV_PYTHON_DOWNLOADS=never' \
        --change 'ENV UV_SYSTEM_CERTS=true' \
        --change 'LABEL org.opencontainers.image.description="Debian bookworm + Python 3.11 + uv, built by visiontune"' \
        --change 'CMD ["/bin/bash"]' \
        - "$IMAGE" >/dev/null
}

bootstrap
add_uv
slim_down
import_image
podman run --rm "$IMAGE" sh -c 'python3 --version && uv --version'
echo "build-base-image: built $IMAGE"
