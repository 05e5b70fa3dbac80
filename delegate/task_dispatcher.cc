#include "delegate/task_dispatcher.h"

#include <chrono>
#include <memory>

#include "common/log.h"

namespace spacegate {

namespace {

// How long a result is retried before it is left to the state file (the
// task comes back when its lease runs out, and the stored result is posted).
constexpr uint64_t kResultPatienceMs = 60'000;

std::string idOf(const nlohmann::json& document) {
  if (document.is_object() && document.contains("id") && document["id"].is_string()) {
    return document["id"].get<std::string>();
  }
  return {};
}

}  // namespace

TaskDispatcher::TaskDispatcher(const ControlPlaneClient& control_plane, GitspaceTasks& tasks,
                               RouteSync& routes, FinishedTaskStore& store, LeaseKeeper& keeper,
                               const DelegateLimits& limits)
    : control_plane_(control_plane),
      tasks_(tasks),
      routes_(routes),
      store_(store),
      keeper_(keeper),
      limits_(limits) {}

TaskDispatcher::~TaskDispatcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (std::thread& worker : workers_) {
    if (worker.joinable()) worker.detach();  // only after a drain that timed out
  }
}

void TaskDispatcher::start() {
  for (int index = 0; index < limits_.max_concurrent_tasks; ++index) {
    workers_.emplace_back([this] { workerLoop(); });
  }
}

size_t TaskDispatcher::busy() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_ + queue_.size();
}

bool TaskDispatcher::submit(const nlohmann::json& task) {
  std::string id = idOf(task);
  std::lock_guard<std::mutex> lock(mutex_);
  if (!accepting_) {
    logEvent(LogLevel::kWarning, "task received while stopping; left to its lease")
        .with("task", id)
        .emit();
    return false;
  }
  if (!id.empty() && !present_.insert(id).second) {
    logEvent(LogLevel::kInfo, "task handed out again while it runs here; the run goes on")
        .with("task", id)
        .emit();
    return false;
  }
  queue_.push_back(task);
  changed_.notify_all();
  return true;
}

bool TaskDispatcher::waitForFreeWorker(ShutdownSignal& shutdown) {
  while (true) {
    if (shutdown.requested()) return false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      bool free = changed_.wait_for(lock, std::chrono::milliseconds(200), [this] {
        return running_ + queue_.size() < static_cast<size_t>(limits_.max_concurrent_tasks);
      });
      if (free) return !shutdown.requested();
    }
  }
}

bool TaskDispatcher::drain(uint64_t grace_ms) {
  std::unique_lock<std::mutex> lock(mutex_);
  accepting_ = false;
  bool done = changed_.wait_for(lock, std::chrono::milliseconds(grace_ms),
                                [this] { return running_ == 0 && queue_.empty(); });
  stopping_ = true;
  changed_.notify_all();
  return done;
}

void TaskDispatcher::join() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  for (std::thread& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  workers_.clear();
}

void TaskDispatcher::workerLoop() {
  while (true) {
    nlohmann::json task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping
      task = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    runTask(task);
    std::string id = idOf(task);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --running_;
      present_.erase(id);
    }
    changed_.notify_all();
  }
}

void TaskDispatcher::runTask(const nlohmann::json& document) {
  auto started = std::chrono::steady_clock::now();
  Task task;
  std::string parse_error;
  bool parsed = parseTask(document, task, parse_error);
  if (task.id.empty()) {
    logEvent(LogLevel::kError, "task without a usable id; ignored")
        .with("error", parse_error)
        .with("task", dumpJson(document).substr(0, 500))
        .emit();
    return;
  }
  auto reporter = std::make_shared<TaskReporter>(control_plane_, task.id, limits_);

  nlohmann::json stored;
  if (store_.find(task.id, stored)) {
    TaskResult result;
    if (TaskResult::fromJson(stored, result)) {
      logEvent(LogLevel::kInfo, "task finished before; posting its result again")
          .with("task", task.id)
          .with("ok", result.ok)
          .emit();
      reporter->postResult(result, kResultPatienceMs);
      routes_.syncNow("task " + task.id + " result posted again");
      return;
    }
  }

  TaskResult result;
  if (!parsed) {
    result = TaskResult::failure("the delegate cannot carry out this task: " + parse_error);
    logEvent(LogLevel::kError, "task refused")
        .with("task", task.id)
        .with("error", parse_error)
        .emit();
  } else {
    logEvent(LogLevel::kInfo, "task started")
        .with("task", task.id)
        .with("kind", taskKindName(task.kind))
        .with("gitspace", task.gitspace.id)
        .with("attempt", static_cast<int64_t>(task.attempt))
        .emit();
    keeper_.add(reporter);
    result = tasks_.run(task, *reporter);
    keeper_.remove(reporter);
  }
  if (reporter->leaseLost()) {
    // Someone else has the task now; their result is the one that counts.
    logEvent(LogLevel::kWarning, "task abandoned: its lease was lost").with("task", task.id).emit();
    return;
  }
  std::string store_error;
  if (!store_.record(task.id, parsed ? taskKindName(task.kind) : "", result.toJson(),
                     store_error)) {
    logEvent(LogLevel::kError, "cannot write the state file; a restart would repeat this task")
        .with("task", task.id)
        .with("error", store_error)
        .emit();
  }
  reporter->postResult(result, kResultPatienceMs);
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - started)
                     .count();
  logEvent(result.ok ? LogLevel::kInfo : LogLevel::kWarning, "task finished")
      .with("task", task.id)
      .with("kind", parsed ? taskKindName(task.kind) : "")
      .with("gitspace", task.gitspace.id)
      .with("ok", result.ok)
      .with("error", result.error)
      .with("duration_ms", static_cast<int64_t>(elapsed))
      .with("events_posted", reporter->postedEvents())
      .emit();
  // The control plane's table follows the result (a running Gitspace gets
  // its IDE and port routes; a stopped or deleted one loses them).
  routes_.syncNow("task " + task.id + " finished");
}

}  // namespace spacegate
