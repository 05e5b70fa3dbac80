// Client-side TLS contexts for upstreams, one per trust (a CA file, or the
// system's CAs) and verification mode, made on first use and kept by the
// worker's upstream pool: loading a CA bundle costs milliseconds, so it is
// never done per connection.
#pragma once

#include <openssl/ssl.h>

#include <map>
#include <string>
#include <utility>

namespace spacegate {

class UpstreamTlsContexts {
 public:
  // The Debian system bundle (ca-certificates).
  static constexpr const char* kSystemCaFile = "/etc/ssl/certs/ca-certificates.crt";
  // The context for `ca_file` (empty: the system's); null with a reason
  // when the file cannot be loaded.
  SSL_CTX* context(const std::string& ca_file, bool verify, std::string& error);

 private:
  std::map<std::pair<std::string, bool>, bssl::UniquePtr<SSL_CTX>> contexts_;
};

}  // namespace spacegate
