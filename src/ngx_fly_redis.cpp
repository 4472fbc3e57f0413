// fly-edge nginx shell: the Redis client (see ngx_fly_redis.hpp).
//
// The pieces, each in its own home:
// - core::RespReader (src/core/resp.*) parses replies.  It says where to
//   receive, so the body of a large GET reply goes from the socket straight
//   into the block that becomes reply->str (readv() into the body and,
//   behind it, a little of the reader's buffer for what follows).
// - core::RedisPipeline (src/core/redis_pipeline.*) keeps the commands in
//   flight in order, their deadlines (from the write) and the bound on
//   replies in flight.
// - the event glue (ngx_fly_event.*): timers, where Redis is (literals,
//   nginx's resolver), backoff, rate-limited logs, hiredis's socket driven
//   by nginx's events.
// What is left here: hiredis to connect and to write (commands are
// formatted straight into its output buffer, flushed by an event posted to
// ngx_posted_events, so the commands of one event-loop iteration go out in
// one write()), the handshake (AUTH, SELECT), replies handed to callbacks
// as hiredis redisReply, and the connection's states.
//
// hiredis may free its context from inside any call into it (errors in
// redisAsyncHandleWrite, the connect callback): every such call, and every
// reply callback, is followed by a check of gen_, which the cleanup hook
// bumps.
#include "ngx_fly_redis.hpp"
#include "ngx_fly_event.hpp"
#include "core/redis_pipeline.hpp"
#include "core/resp.hpp"

// hiredis 0.14's sds.h declares its functions without extern "C".
extern "C" {
#include <hiredis/sds.h>
}
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <sys/uio.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>
#include <type_traits>

namespace fly {

namespace {

constexpr size_t kMaxPending = 65536;      // ops in line per connection

// A monotonic clock in microseconds (vDSO), for round trips.
uint64_t now_us() noexcept
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000
           + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

int hiredis_type(core::RespType t) noexcept
{
    switch (t) {
    case core::RespType::string: return REDIS_REPLY_STRING;
    case core::RespType::array: return REDIS_REPLY_ARRAY;
    case core::RespType::integer: return REDIS_REPLY_INTEGER;
    case core::RespType::status: return REDIS_REPLY_STATUS;
    case core::RespType::error: return REDIS_REPLY_ERROR;
    case core::RespType::nil: break;
    }
    return REDIS_REPLY_NIL;
}

void free_hiredis_parts(redisReply &r) noexcept;

// `from` as a hiredis reply, its strings moved over (no copy).  False when
// out of memory (what was built is in `to`, for free_hiredis_parts()).
bool to_hiredis(core::RespReply &from, redisReply &to) noexcept
{
    to = redisReply{};
    to.type = hiredis_type(from.type);
    to.integer = from.integer;
    to.str = from.str;
    to.len = from.len;
    from.str = nullptr;
    if (from.type != core::RespType::array || from.elements == 0) {
        return true;
    }
    to.element = static_cast<redisReply **>(
        std::calloc(from.elements, sizeof(redisReply *)));
    if (to.element == nullptr) {
        return false;
    }
    to.elements = from.elements;
    for (size_t i = 0; i < from.elements; i++) {
        auto *e = static_cast<redisReply *>(std::malloc(sizeof(redisReply)));
        if (e == nullptr) {
            return false;
        }
        to.element[i] = e;
        if (!to_hiredis(from.element[i], *e)) {
            return false;
        }
    }
    return true;
}

// Frees what a reply built by to_hiredis() holds (the callback may have
// taken str), not the reply itself.
void free_hiredis_parts(redisReply &r) noexcept
{
    if (r.element != nullptr) {
        for (size_t i = 0; i < r.elements; i++) {
            if (r.element[i] != nullptr) {
                free_hiredis_parts(*r.element[i]);
                std::free(r.element[i]);
            }
        }
        std::free(r.element);
    }
    std::free(r.str);
    r = redisReply{};
}

}  // namespace

struct RedisOp : core::PipelineOp {
    RedisCallback cb;
    void *data;
    RedisOp *free_next;
    bool canceled;
};

class RedisConnection {
public:
    RedisConnection(ngx_msec_t connect_timeout, ngx_msec_t timeout,
                    ngx_log_t *log) noexcept;
    ~RedisConnection();
    RedisConnection(const RedisConnection &) = delete;
    RedisConnection &operator=(const RedisConnection &) = delete;

