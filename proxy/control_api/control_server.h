// ControlServer: serves ControlApi through the shared ServiceServer on a unix
// socket (mode 0600) and, optionally, on TCP where every request needs
// `Authorization: Bearer <token>`. ServiceServer runs on its own loop and
// thread, so nothing the control API does (a 100,000-route PUT, a /metrics
// scrape) ever blocks a worker.
#pragma once

#include <memory>
#include <string>

#include "config/limits.h"
#include "control_api/control_api.h"
#include "net/socket_address.h"
#include "service/service_server.h"

namespace spacegate {

struct ControlServerConfig {
  std::string socket_path;  // empty: no unix socket
  bool tcp_enabled = false;
  SocketAddress tcp_address;
  std::string token;                         // required with TCP
  const TlsContextPublisher* tls = nullptr;  // TLS on TCP (the gateway's certificates)
  size_t max_body_size = 256u << 20;
};

class ControlServer : private ServiceHandler {
 public:
  ControlServer(ControlApi& api, ControlServerConfig config, const Limits& limits);

  // Binds the listeners (on the calling thread). False with a reason.
  bool open(std::string& error);
  void start() { server_.start(); }
  // Thread-safe: closes the listeners and connections; the thread ends.
  void stop() { server_.stop(); }
  void join() { server_.join(); }

 private:
  void handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) override;
  void onBodyTooLarge(const std::string& method) override { api_.noteRefusedWrite(method); }

  ControlApi& api_;
  ControlServerConfig config_;
  ServiceServer server_;
};

}  // namespace spacegate
