// Addresses as operators write them: "127.0.0.1:8080", "[::1]:8080",
// "ide.internal:3000" (resolved later by DNS) and "unix:/run/ide.sock".
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace spacegate {

struct SocketAddress {
  enum class Kind {
    kIp,        // literal IPv4 or IPv6 address and port; `ip` is valid
    kHostname,  // DNS name and port; resolved with c-ares when used
    kUnix,      // unix domain socket path in `path`
  };
  Kind kind = Kind::kIp;
  std::string host;  // literal address or DNS name (no brackets)
  uint16_t port = 0;
  std::string path;  // for kUnix
  sockaddr_storage ip{};

  // Canonical text, as given (used as the upstream pool key and in logs).
  std::string text() const;
};

// Parses an upstream or listen address. Returns false with a short reason in
// `error` when the text is not one of the accepted forms.
bool parseSocketAddress(std::string_view text, SocketAddress& address, std::string& error,
                        bool allow_hostname = true, bool allow_unix = true);

// The same host at another port (IP, or DNS name resolved when used).
SocketAddress withPort(const SocketAddress& address, uint16_t port);

// Formats the IP part of a socket address ("127.0.0.1", "::1").
std::string formatIp(const sockaddr* address);

// Valid DNS name: labels of [A-Za-z0-9-], not starting or ending with '-', 1..63
// bytes each, 253 in all.
bool isValidHostname(std::string_view name);

}  // namespace spacegate
