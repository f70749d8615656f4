#!/usr/bin/env bash
# Packaging: `meson install` of the build this test runs from, into a
# temporary DESTDIR (the build itself is not changed), installs the
# command, libthinvol.so.0 exporting exactly the API of thinvol.h, the
# header, thinvol.pc and thinvol(8); a C program built with the installed
# pkg-config file against the installed library opens a pool made by the
# freshly built thinvol and lists its volumes.
set -euo pipefail
tv=${THINVOL:?THINVOL must name the thinvol binary}
build=${MESON_BUILD_ROOT:?MESON_BUILD_ROOT must name the build directory}
src=${TV_SRCDIR:?TV_SRCDIR must name the source directory}
cc=${TV_CC:-cc}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }

command -v meson >/dev/null || skip "no meson in PATH to run 'meson install'"
command -v pkg-config >/dev/null || skip "no pkg-config"

# Where this build installs (prefix, libdir, ...), from the build itself.
opt() {
	meson introspect "$build" --buildoptions | python3 -c 'import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == sys.argv[1]))' "$1"
}
prefix=$(opt prefix)
# relative to the prefix unless absolute
under() { case $1 in /*) echo "$1" ;; *) echo "$prefix/$1" ;; esac; }
libdir=$(under "$(opt libdir)")
bindir=$(under "$(opt bindir)")
incdir=$(under "$(opt includedir)")
mandir=$(under "$(opt mandir)")

dest=$dir/dest
meson install -C "$build" --no-rebuild --destdir "$dest" >"$dir/install.log" 2>&1 ||
	fail "meson install: $(tail -5 "$dir/install.log")"
case $dest in "$build"*) fail "DESTDIR inside the build" ;; esac

for f in "$bindir/thinvol" "$libdir/libthinvol.so.0" "$libdir/libthinvol.so" \
	"$incdir/thinvol.h" "$libdir/pkgconfig/thinvol.pc" "$mandir/man8/thinvol.8"; do
	[ -e "$dest$f" ] || fail "not installed: $f ($(cd "$dest" && find . | head -30))"
done
cmp -s "$src/include/thinvol.h" "$dest$incdir/thinvol.h" || fail "thinvol.h differs"
grep -q "^prefix=$prefix\$" "$dest$libdir/pkgconfig/thinvol.pc" ||
	fail "thinvol.pc: $(cat "$dest$libdir/pkgconfig/thinvol.pc")"

# The installed command runs.
"$dest$bindir/thinvol" --version >"$dir/out" || fail "installed thinvol --version"
grep -q "^thinvol [0-9]" "$dir/out" || fail "--version: $(cat "$dir/out")"

# The shared library: its soname, and exactly the public API exported.
lib=$dest$libdir/libthinvol.so.0
if command -v readelf >/dev/null; then
	readelf -d "$lib" | grep -q 'SONAME.*\[libthinvol\.so\.0\]' ||
		fail "soname: $(readelf -d "$lib" | grep SONAME)"
fi
if command -v nm >/dev/null; then
	nm -D --defined-only "$lib" | awk '$2 == "T" { print $3 }' |
		sed 's/@.*//' | grep -v -E '^_(init|fini)$' | sort >"$dir/exported"
	sed -n 's/^[a-z].*[ *]\(tv_[a-z0-9_]*\)(.*/\1/p' "$src/include/thinvol.h" |
		sort -u >"$dir/declared"
	[ -s "$dir/declared" ] || fail "no functions found in thinvol.h"
	diff "$dir/declared" "$dir/exported" >"$dir/diff" ||
		fail "exported functions differ from thinvol.h (< header, > library): $(cat "$dir/diff")"
fi

# A program built against the installed library lists a pool's volumes.
cat >"$dir/lsvol.c" <<'EOF'
#include <stdio.h>
#include <thinvol.h>

int main(int argc, char **argv)
{
	struct tv_pool_open_opts o = { .read_only = true };
	struct tv_vol_info v[2]; /* small pages: the cursor must work */
	struct tv_pool *pool;
	uint64_t cursor = 0;
	int n;

	if (argc != 2)
		return 2;
	if (tv_pool_open(argv[1], &o, &pool) < 0) {
		fprintf(stderr, "open: %s\n", tv_last_error());
		return 1;
	}
	while ((n = tv_vol_list(pool, &cursor, v, 2)) > 0)
		for (int i = 0; i < n; i++)
			printf("%s\n", v[i].name);
	if (n < 0)
		fprintf(stderr, "list: %s\n", tv_last_error());
	if (tv_pool_close(pool) < 0 || n < 0)
		return 1;
	return 0;
}
EOF
export PKG_CONFIG_PATH=$dest$libdir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
flags=$(pkg-config --cflags --libs thinvol) || fail "pkg-config thinvol"
case $flags in *"-L$dest$libdir"*) ;; *) fail "pkg-config flags: $flags" ;; esac
san=()
# a sanitizer build's library needs the sanitizer runtime in the program
[ "${TV_SANITIZE:-none}" = none ] || san=("-fsanitize=$TV_SANITIZE")
# shellcheck disable=SC2086
$cc -std=c11 -Wall -Wextra -Werror "${san[@]}" -o "$dir/lsvol" "$dir/lsvol.c" \
	$flags 2>"$dir/cc.log" || fail "compiling against the library: $(cat "$dir/cc.log")"

