// The tasks' step sequences against small fake servers playing the control
// plane, the runner, a gateway's control API and the gateway's traffic port
// with the agent behind it: the start's events in order, machine_assigned
// posted before the route table is fetched, agent calls only with the
// agent host and the task's token, the setup log forwarded line by line,
// retries (429, a machine still booting, a route not there yet), and each
// failure's reason; stop and delete, with an agent that cannot be reached.
#include "delegate/gitspace_tasks.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include "tests/delegate/fake_service.h"

namespace spacegate {
namespace {

using testing::FakeService;
using testing::jsonAnswer;

constexpr char kToken[] = "v1.agent-token-for-gs-1.signature";
constexpr char kAgentHost[] = "agent--gs-1.gs.example";

DelegateLimits fastLimits() {
  DelegateLimits limits;
  limits.call_timeout_ms = 2000;
  limits.agent_call_timeout_ms = 2000;
  limits.poll_interval_ms = 10;
  limits.retry_initial_ms = 5;
  limits.retry_max_ms = 40;
  limits.machine_ready_timeout_ms = 3000;
  limits.gitspace_setup_timeout_ms = 3000;
  limits.machine_stop_timeout_ms = 2000;
  limits.machine_delete_timeout_ms = 2000;
  limits.agent_reach_timeout_ms = 1000;
  limits.control_plane_patience_ms = 1000;
  return limits;
}

nlohmann::json taskJson(const std::string& kind) {
  return {{"id", "t-1"},
          {"kind", kind},
          {"attempt", 1},
          {"gitspace",
           {{"id", "gs-1"},
            {"name", "demo"},
            {"owner", "u-1"},
            {"repository", "https://git.example/app.git"},
            {"branch", "main"},
            {"ide", "jupyter"},
            {"machine_id", kind == "start" ? "" : "m-1"}}},
          {"infra",
           {{"gateway_domain", "gs.example"},
            {"url_scheme", "http"},
            {"gateway_port", 8080},
            {"runner_pool", "default"}}},
          {"agent_token", kToken},
          {"lease_until_ms", 0}};
}

nlohmann::json machineJson(const std::string& state, bool ready) {
  return {{"id", "m-1"},           {"pool", "default"},
          {"gitspace_id", "gs-1"}, {"state", state},
          {"ready", ready},        {"address", "10.213.0.3"},
          {"agent_port", 7000},    {"ide_port", 8888},
          {"ssh_port", 2222},      {"health", {{"healthy", ready}}}};
}

// The pieces every test wires together; each test sets the answers.
class TasksTest : public ::testing::Test {
 protected:
  TasksTest()
      : control_plane_client_(ServiceEndpoint{control_plane_.url(), "", "", "dt-0123456789abcdef"},
                              2000),
        runner_client_(ServiceEndpoint{runner_.url(), "", "", ""}, 2000) {
    control_plane_.setAnswer(
        [this](const ServiceRequest& request) { return controlPlane(request); });
    gateway_control_.setAnswer([](const ServiceRequest& request) {
      if (request.method == "PUT" && request.path == "/routes") {
        return jsonAnswer(200, {{"version", 1}, {"routes", 1}});
      }
      return ServiceResponse::error(404, "no");
    });
    GatewayConfig gateway;
    gateway.name = "local";
    gateway.control.url = gateway_control_.url();
    gateway.control.token = "gateway-token-0123456789";
    gateway.data_url = gateway_data_.url();
    gateways_ = {gateway};
    routes_ = std::make_unique<RouteSync>(control_plane_client_, gateways_, 2000);
    tasks_ = std::make_unique<GitspaceTasks>(runner_client_, *routes_, gateways_, limits_);
  }

  // The control plane: events recorded; the route table has the agent
  // route once machine_assigned arrived.
  ServiceResponse controlPlane(const ServiceRequest& request) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (request.path == "/api/v1/delegate/tasks/t-1/events") {
      nlohmann::json body = nlohmann::json::parse(request.body);
      for (const nlohmann::json& event : body["events"]) {
        events_.push_back(event);
        if (event["type"] == "machine_assigned") assigned_ = event["data"];
      }
      return jsonAnswer(200, {{"lease_until_ms", 1}});
    }
    if (request.path == "/api/v1/delegate/routes") {
      nlohmann::json routes = nlohmann::json::array();
      if (!assigned_.is_null() && agent_route_follows_event_) {
        routes.push_back({{"id", "agent--gs-1"},
                          {"host", kAgentHost},
                          {"upstream", "10.213.0.3:7000"},
                          {"gitspace", "gs-1"},
                          {"access", "agent"}});
      }
      return jsonAnswer(200, {{"version", assigned_.is_null() ? 1 : 2}, {"routes", routes}});
    }
    return ServiceResponse::error(404, "no");
  }

