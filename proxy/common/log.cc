#include "common/log.h"

#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>

namespace spacegate {
namespace {

const char* levelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "info";
}

}  // namespace

bool Log::parseLevel(std::string_view text, LogLevel& level) {
  for (LogLevel candidate :
       {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
    if (text == levelName(candidate)) {
      level = candidate;
      return true;
    }
  }
  return false;
}

std::string formatWallClockNow() {
  struct timeval now;
  gettimeofday(&now, nullptr);
  struct tm parts;
  gmtime_r(&now.tv_sec, &parts);
  char text[40];
  size_t length = strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &parts);
  std::snprintf(text + length, sizeof text - length, ".%03dZ",
                static_cast<int>(now.tv_usec / 1000));
  return text;
}

Log::Line::Line(LogLevel level, std::string_view message) : level_(level), writer_(text_) {
  writer_.field("time", formatWallClockNow()).field("level", levelName(level));
  writer_.field("msg", message);
}

void Log::Line::emit() {
  if (!enabled(level_)) return;
  writer_.finish();
  text_.push_back('\n');
  // One write per line: atomic with respect to other threads' lines.
  ssize_t ignored = ::write(STDERR_FILENO, text_.data(), text_.size());
  (void)ignored;
}

}  // namespace spacegate
