// LoopMailbox: hands work to a loop from any thread. Tasks are queued under
// a mutex and run on the loop's thread, in order, after a uv_async wake-up.
// The only way another thread touches a worker's state.
#pragma once

#include <uv.h>

#include <functional>
#include <mutex>
#include <vector>

namespace spacegate {

class LoopMailbox {
 public:
  using Task = std::function<void()>;

  // Call on the loop's thread (or before it runs).
  void open(uv_loop_t* loop) {
    uv_async_init(loop, &async_, &LoopMailbox::onWake);
    async_.data = this;
  }
  // Thread-safe.
  void post(Task task) {
    // The wake-up is sent under the lock: close() takes it too, so the
    // handle cannot be closed between the check and the send.
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    tasks_.push_back(std::move(task));
    uv_async_send(&async_);
  }
  // Loop thread: no more tasks; the handle closes.
  void close() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
      tasks_.clear();
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  }

 private:
  static void onWake(uv_async_t* handle) {
    auto* mailbox = static_cast<LoopMailbox*>(handle->data);
    std::vector<Task> tasks;
    {
      std::lock_guard<std::mutex> lock(mailbox->mutex_);
      tasks.swap(mailbox->tasks_);
    }
    for (Task& task : tasks) task();
  }

  uv_async_t async_;
  std::mutex mutex_;
  std::vector<Task> tasks_;
  bool closed_ = false;
};

}  // namespace spacegate
