// fly-edge nginx shell: a Redis connection in subscriber mode (RESP2
// pub/sub), for client-side caching's invalidation channel (issue 11).
//
// The connection is a RedisLink (ngx_fly_redis_link.hpp: connect, AUTH,
// SELECT, the reader, the connection's life through Link); what it
// receives is not matched to commands in a FIFO but handed to a Handler:
// every message as it comes, classified by the core (core/near_push.hpp).
// After the link's handshake it sends CLIENT SETNAME (so that operators,
// and tests, can find it in CLIENT LIST), CLIENT ID (the id a data
// connection's CLIENT TRACKING ... REDIRECT names) and SUBSCRIBE; once
// subscribed it PINGs every `ping_every`: a PONG comes after everything
// Redis sent before it, so it proves the messages up to then were
// delivered.  No PONG within `pong_timeout` drops the connection.  After
// any failure a new connection is made after a backoff (Link), and so on
// until the worker exits.
#pragma once

#include "ngx_fly.hpp"
#include "ngx_fly_event.hpp"
#include "ngx_fly_redis_link.hpp"
#include "core/near_push.hpp"

namespace fly {

class RedisSubscriber final : private RedisLink::Owner {
public:
    class Handler {
    public:
        // Subscribed; `client_id` is this connection's CLIENT ID.
        virtual void sub_up(long long client_id) noexcept = 0;
        // A message on the channel (invalidate or flush).  Valid during
        // the call only.
        virtual void sub_message(const core::PushMessage &m) noexcept = 0;
        // The PING sent at `sent` (ngx_current_msec) was answered.
        virtual void sub_pong(ngx_msec_t sent) noexcept = 0;
        // Not subscribed any more (or the connection did not come).
        virtual void sub_down() noexcept = 0;

    protected:
        ~Handler() = default;
    };

    RedisSubscriber(Handler *handler, ngx_msec_t connect_timeout,
                    ngx_msec_t ping_every, ngx_msec_t pong_timeout,
                    ngx_log_t *log) noexcept;
    ~RedisSubscriber() = default;
    RedisSubscriber(const RedisSubscriber &) = delete;
    RedisSubscriber &operator=(const RedisSubscriber &) = delete;

    // `name` is the CLIENT SETNAME (no spaces); false when out of memory.
    bool init(const RedisConf &conf, ngx_resolver_t *resolver,
              ngx_msec_t resolver_timeout, const char *name) noexcept;
    // Connects (from the event loop, soon), and again after every failure.
    void start() noexcept;
    bool subscribed() const noexcept { return state_ == State::subscribed; }

private:
    enum class State : uint8_t { down, naming, identifying, subscribing, subscribed };

    // RedisLink::Owner
    void redis_opened(size_t handshake_bytes) noexcept override;
    void redis_up() noexcept override {}
    void redis_down() noexcept override;
    void redis_written(size_t) noexcept override {}
    void redis_received() noexcept override {}
    void redis_reply(core::RespReply &reply) noexcept override;

    bool send(int argc, const char **argv, const size_t *argvlen) noexcept;
    void fail_with(const char *what, const core::RespReply &reply) noexcept;
    void on_start() noexcept;
    void on_ping() noexcept;

    Handler *handler_;
    ngx_log_t *log_;
    ngx_msec_t ping_every_;
    ngx_msec_t pong_timeout_;
    State state_ = State::down;
    long long client_id_ = -1;
    ngx_msec_t ping_sent_ = 0;    // the PING awaiting its PONG
    bool ping_out_ = false;
    char name_[64] = {};
    Event start_;                 // connects from the event loop
    Event ping_;
    RedisLink link_;
};

}  // namespace fly
