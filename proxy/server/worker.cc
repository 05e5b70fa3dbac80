#include "server/worker.h"

#include "http2/server_session.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "server/client_connection.h"
#include "server/tunnel_session.h"

namespace spacegate {

namespace {

// A listening socket of our own with SO_REUSEPORT (libuv 1.44 has no flag
// for it), handed to libuv with uv_tcp_open.
int openReusePortSocket(const SocketAddress& address, std::string& error) {
  int family = address.ip.ss_family;
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::strerror(errno);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    error = std::string("SO_REUSEPORT: ") + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  if (family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  socklen_t length = family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address.ip), length) != 0) {
    error = "bind " + address.text() + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

Worker::Worker(unsigned index, const GatewayConfig& config, const RouteTablePublisher& routes,
               const KeyRingPublisher& keys, const TlsContextPublisher& tls_contexts,
               const AccessLogSink& access_log)
    : index_(index),
      config_(config),
      buffers_(config.limits.header_block_size + 4096),
      dns_(&loop_),
      route_reader_(routes),
      key_reader_(keys),
      tls_reader_(tls_contexts) {
  uv_loop_init(&loop_);
  upstreams_ = std::make_unique<UpstreamPool>(&loop_, buffers_, writes_, dns_, config_.limits,
                                              config_.upstream_pool, counters_);
  access_log_ = std::make_unique<AccessLogBuffer>(&loop_, access_log);
  mailbox_.open(&loop_);
  uv_update_time(&loop_);
  timeval now{};
  gettimeofday(&now, nullptr);
  unix_offset_ms_ = static_cast<uint64_t>(now.tv_sec) * 1000 + now.tv_usec / 1000 - uv_now(&loop_);
  uv_timer_init(&loop_, &grace_timer_);
  grace_timer_.data = this;
  uv_timer_init(&loop_, &accept_pause_timer_);
  accept_pause_timer_.data = this;
  uv_timer_init(&loop_, &tunnel_sweep_timer_);
  tunnel_sweep_timer_.data = this;
  uv_timer_init(&loop_, &memory_trim_timer_);
  memory_trim_timer_.data = this;
  uv_check_init(&loop_, &flush_check_);
  flush_check_.data = this;
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  pipes_.open(&loop_);
  if (getrandom(&request_id_prefix_, sizeof request_id_prefix_, 0) != sizeof request_id_prefix_) {
    request_id_prefix_ = uv_hrtime() ^ (uint64_t{index} << 56);
  }
}

Worker::~Worker() {
  if (!started_ && !closed_) {
    // Never started (another worker or the control API failed to open):
    // close what open() made so the loop closes without leaks.
    closeListeners();
    closeEverything();
    uv_run(&loop_, UV_RUN_DEFAULT);
  }
  uv_loop_close(&loop_);
}

bool Worker::open(std::string& error) {
  if (!dns_.start()) {
    error = "cannot start the DNS resolver (c-ares)";
    return false;
  }
  for (const ListenerConfig& listener_config : config_.listeners) {
    const SocketAddress& address = listener_config.address;
    int fd = openReusePortSocket(address, error);
    if (fd < 0) return false;
    // The worker accepts itself (a poll handle on the listening socket, not
    // uv_listen): libuv's own accept hides running out of descriptors.
    if (::listen(fd, 4096) != 0) {
      error = "listen " + address.text() + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
    auto* listener = new Listener{};
    listener->fd = fd;
    listener->worker = this;
    listener->tls = listener_config.tls;
    int result = uv_poll_init(&loop_, &listener->poll, fd);
    if (result != 0) {
      error = "listen " + address.text() + ": " + uv_strerror(result);
      ::close(fd);
      delete listener;
      return false;
    }
    listener->poll.data = listener;
    uv_poll_start(&listener->poll, UV_READABLE, &Worker::onListenerReadable);
    listeners_.push_back(listener);
  }
  return true;
}

void Worker::closeListeners() {
  for (Listener* listener : listeners_) {
    // uv_close stops the watcher at once, so the descriptor can go now.
    uv_close(reinterpret_cast<uv_handle_t*>(&listener->poll),
             [](uv_handle_t* handle) { delete static_cast<Listener*>(handle->data); });
    ::close(listener->fd);
  }
  listeners_.clear();
  uv_timer_stop(&accept_pause_timer_);
}

void Worker::start() {
  started_ = true;
  thread_ = std::thread([this] {
    uv_run(&loop_, UV_RUN_DEFAULT);
    // Run close callbacks left by the last iteration.
    uv_run(&loop_, UV_RUN_NOWAIT);
  });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::requestShutdown() {
  mailbox_.post([this] { beginShutdown(); });
}

void Worker::requestDrain() {
  mailbox_.post([this] {
    draining_ = true;
    std::vector<ClientConnection*> connections = connections_;
    for (ClientConnection* connection : connections) connection->onWorkerShutdown();
  });
}

void Worker::retireRoutes(std::vector<RoutePtr> routes, std::vector<std::string> upstreams,
                          uint64_t grace_ms) {
  mailbox_.post([this, ids = std::move(routes), upstreams = std::move(upstreams), grace_ms] {
    for (const std::string& upstream : upstreams) upstreams_->closeIdleTo(upstream);
    if (grace_ms == 0) {
      closeRetired(ids);
      return;
    }
    auto* pending = new RetireTimer{{}, this, ids};
    uv_timer_init(&loop_, &pending->timer);
    pending->timer.data = pending;
    uv_timer_start(&pending->timer, &Worker::onRetireTimer, grace_ms, 0);
    retire_timers_.push_back(pending);
  });
}

void Worker::onRetireTimer(uv_timer_t* timer) {
  auto* pending = static_cast<RetireTimer*>(timer->data);
  pending->worker->closeRetired(pending->routes);
  pending->worker->closeRetireTimer(pending);
}

void Worker::closeRetireTimer(RetireTimer* pending) {
  retire_timers_.erase(std::remove(retire_timers_.begin(), retire_timers_.end(), pending),
                       retire_timers_.end());
  uv_close(reinterpret_cast<uv_handle_t*>(&pending->timer),
           [](uv_handle_t* handle) { delete static_cast<RetireTimer*>(handle->data); });
}

void Worker::closeRetired(const std::vector<RoutePtr>& routes) {
  if (closed_) return;
  std::vector<TunnelSession*> sessions = tunnel_sessions_;
  for (TunnelSession* session : sessions) {
    for (const RoutePtr& retired : routes) {
      if (session->route() == retired.get()) {
        WorkerCounters::add(counters_.connections_closed_by_route_update);
        session->close("route retired", false);
        break;
      }
    }
  }
  std::vector<ClientConnection*> connections = connections_;
  for (ClientConnection* connection : connections) {
    if (connection->closeStreamsOfRoutes(routes)) continue;  // HTTP/2: per stream
    const Route* route = connection->route();
    if (!route) continue;
    for (const RoutePtr& retired : routes) {
      if (route == retired.get()) {
        WorkerCounters::add(counters_.connections_closed_by_route_update);
        connection->closeForRouteUpdate();
        break;
      }
    }
  }
}

void Worker::scheduleFlush(Http2ServerSession* session) {
  if (pending_flushes_.empty()) uv_check_start(&flush_check_, &Worker::onFlushCheck);
  pending_flushes_.push_back(session);
}

void Worker::cancelFlush(Http2ServerSession* session) {
  std::erase(pending_flushes_, session);
}

void Worker::onFlushCheck(uv_check_t* check) {
  auto* worker = static_cast<Worker*>(check->data);
  // A flush may schedule more (a stream's upstream answering at once): they
  // run in the next iteration.
  std::vector<Http2ServerSession*> sessions;
  sessions.swap(worker->pending_flushes_);
  // Sessions are deleted only in the loop's closing phase (with their
  // connection), after this check: one abandoned by an earlier flush of the
  // batch is still there, and its flushNow() does nothing.
  for (Http2ServerSession* session : sessions) session->flushNow();
  if (worker->pending_flushes_.empty()) uv_check_stop(&worker->flush_check_);
}

void Worker::newRequestId(std::string& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.resize(32);
  uint64_t parts[2] = {request_id_prefix_, ++request_counter_};
  for (int part = 0; part < 2; ++part) {
    for (int digit = 0; digit < 16; ++digit) {
      out[part * 16 + digit] = kHex[(parts[part] >> (60 - 4 * digit)) & 15];
    }
  }
}

void Worker::addConnection(ClientConnection* connection) {
  connection->worker_slot = connections_.size();
  connections_.push_back(connection);
  WorkerCounters::add(counters_.client_connections_open, 1);
}

void Worker::removeConnection(ClientConnection* connection) {
  size_t slot = connection->worker_slot;
  if (slot >= connections_.size() || connections_[slot] != connection) return;
  connections_[slot] = connections_.back();
  connections_[slot]->worker_slot = slot;
  connections_.pop_back();
  WorkerCounters::add(counters_.client_connections_open, -1);
  scheduleMemoryTrimIfIdle();
  if (shutting_down_) finishShutdownIfIdle();
}

void Worker::addTunnelSession(TunnelSession* session) {
  session->worker_slot = tunnel_sessions_.size();
  tunnel_sessions_.push_back(session);
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&tunnel_sweep_timer_))) {
    uv_timer_start(&tunnel_sweep_timer_, &Worker::onTunnelSweep, kTunnelSweepMs, kTunnelSweepMs);
  }
}

void Worker::removeTunnelSession(TunnelSession* session) {
  size_t slot = session->worker_slot;
  if (slot >= tunnel_sessions_.size() || tunnel_sessions_[slot] != session) return;
  tunnel_sessions_[slot] = tunnel_sessions_.back();
  tunnel_sessions_[slot]->worker_slot = slot;
  tunnel_sessions_.pop_back();
  if (tunnel_sessions_.empty()) uv_timer_stop(&tunnel_sweep_timer_);
  scheduleMemoryTrimIfIdle();
  if (shutting_down_) finishShutdownIfIdle();
}

void Worker::scheduleMemoryTrimIfIdle() {
  if (closed_ || !connections_.empty() || !tunnel_sessions_.empty()) return;
  uv_timer_start(&memory_trim_timer_, &Worker::onMemoryTrim, kMemoryTrimDelayMs, 0);
}

void Worker::onMemoryTrim(uv_timer_t* timer) {
  auto* worker = static_cast<Worker*>(timer->data);
  if (!worker->connections_.empty() || !worker->tunnel_sessions_.empty()) return;
  // Every arena, the other workers' too; cheap next to the seconds of quiet.
  malloc_trim(0);
}

void Worker::onTunnelSweep(uv_timer_t* timer) {
  auto* worker = static_cast<Worker*>(timer->data);
  uint64_t now = uv_now(&worker->loop_);
  // Closing edits the list: walk it from the end.
  for (size_t i = worker->tunnel_sessions_.size(); i-- > 0;) {
    if (i >= worker->tunnel_sessions_.size()) continue;
    TunnelSession* session = worker->tunnel_sessions_[i];
    if (session->idleSince(now)) {
      WorkerCounters::add(worker->counters_.tunnels_idle_closed);
      session->close("tunnel idle timeout", false);
    }
  }
}

void Worker::onListenerReadable(uv_poll_t* handle, int status, int) {
  auto* listener = static_cast<Listener*>(handle->data);
  Worker* worker = listener->worker;
  if (status < 0) {
    worker->logAcceptError(status);
    return;
  }
  // Level-triggered: a bounded batch, then the rest of the loop gets a turn.
  for (int accepted = 0; accepted < 128; ++accepted) {
    int fd = ::accept4(listener->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EMFILE || errno == ENFILE) {
        worker->refuseForDescriptors(*listener);
        return;
      }
      worker->logAcceptError(-errno);
      return;
    }
    if (worker->shutting_down_) {
      ::close(fd);
      continue;
    }
    auto* connection = new ClientConnection(*worker);
    // A TLS connection keeps the certificates it started with through any reload.
    std::shared_ptr<const TlsContextSet> tls;
    if (listener->tls) tls = worker->tls_reader_.current();
    if (connection->accept(fd, std::move(tls))) {
      WorkerCounters::add(worker->counters_.connections_accepted);
    }
  }
}

