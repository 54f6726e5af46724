#!/usr/bin/env bash
# Install Debian packages that are missing (as root); with all of them already
# installed it does nothing, not even `apt-get update`.
#
#   install-debian-packages.sh PACKAGE...
set -euo pipefail

missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
# Without root, `make test` still runs the tiers that need none of these; the
# tests that do say what is missing when they skip (under CI=true they fail).
if [ "$(id -u)" != 0 ] && [ "${CI:-}" != true ]; then
    echo "install-debian-packages: not root, not installing ${missing[*]}" >&2
    exit 0
fi
echo "install-debian-packages: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