  std::vector<std::string> eventTypes() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> types;
    for (const nlohmann::json& event : events_) types.push_back(event["type"]);
    return types;
  }
  std::vector<nlohmann::json> eventsOf(const std::string& type) {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<nlohmann::json> found;
    for (const nlohmann::json& event : events_) {
      if (event["type"] == type) found.push_back(event);
    }
    return found;
  }

  TaskResult run(const std::string& kind) { return runTask(taskJson(kind)); }
  TaskResult runTask(const nlohmann::json& document) {
    Task task;
    std::string error;
    EXPECT_TRUE(parseTask(document, task, error)) << error;
    TaskReporter reporter(control_plane_client_, task.id, limits_);
    TaskResult result = tasks_->run(task, reporter);
    EXPECT_TRUE(reporter.flush(1000));
    return result;
  }

  // Every request the agent side got came with the agent host and token.
  void expectOnlyAgentCallsThroughTheGateway() {
    for (const testing::RecordedRequest& request : gateway_data_.requests()) {
      EXPECT_EQ(request.host, kAgentHost) << request.line();
      EXPECT_EQ(request.authorization, std::string("Bearer ") + kToken) << request.line();
    }
  }

  DelegateLimits limits_ = fastLimits();
  FakeService control_plane_;
  FakeService runner_;
  FakeService gateway_control_;
  FakeService gateway_data_;
  ControlPlaneClient control_plane_client_;
  RunnerClient runner_client_;
  std::vector<GatewayConfig> gateways_;
  std::unique_ptr<RouteSync> routes_;
  std::unique_ptr<GitspaceTasks> tasks_;

  std::mutex mutex_;
  std::vector<nlohmann::json> events_;
  nlohmann::json assigned_;
  bool agent_route_follows_event_ = true;
};

// A runner whose machine is ready after `polls_until_ready` GETs; 429 for
// the first `refusals` POSTs.
void runnerAnswers(FakeService& runner, int refusals, int polls_until_ready) {
  auto posts = std::make_shared<std::atomic<int>>(0);
  auto gets = std::make_shared<std::atomic<int>>(0);
  runner.setAnswer([=](const ServiceRequest& request) {
    if (request.method == "POST" && request.path == "/v1/machines") {
      if (++*posts <= refusals) {
        return ServiceResponse::error(429, "pool default is at its maximum of 2 machines", "pool");
      }
      nlohmann::json body = machineJson("in_use", false);
      body["source"] = "warm";
      return jsonAnswer(201, body);
    }
    if (request.method == "GET" && request.path == "/v1/machines/m-1") {
      return jsonAnswer(200, machineJson("in_use", ++*gets > polls_until_ready));
    }
    return ServiceResponse::error(404, "no");
  });
}

// An agent that is set up after `polls` GETs, with a setup log.
struct FakeAgent {
  std::mutex mutex;
  int gets = 0;
  int polls_until_done = 3;
  std::string final_state = "running";
  std::string initial_state = "setting_up";
  int put_status = 202;
  std::string log =
      "cloning https://git.example/app.git\n\x1b[32mdone\x1b[0m\r\nstarting jupyter\n";
  nlohmann::json spec;

