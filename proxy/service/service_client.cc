#include "service/service_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "config/limits.h"
#include "http1/message_parser.h"

namespace spacegate {

namespace {

bool waitFor(int fd, short events, int timeout_ms) {
  pollfd entry{fd, events, 0};
  while (true) {
    int result = ::poll(&entry, 1, timeout_ms);
    if (result < 0 && errno == EINTR) continue;
    return result > 0;
  }
}

// connect() with a deadline: a machine whose network is gone would
// otherwise hold a health check for the kernel's SYN retries (minutes).
bool connectWithin(int fd, const sockaddr* address, socklen_t length, int timeout_ms) {
  int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int result = ::connect(fd, address, length);
  if (result != 0 && errno == EINPROGRESS) {
    if (!waitFor(fd, POLLOUT, timeout_ms)) {
      errno = ETIMEDOUT;
      return false;
    }
    int socket_error = 0;
    socklen_t size = sizeof socket_error;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &socket_error, &size);
    if (socket_error != 0) {
      errno = socket_error;
      return false;
    }
    result = 0;
  }
  ::fcntl(fd, F_SETFL, flags);
  return result == 0;
}

}  // namespace

// Where the body of a reply goes: collected into the reply (bounded), or,
// for stream() and a 2xx status, handed to the caller as it arrives.
class ServiceClient::BodySink : public Http1MessageParser::BodyHandler {
 public:
  BodySink(std::string& collected, size_t limit,
           const std::function<bool(std::string_view)>* on_body = nullptr)
      : collected_(collected), limit_(limit), on_body_(on_body) {}

  // The final status is known: decides where the body goes.
  void setStatus(int status) { forward_ = on_body_ && status >= 200 && status < 300; }

  void onBodyData(const char* data, size_t size) override {
    if (forward_) {
      if (!stopped_ && size > 0 && !(*on_body_)(std::string_view(data, size))) stopped_ = true;
      return;
    }
    if (collected_.size() + size > limit_) {
      too_large_ = true;
      return;
    }
    collected_.append(data, size);
  }
  void onMessageComplete(const std::vector<std::pair<std::string, std::string>>&) override {}

  bool tooLarge() const { return too_large_; }
  // The caller's on_body asked to stop reading.
  bool stopped() const { return stopped_; }

 private:
  std::string& collected_;
  size_t limit_;
  const std::function<bool(std::string_view)>* on_body_;
  bool forward_ = false;
  bool too_large_ = false;
  bool stopped_ = false;
};

