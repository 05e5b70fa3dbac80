#include "tls/tls_context_set.h"

#include "http/message.h"
#include "tls/tls_connection.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

namespace spacegate {

namespace {

// TLS 1.2 suites: forward secret AEADs only (TLS 1.3's are fixed by BoringSSL).
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

std::string lastSslError() {
  uint32_t code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown error";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

std::vector<std::string> certificateNames(X509* leaf) {
  std::vector<std::string> names;
  auto* alt_names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr));
  if (alt_names) {
    for (size_t i = 0; i < sk_GENERAL_NAME_num(alt_names); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(alt_names, i);
      if (name->type != GEN_DNS) continue;
      const ASN1_STRING* text = name->d.dNSName;
      names.push_back(
          toLowerAscii(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(text)),
                                        static_cast<size_t>(ASN1_STRING_length(text)))));
    }
    GENERAL_NAMES_free(alt_names);
  }
  if (names.empty()) {
    // No subjectAltName: the subject's common name, as older certificates have it.
    char common_name[256];
    int length = X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, common_name,
                                           sizeof common_name);
    if (length > 0) names.push_back(toLowerAscii(std::string_view(common_name, length)));
  }
  return names;
}

std::string notAfterText(X509* leaf) {
  // From now to notAfter (a null `from` is the current time).
  int days = 0, seconds = 0;
  if (!ASN1_TIME_diff(&days, &seconds, nullptr, X509_get0_notAfter(leaf))) return "";
  time_t time = std::time(nullptr) + static_cast<time_t>(days) * 86400 + seconds;
  struct tm parts {};
  gmtime_r(&time, &parts);
  char text[32];
  strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

bool readable(const std::string& file, std::string& reason) {
  if (access(file.c_str(), R_OK) == 0) return true;
  reason = "cannot read " + file + ": " + std::strerror(errno);
  return false;
}

}  // namespace

TlsContextSet::~TlsContextSet() = default;

