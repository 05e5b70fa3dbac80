#include "gitspace_commands.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>

#include "config/gateway_config.h"
#include "gitspace_progress.h"
#include "text_table.h"

namespace spacegate {

namespace {

using Json = nlohmann::json;

std::string gitspacePath(const std::string& id) {
  return "/api/v1/gitspaces/" + id;
}

// A name for a Gitspace from its repository: "https://host/org/My.Repo.git"
// gives "my-repo".
std::string nameFromRepository(std::string repository) {
  while (!repository.empty() && repository.back() == '/') repository.pop_back();
  size_t slash = repository.find_last_of("/:");
  std::string base = slash == std::string::npos ? repository : repository.substr(slash + 1);
  if (base.ends_with(".git")) base.resize(base.size() - 4);
  std::string name;
  for (char c : base) {
    unsigned char byte = static_cast<unsigned char>(c);
    if (std::isalnum(byte)) {
      name += static_cast<char>(std::tolower(byte));
    } else if (!name.empty() && name.back() != '-') {
      name += '-';
    }
  }
  while (!name.empty() && name.back() == '-') name.pop_back();
  if (name.size() > 40) name.resize(40);
  return name.empty() ? "gitspace" : name;
}

// A time from the control plane (RFC 3339 text, or Unix milliseconds) as
// Unix milliseconds; -1 when it is neither.
int64_t timestampMs(const Json& value) {
  if (value.is_number_integer()) {
    int64_t number = value.get<int64_t>();
    return number < 100'000'000'000 ? number * 1000 : number;  // seconds or milliseconds
  }
  if (!value.is_string()) return -1;
  const std::string text = value.get<std::string>();
  std::tm parts{};
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &parts.tm_year, &parts.tm_mon,
                  &parts.tm_mday, &parts.tm_hour, &parts.tm_min, &parts.tm_sec, &consumed) != 6) {
    return -1;
  }
  parts.tm_year -= 1900;
  parts.tm_mon -= 1;
  int64_t ms = static_cast<int64_t>(::timegm(&parts)) * 1000;
  size_t at = static_cast<size_t>(consumed);
  if (at < text.size() && text[at] == '.') {
    int64_t scale = 100;
    for (++at; at < text.size() && std::isdigit(static_cast<unsigned char>(text[at])); ++at) {
      ms += (text[at] - '0') * scale;
      scale /= 10;
    }
  }
  if (at < text.size() && (text[at] == '+' || text[at] == '-')) {
    int hours = 0;
    int minutes = 0;
    if (std::sscanf(text.c_str() + at + 1, "%2d:%2d", &hours, &minutes) == 2) {
      int64_t offset = (hours * 60 + minutes) * 60'000;
      ms += text[at] == '+' ? -offset : offset;
    }
  }
  return ms;
}

int terminalColumns() {
  winsize size{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

// A field of a JSON object, or null (also when `object` is not an object:
// a reply is the server's to get wrong, not a reason to crash).
Json fieldOf(const Json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto found = object.find(key);
  return found == object.end() ? Json() : *found;
}

std::string stringField(const Json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_string()) return "";
  return object[key].get<std::string>();
}

// The state a state_changed event moved to, if it says.
std::string stateOfEvent(const GitspaceStreamEvent& event) {
  for (const char* key : {"to", "state", "new_state"}) {
    std::string state = stringField(event.data, key);
    if (!state.empty()) return state;
  }
  return "";
}

// States in which a Gitspace waits for its user, not for a task.
bool restingState(const std::string& state) {
  return state == "running" || state == "stopped" || state == "error" || state == "deleted";
}

std::string withToken(const std::string& url, const std::string& token) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + "sg_token=" + token;
}

}  // namespace