  ServiceResponse answer(const ServiceRequest& request) {
    std::lock_guard<std::mutex> lock(mutex);
    nlohmann::json status = {{"gitspace_id", "gs-1"},
                             {"state", initial_state},
                             {"error", ""},
                             {"step", "clone"},
                             {"ide", {{"kind", "jupyter"}, {"port", 8888}, {"protocol", "http"}}},
                             {"forwarded_ports", {3000}}};
    if (request.method == "PUT" && request.path == "/v1/gitspace") {
      spec = nlohmann::json::parse(request.body);
      return jsonAnswer(put_status, status);
    }
    if (request.method == "GET" && request.path == "/v1/gitspace") {
      if (++gets >= polls_until_done) {
        status["state"] = final_state;
        if (final_state == "error") status["error"] = "postCreateCommand exited with 2";
      }
      return jsonAnswer(200, status);
    }
    if (request.method == "POST" && request.path == "/v1/gitspace/start") {
      initial_state = "setting_up";
      return jsonAnswer(202, status);
    }
    if (request.method == "GET" && request.path == "/v1/gitspace/logs") {
      std::string offset = "0";
      request.queryParameter("offset", offset);
      ServiceResponse response;
      response.content_type = "text/plain";
      size_t from = std::stoul(offset);
      response.body = from < log.size() ? log.substr(from) : "";
      return response;
    }
    return ServiceResponse::error(404, "no");
  }
};

TEST_F(TasksTest, StartRunsEveryStepInOrder) {
  runnerAnswers(runner_, /*refusals=*/2, /*polls_until_ready=*/2);
  FakeAgent agent;
  gateway_data_.setAnswer([&](const ServiceRequest& request) { return agent.answer(request); });

  TaskResult result = run("start");
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.data, nlohmann::json({{"machine_id", "m-1"},
                                         {"address", "10.213.0.3"},
                                         {"agent_port", 7000},
                                         {"ide_port", 8888},
                                         {"ide_protocol", "http"},
                                         {"forwarded_ports", {3000}},
                                         {"ssh_port", 2222}}));
  std::vector<std::string> types = eventTypes();
  std::vector<std::string> expected = {"infra_provisioning_started",
                                       "infra_provisioning_completed",
                                       "machine_assigned",
                                       "infra_gateway_route_completed",
                                       "agent_gitspace_creation_started",
                                       "agent_setup_log",
                                       "agent_setup_log",
                                       "agent_setup_log",
                                       "agent_gitspace_creation_completed"};
  EXPECT_EQ(types, expected);
  EXPECT_EQ(assigned_, nlohmann::json({{"machine_id", "m-1"},
                                       {"address", "10.213.0.3"},
                                       {"agent_port", 7000},
                                       {"ide_port", 8888},
                                       {"ssh_port", 2222}}));
  // The log, line by line, terminal colours and carriage returns gone.
  std::vector<nlohmann::json> lines = eventsOf("agent_setup_log");
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["message"], "cloning https://git.example/app.git");
  EXPECT_EQ(lines[1]["message"], "done");
  EXPECT_EQ(lines[2]["message"], "starting jupyter");

  // The runner: two refusals (429) retried, then GETs until ready.
  EXPECT_EQ(runner_.count("POST /v1/machines"), 3u);
  EXPECT_GE(runner_.count("GET /v1/machines/m-1"), 3u);
  nlohmann::json acquire = nlohmann::json::parse(runner_.requests()[0].body);
  EXPECT_EQ(acquire, nlohmann::json({{"pool", "default"}, {"gitspace_id", "gs-1"}}));

  // machine_assigned reached the control plane before it was asked for the
  // table that carries the agent route; the gateway got that table.
  std::vector<std::string> control_lines = control_plane_.lines();
  auto routes_at =
      std::find(control_lines.begin(), control_lines.end(), "GET /api/v1/delegate/routes");
  ASSERT_NE(routes_at, control_lines.end());
  EXPECT_NE(std::find(control_lines.begin(), routes_at, "POST /api/v1/delegate/tasks/t-1/events"),
            routes_at);
  auto pushes = gateway_control_.requests();
  ASSERT_EQ(pushes.size(), 1u);
  EXPECT_TRUE(RouteSync::hasAgentRoute(nlohmann::json::parse(pushes[0].body), "gs-1"));

  // The agent: the spec with the base path, then polls; nothing but
  // through the gateway with the agent's host and the task's token.
  EXPECT_EQ(agent.spec, nlohmann::json({{"repository", "https://git.example/app.git"},
                                        {"branch", "main"},
                                        {"ide", "jupyter"},
                                        {"base_path", "/gs/gs-1/"}}));
  EXPECT_EQ(gateway_data_.requests()[0].line(), "PUT /v1/gitspace");
  EXPECT_EQ(gateway_data_.count("POST /v1/gitspace/start"), 0u);
  expectOnlyAgentCallsThroughTheGateway();
}

