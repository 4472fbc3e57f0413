// fly-edge nginx shell: a non-blocking Redis client on nginx's event loop.
//
// One client per endpoint per worker, each with one persistent connection
// (ngx_fly_redis_link.hpp).  Commands issued while handling one batch of
// events are written together (one write per event-loop iteration), so
// concurrent requests share round trips; the replies awaited at once are
// bounded (by bytes expected, so that large replies do not pile up in
// socket buffers; more commands wait in the client, in order).  Replies
// are read until the socket would block, parsed by the core's RESP reader
// (a large string reply is received straight into the block that becomes
// reply->str) and dispatched in order.
//
// Every wait has a timer.  A command must be written within the command
// timeout and answered within the timeout of its write; if not, it alone
// fails (callback with nullptr) and a late reply is discarded.  The
// connection is dropped only when Redis sends nothing for the liveness
// period (max(1 s, 5 x timeout)) or on an error; then every pending command
// fails, a new connection is tried after a backoff, and meanwhile command()
// fails at once, so a Redis that is down adds no delay.
#pragma once

#include "ngx_fly.hpp"

struct redisReply;

namespace fly {

class RedisConnection;
struct RedisOp;

// Called once per command with the reply, or with nullptr when the
// command failed (not connected, timed out, connection lost, worker
// exiting).  The reply is a hiredis redisReply owned by the client and
// freed after the callback returns (str, when set, is NUL-terminated); a
// callback may keep a string reply's bytes by taking reply->str (set it
// to nullptr and reply->len to 0) and releasing it later with
// redis_free_str().  An error reply (REDIS_REPLY_ERROR) is passed on as it
// is.  A callback may issue new commands; it must not delete the client.
// Pub/sub and MONITOR are not supported (one reply per command).
using RedisCallback = void (*)(void *data, redisReply *reply);

// Told when the client's connection comes and goes (the near cache's
// tracking, ngx_fly_near.cpp, re-enables CLIENT TRACKING on every new
// connection).  Both are called from the event loop; a watcher may issue
// commands from redis_ready().
class RedisWatcher {
public:
    // A connection is established and authenticated.  Commands issued
    // now follow the handshake and whatever was issued before.
    virtual void redis_ready() noexcept = 0;
    // The connection is gone (its pending commands fail right after).
    virtual void redis_lost() noexcept = 0;

protected:
    ~RedisWatcher() = default;
};

class RedisClient {
public:
    // `conf` and the timeouts come from the main conf; `resolver` is the
    // http-level core `resolver` (nullptr when none is configured, then
    // conf.addrs, resolved at load time, are used).  Nothing is connected
    // until the first command.  Does not throw except std::bad_alloc from
    // the allocation of the client itself; when the client's own state
    // cannot be allocated, every command() returns nullptr.
    RedisClient(const RedisConf &conf, ngx_msec_t connect_timeout,
                ngx_msec_t timeout, ngx_resolver_t *resolver,
                ngx_msec_t resolver_timeout, ngx_log_t *log);
    // Closes the connection.  Pending callbacks are NOT called (the worker
    // is exiting); call it from exit_process, never from a callback.
    ~RedisClient();
    RedisClient(const RedisClient &) = delete;
    RedisClient &operator=(const RedisClient &) = delete;

    // Queues a command.  Returns nullptr, without calling `cb`, when it
    // cannot be sent now (backing off after a failure, reconnecting after
    // a failure, worker exiting, out of memory); the caller then treats
    // the cache as unavailable.  Otherwise `cb` is called exactly once,
    // later (never from inside command()), unless cancel() comes first.
    // `cb` may be nullptr for fire-and-forget commands (SET, DEL).
    // argvlen may be nullptr (then every argv[i] is a C string).
    RedisOp *command(int argc, const char **argv, const size_t *argvlen,
                     RedisCallback cb, void *data) noexcept;

    // The request behind `op` is gone: its callback will not be called.
    // Only valid before the callback has run (the op is recycled after
    // it), so clear your copy of the pointer in the callback.
    static void cancel(RedisOp *op) noexcept;

    // The connection is established and authenticated.
    bool connected() const noexcept;

    // One watcher (nullptr: none); it must outlive the client or be
    // removed first.
    void watch(RedisWatcher *w) noexcept;

private:
    RedisConnection *conn_;
};

// Frees a string taken from a reply (reply->str).
void redis_free_str(char *str) noexcept;

}  // namespace fly
