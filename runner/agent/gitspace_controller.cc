// Lock order: mutex_ may be taken while an OutputPump's or the SetupLog's
// lock is not held, never the other way round; and nothing that appends to
// the SetupLog runs under mutex_, because appending calls the log's
// watchers (the follow streams), which read the state without the lock.
// The methods the API calls on the server's loop thread never append to the
// log either: that is left to the worker (see LogFollower::begin).
#include "runner/agent/gitspace_controller.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "common/log.h"
#include "runner/agent/ide_server.h"

namespace spacegate {

namespace {

bool isDirectory(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

std::string commandLine(const std::vector<std::string>& argv) {
  std::string text;
  for (const std::string& argument : argv) text += (text.empty() ? "" : " ") + argument;
  return text;
}

}  // namespace

GitspaceController::GitspaceController(AgentConfig config, SetupLog& log,
                                       ControllerTimeouts timeouts)
    : config_(std::move(config)),
      log_(log),
      timeouts_(timeouts),
      state_file_(agentFolder(config_) + "/agent-state.json"),
      processes_(log) {}

GitspaceController::~GitspaceController() {
  shutdown();
}

bool GitspaceController::boot(std::string& error) {
  if (!makeDirectories(config_.disk, 0755, error)) return false;
  std::string folder = agentFolder(config_);
  if (!makeDirectories(folder, 0700, error)) return false;
  ::chmod(folder.c_str(), 0700);
  AgentState loaded;
  bool found = false;
  std::string load_error;
  if (!state_file_.load(loaded, found, load_error)) {
    std::string aside = state_file_.path() + ".corrupt";
    ::rename(state_file_.path().c_str(), aside.c_str());
    logEvent(LogLevel::kError, "agent state unreadable; starting without it")
        .with("error", load_error)
        .with("moved_to", aside)
        .emit();
    loaded = AgentState{};
  }
  if (found && loaded.ide_pid > 0) {
    // The agent ended without stopping its IDE (a crash, SIGKILL): without
    // namespaces that IDE still runs and holds its port.
    if (stopLeftoverGroup(loaded.ide_pid, loaded.ide_start_time, timeouts_.stop_grace_ms)) {
      logEvent(LogLevel::kWarning, "stopped an IDE left by an earlier run")
          .with("pid", loaded.ide_pid)
          .emit();
    }
    loaded.ide_pid = 0;
    loaded.ide_start_time = 0;
  }
  if (found) {
    bool clone_exists =
        loaded.has_spec && loaded.clone_done && isDirectory(workspacePath(config_, loaded.spec));
    GitspaceState before = loaded.state;
    recoverAfterReboot(loaded, clone_exists);
    logEvent(LogLevel::kInfo, "agent state loaded")
        .with("gitspace_id", loaded.gitspace_id)
        .with("state_before", gitspaceStateName(before))
        .with("state", gitspaceStateName(loaded.state))
        .emit();
  }
  if (!config_.gitspace_id.empty()) {
    if (!loaded.gitspace_id.empty() && loaded.gitspace_id != config_.gitspace_id) {
      logEvent(LogLevel::kError, "agent state is for another Gitspace; it is dropped")
          .with("state_gitspace_id", loaded.gitspace_id)
          .with("config_gitspace_id", config_.gitspace_id)
          .emit();
      loaded = AgentState{};
    }
    loaded.gitspace_id = config_.gitspace_id;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    state_ = std::move(loaded);
    state_mirror_.store(state_.state, std::memory_order_release);
    persistLocked();
  }
  worker_ = std::thread([this] { workerLoop(); });
  return true;
}

void GitspaceController::persistLocked() {
  std::string error;
  if (!state_file_.save(state_, error)) {
    logEvent(LogLevel::kError, "agent state not saved").with("error", error).emit();
  }
}

bool GitspaceController::transitionLocked(GitspaceEvent event, const std::string& error) {
  GitspaceState next;
  GitspaceState previous = state_.state;
  if (!nextGitspaceState(previous, event, next)) return false;
  if (event == GitspaceEvent::kDeleted) state_.clearGitspace();
  state_.state = next;
  state_.error = next == GitspaceState::kError ? error : "";
  if (next == GitspaceState::kRunning) state_.step = "running";
  if (next == GitspaceState::kStopped) state_.step = "stopped";
  state_mirror_.store(next, std::memory_order_release);
  persistLocked();
  logEvent(next == GitspaceState::kError ? LogLevel::kWarning : LogLevel::kInfo, "gitspace state")
      .with("gitspace_id", state_.gitspace_id)
      .with("event", gitspaceEventName(event))
      .with("from", gitspaceStateName(previous))
      .with("to", gitspaceStateName(next))
      .with("error", error)
      .emit();
  return true;
}

void GitspaceController::enqueue(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    tasks_.push_back(std::move(task));
  }
  tasks_changed_.notify_all();
}

void GitspaceController::workerLoop() {
  while (true) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      tasks_changed_.wait(lock, [this] { return shutting_down_ || !tasks_.empty(); });
      if (shutting_down_) {
        tasks_.clear();
        break;
      }
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
  stopSession();
  std::lock_guard<std::mutex> lock(mutex_);
  persistLocked();
}

void GitspaceController::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shutting_down_ = true;
    epoch_.fetch_add(1);
  }
  tasks_changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