    bool init(const RedisConf &conf, ngx_resolver_t *resolver,
              ngx_msec_t resolver_timeout) noexcept;
    RedisOp *command(int argc, const char **argv, const size_t *argvlen,
                     RedisCallback cb, void *data) noexcept;
    bool ready() const noexcept { return state_ == State::ready; }

private:
    enum class State {
        idle,        // no connection; the next command connects
        resolving,   // waiting for nginx's resolver (commands are held)
        connecting,  // TCP connect, then AUTH / SELECT
        ready,
        closing,     // being torn down (pending callbacks are running)
        backoff,     // after a failure, until the backoff is over
        closed,      // worker exiting: never again
    };

    // connecting
    bool start_connect(bool probe) noexcept;
    bool connect_to(const PeerAddress &a) noexcept;
    void on_handshake(const core::RespReply &reply, const char *what) noexcept;
    void become_ready() noexcept;

    // writing
    bool output(const char *p, size_t n) noexcept;
    bool output_command(int argc, const char **argv, const size_t *argvlen,
                        size_t *n) noexcept;
    void release_held() noexcept;
    void want_write() noexcept;
    void no_write() noexcept;
    void flush() noexcept;

    // reading
    void on_readable() noexcept;
    bool dispatch(core::RespReply &reply) noexcept;
    void reader_failed() noexcept;

    // ops
    RedisOp *alloc_op() noexcept;
    void free_op(RedisOp *op) noexcept;
    void invoke(RedisCallback cb, void *data, redisReply *reply) noexcept;
    void fail_all_ops() noexcept;
    void arm_timers() noexcept;
    void on_deadline() noexcept;
    void on_silence() noexcept;

    // failing
    void fail(const char *what, ngx_err_t err = 0) noexcept;
    void teardown() noexcept;
    void on_cleanup() noexcept;
    void after_close() noexcept;
    void enter_backoff() noexcept;
    bool exiting() const noexcept;

    // called by nginx and hiredis
    static void ev_add_read(void *) noexcept {}
    static void ev_del_read(void *) noexcept {}
    static void ev_add_write(void *p) noexcept;
    static void ev_del_write(void *p) noexcept;
    static void ev_cleanup(void *p) noexcept;
    static void on_connect(const redisAsyncContext *ac, int status) noexcept;
    static void on_resolved(void *data, const PeerAddress *a) noexcept;
    static void on_read(void *data) noexcept;
    static void on_write(void *data) noexcept;
    static void on_close(void *data) noexcept;
    static void on_flush(void *data) noexcept;
    static void on_deadline_timer(void *data) noexcept;
    static void on_silence_timer(void *data) noexcept;
    static void on_connect_timer(void *data) noexcept;
    static void on_backoff_over(void *data) noexcept;

    // configuration
    ngx_log_t *log_;
    ngx_msec_t connect_timeout_;
    ngx_msec_t liveness_;
    Peer peer_;
    core::ByteBuf auth_;          // AUTH command, empty if none
    core::ByteBuf select_;        // SELECT command, empty if db 0

    // connection
    State state_ = State::idle;
    bool probing_ = false;        // reconnecting after a failure
    bool shutting_down_ = false;
    bool in_write_ = false;
    bool torn_down_ = false;      // we closed it (and logged why)
    int handshake_ = 0;           // AUTH / SELECT replies still awaited
    int hs_next_ = 0;             // index in hs_what_ of the next one
    const char *hs_what_[2] = {nullptr, nullptr};
    uint64_t gen_ = 0;            // bumped whenever a context goes away
    redisAsyncContext *ac_ = nullptr;
    LibSocket sock_;
    Backoff backoff_;
    Event flush_;                 // posted: write what this iteration queued
    Event deadline_;              // the earliest command deadline
    Event silence_;               // the liveness period
    Event connect_timer_;

