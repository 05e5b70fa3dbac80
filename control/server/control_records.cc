#include "control/server/control_records.h"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace spacegate {

const char* taskKindName(TaskKind kind) {
  switch (kind) {
    case TaskKind::kStart: return "start";
    case TaskKind::kStop: return "stop";
    case TaskKind::kReset: return "reset";
    case TaskKind::kDelete: return "delete";
  }
  return "unknown";
}

bool parseTaskKind(std::string_view text, TaskKind& kind) {
  for (TaskKind candidate :
       {TaskKind::kStart, TaskKind::kStop, TaskKind::kReset, TaskKind::kDelete}) {
    if (text == taskKindName(candidate)) {
      kind = candidate;
      return true;
    }
  }
  return false;
}

const char* taskStateName(TaskState state) {
  switch (state) {
    case TaskState::kQueued: return "queued";
    case TaskState::kLeased: return "leased";
    case TaskState::kDone: return "done";
    case TaskState::kFailed: return "failed";
  }
  return "unknown";
}

bool parseTaskState(std::string_view text, TaskState& state) {
  for (TaskState candidate :
       {TaskState::kQueued, TaskState::kLeased, TaskState::kDone, TaskState::kFailed}) {
    if (text == taskStateName(candidate)) {
      state = candidate;
      return true;
    }
  }
  return false;
}

int64_t unixNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string formatUnixMs(int64_t unix_ms) {
  time_t seconds = static_cast<time_t>(unix_ms / 1000);
  struct tm parts {};
  gmtime_r(&seconds, &parts);
  char text[64];
  std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900,
                parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return text;
}

}  // namespace spacegate
