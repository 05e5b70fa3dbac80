// EventStreams: the open Server-Sent Event streams of Gitspaces' events.
// ControlPlane writes an event, then hands it here under its mutex; the
// bytes go to each stream through the server's loop (post), so every stream
// gets its events in the order they were written, whichever thread wrote
// them. Bounded: at most `max_streams` open at once.
//
// Not thread-safe: called under ControlPlane's mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "control/server/control_records.h"
#include "service/service_server.h"

namespace spacegate {

class EventStreams {
 public:
  using Post = std::function<void(std::function<void()>)>;

  explicit EventStreams(uint64_t max_streams) : max_streams_(max_streams) {}
  // How work reaches the server's loop (ServiceServer::post).
  void setPost(Post post) { post_ = std::move(post); }
  void post(std::function<void()> task) {
    if (post_) {
      post_(std::move(task));
    } else {
      task();
    }
  }

  bool full() const { return streams_.size() >= max_streams_; }
  size_t size() const { return streams_.size(); }
  size_t countOf(const std::string& user) const;
  // Registers a stream that has been started; returns its id.
  uint64_t add(const std::string& gitspace, const std::string& user,
               std::shared_ptr<ServiceExchange> exchange);
  void remove(uint64_t id);
  // Sends an event to every stream of its Gitspace.
  void send(const EventRecord& event);
  // Ends every stream of a Gitspace (it was deleted).
  void finish(const std::string& gitspace);
  // A comment line on every stream.
  void keepAlive();

  // "id: N\nevent: type\ndata: {json}\n\n".
  static std::string format(const EventRecord& event);
  static nlohmann::json eventJson(const EventRecord& event);

 private:
  struct Stream {
    std::string gitspace;
    std::string user;
    std::shared_ptr<ServiceExchange> exchange;
  };
  uint64_t max_streams_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Stream> streams_;
  Post post_;
};

}  // namespace spacegate
