#include "delegate/delegate_service.h"

#include <chrono>

#include "common/log.h"
#include "delegate/gateway_report.h"

namespace spacegate {

namespace {

// How long shutdown() waits for the loops once tasks are done: a loop in a
// long poll may hold on for up to `poll_wait_s` more.
constexpr uint64_t kLoopExitWaitMs = 1'000;

}  // namespace

DelegateService::DelegateService(DelegateConfig config)
    : config_(std::move(config)),
      control_plane_(config_.control_plane, config_.limits.call_timeout_ms),
      runner_(config_.runner, config_.limits.call_timeout_ms),
      routes_(control_plane_, config_.gateways, config_.limits.call_timeout_ms),
      store_(config_.state_file, config_.limits.finished_task_ttl_ms,
             config_.limits.finished_task_limit),
      tasks_(runner_, routes_, config_.gateways, config_.limits),
      dispatcher_(control_plane_, tasks_, routes_, store_, keeper_, config_.limits) {}

DelegateService::~DelegateService() {
  shutdown_.request();
  for (std::thread* thread : {&task_thread_, &route_thread_, &report_thread_}) {
    if (thread->joinable()) thread->detach();
  }
}

bool DelegateService::open(std::string& error) {
  if (!store_.load(error)) return false;
  logEvent(LogLevel::kInfo, "state file loaded")
      .with("state_file", config_.state_file)
      .with("finished_tasks", static_cast<uint64_t>(store_.size()))
      .emit();
  return true;
}

void DelegateService::start() {
  keeper_.start();
  dispatcher_.start();
  loops_running_ = 3;
  task_thread_ = std::thread([this] {
    taskLoop();
    --loops_running_;
  });
  route_thread_ = std::thread([this] {
    routeLoop();
    --loops_running_;
  });
  report_thread_ = std::thread([this] {
    reportLoop();
    --loops_running_;
  });
}

bool DelegateService::shutdown() {
  shutdown_.request();
  size_t running = dispatcher_.busy();
  if (running > 0) {
    logEvent(LogLevel::kInfo, "stopping: no more tasks; waiting for the running ones")
        .with("running", static_cast<uint64_t>(running))
        .with("grace_ms", config_.limits.shutdown_grace_ms)
        .emit();
  }
  bool drained = dispatcher_.drain(config_.limits.shutdown_grace_ms);
  if (!drained) {
    logEvent(LogLevel::kWarning,
             "tasks still running after the grace; they are left to run out their leases")
        .with("running", static_cast<uint64_t>(dispatcher_.busy()))
        .emit();
    return false;
  }
  dispatcher_.join();
  keeper_.stop();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kLoopExitWaitMs);
  while (loops_running_ > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (loops_running_ > 0) return false;
  for (std::thread* thread : {&task_thread_, &route_thread_, &report_thread_}) {
    if (thread->joinable()) thread->join();
  }
  return true;
}

bool DelegateService::registerUntilAnswered() {
  RetryBackoff backoff(config_.limits.retry_initial_ms * 2, config_.limits.register_retry_max_ms);
  int attempts = 0;
  while (!shutdown_.requested()) {
    std::string delegate_id;
    std::string error;
    ++attempts;
    if (control_plane_.registerDelegate(config_.name, config_.selectors, delegate_id, error)) {
      control_plane_.setDelegateId(delegate_id);
      logEvent(LogLevel::kInfo, "registered with the control plane")
          .with("control_url", control_plane_.url())
          .with("delegate_id", delegate_id)
          .with("name", config_.name)
          .with("attempts", static_cast<int64_t>(attempts))
          .emit();
      return true;
    }
    uint64_t delay = backoff.nextDelayMs();
    logEvent(LogLevel::kWarning, "cannot register with the control plane; trying again")
        .with("control_url", control_plane_.url())
        .with("error", error)
        .with("retry_in_ms", delay)
        .emit();
    if (!shutdown_.sleepFor(delay)) return false;
  }
  return false;
}

void DelegateService::taskLoop() {
  bool registered = false;
  RetryBackoff backoff(config_.limits.retry_initial_ms, config_.limits.retry_max_ms);
  while (!shutdown_.requested()) {
    if (!registered) {
      if (!registerUntilAnswered()) return;
      registered = true;
      // The control plane hands out a start only behind a gateway that
      // reported lately: report at once rather than an interval later.
      reportGateways();
      // A gateway may have missed pushes while the control plane was away.
      routes_.syncNow("registered");
    }
    if (!dispatcher_.waitForFreeWorker(shutdown_)) return;
    nlohmann::json task;
    int status = 0;
    std::string error;
    auto outcome = control_plane_.pollTask(config_.limits.poll_wait_s, task, status, error);
    if (outcome == ControlPlaneClient::PollOutcome::kTask) {
      backoff.reset();
      // Leased to this delegate now: it runs even when SIGTERM came during
      // the poll (the grace covers it).
      dispatcher_.submit(task);
      continue;
    }
    if (outcome == ControlPlaneClient::PollOutcome::kNoTask) {
      backoff.reset();
      continue;
    }
    uint64_t delay = backoff.nextDelayMs();
    logEvent(LogLevel::kWarning, "task poll failed")
        .with("error", error)
        .with("status", static_cast<int64_t>(status))
        .with("retry_in_ms", delay)
        .emit();
    // Not reached, or the control plane does not know this delegate (it
    // lost its state, or the token changed): register again, which also
    // syncs routes once it answers.
    if (status == 0 || status == 401 || status == 403 || status == 404 || status >= 500) {
      registered = false;
    }
    if (!shutdown_.sleepFor(delay)) return;
  }
}

void DelegateService::routeLoop() {
  while (shutdown_.sleepFor(config_.route_sync_interval_ms)) routes_.syncNow("periodic");
}

void DelegateService::reportLoop() {
  while (shutdown_.sleepFor(config_.report_interval_ms)) reportGateways();
}

void DelegateService::reportGateways() {
  std::lock_guard<std::mutex> lock(report_mutex_);
  std::vector<GatewayObservation> gateways;
  for (const GatewayConfig& gateway : config_.gateways) {
    gateways.push_back(observeGateway(gateway, config_.limits.call_timeout_ms));
  }
  std::string error;
  bool ok = control_plane_.postReport(buildGatewayReport(gateways), error);
  // Logged when it changes, not every interval.
  if (ok != report_ok_) {
    logEvent(ok ? LogLevel::kInfo : LogLevel::kWarning,
             ok ? "gateway report accepted again" : "gateway report failed")
        .with("error", error)
        .emit();
  }
  report_ok_ = ok;
  for (const GatewayObservation& gateway : gateways) {
    auto [previous, first] = healthy_before_.emplace(gateway.name, true);
    if (previous->second != gateway.healthy) {
      logEvent(gateway.healthy ? LogLevel::kInfo : LogLevel::kWarning,
               gateway.healthy ? "gateway healthy again" : "gateway unhealthy")
          .with("gateway", gateway.name)
          .with("error", gateway.error)
          .emit();
    }
    previous->second = gateway.healthy;
  }
}

}  // namespace spacegate
