#include "tunnel/pipe_pool.h"

#include <fcntl.h>
#include <unistd.h>

namespace spacegate {

PipePool::~PipePool() {
  closeIdle();
}

void PipePool::open(uv_loop_t* loop) {
  uv_timer_init(loop, &trim_timer_);
  trim_timer_.data = this;
  timer_open_ = true;
}

void PipePool::close() {
  closeIdle();
  if (!timer_open_) return;
  timer_open_ = false;
  uv_timer_stop(&trim_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&trim_timer_), nullptr);
}

void PipePool::closeIdle() {
  for (SplicePipe& pipe : idle_) closePipe(pipe);
  idle_.clear();
}

void PipePool::onTrimTimer(uv_timer_t* timer) {
  auto* self = static_cast<PipePool*>(timer->data);
  if (self->acquired_since_tick_) {
    self->acquired_since_tick_ = false;
    uv_timer_start(&self->trim_timer_, &PipePool::onTrimTimer, kTrimIntervalMs, 0);
    return;
  }
  self->closeIdle();
}

SplicePipe PipePool::acquire() {
  acquired_since_tick_ = true;
  SplicePipe pipe;
  if (!idle_.empty()) {
    pipe = idle_.back();
    idle_.pop_back();
    ++in_use_;
    return pipe;
  }
  int ends[2];
  if (::pipe2(ends, O_NONBLOCK | O_CLOEXEC) != 0) return pipe;
  pipe.read_end = ends[0];
  pipe.write_end = ends[1];
  // A bigger pipe moves more per splice() call; a refusal (budget spent)
  // leaves the default 64 KiB, which still works.
  if (pipe_size_ > 0) ::fcntl(pipe.write_end, F_SETPIPE_SZ, static_cast<int>(pipe_size_));
  ++in_use_;
  return pipe;
}

void PipePool::release(SplicePipe& pipe, bool empty) {
  if (!pipe.valid()) return;
  --in_use_;
  if (empty && idle_.size() < max_idle_) {
    idle_.push_back(pipe);
    if (timer_open_ && !uv_is_active(reinterpret_cast<uv_handle_t*>(&trim_timer_))) {
      acquired_since_tick_ = false;
      uv_timer_start(&trim_timer_, &PipePool::onTrimTimer, kTrimIntervalMs, 0);
    }
  } else {
    closePipe(pipe);
  }
  pipe = SplicePipe{};
}

void PipePool::closePipe(SplicePipe& pipe) {
  if (pipe.read_end >= 0) ::close(pipe.read_end);
  if (pipe.write_end >= 0) ::close(pipe.write_end);
  pipe = SplicePipe{};
}

}  // namespace spacegate
