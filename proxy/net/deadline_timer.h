// DeadlineTimer: one timeout per connection, moved cheaply. Setting a
// deadline only touches libuv's timer heap when the new deadline is earlier
// than the armed one; a later deadline is noticed when the armed timer fires
// and re-arms for the rest (as nginx does). Clearing never touches the heap:
// a fire with no deadline does nothing. A connection's timeouts (header read,
// keep-alive, body, response, tunnel idle) are re-set on every read, so this
// saves two heap operations per event.
#pragma once

#include <uv.h>

#include <cstdint>

namespace spacegate {

class DeadlineTimer {
 public:
  using Callback = void (*)(void* owner);

  // `owner` goes into the handle's data (so close callbacks find the owner).
  void init(uv_loop_t* loop, void* owner, Callback callback) {
    uv_timer_init(loop, &timer_);
    timer_.data = owner;
    callback_ = callback;
  }
  // The deadline is `milliseconds` from the loop's current time.
  void set(uint64_t milliseconds) {
    uint64_t now = uv_now(timer_.loop);
    deadline_ = now + milliseconds;
    if (armed_at_ == 0 || deadline_ < armed_at_) {
      uv_timer_start(&timer_, &DeadlineTimer::onFire, milliseconds, 0);
      armed_at_ = deadline_;
    }
  }
  void clear() { deadline_ = 0; }
  bool active() const { return deadline_ != 0; }
  uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&timer_); }
  // Stops for good (before uv_close).
  void stop() {
    deadline_ = 0;
    armed_at_ = 0;
    uv_timer_stop(&timer_);
  }

 private:
  static void onFire(uv_timer_t* timer) {
    // timer_ is the first member: the handle is the DeadlineTimer.
    auto* self = reinterpret_cast<DeadlineTimer*>(timer);
    self->armed_at_ = 0;
    if (self->deadline_ == 0) return;
    uint64_t now = uv_now(timer->loop);
    if (now < self->deadline_) {
      uv_timer_start(timer, &DeadlineTimer::onFire, self->deadline_ - now, 0);
      self->armed_at_ = self->deadline_;
      return;
    }
    self->deadline_ = 0;
    self->callback_(timer->data);
  }

  uv_timer_t timer_;  // first: see onFire
  Callback callback_ = nullptr;
  uint64_t deadline_ = 0;  // loop time; 0: none
  uint64_t armed_at_ = 0;  // when the libuv timer fires; 0: not armed
};

}  // namespace spacegate
