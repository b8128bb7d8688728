#!/usr/bin/env bash
# Mounts the example image and shows what imgmount does; `make example`
# runs it after building bin/imgmount and example/example.tar. Needs root
# for the chroot (the mount itself works unprivileged).
#
#   example/demo.sh [IMAGE]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${IMGMOUNT:-$repo/bin/imgmount}
img=${1:-$here/example.tar}
[ -x "$bin" ] || {
	echo "demo.sh: $bin is missing: make build" >&2
	exit 1
}
[ -f "$img" ] || {
	echo "demo.sh: $img is missing: example/build.sh" >&2
	exit 1
}

mnt=$(mktemp -d "${TMPDIR:-/tmp}/imgmount-example.XXXXXX")
layers=$(mktemp -d "${TMPDIR:-/tmp}/imgmount-example-layers.XXXXXX")
work=$(mktemp -d "${TMPDIR:-/tmp}/imgmount-example-edits.XXXXXX")
cleanup() {
	for m in "$mnt" "$layers"; do
		if mountpoint -q "$m"; then "$bin" -u "$m" 2>/dev/null || fusermount3 -u -z "$m"; fi
		rmdir "$m" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

show() {
	printf '\n\033[1m$ %s\033[0m\n' "$*"
	"$@"
}

show "$bin" "$img" "$mnt"
show ls -l "$mnt"
show cat "$mnt/etc/os-release"
show "$bin" inspect "$img"
if [ "$(id -u)" = 0 ]; then
	show chroot "$mnt" /app/hello.sh
	show chroot "$mnt" /bin/env -i PATH=/bin /bin/sh -c 'ls -l /app; cat /etc/motd'
else
	echo "(not root: skipping the chroot)"
fi
show "$bin" --layers "$img" "$layers"
show ls "$layers"
show ls -a "$layers"/01-*/usr/share/imgmount
show "$bin" -u "$layers"
show "$bin" -u "$mnt"

# Edit it: the changes go to an upper directory, the tarball stays as it is;
# commit makes them a new layer of a new image tarball.
show "$bin" --upper "$work/edits" "$img" "$mnt"
show sh -c "echo 'edited by the imgmount demo' > '$mnt/etc/motd'"
show rm "$mnt/app/hello.sh"
show find "$work/edits"
show "$bin" commit "$mnt" --tag imgmount-example:edited -m "demo edits" -o "$work/edited.tar"
show "$bin" -u "$mnt"
show "$bin" inspect "$work/edited.tar"
show "$bin" "$work/edited.tar" "$mnt"
show cat "$mnt/etc/motd"
show ls "$mnt/app"
show "$bin" -u "$mnt"
echo
echo "demo.sh: done; the image was never extracted, and the original tarball never changed."
