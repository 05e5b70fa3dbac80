#include "net/dns_resolver.h"

#include <algorithm>
#include <cstring>

#include "common/log.h"

namespace spacegate {

namespace {
constexpr uint64_t kMinimumTtlMs = 1'000;
constexpr uint64_t kMaximumTtlMs = 300'000;
constexpr uint64_t kDefaultTtlMs = 5'000;  // answers with no TTL (hosts file)
constexpr uint64_t kFailureTtlMs = 1'000;

int aresStatusToUv(int status) {
  switch (status) {
    case ARES_ENOTFOUND:
    case ARES_ENODATA: return UV_EAI_NONAME;
    case ARES_ETIMEOUT: return UV_EAI_AGAIN;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION: return UV_ECANCELED;
    default: return UV_EAI_FAIL;
  }
}
}  // namespace

DnsResolver::DnsResolver(uv_loop_t* loop) : loop_(loop) {}

DnsResolver::~DnsResolver() {
  if (channel_) ares_destroy(channel_);
}

bool DnsResolver::start() {
  static int library = ares_library_init(ARES_LIB_INIT_ALL);
  if (library != ARES_SUCCESS) return false;
  ares_options options{};
  options.sock_state_cb = &DnsResolver::onSocketState;
  options.sock_state_cb_data = this;
  options.timeout = 2000;
  options.tries = 2;
  int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
  if (ares_init_options(&channel_, &options, mask) != ARES_SUCCESS) return false;
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  started_ = true;
  return true;
}

void DnsResolver::close() {
  if (!started_) return;
  started_ = false;
  // Fails pending queries (their callbacks see ARES_EDESTRUCTION).
  ares_destroy(channel_);
  channel_ = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
  for (auto& [fd, poll] : polls_) {
    uv_close(reinterpret_cast<uv_handle_t*>(poll),
             [](uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); });
  }
  polls_.clear();
}

uint64_t DnsResolver::resolve(const std::string& host, Callback callback) {
  uint64_t now = uv_now(loop_);
  if (auto cached = cache_.find(host); cached != cache_.end()) {
    if (cached->second.expires_at_ms > now) {
      ++cache_hits_;
      callback(cached->second.status, cached->second.addresses);
      return 0;
    }
    cache_.erase(cached);
  }
  if (!started_) {
    callback(UV_ECANCELED, {});
    return 0;
  }
  uint64_t ticket = next_ticket_++;
  auto [waiting, first] = waiting_.try_emplace(host);
  waiting->second.push_back(Waiter{ticket, std::move(callback)});
  if (first) {
    ++queries_;
    ares_addrinfo_hints hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    auto* query = new Query{this, host};
    ares_getaddrinfo(channel_, host.c_str(), nullptr, &hints, &DnsResolver::onAddrInfo, query);
    rescheduleTimer();
  }
  return ticket;
}

void DnsResolver::cancel(uint64_t ticket) {
  if (ticket == 0) return;
  for (auto& [host, waiters] : waiting_) {
    for (Waiter& waiter : waiters) {
      if (waiter.ticket == ticket) {
        waiter.callback = nullptr;
        return;
      }
    }
  }
}

void DnsResolver::onAddrInfo(void* arg, int status, int, struct ares_addrinfo* result) {
  auto* query = static_cast<Query*>(arg);
  DnsResolver* resolver = query->resolver;
  std::string host = std::move(query->host);
  delete query;
  CacheEntry entry{0, {}, 0};
  uint64_t ttl_ms = kMaximumTtlMs;
  if (status == ARES_SUCCESS && result) {
    // IPv4 first: upstreams on loopback and private networks answer there.
    for (int family : {AF_INET, AF_INET6}) {
      for (ares_addrinfo_node* node = result->nodes; node; node = node->ai_next) {
        if (node->ai_family != family || !node->ai_addr) continue;
        sockaddr_storage address{};
        std::memcpy(&address, node->ai_addr, std::min<size_t>(node->ai_addrlen, sizeof(address)));
        entry.addresses.push_back(address);
        uint64_t node_ttl =
            node->ai_ttl > 0 ? static_cast<uint64_t>(node->ai_ttl) * 1000 : kDefaultTtlMs;
        ttl_ms = std::min(ttl_ms, node_ttl);
      }
    }
    if (entry.addresses.empty()) status = ARES_ENODATA;
  }
  if (result) ares_freeaddrinfo(result);
  if (status != ARES_SUCCESS) {
    entry.status = aresStatusToUv(status);
    ttl_ms = kFailureTtlMs;
  }
  ttl_ms = std::clamp(ttl_ms, kMinimumTtlMs, kMaximumTtlMs);
  bool destroyed = status == ARES_EDESTRUCTION;
  if (!destroyed) {
    entry.expires_at_ms = uv_now(resolver->loop_) + ttl_ms;
    resolver->cache_[host] = entry;
  }
  auto waiting = resolver->waiting_.find(host);
  if (waiting == resolver->waiting_.end()) return;
  std::vector<Waiter> waiters = std::move(waiting->second);
  resolver->waiting_.erase(waiting);
  for (Waiter& waiter : waiters) {
    if (waiter.callback) waiter.callback(entry.status, entry.addresses);
  }
}

void DnsResolver::onSocketState(void* data, ares_socket_t fd, int readable, int writable) {
  auto* resolver = static_cast<DnsResolver*>(data);
  auto found = resolver->polls_.find(fd);
  if (!readable && !writable) {
    if (found != resolver->polls_.end()) {
      uv_poll_stop(found->second);
      uv_close(reinterpret_cast<uv_handle_t*>(found->second),
               [](uv_handle_t* handle) { delete reinterpret_cast<uv_poll_t*>(handle); });
      resolver->polls_.erase(found);
    }
    return;
  }
  uv_poll_t* poll;
  if (found == resolver->polls_.end()) {
    poll = new uv_poll_t;
    if (uv_poll_init_socket(resolver->loop_, poll, fd) != 0) {
      delete poll;
      return;
    }
    poll->data = resolver;
    resolver->polls_[fd] = poll;
  } else {
    poll = found->second;
  }
  int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
  uv_poll_start(poll, events, &DnsResolver::onPoll);
}

void DnsResolver::onPoll(uv_poll_t* handle, int status, int events) {
  auto* resolver = static_cast<DnsResolver*>(handle->data);
  if (!resolver->channel_) return;
  ares_socket_t fd;
  uv_fileno(reinterpret_cast<uv_handle_t*>(handle), reinterpret_cast<uv_os_fd_t*>(&fd));
  bool error = status < 0;
  ares_process_fd(resolver->channel_, (error || (events & UV_READABLE)) ? fd : ARES_SOCKET_BAD,
                  (error || (events & UV_WRITABLE)) ? fd : ARES_SOCKET_BAD);
  resolver->rescheduleTimer();
}

void DnsResolver::onTimer(uv_timer_t* handle) {
  auto* resolver = static_cast<DnsResolver*>(handle->data);
  if (!resolver->channel_) return;
  ares_process_fd(resolver->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  resolver->rescheduleTimer();
}

void DnsResolver::rescheduleTimer() {
  if (!channel_) return;
  timeval limit{1, 0};
  timeval wait{};
  timeval* next = ares_timeout(channel_, &limit, &wait);
  uint64_t ms = static_cast<uint64_t>(next->tv_sec) * 1000 + next->tv_usec / 1000;
  if (waiting_.empty()) {
    uv_timer_stop(&timer_);
    return;
  }
  uv_timer_start(&timer_, &DnsResolver::onTimer, ms == 0 ? 1 : ms, 0);
}

}  // namespace spacegate