std::string GitspaceController::gitspaceId() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_.gitspace_id;
}

AgentState GitspaceController::snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_;
}

nlohmann::json GitspaceController::statusJson() const {
  std::lock_guard<std::mutex> lock(mutex_);
  nlohmann::json status = {
      {"gitspace_id", state_.gitspace_id},
      {"state", gitspaceStateName(state_.state)},
      {"error", state_.error},
      {"step", state_.step},
      {"ide", nullptr},
      {"forwarded_ports", state_.forwarded_ports},
      {"repository", state_.has_spec ? state_.spec.repository : ""},
      {"branch", state_.has_spec ? state_.spec.branch : ""},
      {"workspace", state_.has_spec ? workspacePath(config_, state_.spec) : ""},
      {"user", state_.user},
      {"user_warning", state_.user_warning},
      {"image", state_.image},
      {"post_create_done", state_.post_create_done},
  };
  if (state_.has_spec) {
    status["ide"] = {{"kind", ideKindName(state_.spec.ide)},
                     {"port", idePort(state_.spec.ide, config_)},
                     {"protocol", ideProtocol(state_.spec.ide)},
                     {"host", config_.ide_host}};
  }
  return status;
}

GitspaceController::Result GitspaceController::assign(const std::string& gitspace_id,
                                                      std::string& error) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (state_.gitspace_id == gitspace_id) return Result::kUnchanged;
  if (!state_.gitspace_id.empty()) {
    error = "machine is already assigned to another Gitspace";
    return Result::kConflict;
  }
  state_.gitspace_id = gitspace_id;
  persistLocked();
  logEvent(LogLevel::kInfo, "machine assigned").with("gitspace_id", gitspace_id).emit();
  return Result::kDone;
}

