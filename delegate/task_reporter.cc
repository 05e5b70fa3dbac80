#include "delegate/task_reporter.h"

#include <algorithm>
#include <vector>

#include "common/log.h"
#include "delegate/retry_backoff.h"

namespace spacegate {

namespace {

// Queued events beyond this are dropped (oldest first): a control plane that
// is away for long must not make the delegate grow without bound.
constexpr size_t kMaxQueuedEvents = 5000;
// The control plane takes messages up to 8 KiB and errors up to 4 KiB.
constexpr size_t kMaxMessageBytes = 8000;
constexpr size_t kMaxErrorBytes = 4000;
// After a failed post, the keeper waits this long before the next try.
constexpr uint64_t kRetryPauseMs = 3000;

uint64_t elapsedMs(TaskReporter::Clock::time_point since, TaskReporter::Clock::time_point now) {
  if (now <= since) return 0;
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now - since).count());
}

}  // namespace

TaskReporter::TaskReporter(const ControlPlaneClient& control_plane, std::string task_id,
                           const DelegateLimits& limits)
    : control_plane_(control_plane),
      task_id_(std::move(task_id)),
      limits_(limits),
      last_post_at_(Clock::now()) {}

void TaskReporter::emit(const std::string& type, const std::string& message,
                        const nlohmann::json& data) {
  nlohmann::json event = {{"type", type}, {"message", plainText(message, kMaxMessageBytes)}};
  if (!data.is_null()) event["data"] = data;
  std::lock_guard<std::mutex> lock(mutex_);
  if (lease_lost_) return;
  if (queued_.empty()) oldest_queued_at_ = Clock::now();
  queued_.push_back(std::move(event));
  if (queued_.size() > kMaxQueuedEvents) {
    queued_.pop_front();
    logEvent(LogLevel::kWarning, "task events dropped: the control plane is not taking them")
        .with("task", task_id_)
        .emit();
  }
}

void TaskReporter::setActivity(const std::string& text) {
  std::lock_guard<std::mutex> lock(mutex_);
  activity_ = text;
}

bool TaskReporter::leaseLost() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return lease_lost_;
}

uint64_t TaskReporter::postedEvents() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return posted_events_;
}

TaskPostOutcome TaskReporter::postBatchLocked(std::string& error) {
  nlohmann::json batch = nlohmann::json::array();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (lease_lost_) return TaskPostOutcome::kLeaseLost;
    size_t count = std::min(queued_.size(), limits_.event_batch_size);
    for (size_t index = 0; index < count; ++index) batch.push_back(queued_[index]);
  }
  if (batch.empty()) return TaskPostOutcome::kAccepted;
  TaskPostOutcome outcome = control_plane_.postEvents(task_id_, batch, error);
  if (outcome == TaskPostOutcome::kRefused && batch.size() > 1) {
    // One event the control plane will not take must not cost the others:
    // they go one by one, and only the refused one is dropped.
    for (const nlohmann::json& event : batch) {
      std::string single_error;
      TaskPostOutcome single =
          control_plane_.postEvents(task_id_, nlohmann::json::array({event}), single_error);
      if (single == TaskPostOutcome::kFailed || single == TaskPostOutcome::kLeaseLost) {
        error = single_error;
        outcome = single;
        break;
      }
      takeFront(1, single == TaskPostOutcome::kAccepted, single_error);
      outcome = TaskPostOutcome::kAccepted;
    }
  } else if (outcome == TaskPostOutcome::kAccepted || outcome == TaskPostOutcome::kRefused) {
    takeFront(batch.size(), outcome == TaskPostOutcome::kAccepted, error);
  }
  if (outcome == TaskPostOutcome::kLeaseLost) {
    std::lock_guard<std::mutex> lock(mutex_);
    lease_lost_ = true;
    queued_.clear();
    logEvent(LogLevel::kWarning, "task lease lost: the control plane gave it to someone else")
        .with("task", task_id_)
        .with("error", error)
        .emit();
  }
  return outcome;
}

void TaskReporter::takeFront(size_t count, bool accepted, const std::string& error) {
  // Only the posting path takes events off the queue, so what was posted
  // is still its front.
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t index = 0; index < count && !queued_.empty(); ++index) queued_.pop_front();
  if (!queued_.empty()) oldest_queued_at_ = Clock::now();
  if (accepted) {
    last_post_at_ = Clock::now();
    posted_events_ += count;
  } else {
    logEvent(LogLevel::kError, "the control plane refused task events; dropped")
        .with("task", task_id_)
        .with("events", static_cast<uint64_t>(count))
        .with("error", error)
        .emit();
  }
}

