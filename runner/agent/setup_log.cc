// The bound leaves room for the one "dropped" line, so the log never grows
// past max_bytes even with it.
#include "runner/agent/setup_log.h"

#include <algorithm>
#include <vector>

#include "common/log.h"

namespace spacegate {

namespace {

constexpr std::string_view kFullNote =
    " setup log reached its size limit; further lines are dropped\n";

}  // namespace

void SetupLog::appendLine(std::string_view prefix, std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::string time = formatWallClockNow();
  size_t length = time.size() + 1 + prefix.size() + line.size() + 1;
  size_t reserve = time.size() + kFullNote.size();
  if (full_) return;
  if (text_.size() + length + reserve > max_bytes_) {
    full_ = true;
    if (text_.size() + reserve <= max_bytes_) text_.append(time).append(kFullNote);
    return;
  }
  text_.append(time).append(" ").append(prefix).append(line).append("\n");
}

void SetupLog::note(std::string_view text) {
  output("", text);
}

void SetupLog::output(std::string_view source, std::string_view text) {
  std::string prefix = source.empty() ? std::string() : "[" + std::string(source) + "] ";
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    while (true) {
      size_t newline = text.find('\n');
      appendLine(prefix, text.substr(0, newline));
      if (newline == std::string_view::npos) break;
      text.remove_prefix(newline + 1);
    }
  }
  notifyWatchers();
}

std::string SetupLog::read(size_t offset, size_t max_bytes) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (offset >= text_.size()) return {};
  return text_.substr(offset, max_bytes);
}

size_t SetupLog::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return text_.size();
}

std::string SetupLog::tail(size_t max_bytes) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (text_.size() <= max_bytes) return text_;
  size_t start = text_.size() - max_bytes;
  size_t newline = text_.find('\n', start);
  if (newline != std::string::npos && newline + 1 < text_.size()) start = newline + 1;
  return text_.substr(start);
}

uint64_t SetupLog::generation() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return generation_;
}

void SetupLog::clear() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    text_.clear();
    text_.shrink_to_fit();
    full_ = false;
    ++generation_;
  }
  notifyWatchers();
}

SetupLog::WatchId SetupLog::watch(std::function<void()> on_change) {
  std::lock_guard<std::mutex> lock(mutex_);
  WatchId id = next_watch_id_++;
  watchers_[id] = std::make_shared<std::function<void()>>(std::move(on_change));
  return id;
}

void SetupLog::unwatch(WatchId id) {
  std::lock_guard<std::mutex> lock(mutex_);
  watchers_.erase(id);
}

void SetupLog::notifyWatchers() {
  std::vector<std::shared_ptr<std::function<void()>>> callbacks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    callbacks.reserve(watchers_.size());
    for (const auto& [id, callback] : watchers_) callbacks.push_back(callback);
  }
  // Outside the lock: a watcher reads the log, and may unwatch itself.
  for (const auto& callback : callbacks) (*callback)();
}

}  // namespace spacegate
