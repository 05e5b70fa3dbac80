// Every limit and timeout the gateway applies to what clients and upstreams
// control, in one place, with its default. Loaded from the `limits:` and
// `upstream_pool:` sections of the config file; docs/configuration.md lists
// them for operators.
#pragma once

#include <cstdint>

namespace spacegate {

struct Limits {
  // Largest request or response header block (start line + fields), bytes.
  // Over it: 431 for requests, 502 for upstream responses.
  uint32_t header_block_size = 64 * 1024;
  // Most header fields in one head (trailers count too). Over it: 431.
  uint32_t header_field_count = 100;
  // Time from the first byte of a request (or from accept) to the end of its
  // header block. Defeats slowloris. Over it: 408 and close.
  uint64_t header_read_timeout_ms = 10'000;
  // How long an idle client keep-alive connection is kept open.
  uint64_t keepalive_idle_timeout_ms = 75'000;
  // Longest silence while a request body is being received, or while the
  // client does not take response bytes. Over it: the exchange is aborted.
  uint64_t client_body_timeout_ms = 60'000;
  // Connecting to an upstream (TCP handshake). Over it: 504.
  uint64_t upstream_connect_timeout_ms = 5'000;
  // From the end of the request head to the upstream's response head, and
  // the longest silence inside an upstream response body. Over it: 504 (or
  // an aborted response once its head was sent).
  uint64_t upstream_response_timeout_ms = 60'000;
  // Idle time after which an upgraded (WebSocket) or CONNECT tunnel is
  // closed. IDE sessions live for hours, quiet most of the time.
  uint64_t tunnel_idle_timeout_ms = 3'600'000;
  // Tunnels between plaintext sockets move bytes with splice(2) (zero copy);
  // off, they take the buffered path (for comparison and tests).
  bool tunnel_splice = true;
  // Largest request body in bytes; 0 means no limit. Over it: 413.
  uint64_t request_body_size = 0;
  // On SIGTERM/SIGINT, how long requests in flight may take to finish.
  uint64_t shutdown_grace_ms = 30'000;
  // Queued outbound bytes on one side above which reading the other side
  // stops (backpressure), and below which it resumes.
  uint32_t write_high_water = 256 * 1024;
  uint32_t write_low_water = 64 * 1024;
};

// HTTP/2's own limits, in one place (the `http2:` config section), like
// Envoy's protocol constraints: what a client may do with frames before the
// gateway resets the stream or sends GOAWAY and closes. Header list size and
// field count come from Limits (the same for both codecs).
struct Http2Limits {
  // Announced in SETTINGS_MAX_CONCURRENT_STREAMS (nghttp2's default is
  // unlimited); more open streams are refused.
  uint32_t max_concurrent_streams = 100;
  // Per-stream receive window announced to clients; a stream's window opens
  // again only as its bytes are written upstream (backpressure).
  uint32_t initial_window_size = 256 * 1024;
  // CONTINUATION frames allowed for one header block (CONTINUATION flood).
  uint32_t max_continuations = 8;
  // Entries in one SETTINGS frame (SETTINGS flood).
  uint32_t max_settings = 32;
  // Queued SETTINGS/PING ACKs before the client is cut off (ping and
  // settings floods of a client that does not read).
  uint32_t max_outbound_ack = 1000;
  // Stream resets, both the client's RST_STREAMs (Rapid Reset) and those
  // the gateway sends because of the client (MadeYouReset): a bucket of
  // `stream_reset_burst` refilled at `stream_reset_rate` per second. Empty:
  // GOAWAY and close.
  uint32_t stream_reset_burst = 1000;
  uint32_t stream_reset_rate = 33;
  // A stream whose response waits this long on a zero flow-control window
  // is reset (the client stalls it on purpose or is stuck).
  uint64_t zero_window_timeout_ms = 30'000;
};

struct UpstreamPoolLimits {
  // Idle keep-alive connections kept per upstream address, per worker.
  uint32_t idle_connections = 128;
  // How long an idle upstream connection is kept.
  uint64_t idle_timeout_ms = 60'000;
};

}  // namespace spacegate
