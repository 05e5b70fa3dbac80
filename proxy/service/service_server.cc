#include "service/service_server.h"

#include "tls/tls_connection.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "http/header_rewrite.h"
#include "http1/message_parser.h"

namespace spacegate {

namespace {

bool constantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i) difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  return difference == 0;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void appendStatusLine(std::string& text, int status) {
  text.append("HTTP/1.1 ");
  char number[8];
  text.append(number, std::to_chars(number, number + sizeof number, status).ptr);
  text.append(" ").append(statusReason(status)).append("\r\n");
}

}  // namespace

bool percentDecode(std::string_view text, std::string& decoded) {
  decoded.clear();
  decoded.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      decoded.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) return false;
    int high = hexValue(text[i + 1]);
    int low = hexValue(text[i + 2]);
    if (high < 0 || low < 0) return false;
    decoded.push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return true;
}

const std::string* ServiceRequest::header(std::string_view lowercase_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lowercase_name) return &value;
  }
  return nullptr;
}

bool ServiceRequest::queryParameter(std::string_view name, std::string& value) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    size_t equals = pair.find('=');
    std::string_view key = pair.substr(0, equals);
    if (key != name) continue;
    std::string_view raw =
        equals == std::string_view::npos ? std::string_view() : pair.substr(equals + 1);
    return percentDecode(raw, value);
  }
  return false;
}

std::string_view ServiceRequest::bearerToken() const {
  const std::string* value = header("authorization");
  if (!value || !std::string_view(*value).starts_with("Bearer ")) return {};
  return std::string_view(*value).substr(7);
}

bool ServiceRequest::hasBearerToken(std::string_view token) const {
  if (token.empty()) return false;
  return constantTimeEquals(bearerToken(), token);
}

