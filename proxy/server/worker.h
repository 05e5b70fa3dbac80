// Worker: one event loop on its own thread, with its own SO_REUSEPORT
// listening socket per listener, its own buffer pool, upstream pool, DNS
// resolver and access-log buffer. A connection lives and dies on one worker,
// so nothing on the data path is shared between threads.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "auth/access_policy.h"
#include "auth/access_token.h"
#include "auth/token_cache.h"
#include "config/gateway_config.h"
#include "log/access_log.h"
#include "net/buffer.h"
#include "net/dns_resolver.h"
#include "net/loop_mailbox.h"
#include "net/write_queue.h"
#include "route/route_publisher.h"
#include "server/worker_counters.h"
#include "tls/tls_context_set.h"
#include "tunnel/pipe_pool.h"
#include "upstream/upstream_pool.h"

namespace spacegate {

class ClientConnection;
class Http2ServerSession;
class TunnelSession;

class Worker {
 public:
  Worker(unsigned index, const GatewayConfig& config, const RouteTablePublisher& routes,
         const KeyRingPublisher& keys, const TlsContextPublisher& tls_contexts,
         const AccessLogSink& access_log);
  ~Worker();

  // Binds the listening sockets (on the calling thread, so that errors are
  // reported before any thread starts). Returns false with a reason.
  bool open(std::string& error);
  void start();
  void join();
  // Thread-safe: stop accepting, let requests in flight finish within the
  // grace period, then exit the loop.
  void requestShutdown();
  // Thread-safe: close the connections of retired routes (after `grace_ms`)
  // and the idle pool connections to their upstreams.
  void retireRoutes(std::vector<RoutePtr> routes, std::vector<std::string> upstreams,
                    uint64_t grace_ms);
  // Thread-safe: every connection closes after its current exchange.
  void requestDrain();
  const WorkerCounters& counters() const { return counters_; }

  // Loop-thread API for connections.
  unsigned index() const { return index_; }
  uv_loop_t* loop() { return &loop_; }
  const Limits& limits() const { return config_.limits; }
  const Http2Limits& http2Limits() const { return config_.http2; }
  BufferPool& buffers() { return buffers_; }
  WriteRecordPool& writes() { return writes_; }
  PipePool& pipes() { return pipes_; }
  UpstreamPool& upstreams() { return *upstreams_; }
  AccessLogBuffer& accessLog() { return *access_log_; }
  const RouteTableSnapshot& routes() { return route_reader_.current(); }
  const KeyRingSnapshot& keys() { return key_reader_.current(); }
  TokenCache& tokenCache() { return token_cache_; }
  const AuthConfig& authConfig() const { return config_.auth; }
  bool shuttingDown() const { return shutting_down_; }
  bool draining() const { return draining_ || shutting_down_; }
  WorkerCounters& mutableCounters() { return counters_; }
  // Wall-clock milliseconds since the epoch, from the loop's cached time.
  uint64_t nowUnixMs() { return uv_now(&loop_) + unix_offset_ms_; }
  // A fresh request id into `out`: 32 hex digits, unique per process run.
  void newRequestId(std::string& out);
  char* scratch() { return scratch_; }
  // Where TLS connections read ciphertext (fed to BoringSSL at once).
  char* cipherReadBuffer() { return cipher_read_buffer_.get(); }
  static constexpr size_t kCipherReadBufferSize = 64 * 1024;

  // HTTP/2 sessions to flush once this loop iteration's I/O is done.
  void scheduleFlush(Http2ServerSession* session);
  void cancelFlush(Http2ServerSession* session);

  void addConnection(ClientConnection* connection);
  void removeConnection(ClientConnection* connection);
  // Spliced tunnels that outlived their ClientConnection (server/tunnel_session.h).
  void addTunnelSession(TunnelSession* session);
  void removeTunnelSession(TunnelSession* session);

  // Counters (loop thread).
  size_t connectionsOpen() const { return connections_.size(); }

 private:
  // A listening socket of this worker (SO_REUSEPORT: one per worker).
  struct Listener {
    uv_poll_t poll;
    int fd = -1;
    Worker* worker = nullptr;
    bool tls = false;  // connections start with a TLS handshake
  };
  // How long accepting pauses after running out of descriptors.
  static constexpr uint64_t kAcceptPauseMs = 100;
  static void onListenerReadable(uv_poll_t* handle, int status, int events);
  static void onAcceptPauseOver(uv_timer_t* timer);
  void refuseForDescriptors(Listener& listener);
  void logAcceptError(int status);
  void closeListeners();
  // Closes the tunnel sessions idle past their timeout; runs every
  // kTunnelSweepMs while there are sessions.
  static void onTunnelSweep(uv_timer_t* timer);
  static constexpr uint64_t kTunnelSweepMs = 500;
  // Once the worker has had no connection for a while, freed memory goes
  // back to the system (malloc_trim): after thousands of sessions close, the
  // gateway's RSS returns near its baseline instead of staying at the peak.
  void scheduleMemoryTrimIfIdle();
  static void onMemoryTrim(uv_timer_t* timer);
  static constexpr uint64_t kMemoryTrimDelayMs = 1'000;
  void closeRetired(const std::vector<RoutePtr>& routes);
  // A pending close of retired routes' connections, after their grace.
  struct RetireTimer {
    uv_timer_t timer;
    Worker* worker;
    std::vector<RoutePtr> routes;
  };
  static void onRetireTimer(uv_timer_t* timer);
  void closeRetireTimer(RetireTimer* pending);
  static void onGraceTimer(uv_timer_t* timer);
  void beginShutdown();
  void finishShutdownIfIdle();
  void closeEverything();

  unsigned index_;
  const GatewayConfig& config_;
  uv_loop_t loop_;
  std::vector<Listener*> listeners_;
  uv_timer_t accept_pause_timer_;
  int spare_fd_ = -1;  // given up to accept-and-close when out of descriptors
  LoopMailbox mailbox_;
  uv_timer_t grace_timer_;
  std::thread thread_;
  BufferPool buffers_;
  WriteRecordPool writes_;
  // 256 KiB pipes (one splice call moves up to that), 64 kept for reuse.
  PipePool pipes_{256 * 1024, 64};
  DnsResolver dns_;
  std::unique_ptr<UpstreamPool> upstreams_;
  std::unique_ptr<AccessLogBuffer> access_log_;
  RouteTableReader route_reader_;
  KeyRingReader key_reader_;
  TlsContextReader tls_reader_;
  TokenCache token_cache_;
  std::vector<ClientConnection*> connections_;
  std::vector<TunnelSession*> tunnel_sessions_;
  uv_timer_t tunnel_sweep_timer_;
  uv_timer_t memory_trim_timer_;
  uv_check_t flush_check_;  // runs after each poll while sessions wait for a flush
  std::vector<Http2ServerSession*> pending_flushes_;
  static void onFlushCheck(uv_check_t* check);
  std::vector<RetireTimer*> retire_timers_;
  WorkerCounters counters_;
  bool shutting_down_ = false;
  bool draining_ = false;
  uint64_t unix_offset_ms_ = 0;
  bool closed_ = false;
  bool started_ = false;
  uint64_t request_id_prefix_ = 0;
  uint64_t request_counter_ = 0;
  uint64_t accept_errors_logged_at_ = 0;
  char scratch_[4096];
  std::unique_ptr<char[]> cipher_read_buffer_{new char[kCipherReadBufferSize]};
};

}  // namespace spacegate
