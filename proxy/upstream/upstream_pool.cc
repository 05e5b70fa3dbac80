#include "upstream/upstream_pool.h"

#include "http2/client_session.h"

#include <algorithm>

namespace spacegate {

UpstreamPool::UpstreamPool(uv_loop_t* loop, BufferPool& buffers, WriteRecordPool& writes,
                           DnsResolver& dns, const Limits& limits,
                           const UpstreamPoolLimits& pool_limits, WorkerCounters& counters)
    : loop_(loop),
      buffers_(buffers),
      writes_(writes),
      dns_(dns),
      limits_(limits),
      pool_limits_(pool_limits),
      counters_(counters) {}

UpstreamPool::~UpstreamPool() = default;

UpstreamExchange* UpstreamPool::acquire(const SocketAddress& address, std::string_view key,
                                        UpstreamExchange::Owner* owner, bool fresh,
                                        const UpstreamTlsOptions* tls, bool h2c) {
  if (h2c) {
    auto& sessions = sessions_[std::string(key)];
    for (Http2UpstreamSession* session : sessions) {
      if (session->acceptsStreams()) {
        WorkerCounters::add(counters_.upstream_pool_hits);
        return session->openStream(owner);
      }
    }
    WorkerCounters::add(counters_.upstream_pool_misses);
    auto* session = new Http2UpstreamSession(*this, std::string(key), limits_);
    sessions.push_back(session);
    session->start(address);
    return session->openStream(owner);
  }
  if (!fresh) {
    auto found = idle_.find(key);
    if (found != idle_.end() && !found->second.empty()) {
      UpstreamConnection* connection = found->second.back();
      found->second.pop_back();
      connection->leaveIdle();
      connection->setOwner(owner);
      WorkerCounters::add(counters_.upstream_pool_hits);
      owner->onUpstreamReady(*connection);
      return connection;
    }
  }
  auto* connection = new UpstreamConnection(*this, std::string(key), limits_);
  WorkerCounters::add(counters_.upstream_pool_misses);
  WorkerCounters::add(counters_.upstream_connections_open, 1);
  connection->setOwner(owner);
  connection->start(address, tls);
  return connection;
}

UpstreamConnection* UpstreamPool::connectRaw(const SocketAddress& address, std::string_view key,
                                             UpstreamExchange::Owner* owner) {
  auto* connection = new UpstreamConnection(*this, std::string(key), limits_);
  WorkerCounters::add(counters_.upstream_connections_open, 1);
  connection->setOwner(owner);
  connection->start(address);
  return connection;
}

void UpstreamPool::forgetSession(Http2UpstreamSession* session) {
  auto found = sessions_.find(session->key());
  if (found == sessions_.end()) return;
  auto& sessions = found->second;
  sessions.erase(std::remove(sessions.begin(), sessions.end(), session), sessions.end());
  if (sessions.empty()) sessions_.erase(found);
}

void UpstreamPool::release(UpstreamExchange* exchange, bool reusable) {
  UpstreamConnection* connection = exchange->connection();
  if (!connection) {
    // An h2c stream: the session stays; the stream ends (reset if unfinished).
    static_cast<Http2UpstreamStream*>(exchange)->release();
    return;
  }
  connection->setOwner(nullptr);
  if (!reusable || pool_limits_.idle_connections == 0 || connection->closing() ||
      !connection->cleanForReuse()) {
    connection->close();
    return;
  }
  auto slot = idle_.find(connection->key());
  if (slot == idle_.end())
    slot = idle_.emplace(connection->key(), std::vector<UpstreamConnection*>()).first;
  std::vector<UpstreamConnection*>& idle = slot->second;
  if (idle.size() >= pool_limits_.idle_connections) {
    // Over the bound: drop the least recently used.
    UpstreamConnection* oldest = idle.front();
    idle.erase(idle.begin());
    oldest->close();
  }
  idle.push_back(connection);
  connection->enterIdle(pool_limits_.idle_timeout_ms);
}

void UpstreamPool::forgetIdle(UpstreamConnection* connection) {
  auto found = idle_.find(connection->key());
  if (found == idle_.end()) return;
  auto& idle = found->second;
  idle.erase(std::remove(idle.begin(), idle.end(), connection), idle.end());
  if (idle.empty()) idle_.erase(found);
}

void UpstreamPool::closeIdle() {
  // Sessions with no stream in flight close like idle connections.
  std::vector<Http2UpstreamSession*> sessions;
  for (auto& [key, list] : sessions_) sessions.insert(sessions.end(), list.begin(), list.end());
  for (Http2UpstreamSession* session : sessions) {
    if (session->idle()) session->close();
  }
  auto idle = std::move(idle_);
  idle_.clear();
  for (auto& [key, connections] : idle) {
    for (UpstreamConnection* connection : connections) connection->close();
  }
}

void UpstreamPool::closeIdleTo(const std::string& key) {
  if (auto found = sessions_.find(key); found != sessions_.end()) {
    std::vector<Http2UpstreamSession*> sessions = found->second;
    for (Http2UpstreamSession* session : sessions) {
      if (session->idle()) session->close();
    }
  }
  auto found = idle_.find(key);
  if (found == idle_.end()) return;
  std::vector<UpstreamConnection*> connections = std::move(found->second);
  idle_.erase(found);
  for (UpstreamConnection* connection : connections) connection->close();
}

size_t UpstreamPool::idleConnections() const {
  size_t count = 0;
  for (const auto& [key, connections] : idle_) count += connections.size();
  return count;
}

}  // namespace spacegate