ServiceResponse ServiceResponse::error(int status, std::string_view message,
                                       std::string_view field) {
  nlohmann::json body = {{"error", message}};
  if (!field.empty()) body["field"] = field;
  // Bytes that are not UTF-8 (echoed from a bad request in a message) are
  // replaced, never thrown about.
  return json(status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

ServiceResponse ServiceResponse::json(int status, std::string body) {
  ServiceResponse response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

// One client connection. The states, in order, for each request:
// reading the head, reading the body, waiting for the handler's answer,
// writing the answer (whole or streamed), then back to reading.
class ServiceConnection : private Http1MessageParser::BodyHandler {
 public:
  ServiceConnection(ServiceServer& server, bool tcp)
      : server_(server), tcp_(tcp), parser_(Http1MessageParser::Type::kRequest, server.limits()) {
    if (tcp_) {
      uv_tcp_init(server_.loop(), &socket_.tcp);
    } else {
      uv_pipe_init(server_.loop(), &socket_.pipe, 0);
    }
    socket_.tcp.data = this;
    uv_timer_init(server_.loop(), &idle_timer_);
    idle_timer_.data = this;
  }

  bool accept(uv_stream_t* listener) {
    if (uv_accept(listener, stream()) != 0) {
      close();
      return false;
    }
    if (tcp_ && server_.config().tls) {
      std::shared_ptr<const TlsContextSet> contexts = server_.config().tls->current();
      if (contexts->front()) {
        tls_ = std::make_unique<TlsConnection>(std::move(contexts), /*offer_http2=*/false);
      }
    }
    uv_read_start(stream(), &ServiceConnection::onAllocate, &ServiceConnection::onRead);
    armIdleTimer();
    return true;
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    if (exchange_) {
      exchange_->connection_ = nullptr;
      exchange_->markClientGone();
      exchange_.reset();
    }
    // Both handles live inside this object: it goes when the second close
    // completes (libuv finishes closes in an order of its own).
    auto on_closed = [](uv_handle_t* handle) {
      auto* self = static_cast<ServiceConnection*>(handle->data);
      if (--self->handles_closing_ > 0) return;
      self->server_.connectionClosed(self);
      delete self;
    };
    handles_closing_ = 2;
    uv_close(reinterpret_cast<uv_handle_t*>(&idle_timer_), on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&socket_), on_closed);
  }

  // Called through the exchange, on the loop thread.
  void respond(const ServiceResponse& response) {
    if (state_ != State::kAwaitingAnswer) return;
    std::string text;
    appendStatusLine(text, response.status);
    text.append("Content-Type: ").append(response.content_type);
    text.append("\r\nContent-Length: ").append(std::to_string(response.body.size()));
    text.append("\r\nCache-Control: no-store\r\n");
    for (const auto& [name, value] : response.headers) {
      text.append(name).append(": ").append(value).append("\r\n");
    }
    if (!keep_alive_) text.append("Connection: close\r\n");
    text.append("\r\n");
    if (method_ != "HEAD") text.append(response.body);
    write(std::move(text));
    finishExchange();
  }

  void startStream(int status, const std::string& content_type,
                   const std::vector<std::pair<std::string, std::string>>& headers) {
    if (state_ != State::kAwaitingAnswer) return;
    std::string text;
    appendStatusLine(text, status);
    text.append("Content-Type: ").append(content_type);
    text.append("\r\nCache-Control: no-store\r\n");
    for (const auto& [name, value] : headers) {
      text.append(name).append(": ").append(value).append("\r\n");
    }
    if (method_ == "HEAD") {
      text.append("Content-Length: 0\r\n\r\n");
      write(std::move(text));
      finishExchange();
      return;
    }
    text.append("Transfer-Encoding: chunked\r\n");
    if (!keep_alive_) text.append("Connection: close\r\n");
    text.append("\r\n");
    write(std::move(text));
    state_ = State::kStreaming;
    // A stream may stay quiet for long (a log nobody writes to): the idle
    // timer does not apply while it is open.
    uv_timer_stop(&idle_timer_);
  }

  void sendChunk(std::string bytes) {
    if (state_ != State::kStreaming || bytes.empty()) return;
    char size_line[24];
    int length = std::snprintf(size_line, sizeof size_line, "%zx\r\n", bytes.size());
    std::string text(size_line, static_cast<size_t>(length));
    text.append(bytes).append("\r\n");
    write(std::move(text));
  }

  void finishStream() {
    if (state_ != State::kStreaming) return;
    write("0\r\n\r\n");
    finishExchange();
  }

 private:
  enum class State { kReadingHead, kReadingBody, kAwaitingAnswer, kStreaming, kClosing };

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&socket_); }

  void armIdleTimer() {
    if (closed_) return;
    uv_timer_start(
        &idle_timer_,
        [](uv_timer_t* timer) { static_cast<ServiceConnection*>(timer->data)->close(); },
        server_.config().idle_timeout_ms, 0);
  }

  static void onAllocate(uv_handle_t* handle, size_t, uv_buf_t* buffer) {
    auto* self = static_cast<ServiceConnection*>(handle->data);
    *buffer = uv_buf_init(self->read_space_, sizeof self->read_space_);
  }

  static void onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buffer) {
    auto* self = static_cast<ServiceConnection*>(stream->data);
    if (nread == 0) return;
    if (nread < 0) {
      self->close();
      return;
    }
    if (self->tls_) {
      self->receiveCipherText(buffer->base, static_cast<size_t>(nread));
      return;
    }
    self->receive(buffer->base, static_cast<size_t>(nread));
  }

  // TLS: decrypts what arrived (the handshake first) and handles the plaintext.
  void receiveCipherText(const char* data, size_t size) {
    tls_->feed(data, size);
    std::string plaintext;
    TlsConnection::ReadResult result;
    char piece[16 * 1024];
    for (;;) {
      size_t produced = 0;
      result = tls_->read(piece, sizeof piece, produced);
      plaintext.append(piece, produced);
      if (result != TlsConnection::ReadResult::kData) break;
    }
    sendCipherText();
    if (closed_) return;
    if (result == TlsConnection::ReadResult::kError ||
        result == TlsConnection::ReadResult::kClosed) {
      close();
      return;
    }
    if (!plaintext.empty()) receive(plaintext.data(), plaintext.size());
  }

  // TLS: writes out what the TLS layer produced (handshake records, data).
  void sendCipherText() {
    std::string bytes(tls_->pendingOutput(), '\0');
    if (bytes.empty()) return;
    bytes.resize(tls_->takeOutput(bytes.data(), bytes.size()));
    writeRaw(std::move(bytes));
  }

  void receive(const char* data, size_t size) {
    ServiceConnection* self = this;
    ssize_t nread = static_cast<ssize_t>(size);
    // Bytes that arrive while an answer is pending are kept for the next
    // request, within bounds; past them the client is not playing fair.
    if (self->input_.size() + static_cast<size_t>(nread) >
        self->server_.config().max_body_size + self->server_.limits().header_block_size) {
      self->close();
      return;
    }
    self->input_.append(data, size);
    // A body that keeps arriving is progress; a head must come whole within
    // one idle period (slow-header clients are cut off).
    if (self->state_ == State::kReadingBody) self->armIdleTimer();
    self->process();
  }

  void onBodyData(const char* data, size_t size) override {
    if (body_too_large_) return;
    if (request_.body.size() + size > server_.config().max_body_size) {
      body_too_large_ = true;
      return;
    }
    request_.body.append(data, size);
  }
  void onMessageComplete(const std::vector<std::pair<std::string, std::string>>&) override {}

  void refuse(int status, std::string_view reason) {
    keep_alive_ = false;
    state_ = State::kAwaitingAnswer;
    respond(ServiceResponse::error(status, reason));
  }

  void process() {
    while (!closed_ && (state_ == State::kReadingHead || state_ == State::kReadingBody)) {
      if (state_ == State::kReadingHead) {
        RequestHead head;
        auto status = parser_.parseHead(input_.data(), input_.size(), head);
        if (status == Http1MessageParser::HeadStatus::kIncomplete) return;
        if (status == Http1MessageParser::HeadStatus::kError) {
          refuse(parser_.errorStatus(), parser_.errorReason());
          return;
        }
        // Copy what is needed: the views die when the input is trimmed.
        request_ = ServiceRequest{};
        request_.over_tcp = tcp_;
        request_.method = std::string(head.method_name);
        method_ = request_.method;
        std::string_view target = head.path;
        size_t question = target.find('?');
        request_.path = std::string(target.substr(0, question));
        if (question != std::string_view::npos)
          request_.query = std::string(target.substr(question + 1));
        for (const HeaderField& field : head.headers) {
          std::string name(field.name);
          std::transform(name.begin(), name.end(), name.begin(),
                         [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
          request_.headers.emplace_back(std::move(name), std::string(field.value));
        }
        keep_alive_ = head.keep_alive;
        bool expect_continue = head.expect_continue;
        bool declared_too_large = head.framing == BodyFraming::kContentLength &&
                                  head.content_length > server_.config().max_body_size;
        input_.erase(0, parser_.headConsumed());
        body_too_large_ = false;
        state_ = State::kReadingBody;
        if (declared_too_large) {
          server_.handler().onBodyTooLarge(method_);
          refuse(413, "request body too large");
          return;
        }
        if (expect_continue && parser_.expectsBody()) write("HTTP/1.1 100 Continue\r\n\r\n");
      }
      if (parser_.expectsBody()) {
        auto result = parser_.parseBody(input_.data(), input_.size(), *this);
        if (result.error) {
          refuse(400, "malformed request body");
          return;
        }
        input_.erase(0, result.consumed);
        if (body_too_large_) {
          server_.handler().onBodyTooLarge(method_);
          refuse(413, "request body too large");
          return;
        }
        if (!result.complete) return;
      }
      state_ = State::kAwaitingAnswer;
      uv_timer_stop(&idle_timer_);
      exchange_ = std::make_shared<ServiceExchange>(server_);
      exchange_->connection_ = this;
      std::shared_ptr<ServiceExchange> exchange = exchange_;
      server_.handler().handle(std::move(request_), std::move(exchange));
      // The handler may have answered already (and process() resumed the
      // next request from finishExchange()); the loop ends either way.
      return;
    }
  }

  void finishExchange() {
    if (exchange_) {
      exchange_->connection_ = nullptr;
      exchange_.reset();
    }
    parser_.reset();
    if (!keep_alive_) {
      state_ = State::kClosing;
      uv_read_stop(stream());
      if (pending_writes_ == 0) close();
      return;
    }
    state_ = State::kReadingHead;
    armIdleTimer();
    // Run the next pipelined request, if any, after this call returns so a
    // handler that answers synchronously does not recurse without bound.
    if (!input_.empty() && !resume_posted_) {
      resume_posted_ = true;
      server_.post([this, alive = alive_] {
        if (!*alive) return;
        resume_posted_ = false;
        process();
      });
    }
  }

  struct Write {
    uv_write_t request;
    std::string bytes;
    ServiceConnection* connection;
  };

  void write(std::string bytes) {
    if (closed_) return;
    if (tls_) {
      if (!tls_->write(bytes.data(), bytes.size())) {
        close();
        return;
      }
      sendCipherText();
      return;
    }
    writeRaw(std::move(bytes));
  }

  void writeRaw(std::string bytes) {
    if (closed_) return;
    auto* write = new Write{{}, std::move(bytes), this};
    write->request.data = write;
    uv_buf_t buffer = uv_buf_init(write->bytes.data(), static_cast<unsigned>(write->bytes.size()));
    ++pending_writes_;
    if (uv_write(&write->request, stream(), &buffer, 1, &ServiceConnection::onWritten) != 0) {
      --pending_writes_;
      delete write;
      close();
    }
  }

  static void onWritten(uv_write_t* request, int status) {
    auto* write = static_cast<Write*>(request->data);
    ServiceConnection* self = write->connection;
    delete write;
    --self->pending_writes_;
    if (status != 0 || (self->state_ == State::kClosing && self->pending_writes_ == 0)) {
      self->close();
    }
  }

 public:
  ~ServiceConnection() { *alive_ = false; }

 private:
  ServiceServer& server_;
  bool tcp_;
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } socket_;
  uv_timer_t idle_timer_;
  std::unique_ptr<TlsConnection> tls_;  // TCP listener with TLS
  Http1MessageParser parser_;
  std::string input_;
  ServiceRequest request_;
  std::string method_;
  std::shared_ptr<ServiceExchange> exchange_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  State state_ = State::kReadingHead;
  bool keep_alive_ = true;
  bool body_too_large_ = false;
  bool closed_ = false;
  bool resume_posted_ = false;
  int pending_writes_ = 0;
  int handles_closing_ = 0;
  char read_space_[64 * 1024];
};

