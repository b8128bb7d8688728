#!/usr/bin/env bash
# Runs the pjdfstest POSIX conformance suite in a directory and summarizes
# the result (issue #3). pjdfstest is not part of this repository, not in
# Debian, and not fetched by this script: point PJDFSTEST_DIR at a built
# copy (its tree after `make pjdfstest`: the pjdfstest program beside its
# tests/ directory), kept outside the repository's tracked files.
#
#   scripts/pjdfstest.sh run DIR [TESTS...]   run with DIR (in the fs under test) as cwd
#   scripts/pjdfstest.sh overlayfs [TESTS...] baseline: a kernel overlayfs
#   scripts/pjdfstest.sh fuse-overlayfs [TESTS...]  comparison: fuse-overlayfs
#   scripts/pjdfstest.sh check                exit 0 if pjdfstest is usable
#
# TESTS are paths under pjdfstest's tests/ (chmod, rename/09.t); all by default.
#
# Environment:
#   PJDFSTEST_DIR      the built pjdfstest tree
#                      (default ${XDG_CACHE_HOME:-~/.cache}/imgmount-dev/pjdfstest/src)
#   PJDFSTEST_OUT      where results go (default: a new directory under
#                      ${XDG_CACHE_HOME:-~/.cache}/imgmount-dev/pjdfstest/results)
#   PJDFSTEST_TIMEOUT  seconds one test file may take before it is killed (600)
#   PJDFSTEST_UPPER_FS overlayfs/fuse-overlayfs upper and work directories on
#                      tmpfs (default) or disk (a directory under /var/tmp)
#
# Results (in PJDFSTEST_OUT):
#   prove.log     prove -rv's whole output
#   failures.txt  one line per failed test file: "tests/chmod/00.t 12,15",
#                 followed by " !REASON" when the file also failed as a whole
#                 (died, bad plan); "-" when no numbered test failed
#   not-ok.txt    each failed assertion: "tests/chmod/00.t: not ok 12 - tried ..."
#   summary.txt   key=value: fs, files, tests, failed_files, failed_tests,
#                 seconds, result (PASS or FAIL)
#
# Exit status: 0 every test passed, 1 some failed, 2 usage, 3 pjdfstest or a
# tool it needs is missing.
#
# Must run as root: pjdfstest changes its uid and gid, chowns and mknods.
set -euo pipefail

cache=${XDG_CACHE_HOME:-$HOME/.cache}/imgmount-dev/pjdfstest
pjd=${PJDFSTEST_DIR:-$cache/src}
timeout_s=${PJDFSTEST_TIMEOUT:-600}

die() {
	echo "pjdfstest.sh: $*" >&2
	exit "${code:-2}"
}

usage() {
	sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'
}

# need_pkgs CMD:PACKAGE...: installs the Debian packages whose commands are
# missing.
need_pkgs() {
	local missing=() pair
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "pjdfstest.sh: installing ${missing[*]}" >&2
	if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
		! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; then
		code=3 die "could not install ${missing[*]}"
	fi
}

check() {
	[ "$(id -u)" = 0 ] || code=3 die "must run as root (pjdfstest changes uid/gid, chowns, mknods)"
	if [ ! -x "$pjd/pjdfstest" ] || [ ! -f "$pjd/tests/misc.sh" ]; then
		code=3 die "no built pjdfstest in $pjd (the pjdfstest program beside its tests/ directory); set PJDFSTEST_DIR to one"
	fi
	pjd=$(cd "$pjd" && pwd)
	# prove (perl), and what the tests call: openssl, dd, awk...
	need_pkgs prove:perl openssl:openssl timeout:coreutils awk:mawk
}

