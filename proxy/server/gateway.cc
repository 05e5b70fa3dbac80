#include "server/gateway.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <uv.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <thread>

#include "common/log.h"
#include "server/worker.h"

namespace spacegate {

uint64_t raiseDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur;
}

Gateway::Gateway(GatewayConfig config, std::string config_file)
    : config_(std::move(config)), config_file_(std::move(config_file)) {}

Gateway::~Gateway() = default;

bool Gateway::applyTls(const TlsConfig& tls, ValidationError& error) {
  std::shared_ptr<const TlsContextSet> contexts =
      TlsContextSet::load(tls, ticket_keys_.get(), error);
  if (!contexts) return false;
  tls_contexts_.publish(std::move(contexts));
  tls_config_ = tls;
  return true;
}

std::string Gateway::tlsListing() const {
  return tls_contexts_.current()->listingJson();
}

bool Gateway::reloadTls(ValidationError& error) {
  std::lock_guard<std::mutex> lock(tls_mutex_);
  if (!ticket_keys_) return rejectField(error, "listen", "no listener has \"tls\": true");
  // The file's tls: section when there is a file (new or changed entries),
  // else the same files again (renewed certificates).
  TlsConfig tls = tls_config_;
  if (!config_file_.empty()) {
    GatewayConfig fresh;
    std::string message;
    if (!loadGatewayConfigFile(config_file_, fresh, message)) {
      return rejectField(error, "config", message);
    }
    tls = fresh.tls;
  }
  if (!applyTls(tls, error)) return false;
  logEvent(LogLevel::kInfo, "TLS certificates reloaded")
      .with("certificates", static_cast<uint64_t>(tls.certificates.size()))
      .emit();
  return true;
}

std::vector<WorkerCountersSnapshot> Gateway::workerCounters() const {
  std::vector<WorkerCountersSnapshot> snapshots;
  for (const auto& worker : workers_) {
    const WorkerCounters& counters = worker->counters();
    auto load = [](const auto& counter) { return counter.load(std::memory_order_relaxed); };
    WorkerCountersSnapshot snapshot;
    snapshot.connections_accepted = load(counters.connections_accepted);
    snapshot.client_connections_open = load(counters.client_connections_open);
    snapshot.upstream_connections_open = load(counters.upstream_connections_open);
    snapshot.tunnels_open = load(counters.tunnels_open);
    snapshot.tunnels_opened = load(counters.tunnels_opened);
    snapshot.tunnels_idle_closed = load(counters.tunnels_idle_closed);
    snapshot.tunnels_closed = load(counters.tunnels_closed);
    snapshot.tunnel_bytes_spliced = load(counters.tunnel_bytes_spliced);
    snapshot.tunnel_bytes_copied = load(counters.tunnel_bytes_copied);
    snapshot.connections_refused_descriptors = load(counters.connections_refused_descriptors);
    snapshot.tls_handshakes = load(counters.tls_handshakes);
    snapshot.tls_handshake_errors = load(counters.tls_handshake_errors);
    snapshot.tls_resumptions = load(counters.tls_resumptions);
    snapshot.http2_connections = load(counters.http2_connections);
    snapshot.http2_streams = load(counters.http2_streams);
    snapshot.http2_streams_reset = load(counters.http2_streams_reset);
    snapshot.http2_goaway_sent = load(counters.http2_goaway_sent);
    snapshot.http2_flood_closes = load(counters.http2_flood_closes);
    for (int i = 0; i < 6; ++i) snapshot.requests_by_class[i] = load(counters.requests_by_class[i]);
    snapshot.bytes_in = load(counters.bytes_in);
    snapshot.bytes_out = load(counters.bytes_out);
    snapshot.upstream_pool_hits = load(counters.upstream_pool_hits);
    snapshot.upstream_pool_misses = load(counters.upstream_pool_misses);
    snapshot.connections_closed_by_route_update = load(counters.connections_closed_by_route_update);
    snapshots.push_back(snapshot);
  }
  return snapshots;
}

