# The two commands the README names.
#   make demo   build the library and run the C quickstart on the embedded default
#               (a SQLite file, target/quickstart.db)
#   make test   run every test (Rust, C, C++, valgrind, Python); ends "tests: N passed, N failed"
#   make test-full   the same with the bad-input sweep also under valgrind, then fuzzing
#               (8 targets, a minute each) and the sync soak test (a minute): what CI runs
#               (.ci/run).
# And the benchmark (see BENCHMARKS.md):
#   make bench  release build; floors (bench_floors), the C ABI workload (benches/abi_bench.c),
#               durable commits against plain SQLite alternating (examples/bench_durable.rs)
#               and the Python layer's cost (bindings/python/benchmarks/ctypes_overhead.py),
#               printed as one table (saved in target/bench/table.txt). About a minute.
#               Then two rows for sync catch-up, into memory and into a SQLite file
#               (examples/bench_sync; target/bench/sync.txt)
#               and one for the WAL frames (pages) of a durable commit, by table
#               (scripts/wal-frames; target/bench/frames.txt).
#               MNEMO_BENCH_QUICK=1 make bench: a short smoke run (a few seconds once built).
#               BENCH_RUNS=3: three full runs, then one table of the per-row median run.
#               BENCH_ARGS="--sqlite-commits 20000 ..." passes flags to abi_bench;
#               BENCH_DIR=/some/dir puts the SQLite and fsync files there (default $$TMPDIR or /tmp).

#   make bench-ab BASE=<git rev>   the release library of BASE against the working tree's,
#               both loaded in one process, batches alternating (benches/ab_bench.c).

.PHONY: demo test test-full bench bench-ab
demo:
	$(MAKE) -s -C bindings/c run ARGS=sqlite:$(CURDIR)/target/quickstart.db

test:
	scripts/test-all

test-full:
	scripts/test-all --full

BENCH_OUT  ?= $(CURDIR)/target/bench
BENCH_DIR  ?= $(or $(TMPDIR),/tmp)
BENCH_ARGS ?=
BENCH_RUNS ?= 1
PYTHON     ?= python3
MNEMO_ABI  := $(shell sed -n 's/^\#define MNEMO_ABI_VERSION //p' $(CURDIR)/include/mnemo.h)
RELEASE    := $(CURDIR)/target/release

