// TaskReporter: what one running task tells the control plane. Events are
// queued and posted in small batches (POST .../tasks/{id}/events), and the
// result at the end (POST .../result). Posting events also extends the
// task's lease, so while a task runs something is posted at least every
// `event_heartbeat_ms`: a `progress` event saying what the task is waiting
// for, when nothing else happened.
//
// LeaseKeeper: one thread that, every few hundred milliseconds, posts what
// each running task has queued for `event_batch_delay_ms`, and the
// heartbeats; it keeps leases alive while a task's own thread is blocked in
// a long call (an agent's stop answers only once the IDE is gone).
//
// A 409 on a post means the control plane gave the task to someone else:
// leaseLost() turns true and the task stops at its next step.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "delegate/control_plane_client.h"
#include "delegate/delegate_config.h"
#include "delegate/task.h"

namespace spacegate {

class TaskReporter {
 public:
  using Clock = std::chrono::steady_clock;

  TaskReporter(const ControlPlaneClient& control_plane, std::string task_id,
               const DelegateLimits& limits);

  // Queues an event ({"type","message","data"?}); posted within
  // event_batch_delay_ms, or at once when the batch is full.
  void emit(const std::string& type, const std::string& message,
            const nlohmann::json& data = nullptr);
  // Posts everything queued now, retrying for up to `patience_ms`. False when
  // something is still queued (the control plane did not take it).
  bool flush(uint64_t patience_ms = 0);
  // What the heartbeat says the task is doing ("waiting for the machine").
  void setActivity(const std::string& text);

  // For the LeaseKeeper: posts a batch that waited long enough, or a
  // heartbeat when nothing was posted for event_heartbeat_ms.
  void tick(Clock::time_point now);

  // Posts the result after the queued events, retrying for up to
  // `patience_ms`. True when the control plane took it (or said the task is
  // no longer ours, which no retry changes).
  bool postResult(const TaskResult& result, uint64_t patience_ms);

  bool leaseLost() const;
  const std::string& taskId() const { return task_id_; }
  // Events accepted by the control plane so far (heartbeats included).
  uint64_t postedEvents() const;

 private:
  // Posts up to one batch; the lock on post_mutex_ is held by the caller.
  TaskPostOutcome postBatchLocked(std::string& error);
  // Takes `count` posted (or refused, then dropped) events off the queue.
  void takeFront(size_t count, bool accepted, const std::string& error);

  const ControlPlaneClient& control_plane_;
  const std::string task_id_;
  const DelegateLimits limits_;

  mutable std::mutex mutex_;  // the fields below
  std::deque<nlohmann::json> queued_;
  Clock::time_point oldest_queued_at_{};
  Clock::time_point last_post_at_;
  std::string activity_ = "starting";
  bool lease_lost_ = false;
  uint64_t posted_events_ = 0;

  std::mutex post_mutex_;  // one post at a time, so events keep their order
};

class LeaseKeeper {
 public:
  explicit LeaseKeeper(uint64_t tick_ms = 250) : tick_ms_(tick_ms) {}
  ~LeaseKeeper() { stop(); }

  void start();
  void stop();
  void add(const std::shared_ptr<TaskReporter>& reporter);
  void remove(const std::shared_ptr<TaskReporter>& reporter);

 private:
  void run();

  uint64_t tick_ms_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::set<std::shared_ptr<TaskReporter>> reporters_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace spacegate
