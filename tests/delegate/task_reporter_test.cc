// TaskReporter: events go in batches, in order; an idle task posts a
// `progress` heartbeat (which extends its lease); a 409 means the lease is
// lost; one event the control plane refuses does not cost the others; the
// result is retried while the control plane cannot answer.
#include "delegate/task_reporter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "tests/delegate/fake_service.h"

namespace spacegate {
namespace {

using testing::FakeService;
using testing::jsonAnswer;

DelegateLimits limits() {
  DelegateLimits limits;
  limits.event_batch_size = 3;
  limits.event_batch_delay_ms = 50;
  limits.event_heartbeat_ms = 100;
  limits.retry_initial_ms = 5;
  limits.retry_max_ms = 20;
  return limits;
}

class TaskReporterTest : public ::testing::Test {
 protected:
  TaskReporterTest()
      : client_(ServiceEndpoint{service_.url(), "", "", "dt-0123456789abcdef"}, 2000) {
    service_.setAnswer([this](const ServiceRequest& request) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (request.path.ends_with("/events")) {
        nlohmann::json body = nlohmann::json::parse(request.body);
        batches_.push_back(body["events"]);
        if (events_status_ != 200) return ServiceResponse::error(events_status_, "events refused");
        for (const auto& event : body["events"]) {
          if (event["message"] == "refuse me") {
            return ServiceResponse::error(400, "bad message", "events[0].message");
          }
        }
        return jsonAnswer(200, {{"lease_until_ms", 1}});
      }
      if (request.path.ends_with("/result")) {
        results_.push_back(nlohmann::json::parse(request.body));
        if (result_failures_ > 0) {
          --result_failures_;
          return ServiceResponse::error(503, "busy");
        }
        return jsonAnswer(200, nlohmann::json::object());
      }
      return ServiceResponse::error(404, "no");
    });
  }

  std::vector<std::string> acceptedMessages() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> messages;
    for (const auto& batch : batches_) {
      bool refused = false;
      for (const auto& event : batch) refused |= event["message"] == "refuse me";
      if (refused && batch.size() > 1) continue;  // refused whole, sent again one by one
      for (const auto& event : batch) {
        if (event["message"] != "refuse me") messages.push_back(event["message"]);
      }
    }
    return messages;
  }

  FakeService service_;
  ControlPlaneClient client_;
  std::mutex mutex_;
  std::vector<nlohmann::json> batches_;
  std::vector<nlohmann::json> results_;
  int events_status_ = 200;
  int result_failures_ = 0;
};

TEST_F(TaskReporterTest, BatchesInOrder) {
  TaskReporter reporter(client_, "t-1", limits());
  for (int i = 0; i < 7; ++i) reporter.emit("agent_setup_log", "line " + std::to_string(i));
  EXPECT_TRUE(batches_.empty());  // nothing is posted by emit itself
  ASSERT_TRUE(reporter.flush());
  ASSERT_EQ(batches_.size(), 3u);  // 3 + 3 + 1
  EXPECT_EQ(batches_[0].size(), 3u);
  EXPECT_EQ(batches_[2][0]["message"], "line 6");
  EXPECT_EQ(reporter.postedEvents(), 7u);
  EXPECT_EQ(service_.requests()[0].path, "/api/v1/delegate/tasks/t-1/events");
}

TEST_F(TaskReporterTest, TheKeeperPostsWaitingEventsAndHeartbeats) {
  auto reporter = std::make_shared<TaskReporter>(client_, "t-1", limits());
  reporter->setActivity("waiting for machine m-1");
  LeaseKeeper keeper(10);
  keeper.add(reporter);
  keeper.start();
  reporter->emit("infra_provisioning_started", "asking the runner");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  keeper.stop();
  std::lock_guard<std::mutex> lock(mutex_);
  ASSERT_GE(batches_.size(), 3u);
  EXPECT_EQ(batches_[0][0]["type"], "infra_provisioning_started");
  // Then heartbeats about every 100 ms, saying what the task waits for.
  EXPECT_EQ(batches_[1][0]["type"], "progress");
  EXPECT_EQ(batches_[1][0]["message"], "waiting for machine m-1");
  EXPECT_LE(batches_.size(), 6u);
}

TEST_F(TaskReporterTest, AConflictMeansTheLeaseIsLost) {
  events_status_ = 409;
  TaskReporter reporter(client_, "t-1", limits());
  reporter.emit("progress", "x");
  EXPECT_FALSE(reporter.flush(1000));
  EXPECT_TRUE(reporter.leaseLost());
  reporter.emit("progress", "after");  // dropped
  EXPECT_FALSE(reporter.flush(1000));
  EXPECT_EQ(batches_.size(), 1u);
  // The result is not retried either: no retry changes a 409.
  EXPECT_TRUE(reporter.postResult(TaskResult::success(), 1000));
  EXPECT_TRUE(results_.empty());
}

TEST_F(TaskReporterTest, ARefusedEventDoesNotCostTheOthers) {
  TaskReporter reporter(client_, "t-1", limits());
  reporter.emit("agent_setup_log", "a");
  reporter.emit("agent_setup_log", "refuse me");
  reporter.emit("agent_setup_log", "b");
  reporter.emit("agent_setup_log", "c");
  EXPECT_TRUE(reporter.flush());
  EXPECT_EQ(acceptedMessages(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_FALSE(reporter.leaseLost());
}

TEST_F(TaskReporterTest, ResultIsRetriedAndCleaned) {
  result_failures_ = 2;
  TaskReporter reporter(client_, "t-1", limits());
  reporter.emit("progress", "before the result");
  EXPECT_TRUE(reporter.postResult(TaskResult::failure("agent said:\x1b[31m no\x1b[0m\n"), 2000));
  ASSERT_EQ(results_.size(), 3u);
  EXPECT_EQ(results_[2], nlohmann::json({{"ok", false}, {"error", "agent said: no "}}));
  // Events first, then the result.
  EXPECT_EQ(service_.lines().front(), "POST /api/v1/delegate/tasks/t-1/events");

  // A control plane that stays away: false after the patience.
  events_status_ = 503;
  result_failures_ = 1000;
  TaskReporter later(client_, "t-2", limits());
  EXPECT_FALSE(later.postResult(TaskResult::success(), 100));
}

}  // namespace
}  // namespace spacegate
