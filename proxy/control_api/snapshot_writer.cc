#include "control_api/snapshot_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "route/route_json.h"

namespace spacegate {

SnapshotWriter::SnapshotWriter(std::string path) : path_(std::move(path)) {
  thread_ = std::thread([this] { run(); });
}

SnapshotWriter::~SnapshotWriter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void SnapshotWriter::schedule(RouteTableSnapshot table) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_ = std::move(table);
  }
  wake_.notify_all();
}

void SnapshotWriter::flush() {
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [this] { return !pending_ && !writing_; });
}

std::string SnapshotWriter::serialise(const RouteTable& table) {
  nlohmann::json routes = nlohmann::json::array();
  for (const RoutePtr& route : table.sortedRoutes()) routes.push_back(routeToJson(*route));
  nlohmann::json document = {{"version", table.version()}, {"routes", std::move(routes)}};
  return document.dump(1) + "\n";
}

bool SnapshotWriter::writeDurably(const std::string& path, const std::string& contents,
                                  std::string& error) {
  std::string temporary = path + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = temporary + ": " + std::strerror(errno);
    return false;
  }
  size_t written = 0;
  while (written < contents.size()) {
    ssize_t result = ::write(fd, contents.data() + written, contents.size() - written);
    if (result < 0) {
      if (errno == EINTR) continue;
      error = temporary + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
    written += static_cast<size_t>(result);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    error = temporary + ": " + std::strerror(errno);
    return false;
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    error = path + ": " + std::strerror(errno);
    return false;
  }
  std::string folder = path.substr(0, path.find_last_of('/') == std::string::npos
                                          ? 1
                                          : std::max<size_t>(1, path.find_last_of('/')));
  if (path.find('/') == std::string::npos) folder = ".";
  int folder_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (folder_fd >= 0) {
    ::fsync(folder_fd);
    ::close(folder_fd);
  }
  return true;
}

void SnapshotWriter::run() {
  while (true) {
    RouteTableSnapshot table;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || pending_; });
      if (!pending_ && stopping_) return;
      table = std::move(pending_);
      pending_.reset();
      writing_ = true;
    }
    std::string error;
    if (writeDurably(path_, serialise(*table), error)) {
      persisted_version_.store(table->version(), std::memory_order_release);
    } else {
      logEvent(LogLevel::kError, "cannot write the route snapshot").with("error", error).emit();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      writing_ = false;
    }
    done_.notify_all();
  }
}

}  // namespace spacegate
