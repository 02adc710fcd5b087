#!/usr/bin/env bash
# Print the Debian archive mirror this machine's apt is configured with (the URI that serves the
# "bookworm" suite of the main archive, not debian-security), read from /etc/apt/sources.list and
# /etc/apt/sources.list.d/*.list|*.sources at run time. Exits 1 when none is configured.
set -euo pipefail
suite="${1:-bookworm}"
root="${SKYRIG_APT_ROOT:-}"   # for tests: an alternative root holding etc/apt/...
files=()
[ -f "$root/etc/apt/sources.list" ] && files+=("$root/etc/apt/sources.list")
for f in "$root"/etc/apt/sources.list.d/*.list "$root"/etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && files+=("$f")
done
for f in "${files[@]}"; do
  case "$f" in
    *.sources)
      # deb822 stanzas: pick URIs of a stanza whose Types has deb and Suites has the suite.
      awk -v suite="$suite" '
        function flush() {
          if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") {
            n = split(uris, u, " "); for (i = 1; i <= n; i++) print u[i]
          }
          types = ""; suites = ""; uris = ""
        }
        /^[[:space:]]*#/ { next }
        /^[[:space:]]*$/ { flush(); next }
        tolower($1) == "types:"  { $1 = ""; types = $0 }
        tolower($1) == "suites:" { $1 = ""; suites = $0 }
        tolower($1) == "uris:"   { $1 = ""; uris = $0 }
        END { flush() }' "$f"
      ;;
    *)
      # one-line style: deb [options] URI SUITE COMPONENTS...
      sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2 }'
      ;;
  esac
done | grep -v -- '-security' | grep -E '^(https?|file)://' | head -n 1 | grep . || {
  echo "debian-mirror.sh: no 'deb' source for suite '$suite' in $root/etc/apt/sources.list(.d)" >&2
  exit 1
}
