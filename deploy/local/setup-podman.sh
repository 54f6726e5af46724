#!/usr/bin/env bash
# Install and configure podman, buildah, runc and debootstrap from Debian's
# packages, as root, so that `bentoml containerize` and `podman kube play` work
# on a fresh machine with no container registry in reach, and nginx, the front
# door that `visiontune deploy` switches between pods. Idempotent: a second
# run installs nothing and rewrites nothing.
set -euo pipefail
cd "$(dirname "$0")"

# catatonit: the pause process of the pods `podman kube play` creates.
PACKAGES=(podman buildah runc catatonit debootstrap uidmap slirp4netns fuse-overlayfs nginx)
CONF=/etc/containers/containers.conf

# crun fails in this sandbox and the default ulimits cannot be raised here:
# use runc and inherit the caller's limits.
write_containers_conf() {
    local wanted
    wanted=$'[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n'
    if [ -f "$CONF" ] && [ "$(cat "$CONF")"$'\n' = "$wanted" ]; then
        return 0
    fi
    mkdir -p "$(dirname "$CONF")"
    printf '%s' "$wanted" > "$CONF"
    echo "setup-podman: wrote $CONF"
}

./install-debian-packages.sh "${PACKAGES[@]}"
if [ "$(id -u)" != 0 ] && [ "${CI:-}" != true ]; then
    echo "setup-podman: not root; the container tests (tests/e2e) will be skipped" >&2
    exit 0
fi
write_containers_conf
podman info --format '{{.Host.OCIRuntime.Name}}' >/dev/null
echo "setup-podman: $(podman --version), $(buildah --version | cut -d' ' -f1-3), runtime runc"