GitspaceController::Result GitspaceController::applySpec(const GitspaceSpec& spec,
                                                         std::string& error) {
  uint64_t epoch;
  std::string gitspace_id;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (shutting_down_) {
      error = "the agent is shutting down";
      return Result::kConflict;
    }
    if (state_.gitspace_id.empty()) {
      error = "machine is not assigned to a Gitspace";
      return Result::kConflict;
    }
    if (state_.has_spec) {
      if (canonicalSpecJson(state_.spec) == canonicalSpecJson(spec)) return Result::kUnchanged;
      // The same Gitspace, its owner's SSH keys changed since (the delegate
      // sends the current ones with every start): the keys are taken, the
      // rest stays. An sshd already serving reads the file at each login.
      GitspaceSpec with_keys = state_.spec;
      with_keys.user.ssh_authorized_keys = spec.user.ssh_authorized_keys;
      if (canonicalSpecJson(with_keys) == canonicalSpecJson(spec)) {
        state_.spec = std::move(with_keys);
        persistLocked();
        std::string keys_file = agentFolder(config_) + "/authorized_keys";
        std::string write_error;
        if (spec.ide == IdeKind::kSsh && ::access(keys_file.c_str(), F_OK) == 0 &&
            !writeAuthorizedKeys(state_.spec, config_, write_error)) {
          logEvent(LogLevel::kWarning, "authorized_keys not rewritten")
              .with("error", write_error)
              .emit();
        }
        logEvent(LogLevel::kInfo, "ssh keys updated")
            .with("gitspace_id", state_.gitspace_id)
            .with("keys", static_cast<int64_t>(spec.user.ssh_authorized_keys.size()))
            .emit();
        return Result::kUnchanged;
      }
      error = "a different Gitspace spec is already applied; DELETE /v1/gitspace first";
      return Result::kConflict;
    }
    if (pending_stops_ > 0) {
      error = "a delete is in progress; try again when it has finished";
      return Result::kConflict;
    }
    state_.clearGitspace();
    state_.spec = spec;
    state_.has_spec = true;
    state_.workspace = workspacePath(config_, spec);
    state_.ide = IdeEndpoint{ideKindName(spec.ide), idePort(spec.ide, config_),
                             ideProtocol(spec.ide), config_.ide_host};
    state_.step = "queued";
    if (!transitionLocked(GitspaceEvent::kSpecAccepted)) {
      state_.has_spec = false;
      error = "the Gitspace is not uninitialized";
      return Result::kConflict;
    }
    epoch = epoch_.load();
    gitspace_id = state_.gitspace_id;
  }
  std::string note = "Gitspace " + gitspace_id + ": setting up " + spec.repository +
                     (spec.branch.empty() ? "" : " (branch " + spec.branch + ")") + " with " +
                     ideKindName(spec.ide);
  // The log is empty here: it starts empty, and a delete (the only way from
  // one spec to another) clears it.
  enqueue([this, epoch, note] {
    if (epoch_.load() != epoch) return;
    log_.note(note);
    runSetup(epoch);
  });
  return Result::kAccepted;
}

GitspaceController::Result GitspaceController::start(std::string& error) {
  uint64_t epoch;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (shutting_down_) {
      error = "the agent is shutting down";
      return Result::kConflict;
    }
    if (!state_.has_spec) {
      error = "there is no Gitspace to start; PUT /v1/gitspace first";
      return Result::kConflict;
    }
    if (state_.state == GitspaceState::kRunning || state_.state == GitspaceState::kSettingUp) {
      return Result::kUnchanged;
    }
    if (pending_stops_ > 0) {
      error = "a stop or delete is in progress; try again when it has finished";
      return Result::kConflict;
    }
    if (!transitionLocked(GitspaceEvent::kStartRequested)) {
      error = std::string("cannot start from ") + gitspaceStateName(state_.state);
      return Result::kConflict;
    }
    state_.step = "starting";
    epoch = epoch_.load();
  }
  enqueue([this, epoch] {
    if (epoch_.load() != epoch) return;
    log_.note("starting the Gitspace");
    runSetup(epoch);
  });
  return Result::kAccepted;
}

void GitspaceController::stop(Done done) {
  bool set_up;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    set_up = state_.has_spec && state_.state != GitspaceState::kUninitialized;
    if (set_up) {
      epoch_.fetch_add(1);  // cancels a setup in flight
      ++pending_stops_;
    }
  }
  if (!set_up) {
    done(Result::kConflict, "the Gitspace is not set up (uninitialized)");
    return;
  }
  enqueue([this, done = std::move(done)] {
    log_.note("stopping the Gitspace's processes");
    stopSession();
    bool stopped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --pending_stops_;
      stopped = transitionLocked(GitspaceEvent::kStopRequested);
    }
    log_.note(stopped ? "stopped" : "nothing to stop");
    log_.notifyWatchers();
    done(stopped ? Result::kDone : Result::kConflict,
         stopped ? "" : "the Gitspace is not set up (uninitialized)");
  });
}

