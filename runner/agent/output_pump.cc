// The reader polls the pipe and a wake-up pipe, so stop() never has to
// close a descriptor another thread is blocked in. A line longer than
// kMaxLineLength is cut into several, so one endless line cannot grow the
// partial-line buffer without bound.
#include "runner/agent/output_pump.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace spacegate {

namespace {

constexpr size_t kMaxLineLength = 16 * 1024;
constexpr size_t kRecentLines = 20;

void closeFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

OutputPump::~OutputPump() {
  stop();
  closeFd(write_fd_);
}

bool OutputPump::open(std::string& error) {
  int output[2];
  int wake[2];
  if (::pipe2(output, O_CLOEXEC) != 0) {
    error = std::string("pipe: ") + std::strerror(errno);
    return false;
  }
  if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    error = std::string("pipe: ") + std::strerror(errno);
    ::close(output[0]);
    ::close(output[1]);
    return false;
  }
  read_fd_ = output[0];
  write_fd_ = output[1];
  wake_read_fd_ = wake[0];
  wake_write_fd_ = wake[1];
  thread_ = std::thread([this] { readLoop(); });
  return true;
}

void OutputPump::closeWriteEnd() {
  closeFd(write_fd_);
}

bool OutputPump::waitForEnd(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mutex_);
  return ended_changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                 [this] { return ended_; });
}

void OutputPump::stop() {
  if (!thread_.joinable()) return;
  char byte = 1;
  ssize_t ignored = ::write(wake_write_fd_, &byte, 1);
  (void)ignored;
  thread_.join();
  closeFd(read_fd_);
  closeFd(wake_read_fd_);
  closeFd(wake_write_fd_);
}

std::string OutputPump::recentOutput(size_t lines) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string text;
  size_t start = recent_.size() > lines ? recent_.size() - lines : 0;
  for (size_t i = start; i < recent_.size(); ++i) text += recent_[i] + "\n";
  if (!partial_.empty()) text += partial_ + "\n";
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

void OutputPump::emitLine(std::string_view line) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    recent_.emplace_back(line);
    if (recent_.size() > kRecentLines) recent_.pop_front();
  }
  log_.output(source_, line);
}

void OutputPump::readLoop() {
  char buffer[16 * 1024];
  bool stopping = false;
  int reads_after_stop = 0;
  while (true) {
    pollfd entries[2] = {{read_fd_, POLLIN, 0}, {wake_read_fd_, POLLIN, 0}};
    // Once asked to stop, take only what is already in the pipe.
    int ready = ::poll(entries, stopping ? 1 : 2, stopping ? 0 : -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) break;
    if (!stopping && (entries[1].revents & POLLIN)) stopping = true;
    // A writer that never pauses must not hold stop() up.
    if (stopping && (ready == 0 || ++reads_after_stop > 64)) break;
    if (!(entries[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    ssize_t got = ::read(read_fd_, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // every writer has closed the pipe
    std::string_view data(buffer, static_cast<size_t>(got));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      partial_.append(data);
    }
    while (true) {
      std::string line;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        size_t newline = partial_.find('\n');
        if (newline == std::string::npos && partial_.size() < kMaxLineLength) break;
        size_t cut = newline == std::string::npos ? kMaxLineLength : newline;
        line = partial_.substr(0, cut);
        partial_.erase(0, newline == std::string::npos ? cut : cut + 1);
      }
      emitLine(line);
    }
  }
  std::string rest;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    rest.swap(partial_);
  }
  if (!rest.empty()) emitLine(rest);
  std::lock_guard<std::mutex> lock(mutex_);
  ended_ = true;
  ended_changed_.notify_all();
}

}  // namespace spacegate
