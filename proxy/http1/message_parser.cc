#include "http1/message_parser.h"

#include <cstring>

namespace spacegate {

namespace {

std::string_view trimWhitespace(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

bool startsWithIgnoringCase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && equalsIgnoringCase(text.substr(0, prefix.size()), prefix);
}

// A Host value: reg-name / IPv4 / [IPv6], optional :port. No whitespace,
// no commas, no userinfo.
bool isValidHostValue(std::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == ':' || c == '[' || c == ']';
    if (!ok) return false;
  }
  return true;
}

// RFC 9112 section 6.3: a response to HEAD, a 1xx, 204 or 304 has no body
// whatever its Content-Length or Transfer-Encoding say, and a 2xx to CONNECT
// turns the connection into a tunnel. llhttp must be told (from
// onHeadersComplete), or it reads a body the gateway's framing says is not
// there: the upstream's next bytes would reach the client as body bytes.
bool responseHasNoBody(uint8_t request_method, unsigned status) {
  return request_method == HTTP_HEAD || status < 200 || status == 204 || status == 304 ||
         (request_method == HTTP_CONNECT && status < 300);
}

// Trailers are re-serialized by the gateway as "name: value" lines. What it
// would write must be one valid field line per trailer by the prescan's
// rules, which llhttp does not enforce in a trailer section: it takes names
// like "X Y" or "" there, where the prescan of a head never looks.
bool trailersAreValidFieldLines(const std::vector<std::pair<std::string, std::string>>& trailers) {
  std::string block;
  for (const auto& [name, value] : trailers) {
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) return false;
    block.append(name).append(": ").append(value).append("\r\n");
  }
  block.append("\r\n");
  HeaderBlockPrescan prescan(HeaderBlockPrescan::Kind::kTrailers, block.size(), trailers.size());
  return prescan.scan(block.data(), block.size()) == HeaderBlockPrescan::Result::kComplete &&
         prescan.headEnd() == block.size();
}

}  // namespace

Http1MessageParser::Http1MessageParser(Type type, const Limits& limits)
    : type_(type),
      limits_(limits),
      prescan_(type == Type::kRequest ? HeaderBlockPrescan::Kind::kRequest
                                      : HeaderBlockPrescan::Kind::kResponse,
               limits.header_block_size, limits.header_field_count) {
  llhttp_settings_init(&settings_);
  settings_.on_message_begin = &onMessageBegin;
  settings_.on_header_field = &onHeaderField;
  settings_.on_header_value = &onHeaderValue;
  settings_.on_header_field_complete = &onHeaderFieldComplete;
  settings_.on_headers_complete = &onHeadersComplete;
  settings_.on_body = &onBody;
  settings_.on_message_complete = &onMessageComplete;
  llhttp_init(&parser_, type == Type::kRequest ? HTTP_REQUEST : HTTP_RESPONSE, &settings_);
  parser_.data = this;
}

void Http1MessageParser::reset() {
  prescan_.reset();
  head_ = nullptr;
  in_value_ = false;
  in_name_ = false;
  headers_done_ = false;
  message_complete_ = false;
  head_consumed_ = 0;
  error_status_ = 0;
  error_reason_ = "";
  body_handler_ = nullptr;
  body_error_ = false;
  chunked_body_ = false;
  chunked_prescan_.reset();
  trailers_.clear();
  trailer_bytes_ = 0;
  // llhttp itself continues with the next message; it was paused at the end
  // of the previous one and resumed then.
}

int Http1MessageParser::onMessageBegin(llhttp_t*) {
  return 0;
}