void GitspaceController::remove(Done done) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    epoch_.fetch_add(1);
    ++pending_stops_;
  }
  enqueue([this, done = std::move(done)] {
    stopSession();
    AgentState current = snapshot();
    std::string error;
    bool removed = true;
    if (current.has_spec) removed = removeTree(workspacePath(config_, current.spec), error);
    if (removed) removed = removeTree(config_.disk + "/home", error);
    if (removed) {
      std::string keys = agentFolder(config_) + "/authorized_keys";
      ::unlink(keys.c_str());
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --pending_stops_;
      if (removed) {
        transitionLocked(GitspaceEvent::kDeleted);
      } else {
        transitionLocked(GitspaceEvent::kStopRequested);
      }
    }
    if (removed) {
      log_.clear();
    } else {
      log_.note("delete failed: " + error);
      log_.notifyWatchers();
    }
    done(removed ? Result::kDone : Result::kFailed, error);
  });
}

void GitspaceController::setStep(uint64_t epoch, const std::string& step) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (epoch_.load() != epoch) return;
    state_.step = step;
    persistLocked();
  }
  log_.note("step: " + step);
}

void GitspaceController::failSetup(uint64_t epoch, const std::string& error) {
  if (epoch_.load() != epoch) return;  // cancelled: the stop or delete decides
  log_.note("setup failed: " + error);
  stopSession();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (epoch_.load() == epoch) transitionLocked(GitspaceEvent::kFailed, error);
  }
  log_.notifyWatchers();
}

void GitspaceController::runSetup(uint64_t epoch) {
  auto cancelled = [this, epoch] { return epoch_.load() != epoch; };
  if (cancelled()) return;
  AgentState current = snapshot();
  const GitspaceSpec& spec = current.spec;
  GitspaceSetup setup(config_, log_, processes_, cancelled, timeouts_.setup);
  PreparedWorkspace prepared;
  prepared.workspace = workspacePath(config_, spec);
  std::string error;

  if (!current.clone_done || !isDirectory(prepared.workspace)) {
    setStep(epoch, "clone");
    if (!setup.cloneRepository(spec, prepared.workspace, error)) return failSetup(epoch, error);
    std::lock_guard<std::mutex> lock(mutex_);
    if (epoch_.load() != epoch) return;
    state_.clone_done = true;
    persistLocked();
  } else {
    log_.note("the clone " + prepared.workspace + " is kept from an earlier setup");
  }

  setStep(epoch, "devcontainer");
  if (!setup.readDevcontainer(spec, prepared, error)) return failSetup(epoch, error);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (epoch_.load() != epoch) return;
    state_.image = prepared.devcontainer.image;
    state_.forwarded_ports.clear();
    for (const ForwardPort& port : prepared.devcontainer.forward_ports) {
      state_.forwarded_ports.push_back(port.port);
    }
    persistLocked();
  }

  setStep(epoch, "user");
  if (!setup.chooseUser(spec, prepared, error)) return failSetup(epoch, error);
  setup.buildEnvironment(spec, current.gitspace_id, prepared);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (epoch_.load() != epoch) return;
    state_.user = prepared.user.name;
    state_.user_warning = prepared.user_warning;
    persistLocked();
  }

  if (!current.post_create_done) {
    setStep(epoch, "postCreateCommand");
    if (!setup.runLifecycleCommand("postCreateCommand", prepared.devcontainer.post_create_command,
                                   prepared, error)) {
      return failSetup(epoch, error);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (epoch_.load() != epoch) return;
    state_.post_create_done = true;
    persistLocked();
  } else {
    log_.note("postCreateCommand already ran for this Gitspace");
  }

  setStep(epoch, "postStartCommand");
  if (!setup.runLifecycleCommand("postStartCommand", prepared.devcontainer.post_start_command,
                                 prepared, error)) {
    return failSetup(epoch, error);
  }

  setStep(epoch, "ide");
  IdeLaunch launch;
  if (!prepareIdeLaunch(spec, config_, setup, prepared, log_, launch, error)) {
    return failSetup(epoch, error);
  }
  if (cancelled()) return;
  log_.note(std::string(ideKindName(spec.ide)) + ": $ " + commandLine(launch.child.argv));
  std::shared_ptr<OutputPump> pump;
  pid_t pid = processes_.spawn(launch.child, ideKindName(spec.ide), pump, error);
  if (pid < 0) return failSetup(epoch, "the IDE could not start: " + error);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    state_.ide_pid = pid;
    state_.ide_start_time = processStartTime(pid);
    persistLocked();
  }
  startIdeWatcher(epoch, pid, pump);

  setStep(epoch, "waiting for the IDE");
  if (!waitForIde(epoch, launch.host, launch.port, launch.protocol, error)) {
    return failSetup(epoch, error);
  }
  log_.note(std::string(ideKindName(spec.ide)) + " answers on " + probeHost(launch.host) + ":" +
            std::to_string(launch.port) + "; the Gitspace is running");
  bool exited = false;
  ExitStatus status;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (epoch_.load() != epoch) return;
    exited = ide_exited_;
    status = ide_exit_;
    if (!exited) transitionLocked(GitspaceEvent::kIdeReady);
  }
  if (exited) return failSetup(epoch, "the IDE exited: " + status.text());
  log_.notifyWatchers();
}

