// ControlClient: a small blocking HTTP/1.1 client for the gateway's control
// API, over its unix socket or TCP (with a bearer token). Responses are read
// with the project's HTTP/1 codec; a CLI has no loop to run, so plain
// blocking sockets with a timeout are the right tool here.
#pragma once

#include <string>

namespace spacegate {

struct ControlReply {
  int status = 0;
  std::string body;
};

class ControlClient {
 public:
  // `socket_path` or `url` ("http://host:port"); `token` for TCP.
  ControlClient(std::string socket_path, std::string url, std::string token)
      : socket_path_(std::move(socket_path)), url_(std::move(url)), token_(std::move(token)) {}

  // False when the gateway cannot be reached or the reply is unreadable;
  // `error` says why.
  bool call(const std::string& method, const std::string& target, const std::string& body,
            ControlReply& reply, std::string& error);

 private:
  int connectSocket(std::string& host_header, std::string& error);

  std::string socket_path_;
  std::string url_;
  std::string token_;
};

}  // namespace spacegate
