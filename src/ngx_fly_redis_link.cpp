// fly-edge nginx shell: the one TCP connection of a Redis client (see
// ngx_fly_redis_link.hpp).
#include "ngx_fly_redis_link.hpp"

// hiredis 0.14's sds.h declares its functions without extern "C".
extern "C" {
#include <hiredis/sds.h>
}
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <sys/uio.h>

#include <climits>
#include <cstring>

namespace fly {

RedisLink::RedisLink(Owner *owner, ngx_msec_t connect_timeout,
                     ngx_log_t *log) noexcept
    : owner_(owner), log_(log)
{
    link_.init(this, &peer_, connect_timeout, log);
    sock_.init(this, call<&RedisLink::on_readable>,
               call<&RedisLink::on_writable>, call<&RedisLink::shut_down>, log);
    flush_.init(call<&RedisLink::flush>, this, log);
}

bool RedisLink::init(const RedisConf &conf, ngx_resolver_t *resolver,
                     ngx_msec_t resolver_timeout) noexcept
{
    if (!peer_.init("redis", conf.name ? conf.name : "redis", conf.host,
                    conf.port, resolver, resolver_timeout, conf.addrs,
                    conf.naddrs, log_))
    {
        return false;
    }
    if (conf.password.len) {
        const char *argv[3];
        size_t argvlen[3];
        int argc = 0;
        argv[argc] = "AUTH";
        argvlen[argc++] = 4;
        if (conf.user.len) {
            argv[argc] = reinterpret_cast<const char *>(conf.user.data);
            argvlen[argc++] = conf.user.len;
        }
        argv[argc] = reinterpret_cast<const char *>(conf.password.data);
        argvlen[argc++] = conf.password.len;
        if (!core::resp_append_command(auth_, argc, argv, argvlen)) {
            return false;
        }
        hs_what_[handshake_++] = "AUTH";
    }
    if (conf.db != 0) {
        u_char db[NGX_INT_T_LEN];
        const char *argv[2] = {"SELECT", reinterpret_cast<const char *>(db)};
        size_t argvlen[2] = {6, static_cast<size_t>(
                                    ngx_sprintf(db, "%i", conf.db) - db)};
        if (!core::resp_append_command(select_, 2, argv, argvlen)) {
            return false;
        }
        hs_what_[handshake_++] = "SELECT";
    }
    return true;
}

RedisLink::~RedisLink()
{
    destroying_ = true;           // the worker is exiting: no owner calls
    if (ac_ != nullptr) {
        redisAsyncFree(ac_);      // runs on_cleanup
    }
    sock_.release();
}

// ---- connecting ---------------------------------------------------------

bool RedisLink::link_open(const PeerAddress &a) noexcept
{
    redisAsyncContext *ac = redisAsyncConnect(a.text, peer_.port());
    if (ac == nullptr || ac->err) {
        if (ac != nullptr) {
            peer_.error(0, "%s", ac->errstr);
            redisAsyncFree(ac);
        } else {
            peer_.error(0, "out of memory");
        }
        return false;
    }
    if (!sock_.track(ac->c.fd)) {
        redisAsyncFree(ac);
        peer_.error(0, "cannot add the socket to the event loop");
        return false;
    }
    ac_ = ac;               // the hooks below may be called at once
    ac->data = this;
    ac->ev.data = this;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    in_write_ = false;
    reader_.reset();

    // The first replies on the connection are these.
    handshake_ = (auth_.len ? 1 : 0) + (select_.len ? 1 : 0);
    hs_next_ = 0;
    if ((auth_.len && !output(auth_.p, auth_.len))
        || (select_.len && !output(select_.p, select_.len)))
    {
        fail("out of memory");
        return true;
    }
    owner_->redis_opened(auth_.len + select_.len);
    want_write();           // to learn when the connect completes
    return true;
}

void RedisLink::on_connect(const redisAsyncContext *ac, int status) noexcept
{
    auto *self = static_cast<RedisLink *>(ac->data);
    if (status != REDIS_OK) {
        return;   // hiredis frees the context next: on_cleanup logs it
    }
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, self->log_, 0,
                   "fly redis tcp connected, %d handshake replies awaited",
                   self->handshake_);
    if (self->handshake_ == 0) {
        self->link_.ready();
    }
}

