// Session ticket keys shared by every TLS listener and worker, rotated on a
// fixed period: a ticket is sealed with the newest key and opened with the
// newest or the one before it, so a client resumes for up to two periods and
// a leaked key exposes at most two periods of tickets. The keys are random,
// kept in memory only (a restart starts a new series: full handshakes once).
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <cstdint>
#include <mutex>

namespace spacegate {

class SessionTicketKeys {
 public:
  explicit SessionTicketKeys(uint64_t rotation_ms) : rotation_ms_(rotation_ms) {}
  // Installs the ticket callback on a front context, and makes `keys` known
  // to it; `keys` must outlive it. Certificate contexts that SNI switches a
  // connection to are passed to attach(): the callback finds the keys
  // through the connection's current context.
  static void install(SSL_CTX* context, SessionTicketKeys* keys);
  static void attach(SSL_CTX* context, SessionTicketKeys* keys);
  uint64_t rotations() const;

 private:
  struct Key {
    std::array<uint8_t, SSL_TICKET_KEY_NAME_LEN> name{};
    std::array<uint8_t, 32> aes_key{};
    std::array<uint8_t, 32> hmac_key{};
    uint64_t created_ms = 0;
    bool valid = false;
  };
  static int onTicketKey(SSL* ssl, uint8_t* key_name, uint8_t* iv, EVP_CIPHER_CTX* cipher,
                         HMAC_CTX* hmac, int encrypt);
  // The key to seal with, rotating first when the newest is a period old.
  Key currentLocked(uint64_t now_ms);
  static uint64_t nowMs();

  const uint64_t rotation_ms_;
  mutable std::mutex mutex_;
  Key newest_;
  Key previous_;
  uint64_t rotations_ = 0;
};

}  // namespace spacegate