    core::RespReader reader_;
    core::RedisPipeline pipe_;
    RedisOp *free_ops_ = nullptr;
};

// ---- construction -------------------------------------------------------

RedisConnection::RedisConnection(ngx_msec_t connect_timeout,
                                 ngx_msec_t timeout, ngx_log_t *log) noexcept
    : log_(log),
      connect_timeout_(connect_timeout),
      liveness_(core::RedisPipeline::liveness_for(timeout)),
      pipe_(timeout, liveness_)
{
    sock_.init(this, on_read, on_write, on_close, log);
    backoff_.init(on_backoff_over, this, log);
    flush_.init(on_flush, this, log);
    // Requests wait for this one: a worker shutting down must wait too.
    deadline_.init(on_deadline_timer, this, log, false);
    silence_.init(on_silence_timer, this, log);
    connect_timer_.init(on_connect_timer, this, log);
}

bool RedisConnection::init(const RedisConf &conf, ngx_resolver_t *resolver,
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
    }
    if (conf.db != 0) {
        u_char db[NGX_INT_T_LEN];
        const char *argv[2] = {"SELECT", reinterpret_cast<const char *>(db)};
        size_t argvlen[2] = {6, static_cast<size_t>(
                                    ngx_sprintf(db, "%i", conf.db) - db)};
        if (!core::resp_append_command(select_, 2, argv, argvlen)) {
            return false;
        }
    }
    return true;
}

RedisConnection::~RedisConnection()
{
    shutting_down_ = true;
    // The worker is exiting: no callbacks now.
    while (core::PipelineOp *p = pipe_.pop()) {
        free_op(static_cast<RedisOp *>(p));
    }
    peer_.cancel_lookup();
    if (ac_ != nullptr) {
        state_ = State::closing;
        redisAsyncFree(ac_);          // runs on_cleanup
    }
    sock_.release();
    while (free_ops_ != nullptr) {
        RedisOp *op = free_ops_;
        free_ops_ = op->free_next;
        std::free(op);
    }
}

bool RedisConnection::exiting() const noexcept
{
    return shutting_down_ || ngx_exiting || ngx_terminate;
}

// ---- commands -----------------------------------------------------------

RedisOp *RedisConnection::command(int argc, const char **argv,
                                  const size_t *argvlen, RedisCallback cb,
                                  void *data) noexcept
{
    if (argc <= 0 || exiting()) {
        return nullptr;
    }
    if (state_ == State::idle && !start_connect(false)) {
        return nullptr;
    }
    if (probing_ || pipe_.size() >= kMaxPending
        || (state_ != State::resolving && state_ != State::connecting
            && state_ != State::ready))
    {
        return nullptr;
    }

    RedisOp *op = alloc_op();
    if (op == nullptr) {
        return nullptr;
    }
    op->cb = cb;
    op->data = data;
    op->canceled = false;

    uint64_t now = ngx_current_msec;
    if (state_ == State::resolving || pipe_.must_hold()) {
        if (!pipe_.hold(op, argc, argv, argvlen, now)) {
            free_op(op);
            return nullptr;
        }
    } else {
        size_t n = 0;
        if (!output_command(argc, argv, argvlen, &n)) {
            free_op(op);
            return nullptr;
        }
        pipe_.output(op, n, now, now_us());
    }
    arm_timers();

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly redis command %*s, %uz pending",
                   argvlen ? argvlen[0] : std::strlen(argv[0]), argv[0],
                   pipe_.size());
    return op;
}

RedisOp *RedisConnection::alloc_op() noexcept
{
    RedisOp *op = free_ops_;
    if (op != nullptr) {
        free_ops_ = op->free_next;
        return op;
    }
    static_assert(std::is_trivially_destructible<RedisOp>::value,
                  "ops are recycled without destruction");
    void *mem = std::malloc(sizeof(RedisOp));
    return mem ? new (mem) RedisOp() : nullptr;
}

void RedisConnection::free_op(RedisOp *op) noexcept
{
    op->cb = nullptr;
    op->data = nullptr;
    op->free_next = free_ops_;
    free_ops_ = op;
}