// The owner's keys from the task reach the agent's spec as the user's
// authorized keys; an agent that had the Gitspace (200) is started with them.
TEST_F(TasksTest, StartHandsTheOwnersSshKeysToTheAgent) {
  runnerAnswers(runner_, /*refusals=*/0, /*polls_until_ready=*/0);
  FakeAgent agent;
  agent.put_status = 200;
  agent.initial_state = "stopped";
  gateway_data_.setAnswer([&](const ServiceRequest& request) { return agent.answer(request); });
  nlohmann::json document = taskJson("start");
  document["gitspace"]["ide"] = "ssh";
  document["gitspace"]["ssh_authorized_keys"] = {"ssh-ed25519 AAAAC3Nz one", "ssh-rsa AAAAB3 two"};

  TaskResult result = runTask(document);
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(agent.spec["user"],
            nlohmann::json(
                {{"ssh_authorized_keys", {"ssh-ed25519 AAAAC3Nz one", "ssh-rsa AAAAB3 two"}}}));
  EXPECT_EQ(gateway_data_.count("POST /v1/gitspace/start"), 1u);
}

TEST_F(TasksTest, StartFailsWithTheRunnersReasonWhenThePoolStaysFull) {
  limits_.machine_ready_timeout_ms = 200;
  tasks_ = std::make_unique<GitspaceTasks>(runner_client_, *routes_, gateways_, limits_);
  runnerAnswers(runner_, /*refusals=*/1000, 0);
  TaskResult result = run("start");
  ASSERT_FALSE(result.ok);
  EXPECT_NE(result.error.find("the runner has no room: HTTP 429: pool default is at its maximum"),
            std::string::npos)
      << result.error;
  EXPECT_GT(runner_.count("POST /v1/machines"), 2u);
  EXPECT_EQ(eventTypes(),
            (std::vector<std::string>{"infra_provisioning_started", "infra_provisioning_failed"}));
  EXPECT_TRUE(gateway_data_.requests().empty());
}

TEST_F(TasksTest, StartFailsAtOnceWhenTheRunnerRefuses) {
  runner_.setAnswer([](const ServiceRequest&) {
    return ServiceResponse::error(404, "no pool named default", "pool");
  });
  TaskResult result = run("start");
  ASSERT_FALSE(result.ok);
  EXPECT_EQ(result.error,
            "the runner refused a machine in pool default: HTTP 404: no pool named default "
            "(field pool)");
  EXPECT_EQ(runner_.count("POST /v1/machines"), 1u);
}

TEST_F(TasksTest, StartFailsWhenTheMachineIsLost) {
  runner_.setAnswer([](const ServiceRequest& request) {
    if (request.method == "POST") return jsonAnswer(201, machineJson("provisioning", false));
    nlohmann::json lost = machineJson("lost", false);
    lost["reason"] = "the process driver no longer has it";
    return jsonAnswer(200, lost);
  });
  TaskResult result = run("start");
  ASSERT_FALSE(result.ok);
  EXPECT_EQ(result.error, "machine m-1 was lost: the process driver no longer has it");
  EXPECT_EQ(eventTypes().back(), "infra_provisioning_failed");
}

TEST_F(TasksTest, StartFailsClearlyWhenTheControlPlaneNeverAddsTheAgentRoute) {
  runnerAnswers(runner_, 0, 0);
  agent_route_follows_event_ = false;
  TaskResult result = run("start");
  ASSERT_FALSE(result.ok);
  EXPECT_NE(result.error.find("has no agent route for gs-1 after machine_assigned"),
            std::string::npos)
      << result.error;
  EXPECT_EQ(eventTypes().back(), "infra_gateway_route_failed");
  EXPECT_TRUE(gateway_data_.requests().empty());
}

TEST_F(TasksTest, StartReportsTheAgentsSetupError) {
  runnerAnswers(runner_, 0, 0);
  FakeAgent agent;
  agent.final_state = "error";
  gateway_data_.setAnswer([&](const ServiceRequest& request) { return agent.answer(request); });
  TaskResult result = run("start");
  ASSERT_FALSE(result.ok);
  EXPECT_EQ(result.error, "the agent's setup failed at clone: postCreateCommand exited with 2");
  EXPECT_EQ(eventTypes().back(), "agent_gitspace_creation_failed");
  EXPECT_EQ(eventsOf("agent_gitspace_creation_failed")[0]["message"], result.error);
  // The log lines came before the failure.
  EXPECT_EQ(eventsOf("agent_setup_log").size(), 3u);
  // A setup this PUT began (202) is not started again after its error.
  EXPECT_EQ(gateway_data_.count("POST /v1/gitspace/start"), 0u);
}

