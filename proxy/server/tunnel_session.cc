#include "server/tunnel_session.h"

#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "log/access_log.h"
#include "server/worker.h"

namespace spacegate {

TunnelSession::TunnelSession(Worker& worker, RoutePtr route, uint64_t idle_timeout_ms,
                             LogFields fields)
    : worker_(worker),
      route_(std::move(route)),
      last_activity_ms_(uv_now(worker.loop())),
      idle_timeout_ms_(idle_timeout_ms),
      fields_(std::move(fields)) {}

TunnelSession* TunnelSession::start(Worker& worker, RoutePtr route, int client_fd, int upstream_fd,
                                    uint64_t idle_timeout_ms, LogFields fields) {
  auto* session = new TunnelSession(worker, std::move(route), idle_timeout_ms, std::move(fields));
  session->client_fd_ = client_fd;
  session->upstream_fd_ = upstream_fd;
  auto* splice = new SpliceTunnel(worker.loop(), worker.pipes(), client_fd, upstream_fd, *session);
  int error = 0;
  if (!splice->start(error)) {  // freed itself
    ::close(client_fd);
    ::close(upstream_fd);
    delete session;
    return nullptr;
  }
  session->splice_ = splice;
  // The exchange's counts (open tunnel, open connection of the route, the
  // client and upstream connections) live on here.
  WorkerCounters& counters = worker.mutableCounters();
  WorkerCounters::add(counters.client_connections_open, 1);
  WorkerCounters::add(counters.upstream_connections_open, 1);
  worker.addTunnelSession(session);
  return session;
}

void TunnelSession::onSpliceProgress(uint64_t to_upstream, uint64_t to_client) {
  last_activity_ms_ = uv_now(worker_.loop());
  fields_.bytes_in += to_upstream;
  fields_.bytes_out += to_client;
  WorkerCounters& counters = worker_.mutableCounters();
  WorkerCounters::add(counters.bytes_in, to_upstream);
  WorkerCounters::add(counters.bytes_out, to_client);
  WorkerCounters::add(counters.tunnel_bytes_spliced, to_upstream + to_client);
  route_->stats->bytes_in.fetch_add(to_upstream, std::memory_order_relaxed);
  route_->stats->bytes_out.fetch_add(to_client, std::memory_order_relaxed);
  route_->stats->touch(worker_.nowUnixMs());
}

void TunnelSession::onSpliceEnd(SpliceTunnel::End end, const char* reason) {
  close(end == SpliceTunnel::End::kReset ? reason : "", end == SpliceTunnel::End::kReset);
}

void TunnelSession::close(const char* error, bool reset) {
  if (splice_) {
    // Its poll handles stop watching before the descriptors close.
    splice_->close();
    splice_ = nullptr;
  }
  if (reset) {
    linger option{1, 0};
    ::setsockopt(client_fd_, SOL_SOCKET, SO_LINGER, &option, sizeof option);
    ::setsockopt(upstream_fd_, SOL_SOCKET, SO_LINGER, &option, sizeof option);
  }
  ::close(client_fd_);
  ::close(upstream_fd_);

  AccessLogEntry entry;
  entry.request_id = fields_.request_id;
  entry.worker = worker_.index();
  entry.client = fields_.client_ip;
  entry.method = fields_.method;
  entry.protocol = "HTTP/1.1";  // spliced tunnels start on plaintext HTTP/1.1
  entry.host = fields_.host;
  entry.path = fields_.path;
  entry.status = fields_.status;
  entry.bytes_in = fields_.bytes_in;
  entry.bytes_out = fields_.bytes_out;
  entry.route = route_->id;
  entry.upstream = route_->upstream_text;
  entry.upstream_time = fields_.upstream_time;
  entry.total_time = static_cast<double>(uv_hrtime() - fields_.exchange_start_ns) / 1e9;
  entry.error = error;
  worker_.accessLog().append(entry);

  WorkerCounters& counters = worker_.mutableCounters();
  WorkerCounters::add(counters.tunnels_open, -1);
  WorkerCounters::add(counters.tunnels_closed);
  WorkerCounters::add(counters.client_connections_open, -1);
  WorkerCounters::add(counters.upstream_connections_open, -1);
  route_->stats->open_tunnels.fetch_sub(1, std::memory_order_relaxed);
  route_->stats->open_connections.fetch_sub(1, std::memory_order_relaxed);
  worker_.removeTunnelSession(this);
  delete this;
}

}  // namespace spacegate