GitspaceCommands::GitspaceCommands(CLI::App& app, const bool& global_json)
    : global_json_(global_json) {
  gitspace_ = app.add_subcommand("gitspace",
                                 "create, list, open, stop, start, reset, delete "
                                 "Gitspaces through the control plane");
  gitspace_->require_subcommand(1);
  gitspace_->add_option("--control-url", control_.url, "the control plane's API")
      ->envname("SPACEGATE_CONTROL_URL")
      ->capture_default_str();
  gitspace_
      ->add_option("--control-token-file", control_.token_file,
                   "file holding your API token (the admin's: <state_dir>/admin.token)")
      ->envname("SPACEGATE_CONTROL_TOKEN_FILE");
  gitspace_->add_flag("--json", json_, "print the API's JSON");

  auto timeout_option = [this](CLI::App* command) {
    command->add_flag("--wait", wait_, "follow the Gitspace's events until it is done");
    command->add_option("--timeout", timeout_, "how long --wait waits, e.g. 90s, 10m")
        ->capture_default_str();
  };
  auto id_argument = [this](CLI::App* command) {
    command->add_option("id", id_, "Gitspace id (gs-...)")->required();
  };

  create_ = gitspace_->add_subcommand("create", "create a Gitspace and start it");
  create_->add_option("--repo", repository_, "Git repository URL (or a path on the machines)")
      ->required();
  create_->add_option("--name", name_, "name (default: from the repository)");
  create_->add_option("--branch", branch_, "branch (default: the repository's)");
  create_->add_option("--ide", ide_, "jupyter, vscode-web or ssh")
      ->check(CLI::IsMember({"jupyter", "vscode-web", "ssh"}))
      ->capture_default_str();
  create_->add_option("--infra", infra_, "infra config id or name (default: the only one)");
  timeout_option(create_);

  list_ = gitspace_->add_subcommand("list", "list Gitspaces");
  get_ = gitspace_->add_subcommand("get", "show one Gitspace (JSON)");
  id_argument(get_);
  open_ = gitspace_->add_subcommand("open", "print the IDE's URL with a fresh access token");
  id_argument(open_);
  open_->add_flag("--path", path_form_,
                  "the path form (http://DOMAIN:PORT/gs/ID/), for browsers without wildcard DNS");
  start_ = gitspace_->add_subcommand("start", "start a stopped (or failed) Gitspace");
  id_argument(start_);
  timeout_option(start_);
  stop_ = gitspace_->add_subcommand("stop", "stop a Gitspace (its disk is kept)");
  id_argument(stop_);
  timeout_option(stop_);
  reset_ = gitspace_->add_subcommand("reset", "throw the machine away and start afresh");
  id_argument(reset_);
  timeout_option(reset_);
  delete_ = gitspace_->add_subcommand("delete", "delete a Gitspace and its machine");
  id_argument(delete_);
  timeout_option(delete_);
  wait_command_ = gitspace_->add_subcommand(
      "wait", "wait until a Gitspace is running (or stopped, or deleted) without acting on it");
  id_argument(wait_command_);
  wait_command_->add_option("--for", wait_for_, "running, stopped or deleted")
      ->check(CLI::IsMember({"running", "stopped", "deleted"}))
      ->capture_default_str();
  wait_command_->add_option("--timeout", timeout_, "how long to wait, e.g. 90s, 10m")
      ->capture_default_str();
  logs_ = gitspace_->add_subcommand("logs", "the setup log and state changes");
  id_argument(logs_);
  logs_->add_flag("-f,--follow", follow_, "keep following until the Gitspace is deleted");
  ssh_ = gitspace_->add_subcommand("ssh", "print the ssh command for a Gitspace");
  id_argument(ssh_);
  ssh_->add_option("--user", ssh_user_,
                   "the user to log in as (a devcontainer's remoteUser, else root)")
      ->capture_default_str();

  // `gitspace list --json --control-url X`: options of `gitspace` after the
  // command too.
  for (CLI::App* command :
       {create_, list_, get_, open_, start_, stop_, reset_, delete_, wait_command_, logs_, ssh_}) {
    command->fallthrough();
  }
}

