# The two commands: `make demo` and `make test`. Each runs the setup script
# first, so each works alone on a fresh Debian 12 machine.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
CTEST_ARGS ?=
# Tests run two at a time: most integration tests wait on processes and
# sockets, not the CPU (each uses its own ports, bridges and folders).
CTEST_JOBS ?= 2

.PHONY: all setup configure build test demo format clean

all: build

setup:
	@scripts/setup.sh

# code-server, the `vscode-web` IDE (the runner's `code_server` key): Node.js
# 24 and code-server from npm into /opt/spacegate/code-server, its native
# modules built here (about 2 minutes and 800 MB). Not part of `setup`;
# tests/integration/vscode_web_test.py skips without it.
.PHONY: install-code-server
install-code-server:
	@scripts/install_code_server.sh

configure: setup
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 600 -j $(CTEST_JOBS) $(CTEST_ARGS)

demo: build
	@scripts/demo.sh $(BUILD_DIR)

# Load harness and micro benchmarks (perf/README.md). `make perf` runs
# spacegate, nginx and HAProxy side by side, then the micro benchmarks, and
# rewrites the results in docs/perf.md; ARGS go to perf/load_harness.py
# (e.g. ARGS="--scenarios keepalive-small --duration 5 --rounds 3 --workers 2").
# `make perf-smoke` is the short CI check: it fails on spacegate errors or a
# broken harness, never on speed.
.PHONY: perf perf-smoke perf-reload perf-micro perf-runner perf-tunnels perf-h2
perf: build
	/usr/bin/python3 perf/load_harness.py --spacegate $(BUILD_DIR)/proxy/spacegate \
	  --micro $(BUILD_DIR)/perf/spacegate_micro_benchmarks $(ARGS)

# Route updates at 1,000/s through the control socket while wrk runs on a
# stable route, against the same run without updates (issue 5's scenario).
perf-reload: build
	@python3 perf/route_reload.py --spacegate $(BUILD_DIR)/proxy/spacegate $(ARGS)

perf-smoke: build
	/usr/bin/python3 perf/load_harness.py --smoke --spacegate $(BUILD_DIR)/proxy/spacegate

# Long-lived IDE tunnels through spacegate, nginx and HAProxy in one run:
# idle WebSocket sessions (RSS and descriptors per session), echo latency,
# one bulk tunnel (MB/s, CPU), and a descriptor leak check, which fails it.
# ARGS go to perf/tunnel_bench.py, e.g. ARGS="--sessions 500 --active 200
# --bytes 100MiB --duration 5 --json tunnels.json" (perf/README.md).
perf-tunnels: build
	/usr/bin/python3 perf/tunnel_bench.py --spacegate $(BUILD_DIR)/proxy/spacegate $(ARGS)

# TLS and HTTP/2 (docs/perf.md): h2load over TLS, 10 connections x 100
# streams, through spacegate, nginx, h2o and HAProxy; and full TLS handshakes
# per second (openssl s_time -new) against nginx and HAProxy, each with the
# proxy's CPU per request. `ARGS=--smoke` for a short run.
perf-h2: build
	/usr/bin/python3 perf/load_harness.py --h2 --spacegate $(BUILD_DIR)/proxy/spacegate $(ARGS)

# Runner: warm/cold machine times, Gitspace setup to IDE, memory per
# machine, a pool of 50 (needs root for namespaces; docs/perf.md).
perf-runner: build
	SPACEGATE_RUNNER_BINARY=$(BUILD_DIR)/runner/spacegate-runner \
	  SPACEGATE_AGENT_BINARY=$(BUILD_DIR)/runner/spacegate-agent \
	  SPACEGATECTL_BINARY=$(BUILD_DIR)/control/cli/spacegatectl \
	  /usr/bin/python3 perf/runner_bench.py $(ARGS)

perf-micro: build
	$(BUILD_DIR)/perf/spacegate_micro_benchmarks $(ARGS)

# Sanitizers and fuzzing (fuzz/README.md), each in a build dir of its own.
# `make test-asan`: the whole `make test` suite built with ASan+UBSan; a
# sanitizer report from any process, the gateways that integration tests
# start and stop included, fails it (reports land in $(ASAN_BUILD_DIR)/
# sanitizer-reports/). `make fuzz-smoke`: every fuzz target for
# FUZZ_SMOKE_SECONDS from its committed corpus; a crash, leak, timeout or
# sanitizer report fails it. `make fuzz FUZZ_SECONDS=N [FUZZ_TARGETS=...]`:
# long runs; the fewest inputs that cover edges the committed corpus misses
# are merged (-set_cover_merge=1) into fuzz/corpus/<target>/.
ASAN_BUILD_DIR ?= build-asan
FUZZ_BUILD_DIR ?= build-fuzz
FUZZ_TARGETS ?= http1_request http1_response gateway_config route_json access_token control_api \
  devcontainer runner_config websocket_frame http2_frames
FUZZ_SMOKE_SECONDS ?= 30
FUZZ_SECONDS ?= 600
# -O1 with line tables: what the sanitizers recommend, and a quicker build.
ASAN_FLAGS ?= -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG"
SANITIZER_REPORTS = $(abspath $(ASAN_BUILD_DIR))/sanitizer-reports
.PHONY: test-asan fuzz-build fuzz-smoke fuzz

test-asan: setup
	@cmake -S . -B $(ASAN_BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DSPACEGATE_SANITIZE=ON \
	  -DSPACEGATE_PERF=OFF $(ASAN_FLAGS) $(CMAKE_ARGS) >/dev/null
	@cmake --build $(ASAN_BUILD_DIR) -j $(JOBS)
	@rm -rf $(SANITIZER_REPORTS) && mkdir -p $(SANITIZER_REPORTS)
	@cd $(ASAN_BUILD_DIR) && status=0 && \
	  ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:log_path=$(SANITIZER_REPORTS)/asan \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(SANITIZER_REPORTS)/ubsan \
	  ctest --output-on-failure --timeout 900 -j $(CTEST_JOBS) $(CTEST_ARGS) || status=$$?; \
	  if [ -n "$$(ls -A $(SANITIZER_REPORTS))" ]; then \
	    head -n 80 $(SANITIZER_REPORTS)/*; \
	    echo "test-asan: sanitizer reports in $(SANITIZER_REPORTS)" >&2; exit 1; \
	  fi; exit $$status

fuzz-build: setup
	@cmake -S . -B $(FUZZ_BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DSPACEGATE_FUZZ=ON $(ASAN_FLAGS) \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ $(CMAKE_ARGS) >/dev/null
	@cmake --build $(FUZZ_BUILD_DIR) --target fuzzers -j $(JOBS)

fuzz-smoke: fuzz-build
	@fuzz/run_fuzzers.sh smoke $(FUZZ_BUILD_DIR) $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

fuzz: fuzz-build
	@fuzz/run_fuzzers.sh long $(FUZZ_BUILD_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR)