std::shared_ptr<const TlsContextSet> TlsContextSet::load(const TlsConfig& config,
                                                         SessionTicketKeys* ticket_keys,
                                                         ValidationError& error) {
  std::shared_ptr<TlsContextSet> set(new TlsContextSet());
  if (config.certificates.empty()) {
    rejectField(error, "tls.certificates", "a TLS listener needs at least one certificate");
    return nullptr;
  }
  ERR_clear_error();
  size_t defaults = 0;
  for (size_t i = 0; i < config.certificates.size(); ++i) {
    const CertificateConfig& source = config.certificates[i];
    std::string field = "tls.certificates[" + std::to_string(i) + "]";
    std::string reason;
    if (!readable(source.cert_file, reason)) {
      rejectField(error, field + ".cert", reason);
      return nullptr;
    }
    if (!readable(source.key_file, reason)) {
      rejectField(error, field + ".key", reason);
      return nullptr;
    }
    Certificate certificate;
    certificate.cert_file = source.cert_file;
    certificate.key_file = source.key_file;
    certificate.is_default = source.is_default;
    certificate.context.reset(SSL_CTX_new(TLS_method()));
    SSL_CTX* context = certificate.context.get();
    if (!SSL_CTX_use_certificate_chain_file(context, source.cert_file.c_str())) {
      rejectField(error, field + ".cert",
                  "not a PEM certificate chain (" + source.cert_file + "): " + lastSslError());
      return nullptr;
    }
    if (!SSL_CTX_use_PrivateKey_file(context, source.key_file.c_str(), SSL_FILETYPE_PEM)) {
      // BoringSSL checks the pair while loading the key.
      if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
        ERR_clear_error();
        rejectField(error, field + ".key",
                    "the key does not match the certificate " + source.cert_file);
        return nullptr;
      }
      rejectField(error, field + ".key",
                  "not a PEM private key (" + source.key_file + "): " + lastSslError());
      return nullptr;
    }
    if (!SSL_CTX_check_private_key(context)) {
      rejectField(error, field + ".key",
                  "the key does not match the certificate " + source.cert_file);
      return nullptr;
    }
    X509* leaf = SSL_CTX_get0_certificate(context);
    certificate.names = certificateNames(leaf);
    certificate.not_after = notAfterText(leaf);
    if (certificate.names.empty()) {
      rejectField(error, field + ".cert", "the certificate names no host (no DNS subjectAltName)");
      return nullptr;
    }
    if (source.is_default) {
      ++defaults;
      set->default_index_ = i;
    }
    set->certificates_.push_back(std::move(certificate));
  }
  if (defaults > 1) {
    rejectField(error, "tls.certificates", "only one certificate can be the default");
    return nullptr;
  }
  if (defaults == 0) set->certificates_[0].is_default = true;

  // Every context gets the same versions, suites and ALPN: which of them
  // BoringSSL consults after the SNI switch is an implementation detail.
  auto configure = [&](SSL_CTX* context) {
    SSL_CTX_set_min_proto_version(context, config.tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(context, TLS1_3_VERSION);
    SSL_CTX_set_strict_cipher_list(context, kTls12Ciphers);
    SSL_CTX_set_alpn_select_cb(context, &TlsContextSet::onAlpnSelect, nullptr);
    // Tickets only (stateless, shared by every worker): no server-side cache.
    SSL_CTX_set_session_cache_mode(context, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(context, SSL_OP_CIPHER_SERVER_PREFERENCE);
    static const uint8_t kSessionContext[] = "spacegate";
    SSL_CTX_set_session_id_context(context, kSessionContext, sizeof kSessionContext - 1);
    SessionTicketKeys::attach(context, ticket_keys);
  };
  for (size_t i = 0; i < set->certificates_.size(); ++i) {
    Certificate& certificate = set->certificates_[i];
    configure(certificate.context.get());
    for (const std::string& name : certificate.names) {
      if (name.starts_with("*.")) {
        set->wildcard_.emplace(name.substr(2), certificate.context.get());
      } else {
        set->exact_.emplace(name, certificate.context.get());
      }
    }
  }
  // The front context: the default certificate, plus the SNI callback.
  const CertificateConfig& fallback = config.certificates[set->default_index_];
  set->front_.reset(SSL_CTX_new(TLS_method()));
  SSL_CTX* front = set->front_.get();
  if (!SSL_CTX_use_certificate_chain_file(front, fallback.cert_file.c_str()) ||
      !SSL_CTX_use_PrivateKey_file(front, fallback.key_file.c_str(), SSL_FILETYPE_PEM)) {
    rejectField(error, "tls.certificates", "the default certificate changed while loading");
    return nullptr;
  }
  configure(front);
  SessionTicketKeys::install(front, ticket_keys);
  SSL_CTX_set_tlsext_servername_callback(front, &TlsContextSet::onServerName);
  SSL_CTX_set_tlsext_servername_arg(front, set.get());
  return set;
}

SSL_CTX* TlsContextSet::select(std::string_view server_name) const {
  if (server_name.empty() || server_name.size() > 253) return nullptr;
  std::string name = toLowerAscii(server_name);
  if (auto exact = exact_.find(name); exact != exact_.end()) return exact->second;
  size_t dot = name.find('.');
  if (dot == std::string::npos || dot == 0) return nullptr;
  if (auto wildcard = wildcard_.find(name.substr(dot + 1)); wildcard != wildcard_.end()) {
    return wildcard->second;
  }
  return nullptr;
}

int TlsContextSet::onServerName(SSL* ssl, int*, void* arg) {
  const auto* set = static_cast<const TlsContextSet*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_OK;  // no SNI: the default certificate
  SSL_CTX* context = set->select(name);
  if (context && context != set->certificates_[set->default_index_].context.get()) {
    SSL_set_SSL_CTX(ssl, context);
  }
  return SSL_TLSEXT_ERR_OK;
}

int TlsContextSet::onAlpnSelect(SSL* ssl, const uint8_t** out, uint8_t* out_length,
                                const uint8_t* in, unsigned in_length, void*) {
  const auto* connection = static_cast<const TlsConnection*>(SSL_get_app_data(ssl));
  bool offer_http2 = !connection || connection->offersHttp2();
  // The gateway's preference wins: h2, then http/1.1; neither offered: no ALPN
  // (the connection speaks HTTP/1.1).
  for (std::string_view wanted : {kAlpnHttp2, kAlpnHttp11}) {
    if (wanted == kAlpnHttp2 && !offer_http2) continue;
    unsigned offset = 0;
    while (offset < in_length) {
      unsigned length = in[offset];
      if (offset + 1 + length > in_length) return SSL_TLSEXT_ERR_NOACK;
      std::string_view offered(reinterpret_cast<const char*>(in + offset + 1), length);
      if (offered == wanted) {
        *out = in + offset + 1;
        *out_length = static_cast<uint8_t>(length);
        return SSL_TLSEXT_ERR_OK;
      }
      offset += 1 + length;
    }
  }
  return SSL_TLSEXT_ERR_NOACK;
}

std::string TlsContextSet::listingJson() const {
  nlohmann::json list = nlohmann::json::array();
  for (const Certificate& certificate : certificates_) {
    list.push_back({{"cert", certificate.cert_file},
                    {"key", certificate.key_file},
                    {"names", certificate.names},
                    {"not_after", certificate.not_after},
                    {"default", certificate.is_default}});
  }
  return nlohmann::json{{"certificates", list}}.dump();
}

}  // namespace spacegate
