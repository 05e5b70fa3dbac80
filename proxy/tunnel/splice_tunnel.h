// SpliceTunnel: moves the bytes of an established tunnel (after a 101 or a
// CONNECT) between two plaintext sockets with splice(2), socket -> pipe ->
// socket, so they never enter user space. It watches the two descriptors
// with uv_poll handles (the sockets' own libuv stream handles must be idle:
// no read started, no write queued) and drives two directions, each an
// explicit little state machine:
//
//   reading  --(pipe holds bytes the destination would not take)--> blocked
//   blocked  --(destination writable, pipe drained)-------------------> reading
//   reading  --(source EOF, pipe drained: shutdown(destination, WR))-> done
//
// A direction holds a pipe from the worker's PipePool only while bytes sit
// in it. A reset or an error on either socket ends both directions; the
// owner then closes both sockets (with a reset: SO_LINGER 0 is set on both).
#pragma once

#include <uv.h>

#include <cstdint>

#include "tunnel/pipe_pool.h"

namespace spacegate {

class SpliceTunnel {
 public:
  enum class End {
    kFinished,  // both directions saw EOF and delivered every byte
    kReset,     // a reset or error on one side; both sockets will reset
  };

  class Owner {
   public:
    virtual ~Owner() = default;
    // Bytes moved since the last call (client to upstream, upstream to client).
    virtual void onSpliceProgress(uint64_t to_upstream, uint64_t to_client) = 0;
    // The tunnel is over; the owner calls close() and closes the sockets.
    virtual void onSpliceEnd(End end, const char* reason) = 0;
  };

  // Bytes one poll event may move per direction before yielding to the rest
  // of the loop (level-triggered: the event comes again).
  static constexpr size_t kMovePerEvent = 1 << 20;

  SpliceTunnel(uv_loop_t* loop, PipePool& pipes, int client_fd, int upstream_fd, Owner& owner);
  // Starts watching (callbacks come from the loop, never from inside this
  // call). Returns false (a libuv error code in `error`) when a poll handle
  // cannot be made; the object is then already gone and the owner keeps the
  // buffered path.
  bool start(int& error);
  // Stops and frees itself once libuv has closed its handles; no callbacks
  // after this. Closing its poll handles first (synchronously) is what makes
  // it safe to close the sockets right after.
  void close();

 private:
  struct Direction {
    int from = -1;
    int to = -1;
    SplicePipe pipe;
    size_t in_pipe = 0;       // bytes read into the pipe, not yet written out
    bool source_eof = false;  // read returned 0
    bool blocked = false;     // the destination would not take the pipe's bytes
    bool done = false;        // EOF passed on (shutdown sent) and pipe drained
  };

  ~SpliceTunnel() = default;
  static void onPoll(uv_poll_t* handle, int status, int events);
  static void onClosed(uv_handle_t* handle);
  // Moves what it can; false when the tunnel ended (owner told).
  bool pump(Direction& direction, uint64_t& moved);
  void updateWatches();
  void finish(End end, const char* reason);

  uv_loop_t* loop_;
  PipePool& pipes_;
  Owner* owner_;
  uv_poll_t client_poll_;
  uv_poll_t upstream_poll_;
  int client_events_ = -1;  // what each poll handle watches (-1: not started)
  int upstream_events_ = -1;
  int open_handles_ = 0;
  bool ended_ = false;
  Direction to_upstream_;
  Direction to_client_;
};

}  // namespace spacegate
