#include "service/sse_reader.h"

namespace spacegate {

SseReader::Status SseReader::feed(std::string_view bytes,
                                  const std::function<bool(const SseEvent&)>& on_event) {
  if (at_stream_start_ && !bytes.empty()) {
    // The BOM may arrive split over reads: wait until three bytes decide.
    static constexpr std::string_view kBom = "\xEF\xBB\xBF";
    line_.append(bytes);
    if (line_.size() < kBom.size() && kBom.starts_with(line_)) return Status::kMore;
    at_stream_start_ = false;
    std::string start = std::move(line_);
    line_.clear();
    std::string_view rest = start;
    if (rest.starts_with(kBom)) rest.remove_prefix(kBom.size());
    return feed(rest, on_event);
  }
  size_t begin = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    char c = bytes[i];
    if (c != '\r' && c != '\n') continue;
    if (c == '\n' && after_cr_ && i == begin && line_.empty()) {
      // The LF of a CRLF whose CR ended the previous line.
      after_cr_ = false;
      begin = i + 1;
      continue;
    }
    after_cr_ = c == '\r';
    std::string_view piece = bytes.substr(begin, i - begin);
    Status status;
    if (line_.empty()) {
      if (piece.size() > max_bytes_) return Status::kTooLong;
      status = processLine(piece, on_event);
    } else {
      if (line_.size() + piece.size() > max_bytes_) return Status::kTooLong;
      line_.append(piece);
      std::string line = std::move(line_);
      line_.clear();
      status = processLine(line, on_event);
    }
    begin = i + 1;
    if (status != Status::kMore) return status;
  }
  if (begin < bytes.size()) {
    after_cr_ = false;
    if (line_.size() + (bytes.size() - begin) > max_bytes_) return Status::kTooLong;
    line_.append(bytes.substr(begin));
  }
  return Status::kMore;
}

SseReader::Status SseReader::processLine(std::string_view line,
                                         const std::function<bool(const SseEvent&)>& on_event) {
  if (line.empty()) {
    // The end of an event: dispatched only when it carried data.
    if (!has_data_) {
      type_.clear();
      return Status::kMore;
    }
    SseEvent event;
    event.id = last_event_id_;
    event.type = type_.empty() ? "message" : type_;
    event.data = std::move(data_);
    data_.clear();
    has_data_ = false;
    type_.clear();
    return on_event(event) ? Status::kMore : Status::kStopped;
  }
  if (line.front() == ':') return Status::kMore;  // a comment: keep-alives
  std::string_view field = line;
  std::string_view value;
  if (size_t colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (value.starts_with(' ')) value.remove_prefix(1);
  }
  if (field == "data") {
    if (data_.size() + value.size() + 1 > max_bytes_) return Status::kTooLong;
    if (has_data_) data_ += '\n';
    data_.append(value);
    has_data_ = true;
  } else if (field == "event") {
    type_.assign(value);
  } else if (field == "id") {
    // An id holding NUL is ignored, as the spec says.
    if (value.find('\0') == std::string_view::npos) last_event_id_.assign(value);
  } else if (field == "retry") {
    uint64_t retry = 0;
    bool digits = !value.empty() && value.size() <= 18;
    for (char c : value) {
      if (c < '0' || c > '9') {
        digits = false;
        break;
      }
      retry = retry * 10 + static_cast<uint64_t>(c - '0');
    }
    if (digits) retry_ms_ = retry;
  }
  // Other fields are ignored.
  return Status::kMore;
}

}  // namespace spacegate
