// TaskQueue: leases go to one delegate at a time, oldest first; events extend
// them; a lease that runs out puts the task back (and after max attempts
// fails it); a Gitspace never has two tasks leased at once, so a task queued
// behind a leased one waits; superseded tasks are dropped, not handed out
// again.
#include "control/server/task_queue.h"

#include <gtest/gtest.h>

namespace spacegate {
namespace {

TaskRecord makeTask(const std::string& id, const std::string& gitspace,
                    TaskKind kind = TaskKind::kStart) {
  TaskRecord task;
  task.id = id;
  task.gitspace = gitspace;
  task.kind = kind;
  return task;
}

auto anyTask = [](const TaskRecord&) { return true; };
auto allCurrent = [](const TaskRecord&) { return true; };

TEST(TaskQueueTest, HandsOutOldestFirstAndLeasesToOneDelegate) {
  TaskQueue queue;
  queue.enqueue(makeTask("t-1", "gs-a"), 1000);
  queue.enqueue(makeTask("t-2", "gs-b"), 1001);
  TaskRecord* first = queue.next(anyTask);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->id, "t-1");
  queue.lease(*first, "dg-1", 2000, 60'000);
  EXPECT_EQ(first->state, TaskState::kLeased);
  EXPECT_EQ(first->attempt, 1);
  EXPECT_EQ(first->lease_until_ms, 62'000);
  EXPECT_EQ(queue.claim("t-1", "dg-1"), TaskQueue::Claim::kLeased);
  EXPECT_EQ(queue.claim("t-1", "dg-2"), TaskQueue::Claim::kNotYours);
  EXPECT_EQ(queue.claim("t-2", "dg-1"), TaskQueue::Claim::kNotYours);  // queued, not leased
  EXPECT_EQ(queue.claim("t-9", "dg-1"), TaskQueue::Claim::kUnknown);
  TaskRecord* second = queue.next(anyTask);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->id, "t-2");
}

TEST(TaskQueueTest, AcceptFilterSkipsTasks) {
  TaskQueue queue;
  queue.enqueue(makeTask("t-1", "gs-a"), 1);
  queue.enqueue(makeTask("t-2", "gs-b", TaskKind::kStop), 2);
  TaskRecord* task =
      queue.next([](const TaskRecord& candidate) { return candidate.kind == TaskKind::kStop; });
  ASSERT_NE(task, nullptr);
  EXPECT_EQ(task->id, "t-2");
  EXPECT_EQ(queue.next([](const TaskRecord&) { return false; }), nullptr);
}

TEST(TaskQueueTest, OneLeasedTaskPerGitspace) {
  TaskQueue queue;
  queue.enqueue(makeTask("t-1", "gs-a"), 1);
  queue.lease(*queue.next(anyTask), "dg-1", 10, 1000);
  // A delete queued behind the leased start waits for it.
  queue.enqueue(makeTask("t-2", "gs-a", TaskKind::kDelete), 20);
  EXPECT_TRUE(queue.hasLeased("gs-a"));
  EXPECT_EQ(queue.next(anyTask), nullptr);
  TaskRecord finished = queue.finish("t-1", true, "{}", "", 30);
  EXPECT_EQ(finished.state, TaskState::kDone);
  EXPECT_FALSE(queue.hasLeased("gs-a"));
  TaskRecord* next = queue.next(anyTask);
  ASSERT_NE(next, nullptr);
  EXPECT_EQ(next->id, "t-2");
}

TEST(TaskQueueTest, EventsExtendTheLeaseOnlyForItsHolder) {
  TaskQueue queue;
  queue.enqueue(makeTask("t-1", "gs-a"), 1);
  queue.lease(*queue.next(anyTask), "dg-1", 1000, 5000);
  EXPECT_FALSE(queue.extend("t-1", "dg-2", 3000, 5000));
  EXPECT_EQ(queue.find("t-1")->lease_until_ms, 6000);
  EXPECT_TRUE(queue.extend("t-1", "dg-1", 3000, 5000));
  EXPECT_EQ(queue.find("t-1")->lease_until_ms, 8000);
  // Not expired at 7000 thanks to the extension.
  EXPECT_TRUE(queue.expire(7000, 5, allCurrent).empty());
  EXPECT_EQ(queue.expire(8000, 5, allCurrent).size(), 1u);
}

TEST(TaskQueueTest, ExpiredLeaseIsHandedOutAgainWithTheNextAttempt) {
  TaskQueue queue;
  queue.enqueue(makeTask("t-1", "gs-a"), 1);
  queue.lease(*queue.next(anyTask), "dg-1", 1000, 5000);
  auto expired = queue.expire(6000, 5, allCurrent);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_FALSE(expired[0].gave_up);
  EXPECT_FALSE(expired[0].superseded);
  EXPECT_EQ(expired[0].task.state, TaskState::kQueued);
  // The old holder's result is refused now.
  EXPECT_EQ(queue.claim("t-1", "dg-1"), TaskQueue::Claim::kNotYours);
  TaskRecord* again = queue.next(anyTask);
  ASSERT_NE(again, nullptr);
  queue.lease(*again, "dg-2", 7000, 5000);
  EXPECT_EQ(again->attempt, 2);
  EXPECT_EQ(queue.claim("t-1", "dg-2"), TaskQueue::Claim::kLeased);
}

TEST(TaskQueueTest, GivesUpAfterMaxAttempts) {
  TaskQueue queue;
  queue.enqueue(makeTask("t-1", "gs-a"), 1);
  int64_t now = 0;
  for (int attempt = 1; attempt <= 5; ++attempt) {
    TaskRecord* task = queue.next(anyTask);
    ASSERT_NE(task, nullptr) << attempt;
    queue.lease(*task, "dg-1", now, 100);
    now += 200;
    auto expired = queue.expire(now, 5, allCurrent);
    ASSERT_EQ(expired.size(), 1u);
    EXPECT_EQ(expired[0].gave_up, attempt == 5) << attempt;
  }
  EXPECT_EQ(queue.find("t-1"), nullptr);
  EXPECT_EQ(queue.size(), 0u);
}

TEST(TaskQueueTest, SupersededLeasedTaskIsDroppedWhenItsLeaseRunsOut) {
  TaskQueue queue;
  queue.enqueue(makeTask("t-1", "gs-a"), 1);
  queue.lease(*queue.next(anyTask), "dg-1", 0, 100);
  queue.enqueue(makeTask("t-2", "gs-a", TaskKind::kDelete), 50);
  auto expired = queue.expire(200, 5, [](const TaskRecord& task) { return task.id == "t-2"; });
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_TRUE(expired[0].superseded);
  EXPECT_EQ(expired[0].task.state, TaskState::kFailed);
  EXPECT_EQ(queue.find("t-1"), nullptr);
  TaskRecord* next = queue.next(anyTask);
  ASSERT_NE(next, nullptr);
  EXPECT_EQ(next->id, "t-2");
}

TEST(TaskQueueTest, DropRemovesAQueuedTask) {
  TaskQueue queue;
  queue.enqueue(makeTask("t-1", "gs-a"), 1);
  TaskRecord dropped = queue.drop("t-1", "superseded by a stop task", 5);
  EXPECT_EQ(dropped.state, TaskState::kFailed);
  EXPECT_EQ(dropped.error, "superseded by a stop task");
  EXPECT_EQ(queue.next(anyTask), nullptr);
}

TEST(TaskQueueTest, RestoreKeepsOrderAndLeases) {
  std::vector<TaskRecord> live;
  TaskRecord leased = makeTask("t-1", "gs-a");
  leased.seq = 7;
  leased.state = TaskState::kLeased;
  leased.delegate = "dg-1";
  leased.lease_until_ms = 1000;
  leased.attempt = 2;
  TaskRecord queued = makeTask("t-2", "gs-b");
  queued.seq = 3;
  TaskRecord finished = makeTask("t-3", "gs-c");
  finished.seq = 9;
  finished.state = TaskState::kDone;
  live = {leased, queued, finished};
  TaskQueue queue;
  queue.restore(live, 9);
  EXPECT_EQ(queue.size(), 2u);  // the finished one is not live
  EXPECT_EQ(queue.claim("t-1", "dg-1"), TaskQueue::Claim::kLeased);
  // A restarted control plane hands out a lease that ran out while it was down.
  auto expired = queue.expire(2000, 5, allCurrent);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].task.id, "t-1");
  TaskRecord* next = queue.next(anyTask);
  ASSERT_NE(next, nullptr);
  EXPECT_EQ(next->id, "t-2");  // seq 3 before seq 7
  TaskRecord& added = queue.enqueue(makeTask("t-4", "gs-d"), 3000);
  EXPECT_EQ(added.seq, 10);
}

}  // namespace
}  // namespace spacegate
