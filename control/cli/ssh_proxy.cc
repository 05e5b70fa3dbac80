#include "ssh_proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/base64.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string_view>
#include <utility>
#include <vector>

#include "tunnel/websocket_frame.h"
#include "tunnel_pump.h"

namespace spacegate {

namespace {

using Clock = std::chrono::steady_clock;

// A response head larger than this is not a gateway's answer to a tunnel.
constexpr size_t kMaxResponseHead = 64 * 1024;
// Of a refusal's body, only the first line is shown.
constexpr size_t kMaxRefusalBody = 2048;
constexpr int kRefusalBodyWaitMs = 2000;

// Where the tunnel goes and how to ask for it.
struct TunnelPlan {
  std::string token;
  std::string gateway_host;  // the TCP connection
  std::string gateway_port;
  std::string host;            // the Gitspace's host: CONNECT's authority
  int port = 0;                // the Gitspace's port (its sshd)
  std::string websocket_host;  // Host of the WebSocket request
  std::string websocket_path;  // /.spacegate/tunnel/<port>
};

struct ResponseHead {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> fields;  // names in lower case
  std::string rest;                                         // bytes after the head

  const std::string* field(std::string_view name) const {
    for (const auto& [key, value] : fields) {
      if (key == name) return &value;
    }
    return nullptr;
  }
};

std::string lowerCase(std::string_view text) {
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower;
}

std::string_view trimmed(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) {
    text.remove_suffix(1);
  }
  return text;
}

// "host:port" or "[v6]:port".
bool splitHostPort(std::string_view text, std::string& host, std::string& port) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) return false;
  std::string_view host_part = text.substr(0, colon);
  std::string_view port_part = text.substr(colon + 1);
  if (host_part.front() == '[') {
    if (host_part.size() < 3 || host_part.back() != ']') return false;
    host_part = host_part.substr(1, host_part.size() - 2);
  } else if (host_part.find(':') != std::string_view::npos) {
    return false;  // an IPv6 address needs its brackets
  }
  if (port_part.size() > 5 ||
      !std::all_of(port_part.begin(), port_part.end(), [](char c) { return std::isdigit(c); })) {
    return false;
  }
  int number = std::stoi(std::string(port_part));
  if (number < 1 || number > 65535) return false;
  host = host_part;
  port = port_part;
  return true;
}

// "http://host[:port][/...]": the gateway's address. https needs TLS, which
// this client does not speak yet.
bool parseGatewayUrl(const std::string& url, std::string& host, std::string& port,
                     std::string& error) {
  if (url.starts_with("https://")) {
    error = "the gateway is at " + url +
            ", and ssh-proxy does not speak TLS yet: pass --gateway HOST:PORT of a plain "
            "HTTP listener";
    return false;
  }
  if (!url.starts_with("http://")) {
    error = "the gateway URL \"" + url + "\" is not http://host[:port]";
    return false;
  }
  std::string_view authority = std::string_view(url).substr(7);
  authority = authority.substr(0, authority.find('/'));
  size_t host_end = authority.starts_with('[') ? authority.find(']') : 0;
  bool has_port =
      host_end != std::string_view::npos && authority.find(':', host_end) != std::string_view::npos;
  std::string with_port = has_port ? std::string(authority) : std::string(authority) + ":80";
  if (!splitHostPort(with_port, host, port)) {
    error = "the gateway URL \"" + url + "\" is not http://host[:port]";
    return false;
  }
  return true;
}

// "ws://authority/path" (or wss): the authority (the Host) and the path.
bool parseWebSocketUrl(const std::string& url, std::string& authority, std::string& path) {
  std::string_view rest = url;
  if (rest.starts_with("ws://")) {
    rest.remove_prefix(5);
  } else if (rest.starts_with("wss://")) {
    rest.remove_prefix(6);
  } else {
    return false;
  }
  size_t slash = rest.find('/');
  if (slash == 0 || slash == std::string_view::npos) return false;
  authority = rest.substr(0, slash);
  path = rest.substr(slash);
  return true;
}

int millisecondsLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

// Waits for `events` on fd until the deadline; false on timeout.
bool waitFor(int fd, short events, Clock::time_point deadline) {
  while (true) {
    pollfd entry{fd, events, 0};
    int ready = ::poll(&entry, 1, millisecondsLeft(deadline));
    if (ready > 0) return true;
    if (ready == 0) return false;
    if (errno != EINTR) return false;
  }
}

