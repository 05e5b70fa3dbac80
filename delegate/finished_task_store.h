// FinishedTaskStore: the results of the tasks this delegate finished, by
// task id, in one JSON file (`state_file`), so that a delegate restarted
// after a task finished, but before the control plane took its result,
// answers that task again with the same result instead of doing it twice.
// Every change rewrites the file atomically (temp file, fsync, rename, fsync
// of the folder); entries older than the TTL, and the oldest beyond the
// limit, are dropped on the way.
//
//   {"tasks": {"t-1": {"finished_at_ms": 1700000000000, "kind": "start",
//                      "result": {"ok": true, "data": {...}}}}}
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

namespace spacegate {

class FinishedTaskStore {
 public:
  FinishedTaskStore(std::string path, uint64_t ttl_ms, size_t limit);

  // Reads the file; a missing file is an empty store. A file that is not
  // the store's JSON is moved aside (`<path>.corrupt-<ms>`) with a log line
  // and the store starts empty. False only when the folder cannot be made.
  bool load(std::string& error);

  // The stored result of `task_id`, if it finished within the TTL.
  bool find(const std::string& task_id, nlohmann::json& result) const;

  // Records (or replaces) a result and writes the file. False with a reason
  // when the file cannot be written (the entry is kept in memory).
  bool record(const std::string& task_id, const std::string& kind, const nlohmann::json& result,
              std::string& error);

  size_t size() const;
  // For tests: the wall clock in ms.
  void setClock(std::function<int64_t()> now_ms) { now_ms_ = std::move(now_ms); }

 private:
  struct Entry {
    int64_t finished_at_ms = 0;
    std::string kind;
    nlohmann::json result;
  };
  void pruneLocked(int64_t now);
  bool writeLocked(std::string& error);

  std::string path_;
  uint64_t ttl_ms_;
  size_t limit_;
  std::function<int64_t()> now_ms_;
  mutable std::mutex mutex_;
  std::map<std::string, Entry> entries_;
};

// Writes `text` to `path` atomically: a temp file beside it, fsync, rename,
// fsync of the folder. Mode 0600.
bool writeFileAtomically(const std::string& path, const std::string& text, std::string& error);

}  // namespace spacegate