// A field begins with its first name callback after the previous field's name
// completed; a name may come in pieces only when split across reads (trailers).
int Http1MessageParser::onHeaderField(llhttp_t* parser, const char* at, size_t length) {
  Http1MessageParser& parser_self = self(parser);
  bool starts_field = !parser_self.in_name_;
  parser_self.in_name_ = true;
  parser_self.in_value_ = false;
  if (parser_self.headers_done_) {
    // Trailer field name (chunked body): copied, it may be split across reads.
    auto& trailers = parser_self.trailers_;
    parser_self.trailer_bytes_ += length;
    if (starts_field) {
      if (trailers.size() >= parser_self.limits_.header_field_count) return -1;
      trailers.emplace_back();
    }
    if (parser_self.trailer_bytes_ > parser_self.limits_.header_block_size) return -1;
    trailers.back().first.append(at, length);
    return 0;
  }
  HeaderList& headers = parser_self.head_->headers;
  if (starts_field) {
    headers.push_back(
        HeaderField{std::string_view(at, length), std::string_view(at + length, 0), {}});
  } else {
    HeaderField& field = headers.back();
    field.name = std::string_view(field.name.data(), at + length - field.name.data());
  }
  return 0;
}

int Http1MessageParser::onHeaderFieldComplete(llhttp_t* parser) {
  self(parser).in_name_ = false;
  return 0;
}

int Http1MessageParser::onHeaderValue(llhttp_t* parser, const char* at, size_t length) {
  Http1MessageParser& parser_self = self(parser);
  if (parser_self.headers_done_) {
    parser_self.trailer_bytes_ += length;
    if (parser_self.trailer_bytes_ > parser_self.limits_.header_block_size) return -1;
    if (parser_self.trailers_.empty()) return -1;
    parser_self.trailers_.back().second.append(at, length);
    parser_self.in_value_ = true;
    return 0;
  }
  HeaderField& field = parser_self.head_->headers.back();
  if (!parser_self.in_value_ || field.value.empty()) {
    field.value = std::string_view(at, length);
  } else {
    field.value = std::string_view(field.value.data(), at + length - field.value.data());
  }
  parser_self.in_value_ = true;
  return 0;
}

int Http1MessageParser::onHeadersComplete(llhttp_t* parser) {
  Http1MessageParser& parser_self = self(parser);
  parser_self.headers_done_ = true;
  parser_self.in_value_ = false;
  MessageHead& head = *parser_self.head_;
  head.version_major = parser->http_major;
  head.version_minor = parser->http_minor;
  head.keep_alive = llhttp_should_keep_alive(parser) != 0;
  head.content_length = parser->content_length;
  if (parser_self.type_ == Type::kResponse) {
    uint16_t status = parser->status_code;
    // 2: no body, and the connection becomes a tunnel; 1: no body.
    if (parser_self.request_method_ == HTTP_CONNECT && status >= 200 && status < 300) return 2;
    if (responseHasNoBody(parser_self.request_method_, status)) return 1;
  }
  return 0;
}

int Http1MessageParser::onBody(llhttp_t* parser, const char* at, size_t length) {
  Http1MessageParser& parser_self = self(parser);
  if (parser_self.body_handler_) parser_self.body_handler_->onBodyData(at, length);
  return 0;
}

int Http1MessageParser::onMessageComplete(llhttp_t* parser) {
  Http1MessageParser& parser_self = self(parser);
  parser_self.message_complete_ = true;
  // Stop here: the bytes after this message belong to the next one, which
  // waits until the current exchange is finished.
  return HPE_PAUSED;
}

Http1MessageParser::HeadStatus Http1MessageParser::fail(int status, const char* reason) {
  error_status_ = status;
  error_reason_ = reason;
  return HeadStatus::kError;
}