void Worker::refuseForDescriptors(Listener& listener) {
  // Out of descriptors: the waiting connections are accepted on the spare
  // descriptor kept for this and closed at once (the client sees its
  // connection end, instead of hanging in the backlog), and accepting
  // pauses for a moment so a level-triggered listener cannot spin. The
  // connections already open keep being served.
  uint64_t refused = 0;
  if (spare_fd_ >= 0) {
    ::close(spare_fd_);
    spare_fd_ = -1;
    int fd;
    while ((fd = ::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC)) >= 0) {
      ::close(fd);
      ++refused;
    }
    spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  WorkerCounters::add(counters_.connections_refused_descriptors, refused ? refused : 1);
  uint64_t now = uv_now(&loop_);
  if (now - accept_errors_logged_at_ >= 1000) {
    accept_errors_logged_at_ = now;
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    logEvent(LogLevel::kError,
             "accept: out of file descriptors, new connections are closed at once")
        .with("worker", index_)
        .with("open_files_limit", static_cast<uint64_t>(limit.rlim_cur))
        .with("refused", refused)
        .with("open_connections", static_cast<uint64_t>(connections_.size()))
        .emit();
  }
  for (Listener* each : listeners_) uv_poll_stop(&each->poll);
  uv_timer_start(&accept_pause_timer_, &Worker::onAcceptPauseOver, kAcceptPauseMs, 0);
}

