// spacegatectl: the admin CLI for the gateway's control API, and for
// Gitspaces through the control plane (`gitspace ...`, gitspace_commands.h).
//
//   spacegatectl [--socket PATH | --url URL --token-file F] [--json] COMMAND
//     routes list | routes get ID | routes apply -f FILE [--replace] | routes delete ID...
//     stats | activity | drain
//     keys list | keys apply -f FILE...      (access token public keys)
//     token keygen --kid K --out PREFIX     (PREFIX.key mode 0600, PREFIX.pub)
//     token sign --key F --sub U --gs G --ttl 8h [--scope S]... [--aud A]
//   spacegatectl gitspace create|list|get|open|start|stop|reset|delete|wait|logs|ssh ...
//   spacegatectl ssh-proxy GITSPACE [--via connect|websocket] ...   (ssh_proxy.h)
//   spacegatectl ssh-key set FILE... | ssh-key list   (your SSH keys, ssh_key_commands.h)
//
// Exit codes: 0 done, 1 the gateway (or control plane) refused (the reason
// and field are printed), 2 usage or a bad file, 3 it could not be reached.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>

#include "auth/access_token.h"
#include "auth/base64url.h"
#include "config/gateway_config.h"
#include "control_plane_api.h"
#include "gitspace_commands.h"
#include "route/route_json.h"
#include "route_file.h"
#include "service/service_client.h"
#include "ssh_key_commands.h"
#include "ssh_proxy.h"
#include "text_table.h"

namespace {

using namespace spacegate;

struct Options {
  std::string socket = "/run/spacegate/control.sock";
  std::string url;
  std::string token_file;
  bool json = false;
};

std::string text(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_null()) return "-";
  return value.dump();
}

class Command {
 public:
  explicit Command(const Options& options) : options_(options) {}

  bool connect(std::string& error) {
    std::string token;
    if (!options_.url.empty() && !options_.token_file.empty()) {
      std::ifstream stream(options_.token_file);
      if (!stream) {
        error = options_.token_file + ": cannot read the token file";
        return false;
      }
      std::getline(stream, token);
      while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
    }
    client_ = std::make_unique<ServiceClient>(options_.url.empty() ? options_.socket : "",
                                              options_.url, token);
    client_->setUserAgent("spacegatectl");
    return true;
  }

  // Calls the API; on failure prints why and sets the exit code.
  bool call(const std::string& method, const std::string& target, const std::string& body,
            nlohmann::json& reply, int& exit_code) {
    ServiceReply raw;
    std::string error;
    if (!client_->call(method, target, body, raw, error)) {
      std::fprintf(stderr, "spacegatectl: cannot reach the gateway: %s\n", error.c_str());
      exit_code = kExitUnreachable;
      return false;
    }
    try {
      reply = raw.body.empty() ? nlohmann::json::object() : nlohmann::json::parse(raw.body);
    } catch (const nlohmann::json::exception&) {
      reply = raw.body;  // /metrics is text
    }
    if (raw.status >= 400) {
      last_status_ = raw.status;
      exit_code = kExitRefused;
      return false;
    }
    return true;
  }

  int lastStatus() const { return last_status_; }

  // A read-only call whose refusal is printed as is.
  bool fetch(const std::string& target, nlohmann::json& reply, int& exit_code);

 private:
  const Options& options_;
  std::unique_ptr<ServiceClient> client_;
  int last_status_ = 0;
};

void printRefusal(const nlohmann::json& reply, int status, const RouteFile* file = nullptr) {
  std::string message =
      reply.is_object() && reply.contains("error") ? text(reply["error"]) : text(reply);
  std::string field = reply.is_object() && reply.contains("field") ? text(reply["field"]) : "";
  if (file && !field.empty()) {
    // The API names "routes[3].upstream" or "upsert[3].upstream": point at the file.
    size_t bracket = field.find('[');
    if (bracket != std::string::npos &&
        (field.starts_with("routes") || field.starts_with("upsert"))) {
      std::fprintf(stderr, "spacegatectl: %s: refused by the gateway (%d): %s\n",
                   file->locate(field.substr(bracket)).c_str(), status, message.c_str());
      return;
    }
  }
  if (field.empty()) {
    std::fprintf(stderr, "spacegatectl: refused by the gateway (%d): %s\n", status,
                 message.c_str());
  } else {
    std::fprintf(stderr, "spacegatectl: refused by the gateway (%d): %s: %s\n", status,
                 field.c_str(), message.c_str());
  }
}