Http1MessageParser::HeadStatus Http1MessageParser::parseHeadCommon(const char* data, size_t size,
                                                                   MessageHead& head) {
  switch (prescan_.scan(data, size)) {
    case HeaderBlockPrescan::Result::kIncomplete: return HeadStatus::kIncomplete;
    case HeaderBlockPrescan::Result::kMalformed:
      return fail(type_ == Type::kRequest ? 400 : 502, prescan_.reason());
    case HeaderBlockPrescan::Result::kTooLarge:
    case HeaderBlockPrescan::Result::kTooManyFields:
      return fail(type_ == Type::kRequest ? 431 : 502, prescan_.reason());
    case HeaderBlockPrescan::Result::kComplete: break;
  }
  head.headers.clear();
  head.headers.reserve(prescan_.fieldCount());
  head_ = &head;
  head_end_ = data + prescan_.headEnd();
  const char* begin = data + prescan_.headBegin();
  size_t length = prescan_.headEnd() - prescan_.headBegin();
  const char* first_line_end = static_cast<const char*>(std::memchr(begin, '\n', length));
  head.raw_first_line = std::string_view(begin, first_line_end + 1 - begin);

  llhttp_errno_t result = llhttp_execute(&parser_, begin, length);
  if (result == HPE_PAUSED) {
    llhttp_resume(&parser_);
  } else if (result == HPE_PAUSED_UPGRADE) {
    llhttp_resume_after_upgrade(&parser_);
  } else if (result != HPE_OK) {
    return fail(type_ == Type::kRequest ? 400 : 502, llhttp_get_error_reason(&parser_));
  }
  if (!headers_done_) return fail(type_ == Type::kRequest ? 400 : 502, "incomplete header block");
  if (!finishFields(head)) return HeadStatus::kError;
  head_consumed_ = prescan_.headEnd();
  chunked_body_ = !message_complete_ && (parser_.flags & F_CHUNKED) != 0;
  return HeadStatus::kComplete;
}

// Trims values and records each field's raw line (for zero-copy forwarding).
bool Http1MessageParser::finishFields(MessageHead& head) {
  for (HeaderField& field : head.headers) {
    // Search from the end of the name: llhttp reports an empty value at the
    // start of the next line, and no value holds a LF (the prescan saw to it).
    const char* name_end = field.name.data() + field.name.size();
    const char* line_end = static_cast<const char*>(
        std::memchr(name_end, '\n', static_cast<size_t>(head_end_ - name_end)));
    if (field.value.empty()) field.value = std::string_view(name_end, 0);
    if (!line_end) {
      fail(type_ == Type::kRequest ? 400 : 502, "malformed header line");
      return false;
    }
    field.raw_line = std::string_view(field.name.data(), line_end + 1 - field.name.data());
    field.value = trimWhitespace(field.value);
  }
  return true;
}

