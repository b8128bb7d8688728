#!/usr/bin/env bash
# Builds the bundled example image, a small busybox-based image with three
# layers, from Debian's busybox-static package, with umoci and skopeo:
#
#   layer 0  busybox and its applets, /etc/os-release, passwd, group, /tmp
#   layer 1  the "app": /app/hello.sh and /app/data.txt; deletes
#            /usr/share/imgmount/README (a whiteout)
#   layer 2  /etc/motd; then the config: Env, Cmd, WorkingDir, Labels
#
# and saves it as a `docker save` style tarball (docker-archive), tagged
# imgmount/example:latest. Times are fixed (SOURCE_DATE_EPOCH), so the same
# busybox gives the same image. An unchanged result leaves OUT untouched.
#
#   example/build.sh [OUT]        # default: example/example.tar
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/example.tar}
epoch=${SOURCE_DATE_EPOCH:-1700000000}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

for c in umoci skopeo; do
	command -v "$c" >/dev/null || {
		echo "example/build.sh: $c is missing: run scripts/setup.sh" >&2
		exit 1
	}
done
busybox=/bin/busybox
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked' && ! ldd "$busybox" 2>&1 | grep -q 'not a dynamic'; then
	echo "example/build.sh: $busybox is not statically linked: install busybox-static (scripts/setup.sh)" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/imgmount-example.XXXXXX")
trap 'rm -rf "$work"' EXIT
oci="$work/oci"
b="$work/bundle"
r="$b/rootfs"
q() { "$@" >>"$work/log" 2>&1 || {
	cat "$work/log" >&2
	return 1
}; }

# Give every path under the rootfs the fixed time, so repack is reproducible.
settime() { find "$r" -exec touch -h -d "@$epoch" {} +; }

umoci init --layout "$oci"
q umoci new --image "$oci:latest"
q umoci config --image "$oci:latest" --created "$created" --architecture "$(dpkg --print-architecture)" --os linux \
	--history.created "$created" --history.created_by "umoci new"
q umoci unpack --image "$oci:latest" "$b"

# layer 0: busybox base
mkdir -p "$r"/{bin,etc,root,tmp,usr/share/imgmount}
chmod 0755 "$r" "$r"/{bin,etc,usr,usr/share,usr/share/imgmount}
chmod 0700 "$r/root"
chmod 1777 "$r/tmp"
install -m 0755 "$busybox" "$r/bin/busybox"
for applet in $("$r/bin/busybox" --list); do
	[ -e "$r/bin/$applet" ] || ln -s busybox "$r/bin/$applet"
done
cat >"$r/etc/os-release" <<'EOF'
NAME="imgmount example"
ID=imgmount-example
VERSION_ID=1
PRETTY_NAME="imgmount example image (busybox)"
EOF
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
printf 'This file is deleted by layer 1: the mount must not show it.\n' >"$r/usr/share/imgmount/README"
chmod 0644 "$r"/etc/{os-release,passwd,group} "$r/usr/share/imgmount/README"
settime
q umoci repack --refresh-bundle --image "$oci:latest" --history.created "$created" \
	--history.created_by "busybox $(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo static) base" "$b"

# layer 1: the app, and a deletion
mkdir -p "$r/app"
cat >"$r/app/hello.sh" <<'EOF'
#!/bin/sh
echo "Hello from the imgmount example image ($(uname -m)); data: $(cat /app/data.txt)"
EOF
printf 'forty-two\n' >"$r/app/data.txt"
chmod 0755 "$r/app" "$r/app/hello.sh"
chmod 0644 "$r/app/data.txt"
rm "$r/usr/share/imgmount/README"
settime
q umoci repack --refresh-bundle --image "$oci:latest" --history.created "$created" \
	--history.created_by "COPY app/ /app/ and remove the README" "$b"

# layer 2: a file, then the runtime config
printf 'Welcome to the imgmount example image.\n' >"$r/etc/motd"
chmod 0644 "$r/etc/motd"
settime
q umoci repack --image "$oci:latest" --history.created "$created" --history.created_by "add /etc/motd" "$b"
q umoci config --image "$oci:latest" --created "$created" --history.created "$created" \
	--history.created_by "config: Env, Cmd, WorkingDir, Labels" \
	--config.env PATH=/bin --config.env GREETING=hello \
	--config.cmd /app/hello.sh --config.workingdir /app \
	--config.label org.opencontainers.image.title=imgmount-example \
	--config.label org.opencontainers.image.description="busybox image bundled with imgmount"

tmp_out="$work/example.tar"
q skopeo copy -q "oci:$oci:latest" "docker-archive:$tmp_out:imgmount/example:latest"
if [ -f "$out" ] && cmp -s "$tmp_out" "$out"; then
	echo "example/build.sh: $out is up to date"
else
	mkdir -p "$(dirname "$out")"
	mv "$tmp_out" "$out"
	echo "example/build.sh: wrote $out"
fi
