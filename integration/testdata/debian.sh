#!/usr/bin/env bash
# Builds the Debian test image: a real `debootstrap --variant=minbase` rootfs
# as layer 0, then layers made by umoci that change things (whiteouts, a
# replaced file, a replaced hardlink target, an opaque directory, setuid,
# fifo, device node, hardlinks, xattrs, a file capability, owners), then
# converts it with skopeo into every input format imgmount reads.
#
#   integration/testdata/debian.sh OUTDIR
#
# Writes, in OUTDIR:
#   debian/oci/                 OCI layout, tag "bookworm" (gzip layers; what umoci writes)
#   debian-docker.tar           docker-archive (legacy `docker save` layout), by skopeo
#   debian-docker.tar.gz        the same, gzipped (`docker save | gzip`)
#   debian-oci-gzip.tar         oci-archive, gzip layers, by skopeo
#   debian-oci-zstd.tar         oci-archive, zstd layers, by skopeo
#   debian.stamp                hash of this script; when it matches, nothing is rebuilt
# The Docker 25 formats are written from debian/oci by the Go tests.
#
# The Debian mirror is the one apt uses here (scripts/debian-mirror.sh).
# IMGMOUNT_DEBIAN_SUITE overrides the suite (default bookworm).
set -euo pipefail

out=${1:?usage: debian.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
suite=${IMGMOUNT_DEBIAN_SUITE:-bookworm}
tag=bookworm
name=imgmount-test/debian:$tag

mkdir -p "$out"
out=$(cd "$out" && pwd)
stamp="$out/debian.stamp"
want=$({ sha256sum "$0" | cut -d' ' -f1; echo "$suite"; } | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	echo "debian.sh: $out is up to date"
	exit 0
fi
rm -f "$stamp"

work="$out/debian.work"
log="$out/debian.log"
rm -rf "$work" "$out/debian" "$out"/debian-*.tar "$out"/debian-*.tar.gz
mkdir -p "$work"
: >"$log"
# Removes the work tree, never crossing into a filesystem mounted inside it
# (debootstrap mounts /proc and /sys in the target while it runs, and may
# bind-mount device nodes in a container).
cleanup() {
	local rc=$?
	if [ $rc != 0 ]; then
		echo "debian.sh: failed (rc=$rc); last lines of $log:" >&2
		tail -30 "$log" >&2
	fi
	awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT

step() {
	echo "debian.sh: $*"
	echo "=== $*" >>"$log"
}

# --- layer 0: a real distribution rootfs -------------------------------------
mirror=$("$repo/scripts/debian-mirror.sh" "$suite")
step "debootstrap --variant=minbase $suite (mirror from apt sources)"
t0=$(date +%s)
debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >>"$log" 2>&1
# As Debian's own container images do: no downloaded packages or lists.
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/cache/apt/*.bin \
	"$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/log/bootstrap.log
echo "debian.sh: debootstrap took $(($(date +%s) - t0)) s"

oci="$out/debian/oci"
b="$work/bundle"
umoci init --layout "$oci"
umoci new --image "$oci:$tag"
umoci unpack --image "$oci:$tag" "$b" >>"$log" 2>&1
cp -a "$work/rootfs/." "$b/rootfs/"
rm -rf "$work/rootfs"
step "layer 0: the rootfs"
umoci repack --refresh-bundle --image "$oci:$tag" \
	--history.created_by "debootstrap --variant=minbase $suite" "$b" >>"$log" 2>&1

# --- layer 1: additions, deletions, special files -----------------------------
r="$b/rootfs"
step "layer 1: whiteouts, replaced file, setuid, fifo, device, hardlink, xattrs, capability"
rm -rf "$r/usr/share/doc"              # directory deleted -> usr/share/.wh.doc
rm -f "$r/etc/issue.net"               # file deleted -> etc/.wh.issue.net
echo "imgmount test image \\n \\l" >"$r/etc/issue" # file replaced
mkdir -p "$r/opt/imgmount/bin" "$r/opt/imgmount/empty"
printf 'hello from layer 1\n' >"$r/opt/imgmount/hello.txt"
ln "$r/opt/imgmount/hello.txt" "$r/opt/imgmount/hello-link.txt" # hardlink
ln -s hello.txt "$r/opt/imgmount/hello-symlink"
setfattr -n user.test -v "imgmount layer 1" "$r/opt/imgmount/hello.txt"
printf '#!/bin/sh\necho "hello from $0"\n' >"$r/opt/imgmount/bin/hello"
chmod 0755 "$r/opt/imgmount/bin/hello"
cp "$r/usr/bin/true" "$r/usr/local/bin/suid-true"
chmod 4755 "$r/usr/local/bin/suid-true" # setuid
cp "$r/usr/bin/true" "$r/usr/local/bin/cap-true"
if setcap cap_net_bind_service=+ep "$r/usr/local/bin/cap-true" 2>>"$log"; then
	echo "debian.sh: security.capability set on /usr/local/bin/cap-true"
else
	echo "debian.sh: setcap failed here; no security.capability in the image" | tee -a "$log"
fi
mkdir -m 2775 "$r/srv/shared" # setgid dir
chown 0:50 "$r/srv/shared"
printf 'owned\n' >"$r/srv/shared/owned"
chown 1000:1000 "$r/srv/shared/owned"
chmod 0640 "$r/srv/shared/owned"
mkfifo -m 0620 "$r/run/imgmount.fifo"
mknod -m 0660 "$r/dev/imgmount-loop" b 7 0
mknod -m 0600 "$r/dev/imgmount-null" c 1 3
mkdir -m 1777 "$r/var/tmp/sticky"
umoci repack --refresh-bundle --image "$oci:$tag" \
	--history.created_by "layer 1: whiteouts, special files" "$b" >>"$log" 2>&1

# --- layer 2: changes on top of layer 1 ---------------------------------------
step "layer 2: replace a hardlink target, delete from layer 1, dir<->file, chmod only"
rm "$r/opt/imgmount/hello.txt" # replace one name of a hardlink pair
printf 'hello from layer 2\n' >"$r/opt/imgmount/hello.txt"
rm -rf "$r/opt/imgmount/empty"           # delete what layer 1 added
rm -rf "$r/srv/shared"                   # directory replaced by a file
printf 'was a directory\n' >"$r/srv/shared"
rm "$r/run/imgmount.fifo"                # fifo replaced by a directory
mkdir "$r/run/imgmount.fifo"
printf 'in a dir\n' >"$r/run/imgmount.fifo/file"
chmod 0600 "$r/etc/issue"                # metadata-only change
chown 100:101 "$r/var/local"
rm -rf "$r/var/log/apt"                  # delete a base directory
umoci repack --refresh-bundle --image "$oci:$tag" \
	--history.created_by "layer 2: replace and delete" "$b" >>"$log" 2>&1
rm -rf "$b"

# --- layer 3: an opaque directory ---------------------------------------------
step "layer 3: opaque /etc/apt/apt.conf.d"
mkdir -p "$work/opq"
printf 'APT::Install-Recommends "false";\n' >"$work/opq/99imgmount"
umoci insert --opaque --image "$oci:$tag" \
	--history.created_by "layer 3: opaque /etc/apt/apt.conf.d" \
	"$work/opq" /etc/apt/apt.conf.d >>"$log" 2>&1

# --- config --------------------------------------------------------------------
step "config"
umoci config --image "$oci:$tag" \
	--config.env "PATH=/opt/imgmount/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
	--config.env "IMGMOUNT_TEST=1" \
	--config.entrypoint /bin/sh --config.entrypoint -c \
	--config.cmd "cat /etc/os-release" \
	--config.workingdir /opt/imgmount \
	--config.user 0:0 \
	--config.exposedports 8080/tcp --config.exposedports 53/udp \
	--config.label org.opencontainers.image.title=imgmount-debian \
	--config.label "org.imgmount.note=multi-layer test image" \
	--author "imgmount integration tests" \
	--history.created_by "umoci config" >>"$log" 2>&1

# --- other formats ---------------------------------------------------------------
step "skopeo: docker-archive, oci-archive (gzip), oci-archive (zstd)"
skopeo copy -q "oci:$oci:$tag" "docker-archive:$out/debian-docker.tar:$name" >>"$log" 2>&1
gzip -c "$out/debian-docker.tar" >"$out/debian-docker.tar.gz"
skopeo copy -q "oci:$oci:$tag" "oci-archive:$out/debian-oci-gzip.tar:$tag" >>"$log" 2>&1
skopeo copy -q --dest-compress --dest-compress-format zstd \
	"oci:$oci:$tag" "oci-archive:$out/debian-oci-zstd.tar:$tag" >>"$log" 2>&1

echo "$want" >"$stamp"
echo "debian.sh: done"