bool GitspaceCommands::waitTimeout(uint64_t& milliseconds) const {
  if (!parseDuration(timeout_, milliseconds) || milliseconds == 0) {
    std::fprintf(stderr, "spacegatectl: --timeout: a duration such as 90s or 10m, got \"%s\"\n",
                 timeout_.c_str());
    return false;
  }
  return true;
}

int GitspaceCommands::run() {
  json_ = json_ || global_json_;
  uint64_t timeout_ms = 0;
  if ((wait_ || wait_command_->parsed()) && !waitTimeout(timeout_ms)) return kExitUsage;
  std::string error;
  if (!api_.open(control_, error)) {
    std::fprintf(stderr, "spacegatectl: %s\n", error.c_str());
    return kExitUsage;
  }
  if (create_->parsed()) return runCreate();
  if (list_->parsed()) return runList();
  if (get_->parsed()) return runGet();
  if (open_->parsed()) return runOpen();
  if (start_->parsed()) return runAction("start");
  if (stop_->parsed()) return runAction("stop");
  if (reset_->parsed()) return runAction("reset");
  if (delete_->parsed()) return runDelete();
  if (wait_command_->parsed()) return runWait();
  if (logs_->parsed()) return runLogs();
  if (ssh_->parsed()) return runSsh();
  return kExitUsage;
}

int GitspaceCommands::runCreate() {
  Json body = {{"name", name_.empty() ? nameFromRepository(repository_) : name_},
               {"repository", repository_},
               {"ide", ide_}};
  if (!branch_.empty()) body["branch"] = branch_;
  if (!infra_.empty()) body["infra"] = infra_;
  Json gitspace;
  if (int code = api_.call("POST", "/api/v1/gitspaces", body, gitspace); code != kExitOk) {
    return code;
  }
  std::string id = stringField(gitspace, "id");
  if (!wait_) {
    if (json_) {
      std::printf("%s\n", gitspace.dump(2).c_str());
    } else {
      std::printf("%s\n", id.c_str());
    }
    return kExitOk;
  }
  // A new Gitspace: every event of its stream is news.
  return waitFor(id, Goal::kRunning, nullptr);
}

int GitspaceCommands::runList() {
  Json reply;
  if (int code = api_.call("GET", "/api/v1/gitspaces", nullptr, reply); code != kExitOk) {
    return code;
  }
  if (json_) {
    std::printf("%s\n", reply.dump(2).c_str());
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "NAME", "STATE", "IDE", "REPOSITORY", "URL"}};
  const Json empty = Json::array();
  const Json& list = reply.is_object() && reply.contains("gitspaces") ? reply["gitspaces"] : empty;
  for (const Json& gitspace : list) {
    if (!gitspace.is_object()) continue;
    std::string url = stringField(gitspace, "url");
    rows.push_back({printableText(jsonText(fieldOf(gitspace, "id"))),
                    printableText(jsonText(fieldOf(gitspace, "name"))),
                    printableText(jsonText(fieldOf(gitspace, "state"))),
                    printableText(jsonText(fieldOf(gitspace, "ide"))),
                    printableText(jsonText(fieldOf(gitspace, "repository"))),
                    url.empty() ? "-" : printableText(url)});
  }
  printTable(rows);
  return kExitOk;
}

int GitspaceCommands::runGet() {
  Json gitspace;
  if (int code = api_.call("GET", gitspacePath(id_), nullptr, gitspace); code != kExitOk) {
    return code;
  }
  std::printf("%s\n", gitspace.dump(2).c_str());
  return kExitOk;
}