void RedisLink::on_handshake(const core::RespReply &reply) noexcept
{
    const char *what = hs_what_[hs_next_++ & 1];
    if (reply.type == core::RespType::error) {
        u_char msg[256];
        u_char *e = ngx_snprintf(msg, sizeof(msg) - 1, "%s failed: %*s", what,
                                 reply.len, reply.str);
        *e = '\0';
        fail(reinterpret_cast<const char *>(msg));
        return;
    }
    if (--handshake_ == 0) {
        link_.ready();
    }
}

// ---- closing ------------------------------------------------------------

bool RedisLink::link_close() noexcept
{
    if (ac_ == nullptr) {
        return true;
    }
    // Runs on_cleanup: at once, or once the hiredis callback we are in
    // has returned.
    redisAsyncFree(ac_);
    return false;
}

void RedisLink::ev_cleanup(void *p) noexcept
{
    static_cast<RedisLink *>(p)->on_cleanup();
}

// hiredis's ev.cleanup: the context is going away (its fd closes next).
void RedisLink::on_cleanup() noexcept
{
    redisAsyncContext *ac = ac_;
    sock_.release();
    flush_.unpost();
    ac_ = nullptr;
    gen_++;
    in_write_ = false;
    reader_.reset();
    if (!destroying_) {
        link_.closed(ac && ac->errstr && *ac->errstr ? ac->errstr
                                                     : "connection lost");
    }
}

// ---- writing ------------------------------------------------------------

bool RedisLink::output(const char *p, size_t n) noexcept
{
    redisContext *c = &ac_->c;
    if (c->flags & (REDIS_DISCONNECTING | REDIS_FREEING)) {
        return false;
    }
    sds ob = sdscatlen(c->obuf, p, n);
    if (ob == nullptr) {
        return false;
    }
    c->obuf = ob;
    added_ += n;
    want_write();
    return true;
}

// Formats a command straight into hiredis's output buffer.
bool RedisLink::output_command(int argc, const char **argv,
                               const size_t *argvlen, size_t *n) noexcept
{
    redisContext *c = &ac_->c;
    if (c->flags & (REDIS_DISCONNECTING | REDIS_FREEING)) {
        return false;
    }
    size_t need = core::resp_command_size(argc, argv, argvlen);
    if (need > INT_MAX / 2) {
        return false;          // sdsIncrLen() takes an int
    }
    sds ob = sdsMakeRoomFor(c->obuf, need);
    if (ob == nullptr) {
        return false;
    }
    c->obuf = ob;
    char *p = ob + sdslen(ob);
    char *e = core::resp_write_command(p, argc, argv, argvlen);
    sdsIncrLen(ob, static_cast<int>(e - p));
    *n = static_cast<size_t>(e - p);
    added_ += *n;
    want_write();
    return true;
}

void RedisLink::ev_add_write(void *p) noexcept
{
    static_cast<RedisLink *>(p)->want_write();
}

// hiredis's output buffer is empty.
void RedisLink::ev_del_write(void *p) noexcept
{
    static_cast<RedisLink *>(p)->sock_.want_write(false);
}

// There are bytes to send (appended, or hiredis asks).
void RedisLink::want_write() noexcept
{
    ngx_connection_t *c = sock_.connection();
    if (c == nullptr || ac_ == nullptr) {
        return;
    }
    ngx_event_t *wev = c->write;
    if (in_write_) {
        wev->ready = 0;          // socket buffer full: wait for the event
    } else if ((ac_->c.flags & REDIS_CONNECTED) && wev->ready) {
        flush_.post();           // writable: once, after this iteration
        return;
    }
    // Maybe called from inside hiredis: never free the context.  If the
    // event cannot be added, nothing is written and the commands fail by
    // their deadlines, then the connection by the liveness period.
    if (!sock_.want_write(true)) {
        peer_.error(0, "cannot add the write event");
    }
}