p=$dir/a.pool
"$tv" pool create "$p" --size 64M >/dev/null
"$tv" create "$p" alpha --size 1M >/dev/null
"$tv" create "$p" "beta gamma" --size 1M >/dev/null
"$tv" create "$p" "ünï" --size 1M >/dev/null
"$tv" snapshot "$p" alpha alpha-snap --read-only >/dev/null
"$tv" delete "$p" "beta gamma"
"$tv" create "$p" delta --size 4M >/dev/null

LD_LIBRARY_PATH=$dest$libdir "$dir/lsvol" "$p" >"$dir/out" 2>"$dir/err" ||
	fail "lsvol: $(cat "$dir/err")"
printf 'alpha\nünï\nalpha-snap\ndelta\n' | cmp -s - "$dir/out" ||
	fail "lsvol printed: $(cat "$dir/out")"
# it ran with the installed library, not some other one
if command -v ldd >/dev/null; then
	# (not piped into grep -q: with pipefail, ldd's SIGPIPE when grep
	# stops reading early would fail the test at random)
	LD_LIBRARY_PATH=$dest$libdir ldd "$dir/lsvol" >"$dir/ldd"
	grep -q "libthinvol.so.0 => $dest$libdir/libthinvol.so.0" "$dir/ldd" ||
		fail "lsvol loads: $(cat "$dir/ldd")"
fi
# and the pool is still fine for the command
"$tv" check "$p" >/dev/null || fail "check after lsvol"

# The man page renders, without warnings.
if command -v man >/dev/null && command -v groff >/dev/null; then
	MANWIDTH=80 man -l "$dest$mandir/man8/thinvol.8" >"$dir/man" 2>"$dir/man.err" ||
		fail "man -l: $(cat "$dir/man.err")"
	for s in NAME SYNOPSIS DESCRIPTION COMMANDS OPTIONS "EXIT STATUS" FILES \
		EXAMPLES "SEE ALSO"; do
		grep -q "^$s" "$dir/man" || fail "thinvol(8) lacks $s"
	done
	grep -q "import POOL VOL FILE" "$dir/man" || fail "thinvol(8) lacks import"
	groff -man -Tutf8 -ww -z "$dest$mandir/man8/thinvol.8" 2>"$dir/groff.err"
	[ ! -s "$dir/groff.err" ] || fail "groff warnings: $(cat "$dir/groff.err")"
else
	head -1 "$dest$mandir/man8/thinvol.8" | grep -q '^\.\\"' ||
		fail "thinvol.8 is not roff"
fi

echo "test-install: ok"