int GitspaceCommands::runOpen() {
  Json gitspace;
  if (path_form_) {
    if (int code = api_.call("GET", gitspacePath(id_), nullptr, gitspace); code != kExitOk) {
      return code;
    }
    if (stringField(gitspace, "path_url").empty()) {
      std::fprintf(stderr, "spacegatectl: %s has no path_url (state %s)\n", id_.c_str(),
                   jsonText(fieldOf(gitspace, "state")).c_str());
      return kExitRefused;
    }
  }
  Json token;
  if (int code = api_.call("POST", gitspacePath(id_) + "/token", nullptr, token); code != kExitOk) {
    return code;
  }
  if (json_) {
    std::printf("%s\n", token.dump(2).c_str());
    return kExitOk;
  }
  if (path_form_) {
    std::printf("%s\n",
                withToken(stringField(gitspace, "path_url"), stringField(token, "token")).c_str());
  } else {
    std::printf("%s\n", stringField(token, "url").c_str());
  }
  return kExitOk;
}

int GitspaceCommands::runAction(const std::string& action) {
  Json gitspace;
  if (int code = api_.call("POST", gitspacePath(id_) + "/actions/" + action, nullptr, gitspace);
      code != kExitOk) {
    return code;
  }
  if (!wait_) {
    if (json_) {
      std::printf("%s\n", gitspace.dump(2).c_str());
    } else {
      std::printf("%s %s\n", id_.c_str(), jsonText(fieldOf(gitspace, "state")).c_str());
    }
    return kExitOk;
  }
  return waitFor(id_, action == "stop" ? Goal::kStopped : Goal::kRunning,
                 fieldOf(gitspace, "state_since"));
}

int GitspaceCommands::runDelete() {
  Json gitspace;
  if (int code = api_.call("DELETE", gitspacePath(id_), nullptr, gitspace); code != kExitOk) {
    return code;
  }
  if (!wait_) {
    std::string state = stringField(gitspace, "state");
    std::printf("%s %s\n", id_.c_str(), state.empty() ? "cleaning" : state.c_str());
    return kExitOk;
  }
  return waitFor(id_, Goal::kDeleted, fieldOf(gitspace, "state_since"));
}

int GitspaceCommands::runWait() {
  Json gitspace;
  if (int code = api_.call("GET", gitspacePath(id_), nullptr, gitspace); code != kExitOk) {
    return code;
  }
  std::string state = stringField(gitspace, "state");
  if (state == wait_for_) {
    if (state == "running") return printRunning(gitspace);
    std::printf("%s %s\n", id_.c_str(), state.c_str());
    return kExitOk;
  }
  if (restingState(state)) {
    std::string reason = stringField(gitspace, "state_reason");
    std::fprintf(stderr, "spacegatectl: %s is in state %s%s%s, not on its way to %s\n", id_.c_str(),
                 state.c_str(), reason.empty() ? "" : ": ", printableText(reason).c_str(),
                 wait_for_.c_str());
    return kExitRefused;
  }
  Goal goal = wait_for_ == "running" ? Goal::kRunning
                                     : (wait_for_ == "stopped" ? Goal::kStopped : Goal::kDeleted);
  // What happened before the current state is history.
  return waitFor(id_, goal, fieldOf(gitspace, "state_since"));
}