void RedisConnection::invoke(RedisCallback cb, void *data,
                             redisReply *reply) noexcept
{
    try {
        cb(data, reply);
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, log_, 0,
                      "fly redis: exception in a reply callback");
    }
}

// Fails every op, callbacks with nullptr (sent, held or expired: the
// pipeline holds them all).
void RedisConnection::fail_all_ops() noexcept
{
    while (core::PipelineOp *p = pipe_.pop()) {
        auto *op = static_cast<RedisOp *>(p);
        RedisCallback cb = op->cb;
        void *data = op->data;
        free_op(op);
        if (cb != nullptr) {
            invoke(cb, data, nullptr);
        }
    }
    deadline_.disarm();
    silence_.disarm();
}

void RedisConnection::arm_timers() noexcept
{
    uint64_t d = pipe_.next_deadline();
    if (d != core::RedisPipeline::kNever) {
        deadline_.arm_by(static_cast<ngx_msec_t>(d));
    }
    if (state_ == State::ready && !silence_.armed()) {
        uint64_t s = pipe_.silent_deadline();
        if (s != core::RedisPipeline::kNever) {
            silence_.arm_by(static_cast<ngx_msec_t>(s));
        }
    }
}

// Commands whose deadline passed fail alone (the connection stays).
void RedisConnection::on_deadline() noexcept
{
    bool gone = false;
    while (core::PipelineOp *p = pipe_.expire(ngx_current_msec, &gone)) {
        auto *op = static_cast<RedisOp *>(p);
        RedisCallback cb = op->cb;
        void *data = op->data;
        op->cb = nullptr;
        op->data = nullptr;
        if (gone) {
            free_op(op);
        }
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0,
                       "fly redis command timed out, %s",
                       gone ? "never sent" : "its reply will be discarded");
        if (cb != nullptr) {
            peer_.warn("command timed out (fly_redis_timeout)");
            invoke(cb, data, nullptr);
        }
    }
    if (exiting() && pipe_.size() == 0 && state_ == State::resolving) {
        peer_.cancel_lookup();
        state_ = State::closed;
        return;
    }
    arm_timers();
}

// Redis has sent nothing for the liveness period while replies are
// awaited: it is gone.
void RedisConnection::on_silence() noexcept
{
    if (state_ != State::ready) {
        return;
    }
    uint64_t s = pipe_.silent_deadline();
    if (s == core::RedisPipeline::kNever) {
        return;
    }
    if (s > ngx_current_msec) {
        silence_.arm_by(static_cast<ngx_msec_t>(s));
        return;
    }
    u_char msg[96];
    u_char *e = ngx_snprintf(msg, sizeof(msg) - 1,
                             "no reply for %M ms, closing the connection",
                             liveness_);
    *e = '\0';
    fail(reinterpret_cast<const char *>(msg));
}

// ---- connecting ---------------------------------------------------------

bool RedisConnection::start_connect(bool probe) noexcept
{
    probing_ = probe;
    PeerAddress a;
    switch (peer_.lookup(&a, on_resolved, this)) {
    case Peer::Lookup::ready:
        return connect_to(a);
    case Peer::Lookup::pending:
        state_ = State::resolving;
        return true;
    case Peer::Lookup::failed:
        break;
    }
    enter_backoff();
    fail_all_ops();
    return false;
}

void RedisConnection::on_resolved(void *data, const PeerAddress *a) noexcept
{
    auto *self = static_cast<RedisConnection *>(data);
    if (a == nullptr) {
        self->enter_backoff();
        self->fail_all_ops();
        return;
    }
    self->connect_to(*a);
}

