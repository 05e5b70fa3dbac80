#include "log/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/json_writer.h"
#include "common/log.h"

namespace spacegate {

namespace {
constexpr size_t kFlushBytes = 32 * 1024;
constexpr uint64_t kFlushIntervalMs = 200;
}  // namespace

bool AccessLogSink::open(const std::string& target, std::string& error) {
  if (target == "off") return true;
  if (target == "stdout") {
    fd_ = STDOUT_FILENO;
    return true;
  }
  fd_ = ::open(target.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd_ < 0) {
    error = target + ": " + std::strerror(errno);
    return false;
  }
  owned_ = true;
  return true;
}

AccessLogSink::~AccessLogSink() {
  if (owned_ && fd_ >= 0) ::close(fd_);
}

void AccessLogSink::write(const std::string& lines) const {
  size_t done = 0;
  while (done < lines.size()) {
    ssize_t written = ::write(fd_, lines.data() + done, lines.size() - done);
    if (written < 0) {
      if (errno == EINTR) continue;
      return;  // a full disk must not stop the proxy
    }
    done += static_cast<size_t>(written);
  }
}

AccessLogBuffer::AccessLogBuffer(uv_loop_t* loop, const AccessLogSink& sink) : sink_(sink) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(&timer_));
}

void AccessLogBuffer::append(const AccessLogEntry& entry) {
  if (!sink_.enabled() || closed_) return;
  JsonWriter line(pending_);
  line.field("time", formatWallClockNow())
      .field("request_id", entry.request_id)
      .field("worker", entry.worker)
      .field("client", entry.client)
      .field("method", entry.method)
      .field("host", entry.host)
      .field("path", entry.path);
  if (!entry.protocol.empty()) line.field("protocol", entry.protocol);
  line.field("status", entry.status)
      .field("bytes_in", entry.bytes_in)
      .field("bytes_out", entry.bytes_out)
      .field("route", entry.route)
      .field("upstream", entry.upstream);
  if (entry.upstream_time >= 0) {
    line.field("upstream_time", entry.upstream_time);
  } else {
    line.field("upstream_time", -1.0);
  }
  line.field("total_time", entry.total_time);
  if (!entry.error.empty()) line.field("error", entry.error);
  line.finish();
  pending_.push_back('\n');
  if (pending_.size() >= kFlushBytes) {
    flush();
  } else if (!timer_armed_) {
    timer_armed_ = true;
    uv_timer_start(&timer_, &AccessLogBuffer::onTimer, kFlushIntervalMs, 0);
  }
}

void AccessLogBuffer::flush() {
  if (pending_.empty()) return;
  sink_.write(pending_);
  pending_.clear();
}

void AccessLogBuffer::onTimer(uv_timer_t* timer) {
  auto* self = static_cast<AccessLogBuffer*>(timer->data);
  self->timer_armed_ = false;
  self->flush();
}

void AccessLogBuffer::close() {
  if (closed_) return;
  flush();
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

}  // namespace spacegate
