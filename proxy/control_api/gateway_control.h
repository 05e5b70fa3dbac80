// What the control API may ask of the running gateway besides routes: its
// counters, and draining. Implemented by Gateway; a fake in unit tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/validation_error.h"

namespace spacegate {

// A plain copy of one worker's counters (see server/worker_counters.h).
struct WorkerCountersSnapshot {
  uint64_t connections_accepted = 0;
  int64_t client_connections_open = 0;
  int64_t upstream_connections_open = 0;
  int64_t tunnels_open = 0;
  uint64_t tunnels_opened = 0;
  uint64_t tunnels_idle_closed = 0;
  uint64_t tunnels_closed = 0;
  uint64_t tunnel_bytes_spliced = 0;
  uint64_t tunnel_bytes_copied = 0;
  uint64_t connections_refused_descriptors = 0;
  uint64_t tls_handshakes = 0;
  uint64_t tls_handshake_errors = 0;
  uint64_t tls_resumptions = 0;
  uint64_t http2_connections = 0;
  uint64_t http2_streams = 0;
  uint64_t http2_streams_reset = 0;
  uint64_t http2_goaway_sent = 0;
  uint64_t http2_flood_closes = 0;
  uint64_t requests_by_class[6] = {};
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t upstream_pool_hits = 0;
  uint64_t upstream_pool_misses = 0;
  uint64_t connections_closed_by_route_update = 0;
};

class GatewayControl {
 public:
  virtual ~GatewayControl() = default;
  virtual std::vector<WorkerCountersSnapshot> workerCounters() const = 0;
  // Every connection closes after its current exchange; /healthz says 503.
  virtual void drain() = 0;
  virtual bool draining() const = 0;
  // The TLS certificates in use: {"certificates": [...]} (empty list
  // without TLS listeners).
  virtual std::string tlsListing() const = 0;
  // Re-reads the certificate files; on failure names the field, and the
  // certificates in use stay. Connections already open are not touched.
  virtual bool reloadTls(ValidationError& error) = 0;
};

}  // namespace spacegate
