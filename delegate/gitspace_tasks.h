// GitspaceTasks: what each kind of task does, step by step, against the
// runner, the gateways and (through a gateway) the machine's agent. Every
// step is safe to repeat: the runner's POST /v1/machines gives the
// Gitspace's machine again, the agent's PUT /v1/gitspace takes the same
// spec again, stop and delete of what is already stopped or gone succeed,
// so a task handed out again after a crash finishes instead of failing.
//
// start:  infra_provisioning_started → machine (POST /v1/machines; 429 and
//         an unreachable runner retried) → ready (GET until in_use and
//         ready) → infra_provisioning_completed → machine_assigned (posted
//         at once: the control plane adds the agent route) → route sync
//         until the table has the agent route and a gateway holds it →
//         infra_gateway_route_completed → agent_gitspace_creation_started →
//         PUT /v1/gitspace → poll GET /v1/gitspace (the setup log forwarded
//         as agent_setup_log; a stopped Gitspace, or one left in error by an
//         earlier attempt, started again) → agent_gitspace_creation_completed
//         and the result, or agent_gitspace_creation_failed.
// stop:   the agent's POST /v1/gitspace/stop (an unreachable agent is
//         logged and passed over) → the runner's stop → GET until stopped.
// delete, reset: the agent's DELETE /v1/gitspace (tolerated) → the
//         runner's DELETE → GET until 404.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "delegate/agent_client.h"
#include "delegate/delegate_config.h"
#include "delegate/route_sync.h"
#include "delegate/runner_client.h"
#include "delegate/task.h"
#include "delegate/task_reporter.h"

namespace spacegate {

class GitspaceTasks {
 public:
  GitspaceTasks(const RunnerClient& runner, RouteSync& routes, std::vector<GatewayConfig> gateways,
                const DelegateLimits& limits)
      : runner_(runner), routes_(routes), gateways_(std::move(gateways)), limits_(limits) {}

  // Runs the task to its end; the result is the task's (ok with data, or a
  // failure with a reason a person can act on). Events go to `reporter`.
  TaskResult run(const Task& task, TaskReporter& reporter);

 private:
  TaskResult start(const Task& task, TaskReporter& reporter);
  TaskResult stop(const Task& task, TaskReporter& reporter);
  TaskResult remove(const Task& task, TaskReporter& reporter);

  // start's steps: false with `error` set.
  bool acquireMachine(const Task& task, TaskReporter& reporter, MachineView& machine,
                      std::string& error);
  bool waitForReadyMachine(const Task& task, TaskReporter& reporter, MachineView& machine,
                           std::string& error);
  bool pushAgentRoute(const Task& task, TaskReporter& reporter, std::string& error);
  bool setUpGitspace(const Task& task, TaskReporter& reporter, const AgentClient& agent,
                     nlohmann::json& status, std::string& error);

  // The machine the task is about: the one it names, or the Gitspace's
  // machine. False without error when there is none; false with error when
  // the runner could not be asked.
  bool findMachine(const Task& task, MachineView& machine, std::string& error);
  // The agent's answer to a call whose failure the task passes over (stop
  // and delete): a few tries, a route sync when the gateway has no route.
  ApiReply tolerantAgentCall(const Task& task, TaskReporter& reporter, const std::string& method,
                             const std::string& target);
  AgentClient agentFor(const Task& task) const;

  const RunnerClient& runner_;
  RouteSync& routes_;
  std::vector<GatewayConfig> gateways_;
  const DelegateLimits limits_;
};

// Forwards an agent's setup log (GET /v1/gitspace/logs?offset=N) to the
// control plane as agent_setup_log events, one per line, at most
// `log_lines_per_poll` lines per call so a chatty setup cannot flood the
// event stream; the rest follows on the next poll.
class SetupLogForwarder {
 public:
  SetupLogForwarder(const AgentClient& agent, TaskReporter& reporter, const DelegateLimits& limits)
      : agent_(agent), reporter_(reporter), limits_(limits) {}

  // One poll. With `final`, a last line without a newline is sent too.
  // Returns true when more is waiting than one poll may send.
  bool forward(bool final = false);
  // Polls until the log is sent (bounded), at the end of setup.
  void drain();
  // Moves past what the log holds now, without sending it.
  void skipToEnd();
  uint64_t offset() const { return offset_; }

 private:
  const AgentClient& agent_;
  TaskReporter& reporter_;
  const DelegateLimits& limits_;
  uint64_t offset_ = 0;
};

}  // namespace spacegate
