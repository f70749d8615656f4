# Shared by the CLI test scripts (sourced, not run): a temporary directory,
# fail, and expect/expect_in, which run a command and check its exit status
# and that a failure says so in exactly one line of stderr while a success
# says nothing there.  stdout lands in $dir/out, stderr in $dir/err.
tv=${THINVOL:?THINVOL must name the thinvol binary}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# drop_fs_warning FILE: leave out of FILE the warning pool create gives
# for a pool file on ext4 without a journal (docs/format.md "Ranged
# commits"): it says where the test runs, not what the command did
drop_fs_warning() {
	grep -av -- ': on ext4 without a journal: ' "$1" >"$1.kept" || true
	mv "$1.kept" "$1"
}

# expect STATUS CMD...
expect() {
	local want=$1; shift
	local got=0 cmd="$*"
	cmd=${cmd:0:160}
	"$@" >"$dir/out" 2>"$dir/err" || got=$?
	drop_fs_warning "$dir/err"
	[ "$got" -eq "$want" ] ||
		fail "$cmd exited $got, want $want: $(cat "$dir/err")"
	if [ "$want" -eq 0 ]; then
		[ ! -s "$dir/err" ] || fail "$cmd: stderr: $(cat "$dir/err")"
	else
		[ "$(wc -l <"$dir/err")" -eq 1 ] ||
			fail "$cmd: want one line on stderr: $(cat "$dir/err")"
	fi
}

# expect_in STATUS TEXT CMD...: as expect, and stderr contains TEXT
expect_in() {
	local want=$1 text=$2; shift 2
	expect "$want" "$@"
	grep -qF -- "$text" "$dir/err" ||
		fail "$*: stderr lacks '$text': $(cat "$dir/err")"
}
