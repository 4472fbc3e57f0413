// fly-edge nginx shell: the one TCP connection of a Redis client
// (ngx_fly_redis.cpp holds the command side: ops, deadlines, callbacks).
//
// hiredis connects (to an address: names go through nginx's resolver, see
// Peer) and writes: output is appended to its buffer and flushed by an
// event posted to ngx_posted_events, so that everything queued during one
// event-loop iteration goes out in one write().  Reading is ours: recv()
// or readv() into where core::RespReader says, until the socket is drained
// (edge-triggered epoll), so a large bulk string is received straight into
// its final block.  AUTH and SELECT go first on every connection; their
// replies are the link's, every other reply goes to the owner.  The life
// of the connection (connect timeout, failures, backoff, shutdown) is
// Link's (ngx_fly_event.hpp).
//
// hiredis may free its context from inside any call into it (errors in
// redisAsyncHandleWrite, the connect callback): every such call, and every
// call into the owner, is followed by a check of gen_, which the cleanup
// hook bumps.
#pragma once

#include "ngx_fly.hpp"
#include "ngx_fly_event.hpp"
#include "core/resp.hpp"

struct redisAsyncContext;

namespace fly {

class RedisLink final : private Link::Driver {
public:
    // What the link tells the command side.
    class Owner {
    public:
        // A connection was opened: its output stream starts with the
        // handshake (`handshake_bytes`); held commands may follow.
        virtual void redis_opened(size_t handshake_bytes) noexcept = 0;
        // Ready: the handshake succeeded.
        virtual void redis_up() noexcept = 0;
        // The connection is gone, or did not come: fail everything.
        virtual void redis_down() noexcept = 0;
        // `n` more bytes of the output went to the socket.
        virtual void redis_written(size_t n) noexcept = 0;
        // Bytes came from Redis (a reply or a part of one).
        virtual void redis_received() noexcept = 0;
        // A reply (not the handshake's), in order; it may be taken apart
        // (the link frees what is left).
        virtual void redis_reply(core::RespReply &reply) noexcept = 0;

    protected:
        ~Owner() = default;
    };

    RedisLink(Owner *owner, ngx_msec_t connect_timeout, ngx_log_t *log) noexcept;
    ~RedisLink();
    RedisLink(const RedisLink &) = delete;
    RedisLink &operator=(const RedisLink &) = delete;

    bool init(const RedisConf &conf, ngx_resolver_t *resolver,
              ngx_msec_t resolver_timeout) noexcept;

    // The first command connects; false when Redis cannot be used now.
    bool start() noexcept { return link_.start(); }
    bool usable() const noexcept { return link_.usable(); }
    Link::State state() const noexcept { return link_.state(); }
    bool exiting() const noexcept { return link_.exiting(); }
    // Output (connecting or ready only).  False when out of memory.
    bool output(const char *p, size_t n) noexcept;
    // Formats a command into the output; *n is its size.
    bool output_command(int argc, const char **argv, const size_t *argvlen,
                        size_t *n) noexcept;
    // Logs `what`, drops the connection, backs off.
    void fail(const char *what, ngx_err_t err = 0) noexcept
    {
        link_.fail(err, what);
    }
    // The worker is exiting and nothing waits: for good.
    void shut_down() noexcept { link_.shut_down(); }
    Peer &peer() noexcept { return peer_; }

private:
    // Link::Driver
    bool link_open(const PeerAddress &a) noexcept override;
    bool link_close() noexcept override;
    void link_down() noexcept override { owner_->redis_down(); }
    void link_up() noexcept override { owner_->redis_up(); }

    void on_handshake(const core::RespReply &reply) noexcept;
    void want_write() noexcept;
    void flush() noexcept;
    void on_readable() noexcept;
    void on_writable() noexcept;
    void reader_failed() noexcept;
    void on_cleanup() noexcept;

    // called by hiredis
    static void ev_add_read(void *) noexcept {}
    static void ev_del_read(void *) noexcept {}
    static void ev_add_write(void *p) noexcept;
    static void ev_del_write(void *p) noexcept;
    static void ev_cleanup(void *p) noexcept;
    static void on_connect(const redisAsyncContext *ac, int status) noexcept;

    Owner *owner_;
    ngx_log_t *log_;
    Peer peer_;
    Link link_;
    core::ByteBuf auth_;          // AUTH command, empty if none
    core::ByteBuf select_;        // SELECT command, empty if db 0
    const char *hs_what_[2] = {nullptr, nullptr};
    int handshake_ = 0;           // AUTH / SELECT replies still awaited
    int hs_next_ = 0;             // index in hs_what_ of the next one

    redisAsyncContext *ac_ = nullptr;
    uint64_t gen_ = 0;            // bumped whenever a context goes away
    uint64_t added_ = 0;          // bytes ever appended to the output
    bool in_write_ = false;
    bool destroying_ = false;
    LibSocket sock_;
    Event flush_;                 // posted: write what this iteration queued
    core::RespReader reader_;
};

}  // namespace fly
