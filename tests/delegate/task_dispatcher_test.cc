// The dispatcher: a finished task (in the state file) is answered with its
// stored result and nothing is repeated, even by a new dispatcher over the
// same file (a restarted delegate); a task it cannot read gets a failed
// result naming the field; results are stored before they are posted and
// the routes are synced after every task; a task already here is not
// queued twice; workers run tasks at once up to the limit.
#include "delegate/task_dispatcher.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "tests/delegate/fake_service.h"

namespace spacegate {
namespace {

using testing::FakeService;
using testing::jsonAnswer;

nlohmann::json deleteTask(const std::string& id) {
  return {{"id", id},
          {"kind", "delete"},
          {"gitspace", {{"id", "gs-1"}, {"machine_id", "m-1"}}},
          {"infra", {{"gateway_domain", "gs.example"}, {"runner_pool", "default"}}},
          {"agent_token", "v1.a.b"}};
}

class TaskDispatcherTest : public ::testing::Test {
 protected:
  TaskDispatcherTest()
      : control_plane_client_(ServiceEndpoint{control_plane_.url(), "", "", "dt-0123456789abcdef"},
                              2000),
        runner_client_(ServiceEndpoint{runner_.url(), "", "", ""}, 2000) {
    char folder[] = "/tmp/delegate-dispatcher-test-XXXXXX";
    EXPECT_NE(::mkdtemp(folder), nullptr);
    folder_ = folder;
    limits_.poll_interval_ms = 10;
    limits_.retry_initial_ms = 5;
    limits_.retry_max_ms = 20;
    limits_.max_concurrent_tasks = 3;
    control_plane_.setAnswer([this](const ServiceRequest& request) {
      if (request.path == "/api/v1/delegate/routes") {
        return jsonAnswer(200, {{"version", 3}, {"routes", nlohmann::json::array()}});
      }
      if (request.path.ends_with("/result")) {
        std::lock_guard<std::mutex> lock(mutex_);
        results_.push_back(nlohmann::json::parse(request.body));
      }
      return jsonAnswer(200, nlohmann::json::object());
    });
    // A runner whose machine is already gone: a delete has nothing to do
    // but ask.
    runner_.setAnswer([](const ServiceRequest& request) {
      if (request.path == "/v1/machines") {
        return jsonAnswer(200, {{"machines", nlohmann::json::array()}});
      }
      return ServiceResponse::error(404, "no such machine", "id");
    });
    gateway_.setAnswer([](const ServiceRequest&) { return jsonAnswer(200, {}); });
    GatewayConfig gateway;
    gateway.name = "local";
    gateway.control.url = gateway_.url();
    gateway.data_url = gateway_.url();
    gateways_ = {gateway};
    routes_ = std::make_unique<RouteSync>(control_plane_client_, gateways_, 2000);
    tasks_ = std::make_unique<GitspaceTasks>(runner_client_, *routes_, gateways_, limits_);
  }
  ~TaskDispatcherTest() override { std::filesystem::remove_all(folder_); }

  std::unique_ptr<FinishedTaskStore> openStore() {
    auto store = std::make_unique<FinishedTaskStore>(folder_ + "/state.json", 3600'000, 100);
    std::string error;
    EXPECT_TRUE(store->load(error)) << error;
    return store;
  }

  std::vector<nlohmann::json> results() {
    std::lock_guard<std::mutex> lock(mutex_);
    return results_;
  }

  std::string folder_;
  DelegateLimits limits_;
  FakeService control_plane_;
  FakeService runner_;
  FakeService gateway_;
  ControlPlaneClient control_plane_client_;
  RunnerClient runner_client_;
  std::vector<GatewayConfig> gateways_;
  std::unique_ptr<RouteSync> routes_;
  std::unique_ptr<GitspaceTasks> tasks_;
  LeaseKeeper keeper_;
  std::mutex mutex_;
  std::vector<nlohmann::json> results_;
};

TEST_F(TaskDispatcherTest, AFinishedTaskIsAnsweredAgainNotRepeated) {
  {
    auto store = openStore();
    TaskDispatcher dispatcher(control_plane_client_, *tasks_, *routes_, *store, keeper_, limits_);
    dispatcher.runTask(deleteTask("t-1"));
  }
  ASSERT_EQ(results().size(), 1u);
  EXPECT_EQ(results()[0], nlohmann::json({{"ok", true}, {"data", nlohmann::json::object()}}));
  size_t runner_calls = runner_.requests().size();
  EXPECT_GT(runner_calls, 0u);
  // Stored before it was posted, then the routes were synced.
  EXPECT_EQ(control_plane_.lines().back(), "GET /api/v1/delegate/routes");
  EXPECT_EQ(gateway_.count("PUT /routes"), 1u);

  // A restarted delegate: a new store over the same file, the same task
  // handed out again.
  auto store = openStore();
  TaskDispatcher restarted(control_plane_client_, *tasks_, *routes_, *store, keeper_, limits_);
  restarted.runTask(deleteTask("t-1"));
  ASSERT_EQ(results().size(), 2u);
  EXPECT_EQ(results()[1], results()[0]);
  EXPECT_EQ(runner_.requests().size(), runner_calls);  // nothing repeated
  // No event was posted for the repeat: only the result.
  auto lines = control_plane_.lines();
  EXPECT_EQ(std::count(lines.begin(), lines.end(), "POST /api/v1/delegate/tasks/t-1/result"), 2);
}

TEST_F(TaskDispatcherTest, AnUnreadableTaskGetsAFailedResultNamingTheField) {
  auto store = openStore();
  TaskDispatcher dispatcher(control_plane_client_, *tasks_, *routes_, *store, keeper_, limits_);
  nlohmann::json task = deleteTask("t-9");
  task["kind"] = "resize";
  dispatcher.runTask(task);
  ASSERT_EQ(results().size(), 1u);
  EXPECT_EQ(results()[0]["ok"], false);
  EXPECT_EQ(results()[0]["error"].get<std::string>().rfind(
                "the delegate cannot carry out this task: kind: this delegate does not know", 0),
            0u)
      << results()[0];
  EXPECT_TRUE(runner_.requests().empty());
  // A task without an id cannot be answered at all.
  dispatcher.runTask({{"kind", "start"}});
  EXPECT_EQ(results().size(), 1u);
}

TEST_F(TaskDispatcherTest, WorkersRunTasksAtOnceAndTakeEachIdOnce) {
  // Each runner call takes a while: three tasks at once overlap.
  runner_.setDelayMs(150);
  auto store = openStore();
  TaskDispatcher dispatcher(control_plane_client_, *tasks_, *routes_, *store, keeper_, limits_);
  dispatcher.start();
  EXPECT_TRUE(dispatcher.submit(deleteTask("t-a")));
  EXPECT_FALSE(dispatcher.submit(deleteTask("t-a")));  // handed out again while here
  EXPECT_TRUE(dispatcher.submit(deleteTask("t-b")));
  EXPECT_TRUE(dispatcher.submit(deleteTask("t-c")));
  EXPECT_TRUE(dispatcher.drain(10'000));
  dispatcher.join();
  EXPECT_EQ(results().size(), 3u);
  EXPECT_GE(runner_.mostInFlight(), 2);
  EXPECT_FALSE(dispatcher.submit(deleteTask("t-d")));  // drained: no more tasks
}

}  // namespace
}  // namespace spacegate
