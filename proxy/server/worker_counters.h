// Counters of one worker: written by its loop thread only, read by the
// control API's thread (relaxed atomics, one cache-line-aligned block per
// worker so workers never share a line).
#pragma once

#include <atomic>
#include <cstdint>

namespace spacegate {

struct alignas(64) WorkerCounters {
  std::atomic<uint64_t> connections_accepted{0};
  std::atomic<int64_t> client_connections_open{0};
  std::atomic<int64_t> upstream_connections_open{0};
  std::atomic<int64_t> tunnels_open{0};
  std::atomic<uint64_t> tunnels_opened{0};
  std::atomic<uint64_t> tunnels_idle_closed{0};
  std::atomic<uint64_t> tunnels_closed{0};
  std::atomic<uint64_t> tunnel_bytes_spliced{0};  // moved with splice(2), never in user space
  std::atomic<uint64_t> tunnel_bytes_copied{0};   // moved through read buffers
  std::atomic<uint64_t> connections_refused_descriptors{0};  // accept failed: out of descriptors
  std::atomic<uint64_t> tls_handshakes{0};                   // TLS handshakes completed
  std::atomic<uint64_t> tls_handshake_errors{0};             // TLS handshakes that failed
  std::atomic<uint64_t> tls_resumptions{0};      // TLS handshakes that resumed a session (ticket)
  std::atomic<uint64_t> http2_connections{0};    // HTTP/2 connections started
  std::atomic<uint64_t> http2_streams{0};        // HTTP/2 streams (requests) opened
  std::atomic<uint64_t> http2_streams_reset{0};  // HTTP/2 streams the gateway reset
  std::atomic<uint64_t> http2_goaway_sent{0};    // HTTP/2 GOAWAY frames sent
  std::atomic<uint64_t> http2_flood_closes{
      0};  // HTTP/2 connections closed for abuse (floods, resets, limits)
  std::atomic<uint64_t> requests_by_class[6] = {};  // [0] other, [1..5] = 1xx..5xx
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<uint64_t> upstream_pool_hits{0};
  std::atomic<uint64_t> upstream_pool_misses{0};
  std::atomic<uint64_t> connections_closed_by_route_update{0};

  static void add(std::atomic<uint64_t>& counter, uint64_t amount = 1) {
    counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
  }
  static void add(std::atomic<int64_t>& counter, int64_t amount) {
    counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
  }
};

}  // namespace spacegate
