// PipePool: the pipes a worker's splice tunnels move bytes through. A tunnel
// direction takes a pipe only while bytes sit in it and gives it back empty,
// so thousands of idle tunnels hold no pipe; a few empty pipes are kept for
// reuse so that a burst does not cost pipe2() and fcntl() each time, and
// closed once no tunnel has asked for one for a few seconds (after the last
// session the gateway's descriptors return to their baseline). One per
// worker loop: not thread-safe.
#pragma once

#include <uv.h>

#include <cstddef>
#include <vector>

namespace spacegate {

struct SplicePipe {
  int read_end = -1;
  int write_end = -1;
  bool valid() const { return read_end >= 0; }
};

class PipePool {
 public:
  // `pipe_size`: asked of the kernel with F_SETPIPE_SZ (it may give less:
  // /proc/sys/fs/pipe-max-size, the per-user pipe budget). `max_idle`: empty
  // pipes kept for reuse; the rest are closed.
  PipePool(size_t pipe_size, size_t max_idle) : pipe_size_(pipe_size), max_idle_(max_idle) {}
  ~PipePool();
  // The loop whose timer trims the idle pipes; close() before the loop ends.
  void open(uv_loop_t* loop);
  void close();
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  // An empty non-blocking pipe, or an invalid one (errno set) when none can
  // be made (out of descriptors).
  SplicePipe acquire();
  // Gives back a pipe. `empty`: no bytes left in it (only empty pipes are
  // reused; one with bytes is closed).
  void release(SplicePipe& pipe, bool empty);

  size_t idle() const { return idle_.size(); }
  size_t inUse() const { return in_use_; }

 private:
  static void closePipe(SplicePipe& pipe);
  static void onTrimTimer(uv_timer_t* timer);
  void closeIdle();

  // Idle pipes live at most two to three ticks without use.
  static constexpr uint64_t kTrimIntervalMs = 2'000;

  size_t pipe_size_;
  size_t max_idle_;
  size_t in_use_ = 0;
  std::vector<SplicePipe> idle_;
  uv_timer_t trim_timer_;
  bool timer_open_ = false;
  bool acquired_since_tick_ = false;
};

}  // namespace spacegate
