#include "delegate/finished_task_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/log.h"

namespace spacegate {

namespace {

int64_t systemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool writeAll(int fd, const std::string& text) {
  size_t written = 0;
  while (written < text.size()) {
    ssize_t result = ::write(fd, text.data() + written, text.size() - written);
    if (result < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    written += static_cast<size_t>(result);
  }
  return true;
}

}  // namespace

bool writeFileAtomically(const std::string& path, const std::string& text, std::string& error) {
  std::filesystem::path target(path);
  std::string temp = path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = temp + ": " + std::strerror(errno);
    return false;
  }
  if (!writeAll(fd, text) || ::fsync(fd) != 0) {
    error = temp + ": " + std::strerror(errno);
    ::close(fd);
    ::unlink(temp.c_str());
    return false;
  }
  ::close(fd);
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    error = path + ": " + std::strerror(errno);
    ::unlink(temp.c_str());
    return false;
  }
  std::string folder = target.parent_path().empty() ? "." : target.parent_path().string();
  int folder_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (folder_fd >= 0) {
    ::fsync(folder_fd);
    ::close(folder_fd);
  }
  return true;
}

FinishedTaskStore::FinishedTaskStore(std::string path, uint64_t ttl_ms, size_t limit)
    : path_(std::move(path)), ttl_ms_(ttl_ms), limit_(limit), now_ms_(systemNowMs) {}

bool FinishedTaskStore::load(std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.clear();
  std::filesystem::path folder = std::filesystem::path(path_).parent_path();
  if (!folder.empty()) {
    std::error_code failure;
    std::filesystem::create_directories(folder, failure);
    if (failure) {
      error = folder.string() + ": " + failure.message();
      return false;
    }
  }
  std::ifstream stream(path_);
  if (!stream) return true;  // nothing finished yet
  std::stringstream contents;
  contents << stream.rdbuf();
  nlohmann::json document = nlohmann::json::parse(contents.str(), nullptr, false);
  bool valid = document.is_object() && document.contains("tasks") && document["tasks"].is_object();
  if (valid) {
    for (const auto& [id, value] : document["tasks"].items()) {
      if (!value.is_object() || !value.contains("result") || !value.contains("finished_at_ms") ||
          !value["finished_at_ms"].is_number_integer()) {
        valid = false;
        break;
      }
      Entry entry;
      entry.finished_at_ms = value["finished_at_ms"].get<int64_t>();
      entry.kind = value.value("kind", "");
      entry.result = value["result"];
      entries_[id] = std::move(entry);
    }
  }
  if (!valid) {
    entries_.clear();
    std::string aside = path_ + ".corrupt-" + std::to_string(now_ms_());
    std::error_code failure;
    std::filesystem::rename(path_, aside, failure);
    logEvent(LogLevel::kWarning,
             "state file is not the delegate's JSON; moved aside, starting empty")
        .with("state_file", path_)
        .with("moved_to",
              failure ? std::string("(could not move: ") + failure.message() + ")" : aside)
        .emit();
    return true;
  }
  size_t before = entries_.size();
  pruneLocked(now_ms_());
  if (entries_.size() != before) {
    std::string ignored;
    writeLocked(ignored);
  }
  return true;
}

bool FinishedTaskStore::find(const std::string& task_id, nlohmann::json& result) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = entries_.find(task_id);
  if (found == entries_.end()) return false;
  if (now_ms_() - found->second.finished_at_ms > static_cast<int64_t>(ttl_ms_)) return false;
  result = found->second.result;
  return true;
}

bool FinishedTaskStore::record(const std::string& task_id, const std::string& kind,
                               const nlohmann::json& result, std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t now = now_ms_();
  entries_[task_id] = Entry{now, kind, result};
  pruneLocked(now);
  return writeLocked(error);
}

size_t FinishedTaskStore::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

void FinishedTaskStore::pruneLocked(int64_t now) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (now - it->second.finished_at_ms > static_cast<int64_t>(ttl_ms_)) {
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  if (entries_.size() <= limit_) return;
  std::vector<std::pair<int64_t, std::string>> by_age;
  by_age.reserve(entries_.size());
  for (const auto& [id, entry] : entries_) by_age.emplace_back(entry.finished_at_ms, id);
  std::sort(by_age.begin(), by_age.end());
  for (size_t index = 0; entries_.size() > limit_; ++index) entries_.erase(by_age[index].second);
}

bool FinishedTaskStore::writeLocked(std::string& error) {
  nlohmann::json tasks = nlohmann::json::object();
  for (const auto& [id, entry] : entries_) {
    tasks[id] = {
        {"finished_at_ms", entry.finished_at_ms}, {"kind", entry.kind}, {"result", entry.result}};
  }
  nlohmann::json document = {{"tasks", std::move(tasks)}};
  return writeFileAtomically(
      path_, document.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", error);
}

}  // namespace spacegate