// A non-blocking TCP connection to the first address of host:port that
// answers before the deadline; -1 with the reason.
int connectTo(const std::string& host, const std::string& port, Clock::time_point deadline,
              std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  if (int code = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &addresses); code != 0) {
    error = "cannot resolve " + host + ": " + ::gai_strerror(code);
    return -1;
  }
  error = "no address for " + host;
  int connected = -1;
  for (addrinfo* address = addresses; address && connected < 0; address = address->ai_next) {
    int fd = ::socket(address->ai_family, address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                      address->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    int result = ::connect(fd, address->ai_addr, address->ai_addrlen);
    if (result != 0 && errno == EINPROGRESS) {
      if (!waitFor(fd, POLLOUT, deadline)) {
        error = "timed out";
        ::close(fd);
        continue;
      }
      int socket_error = 0;
      socklen_t length = sizeof socket_error;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &socket_error, &length);
      result = socket_error == 0 ? 0 : -1;
      errno = socket_error;
    }
    if (result != 0) {
      error = std::strerror(errno);
      ::close(fd);
      continue;
    }
    connected = fd;
  }
  ::freeaddrinfo(addresses);
  if (connected >= 0) {
    // ssh's keystrokes are small writes that should not wait for more.
    int one = 1;
    ::setsockopt(connected, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return connected;
}

bool sendAll(int fd, std::string_view data, Clock::time_point deadline, std::string& error) {
  while (!data.empty()) {
    ssize_t sent = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (sent > 0) {
      data.remove_prefix(static_cast<size_t>(sent));
      continue;
    }
    if (sent < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!waitFor(fd, POLLOUT, deadline)) {
        error = "timed out sending the request";
        return false;
      }
      continue;
    }
    error = std::strerror(errno);
    return false;
  }
  return true;
}

// Reads up to the end of the response head; what follows is kept in `rest`.
bool readResponseHead(int fd, Clock::time_point deadline, ResponseHead& head, std::string& error) {
  std::string bytes;
  size_t end = std::string::npos;
  char buffer[4096];
  while ((end = bytes.find("\r\n\r\n")) == std::string::npos) {
    if (bytes.size() > kMaxResponseHead) {
      error = "the response head is over 64 KiB";
      return false;
    }
    ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
    if (got > 0) {
      bytes.append(buffer, static_cast<size_t>(got));
      continue;
    }
    if (got == 0) {
      error = bytes.empty() ? "the gateway closed the connection without an answer"
                            : "the gateway closed the connection in the middle of its answer";
      return false;
    }
    if (errno != EAGAIN && errno != EINTR) {
      error = std::strerror(errno);
      return false;
    }
    if (!waitFor(fd, POLLIN, deadline)) {
      error = "no answer in time";
      return false;
    }
  }
  head.rest = bytes.substr(end + 4);
  std::string_view lines = std::string_view(bytes).substr(0, end + 2);
  size_t line_end = lines.find("\r\n");
  std::string_view status_line = lines.substr(0, line_end);
  // "HTTP/1.1 200 Connection established"
  if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12 || status_line[8] != ' ' ||
      !std::isdigit(static_cast<unsigned char>(status_line[9])) ||
      !std::isdigit(static_cast<unsigned char>(status_line[10])) ||
      !std::isdigit(static_cast<unsigned char>(status_line[11]))) {
    error = "the answer is not HTTP/1.1: \"" + std::string(status_line.substr(0, 80)) + "\"";
    return false;
  }
  head.status =
      (status_line[9] - '0') * 100 + (status_line[10] - '0') * 10 + (status_line[11] - '0');
  head.reason = trimmed(status_line.substr(12));
  lines.remove_prefix(line_end + 2);
  while (!lines.empty()) {
    size_t next = lines.find("\r\n");
    std::string_view line = lines.substr(0, next);
    lines.remove_prefix(next + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    head.fields.emplace_back(lowerCase(trimmed(line.substr(0, colon))),
                             std::string(trimmed(line.substr(colon + 1))));
  }
  return true;
}

// The phrase for a status the gateway may refuse a tunnel with, for an
// answer that carries none.
std::string_view standardReason(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 407: return "Proxy Authentication Required";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
  }
  return "";
}

// The refusal as one line: the gateway's own body line ("403 Forbidden:
// a token without scope ssh") when it starts with the status, else the
// status, its reason and the body's first line.
std::string refusalText(int fd, const ResponseHead& head) {
  std::string body = head.rest;
  size_t wanted = kMaxRefusalBody;
  if (const std::string* length = head.field("content-length")) {
    char* end = nullptr;
    unsigned long long value = std::strtoull(length->c_str(), &end, 10);
    if (end && *end == '\0') wanted = std::min<size_t>(wanted, value);
  }
  Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(kRefusalBodyWaitMs);
  char buffer[1024];
  while (body.size() < wanted && body.find('\n') == std::string::npos &&
         waitFor(fd, POLLIN, deadline)) {
    ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (got <= 0) break;
    body.append(buffer, static_cast<size_t>(got));
  }
  std::string_view line = body;
  line = trimmed(line.substr(0, std::min(line.find('\n'), size_t{200})));
  std::string status = std::to_string(head.status);
  std::string reason = head.reason.empty() ? std::string(standardReason(head.status)) : head.reason;
  if (line.starts_with(status)) {
    std::string_view after = line.substr(status.size());
    // "407 : detail": the gateway's body without a phrase for its status.
    if (reason.empty() || !(after.empty() || after.starts_with(" :"))) return std::string(line);
    return status + " " + reason + std::string(after.empty() ? after : after.substr(1));
  }
  std::string text = status;
  if (!reason.empty()) text += " " + reason;
  if (!line.empty()) text += ": " + std::string(line);
  return text;
}

