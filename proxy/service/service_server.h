// ServiceServer: the HTTP/1.1 server behind every Spacegate API that is not
// the proxied traffic itself: the gateway's control API, the runner's API,
// the agent's API (and the control plane's). It uses the project's one HTTP/1
// codec, listens on a unix socket (mode 0600) and/or TCP, and runs on a loop
// and thread of its own so that a slow handler never stalls a gateway worker.
//
// A handler gets each request whole (the body is collected, bounded) and an
// exchange to answer through. It may answer at once, later from any thread
// (a long poll), or as a stream of chunks (a log that grows, Server-Sent
// Events). A connection handles one request at a time: the next request on a
// keep-alive connection is read only once the previous answer is complete.
#pragma once

#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "config/limits.h"
#include "net/loop_mailbox.h"
#include "net/socket_address.h"
#include "tls/tls_context_set.h"

namespace spacegate {

struct ServiceRequest {
  std::string method;
  std::string path;   // without the query, not decoded
  std::string query;  // after '?', may be empty
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
  bool over_tcp = false;  // false: the unix socket (already trusted by file mode)

  // The first value of a header (name in lowercase), or nullptr.
  const std::string* header(std::string_view lowercase_name) const;
  // The decoded value of a query parameter; false when absent.
  bool queryParameter(std::string_view name, std::string& value) const;
  // True when `Authorization: Bearer <token>` carries exactly `token`,
  // compared in time that does not depend on where they differ.
  bool hasBearerToken(std::string_view token) const;
  // The token after "Bearer ", or empty.
  std::string_view bearerToken() const;
};

struct ServiceResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra fields

  // {"error": message, "field": field} (field left out when empty).
  static ServiceResponse error(int status, std::string_view message, std::string_view field = {});
  static ServiceResponse json(int status, std::string body);
};

class ServiceConnection;
class ServiceServer;

// The answer to one request. Thread-safe: every method may be called from any
// thread; the bytes are written on the server's loop. Calls after the answer
// is complete, or after the client went away, are ignored.
class ServiceExchange : public std::enable_shared_from_this<ServiceExchange> {
 public:
  explicit ServiceExchange(ServiceServer& server) : server_(server) {}

  void respond(ServiceResponse response);
  // A chunked response whose body follows in sendChunk() calls.
  void startStream(int status, std::string content_type,
                   std::vector<std::pair<std::string, std::string>> headers = {});
  void sendChunk(std::string bytes);
  void finishStream();

  // True once the client has gone (or the server stops): stop producing.
  bool clientGone() const { return client_gone_.load(std::memory_order_acquire); }
  // Runs on the server's loop when the client goes before the answer is
  // complete (a long poll or a stream can then drop its subscription).
  void setOnClientGone(std::function<void()> callback);

 private:
  friend class ServiceConnection;
  void run(std::function<void(ServiceConnection&)> action);
  void markClientGone();

  ServiceServer& server_;
  ServiceConnection* connection_ = nullptr;  // loop thread only
  std::atomic<bool> client_gone_{false};
  std::mutex callback_mutex_;
  std::function<void()> on_client_gone_;
};

class ServiceHandler {
 public:
  virtual ~ServiceHandler() = default;
  // Called on the server's loop thread. Must answer through `exchange`
  // eventually (or the client waits until it gives up).
  virtual void handle(ServiceRequest request, std::shared_ptr<ServiceExchange> exchange) = 0;
  // A request refused before it reached handle() because its body was over
  // ServiceServerConfig::max_body_size (413), for the handler's counters.
  virtual void onBodyTooLarge(const std::string& method) {}
};

struct ServiceServerConfig {
  std::string name = "service";  // in log lines
  std::string socket_path;       // empty: no unix socket
  bool tcp_enabled = false;
  SocketAddress tcp_address;
  size_t max_body_size = 1u << 20;
  // A connection with no request in progress and nothing streaming is closed
  // after this long; a request head must arrive whole within it too.
  uint64_t idle_timeout_ms = 60'000;
  int max_connections = 1024;
  // TLS on the TCP listener: the certificates in use (reloads apply to new
  // connections). Null: plaintext.
  const TlsContextPublisher* tls = nullptr;
};

class ServiceServer {
 public:
  ServiceServer(ServiceHandler& handler, ServiceServerConfig config, const Limits& limits);
  ~ServiceServer();

  // Binds the listeners (on the calling thread). False with a reason.
  bool open(std::string& error);
  // The TCP port actually bound (useful with port 0).
  int tcpPort() const;
  void start();
  // Thread-safe: closes listeners and connections; the thread ends.
  void stop();
  void join();
  // Thread-safe: runs `task` on the server's loop.
  void post(std::function<void()> task) { mailbox_.post(std::move(task)); }
  bool onLoopThread() const { return std::this_thread::get_id() == loop_thread_id_; }

  ServiceHandler& handler() { return handler_; }
  const ServiceServerConfig& config() const { return config_; }
  const Limits& limits() const { return limits_; }
  uv_loop_t* loop() { return &loop_; }

 private:
  friend class ServiceConnection;
  static void onUnixConnection(uv_stream_t* server, int status);
  static void onTcpConnection(uv_stream_t* server, int status);
  void accept(uv_stream_t* server, bool tcp);
  void connectionClosed(ServiceConnection* connection);

  ServiceHandler& handler_;
  ServiceServerConfig config_;
  Limits limits_;
  uv_loop_t loop_;
  LoopMailbox mailbox_;
  std::unique_ptr<uv_pipe_t> unix_listener_;
  std::unique_ptr<uv_tcp_t> tcp_listener_;
  std::vector<ServiceConnection*> connections_;
  bool stopping_ = false;
  bool started_ = false;
  std::thread thread_;
  std::thread::id loop_thread_id_;
};

// Checks that a unix socket may be created at `path`: its folder exists and
// is not writable by others unless sticky. False with a reason.
bool checkSocketFolder(const std::string& path, std::string& error);

// Percent-decodes a URL component ('+' stays '+'); false on a bad escape.
bool percentDecode(std::string_view text, std::string& decoded);

}  // namespace spacegate