bool GitspaceController::waitForIde(uint64_t epoch, const std::string& host, int port,
                                    const std::string& protocol, std::string& error) {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeouts_.ide_ready_ms);
  while (true) {
    if (epoch_.load() != epoch) {
      error = "cancelled";
      return false;
    }
    bool exited;
    ExitStatus status;
    std::shared_ptr<OutputPump> pump;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      exited = ide_exited_;
      status = ide_exit_;
      pump = ide_pump_;
    }
    if (exited) {
      std::string tail = pump ? pump->recentOutput(10) : "";
      error = "the IDE exited before it answered: " + status.text() +
              (tail.empty() ? "" : "; its last output:\n" + tail);
      return false;
    }
    if (ideAnswers(host, port, protocol, 1000)) return true;
    if (std::chrono::steady_clock::now() >= deadline) {
      error = "the IDE did not answer on " + probeHost(host) + ":" + std::to_string(port) +
              " within " + std::to_string(timeouts_.ide_ready_ms / 1000) + " s";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

void GitspaceController::startIdeWatcher(uint64_t epoch, pid_t pid,
                                         std::shared_ptr<OutputPump> pump) {
  if (ide_watcher_.joinable()) ide_watcher_.join();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ide_exited_ = false;
    ide_exit_ = ExitStatus{};
    ide_pump_ = pump;
  }
  ide_watcher_ = std::thread([this, epoch, pid, pump] {
    ExitStatus status;
    ChildReaper::instance().wait(pid, status, -1);
    // Its last words reach the log (and the tail) before the verdict.
    pump->waitForEnd(500);
    std::string message;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ide_exited_ = true;
      ide_exit_ = status;
      if (epoch_.load() == epoch && state_.state == GitspaceState::kRunning) {
        message = "IDE exited: " + status.text();
        std::string tail = pump->recentOutput(5);
        if (!tail.empty()) message += "; its last output:\n" + tail;
        transitionLocked(GitspaceEvent::kFailed, message);
      }
    }
    if (message.empty()) return;
    log_.note(message);
    log_.notifyWatchers();
    // Whatever else the Gitspace started goes too, so that a start begins
    // from nothing (this runs before any start queued after it).
    enqueue([this] { stopSession(); });
  });
}

void GitspaceController::stopSession() {
  processes_.stopAll(timeouts_.stop_grace_ms);
  if (ide_watcher_.joinable()) ide_watcher_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  ide_pump_.reset();
  if (state_.ide_pid != 0) {
    state_.ide_pid = 0;
    state_.ide_start_time = 0;
    persistLocked();
  }
}

}  // namespace spacegate
