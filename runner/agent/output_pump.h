// OutputPump: carries one child process's stdout and stderr into the setup
// log. The child gets the write end of a pipe; a thread reads the other end
// and appends each line, prefixed with the pump's source ("git",
// "postStartCommand.db", "ide"). A command may leave a background process
// holding the pipe after it exits (`server &` in a postStartCommand), so the
// pump does not wait for end-of-file to say the command is done: the caller
// waits a moment for it (waitForEnd) and moves on, and the pump keeps
// reading until the Gitspace's processes are stopped. The last lines are
// kept apart too, for an error message ("IDE exited: exit 1: <tail>").
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "runner/agent/setup_log.h"

namespace spacegate {

class OutputPump {
 public:
  OutputPump(SetupLog& log, std::string source) : log_(log), source_(std::move(source)) {}
  ~OutputPump();
  OutputPump(const OutputPump&) = delete;
  OutputPump& operator=(const OutputPump&) = delete;

  // Makes the pipe and starts the reading thread. False with a reason.
  bool open(std::string& error);
  // The descriptor for ChildSpec::stdout_fd and stderr_fd (close-on-exec;
  // the spawn dup's it into the child).
  int writeFd() const { return write_fd_; }
  // Once the child is spawned: only the child (and what it starts) keeps
  // the pipe open, so end-of-file means they have all closed it.
  void closeWriteEnd();
  // True once every writer has closed the pipe (within `timeout_ms`).
  bool waitForEnd(int timeout_ms);
  // Reads what is already there, then stops; idempotent.
  void stop();
  // Up to the last `lines` lines read (a partial last line included).
  std::string recentOutput(size_t lines = 10) const;

 private:
  void readLoop();
  void emitLine(std::string_view line);

  SetupLog& log_;
  std::string source_;
  int read_fd_ = -1;
  int write_fd_ = -1;
  int wake_read_fd_ = -1;
  int wake_write_fd_ = -1;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable ended_changed_;
  bool ended_ = false;
  std::string partial_;
  std::deque<std::string> recent_;
};

}  // namespace spacegate
