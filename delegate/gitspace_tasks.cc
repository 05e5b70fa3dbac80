#include "delegate/gitspace_tasks.h"

#include <chrono>
#include <thread>

#include "common/log.h"
#include "delegate/retry_backoff.h"

namespace spacegate {

namespace {

using Clock = std::chrono::steady_clock;

// Tries of an agent call whose failure stop and delete pass over.
constexpr uint64_t kAgentStopTries = 3;
// A line longer than this without a newline is sent as it is.
constexpr size_t kLongestUnterminatedLine = 64 * 1024;

Clock::time_point deadlineAfter(uint64_t ms) {
  return Clock::now() + std::chrono::milliseconds(ms);
}

bool pastDeadline(Clock::time_point deadline, uint64_t next_pause_ms = 0) {
  return Clock::now() + std::chrono::milliseconds(next_pause_ms) >= deadline;
}

void pause(uint64_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

std::string seconds(uint64_t ms) {
  return std::to_string((ms + 999) / 1000) + " s";
}

std::string errorOf(const nlohmann::json& status) {
  if (status.is_object() && status.contains("error") && status["error"].is_string()) {
    return status["error"].get<std::string>();
  }
  return {};
}

std::string textField(const nlohmann::json& object, const char* key) {
  if (object.is_object() && object.contains(key) && object[key].is_string()) {
    return object[key].get<std::string>();
  }
  return {};
}

// The agent's answer says the machine is not assigned yet (the runner's
// health check assigns it): worth waiting for.
bool notAssignedYet(const ApiReply& reply) {
  return reply.status == 409 && errorOf(reply.body).find("not assigned") != std::string::npos;
}

}  // namespace

TaskResult GitspaceTasks::run(const Task& task, TaskReporter& reporter) {
  switch (task.kind) {
    case TaskKind::kStart: return start(task, reporter);
    case TaskKind::kStop: return stop(task, reporter);
    case TaskKind::kDelete:
    case TaskKind::kReset: return remove(task, reporter);
  }
  return TaskResult::failure("unknown task kind");
}

AgentClient GitspaceTasks::agentFor(const Task& task) const {
  return AgentClient(gateways_, task.agentHost(), task.agent_token, limits_.agent_call_timeout_ms);
}

// --- start ---

bool GitspaceTasks::acquireMachine(const Task& task, TaskReporter& reporter, MachineView& machine,
                                   std::string& error) {
  const std::string& pool = task.infra.runner_pool;
  Clock::time_point deadline = deadlineAfter(limits_.machine_ready_timeout_ms);
  RetryBackoff backoff(limits_.retry_initial_ms, limits_.retry_max_ms);
  while (true) {
    ApiReply reply = runner_.acquire(pool, task.gitspace.id, machine);
    if (reply.ok()) return true;
    bool full = reply.status == 429;
    if (!full && !reply.transient()) {
      error = "the runner refused a machine in pool " + pool + ": " + reply.reason();
      return false;
    }
    std::string why = full ? "the runner has no room: " + reply.reason()
                           : "the runner did not answer: " + reply.reason();
    uint64_t delay = backoff.nextDelayMs();
    if (pastDeadline(deadline, delay) || reporter.leaseLost()) {
      error = why + " (for " + seconds(limits_.machine_ready_timeout_ms) + ")";
      return false;
    }
    logEvent(LogLevel::kInfo, "no machine yet; trying again")
        .with("task", task.id)
        .with("gitspace", task.gitspace.id)
        .with("reason", why)
        .with("retry_in_ms", delay)
        .emit();
    reporter.setActivity("waiting for a machine: " + why);
    pause(delay);
  }
}

bool GitspaceTasks::waitForReadyMachine(const Task& task, TaskReporter& reporter,
                                        MachineView& machine, std::string& error) {
  Clock::time_point deadline = deadlineAfter(limits_.machine_ready_timeout_ms);
  bool start_sent = false;
  std::string last = machine.describe();
  while (true) {
    if (reporter.leaseLost()) {
      error = "the task's lease was lost";
      return false;
    }
    MachineView current;
    ApiReply reply = runner_.get(machine.id, current);
    if (reply.status == 404) {
      error = "machine " + machine.id + " disappeared from the runner while it booted";
      return false;
    }
    if (reply.ok()) {
      std::string source = machine.source;
      machine = current;
      machine.source = source;
      last = machine.describe();
      if (machine.state == "in_use" && machine.ready) return true;
      if (machine.state == "lost") {
        error = "machine " + machine.id + " was lost: " + machine.reason;
        return false;
      }
      if (machine.state == "terminating") {
        error = "machine " + machine.id + " is being destroyed";
        return false;
      }
      if (machine.state == "stopped" && !start_sent) {
        // POST /v1/machines wakes a stopped machine; this covers one
        // stopped between that call and now.
        runner_.start(machine.id);
        start_sent = true;
      }
    } else if (!reply.transient()) {
      error = "the runner refused GET /v1/machines/" + machine.id + ": " + reply.reason();
      return false;
    } else {
      last = "the runner did not answer: " + reply.reason();
    }
    reporter.setActivity("waiting for machine " + last);
    if (pastDeadline(deadline, limits_.poll_interval_ms)) {
      error = "machine " + machine.id + " was not ready within " +
              seconds(limits_.machine_ready_timeout_ms) + ": " + last;
      return false;
    }
    pause(limits_.poll_interval_ms);
  }
}

bool GitspaceTasks::pushAgentRoute(const Task& task, TaskReporter& reporter, std::string& error) {
  Clock::time_point deadline = deadlineAfter(limits_.control_plane_patience_ms);
  RetryBackoff backoff(limits_.retry_initial_ms, limits_.retry_max_ms / 2);
  while (true) {
    RouteSyncOutcome outcome = routes_.syncNow("task " + task.id + " start: agent route");
    std::string why;
    if (!outcome.fetched) {
      why = outcome.failures();
    } else if (!RouteSync::hasAgentRoute(outcome.table, task.gitspace.id)) {
      why = "the control plane's route table (version " + std::to_string(outcome.version) +
            ") has no agent route for " + task.gitspace.id + " after machine_assigned";
    } else if (outcome.currentGateways() == 0) {
      why = "no gateway took the routes: " + outcome.failures();
    } else {
      std::string message = "the agent route " + task.agentHost() + " is on " +
                            std::to_string(outcome.currentGateways()) + " of " +
                            std::to_string(outcome.pushes.size()) + " gateways (table version " +
                            std::to_string(outcome.version) + ")";
      std::string failures = outcome.failures();
      if (!failures.empty()) message += "; not on " + failures;
      reporter.emit("infra_gateway_route_completed", message,
                    {{"route_version", outcome.version}, {"host", task.agentHost()}});
      return true;
    }
    uint64_t delay = backoff.nextDelayMs();
    if (pastDeadline(deadline, delay) || reporter.leaseLost()) {
      error = why;
      return false;
    }
    reporter.setActivity("pushing the agent route: " + why);
    pause(delay);
  }
}

bool GitspaceTasks::setUpGitspace(const Task& task, TaskReporter& reporter,
                                  const AgentClient& agent, nlohmann::json& status,
                                  std::string& error) {
  nlohmann::json spec = {{"repository", task.gitspace.repository},
                         {"ide", task.gitspace.ide},
                         {"base_path", task.basePath()}};
  if (!task.gitspace.branch.empty()) spec["branch"] = task.gitspace.branch;
  // The owner's keys as the control plane has them now. An agent that set
  // this Gitspace up with other keys takes the new ones (200) and writes
  // them for sshd when it starts the Gitspace.
  if (task.gitspace.ssh_authorized_keys) {
    spec["user"] = {{"ssh_authorized_keys", *task.gitspace.ssh_authorized_keys}};
  }
  reporter.emit("agent_gitspace_creation_started",
                "asking the agent to set up " + task.gitspace.repository +
                    (task.gitspace.branch.empty() ? "" : " (" + task.gitspace.branch + ")") +
                    " with " + task.gitspace.ide);
  reporter.setActivity("handing the Gitspace to the agent");

  // PUT /v1/gitspace: the route was just pushed and the agent just passed
  // the runner's health check, so "not there yet" answers are waited out.
  Clock::time_point reach_deadline = deadlineAfter(limits_.agent_reach_timeout_ms);
  RetryBackoff backoff(limits_.retry_initial_ms, limits_.retry_max_ms / 2);
  ApiReply put;
  while (true) {
    put = agent.call("PUT", "/v1/gitspace", spec);
    if (put.ok()) break;
    bool wait = put.transient() || put.status == 404 || notAssignedYet(put);
    uint64_t delay = backoff.nextDelayMs();
    if (!wait || pastDeadline(reach_deadline, delay) || reporter.leaseLost()) {
      error = "the agent did not take the Gitspace (through the gateway, host " + agent.host() +
              "): " + put.reason();
      return false;
    }
    reporter.setActivity("waiting for the agent to answer: " + put.reason());
    pause(delay);
  }

  SetupLogForwarder log(agent, reporter, limits_);
  // The agent already had this Gitspace: what its log holds now belongs to
  // an earlier run (or was forwarded by an earlier try of this task).
  if (put.status == 200) log.skipToEnd();
  Clock::time_point deadline = deadlineAfter(limits_.gitspace_setup_timeout_ms);
  // A Gitspace the agent already had (200) may be stopped, or in error
  // from an earlier attempt: it is started once. An error after that, or
  // in a setup this PUT began (202), is this attempt's failure.
  bool may_restart = put.status == 200;
  bool start_sent = false;
  std::string last = "no answer yet";
  while (true) {
    if (reporter.leaseLost()) {
      error = "the task's lease was lost";
      return false;
    }
    log.forward();
    ApiReply reply = agent.call("GET", "/v1/gitspace");
    if (reply.ok() && reply.body.is_object()) {
      status = reply.body;
      std::string state = textField(status, "state");
      std::string step = textField(status, "step");
      last = state + (step.empty() ? "" : " (" + step + ")");
      if (state == "running") {
        log.drain();
        return true;
      }
      if ((state == "error" && may_restart && !start_sent) || (state == "stopped" && !start_sent)) {
        ApiReply started = agent.call("POST", "/v1/gitspace/start");
        start_sent = true;
        if (!started.ok() && !started.transient()) {
          log.drain();
          error = "the agent did not start the Gitspace again: " + started.reason();
          return false;
        }
        reporter.emit("progress", "the Gitspace was " + state + "; the agent starts it again");
      } else if (state == "error") {
        log.drain();
        std::string reason = errorOf(status);
        error = "the agent's setup failed" + (step.empty() ? "" : " at " + step) + ": " +
                (reason.empty() ? "no reason given" : reason);
        return false;
      } else if (state == "stopped") {
        log.drain();
        error = "the Gitspace stopped during setup";
        return false;
      } else if (state == "uninitialized") {
        error = "the agent no longer has the Gitspace (deleted during setup?)";
        return false;
      }
      may_restart = false;
    } else if (reply.transient() || reply.status == 404) {
      last = "the agent did not answer: " + reply.reason();
    } else {
      error = "the agent refused GET /v1/gitspace: " + reply.reason();
      return false;
    }
    reporter.setActivity("the agent is setting up the Gitspace: " + last);
    if (pastDeadline(deadline, limits_.poll_interval_ms)) {
      log.drain();
      error = "the Gitspace was not running within " + seconds(limits_.gitspace_setup_timeout_ms) +
              "; last: " + last;
      return false;
    }
    pause(limits_.poll_interval_ms);
  }
}

TaskResult GitspaceTasks::start(const Task& task, TaskReporter& reporter) {
  const std::string& gs = task.gitspace.id;
  reporter.emit("infra_provisioning_started",
                "asking the runner for a machine in pool " + task.infra.runner_pool);
  reporter.setActivity("waiting for a machine from the runner");
  MachineView machine;
  std::string error;
  if (!acquireMachine(task, reporter, machine, error) ||
      !waitForReadyMachine(task, reporter, machine, error)) {
    reporter.emit("infra_provisioning_failed", error);
    return TaskResult::failure(error);
  }
  logEvent(LogLevel::kInfo, "machine ready")
      .with("task", task.id)
      .with("gitspace", gs)
      .with("machine", machine.id)
      .with("source", machine.source)
      .emit();
  reporter.emit("infra_provisioning_completed",
                "machine " + machine.id + " is ready" +
                    (machine.source.empty() ? "" : " (" + machine.source + ")"),
                {{"machine_id", machine.id}});
  // The control plane records the machine and adds the agent route to the
  // desired table when it takes this event: it must be posted before the
  // table is fetched.
  nlohmann::json assigned = {{"machine_id", machine.id}, {"address", machine.address}};
  // Ports the runner does not know (0) are left out rather than sent as
  // invalid.
  if (machine.agent_port > 0) assigned["agent_port"] = machine.agent_port;
  if (machine.ide_port > 0) assigned["ide_port"] = machine.ide_port;
  if (machine.ssh_port > 0) assigned["ssh_port"] = machine.ssh_port;
  reporter.emit("machine_assigned", "machine " + machine.id + " serves " + gs, assigned);
  if (!reporter.flush(limits_.control_plane_patience_ms)) {
    error = reporter.leaseLost()
                ? "the task's lease was lost"
                : "the control plane did not take the machine_assigned event within " +
                      seconds(limits_.control_plane_patience_ms);
    return TaskResult::failure(error);
  }
  reporter.setActivity("pushing the agent route to the gateways");
  if (!pushAgentRoute(task, reporter, error)) {
    error = "the agent route did not reach a gateway: " + error;
    reporter.emit("infra_gateway_route_failed", error);
    return TaskResult::failure(error);
  }
  AgentClient agent = agentFor(task);
  nlohmann::json status;
  if (!setUpGitspace(task, reporter, agent, status, error)) {
    reporter.emit("agent_gitspace_creation_failed", error);
    return TaskResult::failure(error);
  }
  nlohmann::json ide = status.value("ide", nlohmann::json::object());
  if (!ide.is_object()) ide = nlohmann::json::object();
  int ide_port = ide.contains("port") && ide["port"].is_number_integer() ? ide["port"].get<int>()
                                                                         : machine.ide_port;
  std::string protocol = textField(ide, "protocol");
  nlohmann::json forwarded = status.value("forwarded_ports", nlohmann::json::array());
  if (!forwarded.is_array()) forwarded = nlohmann::json::array();
  reporter.emit("agent_gitspace_creation_completed", "the Gitspace is running (" +
                                                         task.gitspace.ide + " on port " +
                                                         std::to_string(ide_port) + ")");
  nlohmann::json started = {{"machine_id", machine.id},
                            {"address", machine.address},
                            {"agent_port", machine.agent_port},
                            {"ide_port", ide_port},
                            {"ide_protocol", protocol.empty() ? "http" : protocol},
                            {"forwarded_ports", forwarded}};
  // The machine's sshd port becomes the IDE route's tunnel port.
  if (machine.ssh_port > 0) started["ssh_port"] = machine.ssh_port;
  return TaskResult::success(started);
}

// --- stop, delete, reset ---

bool GitspaceTasks::findMachine(const Task& task, MachineView& machine, std::string& error) {
  Clock::time_point deadline = deadlineAfter(limits_.machine_stop_timeout_ms);
  RetryBackoff backoff(limits_.retry_initial_ms, limits_.retry_max_ms);
  while (true) {
    ApiReply reply;
    if (!task.gitspace.machine_id.empty()) {
      reply = runner_.get(task.gitspace.machine_id, machine);
      // A machine that now serves another Gitspace is not this task's.
      if (reply.ok() && (machine.gitspace_id == task.gitspace.id || machine.gitspace_id.empty())) {
        return true;
      }
    }
    if (reply.ok() || reply.status == 404 || task.gitspace.machine_id.empty()) {
      reply = runner_.findForGitspace(task.gitspace.id, machine);
      if (reply.ok()) return true;
      if (reply.status == 404) return false;
    }
    uint64_t delay = backoff.nextDelayMs();
    if (!reply.transient() || pastDeadline(deadline, delay)) {
      error = "the runner could not say where the machine is: " + reply.reason();
      return false;
    }
    pause(delay);
  }
}

ApiReply GitspaceTasks::tolerantAgentCall(const Task& task, TaskReporter& reporter,
                                          const std::string& method, const std::string& target) {
  ApiReply reply;
  if (task.infra.gateway_domain.empty() || task.agent_token.empty()) {
    reply.error = "the task has no gateway domain or agent token";
    return reply;
  }
  AgentClient agent = agentFor(task);
  RetryBackoff backoff(limits_.retry_initial_ms, limits_.retry_max_ms);
  bool synced = false;
  for (uint64_t attempt = 1; attempt <= kAgentStopTries; ++attempt) {
    reporter.setActivity("waiting for the agent: " + method + " " + target);
    reply = agent.call(method, target);
    if (reply.reached() && !reply.transient() && reply.status != 404) return reply;
    if (reply.status == 404 && !synced) {
      // The gateway has no route to the agent: it may have missed a push.
      routes_.syncNow("task " + task.id + ": agent route missing");
      synced = true;
    }
    if (attempt < kAgentStopTries) pause(backoff.nextDelayMs());
  }
  return reply;
}

TaskResult GitspaceTasks::stop(const Task& task, TaskReporter& reporter) {
  MachineView machine;
  std::string error;
  if (!findMachine(task, machine, error)) {
    if (!error.empty()) return TaskResult::failure(error);
    reporter.emit("progress", "the Gitspace has no machine: nothing to stop");
    return TaskResult::success();
  }
  if (machine.state == "in_use") {
    ApiReply reply = tolerantAgentCall(task, reporter, "POST", "/v1/gitspace/stop");
    if (reply.ok() || reply.status == 409) {
      reporter.emit("progress", "the agent stopped the Gitspace's processes");
    } else {
      logEvent(LogLevel::kWarning, "agent stop failed; stopping the machine anyway")
          .with("task", task.id)
          .with("gitspace", task.gitspace.id)
          .with("error", reply.reason())
          .emit();
      reporter.emit("progress",
                    "the agent did not answer (" + reply.reason() + "); stopping the machine");
    }
  }
  Clock::time_point deadline = deadlineAfter(limits_.machine_stop_timeout_ms);
  RetryBackoff backoff(limits_.retry_initial_ms, limits_.retry_max_ms);
  bool stop_accepted = false;
  std::string last = machine.describe();
  while (true) {
    if (reporter.leaseLost()) return TaskResult::failure("the task's lease was lost");
    uint64_t delay = limits_.poll_interval_ms;
    if (!stop_accepted) {
      ApiReply reply = runner_.stop(machine.id);
      if (reply.ok()) {
        stop_accepted = true;
      } else if (reply.status == 404) {
        reporter.emit("progress", "machine " + machine.id + " is gone");
        return TaskResult::success();
      } else if (reply.status != 409 && !reply.transient()) {
        return TaskResult::failure("the runner refused to stop machine " + machine.id + ": " +
                                   reply.reason());
      } else {
        // 409: busy (booting, checking) or not in use; GET says which.
        last = reply.reason();
        delay = backoff.nextDelayMs();
      }
    }
    MachineView current;
    ApiReply state = runner_.get(machine.id, current);
    if (state.status == 404 || (state.ok() && current.state == "lost")) {
      reporter.emit("progress", "machine " + machine.id + " is gone");
      return TaskResult::success();
    }
    if (state.ok()) {
      if (current.state == "stopped") {
        reporter.emit("progress", "machine " + machine.id + " stopped");
        return TaskResult::success();
      }
      last = current.describe();
    }
    reporter.setActivity("waiting for machine " + last + " to stop");
    if (pastDeadline(deadline, delay)) {
      return TaskResult::failure("machine " + machine.id + " did not stop within " +
                                 seconds(limits_.machine_stop_timeout_ms) + ": " + last);
    }
    pause(delay);
  }
}

TaskResult GitspaceTasks::remove(const Task& task, TaskReporter& reporter) {
  MachineView machine;
  std::string error;
  if (!findMachine(task, machine, error)) {
    if (!error.empty()) return TaskResult::failure(error);
    reporter.emit("progress", "the Gitspace has no machine: nothing to delete");
    return TaskResult::success();
  }
  if (machine.state == "in_use") {
    ApiReply reply = tolerantAgentCall(task, reporter, "DELETE", "/v1/gitspace");
    if (reply.ok()) {
      reporter.emit("progress", "the agent removed the Gitspace's workspace and processes");
    } else {
      logEvent(LogLevel::kWarning, "agent delete failed; deleting the machine anyway")
          .with("task", task.id)
          .with("gitspace", task.gitspace.id)
          .with("error", reply.reason())
          .emit();
      reporter.emit("progress",
                    "the agent did not answer (" + reply.reason() + "); deleting the machine");
    }
  }
  // The machine the task names, then any other the Gitspace still has.
  for (int round = 0; round < 4; ++round) {
    Clock::time_point deadline = deadlineAfter(limits_.machine_delete_timeout_ms);
    RetryBackoff backoff(limits_.retry_initial_ms, limits_.retry_max_ms);
    bool delete_accepted = false;
    std::string last = machine.describe();
    while (true) {
      if (reporter.leaseLost()) return TaskResult::failure("the task's lease was lost");
      uint64_t delay = limits_.poll_interval_ms;
      if (!delete_accepted) {
        ApiReply reply = runner_.remove(machine.id);
        if (reply.ok() || reply.status == 404) {
          delete_accepted = true;
        } else if (!reply.transient()) {
          return TaskResult::failure("the runner refused to delete machine " + machine.id + ": " +
                                     reply.reason());
        } else {
          last = reply.reason();
          delay = backoff.nextDelayMs();
        }
      }
      if (delete_accepted) {
        MachineView current;
        ApiReply state = runner_.get(machine.id, current);
        if (state.status == 404) break;
        if (state.ok()) last = current.describe();
        if (state.ok() && current.state == "lost") delete_accepted = false;  // drop the record
      }
      reporter.setActivity("waiting for machine " + last + " to be deleted");
      if (pastDeadline(deadline, delay)) {
        return TaskResult::failure("machine " + machine.id + " was not deleted within " +
                                   seconds(limits_.machine_delete_timeout_ms) + ": " + last);
      }
      pause(delay);
    }
    reporter.emit("progress", "machine " + machine.id + " deleted");
    MachineView other;
    ApiReply reply = runner_.findForGitspace(task.gitspace.id, other);
    if (!reply.ok()) break;  // none left (or the runner cannot say: done as asked)
    machine = other;
  }
  return TaskResult::success();
}

// --- the setup log ---

bool SetupLogForwarder::forward(bool final) {
  ApiReply reply = agent_.call("GET", "/v1/gitspace/logs?offset=" + std::to_string(offset_));
  if (!reply.ok()) return false;
  const std::string& text = reply.text;
  size_t consumed = 0;
  size_t lines = 0;
  auto send = [&](std::string line) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > limits_.log_line_bytes) {
      line.resize(limits_.log_line_bytes);
      line += " [cut]";
    }
    reporter_.emit("agent_setup_log", line);
    ++lines;
  };
  while (lines < limits_.log_lines_per_poll && consumed < text.size()) {
    size_t newline = text.find('\n', consumed);
    if (newline == std::string::npos) {
      size_t rest = text.size() - consumed;
      if (final || rest >= kLongestUnterminatedLine) {
        send(text.substr(consumed, std::min(rest, kLongestUnterminatedLine)));
        consumed += std::min(rest, kLongestUnterminatedLine);
        continue;
      }
      break;
    }
    send(text.substr(consumed, newline - consumed));
    consumed = newline + 1;
  }
  offset_ += consumed;
  return consumed < text.size() && lines >= limits_.log_lines_per_poll;
}

void SetupLogForwarder::skipToEnd() {
  ApiReply reply = agent_.call("GET", "/v1/gitspace/logs?offset=" + std::to_string(offset_));
  if (reply.ok()) offset_ += reply.text.size();
}

void SetupLogForwarder::drain() {
  // Bounded: a log that keeps growing after setup ended is not followed.
  for (int round = 0; round < 20; ++round) {
    if (!forward(true)) return;
  }
}

}  // namespace spacegate
