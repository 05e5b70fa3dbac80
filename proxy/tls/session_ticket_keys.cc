#include "tls/session_ticket_keys.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <chrono>
#include <cstring>

namespace spacegate {

namespace {
int ticketKeysIndex() {
  static int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}
}  // namespace

void SessionTicketKeys::attach(SSL_CTX* context, SessionTicketKeys* keys) {
  SSL_CTX_set_ex_data(context, ticketKeysIndex(), keys);
}

void SessionTicketKeys::install(SSL_CTX* context, SessionTicketKeys* keys) {
  attach(context, keys);
  SSL_CTX_set_tlsext_ticket_key_cb(context, &SessionTicketKeys::onTicketKey);
}

uint64_t SessionTicketKeys::nowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

uint64_t SessionTicketKeys::rotations() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rotations_;
}

SessionTicketKeys::Key SessionTicketKeys::currentLocked(uint64_t now_ms) {
  if (!newest_.valid || now_ms - newest_.created_ms >= rotation_ms_) {
    previous_ = newest_;
    Key key;
    RAND_bytes(key.name.data(), key.name.size());
    RAND_bytes(key.aes_key.data(), key.aes_key.size());
    RAND_bytes(key.hmac_key.data(), key.hmac_key.size());
    key.created_ms = now_ms;
    key.valid = true;
    newest_ = key;
    ++rotations_;
  }
  return newest_;
}

int SessionTicketKeys::onTicketKey(SSL* ssl, uint8_t* key_name, uint8_t* iv, EVP_CIPHER_CTX* cipher,
                                   HMAC_CTX* hmac, int encrypt) {
  auto* self =
      static_cast<SessionTicketKeys*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ticketKeysIndex()));
  if (!self) return encrypt ? -1 : 0;
  uint64_t now = nowMs();
  Key key;
  bool renew = false;
  {
    std::lock_guard<std::mutex> lock(self->mutex_);
    Key newest = self->currentLocked(now);
    if (encrypt) {
      key = newest;
    } else if (std::memcmp(key_name, newest.name.data(), newest.name.size()) == 0) {
      key = newest;
    } else if (self->previous_.valid &&
               std::memcmp(key_name, self->previous_.name.data(), key.name.size()) == 0 &&
               now - self->previous_.created_ms < 2 * self->rotation_ms_) {
      key = self->previous_;
      renew = true;  // sealed with the older key: hand out a fresh ticket
    } else {
      return 0;  // unknown or expired key: a full handshake
    }
  }
  if (encrypt) {
    std::memcpy(key_name, key.name.data(), key.name.size());
    RAND_bytes(iv, EVP_CIPHER_iv_length(EVP_aes_256_cbc()));
    if (!EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes_key.data(), iv)) return -1;
  } else if (!EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes_key.data(), iv)) {
    return -1;
  }
  if (!HMAC_Init_ex(hmac, key.hmac_key.data(), key.hmac_key.size(), EVP_sha256(), nullptr)) {
    return -1;
  }
  return renew ? 2 : 1;
}

}  // namespace spacegate
