#!/usr/bin/env bash
# Prints the Debian mirror this machine's apt uses for SUITE (default
# bookworm), read from /etc/apt/sources.list and /etc/apt/sources.list.d/
# (one-line .list and deb822 .sources files). Security and update suites are
# not mirrors of the main archive and are skipped. Exits 1 if none is found.
#
#   scripts/debian-mirror.sh [SUITE]
set -euo pipefail
suite=${1:-bookworm}

files=()
[ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] && files+=("$f")
done
[ ${#files[@]} -gt 0 ] || {
	echo "debian-mirror.sh: no apt sources found" >&2
	exit 1
}

# Both formats flattened to "URI SUITE..." lines, then the first URI whose
# suites include $suite wins.
for f in "${files[@]}"; do
	case "$f" in
	*.sources)
		# deb822: stanzas separated by blank lines.
		awk '
			function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no") { n = split(uris, u, " "); for (i = 1; i <= n; i++) print u[i], suites } types = uris = suites = ""; enabled = "" }
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			{ key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "") }
			key == "types" { types = $0 }
			key == "uris" { uris = $0 }
			key == "suites" { suites = $0 }
			key == "enabled" { enabled = tolower($0) }
			END { flush() }
		' "$f"
		;;
	*)
		# one-line: deb [options] URI SUITE COMPONENTS...
		sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" { print $2, $3 }'
		;;
	esac
done | awk -v s="$suite" '{ for (i = 2; i <= NF; i++) if ($i == s) { print $1; found = 1; exit } } END { exit !found }' || {
	echo "debian-mirror.sh: no apt source carries the suite $suite" >&2
	exit 1
}
