// Access log: one JSON object a line per request, with the request id that
// the upstream saw in X-Request-Id. Each worker formats into its own buffer
// and flushes it with one write(2) when it passes 32 KiB or every 200 ms, so
// logging costs no lock and no syscall per request.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace spacegate {

// The destination shared by all workers: a file opened O_APPEND, or stdout.
class AccessLogSink {
 public:
  // `target` is a path, "stdout", or "off". Returns false with a reason.
  bool open(const std::string& target, std::string& error);
  ~AccessLogSink();
  bool enabled() const { return fd_ >= 0; }
  void write(const std::string& lines) const;

 private:
  int fd_ = -1;
  bool owned_ = false;
};

struct AccessLogEntry {
  std::string_view request_id;
  unsigned worker = 0;
  std::string_view client;
  std::string_view method;
  std::string_view host;
  std::string_view path;
  std::string_view protocol;  // "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"
  int status = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  std::string_view route;
  std::string_view upstream;
  double upstream_time = -1;  // seconds, -1 when no upstream answered
  double total_time = 0;      // seconds
  std::string_view error;     // why the gateway answered itself, if it did
};

class AccessLogBuffer {
 public:
  AccessLogBuffer(uv_loop_t* loop, const AccessLogSink& sink);
  void append(const AccessLogEntry& entry);
  void flush();
  void close();  // flushes and closes the timer

 private:
  static void onTimer(uv_timer_t* timer);
  const AccessLogSink& sink_;
  std::string pending_;
  uv_timer_t timer_;
  bool timer_armed_ = false;
  bool closed_ = false;
};

}  // namespace spacegate