bool Command::fetch(const std::string& target, nlohmann::json& reply, int& exit_code) {
  if (call("GET", target, "", reply, exit_code)) return true;
  if (exit_code == kExitRefused) printRefusal(reply, last_status_);
  return false;
}

// Writes that need the next version retry if another writer got there first.
int writeWithNextVersion(Command& command, const Options& options, const std::string& method,
                         const std::function<nlohmann::json(uint64_t)>& make_body,
                         const RouteFile* file) {
  int exit_code = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    nlohmann::json health;
    if (!command.call("GET", "/routes", "", health, exit_code)) {
      printRefusal(health, command.lastStatus());
      return exit_code;
    }
    uint64_t version = health.value("version", uint64_t{0}) + 1;
    nlohmann::json reply;
    if (command.call(method, "/routes", make_body(version).dump(), reply, exit_code)) {
      if (options.json) {
        std::printf("%s\n", reply.dump(2).c_str());
      } else {
        std::printf("applied: version %s, %s routes\n", text(reply["version"]).c_str(),
                    text(reply["routes"]).c_str());
      }
      return 0;
    }
    if (exit_code != kExitRefused || command.lastStatus() != 409) {
      if (exit_code == kExitRefused) printRefusal(reply, command.lastStatus(), file);
      return exit_code;
    }
  }
  std::fprintf(stderr, "spacegatectl: other writers kept changing the routes; try again\n");
  return kExitRefused;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{
      "spacegatectl: administer a Spacegate gateway through its control API, and Gitspaces "
      "through the control plane"};
  app.require_subcommand(1);
  app.add_option("--socket", options.socket, "control socket of the gateway")
      ->capture_default_str();
  app.add_option("--url", options.url, "control API over TCP, e.g. http://127.0.0.1:9090");
  app.add_option("--token-file", options.token_file, "bearer token for --url");
  app.add_flag("--json", options.json, "print the API's JSON");

  auto* routes = app.add_subcommand("routes", "list, show, apply or delete routes");
  routes->require_subcommand(1);
  auto* list = routes->add_subcommand("list", "list every route");
  std::string get_id;
  auto* get = routes->add_subcommand("get", "show one route");
  get->add_option("id", get_id, "route id")->required();
  std::string apply_file;
  bool replace = false;
  auto* apply = routes->add_subcommand("apply", "upsert the routes of a file (YAML or JSON)");
  apply->add_option("-f,--file", apply_file, "route file")->required();
  apply->add_flag("--replace", replace, "replace the whole table with the file's routes");
  std::vector<std::string> delete_ids;
  auto* remove = routes->add_subcommand("delete", "delete routes by id");
  remove->add_option("ids", delete_ids, "route ids")->required();
  auto* stats = app.add_subcommand("stats", "gateway counters");
  auto* activity =
      app.add_subcommand("activity", "traffic per Gitspace (last byte, bytes, connections)");
  auto* drain = app.add_subcommand("drain", "close every connection after its current exchange");

  auto* keys = app.add_subcommand("keys", "public keys that verify access tokens");
  keys->require_subcommand(1);
  auto* keys_list = keys->add_subcommand("list", "list the gateway's public keys");
  std::vector<std::string> key_files;
  auto* keys_apply = keys->add_subcommand("apply", "replace the gateway's public keys");
  keys_apply->add_option("-f,--file", key_files, ".pub files from `token keygen`")->required();

  auto* token = app.add_subcommand("token", "make keys and sign access tokens");
  token->require_subcommand(1);
  std::string keygen_kid;
  std::string keygen_out;
  auto* keygen = token->add_subcommand("keygen", "write a new Ed25519 key pair");
  keygen->add_option("--kid", keygen_kid, "key id")->required();
  keygen->add_option("--out", keygen_out, "file prefix: writes PREFIX.key (0600) and PREFIX.pub")
      ->required();
  std::string sign_key, sign_sub, sign_gs, sign_ttl = "8h", sign_aud;
  std::vector<std::string> sign_scopes;
  int64_t sign_iat = 0;
  int64_t sign_exp = 0;
  auto* sign = token->add_subcommand("sign", "sign an access token");
  sign->add_option("--key", sign_key, "private key file (PREFIX.key)")->required();
  sign->add_option("--sub", sign_sub, "user")->required();
  sign->add_option("--gs", sign_gs, "Gitspace id, or * for the deployment-wide kind")->required();
  sign->add_option("--ttl", sign_ttl, "lifetime, e.g. 30m, 8h")->capture_default_str();
  sign->add_option("--scope", sign_scopes, "ide (default), port:N, ssh, agent; repeatable");
  sign->add_option("--aud", sign_aud, "host or route id the token is for");
  sign->add_option("--iat", sign_iat, "issued-at, Unix seconds (tests)");
  sign->add_option("--exp", sign_exp, "expiry, Unix seconds (overrides --ttl; tests)");

  GitspaceCommands gitspace_commands(app, options.json);
  SshProxyCommand ssh_proxy(app);
  SshKeyCommands ssh_key_commands(app, options.json);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    return code == 0 ? 0 : kExitUsage;
  }
  if (gitspace_commands.selected()) return gitspace_commands.run();
  if (ssh_proxy.selected()) return ssh_proxy.run();
  if (ssh_key_commands.selected()) return ssh_key_commands.run();
  if (*keygen) {
    SigningKey key = generateSigningKey(keygen_kid);
    nlohmann::json public_json = {{"kid", key.kid},
                                  {"public_key", base64UrlEncode(key.public_key)}};
    nlohmann::json private_json = public_json;
    private_json["private_key"] = base64UrlEncode(key.private_key);
    auto write_file = [](const std::string& path, const std::string& text, mode_t mode) {
      int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
      if (fd < 0) return false;
      ::fchmod(fd, mode);
      bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      return ::close(fd) == 0 && ok;
    };
    if (!write_file(keygen_out + ".key", private_json.dump(1) + "\n", 0600) ||
        !write_file(keygen_out + ".pub", public_json.dump(1) + "\n", 0644)) {
      std::fprintf(stderr, "spacegatectl: cannot write %s.key / %s.pub\n", keygen_out.c_str(),
                   keygen_out.c_str());
      return kExitUsage;
    }
    std::printf("wrote %s.key (private, mode 0600) and %s.pub (public)\n", keygen_out.c_str(),
                keygen_out.c_str());
    return 0;
  }
  if (*sign) {
    SigningKey key;
    std::string error;
    if (!loadSigningKeyFile(sign_key, key, error)) {
      std::fprintf(stderr, "spacegatectl: %s\n", error.c_str());
      return kExitUsage;
    }
    uint64_t ttl_ms = 0;
    if (!parseDuration(sign_ttl, ttl_ms) || ttl_ms < 1000) {
      std::fprintf(stderr, "spacegatectl: --ttl: a duration such as 30m or 8h\n");
      return kExitUsage;
    }
    AccessToken access;
    access.sub = sign_sub;
    access.gs = sign_gs;
    access.aud = sign_aud;
    access.iat = sign_iat ? sign_iat : static_cast<int64_t>(::time(nullptr));
    access.exp = sign_exp ? sign_exp : access.iat + static_cast<int64_t>(ttl_ms / 1000);
    access.scopes = sign_scopes.empty() ? std::vector<std::string>{"ide"} : sign_scopes;
    std::printf("%s\n", signAccessToken(access, key).c_str());
    return 0;
  }
  if (!options.url.empty() && options.token_file.empty()) {
    std::fprintf(stderr, "spacegatectl: --url needs --token-file\n");
    return kExitUsage;
  }
  Command command(options);
  std::string error;
  if (!command.connect(error)) {
    std::fprintf(stderr, "spacegatectl: %s\n", error.c_str());
    return kExitUsage;
  }
  int exit_code = 0;
  nlohmann::json reply;

  if (*list) {
    if (!command.fetch("/routes", reply, exit_code)) return exit_code;
    if (options.json) {
      std::printf("%s\n", reply.dump(2).c_str());
      return 0;
    }
    std::vector<std::vector<std::string>> rows = {
        {"ID", "HOST", "PATH_PREFIX", "UPSTREAM", "ACCESS", "GITSPACE"}};
    for (const auto& route : reply["routes"]) {
      rows.push_back({text(route["id"]), text(route["host"]), text(route["path_prefix"]),
                      text(route["upstream"]), text(route["access"]),
                      route.contains("gitspace") ? text(route["gitspace"]) : "-"});
    }
    printTable(rows);
    std::printf("version %s, %zu routes\n", text(reply["version"]).c_str(), reply["routes"].size());
    return 0;
  }
  if (*get) {
    if (!command.fetch("/routes/" + get_id, reply, exit_code)) return exit_code;
    if (options.json) {
      std::printf("%s\n", reply.dump(2).c_str());
      return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& [key, value] : reply.items()) rows.push_back({key + ":", text(value)});
    printTable(rows);
    return 0;
  }
  if (*apply) {
    RouteFile file;
    if (!loadRouteFile(apply_file, file, error)) {
      std::fprintf(stderr, "spacegatectl: %s\n", error.c_str());
      return kExitUsage;
    }
    if (replace || file.has_version) {
      auto body = [&](uint64_t next_version) {
        return nlohmann::json{{"version", file.has_version ? file.version : next_version},
                              {"routes", file.routes}};
      };
      if (file.has_version) {
        if (!command.call("PUT", "/routes", body(0).dump(), reply, exit_code)) {
          if (exit_code == kExitRefused) printRefusal(reply, command.lastStatus(), &file);
          return exit_code;
        }
        std::printf("applied: version %s, %s routes\n", text(reply["version"]).c_str(),
                    text(reply["routes"]).c_str());
        return 0;
      }
      return writeWithNextVersion(command, options, "PUT", body, &file);
    }
    return writeWithNextVersion(
        command, options, "PATCH",
        [&](uint64_t next_version) {
          return nlohmann::json{{"version", next_version}, {"upsert", file.routes}};
        },
        &file);
  }
  if (*remove) {
    return writeWithNextVersion(
        command, options, "PATCH",
        [&](uint64_t next_version) {
          return nlohmann::json{{"version", next_version}, {"delete", delete_ids}};
        },
        nullptr);
  }
  if (*stats) {
    if (!command.fetch("/stats", reply, exit_code)) return exit_code;
    if (options.json) {
      std::printf("%s\n", reply.dump(2).c_str());
      return 0;
    }
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"route table version", text(reply["route_table"]["version"])});
    rows.push_back({"routes", text(reply["route_table"]["routes"])});
    rows.push_back({"snapshot version", text(reply["route_table"]["snapshot_version"])});
    rows.push_back({"draining", text(reply["draining"])});
    for (const auto& [key, value] : reply["totals"].items()) {
      if (value.is_object()) {
        for (const auto& [inner, count] : value.items())
          rows.push_back({key + " " + inner, text(count)});
      } else {
        rows.push_back({key, text(value)});
      }
    }
    rows.push_back({"control writes accepted", text(reply["control"]["writes_accepted"])});
    rows.push_back({"control writes refused", text(reply["control"]["writes_refused"])});
    printTable(rows);
    return 0;
  }
  if (*activity) {
    if (!command.fetch("/activity", reply, exit_code)) return exit_code;
    if (options.json) {
      std::printf("%s\n", reply.dump(2).c_str());
      return 0;
    }
    std::vector<std::vector<std::string>> rows = {
        {"GITSPACE", "LAST_ACTIVITY", "BYTES_IN", "BYTES_OUT", "OPEN", "TUNNELS"}};
    for (const auto& entry : reply["gitspaces"]) {
      rows.push_back({text(entry["gitspace"]), text(entry["last_activity"]),
                      text(entry["bytes_in"]), text(entry["bytes_out"]),
                      text(entry["open_connections"]), text(entry["open_tunnels"])});
    }
    printTable(rows);
    return 0;
  }
  if (*keys_list) {
    if (!command.fetch("/auth/keys", reply, exit_code)) return exit_code;
    if (options.json) {
      std::printf("%s\n", reply.dump(2).c_str());
      return 0;
    }
    std::vector<std::vector<std::string>> rows = {{"KID", "PUBLIC_KEY"}};
    for (const auto& key : reply["keys"])
      rows.push_back({text(key["kid"]), text(key["public_key"])});
    printTable(rows);
    return 0;
  }
  if (*keys_apply) {
    nlohmann::json list = nlohmann::json::array();
    for (const std::string& file : key_files) {
      std::ifstream stream(file);
      std::stringstream contents;
      contents << stream.rdbuf();
      std::string kid, public_key;
      if (!stream || !parsePublicKeyJson(contents.str(), kid, public_key, error)) {
        std::fprintf(stderr, "spacegatectl: %s:1: %s\n", file.c_str(),
                     stream ? error.c_str() : "cannot read the file");
        return kExitUsage;
      }
      list.push_back({{"kid", kid}, {"public_key", base64UrlEncode(public_key)}});
    }
    if (!command.call("PUT", "/auth/keys", nlohmann::json{{"keys", list}}.dump(), reply,
                      exit_code)) {
      if (exit_code == kExitRefused) printRefusal(reply, command.lastStatus());
      return exit_code;
    }
    std::printf("applied: %zu keys\n", reply["keys"].size());
    return 0;
  }
  if (*drain) {
    if (!command.call("POST", "/drain", "", reply, exit_code)) {
      if (exit_code == kExitRefused) printRefusal(reply, command.lastStatus());
      return exit_code;
    }
    std::printf("draining\n");
    return 0;
  }
  return kExitUsage;
}
