#include "control/server/event_streams.h"

namespace spacegate {

nlohmann::json EventStreams::eventJson(const EventRecord& event) {
  return {{"id", event.id},
          {"gitspace", event.gitspace},
          {"type", event.type},
          {"message", event.message},
          {"data", event.data.is_null() ? nlohmann::json::object() : event.data},
          {"at", formatUnixMs(event.at_ms)}};
}

std::string EventStreams::format(const EventRecord& event) {
  // The JSON is one line (dump escapes newlines inside strings), as SSE's
  // data field needs; the type is [a-z0-9_], checked where events come in.
  return "id: " + std::to_string(event.id) + "\nevent: " + event.type + "\ndata: " +
         eventJson(event).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n";
}

size_t EventStreams::countOf(const std::string& user) const {
  size_t count = 0;
  for (const auto& [id, stream] : streams_) count += stream.user == user;
  return count;
}

uint64_t EventStreams::add(const std::string& gitspace, const std::string& user,
                           std::shared_ptr<ServiceExchange> exchange) {
  uint64_t id = next_id_++;
  streams_[id] = Stream{gitspace, user, std::move(exchange)};
  return id;
}

void EventStreams::remove(uint64_t id) {
  streams_.erase(id);
}

void EventStreams::send(const EventRecord& event) {
  std::string bytes;
  for (const auto& [id, stream] : streams_) {
    if (stream.gitspace != event.gitspace) continue;
    if (bytes.empty()) bytes = format(event);
    post([exchange = stream.exchange, bytes] { exchange->sendChunk(bytes); });
  }
}

void EventStreams::finish(const std::string& gitspace) {
  for (auto it = streams_.begin(); it != streams_.end();) {
    if (it->second.gitspace != gitspace) {
      ++it;
      continue;
    }
    post([exchange = it->second.exchange] { exchange->finishStream(); });
    it = streams_.erase(it);
  }
}

void EventStreams::keepAlive() {
  for (const auto& [id, stream] : streams_) {
    post([exchange = stream.exchange] { exchange->sendChunk(": keep-alive\n\n"); });
  }
}

}  // namespace spacegate
