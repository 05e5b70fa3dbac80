// devcontainer.json: the part of the Dev Container specification the agent
// applies. The file is "JSON with comments" (// and /* */ comments, trailing
// commas), as the specification allows. Supported fields: `name`, `image`
// (recorded: the process driver runs the host's userland), `containerEnv`,
// `remoteUser`, `forwardPorts`, `postCreateCommand`, `postStartCommand`; a
// supported field of the wrong shape is an error naming the field and its
// line. Every other top-level field, known to the specification (`build`,
// `features`, `mounts`, ...) or not, is listed in `ignored_fields` so the
// setup log can say it was not applied: the specification keeps growing,
// and a newer file must not stop a Gitspace from starting.
//
// Limits, each refused with an error naming it: kMaxDevcontainerSize bytes,
// 64 levels of nesting, 256 `forwardPorts`, 1024 `containerEnv` entries and
// 64 named commands in a lifecycle command's object form. Lines are counted
// by '\n' (CRLF files count the same), from 1.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace spacegate {

// A lifecycle command in one of the specification's three forms:
//   "npm install"                       → one shell command (/bin/sh -c)
//   ["npm", "install"]                  → one command run without a shell
//   {"deps": "npm i", "db": ["x", "y"]} → named commands run in parallel
// An empty string, an empty object, or an object whose commands are all
// empty strings means no command. An array must hold at least the program,
// and the program must not be empty. No string may contain a NUL.
struct LifecycleCommand {
  struct Step {
    std::string name;               // the object key; empty for the first two forms
    std::string shell_line;         // set when run through /bin/sh -c
    std::vector<std::string> argv;  // set when run without a shell
    bool usesShell() const { return argv.empty(); }
  };
  std::vector<Step> steps;  // empty: no command; the object form's in key order
  bool parallel = false;    // the object form (with at least one step)
  bool empty() const { return steps.empty(); }
};

// One entry of `forwardPorts`: a number (a port of the machine) or a
// "host:port" string; the agent forwards ports of the machine only, so the
// host part must name the machine ("localhost", "127.0.0.1" or "0.0.0.0").
struct ForwardPort {
  std::string host;  // as written, "" for the number form
  int port = 0;      // 1..65535
};

// containerEnv names are [A-Za-z_][A-Za-z0-9_]*; remoteUser is a user name
// as useradd takes it: [a-z_][a-z0-9_-]*[$]?, at most 32 characters.
struct DevcontainerConfig {
  std::string name;
  std::string image;
  std::map<std::string, std::string> container_env;
  std::string remote_user;
  std::vector<ForwardPort> forward_ports;
  LifecycleCommand post_create_command;
  LifecycleCommand post_start_command;
  std::vector<std::string> ignored_fields;  // present in the file, not applied; sorted
};

// A field error's line is the line of the offending value (of the key, for
// an invalid containerEnv name or an empty command name).
struct DevcontainerError {
  int line = 0;       // 1-based; 0 for the file as a whole (too large, empty)
  std::string field;  // "forwardPorts[2]", "postStartCommand.db"; empty for syntax errors
  std::string message;
  // "line 4: forwardPorts[2]: must be a port number from 1 to 65535"
  std::string text() const;
};

// Turns JSON-with-comments into plain JSON: comments become spaces (so line
// numbers and offsets stay the same) and trailing commas become spaces, so
// `json` has the length of `text` and a newline wherever `text` has one.
// Strings are left alone, comment-like text inside them included; a string
// must end on the line it starts (JSON forbids a raw newline in one). False
// on an unterminated block comment or string, with `error` set to the line
// where it starts. Anything else that is not JSON is left for the parser.
bool stripJsonComments(std::string_view text, std::string& json, DevcontainerError& error);

// Parses a devcontainer.json (a leading UTF-8 byte order mark is skipped).
// Files over kMaxDevcontainerSize and nesting deeper than 64 are refused
// before the JSON parser sees them. `config` is written only on success.
constexpr size_t kMaxDevcontainerSize = 1 << 20;
bool parseDevcontainer(std::string_view text, DevcontainerConfig& config, DevcontainerError& error);

}  // namespace spacegate
