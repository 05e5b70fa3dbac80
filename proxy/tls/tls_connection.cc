#include "tls/tls_connection.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509.h>

namespace spacegate {

TlsConnection::TlsConnection(std::shared_ptr<const TlsContextSet> contexts, bool offer_http2)
    : contexts_(std::move(contexts)), ssl_(SSL_new(contexts_->front())), offer_http2_(offer_http2) {
  // The ALPN callback asks the connection what it may offer.
  SSL_set_app_data(ssl_.get(), this);
  input_ = BIO_new(BIO_s_mem());
  output_ = BIO_new(BIO_s_mem());
  // An empty input BIO means "wait for more", not end of file.
  BIO_set_mem_eof_return(input_, -1);
  SSL_set_bio(ssl_.get(), input_, output_);
  SSL_set_accept_state(ssl_.get());
}

TlsConnection::TlsConnection(SSL_CTX* client_context, const std::string& server_name, bool verify)
    : ssl_(SSL_new(client_context)) {
  input_ = BIO_new(BIO_s_mem());
  output_ = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(input_, -1);
  SSL_set_bio(ssl_.get(), input_, output_);
  SSL_set_connect_state(ssl_.get());
  in_addr ipv4;
  in6_addr ipv6;
  bool is_ip = inet_pton(AF_INET, server_name.c_str(), &ipv4) == 1 ||
               inet_pton(AF_INET6, server_name.c_str(), &ipv6) == 1;
  // SNI carries host names only (RFC 6066 3).
  if (!is_ip && !server_name.empty()) SSL_set_tlsext_host_name(ssl_.get(), server_name.c_str());
  if (verify) {
    X509_VERIFY_PARAM* parameters = SSL_get0_param(ssl_.get());
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(parameters, server_name.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(parameters, server_name.c_str(), server_name.size());
    }
    SSL_set_verify(ssl_.get(), SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_set_verify(ssl_.get(), SSL_VERIFY_NONE, nullptr);
  }
  static const uint8_t kAlpn[] = "\x08http/1.1";
  SSL_set_alpn_protos(ssl_.get(), kAlpn, sizeof kAlpn - 1);
}

std::string TlsConnection::verifyFailure() const {
  long result = SSL_get_verify_result(ssl_.get());
  if (result == X509_V_OK) return "";
  return X509_verify_cert_error_string(result);
}

TlsConnection::~TlsConnection() = default;

void TlsConnection::feed(const char* data, size_t size) {
  BIO_write(input_, data, static_cast<int>(size));
}

TlsConnection::ReadResult TlsConnection::read(char* buffer, size_t size, size_t& produced) {
  produced = 0;
  if (!handshake_done_) {
    int result = SSL_do_handshake(ssl_.get());
    if (result != 1) {
      int error = SSL_get_error(ssl_.get(), result);
      if (error == SSL_ERROR_WANT_READ) return ReadResult::kWantMore;
      failure_ = error == SSL_ERROR_ZERO_RETURN ? "TLS closed during the handshake"
                                                : "TLS handshake failed";
      ERR_clear_error();
      return error == SSL_ERROR_ZERO_RETURN ? ReadResult::kClosed : ReadResult::kError;
    }
    handshake_done_ = true;
  }
  if (size == 0) return ReadResult::kWantMore;
  int result = SSL_read(ssl_.get(), buffer, static_cast<int>(size > INT32_MAX ? INT32_MAX : size));
  if (result > 0) {
    produced = static_cast<size_t>(result);
    return ReadResult::kData;
  }
  int error = SSL_get_error(ssl_.get(), result);
  if (error == SSL_ERROR_WANT_READ) return ReadResult::kWantMore;
  ERR_clear_error();
  if (error == SSL_ERROR_ZERO_RETURN) return ReadResult::kClosed;
  failure_ = "TLS record error";
  return ReadResult::kError;
}

bool TlsConnection::write(const char* data, size_t size) {
  while (size > 0) {
    int chunk = static_cast<int>(size > (1u << 30) ? (1u << 30) : size);
    int result = SSL_write(ssl_.get(), data, chunk);
    if (result <= 0) {
      ERR_clear_error();
      return false;
    }
    data += result;
    size -= static_cast<size_t>(result);
  }
  return true;
}

void TlsConnection::shutdown() {
  if (handshake_done_) SSL_shutdown(ssl_.get());
  ERR_clear_error();
}

size_t TlsConnection::pendingOutput() const {
  return BIO_ctrl_pending(output_);
}

size_t TlsConnection::takeOutput(char* buffer, size_t size) {
  int result = BIO_read(output_, buffer, static_cast<int>(size));
  return result > 0 ? static_cast<size_t>(result) : 0;
}

std::string_view TlsConnection::alpn() const {
  const uint8_t* protocol = nullptr;
  unsigned length = 0;
  SSL_get0_alpn_selected(ssl_.get(), &protocol, &length);
  return protocol ? std::string_view(reinterpret_cast<const char*>(protocol), length)
                  : std::string_view();
}

std::string_view TlsConnection::serverName() const {
  const char* name = SSL_get_servername(ssl_.get(), TLSEXT_NAMETYPE_host_name);
  return name ? std::string_view(name) : std::string_view();
}

bool TlsConnection::resumed() const {
  return SSL_session_reused(ssl_.get());
}

}  // namespace spacegate