std::string randomWebSocketKey() {
  uint8_t nonce[16];
  RAND_bytes(nonce, sizeof nonce);
  uint8_t encoded[4 * ((sizeof nonce + 2) / 3) + 1];
  size_t length = EVP_EncodeBlock(encoded, nonce, sizeof nonce);
  return std::string(reinterpret_cast<const char*>(encoded), length);
}

bool headerHasToken(const ResponseHead& head, std::string_view name, std::string_view token) {
  const std::string* value = head.field(name);
  return value && lowerCase(*value).find(token) != std::string::npos;
}

// Ids go into a URL path: only the characters an id has.
bool validGitspaceId(std::string_view id) {
  return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

std::string jsonString(const nlohmann::json& object, const char* key) {
  auto found = object.find(key);
  return found != object.end() && found->is_string() ? found->get<std::string>() : "";
}

}  // namespace

SshProxyCommand::SshProxyCommand(CLI::App& app) {
  command_ = app.add_subcommand(
      "ssh-proxy",
      "an ssh ProxyCommand: a tunnel to a Gitspace's sshd through the gateway (stdin/stdout)");
  command_->add_option("gitspace", gitspace_, "Gitspace id (or its host, with --token-file)")
      ->required();
  command_->add_option("--via", via_, "connect (HTTP CONNECT) or websocket (HTTPS-only networks)")
      ->check(CLI::IsMember({"connect", "websocket"}))
      ->capture_default_str();
  command_->add_option("--port", port_, "the Gitspace port (default: its ssh port)")
      ->check(CLI::Range(1, 65535));
  command_->add_option("--gateway", gateway_,
                       "the gateway's HOST:PORT (default: from the control plane)");
  command_->add_option("--host", host_,
                       "the Gitspace's host, e.g. gs-abc.gitspaces.example (default: from the "
                       "control plane)");
  command_->add_option("--token-file", token_file_,
                       "a file holding an access token with scope ssh (skips the control plane)");
  command_->add_option("--timeout", timeout_seconds_, "seconds to connect and open the tunnel")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  command_->add_option("--control-url", control_.url, "the control plane's API")
      ->envname("SPACEGATE_CONTROL_URL")
      ->capture_default_str();
  command_
      ->add_option("--control-token-file", control_.token_file,
                   "file holding your API token (the admin's: <state_dir>/admin.token)")
      ->envname("SPACEGATE_CONTROL_TOKEN_FILE");
}