bool TaskReporter::flush(uint64_t patience_ms) {
  std::lock_guard<std::mutex> post_lock(post_mutex_);
  Clock::time_point started = Clock::now();
  RetryBackoff backoff(limits_.retry_initial_ms, limits_.retry_max_ms);
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (lease_lost_) return false;
      if (queued_.empty()) return true;
    }
    std::string error;
    TaskPostOutcome outcome = postBatchLocked(error);
    if (outcome == TaskPostOutcome::kLeaseLost) return false;
    if (outcome != TaskPostOutcome::kFailed) {
      backoff.reset();
      continue;
    }
    uint64_t delay = backoff.nextDelayMs();
    if (elapsedMs(started, Clock::now()) + delay > patience_ms) {
      logEvent(LogLevel::kWarning, "task events not posted yet")
          .with("task", task_id_)
          .with("error", error)
          .emit();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  }
}

void TaskReporter::tick(Clock::time_point now) {
  std::unique_lock<std::mutex> post_lock(post_mutex_, std::try_to_lock);
  if (!post_lock.owns_lock()) return;  // the task's own thread is posting
  bool post = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (lease_lost_) return;
    if (!queued_.empty()) {
      post = queued_.size() >= limits_.event_batch_size ||
             elapsedMs(oldest_queued_at_, now) >= limits_.event_batch_delay_ms;
    } else if (elapsedMs(last_post_at_, now) >= limits_.event_heartbeat_ms) {
      // Nothing happened for a while: say what the task waits for, which
      // also extends its lease.
      queued_.push_back({{"type", "progress"}, {"message", activity_}});
      oldest_queued_at_ = now;
      post = true;
    }
  }
  if (!post) return;
  while (true) {
    std::string error;
    TaskPostOutcome outcome = postBatchLocked(error);
    if (outcome == TaskPostOutcome::kFailed) {
      // The next try in a few seconds (a batch counts as waiting from then).
      std::lock_guard<std::mutex> lock(mutex_);
      oldest_queued_at_ = Clock::now() + std::chrono::milliseconds(kRetryPauseMs);
      logEvent(LogLevel::kWarning, "task events not posted yet")
          .with("task", task_id_)
          .with("error", error)
          .emit();
      return;
    }
    if (outcome == TaskPostOutcome::kLeaseLost) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (queued_.empty()) return;
  }
}

bool TaskReporter::postResult(const TaskResult& result, uint64_t patience_ms) {
  Clock::time_point started = Clock::now();
  flush(patience_ms);
  std::lock_guard<std::mutex> post_lock(post_mutex_);
  if (leaseLost()) return true;
  RetryBackoff backoff(limits_.retry_initial_ms, limits_.retry_max_ms);
  nlohmann::json body = result.toJson();
  if (!result.ok) body["error"] = plainText(result.error, kMaxErrorBytes);
  while (true) {
    std::string error;
    TaskPostOutcome outcome = control_plane_.postResult(task_id_, body, error);
    switch (outcome) {
      case TaskPostOutcome::kAccepted:
        logEvent(LogLevel::kInfo, "task result posted")
            .with("task", task_id_)
            .with("ok", result.ok)
            .with("error", result.error)
            .emit();
        return true;
      case TaskPostOutcome::kLeaseLost: {
        std::lock_guard<std::mutex> lock(mutex_);
        lease_lost_ = true;
        logEvent(LogLevel::kWarning, "task result not taken: the task is no longer ours")
            .with("task", task_id_)
            .with("error", error)
            .emit();
        return true;
      }
      case TaskPostOutcome::kRefused:
        logEvent(LogLevel::kError, "the control plane refused the task result")
            .with("task", task_id_)
            .with("error", error)
            .emit();
        return true;
      case TaskPostOutcome::kFailed: break;
    }
    uint64_t delay = backoff.nextDelayMs();
    if (elapsedMs(started, Clock::now()) + delay > patience_ms) {
      logEvent(LogLevel::kWarning,
               "task result not posted; it is kept in the state file and posted again when the "
               "task comes back")
          .with("task", task_id_)
          .with("error", error)
          .emit();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  }
}

void LeaseKeeper::start() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void LeaseKeeper::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void LeaseKeeper::add(const std::shared_ptr<TaskReporter>& reporter) {
  std::lock_guard<std::mutex> lock(mutex_);
  reporters_.insert(reporter);
}

void LeaseKeeper::remove(const std::shared_ptr<TaskReporter>& reporter) {
  std::lock_guard<std::mutex> lock(mutex_);
  reporters_.erase(reporter);
}

void LeaseKeeper::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, std::chrono::milliseconds(tick_ms_));
    if (stopping_) break;
    std::vector<std::shared_ptr<TaskReporter>> reporters(reporters_.begin(), reporters_.end());
    lock.unlock();
    for (const auto& reporter : reporters) reporter->tick(TaskReporter::Clock::now());
    lock.lock();
  }
}

}  // namespace spacegate
