// SseReader: turns the bytes of a Server-Sent Events stream into events, as
// the WHATWG "event stream interpretation" says: lines end with CRLF, LF or
// CR (also split across reads); `data:` lines join with "\n"; `event:` sets
// the type (default "message"); `id:` sets the last event id, which stays
// for later events and is what a client resumes from (`Last-Event-ID`);
// lines starting with ':' are comments (keep-alives); an empty line ends an
// event, and an event without data is not dispatched. It is fed whatever
// ServiceClient::stream() hands over. Sans-IO, so tests feed it byte by byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace spacegate {

struct SseEvent {
  std::string id;    // the last event id when it was dispatched (may be empty)
  std::string type;  // "message" unless an `event:` field said otherwise
  std::string data;  // the data lines joined with "\n"
};

class SseReader {
 public:
  enum class Status {
    kMore,     // every byte was used; feed the next ones
    kStopped,  // on_event returned false; the rest of the bytes were not read
    kTooLong,  // a line or an event's data grew over max_bytes: not SSE (or hostile)
  };

  explicit SseReader(size_t max_bytes = 1u << 20) : max_bytes_(max_bytes) {}

  // Feeds the next bytes; calls `on_event` for each event completed by them.
  Status feed(std::string_view bytes, const std::function<bool(const SseEvent&)>& on_event);

  // The id of the last `id:` field seen (what to resume after).
  const std::string& lastEventId() const { return last_event_id_; }
  // The last `retry:` field, in milliseconds (0: none seen).
  uint64_t retryMs() const { return retry_ms_; }

 private:
  // One complete line (without its end).
  Status processLine(std::string_view line, const std::function<bool(const SseEvent&)>& on_event);

  size_t max_bytes_;
  std::string line_;             // the line being read
  bool after_cr_ = false;        // the previous byte was CR: a following LF belongs to it
  bool at_stream_start_ = true;  // a leading UTF-8 BOM is dropped
  std::string data_;             // the data of the event being read
  bool has_data_ = false;
  std::string type_;
  std::string last_event_id_;
  uint64_t retry_ms_ = 0;
};

}  // namespace spacegate
