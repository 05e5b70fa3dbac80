// ControlServer: serves ControlApi over HTTP/1.1 (the project's own codec)
// on a unix socket (mode 0600) and, optionally, on TCP where every request
// needs `Authorization: Bearer <token>`. It runs on its own loop and thread,
// so nothing it does (a 100,000-route PUT, a /metrics scrape) ever blocks a
// worker.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "config/limits.h"
#include "control_api/control_api.h"
#include "net/loop_mailbox.h"
#include "net/socket_address.h"

namespace spacegate {

struct ControlServerConfig {
  std::string socket_path;  // empty: no unix socket
  bool tcp_enabled = false;
  SocketAddress tcp_address;
  std::string token;  // required with TCP
  size_t max_body_size = 256u << 20;
};

class ControlServer {
 public:
  ControlServer(ControlApi& api, ControlServerConfig config, const Limits& limits);
  ~ControlServer();

  // Binds the listeners (on the calling thread). False with a reason.
  bool open(std::string& error);
  void start();
  // Thread-safe: closes the listeners and connections; the thread ends.
  void stop();
  void join();

  ControlApi& api() { return api_; }
  const ControlServerConfig& config() const { return config_; }
  const Limits& limits() const { return limits_; }
  uv_loop_t* loop() { return &loop_; }
  void connectionClosed() { --connections_; }

 private:
  static void onUnixConnection(uv_stream_t* server, int status);
  static void onTcpConnection(uv_stream_t* server, int status);
  void accept(uv_stream_t* server, bool tcp);

  ControlApi& api_;
  ControlServerConfig config_;
  Limits limits_;
  uv_loop_t loop_;
  LoopMailbox mailbox_;
  std::unique_ptr<uv_pipe_t> unix_listener_;
  std::unique_ptr<uv_tcp_t> tcp_listener_;
  std::vector<class ControlConnection*> connections_list_;
  int connections_ = 0;
  bool stopping_ = false;
  bool started_ = false;
  std::thread thread_;
  friend class ControlConnection;
};

// Checks that a control socket may be created at `path`: its folder exists
// and is not writable by others unless sticky. False with a reason.
bool checkControlSocketFolder(const std::string& path, std::string& error);

}  // namespace spacegate