// Connects to an address (hiredis resolves nothing for those).
bool RedisConnection::connect_to(const PeerAddress &a) noexcept
{
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly redis connecting to %s port %d%s", a.text,
                   (int) peer_.port(), probing_ ? " (after a failure)" : "");

    redisAsyncContext *ac = redisAsyncConnect(a.text, peer_.port());
    if (ac == nullptr || ac->err) {
        if (ac != nullptr) {
            peer_.error(0, "%s", ac->errstr);
            redisAsyncFree(ac);
        } else {
            peer_.error(0, "out of memory");
        }
        enter_backoff();
        fail_all_ops();
        return false;
    }
    if (!sock_.track(ac->c.fd)) {
        redisAsyncFree(ac);
        peer_.error(0, "cannot add the socket to the event loop");
        enter_backoff();
        fail_all_ops();
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

    state_ = State::connecting;
    handshake_ = 0;
    hs_next_ = 0;
    in_write_ = false;
    reader_.reset();
    pipe_.restart();

    // The first replies on the connection are these.
    if (auth_.len) {
        if (!output(auth_.p, auth_.len)) {
            fail("out of memory");
            return false;
        }
        hs_what_[handshake_++] = "AUTH";
    }
    if (select_.len) {
        if (!output(select_.p, select_.len)) {
            fail("out of memory");
            return false;
        }
        hs_what_[handshake_++] = "SELECT";
    }
    pipe_.output_other(auth_.len + select_.len);
    release_held();
    want_write();           // to learn when the connect completes
    connect_timer_.arm(connect_timeout_);
    return true;
}

void RedisConnection::on_connect(const redisAsyncContext *ac,
                                 int status) noexcept
{
    auto *self = static_cast<RedisConnection *>(ac->data);
    if (status != REDIS_OK) {
        return;   // hiredis frees the context next: on_cleanup logs it
    }
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, self->log_, 0,
                   "fly redis tcp connected, %d handshake replies awaited",
                   self->handshake_);
    if (self->handshake_ == 0) {
        self->become_ready();
    }
}

void RedisConnection::on_handshake(const core::RespReply &reply,
                                   const char *what) noexcept
{
    if (reply.type == core::RespType::error) {
        u_char msg[256];
        u_char *e = ngx_snprintf(msg, sizeof(msg) - 1, "%s failed: %*s", what,
                                 reply.len, reply.str);
        *e = '\0';
        fail(reinterpret_cast<const char *>(msg));
        return;
    }
    if (--handshake_ == 0 && state_ == State::connecting) {
        become_ready();
    }
}

void RedisConnection::become_ready() noexcept
{
    state_ = State::ready;
    backoff_.reset();
    connect_timer_.disarm();
    if (probing_ || peer_.failed()) {
        peer_.notice("connected");
    }
    probing_ = false;
    peer_.clear_failed();
    arm_timers();
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0, "fly redis connected %V",
                   &peer_.endpoint());
}

// ---- writing ------------------------------------------------------------

bool RedisConnection::output(const char *p, size_t n) noexcept
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
    want_write();
    return true;
}

// Formats a command straight into hiredis's output buffer.
bool RedisConnection::output_command(int argc, const char **argv,
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
    want_write();
    return true;
}

// Sends held commands (issued while resolving, or while enough replies
// were in flight) as far as the pipeline allows, in order.
void RedisConnection::release_held() noexcept
{
    if (state_ != State::connecting && state_ != State::ready) {
        return;
    }
    uint64_t now = ngx_current_msec;
    uint64_t us = 0;
    while (core::PipelineOp *p = pipe_.releasable()) {
        auto *op = static_cast<RedisOp *>(p);
        if (op->canceled) {
            pipe_.drop(op);
            free_op(op);
            continue;
        }
        if (!output(pipe_.held_bytes(op), op->held_len)) {
            RedisCallback cb = op->cb;
            void *data = op->data;
            pipe_.drop(op);
            free_op(op);
            if (cb) {
                invoke(cb, data, nullptr);   // may issue commands: held on
            }
            if (state_ != State::connecting && state_ != State::ready) {
                return;
            }
            continue;
        }
        if (us == 0) {
            us = now_us();
        }
        pipe_.released(op, now, us);
    }
    arm_timers();
}

void RedisConnection::ev_add_write(void *p) noexcept
{
    static_cast<RedisConnection *>(p)->want_write();
}

void RedisConnection::ev_del_write(void *p) noexcept
{
    static_cast<RedisConnection *>(p)->no_write();
}

