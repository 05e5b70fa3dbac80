#include "control/server/task_queue.h"

#include <set>

namespace spacegate {

void TaskQueue::restore(std::vector<TaskRecord> live, int64_t last_seq) {
  tasks_.clear();
  order_.clear();
  last_seq_ = last_seq;
  for (TaskRecord& task : live) {
    if (!task.live()) continue;
    last_seq_ = std::max(last_seq_, task.seq);
    order_[task.seq] = task.id;
    tasks_[task.id] = std::move(task);
  }
}

TaskRecord* TaskQueue::find(const std::string& id) {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : &it->second;
}

TaskRecord& TaskQueue::enqueue(TaskRecord task, int64_t now_ms) {
  task.seq = ++last_seq_;
  task.state = TaskState::kQueued;
  task.delegate.clear();
  task.lease_until_ms = 0;
  if (task.created_at_ms == 0) task.created_at_ms = now_ms;
  task.updated_at_ms = now_ms;
  order_[task.seq] = task.id;
  std::string id = task.id;
  return tasks_[id] = std::move(task);
}

TaskRecord TaskQueue::drop(const std::string& id, std::string error, int64_t now_ms) {
  auto it = tasks_.find(id);
  TaskRecord task = std::move(it->second);
  tasks_.erase(it);
  order_.erase(task.seq);
  task.state = TaskState::kFailed;
  task.error = std::move(error);
  task.updated_at_ms = now_ms;
  return task;
}

bool TaskQueue::hasLeased(const std::string& gitspace) const {
  for (const auto& [id, task] : tasks_) {
    if (task.gitspace == gitspace && task.state == TaskState::kLeased) return true;
  }
  return false;
}

TaskRecord* TaskQueue::next(const std::function<bool(const TaskRecord&)>& accept) {
  std::set<std::string> busy;
  for (const auto& [id, task] : tasks_) {
    if (task.state == TaskState::kLeased) busy.insert(task.gitspace);
  }
  for (const auto& [seq, id] : order_) {
    TaskRecord& task = tasks_[id];
    if (task.state != TaskState::kQueued || busy.count(task.gitspace)) continue;
    if (accept(task)) return &task;
  }
  return nullptr;
}

void TaskQueue::lease(TaskRecord& task, const std::string& delegate, int64_t now_ms,
                      int64_t lease_ms) {
  task.state = TaskState::kLeased;
  task.delegate = delegate;
  task.lease_until_ms = now_ms + lease_ms;
  task.attempt += 1;
  task.updated_at_ms = now_ms;
}

TaskQueue::Claim TaskQueue::claim(const std::string& id, const std::string& delegate) const {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return Claim::kUnknown;
  if (it->second.state != TaskState::kLeased || it->second.delegate != delegate) {
    return Claim::kNotYours;
  }
  return Claim::kLeased;
}

bool TaskQueue::extend(const std::string& id, const std::string& delegate, int64_t now_ms,
                       int64_t lease_ms) {
  if (claim(id, delegate) != Claim::kLeased) return false;
  TaskRecord& task = tasks_[id];
  task.lease_until_ms = std::max(task.lease_until_ms, now_ms + lease_ms);
  task.updated_at_ms = now_ms;
  return true;
}

TaskRecord TaskQueue::finish(const std::string& id, bool ok, std::string result, std::string error,
                             int64_t now_ms) {
  auto it = tasks_.find(id);
  TaskRecord task = std::move(it->second);
  tasks_.erase(it);
  order_.erase(task.seq);
  task.state = ok ? TaskState::kDone : TaskState::kFailed;
  task.result = std::move(result);
  task.error = std::move(error);
  task.updated_at_ms = now_ms;
  return task;
}

std::vector<TaskQueue::Expired> TaskQueue::expire(
    int64_t now_ms, int max_attempts, const std::function<bool(const TaskRecord&)>& is_current) {
  std::vector<Expired> expired;
  std::vector<std::string> ended;
  for (auto& [id, task] : tasks_) {
    if (task.state != TaskState::kLeased || task.lease_until_ms > now_ms) continue;
    Expired entry;
    if (!is_current(task)) {
      entry.superseded = true;
      task.state = TaskState::kFailed;
      task.error = "superseded, and its lease ran out";
    } else if (task.attempt >= max_attempts) {
      entry.gave_up = true;
      task.state = TaskState::kFailed;
      task.error =
          "no delegate finished the task (" + std::to_string(task.attempt) + " leases ran out)";
    } else {
      task.state = TaskState::kQueued;
      task.lease_until_ms = 0;
    }
    task.updated_at_ms = now_ms;
    entry.task = task;
    if (!task.live()) ended.push_back(id);
    expired.push_back(std::move(entry));
  }
  for (const std::string& id : ended) {
    order_.erase(tasks_[id].seq);
    tasks_.erase(id);
  }
  return expired;
}

}  // namespace spacegate
