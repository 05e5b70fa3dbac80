#include "gitspace_progress.h"

#include <algorithm>

namespace spacegate {

namespace {

struct Milestone {
  const char* event_type;
  const char* label;
};

// In the order a start goes through them (docs/control-plane.md, events).
// `running` is reached by the state change, which the caller confirms.
constexpr Milestone kMilestoneList[GitspaceProgress::kMilestones] = {
    {"gitspace_created", "created"},
    {"infra_provisioning_started", "provisioning started"},
    {"infra_provisioning_completed", "provisioning completed"},
    {"infra_gateway_route_completed", "gateway route"},
    {"agent_gitspace_creation_started", "agent setup started"},
    {"agent_gitspace_creation_completed", "agent setup completed"},
    {"ide_routes_completed", "IDE routes"},
    {"", "running"},
};

constexpr int kBarWidth = 16;

}  // namespace

std::string printableText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    unsigned char byte = static_cast<unsigned char>(c);
    out += (byte < 0x20 || byte == 0x7f) ? ' ' : c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string fitColumns(std::string_view text, size_t columns) {
  size_t count = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) continue;  // continuation byte
    if (count + 1 == columns) {
      // One column left: it is the last character only if nothing follows.
      size_t next = i + 1;
      while (next < text.size() && (static_cast<unsigned char>(text[next]) & 0xC0) == 0x80) ++next;
      if (next < text.size()) return std::string(text.substr(0, i)) + "\u2026";
    }
    ++count;
  }
  return std::string(text);
}

GitspaceProgress::GitspaceProgress(std::FILE* out, bool terminal, int columns)
    : out_(out), terminal_(terminal), columns_(std::max(columns, 20)) {}

int GitspaceProgress::milestoneOf(std::string_view event_type) {
  for (int i = 0; i < kMilestones; ++i) {
    if (!event_type.empty() && event_type == kMilestoneList[i].event_type) return i + 1;
  }
  return 0;
}

const char* GitspaceProgress::milestoneLabel(int milestone) {
  if (milestone < 1 || milestone > kMilestones) return "";
  return kMilestoneList[milestone - 1].label;
}

void GitspaceProgress::reach(int milestone, std::string_view detail) {
  if (milestone < 1 || milestone > kMilestones || milestone <= reached_) return;
  reached_ = milestone;
  label_ = milestoneLabel(milestone);
  detail_ = printableText(detail);
  if (detail_ == label_) detail_.clear();
  if (terminal_) {
    last_log_.clear();
    redraw();
    return;
  }
  std::fprintf(out_, "[%d/%d] %s%s%s\n", reached_, kMilestones, label_.c_str(),
               detail_.empty() ? "" : ": ", detail_.c_str());
  std::fflush(out_);
}

// "2024-05-01T12:00:00.000Z text" -> "text": the agent stamps its setup log
// lines, and the one redrawn line has no room for the stamp.
static std::string_view withoutTimestamp(std::string_view line) {
  if (line.size() < 21 || line[4] != '-' || line[7] != '-' || line[10] != 'T') return line;
  size_t end = line.find(' ');
  if (end == std::string_view::npos || line[end - 1] != 'Z') return line;
  return line.substr(end + 1);
}

void GitspaceProgress::logLine(std::string_view line) {
  std::string clean = printableText(terminal_ ? withoutTimestamp(line) : line);
  if (terminal_) {
    if (clean.empty()) return;
    last_log_ = clean;
    redraw();
    return;
  }
  std::fprintf(out_, "      | %s\n", clean.c_str());
  std::fflush(out_);
}

void GitspaceProgress::note(std::string_view text) {
  std::string clean = printableText(text);
  if (terminal_) {
    // Above the bar: clear the bar's line, write the note, draw the bar again.
    std::fprintf(out_, "\r\033[K%s\n", fitColumns(clean, columns_ - 1).c_str());
    drawn_ = false;
    if (reached_ > 0) redraw();
    std::fflush(out_);
    return;
  }
  std::fprintf(out_, "      %s\n", clean.c_str());
  std::fflush(out_);
}

void GitspaceProgress::redraw() {
  int filled = reached_ * kBarWidth / kMilestones;
  std::string line = "[" + std::string(filled, '#') + std::string(kBarWidth - filled, '.') + "] " +
                     std::to_string(reached_) + "/" + std::to_string(kMilestones) + " " + label_;
  // One line has room for one detail: the latest log line says more about
  // a setup in progress than the message that started it.
  if (!last_log_.empty()) {
    line += " | " + last_log_;
  } else if (!detail_.empty()) {
    line += ": " + detail_;
  }
  std::fprintf(out_, "\r\033[K%s", fitColumns(line, columns_ - 1).c_str());
  std::fflush(out_);
  drawn_ = true;
}

void GitspaceProgress::finish() {
  if (terminal_ && drawn_) {
    std::fprintf(out_, "\n");
    std::fflush(out_);
  }
  drawn_ = false;
}

}  // namespace spacegate
