#include "tls/upstream_tls_contexts.h"

#include <openssl/err.h>

namespace spacegate {

SSL_CTX* UpstreamTlsContexts::context(const std::string& ca_file, bool verify, std::string& error) {
  auto key = std::make_pair(ca_file, verify);
  if (auto found = contexts_.find(key); found != contexts_.end()) return found->second.get();
  bssl::UniquePtr<SSL_CTX> context(SSL_CTX_new(TLS_method()));
  SSL_CTX_set_min_proto_version(context.get(), TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(context.get(), TLS1_3_VERSION);
  // No session resumption yet: every new pooled connection makes a full
  // handshake (pooling keeps that rare).
  SSL_CTX_set_session_cache_mode(context.get(), SSL_SESS_CACHE_OFF);
  if (verify) {
    const std::string& file = ca_file.empty() ? std::string(kSystemCaFile) : ca_file;
    ERR_clear_error();
    if (!SSL_CTX_load_verify_locations(context.get(), file.c_str(), nullptr)) {
      char text[256];
      ERR_error_string_n(ERR_get_error(), text, sizeof text);
      ERR_clear_error();
      error = "cannot load the CA file " + file + ": " + text;
      return nullptr;
    }
  }
  SSL_CTX* raw = context.get();
  contexts_.emplace(key, std::move(context));
  return raw;
}

}  // namespace spacegate
