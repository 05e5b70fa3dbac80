// TlsConnection: the TLS layer of one client connection, over memory BIOs
// so that libuv keeps doing the socket I/O: ciphertext read from the socket
// is fed in, plaintext comes out into the connection's inbound buffer;
// plaintext to send goes in, ciphertext comes out for the write queue.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <memory>
#include <string_view>

#include "net/write_queue.h"
#include "tls/tls_context_set.h"

namespace spacegate {

class TlsConnection : public WriteEncryptor {
 public:
  // The server side of a client's connection (TLS listeners). Without
  // `offer_http2` ALPN picks only http/1.1 (services that speak HTTP/1.1).
  explicit TlsConnection(std::shared_ptr<const TlsContextSet> contexts, bool offer_http2 = true);
  bool offersHttp2() const { return offer_http2_; }
  // The client side of a connection to an upstream: SNI `server_name`, and
  // with `verify` the certificate must chain to `context`'s trust and carry
  // that name (or IP address).
  TlsConnection(SSL_CTX* client_context, const std::string& server_name, bool verify);
  ~TlsConnection();
  TlsConnection(const TlsConnection&) = delete;
  TlsConnection& operator=(const TlsConnection&) = delete;

  // Ciphertext read from the socket.
  void feed(const char* data, size_t size);

  enum class ReadResult : uint8_t {
    kData,      // `produced` plaintext bytes (maybe more to come: call again)
    kWantMore,  // nothing more until more ciphertext arrives
    kClosed,    // the peer sent close_notify
    kError,     // a TLS failure (bad record, failed handshake): close
  };
  // Decrypts into [buffer, buffer+size), driving the handshake first.
  ReadResult read(char* buffer, size_t size, size_t& produced);

  // Encrypts plaintext; the records wait in the output BIO.
  bool write(const char* data, size_t size) override;
  // Queues a close_notify alert.
  void shutdown();
  size_t pendingOutput() const override;
  // Moves up to `size` ciphertext bytes into `buffer`; returns how many.
  size_t takeOutput(char* buffer, size_t size) override;

  bool handshakeDone() const { return handshake_done_; }
  // The protocol ALPN chose ("h2", "http/1.1"), empty without ALPN.
  std::string_view alpn() const;
  std::string_view serverName() const;
  // Why the last read failed (for the log).
  const char* failure() const { return failure_; }
  bool resumed() const;
  // Why the peer's certificate was refused ("certificate has expired"), or "".
  std::string verifyFailure() const;

 private:
  std::shared_ptr<const TlsContextSet> contexts_;  // the SNI callback's set
  bssl::UniquePtr<SSL> ssl_;
  BIO* input_ = nullptr;   // owned by ssl_
  BIO* output_ = nullptr;  // owned by ssl_
  bool handshake_done_ = false;
  bool offer_http2_ = true;
  const char* failure_ = "";
};

}  // namespace spacegate
