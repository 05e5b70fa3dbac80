#include "control_api/control_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "common/log.h"
#include "http/header_rewrite.h"
#include "http1/message_parser.h"

namespace spacegate {

namespace {

// Compares secrets in time that does not depend on where they differ.
bool constantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i) difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  return difference == 0;
}

}  // namespace

// One client of the control API. Requests are handled one at a time; the
// body is collected whole (bounded by max_body_size) since it is parsed as
// JSON whole anyway.
class ControlConnection : private Http1MessageParser::BodyHandler {
 public:
  ControlConnection(ControlServer& server, bool tcp)
      : server_(server), tcp_(tcp), parser_(Http1MessageParser::Type::kRequest, server.limits()) {
    if (tcp_) {
      uv_tcp_init(server_.loop(), &socket_.tcp);
    } else {
      uv_pipe_init(server_.loop(), &socket_.pipe, 0);
    }
    socket_.tcp.data = this;
  }

  bool accept(uv_stream_t* listener) {
    if (uv_accept(listener, stream()) != 0) {
      close();
      return false;
    }
    uv_read_start(stream(), &ControlConnection::onAllocate, &ControlConnection::onRead);
    return true;
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&socket_), [](uv_handle_t* handle) {
      auto* self = static_cast<ControlConnection*>(handle->data);
      self->server_.connectionClosed();
      auto& list = self->server_.connections_list_;
      list.erase(std::remove(list.begin(), list.end(), self), list.end());
      delete self;
    });
  }

 private:
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&socket_); }

  static void onAllocate(uv_handle_t* handle, size_t, uv_buf_t* buffer) {
    auto* self = static_cast<ControlConnection*>(handle->data);
    *buffer = uv_buf_init(self->read_space_, sizeof self->read_space_);
  }

  static void onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buffer) {
    auto* self = static_cast<ControlConnection*>(stream->data);
    if (nread == 0) return;
    if (nread < 0) {
      self->close();
      return;
    }
    self->input_.append(buffer->base, static_cast<size_t>(nread));
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

  void process() {
    while (!closed_ && !writing_final_) {
      if (!head_done_) {
        RequestHead head;
        auto status = parser_.parseHead(input_.data(), input_.size(), head);
        if (status == Http1MessageParser::HeadStatus::kIncomplete) return;
        if (status == Http1MessageParser::HeadStatus::kError) {
          respond(ControlApi::errorResponse(parser_.errorStatus(), parser_.errorReason()), false);
          return;
        }
        // Copy what is needed: the views die when the input is trimmed.
        request_ = ControlRequest{};
        request_.method = std::string(head.method_name);
        std::string_view target = head.path;
        size_t question = target.find('?');
        request_.path = std::string(target.substr(0, question));
        if (question != std::string_view::npos)
          request_.query = std::string(target.substr(question + 1));
        keep_alive_ = head.keep_alive;
        authorization_.clear();
        if (const HeaderField* field = findHeader(head.headers, "authorization")) {
          authorization_ = std::string(field->value);
        }
        bool expect_continue = head.expect_continue;
        bool declared_too_large = head.framing == BodyFraming::kContentLength &&
                                  head.content_length > server_.config().max_body_size;
        input_.erase(0, parser_.headConsumed());
        head_done_ = true;
        body_too_large_ = false;
        if (declared_too_large) {
          server_.api().noteRefusedWrite(request_.method);
          respond(ControlApi::errorResponse(413, "request body too large"), false);
          return;
        }
        if (expect_continue && parser_.expectsBody()) write("HTTP/1.1 100 Continue\r\n\r\n");
      }
      if (parser_.expectsBody()) {
        auto result = parser_.parseBody(input_.data(), input_.size(), *this);
        if (result.error) {
          respond(ControlApi::errorResponse(400, "malformed request body"), false);
          return;
        }
        input_.erase(0, result.consumed);
        if (body_too_large_) {
          server_.api().noteRefusedWrite(request_.method);
          respond(ControlApi::errorResponse(413, "request body too large"), false);
          return;
        }
        if (!result.complete) return;
      }
      ControlResponse response;
      if (tcp_ && !authorised()) {
        response = ControlApi::errorResponse(401, "a valid bearer token is required");
      } else {
        response = server_.api().handle(request_);
      }
      respond(response, keep_alive_);
      head_done_ = false;
      parser_.reset();
      request_ = ControlRequest{};
    }
  }

  bool authorised() const {
    std::string_view value = authorization_;
    if (!value.starts_with("Bearer ") || server_.config().token.empty()) return false;
    return constantTimeEquals(value.substr(7), server_.config().token);
  }

  void respond(const ControlResponse& response, bool keep_alive) {
    std::string text = "HTTP/1.1 ";
    char number[8];
    text.append(number, std::to_chars(number, number + sizeof number, response.status).ptr);
    text.append(" ").append(statusReason(response.status));
    text.append("\r\nContent-Type: ").append(response.content_type);
    text.append("\r\nContent-Length: ").append(std::to_string(response.body.size()));
    if (!response.allow.empty()) text.append("\r\nAllow: ").append(response.allow);
    if (!keep_alive) text.append("\r\nConnection: close");
    text.append("\r\n\r\n");
    if (request_.method != "HEAD") text.append(response.body);
    write(std::move(text));
    if (!keep_alive) {
      writing_final_ = true;
      uv_read_stop(stream());
    }
  }

  struct Write {
    uv_write_t request;
    std::string bytes;
    ControlConnection* connection;
  };

  void write(std::string bytes) {
    auto* write = new Write{{}, std::move(bytes), this};
    write->request.data = write;
    uv_buf_t buffer = uv_buf_init(write->bytes.data(), static_cast<unsigned>(write->bytes.size()));
    ++pending_writes_;
    if (uv_write(&write->request, stream(), &buffer, 1, &ControlConnection::onWritten) != 0) {
      --pending_writes_;
      delete write;
      close();
    }
  }

  static void onWritten(uv_write_t* request, int status) {
    auto* write = static_cast<Write*>(request->data);
    ControlConnection* self = write->connection;
    delete write;
    --self->pending_writes_;
    if (status != 0 || (self->writing_final_ && self->pending_writes_ == 0)) self->close();
  }

  ControlServer& server_;
  bool tcp_;
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } socket_;
  Http1MessageParser parser_;
  std::string input_;
  ControlRequest request_;
  std::string authorization_;
  bool head_done_ = false;
  bool keep_alive_ = true;
  bool body_too_large_ = false;
  bool writing_final_ = false;
  bool closed_ = false;
  int pending_writes_ = 0;
  char read_space_[64 * 1024];
};

