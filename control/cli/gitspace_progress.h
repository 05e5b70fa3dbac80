// GitspaceProgress: what `spacegatectl gitspace create|start|reset --wait`
// shows on stderr while a Gitspace starts. The start is a fixed list of
// milestones, each reached by one event type; the setup log's lines are
// shown while the agent sets up. On a terminal one line is redrawn in place
// (`\r`) with a bar, the milestone and the latest log line; otherwise every
// milestone and log line is a line of its own, for logs and scripts:
//
//   [1/8] created
//   [2/8] provisioning started: machine m-1a2b from pool default
//         | Cloning into 'sample'...
//   [8/8] running
//
// Text from the server (log lines come from the Gitspace's own commands)
// is cleaned of control characters before it reaches a terminal.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace spacegate {

class GitspaceProgress {
 public:
  // `columns`: the terminal's width (redraws are cut to fit).
  GitspaceProgress(std::FILE* out, bool terminal, int columns);

  static constexpr int kMilestones = 8;
  // The milestone (1..kMilestones) an event type reaches, or 0.
  static int milestoneOf(std::string_view event_type);
  static const char* milestoneLabel(int milestone);

  // A milestone was reached; `detail` is the event's message. Milestones
  // that arrive late (or again) do not move the bar back.
  void reach(int milestone, std::string_view detail = {});
  // A line of the setup log.
  void logLine(std::string_view line);
  // Anything else worth a line of its own (a state change, a failure).
  void note(std::string_view text);
  // Ends the redrawn line (terminal); idempotent.
  void finish();

 private:
  void redraw();

  std::FILE* out_;
  bool terminal_;
  int columns_;
  int reached_ = 0;
  std::string label_;     // the milestone shown
  std::string detail_;    // the message of its event
  std::string last_log_;  // the latest log line (terminal; shown instead of detail_)
  bool drawn_ = false;    // a redrawn line is on screen
};

// Replaces control characters (escape sequences included) with spaces and
// drops trailing whitespace: server text must not drive the terminal.
std::string printableText(std::string_view text);
// Cuts `text` to `columns` characters (UTF-8 aware), with "…" when cut.
std::string fitColumns(std::string_view text, size_t columns);

}  // namespace spacegate
