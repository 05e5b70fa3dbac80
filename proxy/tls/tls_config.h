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

// TLS from the gateway to one route's upstream (`upstream_tls: true`).
struct UpstreamTlsOptions {
  // SNI, and the name the upstream's certificate must carry; empty: the
  // upstream's host (a DNS name or an IP address).
  std::string server_name;
  std::string ca_file;  // PEM bundle to verify against; empty: the system's CAs
  bool verify = true;   // false: any certificate (a dev server's self-signed one)
};

struct TlsConfig {
  std::vector<CertificateConfig> certificates;
  uint64_t session_ticket_rotation_ms = 3'600'000;
  bool tls13_only = false;  // min_version "1.3"; default "1.2"
};

}  // namespace spacegate