void ServiceExchange::run(std::function<void(ServiceConnection&)> action) {
  if (server_.onLoopThread()) {
    if (connection_) action(*connection_);
    return;
  }
  server_.post([self = shared_from_this(), action = std::move(action)] {
    if (self->connection_) action(*self->connection_);
  });
}

void ServiceExchange::respond(ServiceResponse response) {
  run([response = std::move(response)](ServiceConnection& connection) {
    connection.respond(response);
  });
}

void ServiceExchange::startStream(int status, std::string content_type,
                                  std::vector<std::pair<std::string, std::string>> headers) {
  run([status, content_type = std::move(content_type),
       headers = std::move(headers)](ServiceConnection& connection) {
    connection.startStream(status, content_type, headers);
  });
}

void ServiceExchange::sendChunk(std::string bytes) {
  run([bytes = std::move(bytes)](ServiceConnection& connection) mutable {
    connection.sendChunk(std::move(bytes));
  });
}

void ServiceExchange::finishStream() {
  run([](ServiceConnection& connection) { connection.finishStream(); });
}

void ServiceExchange::setOnClientGone(std::function<void()> callback) {
  bool gone;
  {
    std::lock_guard<std::mutex> lock(callback_mutex_);
    gone = client_gone_.load(std::memory_order_acquire);
    if (!gone) on_client_gone_ = std::move(callback);
  }
  if (gone && callback) callback();
}