bool checkControlSocketFolder(const std::string& path, std::string& error) {
  size_t slash = path.find_last_of('/');
  std::string folder = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  struct stat info {};
  if (::stat(folder.c_str(), &info) != 0) {
    error = folder + ": " + std::strerror(errno);
    return false;
  }
  if ((info.st_mode & S_IWOTH) && !(info.st_mode & S_ISVTX)) {
    error = folder + ": world-writable and not sticky; anyone could replace the control socket";
    return false;
  }
  return true;
}

ControlServer::ControlServer(ControlApi& api, ControlServerConfig config, const Limits& limits)
    : api_(api), config_(std::move(config)), limits_(limits) {
  uv_loop_init(&loop_);
  mailbox_.open(&loop_);
}

ControlServer::~ControlServer() {
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

bool ControlServer::open(std::string& error) {
  if (!config_.socket_path.empty()) {
    const std::string& path = config_.socket_path;
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
      error = path + ": path too long for a unix socket";
      return false;
    }
    if (!checkControlSocketFolder(path, error)) return false;
    struct stat info {};
    if (::lstat(path.c_str(), &info) == 0) {
      if (!S_ISSOCK(info.st_mode)) {
        error = path + ": exists and is not a socket";
        return false;
      }
      // A socket left by a gateway that died: remove it, unless one answers.
      int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un address{};
      address.sun_family = AF_UNIX;
      std::memcpy(address.sun_path, path.c_str(), path.size());
      bool alive = ::connect(probe, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
      ::close(probe);
      if (alive) {
        error = path + ": another process is serving this control socket";
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
                         &ControlServer::onUnixConnection);
    }
    if (result != 0) {
      error = path + ": " + uv_strerror(result);
      return false;
    }
  }
  if (config_.tcp_enabled) {
    if (config_.token.empty()) {
      error = "control.address needs control.token_file";
      return false;
    }
    tcp_listener_ = std::make_unique<uv_tcp_t>();
    uv_tcp_init(&loop_, tcp_listener_.get());
    tcp_listener_->data = this;
    int result = uv_tcp_bind(tcp_listener_.get(),
                             reinterpret_cast<const sockaddr*>(&config_.tcp_address.ip), 0);
    if (result == 0) {
      result = uv_listen(reinterpret_cast<uv_stream_t*>(tcp_listener_.get()), 128,
                         &ControlServer::onTcpConnection);
    }
    if (result != 0) {
      error = "control " + config_.tcp_address.text() + ": " + uv_strerror(result);
      return false;
    }
  }
  return true;
}

void ControlServer::start() {
  started_ = true;
  thread_ = std::thread([this] {
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_run(&loop_, UV_RUN_NOWAIT);
  });
}

void ControlServer::stop() {
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
    std::vector<ControlConnection*> connections = connections_list_;
    for (ControlConnection* connection : connections) connection->close();
    mailbox_.close();
  });
}

void ControlServer::join() {
  if (thread_.joinable()) thread_.join();
}

void ControlServer::onUnixConnection(uv_stream_t* server, int status) {
  if (status == 0) static_cast<ControlServer*>(server->data)->accept(server, false);
}

void ControlServer::onTcpConnection(uv_stream_t* server, int status) {
  if (status == 0) static_cast<ControlServer*>(server->data)->accept(server, true);
}

void ControlServer::accept(uv_stream_t* server, bool tcp) {
  if (stopping_) return;
  auto* connection = new ControlConnection(*this, tcp);
  ++connections_;
  connections_list_.push_back(connection);
  connection->accept(server);
}

}  // namespace spacegate
