// SetupLog: the Gitspace's setup log, what `GET /v1/gitspace/logs` serves.
// Every setup step, and every line a lifecycle command or the IDE prints,
// becomes one timestamped line. It is bounded (kMaxSetupLogSize): past the
// bound further lines are dropped, with one line saying so, so a chatty IDE
// cannot eat the machine's memory. Bytes are only ever appended (until
// clear()), so a byte offset names the same byte for as long as a reader
// cares, which is what `?offset=N` and a follower rely on. Thread-safe;
// watchers are called (outside the lock) after every append and on
// notifyWatchers(), which the agent calls when the state changes, so a
// follower can send what is new and end when setup is over.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace spacegate {

constexpr size_t kMaxSetupLogSize = 8u << 20;

class SetupLog {
 public:
  explicit SetupLog(size_t max_bytes = kMaxSetupLogSize) : max_bytes_(max_bytes) {}

  // "<RFC 3339 time> <text>\n"; a text with newlines becomes several lines.
  void note(std::string_view text);
  // As note(), each line prefixed with "[source] " (process output).
  void output(std::string_view source, std::string_view text);

  // Up to `max_bytes` from `offset` (nothing when offset >= size()).
  std::string read(size_t offset, size_t max_bytes = SIZE_MAX) const;
  size_t size() const;
  // The last `max_bytes`, cut at a line start when one is in reach.
  std::string tail(size_t max_bytes) const;
  // Changes on clear(): an offset taken before it means nothing after it.
  uint64_t generation() const;
  // Empties the log (a deleted Gitspace; a new spec).
  void clear();

  using WatchId = uint64_t;
  WatchId watch(std::function<void()> on_change);
  void unwatch(WatchId id);
  void notifyWatchers();

 private:
  void appendLine(std::string_view prefix, std::string_view line);

  const size_t max_bytes_;
  mutable std::mutex mutex_;
  std::string text_;
  bool full_ = false;
  uint64_t generation_ = 0;
  WatchId next_watch_id_ = 1;
  std::map<WatchId, std::shared_ptr<std::function<void()>>> watchers_;
};

}  // namespace spacegate
