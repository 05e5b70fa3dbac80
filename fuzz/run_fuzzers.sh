#!/usr/bin/env bash
# Runs the libFuzzer targets one after another, for `make fuzz-smoke` and
# `make fuzz`, and prints each target's runs, coverage and corpus size.
#
#   fuzz/run_fuzzers.sh smoke|long BUILD_DIR SECONDS TARGET...
#
# smoke: each target for SECONDS from its committed corpus (fuzz/corpus/
#   <target>/) and dictionary; new inputs go to a scratch folder, the
#   committed corpus is left as it is. Exits non-zero if any target finds a
#   crash, leak, timeout, out-of-memory or sanitizer report; the input is
#   kept under BUILD_DIR/fuzz-artifacts/<target>/.
# long: the same, but at the end the inputs that cover edges the committed
#   corpus misses are merged into fuzz/corpus/<target>/ (-set_cover_merge=1
#   over edges only, so it stays small); the working corpus stays in
#   BUILD_DIR/fuzz-corpus/<target>/ for the next run.
# FUZZ_JOBS=N runs N libFuzzer workers per target (-jobs, -workers).
set -uo pipefail
cd "$(dirname "$0")/.."

mode=$1
build_dir=$2
seconds=$3
shift 3
jobs=${FUZZ_JOBS:-1}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# Longest input per target: whole pipelined exchanges for HTTP/1, room for
# a full 16 KiB DATA frame or an HPACK-amplified header block for HTTP/2, a
# config file or a routes body for the others.
max_len_of() {
  case $1 in
    http1_*) echo 8192 ;;
    http2_*) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

failed=()
summary=()
for target in "$@"; do
  binary=$build_dir/fuzz/${target}_fuzzer
  committed=fuzz/corpus/$target
  if [[ ! -x $binary || ! -d $committed ]]; then
    echo "run_fuzzers: no binary $binary or no corpus $committed" >&2
    failed+=("$target")
    continue
  fi
  artifacts=$build_dir/fuzz-artifacts/$target
  log=$build_dir/fuzz-logs/$target.log
  mkdir -p "$artifacts" "$(dirname "$log")"
  if [[ $mode == long ]]; then
    working=$build_dir/fuzz-corpus/$target
    mkdir -p "$working"
  else
    working=$(mktemp -d)
  fi
  dictionary=()
  [[ -f fuzz/$target.dict ]] && dictionary=(-dict="fuzz/$target.dict")
  parallel=()
  [[ $jobs -gt 1 ]] && parallel=(-jobs="$jobs" -workers="$jobs")

  echo "== $target: $seconds s ($mode)"
  started=$(date +%s)
  "$binary" "$working" "$committed" "${dictionary[@]}" "${parallel[@]}" \
    -max_total_time="$seconds" -max_len="$(max_len_of "$target")" -timeout=25 \
    -rss_limit_mb=2560 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  status=$?
  took=$(($(date +%s) - started))
  if [[ $jobs -gt 1 ]]; then cat fuzz-*.log >>"$log" 2>/dev/null && rm -f fuzz-*.log; fi

  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
  edges=$(grep -Eo '(DONE|pulse|NEW|REDUCE|INITED) +cov: [0-9]+' "$log" | awk '{print $NF}' | sort -n | tail -1)
  if [[ $status -ne 0 ]] || grep -qE '^(==[0-9]+==)?ERROR|^SUMMARY: (Address|UndefinedBehavior|Leak)|runtime error:' "$log"; then
    echo "run_fuzzers: $target FAILED (exit $status); log $log, input in $artifacts/" >&2
    grep -E 'ERROR|SUMMARY|invariant broken|runtime error|Test unit written' "$log" | head -20 >&2
    failed+=("$target")
  elif [[ $mode == long ]]; then
    # Add to the committed corpus the fewest inputs that cover the edges it
    # misses (edges only, not hit counts: that keeps it to a few hundred).
    "$binary" -set_cover_merge=1 -use_counters=0 -max_len="$(max_len_of "$target")" \
      "$committed" "$working" >>"$log" 2>&1 || failed+=("$target (merge)")
  fi
  [[ $mode == smoke ]] && rm -rf "$working"
  summary+=("$(printf '%-16s %6s s %12s runs %6s edges %5s corpus files' "$target" "$took" \
    "$runs" "${edges:-?}" "$(ls "$committed" | wc -l)")")
done

printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "run_fuzzers: failed: ${failed[*]}" >&2
  exit 1
fi
