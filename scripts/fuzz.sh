#!/usr/bin/env bash
# Runs every fuzz target of the module (func Fuzz* in a _test.go file) for
# FUZZTIME each (default 60s), one after the other. A crasher is written to
# the package's testdata/fuzz/<target>/ and fails the run: commit it, and it
# becomes a regression test that every `go test` runs.
#
#   scripts/fuzz.sh              # all targets
#   FUZZTIME=10s scripts/fuzz.sh FuzzOpen
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/go/bin"
fuzztime=${FUZZTIME:-60s}
only=${1:-}
# Fuzz inputs and the directories FuzzOpen makes come and go by the
# thousand: on tmpfs they cost no disk work.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi

ran=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		[ -n "$only" ] && [ "$target" != "$only" ] && continue
		echo "== $target ($pkg, $fuzztime)"
		# The minimizer gets a few seconds: by default it may take a whole
		# minute over one new input, during which nothing is fuzzed.
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 5s "$pkg" 2>&1 |
			grep -v '^fuzz: elapsed' || { echo "fuzz: $target failed"; exit 1; }
		ran=$((ran + 1))
	done
done
[ "$ran" -gt 0 ] || { echo "fuzz: no target matched ${only:-any}"; exit 1; }
echo "fuzz: $ran targets, $fuzztime each, no failure"
