-- wrk_report.lua: prints one machine-readable line after a wrk run, with the
-- exact latency percentiles and every error counter, for load_harness.py.
-- Only done() is defined: request()/response() hooks would slow wrk itself
-- down for every request and skew the numbers.
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'PERF_RESULT {"requests": %d, "bytes": %d, "duration_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.bytes, summary.duration,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
