// fly-edge nginx shell: a Redis connection in subscriber mode (see
// ngx_fly_redis_sub.hpp).
#include "ngx_fly_redis_sub.hpp"

#include <cstring>

namespace fly {

RedisSubscriber::RedisSubscriber(Handler *handler, ngx_msec_t connect_timeout,
                                 ngx_msec_t ping_every,
                                 ngx_msec_t pong_timeout,
                                 ngx_log_t *log) noexcept
    : handler_(handler),
      log_(log),
      ping_every_(ping_every),
      pong_timeout_(pong_timeout),
      link_(this, connect_timeout, log)
{
    start_.init(call<&RedisSubscriber::on_start>, this, log);
    ping_.init(call<&RedisSubscriber::on_ping>, this, log);
}

bool RedisSubscriber::init(const RedisConf &conf, ngx_resolver_t *resolver,
                           ngx_msec_t resolver_timeout,
                           const char *name) noexcept
{
    size_t n = std::strlen(name);
    if (n >= sizeof(name_)) {
        n = sizeof(name_) - 1;
    }
    std::memcpy(name_, name, n);
    name_[n] = '\0';
    RedisConf c = conf;
    c.name = "tracking";         // "fly redis tracking <host:port>: ..."
    return link_.init(c, resolver, resolver_timeout);
}

void RedisSubscriber::start() noexcept
{
    start_.arm(0);
}

void RedisSubscriber::on_start() noexcept
{
    link_.start();     // and the link connects again after every failure
}

bool RedisSubscriber::send(int argc, const char **argv,
                           const size_t *argvlen) noexcept
{
    size_t n;
    return link_.output_command(argc, argv, argvlen, &n);
}

// A new connection: the link's handshake (AUTH, SELECT) goes first, then
// this one's.
void RedisSubscriber::redis_opened(size_t) noexcept
{
    const char *setname[3] = {"CLIENT", "SETNAME", name_};
    const char *id[2] = {"CLIENT", "ID"};
    const char *sub[2] = {"SUBSCRIBE", core::kTrackingChannel.data()};
    size_t sublen[2] = {9, core::kTrackingChannel.size()};
    client_id_ = -1;
    ping_out_ = false;
    if (!send(3, setname, nullptr) || !send(2, id, nullptr)
        || !send(2, sub, sublen))
    {
        link_.fail("out of memory");
        return;
    }
    state_ = State::naming;
}

void RedisSubscriber::redis_down() noexcept
{
    bool was = state_ == State::subscribed;
    state_ = State::down;
    client_id_ = -1;
    ping_out_ = false;
    ping_.disarm();
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly redis tracking connection down%s",
                   was ? " (was subscribed)" : "");
    handler_->sub_down();
}

void RedisSubscriber::fail_with(const char *what,
                                const core::RespReply &reply) noexcept
{
    bool err = reply.type == core::RespType::error;
    u_char msg[256];
    u_char *e = ngx_snprintf(msg, sizeof(msg) - 1, "%s: %s reply%s%*s", what,
                             core::resp_type_name(reply.type),
                             err ? " " : "",
                             err ? (reply.len < 160 ? reply.len : 160)
                                 : static_cast<size_t>(0),
                             reply.str ? reply.str : "");
    *e = '\0';
    link_.fail(reinterpret_cast<const char *>(msg));
}

void RedisSubscriber::redis_reply(core::RespReply &reply) noexcept
{
    switch (state_) {
    case State::down:
        return;

    case State::naming:
        if (reply.type != core::RespType::status) {
            fail_with("CLIENT SETNAME failed", reply);
            return;
        }
        state_ = State::identifying;
        return;

    case State::identifying:
        if (reply.type != core::RespType::integer || reply.integer <= 0) {
            fail_with("CLIENT ID failed", reply);
            return;
        }
        client_id_ = reply.integer;
        state_ = State::subscribing;
        return;

    case State::subscribing: {
        core::PushMessage m = core::classify_push(reply);
        if (m.kind != core::PushKind::subscribed) {
            fail_with("SUBSCRIBE failed", reply);
            return;
        }
        state_ = State::subscribed;
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0,
                       "fly redis tracking connection subscribed, "
                       "client id %L", client_id_);
        ping_.arm(ping_every_);
        handler_->sub_up(client_id_);
        return;
    }

    case State::subscribed: {
        core::PushMessage m = core::classify_push(reply);
        switch (m.kind) {
        case core::PushKind::invalidate:
        case core::PushKind::flush:
            handler_->sub_message(m);
            return;
        case core::PushKind::pong:
            if (!ping_out_) {
                fail_with("PONG that was not asked for", reply);
                return;
            }
            ping_out_ = false;
            handler_->sub_pong(ping_sent_);
            return;
        case core::PushKind::subscribed:
        case core::PushKind::other:
            break;
        }
        fail_with("unexpected message", reply);
        return;
    }
    }
}

// Every ping_every_: a PING, unless the last one is still unanswered;
// unanswered for pong_timeout_, the connection is given up.
void RedisSubscriber::on_ping() noexcept
{
    if (state_ != State::subscribed) {
        return;
    }
    if (ping_out_) {
        if (ngx_current_msec - ping_sent_ >= pong_timeout_) {
            u_char msg[96];
            u_char *e = ngx_snprintf(msg, sizeof(msg) - 1,
                                     "no PONG for %M ms, closing the "
                                     "connection", pong_timeout_);
            *e = '\0';
            link_.fail(reinterpret_cast<const char *>(msg));
            return;
        }
    } else {
        const char *ping[1] = {"PING"};
        if (!send(1, ping, nullptr)) {
            link_.fail("out of memory");
            return;
        }
        ping_sent_ = ngx_current_msec;
        ping_out_ = true;
    }
    ping_.arm(ping_every_);
}

}  // namespace fly