int ServiceClient::connectSocket(std::string& host_header, std::string& error) const {
  if (!socket_path_.empty()) {
    host_header = "localhost";
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (socket_path_.size() >= sizeof address.sun_path) {
      error = socket_path_ + ": path too long";
      ::close(fd);
      return -1;
    }
    std::memcpy(address.sun_path, socket_path_.c_str(), socket_path_.size());
    if (!connectWithin(fd, reinterpret_cast<sockaddr*>(&address), sizeof address, timeout_ms_)) {
      error = socket_path_ + ": " + std::strerror(errno);
      ::close(fd);
      return -1;
    }
    return fd;
  }
  std::string rest = url_;
  if (rest.starts_with("http://")) rest = rest.substr(7);
  if (size_t slash = rest.find('/'); slash != std::string::npos) rest = rest.substr(0, slash);
  host_header = rest;
  std::string host = rest;
  std::string port = "80";
  if (!rest.empty() && rest.front() == '[') {
    size_t close = rest.find(']');
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
  } else if (size_t colon = rest.rfind(':'); colon != std::string::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* results = nullptr;
  if (int code = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &results); code != 0) {
    error = url_ + ": " + gai_strerror(code);
    return -1;
  }
  int fd = -1;
  for (addrinfo* entry = results; entry; entry = entry->ai_next) {
    fd = ::socket(entry->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connectWithin(fd, entry->ai_addr, entry->ai_addrlen, timeout_ms_)) break;
    error = url_ + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(results);
  return fd;
}

bool ServiceClient::call(const std::string& method, const std::string& target,
                         const std::string& body, ServiceReply& reply, std::string& error) const {
  reply = ServiceReply{};
  BodySink sink(reply.body, max_reply_size_);
  return exchange(method, target, body, reply, sink, error);
}

bool ServiceClient::stream(const std::string& method, const std::string& target,
                           const std::string& body,
                           const std::function<bool(std::string_view chunk)>& on_body,
                           ServiceReply& reply, std::string& error) const {
  reply = ServiceReply{};
  BodySink sink(reply.body, max_reply_size_, &on_body);
  return exchange(method, target, body, reply, sink, error);
}

bool ServiceClient::exchange(const std::string& method, const std::string& target,
                             const std::string& body, ServiceReply& reply, BodySink& sink,
                             std::string& error) const {
  std::string host_header;
  int fd = connectSocket(host_header, error);
  if (fd < 0) return false;
  if (!host_override_.empty()) host_header = host_override_;
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: " + host_header +
                        "\r\nConnection: close\r\nUser-Agent: " + user_agent_ + "\r\n";
  if (!token_.empty()) request += "Authorization: Bearer " + token_ + "\r\n";
  for (const auto& [name, value] : extra_headers_) request += name + ": " + value + "\r\n";
  if (!body.empty() || method == "PUT" || method == "PATCH" || method == "POST") {
    request +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  request += "\r\n";
  request += body;
  size_t sent = 0;
  while (sent < request.size()) {
    if (!waitFor(fd, POLLOUT, timeout_ms_)) {
      error = "timed out sending the request";
      ::close(fd);
      return false;
    }
    ssize_t result = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (result < 0) {
      if (errno == EINTR) continue;
      error = std::string("send: ") + std::strerror(errno);
      ::close(fd);
      return false;
    }
    sent += static_cast<size_t>(result);
  }
  Limits limits;
  Http1MessageParser parser(Http1MessageParser::Type::kResponse, limits);
  parser.setRequestMethod(method == "HEAD" ? HTTP_HEAD : HTTP_GET);
  std::string input;
  ResponseHead head;
  bool head_done = false;
  bool complete = false;
  char buffer[64 * 1024];
  while (!complete && !sink.stopped()) {
    if (!waitFor(fd, POLLIN, timeout_ms_)) {
      error = "timed out waiting for the reply";
      ::close(fd);
      return false;
    }
    ssize_t received = ::recv(fd, buffer, sizeof buffer, 0);
    if (received < 0 && errno == EINTR) continue;
    if (received <= 0) {
      if (head_done && head.framing == BodyFraming::kUntilClose && parser.finishAtEof(sink)) {
        complete = true;
        break;
      }
      error = "the server closed the connection before a complete reply";
      ::close(fd);
      return false;
    }
    input.append(buffer, static_cast<size_t>(received));
    while (!complete && !input.empty()) {
      if (!head_done) {
        auto status = parser.parseHead(input.data(), input.size(), head);
        if (status == Http1MessageParser::HeadStatus::kIncomplete) break;
        if (status == Http1MessageParser::HeadStatus::kError) {
          error = std::string("unreadable reply: ") + parser.errorReason();
          ::close(fd);
          return false;
        }
        reply.status = head.status;
        reply.headers.clear();
        for (const HeaderField& field : head.headers) {
          std::string name(field.name);
          for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          reply.headers.emplace_back(std::move(name), std::string(field.value));
        }
        input.erase(0, parser.headConsumed());
        if (head.status >= 100 && head.status < 200) {
          parser.reset();
          continue;
        }
        head_done = true;
        sink.setStatus(head.status);
        if (!parser.expectsBody()) complete = true;
        continue;
      }
      auto result = parser.parseBody(input.data(), input.size(), sink);
      if (sink.stopped()) break;
      if (result.error) {
        error = "unreadable reply body";
        ::close(fd);
        return false;
      }
      input.erase(0, result.consumed);
      complete = result.complete;
      if (sink.tooLarge()) {
        error = "the reply is larger than " + std::to_string(max_reply_size_) + " bytes";
        ::close(fd);
        return false;
      }
    }
  }
  ::close(fd);
  return true;
}

}  // namespace spacegate