void ServiceExchange::markClientGone() {
  std::function<void()> callback;
  {
    std::lock_guard<std::mutex> lock(callback_mutex_);
    client_gone_.store(true, std::memory_order_release);
    callback.swap(on_client_gone_);
  }
  if (callback) callback();
}

bool checkSocketFolder(const std::string& path, std::string& error) {
  size_t slash = path.find_last_of('/');
  std::string folder = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  struct stat info {};
  if (::stat(folder.c_str(), &info) != 0) {
    error = folder + ": " + std::strerror(errno);
    return false;
  }
  if ((info.st_mode & S_IWOTH) && !(info.st_mode & S_ISVTX)) {
    error = folder + ": world-writable and not sticky; anyone could replace the socket";
    return false;
  }
  return true;
}

ServiceServer::ServiceServer(ServiceHandler& handler, ServiceServerConfig config,
                             const Limits& limits)
    : handler_(handler), config_(std::move(config)), limits_(limits) {
  uv_loop_init(&loop_);
  mailbox_.open(&loop_);
  loop_thread_id_ = std::this_thread::get_id();
}

ServiceServer::~ServiceServer() {
  if (!started_) {
    // Never started (start-up failed after open): close the handles here so
    // the loop can be closed without leaking them.
    if (unix_listener_) {
      uv_close(reinterpret_cast<uv_handle_t*>(unix_listener_.release()),
               [](uv_handle_t* handle) { delete reinterpret_cast<uv_pipe_t*>(handle); });
    }
    if (tcp_listener_) {
      uv_close(reinterpret_cast<uv_handle_t*>(tcp_listener_.release()),
               [](uv_handle_t* handle) { delete reinterpret_cast<uv_tcp_t*>(handle); });
    }
    mailbox_.close();
    uv_run(&loop_, UV_RUN_DEFAULT);
  }
  join();
  uv_loop_close(&loop_);
}

