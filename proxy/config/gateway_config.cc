#include "config/gateway_config.h"

#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

#include "auth/base64url.h"
#include "config/config_fields.h"
#include "config/yaml_document.h"
#include "control_api/key_ring_store.h"
#include "route/route_json.h"

namespace spacegate {

bool parseDuration(const std::string& text, uint64_t& milliseconds) {
  uint64_t number = 0;
  auto [end, code] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (code != std::errc() || end == text.data()) return false;
  std::string_view unit(end, text.data() + text.size() - end);
  uint64_t scale;
  if (unit == "ms") {
    scale = 1;
  } else if (unit == "s") {
    scale = 1000;
  } else if (unit == "m") {
    scale = 60'000;
  } else if (unit == "h") {
    scale = 3'600'000;
  } else {
    return false;
  }
  if (number > UINT64_MAX / scale / 1000) return false;
  milliseconds = number * scale;
  return true;
}

bool needsTlsCertificates(const GatewayConfig& config) {
  if (config.control.tls) return true;
  for (const ListenerConfig& listener : config.listeners) {
    if (listener.tls) return true;
  }
  return false;
}

bool parseGatewayConfig(const nlohmann::json& root, GatewayConfig& config, ValidationError& error) {
  if (root.is_null()) return true;  // an empty file: all defaults
  if (!checkKeys(root, "",
                 {"listen", "workers", "access_log", "log_level", "limits", "upstream_pool",
                  "routes", "control", "state_dir", "auth", "tls", "http2"},
                 error)) {
    return false;
  }
  if (auto listen = root.find("listen"); listen != root.end()) {
    nlohmann::json list = listen->is_string() ? nlohmann::json::array({*listen}) : *listen;
    if (!list.is_array() || list.empty()) {
      return rejectField(error, "listen", "must be an address or a list of addresses");
    }
    config.listeners.clear();
    for (size_t i = 0; i < list.size(); ++i) {
      std::string field = listen->is_string() ? "listen" : "listen[" + std::to_string(i) + "]";
      ListenerConfig listener;
      std::string reason;
      const nlohmann::json* text = &list[i];
      if (list[i].is_object()) {
        // {"address": "127.0.0.1:8443", "tls": true}
        if (!checkKeys(list[i], field, {"address", "tls"}, error) ||
            !readBool(list[i], "tls", field, listener.tls, error)) {
          return false;
        }
        if (!list[i].contains("address")) return rejectField(error, field + ".address", "missing");
        text = &list[i]["address"];
        field += ".address";
      }
      if (!text->is_string())
        return rejectField(error, field, "must be a string like 127.0.0.1:8080");
      if (!parseSocketAddress(text->get<std::string>(), listener.address, reason, false, false)) {
        return rejectField(error, field, reason);
      }
      config.listeners.push_back(listener);
    }
  }
  if (!readCount(root, "workers", "", config.workers, 0, 256, error)) return false;
  if (auto log = root.find("access_log"); log != root.end()) {
    if (!log->is_string() || log->get<std::string>().empty()) {
      return rejectField(error, "access_log", "must be a file path, \"stdout\" or \"off\"");
    }
    config.access_log = log->get<std::string>();
  }
  if (auto level = root.find("log_level"); level != root.end()) {
    static const std::set<std::string> levels = {"debug", "info", "warning", "error"};
    if (!level->is_string() || !levels.count(level->get<std::string>())) {
      return rejectField(error, "log_level", "must be one of debug, info, warning, error");
    }
    config.log_level = level->get<std::string>();
  }
  if (auto limits_it = root.find("limits"); limits_it != root.end()) {
    const nlohmann::json& limits = *limits_it;
    Limits& out = config.limits;
    if (!checkKeys(limits, "limits",
                   {"header_block_size", "header_field_count", "header_read_timeout",
                    "keepalive_idle_timeout", "client_body_timeout", "upstream_connect_timeout",
                    "upstream_response_timeout", "tunnel_idle_timeout", "request_body_size",
                    "shutdown_grace", "write_high_water", "write_low_water", "tunnel_splice"},
                   error)) {
      return false;
    }
    if (!readCount(limits, "header_block_size", "limits", out.header_block_size, 1024, 1024 * 1024,
                   error) ||
        !readCount(limits, "header_field_count", "limits", out.header_field_count, 1, 10'000,
                   error) ||
        !readCount(limits, "request_body_size", "limits", out.request_body_size, 0, UINT64_MAX >> 2,
                   error) ||
        !readCount(limits, "write_high_water", "limits", out.write_high_water, 4096,
                   64 * 1024 * 1024, error) ||
        !readCount(limits, "write_low_water", "limits", out.write_low_water, 0, 64 * 1024 * 1024,
                   error) ||
        !readDuration(limits, "header_read_timeout", "limits", out.header_read_timeout_ms, error) ||
        !readDuration(limits, "keepalive_idle_timeout", "limits", out.keepalive_idle_timeout_ms,
                      error) ||
        !readDuration(limits, "client_body_timeout", "limits", out.client_body_timeout_ms, error) ||
        !readDuration(limits, "upstream_connect_timeout", "limits", out.upstream_connect_timeout_ms,
                      error) ||
        !readDuration(limits, "upstream_response_timeout", "limits",
                      out.upstream_response_timeout_ms, error) ||
        !readDuration(limits, "tunnel_idle_timeout", "limits", out.tunnel_idle_timeout_ms, error) ||
        !readDuration(limits, "shutdown_grace", "limits", out.shutdown_grace_ms, error) ||
        !readBool(limits, "tunnel_splice", "limits", out.tunnel_splice, error)) {
      return false;
    }
    if (out.write_low_water >= out.write_high_water) {
      return rejectField(error, "limits.write_low_water", "must be below limits.write_high_water");
    }
    for (const char* key :
         {"header_read_timeout", "keepalive_idle_timeout", "client_body_timeout",
          "upstream_connect_timeout", "upstream_response_timeout", "tunnel_idle_timeout"}) {
      uint64_t value = 1;
      readDuration(limits, key, "limits", value, error);
      if (value == 0) return rejectField(error, std::string("limits.") + key, "must be above zero");
    }
  }
  if (auto http2 = root.find("http2"); http2 != root.end()) {
    Http2Limits& out = config.http2;
    if (!checkKeys(
            *http2, "http2",
            {"max_concurrent_streams", "initial_window_size", "max_continuations", "max_settings",
             "max_outbound_ack", "stream_reset_burst", "stream_reset_rate", "zero_window_timeout"},
            error) ||
        !readCount(*http2, "max_concurrent_streams", "http2", out.max_concurrent_streams, 1, 10'000,
                   error) ||
        !readCount(*http2, "initial_window_size", "http2", out.initial_window_size, 1024,
                   (1u << 31) - 1, error) ||
        !readCount(*http2, "max_continuations", "http2", out.max_continuations, 0, 1000, error) ||
        !readCount(*http2, "max_settings", "http2", out.max_settings, 6, 1000, error) ||
        !readCount(*http2, "max_outbound_ack", "http2", out.max_outbound_ack, 10, 100'000, error) ||
        !readCount(*http2, "stream_reset_burst", "http2", out.stream_reset_burst, 1, 1'000'000,
                   error) ||
        !readCount(*http2, "stream_reset_rate", "http2", out.stream_reset_rate, 1, 1'000'000,
                   error) ||
        !readDuration(*http2, "zero_window_timeout", "http2", out.zero_window_timeout_ms, error)) {
      return false;
    }
    if (out.zero_window_timeout_ms == 0) {
      return rejectField(error, "http2.zero_window_timeout", "must be above zero");
    }
  }
  if (auto tls = root.find("tls"); tls != root.end()) {
    TlsConfig& out = config.tls;
    std::string min_version = "1.2";
    if (!checkKeys(*tls, "tls", {"certificates", "session_ticket_rotation", "min_version"},
                   error) ||
        !readDuration(*tls, "session_ticket_rotation", "tls", out.session_ticket_rotation_ms,
                      error) ||
        !readString(*tls, "min_version", "tls", min_version, error)) {
      return false;
    }
    if (min_version != "1.2" && min_version != "1.3") {
      return rejectField(error, "tls.min_version", "must be \"1.2\" or \"1.3\"");
    }
    out.tls13_only = min_version == "1.3";
    if (out.session_ticket_rotation_ms < 60'000) {
      return rejectField(error, "tls.session_ticket_rotation", "must be at least 1m");
    }
    if (auto certificates = tls->find("certificates"); certificates != tls->end()) {
      if (!certificates->is_array()) {
        return rejectField(error, "tls.certificates", "must be a list of {cert, key}");
      }
      out.certificates.clear();
      for (size_t i = 0; i < certificates->size(); ++i) {
        const nlohmann::json& entry = (*certificates)[i];
        std::string item = "tls.certificates[" + std::to_string(i) + "]";
        CertificateConfig certificate;
        if (!entry.is_object()) return rejectField(error, item, "must be {cert, key}");
        if (!checkKeys(entry, item, {"cert", "key", "default"}, error) ||
            !readString(entry, "cert", item, certificate.cert_file, error) ||
            !readString(entry, "key", item, certificate.key_file, error) ||
            !readBool(entry, "default", item, certificate.is_default, error)) {
          return false;
        }
        if (certificate.cert_file.empty()) return rejectField(error, item + ".cert", "missing");
        if (certificate.key_file.empty()) return rejectField(error, item + ".key", "missing");
        out.certificates.push_back(std::move(certificate));
      }
    }
  }
  if (auto pool = root.find("upstream_pool"); pool != root.end()) {
    if (!checkKeys(*pool, "upstream_pool", {"idle_connections", "idle_timeout"}, error) ||
        !readCount(*pool, "idle_connections", "upstream_pool",
                   config.upstream_pool.idle_connections, 0, 10'000, error) ||
        !readDuration(*pool, "idle_timeout", "upstream_pool", config.upstream_pool.idle_timeout_ms,
                      error)) {
      return false;
    }
  }
  if (auto state_dir = root.find("state_dir"); state_dir != root.end()) {
    if (!state_dir->is_string() || state_dir->get<std::string>().empty()) {
      return rejectField(error, "state_dir", "must be a folder path");
    }
    config.state_dir = state_dir->get<std::string>();
  }
  if (auto control = root.find("control"); control != root.end()) {
    ControlConfig& out = config.control;
    if (!checkKeys(*control, "control",
                   {"socket", "address", "token_file", "max_body_size", "route_limit",
                    "route_close_grace", "tls"},
                   error) ||
        !readBool(*control, "tls", "control", out.tls, error) ||
        !readCount(*control, "max_body_size", "control", out.max_body_size, 1024, 1ull << 32,
                   error) ||
        !readCount(*control, "route_limit", "control", out.route_limit, 1, 100'000'000, error) ||
        !readDuration(*control, "route_close_grace", "control", out.route_close_grace_ms, error)) {
      return false;
    }
    for (const char* key : {"socket", "address", "token_file"}) {
      auto value = control->find(key);
      if (value == control->end()) continue;
      if (!value->is_string() || value->get<std::string>().empty()) {
        return rejectField(error, std::string("control.") + key, "must be a non-empty string");
      }
    }
    if (auto socket = control->find("socket"); socket != control->end()) {
      out.socket = socket->get<std::string>();
      if (out.socket.front() != '/')
        return rejectField(error, "control.socket", "must be an absolute path");
    }
    if (auto token = control->find("token_file"); token != control->end()) {
      out.token_file = token->get<std::string>();
    }
    if (auto address = control->find("address"); address != control->end()) {
      out.address = address->get<std::string>();
      std::string reason;
      if (!parseSocketAddress(out.address, out.tcp_address, reason, false, false)) {
        return rejectField(error, "control.address", reason);
      }
      if (out.token_file.empty()) {
        return rejectField(error, "control.address",
                           "a TCP control address needs control.token_file");
      }
    }
  }
  // After both the listeners and the control section are known.
  if (config.control.tls && config.control.address.empty()) {
    return rejectField(error, "control.tls", "TLS applies to control.address (TCP)");
  }
  if (config.control.tls && config.tls.certificates.empty()) {
    return rejectField(error, "tls.certificates",
                       "control.tls needs a certificate in the tls: section");
  }
  if (needsTlsCertificates(config) && config.tls.certificates.empty()) {
    return rejectField(error, "tls.certificates",
                       "a listener has \"tls\": true but no certificate is configured");
  }
  if (auto auth = root.find("auth"); auth != root.end()) {
    if (!checkKeys(*auth, "auth", {"public_keys", "login_url", "cookie_name"}, error)) return false;
    if (auto keys = auth->find("public_keys"); keys != auth->end()) {
      // Entries are {kid, public_key} inline, or {file} naming a .pub file
      // written by `spacegatectl token keygen`.
      nlohmann::json inline_keys = nlohmann::json::array();
      if (!keys->is_array()) return rejectField(error, "auth.public_keys", "must be a list");
      for (size_t i = 0; i < keys->size(); ++i) {
        const nlohmann::json& entry = (*keys)[i];
        std::string item = "auth.public_keys[" + std::to_string(i) + "]";
        if (entry.is_object() && entry.contains("file")) {
          if (entry.size() != 1 || !entry["file"].is_string()) {
            return rejectField(error, item, "a file entry has only \"file\"");
          }
          std::ifstream stream(entry["file"].get<std::string>());
          std::stringstream contents;
          contents << stream.rdbuf();
          std::string kid, public_key, reason;
          if (!stream || !parsePublicKeyJson(contents.str(), kid, public_key, reason)) {
            return rejectField(error, item + ".file",
                               entry["file"].get<std::string>() + ": " +
                                   (stream ? reason : std::string("cannot read the file")));
          }
          inline_keys.push_back({{"kid", kid}, {"public_key", base64UrlEncode(public_key)}});
        } else {
          inline_keys.push_back(entry);
        }
      }
      KeyRing ring;
      // Errors name the entry as written.
      for (size_t i = 0; i < inline_keys.size(); ++i) {
        KeyRing single;
        ValidationError entry_error;
        if (!KeyRingStore::parseKeyList(nlohmann::json::array({inline_keys[i]}), "x", single,
                                        entry_error)) {
          return rejectField(error,
                             "auth.public_keys[" + std::to_string(i) + "]" +
                                 entry_error.field.substr(entry_error.field.find(']') + 1),
                             entry_error.message);
        }
        for (const auto& [kid, key] : single.keys()) {
          if (ring.find(kid)) {
            return rejectField(error, "auth.public_keys[" + std::to_string(i) + "].kid",
                               "duplicate key id");
          }
          ring.add(kid, key);
        }
      }
      config.public_keys = std::move(ring);
    }
    if (auto login = auth->find("login_url"); login != auth->end()) {
      if (!login->is_string() || !(login->get<std::string>().starts_with("https://") ||
                                   login->get<std::string>().starts_with("http://"))) {
        return rejectField(error, "auth.login_url", "must be an http(s) URL");
      }
      config.auth.login_url = login->get<std::string>();
    }
    if (auto cookie = auth->find("cookie_name"); cookie != auth->end()) {
      std::string name = cookie->is_string() ? cookie->get<std::string>() : "";
      bool ok = !name.empty() && name.size() <= 64;
      for (char c : name) {
        ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-');
      }
      if (!ok) return rejectField(error, "auth.cookie_name", "must be 1..64 of [A-Za-z0-9_-]");
      config.auth.cookie_name = name;
    }
  }
  if (auto routes = root.find("routes"); routes != root.end()) {
    config.routes_given = true;
    if (!parseRouteList(*routes, "routes", config.routes, error)) return false;
    if (!checkRoutesServable(config.routes, "routes", error)) return false;
  }
  return true;
}

bool loadGatewayConfigFile(const std::string& file, GatewayConfig& config, std::string& message) {
  YamlDocument document;
  std::string load_error;
  if (!loadYamlFile(file, document, load_error)) {
    message = load_error;
    return false;
  }
  ValidationError error;
  if (!parseGatewayConfig(document.root, config, error)) {
    message = file + ":" + std::to_string(document.lineOf(error.field)) + ": " + error.field +
              ": " + error.message;
    return false;
  }
  return true;
}

}  // namespace spacegate