TEST_F(TasksTest, StartWakesAStoppedGitspace) {
  runnerAnswers(runner_, 0, 0);
  FakeAgent agent;
  agent.put_status = 200;  // the agent already has this spec
  agent.initial_state = "stopped";
  agent.polls_until_done = 2;
  gateway_data_.setAnswer([&](const ServiceRequest& request) { return agent.answer(request); });
  TaskResult result = run("start");
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(gateway_data_.count("POST /v1/gitspace/start"), 1u);
  // The log the agent held before (an earlier run) is not sent again.
  EXPECT_TRUE(eventsOf("agent_setup_log").empty());
  expectOnlyAgentCallsThroughTheGateway();
}

TEST_F(TasksTest, StartWaitsForTheGatewayToReachTheAgent) {
  runnerAnswers(runner_, 0, 0);
  FakeAgent agent;
  auto refusals = std::make_shared<std::atomic<int>>(0);
  gateway_data_.setAnswer([&, refusals](const ServiceRequest& request) {
    // The gateway answers for an agent it cannot reach yet.
    if (++*refusals <= 2) return ServiceResponse::error(502, "upstream refused the connection");
    return agent.answer(request);
  });
  TaskResult result = run("start");
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(gateway_data_.count("PUT /v1/gitspace"), 3u);
}

TEST_F(TasksTest, StartFailsWhenTheAgentRefusesTheToken) {
  runnerAnswers(runner_, 0, 0);
  gateway_data_.setAnswer([](const ServiceRequest&) {
    return ServiceResponse::error(401, "missing bearer token (an agent access token is required)");
  });
  TaskResult result = run("start");
  ASSERT_FALSE(result.ok);
  EXPECT_EQ(result.error,
            "the agent did not take the Gitspace (through the gateway, host "
            "agent--gs-1.gs.example): HTTP 401: missing bearer token (an agent access token is "
            "required)");
  EXPECT_EQ(gateway_data_.count("PUT /v1/gitspace"), 1u);
}

TEST_F(TasksTest, LongSetupLogsGoOutAFewLinesAPoll) {
  limits_.log_lines_per_poll = 2;
  tasks_ = std::make_unique<GitspaceTasks>(runner_client_, *routes_, gateways_, limits_);
  runnerAnswers(runner_, 0, 0);
  FakeAgent agent;
  agent.log.clear();
  for (int i = 0; i < 9; ++i) agent.log += "line " + std::to_string(i) + "\n";
  agent.log += "no newline at the end";
  agent.polls_until_done = 2;
  gateway_data_.setAnswer([&](const ServiceRequest& request) { return agent.answer(request); });
  TaskResult result = run("start");
  ASSERT_TRUE(result.ok) << result.error;
  std::vector<nlohmann::json> lines = eventsOf("agent_setup_log");
  ASSERT_EQ(lines.size(), 10u);
  EXPECT_EQ(lines[8]["message"], "line 8");
  EXPECT_EQ(lines[9]["message"], "no newline at the end");
  // Offsets moved on by what was sent: no line twice.
  std::vector<std::string> offsets;
  for (const auto& request : gateway_data_.requests()) {
    if (request.path == "/v1/gitspace/logs") offsets.push_back(request.query);
  }
  ASSERT_GE(offsets.size(), 5u);
  EXPECT_EQ(offsets[0], "offset=0");
  EXPECT_EQ(offsets[1], "offset=14");  // "line 0\nline 1\n"
}

