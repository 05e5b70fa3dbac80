// TaskQueue: the live tasks (queued or leased) in memory, in creation order,
// and the rules of leases: a task is handed to one delegate for a lease
// period; events from that delegate extend it; its result ends it; when the
// lease runs out the task goes back to the queue (or, after max attempts,
// fails). A Gitspace has at most one task leased at a time: a task queued
// behind a leased one of the same Gitspace waits until that one finishes or
// its lease runs out. Which task of a Gitspace is current (whose result moves
// its state) is the caller's business; it tells expire() through a callback,
// and a task that is not current is dropped when its lease runs out.
//
// Not thread-safe: ControlPlane calls it under its mutex. Persisting the
// changes is the caller's job too (every method returns what changed).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "control/server/control_records.h"

namespace spacegate {

class TaskQueue {
 public:
  // At start: the live tasks from the database and the highest seq used.
  void restore(std::vector<TaskRecord> live, int64_t last_seq);

  TaskRecord* find(const std::string& id);
  const std::map<std::string, TaskRecord>& tasks() const { return tasks_; }
  size_t size() const { return tasks_.size(); }

  // Adds `task` as queued, after every other; returns the stored record.
  TaskRecord& enqueue(TaskRecord task, int64_t now_ms);
  // Ends a live task as failed with `error` (superseded, cancelled); returns
  // the final record. The task must exist.
  TaskRecord drop(const std::string& id, std::string error, int64_t now_ms);

  // True when a task of `gitspace` is leased.
  bool hasLeased(const std::string& gitspace) const;
  // The oldest queued task that `accept` takes, skipping Gitspaces that have
  // a leased task; nullptr when none.
  TaskRecord* next(const std::function<bool(const TaskRecord&)>& accept);
  // Hands a queued task to `delegate`: leased until now + lease, attempt + 1.
  void lease(TaskRecord& task, const std::string& delegate, int64_t now_ms, int64_t lease_ms);

  enum class Claim {
    kLeased,    // leased to this delegate
    kUnknown,   // not a live task
    kNotYours,  // live, but not leased to this delegate
  };
  Claim claim(const std::string& id, const std::string& delegate) const;
  // Extends a lease the delegate holds (an event arrived). False otherwise.
  bool extend(const std::string& id, const std::string& delegate, int64_t now_ms, int64_t lease_ms);
  // Ends a task the caller has claimed: done with `result`, or failed with
  // `error`. Returns the final record.
  TaskRecord finish(const std::string& id, bool ok, std::string result, std::string error,
                    int64_t now_ms);

  struct Expired {
    TaskRecord task;          // as it is now (queued again, or failed)
    bool gave_up = false;     // current, and out of attempts: failed
    bool superseded = false;  // not current: failed, dropped
  };
  // Leases that ran out by now: current tasks go back to the queue unless
  // they were handed out max_attempts times (then they fail); the others are
  // dropped.
  std::vector<Expired> expire(int64_t now_ms, int max_attempts,
                              const std::function<bool(const TaskRecord&)>& is_current);

 private:
  std::map<std::string, TaskRecord> tasks_;  // by id
  std::map<int64_t, std::string> order_;     // seq -> id
  int64_t last_seq_ = 0;
};

}  // namespace spacegate
