#include "delegate/api_call.h"

#include <algorithm>

namespace spacegate {

const char* const kDelegateVersion = "0.1.0";

std::string delegateUserAgent() {
  return std::string("spacegate-delegate/") + kDelegateVersion;
}

std::string ApiReply::reason() const {
  if (status == 0) return error.empty() ? "no reply" : error;
  std::string detail;
  if (body.is_object() && body.contains("error") && body["error"].is_string()) {
    detail = body["error"].get<std::string>();
    if (body.contains("field") && body["field"].is_string() &&
        !body["field"].get<std::string>().empty()) {
      detail += " (field " + body["field"].get<std::string>() + ")";
    }
  } else {
    detail = text.substr(0, 300);
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == '\r')) detail.pop_back();
  }
  return "HTTP " + std::to_string(status) + (detail.empty() ? "" : ": " + detail);
}

std::string plainText(std::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  for (size_t index = 0; index < text.size(); ++index) {
    unsigned char byte = static_cast<unsigned char>(text[index]);
    if (byte == 0x1b) {
      // CSI: ESC [ parameters... final byte in 0x40..0x7e; other escapes
      // are ESC and one more byte.
      if (index + 1 < text.size() && text[index + 1] == '[') {
        index += 2;
        while (index < text.size() && !(text[index] >= 0x40 && text[index] <= 0x7e)) ++index;
      } else {
        ++index;
      }
      continue;
    }
    if ((byte < 0x20 && byte != '\t') || byte == 0x7f) byte = ' ';
    out.push_back(static_cast<char>(byte));
  }
  if (out.size() > max_bytes) {
    size_t cut = max_bytes;
    // Back to the start of a UTF-8 sequence, so no half character is left.
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
  }
  return out;
}

ServiceClient makeServiceClient(const ServiceEndpoint& endpoint, uint64_t timeout_ms) {
  ServiceClient client(endpoint.socket, endpoint.url, endpoint.token);
  client.setTimeoutMs(static_cast<int>(timeout_ms));
  client.setUserAgent(delegateUserAgent());
  return client;
}

std::string dumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

ApiReply callApi(const ServiceClient& client, const std::string& method, const std::string& target,
                 const nlohmann::json& body) {
  ApiReply result;
  ServiceReply reply;
  std::string error;
  if (!client.call(method, target, body.is_null() ? std::string() : dumpJson(body), reply, error)) {
    result.error = error;
    return result;
  }
  result.status = reply.status;
  result.text = std::move(reply.body);
  if (!result.text.empty()) {
    result.body = nlohmann::json::parse(result.text, nullptr, false);
    if (result.body.is_discarded()) result.body = nullptr;
  }
  return result;
}

}  // namespace spacegate