int GitspaceCommands::waitFor(const std::string& id, Goal goal, const Json& since) {
  uint64_t timeout_ms = 0;
  if (!waitTimeout(timeout_ms)) return kExitUsage;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const char* goal_state =
      goal == Goal::kRunning ? "running" : (goal == Goal::kStopped ? "stopped" : "deleted");
  int64_t since_ms = since.is_null() ? -1 : timestampMs(since);
  bool terminal = ::isatty(STDERR_FILENO) == 1;
  GitspaceProgress progress(stderr, terminal, terminalColumns());
  bool starting = goal == Goal::kRunning;

  int exit_code = -1;  // not decided yet
  Json final_gitspace;
  std::string last_state;
  // The Gitspace's state now decides (an event may be history replayed from
  // the stream: the record is the truth). True when the wait is over.
  auto decide = [&]() {
    Json gitspace;
    int code = api_.call("GET", gitspacePath(id), nullptr, gitspace, /*quiet=*/true);
    if (code != kExitOk) {
      if (goal == Goal::kDeleted && api_.lastStatus() == 404) {
        exit_code = kExitOk;  // gone altogether
      } else {
        progress.finish();
        if (code == kExitRefused) printControlPlaneRefusal(api_.lastStatus(), gitspace);
        exit_code = code;
      }
      return true;
    }
    std::string state = stringField(gitspace, "state");
    if (state == goal_state) {
      final_gitspace = gitspace;
      exit_code = kExitOk;
      return true;
    }
    if (restingState(state)) {
      progress.finish();
      std::string reason = stringField(gitspace, "state_reason");
      std::fprintf(stderr, "spacegatectl: %s is in state %s%s%s\n", id.c_str(), state.c_str(),
                   reason.empty() ? "" : ": ", printableText(reason).c_str());
      exit_code = kExitRefused;
      return true;
    }
    return false;
  };

  auto on_event = [&](const GitspaceStreamEvent& event) {
    if (since_ms >= 0) {
      int64_t at = timestampMs(Json(event.at));
      if (at >= 0 && at < since_ms) return true;  // before this action: history
    }
    if (starting) {
      if (int milestone = GitspaceProgress::milestoneOf(event.type); milestone > 0) {
        progress.reach(milestone, event.message);
      }
    }
    if (event.type == "agent_setup_log") {
      if (starting) progress.logLine(event.message);
      return true;
    }
    if (event.type == "state_changed" || event.type == "deleted") {
      std::string state = event.type == "deleted" ? "deleted" : stateOfEvent(event);
      if (!starting && !state.empty() && state != last_state) {
        std::string reason = stringField(event.data, "reason");
        progress.note("state: " + state + (reason.empty() ? "" : ": " + reason));
      }
      last_state = state;
      return !decide();
    }
    // (An `error` event repeats the reason the end of the wait prints.)
    if (event.type.ends_with("_failed")) {
      progress.note(event.type + (event.message.empty() ? "" : ": " + event.message));
    }
    return true;
  };

  FollowEnd end = api_.follow(id, 0, deadline, 0, on_event);
  if (exit_code < 0) {
    switch (end) {
      case FollowEnd::kEnded:
      case FollowEnd::kStopped:
        // The stream ended (the Gitspace is gone): the record says how.
        if (!decide()) {
          progress.finish();
          std::fprintf(stderr, "spacegatectl: the event stream of %s ended while it was %s\n",
                       id.c_str(), last_state.empty() ? "busy" : last_state.c_str());
          exit_code = kExitRefused;
        }
        break;
      case FollowEnd::kDeadline:
      case FollowEnd::kQuiet:
        // One last look: it may have got there as time ran out.
        if (!decide()) {
          progress.finish();
          std::fprintf(stderr,
                       "spacegatectl: %s is not %s after %s; follow it with: spacegatectl "
                       "gitspace logs %s --follow\n",
                       id.c_str(), goal_state, timeout_.c_str(), id.c_str());
          exit_code = kExitRefused;
        }
        break;
      case FollowEnd::kRefused: exit_code = kExitRefused; break;
      case FollowEnd::kUnreachable: exit_code = kExitUnreachable; break;
    }
  }
  if (exit_code != kExitOk) {
    progress.finish();
    return exit_code;
  }
  if (goal != Goal::kRunning) {
    progress.finish();
    std::printf("%s %s\n", id.c_str(), goal_state);
    return kExitOk;
  }
  progress.reach(GitspaceProgress::kMilestones);
  progress.finish();
  return printRunning(final_gitspace);
}