void RedisLink::on_writable() noexcept
{
    if (!flush_.posted()) {
        flush();     // else the posted flush writes everything at once
    }
}

void RedisLink::flush() noexcept
{
    redisAsyncContext *ac = ac_;
    if (ac == nullptr) {
        return;
    }
    size_t before = sdslen(ac->c.obuf);
    if ((ac->c.flags & REDIS_CONNECTED) && before == 0) {
        return;
    }
    uint64_t gen = gen_;
    uint64_t added = added_;
    in_write_ = true;
    // Completes the connect first if needed; may free the context.  The
    // connect callback may queue output (a command issued once the link
    // is ready), which this same call writes too.
    redisAsyncHandleWrite(ac);
    if (gen != gen_) {
        return;
    }
    in_write_ = false;
    size_t after = sdslen(ac->c.obuf);
    size_t queued = before + static_cast<size_t>(added_ - added);
    if (after < queued) {
        owner_->redis_written(queued - after);
    }
}

// ---- reading ------------------------------------------------------------

void RedisLink::on_readable() noexcept
{
    ngx_connection_t *c = sock_.connection();
    if (c == nullptr || ac_ == nullptr || !(ac_->c.flags & REDIS_CONNECTED)) {
        return;   // the write event completes the connect (or reports it)
    }
    uint64_t gen = gen_;
    for (;;) {
        core::RespSpan span[2];
        size_t nspan = reader_.prepare(span);
        if (nspan == 0) {
            reader_failed();
            return;
        }
        struct iovec iov[2];
        size_t want = 0;
        for (size_t i = 0; i < nspan; i++) {
            iov[i].iov_base = span[i].data;
            iov[i].iov_len = span[i].len;
            want += span[i].len;
        }
        ssize_t n = nspan == 1 ? recv(c->fd, iov[0].iov_base, iov[0].iov_len, 0)
                               : readv(c->fd, iov, static_cast<int>(nspan));
        if (n > 0) {
            reader_.commit(static_cast<size_t>(n));
            owner_->redis_received();
            core::RespReply reply;     // next() fills it in full
            for (;;) {
                core::RespReader::Status st = reader_.next(reply);
                if (st == core::RespReader::Status::more) {
                    break;
                }
                if (st == core::RespReader::Status::error) {
                    reader_failed();
                    return;
                }
                if (handshake_ > 0) {
                    on_handshake(reply);
                } else {
                    owner_->redis_reply(reply);
                }
                core::resp_free(reply);
                if (gen != gen_) {
                    return;    // the connection is gone
                }
            }
            if (static_cast<size_t>(n) < want && sock_.drained_by_short_read())
            {
                c->read->ready = 0;
                return;
            }
            continue;
        }
        if (n == 0) {
            fail("connection closed by Redis");
            return;
        }
        ngx_err_t err = ngx_socket_errno;
        if (err == NGX_EAGAIN) {
            c->read->ready = 0;
            return;
        }
        if (err == NGX_EINTR) {
            continue;
        }
        fail("recv() failed", err);
        return;
    }
}

void RedisLink::reader_failed() noexcept
{
    const char *why = reader_.error() ? reader_.error() : "out of memory";
    if (std::strcmp(why, "out of memory") == 0) {
        fail(why);
        return;
    }
    u_char msg[128];
    u_char *e = ngx_snprintf(msg, sizeof(msg) - 1, "protocol error: %s", why);
    *e = '\0';
    fail(reinterpret_cast<const char *>(msg));
}

}  // namespace fly
