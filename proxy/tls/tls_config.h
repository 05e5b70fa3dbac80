// The `tls:` section of the gateway config: certificates for the TLS
// listeners (and the TCP control API), ticket key rotation, lowest version.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace spacegate {

struct CertificateConfig {
  std::string cert_file;    // PEM chain, leaf first
  std::string key_file;     // PEM private key of the leaf
  bool is_default = false;  // served without SNI, or when no name matches
};

struct TlsConfig {
  std::vector<CertificateConfig> certificates;
  uint64_t session_ticket_rotation_ms = 3'600'000;
  bool tls13_only = false;  // min_version "1.3"; default "1.2"
};

}  // namespace spacegate