int GitspaceCommands::printRunning(const Json& gitspace) {
  std::string id = stringField(gitspace, "id");
  Json token;
  if (int code = api_.call("POST", gitspacePath(id) + "/token", nullptr, token); code != kExitOk) {
    return code;
  }
  if (json_) {
    std::printf("%s\n", Json{{"gitspace", gitspace}, {"token", token}}.dump(2).c_str());
    return kExitOk;
  }
  std::printf("%s is running\n", id.c_str());
  std::printf("  url:   %s\n", stringField(gitspace, "url").c_str());
  std::printf("  open:  %s\n", stringField(token, "url").c_str());
  std::string path_url = stringField(gitspace, "path_url");
  if (!path_url.empty()) {
    std::printf("  path:  %s\n", withToken(path_url, stringField(token, "token")).c_str());
  }
  return kExitOk;
}

int GitspaceCommands::runLogs() {
  Json gitspace;
  if (int code = api_.call("GET", gitspacePath(id_), nullptr, gitspace); code != kExitOk) {
    return code;
  }
  auto on_event = [](const GitspaceStreamEvent& event) {
    if (event.type == "agent_setup_log") {
      std::printf("%s\n", printableText(event.message).c_str());
    } else if (event.type == "state_changed") {
      std::string state = stateOfEvent(event);
      std::string reason = stringField(event.data, "reason");
      std::string line = "==> " + (state.empty() ? event.message : state);
      if (!state.empty() && !reason.empty()) line += ": " + reason;
      std::printf("%s\n", printableText(line).c_str());
    } else {
      return true;
    }
    std::fflush(stdout);
    return true;
  };
  // Without --follow: what is stored, which the stream sends at once; it
  // is over when the stream goes quiet.
  constexpr int64_t kStoredEventsQuietMs = 2'000;
  auto forever = std::chrono::steady_clock::time_point::max();
  FollowEnd end = api_.follow(id_, 0, forever, follow_ ? 0 : kStoredEventsQuietMs, on_event);
  switch (end) {
    case FollowEnd::kRefused: return kExitRefused;
    case FollowEnd::kUnreachable: return kExitUnreachable;
    default: return kExitOk;
  }
}

int GitspaceCommands::runSsh() {
  Json gitspace;
  if (int code = api_.call("GET", gitspacePath(id_), nullptr, gitspace); code != kExitOk) {
    return code;
  }
  std::string token_file = control_.token_file;
  std::error_code ignored;
  std::filesystem::path absolute = std::filesystem::absolute(token_file, ignored);
  if (!ignored) token_file = absolute.string();
  // ssh runs the ProxyCommand with its own PATH and working folder: name
  // this very binary by its absolute path.
  std::string self = "spacegatectl";
  std::filesystem::path executable = std::filesystem::read_symlink("/proc/self/exe", ignored);
  if (!ignored) self = executable.string();
  // The machine's sshd port; ssh-proxy asks for it again (the port may move
  // with a new machine), so -p only names the host key's port for ssh.
  Json ssh_port = fieldOf(gitspace, "ssh_port");
  int port = ssh_port.is_number_integer() ? ssh_port.get<int>() : 22;
  // The command quotes nothing: ids, URLs and paths with a quote in them
  // are not worth supporting in a printed line.
  std::printf(
      "ssh -o ProxyCommand='%s ssh-proxy %s --control-url %s --control-token-file %s' "
      "-o HostKeyAlias=%s -p %d %s@%s\n",
      self.c_str(), id_.c_str(), api_.url().c_str(), token_file.c_str(), id_.c_str(), port,
      ssh_user_.c_str(), id_.c_str());
  if (!ssh_port.is_number_integer()) {
    std::fprintf(stderr,
                 "spacegatectl: %s has no ssh port yet (it is %s): the command works once it "
                 "runs\n",
                 id_.c_str(), jsonText(fieldOf(gitspace, "state")).c_str());
  }
  if (stringField(gitspace, "ide") != "ssh") {
    std::fprintf(stderr, "spacegatectl: %s was created with ide %s; sshd runs for ide ssh\n",
                 id_.c_str(), jsonText(fieldOf(gitspace, "ide")).c_str());
  }
  return kExitOk;
}

}  // namespace spacegate
