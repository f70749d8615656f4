# thinvol - the front door.  Meson does the building; this file names the
# jobs.  `make run` and `make test` are the README's quick start: they
# install what is missing (scripts/install-deps) and build.  Every other
# target expects the dependencies to be there (`make deps` installs them)
# and neither installs packages nor configures again: meson set up a build
# directory once, and ninja regenerates it when a meson.build changes
# (a new test is a new line in one).

BUILD      ?= build
ASAN_BUILD ?= build-asan
# gcc -O3 with asserts off, as bench/README.md's figures are built: it
# warns about what the other two builds do not see (uninitialised use
# that only inlining reveals, variables used only in asserts)
RELEASE_BUILD ?= build-release
MESON      ?= meson
NINJA      ?= ninja
# make install: where to (meson's prefix), and a staging root for packages
PREFIX     ?= /usr/local
DESTDIR    ?=

.PHONY: all deps build build-asan build-release test test-fast test-asan run bench \
	bench-full install format check-format clean distclean fuzz soak

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD) >/dev/null

$(ASAN_BUILD)/build.ninja:
	CC=clang $(MESON) setup $(ASAN_BUILD) -Db_sanitize=address,undefined \
		-Db_lundef=false -Dbuildtype=debug -Doptimization=1 >/dev/null

$(RELEASE_BUILD)/build.ninja:
	$(MESON) setup $(RELEASE_BUILD) --buildtype=release -Db_ndebug=true \
		>/dev/null

build: $(BUILD)/build.ninja
	@$(NINJA) -C $(BUILD)

build-asan: $(ASAN_BUILD)/build.ninja
	@$(NINJA) -C $(ASAN_BUILD)

build-release: $(RELEASE_BUILD)/build.ninja
	@$(NINJA) -C $(RELEASE_BUILD)

# The whole suite, in the normal build (gcc) and under ASan+UBSan (clang),
# so every change also compiles warning-free with both compilers; the
# release build is compiled too (not run), for its warnings; and the
# sources must be formatted as .clang-format says (make format).
# (The quick start: dependencies first, then the builds, in that order.)
test: deps
	@scripts/check-format
	@$(MAKE) --no-print-directory build build-asan build-release
	@scripts/run-tests $(BUILD) $(ASAN_BUILD)

# The normal build only (quicker, for development).
test-fast: build
	@scripts/run-tests $(BUILD)

test-asan: build-asan
	@scripts/run-tests $(ASAN_BUILD)

# The quick start's other half: serve the default pool.
run: deps
	@$(MAKE) --no-print-directory build
	@scripts/run-default $(BUILD)

bench: build
	@bench/run $(BUILD)

bench-full: build
	@BENCH_FULL=1 bench/run $(BUILD)

# libFuzzer runs of tests/fuzz (clang, ASan+UBSan): each target for
# FUZZ_SECONDS on a copy of its corpus; prints where crash inputs went.
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz:
	@tests/fuzz/run-fuzz $(FUZZ_BUILD) $(FUZZ_SECONDS)

# The soak test (tests/soak/soak.py): random management and verified I/O
# from several NBD clients for SOAK_SECONDS, the daemon killed at random
# moments and restarted, the pool checked and every flushed byte verified
# after each restart.  Prints its seed (TV_SEED=N replays the choices) and
# what it did.
SOAK_SECONDS ?= 300
soak: build
	@THINVOL=$(BUILD)/src/cli/thinvol SOAK_SECONDS=$(SOAK_SECONDS) \
		/usr/bin/python3 tests/soak/soak.py

# The command, libthinvol.so.0, thinvol.h, thinvol.pc and thinvol(8) under
# $(DESTDIR)$(PREFIX).  PREFIX is the build's meson prefix (it is compiled
# into thinvol.pc), so it is set before building, and only when it differs
# from the build's: `meson configure` regenerates the build even when
# nothing changes.
install: $(BUILD)/build.ninja
	@want='$(abspath $(PREFIX))'; \
	have=$$($(MESON) introspect --buildoptions $(BUILD) | python3 -c \
		'import json, sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"][0])'); \
	[ "$$have" = "$$want" ] || \
		$(MESON) configure $(BUILD) -Dprefix="$$want" >/dev/null
	@$(NINJA) -C $(BUILD)
	$(MESON) install -C $(BUILD) --no-rebuild \
		$(if $(DESTDIR),--destdir $(abspath $(DESTDIR)))

# Formats what check-format checks (in a commit of its own).
format:
	git ls-files -z -- 'src/*.[ch]' 'include/*.[ch]' 'tests/*.[ch]' \
		'bench/*.[ch]' | xargs -0 clang-format -i

# Whether every tracked .c and .h under src, include, tests and bench is
# formatted as .clang-format says (lists the files that are not).
check-format:
	@scripts/check-format

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(RELEASE_BUILD)

distclean: clean
	rm -rf var
