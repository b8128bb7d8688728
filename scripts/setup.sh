#!/usr/bin/env bash
# Installs what imgmount's tests and example need, from Debian packages only.
# Idempotent: a package is installed only when its command is missing, and
# apt-get update runs only if something is to be installed.
#
#   scripts/setup.sh           # tools for make test / make example
#   scripts/setup.sh --check   # exit 1 (listing what is missing) instead of installing
#   scripts/setup.sh --lint    # also staticcheck, through `go install` (Go module proxy)
set -euo pipefail

check_only=0
want_lint=0
for arg in "$@"; do
	case "$arg" in
	--check) check_only=1 ;;
	--lint) want_lint=1 ;;
	-h | --help)
		sed -n '2,8p' "$0"
		exit 0
		;;
	*)
		echo "setup.sh: unknown argument $arg" >&2
		exit 2
		;;
	esac
done

# Go lives in /usr/local/go on our machines; PATH may lack it.
case ":$PATH:" in
*:/usr/local/go/bin:*) ;;
*) [ -d /usr/local/go/bin ] && PATH="$PATH:/usr/local/go/bin" ;;
esac
export PATH="$PATH:/usr/sbin:/sbin"

# command  Debian package that provides it
needs=(
	"fusermount3 fuse3"
	"umoci umoci"
	"skopeo skopeo"
	"setfattr attr"
	"getfattr attr"
	"setcap libcap2-bin"
	"zstd zstd"
	"gzip gzip"
	"tar tar"
	"debootstrap debootstrap"
	"git git"
	"make make"
	"gcc gcc"
	"mknod coreutils"
	"podman podman"
	"fio fio"
	"dockerd docker.io"
)

missing=()
for pair in "${needs[@]}"; do
	cmd=${pair%% *}
	pkg=${pair#* }
	command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
# busybox-static: a statically linked /bin/busybox, needed by the example
# image (a dynamically linked busybox would need libc inside the image).
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
	missing+=(busybox-static)
fi
# debootstrap verifies the mirror's Release file with this keyring.
if [ ! -e /usr/share/keyrings/debian-archive-keyring.gpg ]; then
	missing+=(debian-archive-keyring)
fi
# dedupe
if [ ${#missing[@]} -gt 0 ]; then
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
fi

if ! command -v go >/dev/null 2>&1; then
	echo "setup.sh: go is not installed (expected in /usr/local/go/bin); install Go $(sed -n 's/^go //p' "$(dirname "$0")/../go.mod") first" >&2
	exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$check_only" = 1 ]; then
		echo "setup.sh: missing packages: ${missing[*]}" >&2
		exit 1
	fi
	if [ "$(id -u)" != 0 ]; then
		echo "setup.sh: need root to install: ${missing[*]} (run: sudo $0)" >&2
		exit 1
	fi
	echo "setup.sh: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# FUSE needs the device; load the module if it is a module and absent.
if [ ! -e /dev/fuse ]; then
	modprobe fuse 2>/dev/null || true
	[ -e /dev/fuse ] || echo "setup.sh: warning: /dev/fuse is absent; mount tests will be skipped" >&2
fi

if [ "$want_lint" = 1 ] && ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$(go env GOPATH)/bin/staticcheck" ]; then
	[ "$check_only" = 1 ] && {
		echo "setup.sh: staticcheck missing" >&2
		exit 1
	}
	echo "setup.sh: installing staticcheck"
	go install honnef.co/go/tools/cmd/staticcheck@latest
fi

echo "setup.sh: all tools present"
