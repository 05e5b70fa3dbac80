// DnsResolver: asynchronous host name resolution for upstreams, one per
// worker loop, with c-ares driven by the loop (ares_sock_state_cb + uv_poll,
// and a timer for c-ares' own timeouts). Answers are cached by their TTL
// (clamped to 1..300 s; failures for 1 s), and concurrent lookups of one name
// share one query.
#pragma once

#include <ares.h>
#include <netinet/in.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

namespace spacegate {

class DnsResolver {
 public:
  // status 0 on success, else a libuv-style negative error; `addresses`
  // carry port 0 (the caller sets it).
  using Callback = std::function<void(int status, const std::vector<sockaddr_storage>& addresses)>;

  explicit DnsResolver(uv_loop_t* loop);
  ~DnsResolver();
  DnsResolver(const DnsResolver&) = delete;
  DnsResolver& operator=(const DnsResolver&) = delete;

  // Starts c-ares; false if it cannot be initialised.
  bool start();
  // Resolves `host`. The callback may run before resolve() returns (cache
  // hit). Returns a ticket for cancel(), or 0 when it already ran.
  uint64_t resolve(const std::string& host, Callback callback);
  void cancel(uint64_t ticket);
  // Closes the loop handles; call before the loop's last run.
  void close();

  uint64_t cacheHits() const { return cache_hits_; }
  uint64_t queries() const { return queries_; }

 private:
  struct CacheEntry {
    int status;
    std::vector<sockaddr_storage> addresses;
    uint64_t expires_at_ms;
  };
  struct Waiter {
    uint64_t ticket;
    Callback callback;
  };
  struct Query {
    DnsResolver* resolver;
    std::string host;
  };

  static void onSocketState(void* data, ares_socket_t fd, int readable, int writable);
  static void onPoll(uv_poll_t* handle, int status, int events);
  static void onTimer(uv_timer_t* handle);
  static void onAddrInfo(void* arg, int status, int timeouts, struct ares_addrinfo* result);
  void rescheduleTimer();

  uv_loop_t* loop_;
  ares_channel channel_ = nullptr;
  uv_timer_t timer_;
  bool started_ = false;
  std::unordered_map<ares_socket_t, uv_poll_t*> polls_;
  std::unordered_map<std::string, CacheEntry> cache_;
  std::unordered_map<std::string, std::vector<Waiter>> waiting_;
  uint64_t next_ticket_ = 1;
  uint64_t cache_hits_ = 0;
  uint64_t queries_ = 0;
};

}  // namespace spacegate