// There are bytes to send (a command was appended, or hiredis asks).
void RedisConnection::want_write() noexcept
{
    ngx_connection_t *c = sock_.connection();
    if (c == nullptr) {
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

// hiredis's output buffer is empty.
void RedisConnection::no_write() noexcept
{
    sock_.want_write(false);
}

void RedisConnection::flush() noexcept
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
    in_write_ = true;
    // Completes the connect first if needed; may free the context.
    redisAsyncHandleWrite(ac);
    if (gen != gen_) {
        return;
    }
    in_write_ = false;
    size_t after = sdslen(ac->c.obuf);
    if (after < before) {
        pipe_.written(before - after, ngx_current_msec);
        arm_timers();
    }
}

// ---- reading ------------------------------------------------------------

void RedisConnection::on_readable() noexcept
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
            pipe_.received(ngx_current_msec);
            for (;;) {
                core::RespReply reply;
                core::RespReader::Status st = reader_.next(reply);
                if (st == core::RespReader::Status::more) {
                    break;
                }
                if (st == core::RespReader::Status::error) {
                    reader_failed();
                    return;
                }
                if (!dispatch(reply)) {
                    return;    // the connection is gone
                }
            }
            if (pipe_.held() > 0) {
                release_held();
                if (gen != gen_) {
                    return;
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

void RedisConnection::reader_failed() noexcept
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

// The next reply on the connection: a handshake's, then the oldest op's.
// Frees the reply.  Returns false when the connection is gone.
bool RedisConnection::dispatch(core::RespReply &reply) noexcept
{
    uint64_t gen = gen_;
    if (handshake_ > 0) {
        on_handshake(reply, hs_what_[hs_next_++ & 1]);
        core::resp_free(reply);
        return gen == gen_;
    }
    auto *op = static_cast<RedisOp *>(pipe_.awaiting());
    if (op == nullptr) {
        // Nothing was asked (e.g. "max number of clients reached" before
        // Redis closes the connection).
        bool err = reply.type == core::RespType::error;
        u_char msg[256];
        u_char *e = ngx_snprintf(msg, sizeof(msg) - 1,
                                 "unexpected %s reply%s%*s",
                                 core::resp_type_name(reply.type),
                                 err ? ": " : "",
                                 err ? (reply.len < 200 ? reply.len : 200)
                                     : static_cast<size_t>(0),
                                 reply.str ? reply.str : "");
        *e = '\0';
        core::resp_free(reply);
        fail(reinterpret_cast<const char *>(msg));
        return false;
    }

    RedisCallback cb = op->cb;
    void *data = op->data;
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log_, 0, "fly redis reply %s%s",
                   core::resp_type_name(reply.type),
                   cb ? ""
                      : op->expired ? " late, discarded"
                                    : op->canceled ? " canceled" : " ignored");
    pipe_.answered(op,
                   reply.type == core::RespType::string ? reply.len : 0,
                   ngx_current_msec, now_us());
    if (cb != nullptr) {
        redisReply r;
        bool ok = to_hiredis(reply, r);
        if (ok) {
            invoke(cb, data, &r);
        }
        free_hiredis_parts(r);
        if (!ok) {
            core::resp_free(reply);
            free_op(op);
            invoke(cb, data, nullptr);
            fail("out of memory");
            return false;
        }
    }
    free_op(op);
    core::resp_free(reply);
    return gen == gen_;
}

// ---- timers -------------------------------------------------------------

void RedisConnection::on_deadline_timer(void *data) noexcept
{
    static_cast<RedisConnection *>(data)->on_deadline();
}

void RedisConnection::on_silence_timer(void *data) noexcept
{
    static_cast<RedisConnection *>(data)->on_silence();
}

void RedisConnection::on_connect_timer(void *data) noexcept
{
    static_cast<RedisConnection *>(data)->fail("connect timed out");
}

void RedisConnection::on_backoff_over(void *data) noexcept
{
    auto *self = static_cast<RedisConnection *>(data);
    if (self->exiting()) {
        self->state_ = State::closed;
        return;
    }
    self->state_ = State::idle;
    self->start_connect(true);   // in the background; commands wait for it
}

// ---- events -------------------------------------------------------------

void RedisConnection::on_flush(void *data) noexcept
{
    static_cast<RedisConnection *>(data)->flush();
}

void RedisConnection::on_write(void *data) noexcept
{
    auto *self = static_cast<RedisConnection *>(data);
    if (!self->flush_.posted()) {
        self->flush();     // else the posted flush writes everything at once
    }
}

void RedisConnection::on_read(void *data) noexcept
{
    static_cast<RedisConnection *>(data)->on_readable();
}

// ngx_close_idle_connections: the worker is shutting down.
void RedisConnection::on_close(void *data) noexcept
{
    auto *self = static_cast<RedisConnection *>(data);
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, self->log_, 0,
                   "fly redis closing: worker exiting");
    self->shutting_down_ = true;
    self->backoff_.cancel();
    self->teardown();
}

// ---- failing ------------------------------------------------------------

// Logs, drops the connection (every pending op fails), then backs off.
void RedisConnection::fail(const char *what, ngx_err_t err) noexcept
{
    if (state_ == State::closing || state_ == State::closed
        || state_ == State::backoff)
    {
        return;
    }
    peer_.error(err, "%s", what);
    teardown();
}

void RedisConnection::teardown() noexcept
{
    peer_.cancel_lookup();
    connect_timer_.disarm();
    torn_down_ = true;
    state_ = State::closing;
    if (ac_ != nullptr) {
        // Runs on_cleanup, which fails the pending ops: at once, or from
        // inside a hiredis callback once that callback has returned.
        redisAsyncFree(ac_);
        return;
    }
    fail_all_ops();
    after_close();
}

void RedisConnection::ev_cleanup(void *p) noexcept
{
    static_cast<RedisConnection *>(p)->on_cleanup();
}

// hiredis's ev.cleanup: the context is going away (its callbacks have run).
void RedisConnection::on_cleanup() noexcept
{
    redisAsyncContext *ac = ac_;
    bool ours = torn_down_;
    sock_.release();
    flush_.unpost();
    ac_ = nullptr;
    gen_++;
    in_write_ = false;
    connect_timer_.disarm();
    if (!ours && !shutting_down_) {
        peer_.error(0, "%s",
                    ac && ac->errstr ? ac->errstr : "connection lost");
    }
    reader_.reset();
    state_ = State::closing;
    fail_all_ops();
    after_close();
}

void RedisConnection::after_close() noexcept
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log_, 0, "fly redis closed");
    torn_down_ = false;
    if (exiting()) {
        state_ = State::closed;
        return;
    }
    enter_backoff();
}

