// TunnelSession: an established plaintext tunnel once the HTTP objects that
// opened it are gone. A ClientConnection and its UpstreamConnection carry
// parsers, header lists and buffers an established tunnel never uses again
// (about 3 KiB); IDE sessions are thousands of tunnels, quiet for hours. So
// once both sides are quiet the connection hands the two sockets (duplicated
// descriptors; its own handles then close) to this small object, which
// holds the route, a SpliceTunnel, the counters and what the access log
// line needs. Its idle timeout is checked by the worker's sweep, not by a
// timer of its own.
#pragma once

#include <cstdint>
#include <string>

#include "route/route.h"
#include "tunnel/splice_tunnel.h"

namespace spacegate {

class Worker;

class TunnelSession : private SpliceTunnel::Owner {
 public:
  // What the access log line of the tunnel says (copied from the exchange).
  struct LogFields {
    std::string request_id;
    std::string client_ip;
    std::string method;
    std::string host;
    std::string path;
    int status = 0;
    uint64_t bytes_in = 0;  // already counted in the worker's and route's counters
    uint64_t bytes_out = 0;
    uint64_t exchange_start_ns = 0;
    double upstream_time = -1;
  };

  // Takes the two descriptors (closes them on failure too). Returns null
  // when splicing cannot start; the caller keeps its own path then.
  static TunnelSession* start(Worker& worker, RoutePtr route, int client_fd, int upstream_fd,
                              uint64_t idle_timeout_ms, LogFields fields);

  const Route* route() const { return route_.get(); }
  // The worker's sweep: true when nothing moved for the idle timeout.
  bool idleSince(uint64_t now_ms) const { return now_ms - last_activity_ms_ >= idle_timeout_ms_; }
  // Ends the tunnel: the access log line, the counters, both sockets.
  // `error` says why for the log ("" for a normal end).
  void close(const char* error, bool reset);

  size_t worker_slot = 0;  // index in the worker's session list

 private:
  TunnelSession(Worker& worker, RoutePtr route, uint64_t idle_timeout_ms, LogFields fields);
  ~TunnelSession() = default;
  void onSpliceProgress(uint64_t to_upstream, uint64_t to_client) override;
  void onSpliceEnd(SpliceTunnel::End end, const char* reason) override;

  Worker& worker_;
  RoutePtr route_;
  SpliceTunnel* splice_ = nullptr;
  int client_fd_ = -1;
  int upstream_fd_ = -1;
  uint64_t last_activity_ms_ = 0;
  uint64_t idle_timeout_ms_ = 0;
  LogFields fields_;
};

}  // namespace spacegate