TEST_F(TasksTest, StopGoesThroughTheAgentThenTheRunner) {
  auto stopped = std::make_shared<std::atomic<bool>>(false);
  runner_.setAnswer([stopped](const ServiceRequest& request) {
    if (request.method == "POST" && request.path == "/v1/machines/m-1/stop") {
      *stopped = true;
      return jsonAnswer(202, machineJson("in_use", true));
    }
    if (request.method == "GET" && request.path == "/v1/machines/m-1") {
      return jsonAnswer(200, machineJson(*stopped ? "stopped" : "in_use", !*stopped));
    }
    return ServiceResponse::error(404, "no");
  });
  gateway_data_.setAnswer([](const ServiceRequest& request) {
    if (request.method == "POST" && request.path == "/v1/gitspace/stop")
      return jsonAnswer(200, {{"state", "stopped"}});
    return ServiceResponse::error(404, "no");
  });
  TaskResult result = run("stop");
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.data, nlohmann::json::object());
  EXPECT_EQ(gateway_data_.lines(), (std::vector<std::string>{"POST /v1/gitspace/stop"}));
  EXPECT_EQ(runner_.count("POST /v1/machines/m-1/stop"), 1u);
  expectOnlyAgentCallsThroughTheGateway();
}

TEST_F(TasksTest, StopPassesOverAnUnreachableAgent) {
  auto stopped = std::make_shared<std::atomic<bool>>(false);
  runner_.setAnswer([stopped](const ServiceRequest& request) {
    if (request.method == "POST") {
      *stopped = true;
      return jsonAnswer(202, machineJson("in_use", true));
    }
    return jsonAnswer(200, machineJson(*stopped ? "stopped" : "in_use", true));
  });
  gateway_data_.setAnswer(
      [](const ServiceRequest&) { return ServiceResponse::error(502, "upstream refused"); });
  TaskResult result = run("stop");
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(gateway_data_.count("POST /v1/gitspace/stop"), 3u);  // a few tries, then on
  EXPECT_EQ(runner_.count("POST /v1/machines/m-1/stop"), 1u);
}

TEST_F(TasksTest, StopRetriesABusyMachine) {
  auto tries = std::make_shared<std::atomic<int>>(0);
  runner_.setAnswer([tries](const ServiceRequest& request) {
    if (request.method == "POST") {
      if (++*tries < 3) return ServiceResponse::error(409, "machine is in_use and busy", "id");
      return jsonAnswer(202, machineJson("in_use", true));
    }
    return jsonAnswer(200, machineJson(*tries >= 3 ? "stopped" : "in_use", true));
  });
  gateway_data_.setAnswer([](const ServiceRequest&) { return jsonAnswer(200, {}); });
  TaskResult result = run("stop");
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(runner_.count("POST /v1/machines/m-1/stop"), 3u);
}

TEST_F(TasksTest, DeleteRemovesTheWorkspaceThenTheMachine) {
  auto deleted = std::make_shared<std::atomic<bool>>(false);
  runner_.setAnswer([deleted](const ServiceRequest& request) {
    if (request.method == "DELETE" && request.path == "/v1/machines/m-1") {
      *deleted = true;
      return jsonAnswer(202, machineJson("terminating", false));
    }
    if (request.method == "GET" && request.path == "/v1/machines/m-1") {
      if (*deleted) return ServiceResponse::error(404, "no such machine", "id");
      return jsonAnswer(200, machineJson("in_use", true));
    }
    if (request.method == "GET" && request.path == "/v1/machines") {
      return jsonAnswer(200, {{"machines", nlohmann::json::array()}});
    }
    return ServiceResponse::error(404, "no");
  });
  gateway_data_.setAnswer([](const ServiceRequest&) { return jsonAnswer(200, {}); });
  for (const char* kind : {"delete", "reset"}) {
    *deleted = false;
    TaskResult result = run(kind);
    ASSERT_TRUE(result.ok) << kind << ": " << result.error;
  }
  EXPECT_EQ(gateway_data_.count("DELETE /v1/gitspace"), 2u);
  EXPECT_EQ(runner_.count("DELETE /v1/machines/m-1"), 2u);
  expectOnlyAgentCallsThroughTheGateway();
}

TEST_F(TasksTest, DeleteOfAGitspaceWithoutAMachineSucceeds) {
  runner_.setAnswer([](const ServiceRequest& request) {
    if (request.path == "/v1/machines") {
      return jsonAnswer(200, {{"machines", nlohmann::json::array()}});
    }
    return ServiceResponse::error(404, "no such machine", "id");
  });
  TaskResult result = run("delete");
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_TRUE(gateway_data_.requests().empty());
  EXPECT_EQ(runner_.count("DELETE /v1/machines/m-1"), 0u);
}

}  // namespace
}  // namespace spacegate