void Worker::onAcceptPauseOver(uv_timer_t* timer) {
  auto* worker = static_cast<Worker*>(timer->data);
  if (worker->shutting_down_) return;
  for (Listener* listener : worker->listeners_) {
    uv_poll_start(&listener->poll, UV_READABLE, &Worker::onListenerReadable);
  }
}

void Worker::logAcceptError(int status) {
  uint64_t now = uv_now(&loop_);
  if (now - accept_errors_logged_at_ < 1000) return;
  accept_errors_logged_at_ = now;
  logEvent(LogLevel::kError, "accept failed")
      .with("worker", index_)
      .with("error", uv_strerror(status))
      .emit();
}

void Worker::beginShutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  closeListeners();
  // Closing idle connections edits the list: work on a copy.
  std::vector<ClientConnection*> connections = connections_;
  for (ClientConnection* connection : connections) connection->onWorkerShutdown();
  upstreams_->closeIdle();
  uv_timer_start(&grace_timer_, &Worker::onGraceTimer, config_.limits.shutdown_grace_ms, 0);
  finishShutdownIfIdle();
}

void Worker::onGraceTimer(uv_timer_t* timer) {
  auto* worker = static_cast<Worker*>(timer->data);
  if (!worker->connections_.empty()) {
    logEvent(LogLevel::kWarning, "grace period over, closing connections")
        .with("worker", worker->index_)
        .with("connections", static_cast<uint64_t>(worker->connections_.size()))
        .emit();
  }
  std::vector<ClientConnection*> connections = worker->connections_;
  for (ClientConnection* connection : connections) connection->forceClose();
  std::vector<TunnelSession*> sessions = worker->tunnel_sessions_;
  for (TunnelSession* session : sessions) session->close("shut down", false);
  worker->closeEverything();
}

void Worker::finishShutdownIfIdle() {
  if (connections_.empty() && tunnel_sessions_.empty()) closeEverything();
}

void Worker::closeEverything() {
  if (closed_) return;
  closed_ = true;
  uv_timer_stop(&grace_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&grace_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&accept_pause_timer_), nullptr);
  uv_timer_stop(&tunnel_sweep_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&tunnel_sweep_timer_), nullptr);
  uv_timer_stop(&memory_trim_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&memory_trim_timer_), nullptr);
  uv_check_stop(&flush_check_);
  uv_close(reinterpret_cast<uv_handle_t*>(&flush_check_), nullptr);
  if (spare_fd_ >= 0) ::close(spare_fd_);
  spare_fd_ = -1;
  mailbox_.close();
  std::vector<RetireTimer*> pending_retires = retire_timers_;
  for (RetireTimer* pending : pending_retires) closeRetireTimer(pending);
  upstreams_->closeIdle();
  pipes_.close();
  dns_.close();
  access_log_->close();
  // Connections to upstreams still closing finish their close callbacks in
  // this loop's last iterations; the loop then ends on its own.
}

}  // namespace spacegate
