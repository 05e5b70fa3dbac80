// Structured error/event log: one JSON object a line on stderr. Every line is
// written with a single write(2) so lines from several worker threads never
// interleave.
#pragma once

#include <string>
#include <string_view>

#include "common/json_writer.h"

namespace spacegate {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

class Log {
 public:
  static void setLevel(LogLevel level) { level_ = level; }
  static bool parseLevel(std::string_view text, LogLevel& level);
  static bool enabled(LogLevel level) { return level >= level_; }

  // Starts a line; add fields through the returned writer, then call emit().
  class Line {
   public:
    Line(LogLevel level, std::string_view message);
    JsonWriter& fields() { return writer_; }
    template <typename T>
    Line& with(std::string_view key, const T& value) {
      writer_.field(key, value);
      return *this;
    }
    // Writes the line if its level is enabled.
    void emit();

   private:
    LogLevel level_;
    std::string text_;
    JsonWriter writer_;
  };

 private:
  static inline LogLevel level_ = LogLevel::kInfo;
};

// Convenience for the common case: `logEvent(LogLevel::kInfo, "listening").with(...).emit();`
inline Log::Line logEvent(LogLevel level, std::string_view message) {
  return Log::Line(level, message);
}

// Current wall-clock time as an RFC 3339 string with milliseconds, UTC.
std::string formatWallClockNow();

}  // namespace spacegate