# run_in DIR [TESTS...]: runs the suite with DIR as cwd, writes the results
# and prints the summary. Returns 0 when all passed, 1 otherwise.
run_in() {
	local dir=$1
	shift
	check
	[ -d "$dir" ] || die "$dir is not a directory"
	dir=$(cd "$dir" && pwd)
	local out=${PJDFSTEST_OUT:-}
	if [ -z "$out" ]; then
		mkdir -p "$cache/results"
		out=$(mktemp -d "$cache/results/$(date +%Y%m%d-%H%M%S)-XXXX")
	fi
	mkdir -p "$out"
	out=$(cd "$out" && pwd)

	local targets=() t
	if [ $# -eq 0 ]; then
		targets=("$pjd/tests")
	else
		for t in "$@"; do
			t=${t#tests/}
			[ -e "$pjd/tests/$t" ] || die "no test $t in $pjd/tests"
			targets+=("$pjd/tests/$t")
		done
	fi

	local fs
	fs=$(cd "$dir" && df -PT . | awk 'END { print $2 }')
	echo "pjdfstest: $pjd"
	echo "pjdfstest: running in $dir ($fs), results in $out"
	local start end rc=0
	start=$(date +%s)
	# prove -rv from inside the filesystem, as pjdfstest's README says; each
	# test file runs under a timeout so a hung call cannot stall the run.
	# Only failures and the closing lines reach the terminal.
	(cd "$dir" && prove -rv --exec "timeout -k 10 $timeout_s /bin/sh" "${targets[@]}") >"$out/prove.log" 2>&1 || rc=$?
	end=$(date +%s)

	# failures.txt from the verbose stream (file headers, "not ok N" lines
	# without TODO/SKIP) and the summary report (files that failed as a
	# whole: nonzero exit, bad plan).
	: >"$out/not-ok.txt"
	awk -v pjd="$pjd/" -v details="$out/not-ok.txt" '
		function rel(p) { if (index(p, pjd) == 1) p = substr(p, length(pjd) + 1); return p }
		/^\/.*\.t \.+ ?/ && !insum { cur = rel($1); order[++n] = cur; next }
		/^Test Summary Report/ { insum = 1; next }
		!insum && /^not ok [0-9]+/ {
			if ($0 ~ /# *(TODO|SKIP)/) next
			num = $3
			print cur ": " $0 > details
			if (cur in fails) fails[cur] = fails[cur] "," num
			else fails[cur] = num
			next
		}
		insum && /^\/.*\.t \(Wstat:/ {
			cur = rel($1)
			if ($0 !~ /Wstat: 0 /) { w = $0; sub(/.*Wstat: /, "", w); sub(/ Tests:.*/, "", w); why[cur] = why[cur] " !wait status " w }
			next
		}
		insum && /^  Parse errors: / { p = $0; sub(/^  Parse errors: /, "", p); why[cur] = why[cur] " !" p; next }
		insum && /^  Non-zero exit status: / { next }
		END {
			for (i = 1; i <= n; i++) {
				f = order[i]
				if (done[f]++) continue
				if ((f in fails) || (f in why)) print f, ((f in fails) ? fails[f] : "-") why[f]
			}
		}
	' "$out/prove.log" >"$out/failures.txt"

	local files tests failed_files failed_tests result
	files=$(sed -n 's/^Files=\([0-9]*\), Tests=\([0-9]*\),.*/\1/p' "$out/prove.log" | tail -1)
	tests=$(sed -n 's/^Files=\([0-9]*\), Tests=\([0-9]*\),.*/\2/p' "$out/prove.log" | tail -1)
	failed_files=$(wc -l <"$out/failures.txt")
	failed_tests=$(awk '$2 != "-" { n += split($2, a, ",") } END { print n + 0 }' "$out/failures.txt")
	result=PASS
	if [ "$rc" != 0 ] || [ "$failed_files" != 0 ] || [ -z "$tests" ]; then
		result=FAIL
	fi
	cat >"$out/summary.txt" <<EOF
fs=$fs
files=${files:-?}
tests=${tests:-?}
failed_files=$failed_files
failed_tests=$failed_tests
seconds=$((end - start))
result=$result
EOF
	if [ "$failed_files" != 0 ]; then
		echo "pjdfstest: failed (file, test numbers):"
		sed 's/^/  /' "$out/failures.txt"
		echo "pjdfstest: the failing assertions:"
		head -200 "$out/not-ok.txt" | sed 's/^/  /'
	fi
	echo "pjdfstest: files=${files:-?} tests=${tests:-?} failed_files=$failed_files failed_tests=$failed_tests seconds=$((end - start)) fs=$fs"
	echo "pjdfstest: $((${tests:-0} - failed_tests)) passed, $failed_tests failed"
	echo "pjdfstest: result=$result (details: $out)"
	[ "$result" = PASS ]
}

# with_overlay KIND [TESTS...]: mounts an overlay of a small lower
# directory (a few files, a directory, a symlink) with upper and work
# directories on tmpfs or disk, runs the suite in a new directory in it,
# and takes it all down again.
with_overlay() {
	local kind=$1
	shift
	check
	[ "$kind" = fuse-overlayfs ] && need_pkgs fuse-overlayfs:fuse-overlayfs fusermount3:fuse3
	# Globals: the EXIT trap reads them after this function returns.
	base=$(mktemp -d "${TMPDIR:-/tmp}/pjdfstest-$kind.XXXXXX")
	scratch=$base/scratch
	mkdir -p "$base/lower" "$base/mnt" "$scratch"
	case "${PJDFSTEST_UPPER_FS:-tmpfs}" in
	tmpfs) mount -t tmpfs -o mode=0755 pjdfstest-scratch "$scratch" ;;
	disk)
		scratch=$(mktemp -d /var/tmp/pjdfstest-scratch.XXXXXX)
		;;
	*) die "PJDFSTEST_UPPER_FS must be tmpfs or disk" ;;
	esac
	mkdir -p "$scratch/upper" "$scratch/work"
	echo hello >"$base/lower/file"
	mkdir -p "$base/lower/dir/sub"
	echo nested >"$base/lower/dir/sub/nested"
	ln -s file "$base/lower/link"

	local mopts="lowerdir=$base/lower,upperdir=$scratch/upper,workdir=$scratch/work"
	cleanup() {
		cd /
		local m
		for m in "$base/mnt" "$base/scratch"; do
			if mountpoint -q "$m"; then
				umount "$m" 2>/dev/null || umount -l "$m" || true
			fi
		done
		if grep -q " $base/" /proc/self/mountinfo; then
			echo "pjdfstest.sh: still mounted under $base; not removing it" >&2
			return
		fi
		case "$scratch" in /var/tmp/pjdfstest-scratch.*) rm -rf "$scratch" ;; esac
		rm -rf "$base"
	}
	trap cleanup EXIT
	if [ "$kind" = overlayfs ]; then
		mount -t overlay -o "$mopts" pjdfstest-overlay "$base/mnt"
	else
		fuse-overlayfs -o "$mopts,allow_other" "$base/mnt"
	fi
	grep " $base/mnt " /proc/self/mountinfo | sed 's/^/pjdfstest: mount: /'
	mkdir "$base/mnt/pjdfstest"
	local rc=0
	run_in "$base/mnt/pjdfstest" "$@" || rc=$?
	return "$rc"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
run)
	[ $# -ge 1 ] || die "usage: $0 run DIR [TESTS...]"
	run_in "$@"
	;;
overlayfs | fuse-overlayfs) with_overlay "$cmd" "$@" ;;
check)
	check
	echo "pjdfstest: $pjd"
	;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