int SshProxyCommand::run() {
  // Writes to a closed stdout or socket must be errors, not a silent death.
  ::signal(SIGPIPE, SIG_IGN);
  TunnelPlan plan;
  std::string error;
  if (!token_file_.empty()) {
    std::ifstream stream(token_file_);
    if (!stream) {
      std::fprintf(stderr, "spacegatectl: %s: cannot read the token file\n", token_file_.c_str());
      return kExitUsage;
    }
    std::getline(stream, plan.token);
    plan.token = std::string(trimmed(plan.token));
    if (plan.token.empty()) {
      std::fprintf(stderr, "spacegatectl: %s: the token file is empty\n", token_file_.c_str());
      return kExitUsage;
    }
    plan.host = !host_.empty() ? host_ : gitspace_;
    if (plan.host.find('.') == std::string::npos) {
      std::fprintf(stderr,
                   "spacegatectl: --token-file: pass the Gitspace's host with --host (e.g. "
                   "%s.gitspaces.example)\n",
                   gitspace_.c_str());
      return kExitUsage;
    }
    if (gateway_.empty()) {
      std::fprintf(stderr,
                   "spacegatectl: --token-file: pass the gateway with --gateway HOST:PORT\n");
      return kExitUsage;
    }
    plan.port = port_ ? port_ : 22;
    plan.websocket_host = plan.host;
    plan.websocket_path = "/.spacegate/tunnel/" + std::to_string(plan.port);
  } else {
    if (!validGitspaceId(gitspace_)) {
      std::fprintf(stderr, "spacegatectl: \"%s\" is not a Gitspace id\n", gitspace_.c_str());
      return kExitUsage;
    }
    ControlPlaneApi api;
    if (!api.open(control_, error)) {
      std::fprintf(stderr, "spacegatectl: %s\n", error.c_str());
      return kExitUsage;
    }
    nlohmann::json reply;
    if (int code = api.call("POST", "/api/v1/gitspaces/" + gitspace_ + "/token",
                            nlohmann::json{{"scope", "ssh"}}, reply);
        code != kExitOk) {
      return code;
    }
    nlohmann::json ssh = reply.is_object() ? reply.value("ssh", nlohmann::json()) : nullptr;
    plan.token = reply.is_object() ? jsonString(reply, "token") : "";
    if (!ssh.is_object() || plan.token.empty() || !ssh.contains("port") ||
        !ssh["port"].is_number_integer()) {
      std::fprintf(stderr,
                   "spacegatectl: the control plane's token reply names no ssh tunnel (is it "
                   "older than ssh-proxy?)\n");
      return kExitRefused;
    }
    int ssh_port = ssh["port"].get<int>();
    plan.host = !host_.empty() ? host_ : jsonString(ssh, "host");
    plan.port = port_ ? port_ : ssh_port;
    if (!parseWebSocketUrl(jsonString(ssh, "websocket_url"), plan.websocket_host,
                           plan.websocket_path)) {
      plan.websocket_host = plan.host;
      plan.websocket_path = "/.spacegate/tunnel/" + std::to_string(plan.port);
    }
    if (!host_.empty()) plan.websocket_host = host_;
    if (plan.port != ssh_port)
      plan.websocket_path = "/.spacegate/tunnel/" + std::to_string(plan.port);
    if (gateway_.empty() &&
        !parseGatewayUrl(jsonString(ssh, "gateway"), plan.gateway_host, plan.gateway_port, error)) {
      std::fprintf(stderr, "spacegatectl: %s\n", error.c_str());
      return kExitUsage;
    }
  }
  if (!gateway_.empty() && !splitHostPort(gateway_, plan.gateway_host, plan.gateway_port)) {
    std::fprintf(stderr, "spacegatectl: --gateway: expected HOST:PORT, got \"%s\"\n",
                 gateway_.c_str());
    return kExitUsage;
  }

  Clock::time_point deadline = Clock::now() + std::chrono::seconds(timeout_seconds_);
  int fd = connectTo(plan.gateway_host, plan.gateway_port, deadline, error);
  if (fd < 0) {
    std::fprintf(stderr, "spacegatectl: cannot reach the gateway at %s:%s: %s\n",
                 plan.gateway_host.c_str(), plan.gateway_port.c_str(), error.c_str());
    return kExitUnreachable;
  }
  bool websocket = via_ == "websocket";
  std::string authority = plan.host + ":" + std::to_string(plan.port);
  std::string key;
  std::string request;
  if (websocket) {
    key = randomWebSocketKey();
    request = "GET " + plan.websocket_path + " HTTP/1.1\r\nHost: " + plan.websocket_host +
              "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
              "\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer " + plan.token +
              "\r\nUser-Agent: spacegatectl\r\n\r\n";
  } else {
    request = "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority +
              "\r\nProxy-Authorization: Bearer " + plan.token +
              "\r\nUser-Agent: spacegatectl\r\n\r\n";
  }
  ResponseHead head;
  if (!sendAll(fd, request, deadline, error) || !readResponseHead(fd, deadline, head, error)) {
    std::fprintf(stderr, "spacegatectl: the gateway at %s:%s did not open the tunnel: %s\n",
                 plan.gateway_host.c_str(), plan.gateway_port.c_str(), error.c_str());
    ::close(fd);
    return kExitRefused;
  }
  bool opened = websocket ? head.status == 101 : head.status >= 200 && head.status < 300;
  if (!opened) {
    std::fprintf(stderr, "spacegatectl: gateway refused the tunnel: %s\n",
                 refusalText(fd, head).c_str());
    ::close(fd);
    return kExitRefused;
  }
  if (websocket) {
    const std::string* accept = head.field("sec-websocket-accept");
    if (!headerHasToken(head, "upgrade", "websocket") || !accept ||
        *accept != webSocketAcceptValue(key)) {
      std::fprintf(stderr,
                   "spacegatectl: the gateway's 101 is not a WebSocket handshake for this "
                   "request (Upgrade or Sec-WebSocket-Accept)\n");
      ::close(fd);
      return kExitRefused;
    }
  }
  TunnelPump pump(fd, websocket ? TunnelPump::Framing::kWebSocket : TunnelPump::Framing::kRaw);
  int code = pump.run(head.rest);
  ::close(fd);
  return code;
}

}  // namespace spacegate
