// ServiceClient: a small blocking HTTP/1.1 client for Spacegate's own APIs
// (the gateway's control API, the runner's, the agent's), over a unix socket
// or TCP, with an optional bearer token. Replies are read with the project's
// HTTP/1 codec. It is for callers without a loop to run (the CLI) or on a
// thread of their own (the runner's health checks): plain blocking sockets
// with deadlines on connect, send and receive. stream() hands a body to the
// caller as it arrives (a followed log, Server-Sent Events).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace spacegate {

struct ServiceReply {
  int status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
};

class ServiceClient {
 public:
  // `socket_path` or `url` ("http://host:port"); `token` sent as a bearer
  // token when not empty.
  ServiceClient(std::string socket_path, std::string url, std::string token)
      : socket_path_(std::move(socket_path)), url_(std::move(url)), token_(std::move(token)) {}

  void setTimeoutMs(int timeout_ms) { timeout_ms_ = timeout_ms; }
  void setUserAgent(std::string user_agent) { user_agent_ = std::move(user_agent); }
  // Sent as `Host:` instead of the URL's authority (a request through the
  // gateway to a host-routed upstream).
  void setHostHeader(std::string host) { host_override_ = std::move(host); }
  // Sent with every request ("X-Spacegate-Delegate: d-1"). The caller
  // keeps names and values free of CR and LF.
  void addHeader(std::string name, std::string value) {
    extra_headers_.emplace_back(std::move(name), std::move(value));
  }
  // Replies with bodies over this are refused.
  void setMaxReplySize(size_t bytes) { max_reply_size_ = bytes; }

  // False when the server cannot be reached or the reply is unreadable;
  // `error` says why. Any HTTP status is a successful call.
  bool call(const std::string& method, const std::string& target, const std::string& body,
            ServiceReply& reply, std::string& error) const;

  // Like call(), but a 2xx reply's body goes to `on_body` as it arrives
  // (de-chunked), never into `reply.body`; reading stops when on_body returns
  // false or the body ends (both true). A reply outside 2xx is collected
  // whole into `reply.body`, as call() does, so its error can be read. The
  // timeout applies to each wait for bytes, not to the whole body: a stream
  // that sends a keep-alive line more often than that lasts forever. False
  // when the server cannot be reached, the reply is unreadable, or the
  // connection ends or times out before the body is complete (`error` says
  // which; bytes already handed over stay handed over).
  bool stream(const std::string& method, const std::string& target, const std::string& body,
              const std::function<bool(std::string_view chunk)>& on_body, ServiceReply& reply,
              std::string& error) const;

 private:
  class BodySink;
  int connectSocket(std::string& host_header, std::string& error) const;
  bool exchange(const std::string& method, const std::string& target, const std::string& body,
                ServiceReply& reply, BodySink& sink, std::string& error) const;

  std::string socket_path_;
  std::string url_;
  std::string token_;
  std::string user_agent_ = "spacegate";
  std::string host_override_;
  std::vector<std::pair<std::string, std::string>> extra_headers_;
  int timeout_ms_ = 60'000;
  size_t max_reply_size_ = 256u << 20;
};

}  // namespace spacegate
