#!/usr/bin/env bash
# Installs the alternatives the benchmarks measure imgmount against, from
# Debian packages, only when one of them is missing (make bench runs it
# after scripts/setup.sh, which installs umoci, skopeo, debootstrap...).
#
#   integration/bench/tools.sh          install what is missing
#   integration/bench/tools.sh --check  exit 1, listing what is missing
#
# ratarmount is not in Debian: set RATARMOUNT to a command that runs it
# (e.g. "python3 /path/to/ratarmount/ratarmount.py") to include it. When
# RATARMOUNT is unset the driver uses ~/.cache/imgmount-dev/ratarmount.sh if
# it exists: ratarmount's source tree (with its core/) and mfusepy's in
# ~/.cache/imgmount-dev/{ratarmount,mfusepy}, run by a script such as
#   D=~/.cache/imgmount-dev
#   PYTHONPATH=$D/ratarmount:$D/ratarmount/core:$D/mfusepy exec /usr/bin/python3 -m ratarmount "$@"
# Its .tar.gz support (the compressed-image rows) needs indexed_gzip, which
# Debian packages (python3-indexed-gzip, for /usr/bin/python3): installed
# here when ratarmount is set up either way.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

# command  Debian package that provides it
needs=(
	"podman podman"
	"archivemount archivemount"
	"fuse-overlayfs fuse-overlayfs"
	"fio fio"
	"gzip gzip"
	"find findutils"
)
missing=()
for pair in "${needs[@]}"; do
	command -v "${pair%% *}" >/dev/null 2>&1 || missing+=("${pair#* }")
done
if [ -n "${RATARMOUNT:-}" ] || [ -e "$HOME/.cache/imgmount-dev/ratarmount.sh" ]; then
	/usr/bin/python3 -c 'import indexed_gzip' >/dev/null 2>&1 || missing+=(python3-indexed-gzip)
fi
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "${1:-}" = --check ]; then
	echo "missing: ${missing[*]}"
	exit 1
fi
if [ "$(id -u)" != 0 ]; then
	echo "tools.sh: installing ${missing[*]} needs root" >&2
	exit 1
fi
echo "tools.sh: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