bool Http1MessageParser::decideRequestFraming(RequestHead& head) {
  const HeaderField* host_field = nullptr;
  bool has_transfer_encoding = false;
  bool has_content_length = false;
  bool connection_upgrade = false;
  const HeaderField* upgrade_field = nullptr;
  for (const HeaderField& field : head.headers) {
    if (equalsIgnoringCase(field.name, "host")) {
      if (host_field) {
        fail(400, "more than one Host header");
        return false;
      }
      host_field = &field;
    } else if (equalsIgnoringCase(field.name, "transfer-encoding")) {
      has_transfer_encoding = true;
    } else if (equalsIgnoringCase(field.name, "content-length")) {
      has_content_length = true;
    } else if (equalsIgnoringCase(field.name, "expect")) {
      if (!equalsIgnoringCase(field.value, "100-continue")) {
        fail(417, "unsupported Expect");
        return false;
      }
      head.expect_continue = true;
    } else if (equalsIgnoringCase(field.name, "connection")) {
      forEachListToken(field.value, [&](std::string_view token) {
        if (equalsIgnoringCase(token, "upgrade")) connection_upgrade = true;
      });
    } else if (equalsIgnoringCase(field.name, "upgrade")) {
      upgrade_field = &field;
    }
  }
  if (has_transfer_encoding) {
    if (head.version_major == 1 && head.version_minor == 0) {
      fail(400, "Transfer-Encoding in an HTTP/1.0 request");
      return false;
    }
    if (has_content_length) {
      fail(400, "both Content-Length and Transfer-Encoding");
      return false;
    }
    // Only "chunked" alone is accepted: the gateway does not decode other
    // codings, and a list not ending in chunked has no reliable length.
    int tokens = 0;
    bool last_is_chunked = false;
    for (const HeaderField& field : head.headers) {
      if (!equalsIgnoringCase(field.name, "transfer-encoding")) continue;
      forEachListToken(field.value, [&](std::string_view token) {
        ++tokens;
        last_is_chunked = equalsIgnoringCase(token, "chunked");
      });
    }
    if (!last_is_chunked) {
      fail(400, "Transfer-Encoding does not end in chunked");
      return false;
    }
    if (tokens != 1) {
      fail(501, "unsupported transfer coding");
      return false;
    }
  }
  if ((parser_.flags & F_CHUNKED) != 0) {
    head.framing = BodyFraming::kChunked;
  } else if ((parser_.flags & F_CONTENT_LENGTH) != 0) {
    head.framing = head.content_length > 0 ? BodyFraming::kContentLength : BodyFraming::kNone;
  } else {
    head.framing = BodyFraming::kNone;
  }
  if (has_transfer_encoding != (head.framing == BodyFraming::kChunked)) {
    fail(400, "inconsistent message framing");
    return false;
  }
  if (limits_.request_body_size != 0 && head.framing == BodyFraming::kContentLength &&
      head.content_length > limits_.request_body_size) {
    fail(413, "request body too large");
    return false;
  }

  head.method = parser_.method;
  head.method_name = llhttp_method_name(static_cast<llhttp_method_t>(parser_.method));
  head.is_connect = parser_.method == HTTP_CONNECT;
  // Request line: METHOD SP target SP HTTP/x.y CRLF (the prescan checked the tail).
  std::string_view line = head.raw_first_line;
  size_t first_space = line.find(' ');
  size_t last_space = line.rfind(' ');
  if (first_space == std::string_view::npos || last_space <= first_space + 1) {
    fail(400, "malformed request line");
    return false;
  }
  head.target = line.substr(first_space + 1, last_space - first_space - 1);
  // Exactly one SP on each side of the target, and no whitespace or control
  // byte in it (RFC 9112 section 3). llhttp skips extra spaces and, outside
  // strict mode, lets HTAB and FF into the URL: they would stay in the
  // target the gateway routes on and forwards as it came, where an upstream
  // may split the line at them.
  for (char c : head.target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      fail(400, "malformed request line");
      return false;
    }
  }
  std::string_view authority;
  if (head.is_connect) {
    authority = head.target;
    head.path = {};
  } else if (head.target.front() == '/') {
    head.path = head.target;
  } else if (head.target == "*" && parser_.method == HTTP_OPTIONS) {
    head.path = head.target;
  } else if (startsWithIgnoringCase(head.target, "http://") ||
             startsWithIgnoringCase(head.target, "https://")) {
    // Absolute form: the authority in the target wins over Host (RFC 9112 3.2.2).
    std::string_view rest = head.target.substr(head.target.find("//") + 2);
    size_t slash = rest.find_first_of("/?");
    authority = rest.substr(0, slash);
    if (slash == std::string_view::npos) {
      head.path = "/";
    } else if (rest[slash] == '/') {
      head.path = rest.substr(slash);
    } else {
      fail(400, "absolute-form target without a path");
      return false;
    }
  } else {
    fail(400, "unsupported request-target form");
    return false;
  }
  if (head.version_major == 1 && head.version_minor == 1 && !host_field) {
    fail(400, "missing Host header");
    return false;
  }
  head.host = !authority.empty() ? authority : host_field ? host_field->value : std::string_view{};
  if (!head.host.empty() && !isValidHostValue(head.host)) {
    fail(400, "invalid Host");
    return false;
  }
  head.upgrade = !head.is_connect && upgrade_field && connection_upgrade;
  return true;
}

