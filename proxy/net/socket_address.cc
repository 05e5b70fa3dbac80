#include "net/socket_address.h"

#include <arpa/inet.h>
#include <sys/un.h>

#include <charconv>
#include <cstring>

namespace spacegate {

std::string SocketAddress::text() const {
  switch (kind) {
    case Kind::kUnix: return "unix:" + path;
    case Kind::kIp:
      if (ip.ss_family == AF_INET6) return "[" + host + "]:" + std::to_string(port);
      return host + ":" + std::to_string(port);
    case Kind::kHostname: return host + ":" + std::to_string(port);
  }
  return {};
}

SocketAddress withPort(const SocketAddress& address, uint16_t port) {
  SocketAddress moved = address;
  moved.port = port;
  if (moved.kind == SocketAddress::Kind::kIp) {
    if (moved.ip.ss_family == AF_INET) {
      reinterpret_cast<sockaddr_in*>(&moved.ip)->sin_port = htons(port);
    } else if (moved.ip.ss_family == AF_INET6) {
      reinterpret_cast<sockaddr_in6*>(&moved.ip)->sin6_port = htons(port);
    }
  }
  return moved;
}

bool isValidHostname(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  size_t label_start = 0;
  for (size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      size_t length = i - label_start;
      if (length == 0 || length > 63) return false;
      if (name[label_start] == '-' || name[i - 1] == '-') return false;
      label_start = i + 1;
      continue;
    }
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool parseSocketAddress(std::string_view text, SocketAddress& address, std::string& error,
                        bool allow_hostname, bool allow_unix) {
  address = SocketAddress{};
  if (text.starts_with("unix:")) {
    if (!allow_unix) {
      error = "unix sockets are not allowed here";
      return false;
    }
    std::string_view path = text.substr(5);
    if (path.empty() || path[0] != '/') {
      error = "unix socket path must be absolute (unix:/path)";
      return false;
    }
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
      error = "unix socket path is too long";
      return false;
    }
    if (path.find('\0') != std::string_view::npos) {
      error = "unix socket path contains NUL";
      return false;
    }
    address.kind = SocketAddress::Kind::kUnix;
    address.path = std::string(path);
    return true;
  }
  std::string_view host;
  std::string_view port_text;
  if (text.starts_with("[")) {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      error = "expected [IPv6]:port";
      return false;
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      error = "expected host:port or unix:/path";
      return false;
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      error = "IPv6 addresses must be in brackets: [addr]:port";
      return false;
    }
  }
  unsigned port = 0;
  auto [end, code] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || code != std::errc() || end != port_text.data() + port_text.size() ||
      port == 0 || port > 65535) {
    error = "port must be a number from 1 to 65535";
    return false;
  }
  address.port = static_cast<uint16_t>(port);
  address.host = std::string(host);
  if (host.empty()) {
    error = "missing host before ':'";
    return false;
  }
  auto* v4 = reinterpret_cast<sockaddr_in*>(&address.ip);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&address.ip);
  if (inet_pton(AF_INET, address.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(address.port);
    address.kind = SocketAddress::Kind::kIp;
    return true;
  }
  if (inet_pton(AF_INET6, address.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(address.port);
    address.kind = SocketAddress::Kind::kIp;
    return true;
  }
  if (text.starts_with("[")) {
    error = "not a valid IPv6 address";
    return false;
  }
  if (!isValidHostname(host)) {
    error = "not a valid IP address or host name";
    return false;
  }
  if (!allow_hostname) {
    error = "expected an IP address, not a host name";
    return false;
  }
  address.kind = SocketAddress::Kind::kHostname;
  return true;
}

std::string formatIp(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = "";
  if (address->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, text, sizeof text);
  } else if (address->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, text,
              sizeof text);
  } else if (address->sa_family == AF_UNIX) {
    return "unix";
  }
  return text;
}

}  // namespace spacegate