bool ServiceServer::open(std::string& error) {
  if (!config_.socket_path.empty()) {
    const std::string& path = config_.socket_path;
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
      error = path + ": path too long for a unix socket";
      return false;
    }
    if (!checkSocketFolder(path, error)) return false;
    struct stat info {};
    if (::lstat(path.c_str(), &info) == 0) {
      if (!S_ISSOCK(info.st_mode)) {
        error = path + ": exists and is not a socket";
        return false;
      }
      // A socket left by a process that died: remove it, unless one answers.
      int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un address{};
      address.sun_family = AF_UNIX;
      std::memcpy(address.sun_path, path.c_str(), path.size());
      bool alive = ::connect(probe, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
      ::close(probe);
      if (alive) {
        error = path + ": another process is serving this socket";
        return false;
      }
      ::unlink(path.c_str());
    }
    unix_listener_ = std::make_unique<uv_pipe_t>();
    uv_pipe_init(&loop_, unix_listener_.get(), 0);
    unix_listener_->data = this;
    // Created 0600 from the start (no window where others could connect).
    mode_t previous = ::umask(0177);
    int result = uv_pipe_bind(unix_listener_.get(), path.c_str());
    ::umask(previous);
    if (result == 0) ::chmod(path.c_str(), 0600);
    if (result == 0) {
      result = uv_listen(reinterpret_cast<uv_stream_t*>(unix_listener_.get()), 128,
                         &ServiceServer::onUnixConnection);
    }
    if (result != 0) {
      error = path + ": " + uv_strerror(result);
      return false;
    }
  }
  if (config_.tcp_enabled) {
    tcp_listener_ = std::make_unique<uv_tcp_t>();
    uv_tcp_init(&loop_, tcp_listener_.get());
    tcp_listener_->data = this;
    int result = uv_tcp_bind(tcp_listener_.get(),
                             reinterpret_cast<const sockaddr*>(&config_.tcp_address.ip), 0);
    if (result == 0) {
      result = uv_listen(reinterpret_cast<uv_stream_t*>(tcp_listener_.get()), 128,
                         &ServiceServer::onTcpConnection);
    }
    if (result != 0) {
      error = config_.name + " " + config_.tcp_address.text() + ": " + uv_strerror(result);
      return false;
    }
  }
  return true;
}

int ServiceServer::tcpPort() const {
  if (!tcp_listener_) return 0;
  sockaddr_storage address{};
  int length = sizeof address;
  if (uv_tcp_getsockname(tcp_listener_.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0)
    return 0;
  if (address.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port);
  }
  return ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port);
}

void ServiceServer::start() {
  started_ = true;
  thread_ = std::thread([this] {
    loop_thread_id_ = std::this_thread::get_id();
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_run(&loop_, UV_RUN_NOWAIT);
  });
}

void ServiceServer::stop() {
  mailbox_.post([this] {
    if (stopping_) return;
    stopping_ = true;
    if (unix_listener_) {
      uv_close(reinterpret_cast<uv_handle_t*>(unix_listener_.release()),
               [](uv_handle_t* handle) { delete reinterpret_cast<uv_pipe_t*>(handle); });
      ::unlink(config_.socket_path.c_str());
    }
    if (tcp_listener_) {
      uv_close(reinterpret_cast<uv_handle_t*>(tcp_listener_.release()),
               [](uv_handle_t* handle) { delete reinterpret_cast<uv_tcp_t*>(handle); });
    }
    std::vector<ServiceConnection*> connections = connections_;
    for (ServiceConnection* connection : connections) connection->close();
    mailbox_.close();
  });
}

void ServiceServer::join() {
  if (thread_.joinable()) thread_.join();
}

void ServiceServer::onUnixConnection(uv_stream_t* server, int status) {
  if (status == 0) static_cast<ServiceServer*>(server->data)->accept(server, false);
}

void ServiceServer::onTcpConnection(uv_stream_t* server, int status) {
  if (status == 0) static_cast<ServiceServer*>(server->data)->accept(server, true);
}

void ServiceServer::accept(uv_stream_t* server, bool tcp) {
  if (stopping_) return;
  auto* connection = new ServiceConnection(*this, tcp);
  connections_.push_back(connection);
  if (!connection->accept(server)) return;
  if (static_cast<int>(connections_.size()) > config_.max_connections) {
    logEvent(LogLevel::kWarning, "connection refused: too many connections")
        .with("service", config_.name)
        .emit();
    connection->close();
  }
}

void ServiceServer::connectionClosed(ServiceConnection* connection) {
  connections_.erase(std::remove(connections_.begin(), connections_.end(), connection),
                     connections_.end());
}

}  // namespace spacegate
