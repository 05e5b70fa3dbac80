// UpstreamPool: the keep-alive connections of one worker to its upstreams,
// keyed by upstream address. A connection is reused only after a complete
// exchange; at most `idle_connections` idle ones are kept per upstream, each
// for at most `idle_timeout`. Most recently used first: the likeliest to be
// still open on the other side.
#pragma once

#include <memory>

#include <uv.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/limits.h"
#include "net/buffer.h"
#include "net/dns_resolver.h"
#include "net/socket_address.h"
#include "net/write_queue.h"
#include "server/worker_counters.h"
#include "tls/upstream_tls_contexts.h"
#include "upstream/upstream_connection.h"

namespace spacegate {

class Http2UpstreamSession;

class UpstreamPool {
 public:
  UpstreamPool(uv_loop_t* loop, BufferPool& buffers, WriteRecordPool& writes, DnsResolver& dns,
               const Limits& limits, const UpstreamPoolLimits& pool_limits,
               WorkerCounters& counters);
  ~UpstreamPool();

  // A connection for `owner`: an idle one (already connected; the owner's
  // onUpstreamReady runs before this returns) unless `fresh` is set, else a
  // new one that reports later.
  // `key` names the upstream (the route's upstream text) for reuse.
  // `tls`: TLS to the upstream (the route's options; they are part of `key`).
  // `h2c`: a stream of a multiplexed HTTP/2 session instead (protocol: h2c).
  UpstreamExchange* acquire(const SocketAddress& address, std::string_view key,
                            UpstreamExchange::Owner* owner, bool fresh = false,
                            const UpstreamTlsOptions* tls = nullptr, bool h2c = false);
  // Hands a connection back after its exchange. Not `reusable`: closed.
  void release(UpstreamExchange* exchange, bool reusable);
  // A connection outside the pool (an h2c session's transport).
  UpstreamConnection* connectRaw(const SocketAddress& address, std::string_view key,
                                 UpstreamExchange::Owner* owner);
  // An h2c session that has closed (called by the session).
  void forgetSession(Http2UpstreamSession* session);
  uint64_t idleTimeoutMs() const { return pool_limits_.idle_timeout_ms; }
  // Called by an idle connection that closed (upstream hung up, idle timeout).
  void forgetIdle(UpstreamConnection* connection);
  // Closes every idle connection (shutdown).
  void closeIdle();
  // Closes the idle connections to one upstream (its routes were retired).
  void closeIdleTo(const std::string& key);

  uv_loop_t* loop() const { return loop_; }
  BufferPool& buffers() { return buffers_; }
  WriteRecordPool& writes() { return writes_; }
  DnsResolver& dns() { return dns_; }
  // Scratch space for idle connections' reads: any byte there is an error.
  char* idleScratch() { return idle_scratch_; }
  // Where TLS connections read ciphertext (fed to BoringSSL at once).
  static constexpr size_t kCipherReadBufferSize = 64 * 1024;
  char* cipherReadBuffer() { return cipher_read_buffer_.get(); }
  UpstreamTlsContexts& tlsContexts() { return tls_contexts_; }

  size_t idleConnections() const;
  void connectionDestroyed() { WorkerCounters::add(counters_.upstream_connections_open, -1); }

 private:
  uv_loop_t* loop_;
  std::unique_ptr<char[]> cipher_read_buffer_{new char[kCipherReadBufferSize]};
  UpstreamTlsContexts tls_contexts_;
  BufferPool& buffers_;
  WriteRecordPool& writes_;
  DnsResolver& dns_;
  const Limits& limits_;
  UpstreamPoolLimits pool_limits_;
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(std::string_view key) const { return std::hash<std::string_view>()(key); }
  };
  std::unordered_map<std::string, std::vector<UpstreamConnection*>, KeyHash, std::equal_to<>> idle_;
  // h2c sessions per upstream key (several when one is full).
  std::unordered_map<std::string, std::vector<Http2UpstreamSession*>, KeyHash, std::equal_to<>>
      sessions_;
  WorkerCounters& counters_;
  char idle_scratch_[64];
};

}  // namespace spacegate