void Gateway::drain() {
  if (draining_.exchange(true)) return;
  logEvent(LogLevel::kInfo, "draining: connections close after their current exchange").emit();
  for (auto& worker : workers_) worker->requestDrain();
}

bool Gateway::prepareRoutes(std::string& error) {
  route_store_ = std::make_unique<RouteStore>(routes_, config_.control.route_limit);
  route_store_->setRetireCallback([this](const RetiredRoutes& retired) {
    for (auto& worker : workers_) {
      worker->retireRoutes(retired.routes, retired.upstreams, config_.control.route_close_grace_ms);
    }
  });
  bool restored = false;
  if (!config_.state_dir.empty()) {
    if (::mkdir(config_.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      error = config_.state_dir + ": " + std::strerror(errno);
      return false;
    }
    std::string snapshot = config_.state_dir + "/routes.json";
    // The last applied table is served before anything else: a restarted
    // gateway answers for every Gitspace before any delegate reconnects.
    restored = route_store_->loadSnapshot(snapshot);
    route_store_->enableSnapshots(snapshot);
  }
  // An empty start stays at version 0, so that a delegate's first push
  // (version 1) is accepted.
  if (!restored && !config_.routes.empty()) route_store_->replaceFromConfig(config_.routes);
  if (restored && config_.routes_given) {
    logEvent(LogLevel::kInfo, "the snapshot's routes replace the config file's routes").emit();
  }
  key_store_ = std::make_unique<KeyRingStore>(keys_);
  key_store_->replaceWith(config_.public_keys);
  if (!config_.state_dir.empty() &&
      key_store_->loadAndPersistTo(config_.state_dir + "/keys.json")) {
    logEvent(LogLevel::kInfo, "access token keys restored from the state folder")
        .with("keys", static_cast<uint64_t>(keys_.current()->size()))
        .emit();
  }
  control_api_ = std::make_unique<ControlApi>(*route_store_, *key_store_, *this);
  if (!config_.control.socket.empty() || !config_.control.address.empty()) {
    ControlServerConfig server_config;
    server_config.socket_path = config_.control.socket;
    server_config.tcp_enabled = !config_.control.address.empty();
    server_config.tcp_address = config_.control.tcp_address;
    server_config.max_body_size = config_.control.max_body_size;
    if (config_.control.tls) {
      server_config.tls = &tls_contexts_;
    } else if (server_config.tcp_enabled) {
      logEvent(LogLevel::kWarning,
               "control API on TCP without TLS: its bearer token crosses the network in the "
               "clear (set control.tls: true)")
          .with("address", config_.control.address)
          .emit();
    }
    if (!config_.control.token_file.empty()) {
      std::ifstream token_stream(config_.control.token_file);
      if (!token_stream) {
        error = config_.control.token_file + ": cannot read the control token file";
        return false;
      }
      std::getline(token_stream, server_config.token);
      while (!server_config.token.empty() &&
             (server_config.token.back() == '\r' || server_config.token.back() == ' ')) {
        server_config.token.pop_back();
      }
      if (server_config.token.size() < 16) {
        error = config_.control.token_file + ": the control token must be at least 16 characters";
        return false;
      }
    }
    control_server_ = std::make_unique<ControlServer>(*control_api_, server_config, config_.limits);
    if (!control_server_->open(error)) return false;
  }
  return true;
}

void Gateway::reloadRoutes() {
  if (config_file_.empty()) return;
  if (control_server_) {
    logEvent(
        LogLevel::kInfo,
        "SIGHUP: routes are managed through the control API; the file's routes are not reloaded")
        .emit();
    return;
  }
  GatewayConfig fresh;
  std::string message;
  if (!loadGatewayConfigFile(config_file_, fresh, message)) {
    logEvent(LogLevel::kError, "config reload refused; routes unchanged")
        .with("error", message)
        .emit();
    return;
  }
  size_t count = fresh.routes.size();
  route_store_->replaceFromConfig(std::move(fresh.routes));
  logEvent(LogLevel::kInfo, "routes reloaded").with("routes", static_cast<uint64_t>(count)).emit();
}

int Gateway::run() {
  std::string error;
  if (!access_log_.open(config_.access_log, error)) {
    logEvent(LogLevel::kError, "cannot open the access log").with("error", error).emit();
    return 1;
  }
  uint64_t descriptors = raiseDescriptorLimit();
  unsigned workers =
      config_.workers ? config_.workers : std::max(1u, std::thread::hardware_concurrency());
  if (needsTlsCertificates(config_)) {
    ticket_keys_ = std::make_unique<SessionTicketKeys>(config_.tls.session_ticket_rotation_ms);
    ValidationError tls_error;
    if (!applyTls(config_.tls, tls_error)) {
      logEvent(LogLevel::kError, "cannot start")
          .with("error", tls_error.field + ": " + tls_error.message)
          .emit();
      return 1;
    }
  }
  if (!prepareRoutes(error)) {
    logEvent(LogLevel::kError, "cannot start").with("error", error).emit();
    return 1;
  }
  for (unsigned index = 0; index < workers; ++index) {
    auto worker =
        std::make_unique<Worker>(index, config_, routes_, keys_, tls_contexts_, access_log_);
    if (!worker->open(error)) {
      logEvent(LogLevel::kError, "cannot start").with("error", error).emit();
      return 1;
    }
    workers_.push_back(std::move(worker));
  }
  for (auto& worker : workers_) worker->start();
  if (control_server_) control_server_->start();
  {
    std::string listeners;
    for (const ListenerConfig& listener : config_.listeners) {
      if (!listeners.empty()) listeners += ",";
      listeners += listener.address.text();
      if (listener.tls) listeners += " (tls)";
    }
    logEvent(LogLevel::kInfo, "listening")
        .with("listen", listeners)
        .with("workers", workers)
        .with("routes", static_cast<uint64_t>(route_store_->current()->size()))
        .with("route_table_version", route_store_->version())
        .with("control_socket", config_.control.socket)
        .with("control_address", config_.control.address)
        .with("open_files_limit", descriptors)
        .emit();
  }

  // Signals are handled on the main thread's own loop.
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_signal_t terminate, interrupt, hangup;
  struct SignalContext {
    Gateway* gateway;
    uv_signal_t* handles[3];
    bool stopping = false;
  } context{this, {&terminate, &interrupt, &hangup}};
  auto on_stop = [](uv_signal_t* handle, int signal_number) {
    auto* signal_context = static_cast<SignalContext*>(handle->data);
    if (signal_context->stopping) return;
    signal_context->stopping = true;
    logEvent(LogLevel::kInfo, "shutting down")
        .with("signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT")
        .emit();
    Gateway* gateway = signal_context->gateway;
    if (gateway->control_server_) gateway->control_server_->stop();
    for (auto& worker : gateway->workers_) worker->requestShutdown();
    for (uv_signal_t* signal_handle : signal_context->handles) {
      uv_close(reinterpret_cast<uv_handle_t*>(signal_handle), nullptr);
    }
  };
  for (uv_signal_t* handle : {&terminate, &interrupt, &hangup}) {
    uv_signal_init(&loop, handle);
    handle->data = &context;
  }
  uv_signal_start(&terminate, on_stop, SIGTERM);
  uv_signal_start(&interrupt, on_stop, SIGINT);
  uv_signal_start(
      &hangup,
      [](uv_signal_t* handle, int) {
        Gateway* gateway = static_cast<SignalContext*>(handle->data)->gateway;
        gateway->reloadRoutes();
        ValidationError error;
        if (gateway->ticket_keys_ && !gateway->reloadTls(error)) {
          logEvent(LogLevel::kError, "TLS reload refused; certificates unchanged")
              .with("error", error.field + ": " + error.message)
              .emit();
        }
      },
      SIGHUP);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);

  if (control_server_) control_server_->join();
  for (auto& worker : workers_) worker->join();
  route_store_->flushSnapshot();
  // Nothing calls back into the workers after this point.
  route_store_->setRetireCallback(nullptr);
  workers_.clear();
  logEvent(LogLevel::kInfo, "stopped").emit();
  return 0;
}

}  // namespace spacegate