bool Http1MessageParser::decideResponseFraming(ResponseHead& head) {
  head.status = parser_.status_code;
  std::string_view line = head.raw_first_line;
  // "HTTP/1.1 200 OK\r\n": the reason starts after the status code.
  head.reason = line.size() > 15 ? line.substr(13, line.size() - 15) : std::string_view{};
  bool has_transfer_encoding = false;
  for (const HeaderField& field : head.headers) {
    if (equalsIgnoringCase(field.name, "transfer-encoding")) has_transfer_encoding = true;
  }
  if (responseHasNoBody(request_method_, head.status)) {
    head.framing = BodyFraming::kNone;
  } else if ((parser_.flags & F_CHUNKED) != 0) {
    head.framing = BodyFraming::kChunked;
  } else if (has_transfer_encoding) {
    // A coding other than chunked last: the body would run to EOF with a
    // coding the gateway cannot re-frame. Refuse rather than guess.
    fail(502, "upstream Transfer-Encoding not ending in chunked");
    return false;
  } else if ((parser_.flags & F_CONTENT_LENGTH) != 0) {
    head.framing = head.content_length > 0 ? BodyFraming::kContentLength : BodyFraming::kNone;
  } else {
    head.framing = BodyFraming::kUntilClose;
    head.keep_alive = false;
  }
  head.upgrade = head.status == 101;
  return true;
}

Http1MessageParser::HeadStatus Http1MessageParser::parseHead(const char* data, size_t size,
                                                             RequestHead& head) {
  HeadStatus status = parseHeadCommon(data, size, head);
  if (status != HeadStatus::kComplete) return status;
  if (!decideRequestFraming(head)) return HeadStatus::kError;
  return status;
}

Http1MessageParser::HeadStatus Http1MessageParser::parseHead(const char* data, size_t size,
                                                             ResponseHead& head) {
  HeadStatus status = parseHeadCommon(data, size, head);
  if (status != HeadStatus::kComplete) return status;
  if (!decideResponseFraming(head)) return HeadStatus::kError;
  // 1xx heads other than 101 are interim: the final response follows on the
  // same connection, so llhttp must be ready for a new message.
  return status;
}

Http1MessageParser::BodyResult Http1MessageParser::parseBody(const char* data, size_t size,
                                                             BodyHandler& handler) {
  BodyResult result;
  if (message_complete_) {
    result.complete = true;
    return result;
  }
  // The strict framing check goes first, so that nothing of an input it
  // refuses reaches the handler.
  auto framing = ChunkedBodyPrescan::Result::kIncomplete;
  size_t framing_end = 0;
  if (chunked_body_) {
    framing = chunked_prescan_.scan(data, size, framing_end);
    if (framing == ChunkedBodyPrescan::Result::kMalformed) {
      result.error = true;
      return result;
    }
  }
  body_handler_ = &handler;
  llhttp_errno_t status = llhttp_execute(&parser_, data, size);
  body_handler_ = nullptr;
  if (status == HPE_OK) {
    result.consumed = size;
  } else if (status == HPE_PAUSED || status == HPE_PAUSED_UPGRADE) {
    const char* stop = llhttp_get_error_pos(&parser_);
    result.consumed = stop ? static_cast<size_t>(stop - data) : size;
    if (status == HPE_PAUSED) {
      llhttp_resume(&parser_);
    } else {
      llhttp_resume_after_upgrade(&parser_);
    }
  } else {
    result.error = true;
    return result;
  }
  if (chunked_body_ && (message_complete_ != (framing == ChunkedBodyPrescan::Result::kComplete) ||
                        (message_complete_ && result.consumed != framing_end))) {
    // llhttp and the strict framing disagree on where the body ends.
    result.error = true;
    return result;
  }
  if (message_complete_) {
    if (!trailers_.empty() && !trailersAreValidFieldLines(trailers_)) {
      result.error = true;
      return result;
    }
    result.complete = true;
    handler.onMessageComplete(trailers_);
  }
  return result;
}

bool Http1MessageParser::finishAtEof(BodyHandler& handler) {
  if (message_complete_) return true;
  body_handler_ = &handler;
  llhttp_errno_t status = llhttp_finish(&parser_);
  body_handler_ = nullptr;
  if ((status == HPE_OK || status == HPE_PAUSED) && message_complete_) {
    handler.onMessageComplete(trailers_);
    return true;
  }
  return false;
}

}  // namespace spacegate