void RedisConnection::enter_backoff() noexcept
{
    if (exiting()) {
        state_ = State::closed;
        return;
    }
    state_ = State::backoff;
    peer_.next_address();         // the next attempt tries the next address
    ngx_msec_t delay = backoff_.start();
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0, "fly redis backoff %M", delay);
}

// ---- the public face ----------------------------------------------------

RedisClient::RedisClient(const RedisConf &conf, ngx_msec_t connect_timeout,
                         ngx_msec_t timeout, ngx_resolver_t *resolver,
                         ngx_msec_t resolver_timeout, ngx_log_t *log)
    : conn_(nullptr)
{
    auto *conn = new (std::nothrow)
        RedisConnection(connect_timeout, timeout, log);
    if (conn == nullptr || !conn->init(conf, resolver, resolver_timeout)) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "fly redis %s: out of memory, Redis not used",
                      conf.name ? conf.name : "redis");
        delete conn;
        return;
    }
    conn_ = conn;
}

RedisClient::~RedisClient()
{
    delete conn_;
}

RedisOp *RedisClient::command(int argc, const char **argv,
                              const size_t *argvlen, RedisCallback cb,
                              void *data) noexcept
{
    return conn_ ? conn_->command(argc, argv, argvlen, cb, data) : nullptr;
}

void RedisClient::cancel(RedisOp *op) noexcept
{
    if (op != nullptr) {
        op->cb = nullptr;
        op->data = nullptr;
        op->canceled = true;
    }
}

bool RedisClient::connected() const noexcept
{
    return conn_ != nullptr && conn_->ready();
}

void redis_free_str(char *str) noexcept
{
    std::free(str);   // reply strings are malloc'd by core::RespReader
}

}  // namespace fly