# bash for pipefail: a failing benchmark fails `make bench` even though its output is tee'd.
bench: SHELL := /bin/bash
bench:
	cargo build --release --lib --example bench_floors --example bench_durable
	@# Programs linked with -lmnemo ask for the SONAME; give the build tree that name too.
	ln -sf libmnemo.so $(RELEASE)/libmnemo.so.$(MNEMO_ABI)
	@mkdir -p $(BENCH_OUT)
	$(CC) -std=c11 -Wall -Wextra -Werror -pedantic -O2 -I$(CURDIR)/include \
	    benches/abi_bench.c -o $(BENCH_OUT)/abi_bench \
	    -L$(RELEASE) -Wl,-rpath,$(RELEASE) -lmnemo -lpthread
	@echo "== machine: $$(nproc) cores, $$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)," \
	    "$$(awk '/MemTotal/ {printf "%.1f GiB", $$2/1048576}' /proc/meminfo) RAM"
	@echo "== tree: $$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
	    "+ $$(git status --porcelain 2>/dev/null | wc -l) changed/new paths;" \
	    "libmnemo.so sha256 $$(sha256sum $(RELEASE)/libmnemo.so | cut -c1-12)"
	@set -eo pipefail; for i in $$(seq 1 $(BENCH_RUNS)); do \
	    suffix=$$( [ $(BENCH_RUNS) -gt 1 ] && echo "-$$i" || true ); \
	    echo "== run $$i of $(BENCH_RUNS); load average $$(cut -d' ' -f1-3 /proc/loadavg)"; \
	    $(RELEASE)/examples/bench_floors $(BENCH_DIR) > $(BENCH_OUT)/floors$$suffix.txt; \
	    $(BENCH_OUT)/abi_bench --floors $(BENCH_OUT)/floors$$suffix.txt --dir $(BENCH_DIR) \
	        --results $(BENCH_OUT)/abi_results$$suffix.txt $(BENCH_ARGS) \
	        | tee $(BENCH_OUT)/table$$suffix.txt; \
	    $(RELEASE)/examples/bench_durable $(BENCH_DIR) | tee -a $(BENCH_OUT)/table$$suffix.txt; \
	    MNEMO_LIB=$(RELEASE)/libmnemo.so $(PYTHON) bindings/python/benchmarks/ctypes_overhead.py \
	        --c-results $(BENCH_OUT)/abi_results$$suffix.txt | tee -a $(BENCH_OUT)/table$$suffix.txt; \
	    echo "== end of run $$i; load average $$(cut -d' ' -f1-3 /proc/loadavg)"; \
	done; \
	if [ $(BENCH_RUNS) -gt 1 ]; then \
	    echo; $(PYTHON) benches/median_of_runs.py $$(seq -f '$(BENCH_OUT)/table-%g.txt' 1 $(BENCH_RUNS)) \
	        | tee $(BENCH_OUT)/table.txt; \
	fi
	@# Sync: an empty peer caught up over loopback (5,000 entries, median of three) against
	@# the single-core Ed25519 verify rate of the same run; then into a SQLite file against
	@# into memory; two rows, saved in sync.txt.
	cargo build --release --example bench_sync
	@set -eo pipefail; MNEMO_BENCH_QUICK=1 $(RELEASE)/examples/bench_sync 5000 $(BENCH_DIR) \
	    | tee $(BENCH_OUT)/sync.txt
	@# Pages: WAL frames a durable single-key commit writes, by table (scripts/wal-frames,
	@# under strace; a "skipped" row without it); saved in frames.txt.
	@set -eo pipefail; MNEMO_LIB=$(RELEASE)/libmnemo.so $(PYTHON) scripts/wal-frames --row \
	    | tee $(BENCH_OUT)/frames.txt

BASE ?= HEAD
AB_ARGS ?=
bench-ab:
	scripts/bench-ab $(BASE) $(AB_ARGS)

# make install PREFIX=/usr/local [DESTDIR=/staging]: the release library, header,
# pkg-config and CMake files (see scripts/install).
PREFIX ?= /usr/local
.PHONY: install
install:
	DESTDIR="$(DESTDIR)" scripts/install "$(PREFIX)"

# The PostgreSQL rows of `make bench` (BENCHMARKS.md, "PostgreSQL"): benches/pg_bench.c,
# durable commits against plain one-row INSERTs and 1 against 4 processes, on a private
# cluster with fsync on (scripts/bench-postgres; one "skipped: no PostgreSQL" line without
# the server binaries; MNEMO_BENCH_POSTGRES_URL=postgres://... uses that server instead).
# Runs before the rows above, once whatever BENCH_RUNS; also kept in target/bench/pg_table.txt.
# PG_BENCH_ARGS="--commits 5000 ..." passes flags to pg_bench. `make bench-postgres`: only these.
PG_BENCH_ARGS ?=
.PHONY: bench-postgres
bench: bench-postgres
bench-postgres: SHELL := /bin/bash
bench-postgres:
	cargo build --release --lib --example pg_baseline
	ln -sf libmnemo.so $(RELEASE)/libmnemo.so.$(MNEMO_ABI)
	@mkdir -p $(BENCH_OUT)
	$(CC) -std=c11 -Wall -Wextra -Werror -pedantic -O2 -I$(CURDIR)/include \
	    benches/pg_bench.c -o $(BENCH_OUT)/pg_bench \
	    -L$(RELEASE) -Wl,-rpath,$(RELEASE) -lmnemo
	@set -o pipefail; MNEMO_PG_TMPDIR=$(BENCH_DIR) scripts/bench-postgres $(BENCH_OUT)/pg_bench \
	    $(RELEASE)/examples/pg_baseline $(PG_BENCH_ARGS) | tee $(BENCH_OUT)/pg_table.txt
