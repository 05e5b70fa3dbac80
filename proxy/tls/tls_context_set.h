// TlsContextSet: the certificates of one load of the `tls:` config, as
// BoringSSL contexts, and the choice among them by SNI. Immutable once
// built: a reload (SIGHUP, POST /tls/reload) builds a whole new set and
// publishes it; handshakes already running keep the set they started with
// (each connection holds it), so no connection is dropped by a reload.
//
// A connection starts on the front context (the default certificate, ALPN,
// session tickets, the SNI callback); the SNI callback switches it to the
// context of the matching certificate: an exact name first, then a wildcard
// (`*.gitspaces.example` covers one label), else the default stays.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/snapshot_publisher.h"
#include "common/validation_error.h"
#include "tls/session_ticket_keys.h"
#include "tls/tls_config.h"

#ifndef OPENSSL_IS_BORINGSSL
#error "Spacegate's TLS needs BoringSSL (android-libboringssl-dev), not OpenSSL"
#endif

namespace spacegate {

class TlsContextSet {
 public:
  struct Certificate {
    std::string cert_file;
    std::string key_file;
    std::vector<std::string> names;  // subjectAltName DNS names (or the CN), lower case
    std::string not_after;           // "2027-11-28T10:00:00Z"
    bool is_default = false;
    bssl::UniquePtr<SSL_CTX> context;
  };

  // Loads every certificate; on failure names the field
  // ("tls.certificates[1].key") and the reason, and returns null.
  static std::shared_ptr<const TlsContextSet> load(const TlsConfig& config,
                                                   SessionTicketKeys* ticket_keys,
                                                   ValidationError& error);
  ~TlsContextSet();

  // The context new connections start on (holds this set for the SNI callback).
  SSL_CTX* front() const { return front_.get(); }
  // The certificate context for a server name (null: keep the default).
  SSL_CTX* select(std::string_view server_name) const;
  const std::vector<Certificate>& certificates() const { return certificates_; }
  // {"certificates": [{"cert", "key", "names", "not_after", "default"}]}
  std::string listingJson() const;

  // ALPN protocol ids the gateway offers, best first.
  static constexpr std::string_view kAlpnHttp2 = "h2";
  static constexpr std::string_view kAlpnHttp11 = "http/1.1";

  // An empty set (no TLS listener): front() is null.
  TlsContextSet() = default;

 private:
  static int onServerName(SSL* ssl, int* alert, void* arg);
  static int onAlpnSelect(SSL* ssl, const uint8_t** out, uint8_t* out_length, const uint8_t* in,
                          unsigned in_length, void* arg);

  std::vector<Certificate> certificates_;
  bssl::UniquePtr<SSL_CTX> front_;
  std::unordered_map<std::string, SSL_CTX*> exact_;
  std::unordered_map<std::string, SSL_CTX*> wildcard_;  // by the part after "*."
  size_t default_index_ = 0;
};

using TlsContextPublisher = SnapshotPublisher<TlsContextSet>;
using TlsContextReader = SnapshotReader<TlsContextSet>;

}  // namespace spacegate
