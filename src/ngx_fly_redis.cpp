// fly-edge nginx shell: the Redis client (see ngx_fly_redis.hpp): the
// command side.
//
// The pieces, each in its own home:
// - RedisLink (ngx_fly_redis_link.*): the one connection: hiredis to
//   connect and write, core::RespReader to read, AUTH and SELECT, its life
//   (connect timeout, failures, backoff) through Link (ngx_fly_event.*);
// - core::RedisPipeline (src/core/redis_pipeline.*): the commands in
//   flight, in order, their deadlines and the bound on replies in flight;
// - here: commands in, replies out to the callbacks (as hiredis
//   redisReply), the deadline and liveness timers.
//
// Timeouts: a command must be written within fly_redis_timeout of being
// issued and answered within fly_redis_timeout of being written; one that
// is not fails alone (its callback gets nullptr), and if it was sent its
// late reply is discarded when it comes.  The connection is dropped only
// when Redis has sent nothing at all for the liveness period (max(1 s,
// 5 x fly_redis_timeout)) while replies are awaited.  The deadline timer
// is not cancelable: a worker shutting down waits for it, so every request
// parked on the client is answered (by the app) before the worker exits.
#include "ngx_fly_redis.hpp"
#include "ngx_fly_metrics.hpp"
#include "ngx_fly_redis_link.hpp"
#include "core/redis_pipeline.hpp"

#include <hiredis/hiredis.h>

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

// `from` as a hiredis reply, its strings moved over (no copy).  False when
// out of memory (what was built is in `to`, for free_hiredis_parts()).
inline bool to_hiredis(core::RespReply &from, redisReply &to) noexcept
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
    if (r.str != nullptr) {
        std::free(r.str);       // not taken by the callback
    }
    r = redisReply{};
}

}  // namespace

struct RedisOp : core::PipelineOp {
    RedisCallback cb;
    void *data;
    RedisOp *free_next;
    bool canceled;
};

class RedisConnection final : private RedisLink::Owner {
public:
    RedisConnection(ngx_msec_t connect_timeout, ngx_msec_t timeout,
                    ngx_log_t *log) noexcept;
    ~RedisConnection();
    RedisConnection(const RedisConnection &) = delete;
    RedisConnection &operator=(const RedisConnection &) = delete;

    bool init(const RedisConf &conf, ngx_resolver_t *resolver,
              ngx_msec_t resolver_timeout) noexcept
    {
        ep_ = metrics::redis_endpoint(conf);
        return link_.init(conf, resolver, resolver_timeout);
    }
    RedisOp *command(int argc, const char **argv, const size_t *argvlen,
                     RedisCallback cb, void *data) noexcept;
    bool ready() const noexcept { return link_.state() == Link::State::ready; }
    void watch(RedisWatcher *w) noexcept { watcher_ = w; }
    size_t endpoint() const noexcept { return ep_; }

private:
    // RedisLink::Owner
    void redis_opened(size_t handshake_bytes) noexcept override;
    void redis_up() noexcept override;
    void redis_down() noexcept override;
    void redis_written(size_t n) noexcept override;
    void redis_received() noexcept override;
    void redis_reply(core::RespReply &reply) noexcept override;

    RedisOp *alloc_op() noexcept;
    void free_op(RedisOp *op) noexcept;
    void invoke(RedisCallback cb, void *data, redisReply *reply) noexcept;
    void release_held() noexcept;
    void arm_timers() noexcept;
    void on_deadline() noexcept;
    void on_silence() noexcept;

    ngx_log_t *log_;
    ngx_msec_t liveness_;
    core::RedisPipeline pipe_;
    Event deadline_;              // the earliest command deadline
    Event silence_;               // the liveness period
    RedisOp *free_ops_ = nullptr;
    RedisWatcher *watcher_ = nullptr;
    size_t ep_ = 0;               // metrics: 0 regional, 1 primary
    bool lost_ = false;           // a connection was lost or not made
    RedisLink link_;
};

// ---- construction -------------------------------------------------------

RedisConnection::RedisConnection(ngx_msec_t connect_timeout,
                                 ngx_msec_t timeout, ngx_log_t *log) noexcept
    : log_(log),
      liveness_(core::RedisPipeline::liveness_for(timeout)),
      pipe_(timeout, liveness_),
      link_(this, connect_timeout, log)
{
    // Requests wait for this one: a worker shutting down must wait too.
    deadline_.init(call<&RedisConnection::on_deadline>, this, log, false);
    silence_.init(call<&RedisConnection::on_silence>, this, log);
}

RedisConnection::~RedisConnection()
{
    // The worker is exiting: no callbacks now.
    while (core::PipelineOp *p = pipe_.pop()) {
        free_op(static_cast<RedisOp *>(p));
    }
    while (free_ops_ != nullptr) {
        RedisOp *op = free_ops_;
        free_ops_ = op->free_next;
        std::free(op);
    }
}

// ---- commands -----------------------------------------------------------

RedisOp *RedisConnection::command(int argc, const char **argv,
                                  const size_t *argvlen, RedisCallback cb,
                                  void *data) noexcept
{
    if (argc <= 0 || link_.exiting() || !link_.start()
        || pipe_.size() >= kMaxPending)
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
    if (link_.state() == Link::State::resolving || pipe_.must_hold()) {
        if (!pipe_.hold(op, argc, argv, argvlen, now)) {
            free_op(op);
            return nullptr;
        }
    } else {
        size_t n = 0;
        if (!link_.output_command(argc, argv, argvlen, &n)) {
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

// Sends held commands (issued while resolving, or while enough replies
// were in flight) as far as the pipeline allows, in order.
void RedisConnection::release_held() noexcept
{
    Link::State st = link_.state();
    if (st != Link::State::connecting && st != Link::State::ready) {
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
        if (!link_.output(pipe_.held_bytes(op), op->held_len)) {
            RedisCallback cb = op->cb;
            void *data = op->data;
            pipe_.drop(op);
            free_op(op);
            if (cb) {
                invoke(cb, data, nullptr);   // may issue commands: held on
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

// ---- what the link says -------------------------------------------------

void RedisConnection::redis_opened(size_t handshake_bytes) noexcept
{
    pipe_.restart();
    pipe_.output_other(handshake_bytes);
    release_held();
}

void RedisConnection::redis_up() noexcept
{
    if (lost_) {
        metrics::redis(ep_, metrics::RedisEvent::reconnect);
    }
    lost_ = false;
    arm_timers();
    if (watcher_ != nullptr) {
        watcher_->redis_ready();
    }
}

// Fails every op, callbacks with nullptr (sent, held or expired: the
// pipeline holds them all).
void RedisConnection::redis_down() noexcept
{
    if (watcher_ != nullptr) {
        watcher_->redis_lost();
    }
    lost_ = true;
    while (core::PipelineOp *p = pipe_.pop()) {
        auto *op = static_cast<RedisOp *>(p);
        RedisCallback cb = op->cb;
        void *data = op->data;
        if (!op->expired) {
            metrics::redis(ep_, metrics::RedisEvent::error);
        }
        free_op(op);
        if (cb != nullptr) {
            invoke(cb, data, nullptr);
        }
    }
    deadline_.disarm();
    silence_.disarm();
}

void RedisConnection::redis_written(size_t n) noexcept
{
    pipe_.written(n, ngx_current_msec);
    arm_timers();
}

void RedisConnection::redis_received() noexcept
{
    pipe_.received(ngx_current_msec);
}

// A reply: the oldest op's (expired or canceled ones discard it).
void RedisConnection::redis_reply(core::RespReply &reply) noexcept
{
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
        link_.fail(reinterpret_cast<const char *>(msg));
        return;
    }

    RedisCallback cb = op->cb;
    void *data = op->data;
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log_, 0, "fly redis reply %s%s",
                   core::resp_type_name(reply.type),
                   cb ? ""
                      : op->expired ? " late, discarded"
                                    : op->canceled ? " canceled" : " ignored");
    metrics::redis_round_trip(ep_, now_us() - op->out_us);
    if (reply.type == core::RespType::error) {
        metrics::redis(ep_, metrics::RedisEvent::error);
    }
    pipe_.answered(op,
                   reply.type == core::RespType::string ? reply.len : 0,
                   ngx_current_msec, now_us());
    if (cb != nullptr) {
        redisReply r;
        bool ok = to_hiredis(reply, r);
        invoke(cb, data, ok ? &r : nullptr);
        if (r.element != nullptr) {
            free_hiredis_parts(r);
        } else if (r.str != nullptr) {
            std::free(r.str);    // not taken by the callback
        }
        if (!ok) {
            free_op(op);
            link_.fail("out of memory");
            return;
        }
    }
    free_op(op);
    if (pipe_.held() > 0) {
        release_held();
    }
}

// ---- timers -------------------------------------------------------------

// Deadlines only ever come later than the earliest one: an armed timer
// fires in time (its handler arms it again for the next).
void RedisConnection::arm_timers() noexcept
{
    if (!deadline_.armed()) {
        uint64_t d = pipe_.next_deadline();
        if (d != core::RedisPipeline::kNever) {
            deadline_.arm_by(static_cast<ngx_msec_t>(d));
        }
    }
    if (link_.state() == Link::State::ready && !silence_.armed()) {
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
        metrics::redis(ep_, metrics::RedisEvent::timeout);
        if (gone) {
            free_op(op);
        }
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0,
                       "fly redis command timed out, %s",
                       gone ? "never sent" : "its reply will be discarded");
        if (cb != nullptr) {
            link_.peer().warn("command timed out (fly_redis_timeout)");
            invoke(cb, data, nullptr);
        }
    }
    if (link_.exiting() && pipe_.size() == 0
        && link_.state() == Link::State::resolving)
    {
        link_.shut_down();      // nothing waits for the resolver any more
        return;
    }
    arm_timers();
}

// Redis has sent nothing for the liveness period while replies are
// awaited: it is gone.
void RedisConnection::on_silence() noexcept
{
    uint64_t s = pipe_.silent_deadline();
    if (link_.state() != Link::State::ready
        || s == core::RedisPipeline::kNever)
    {
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
    link_.fail(reinterpret_cast<const char *>(msg));
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
    RedisOp *op = conn_ ? conn_->command(argc, argv, argvlen, cb, data)
                        : nullptr;
    metrics::redis(conn_ ? conn_->endpoint() : 0,
                   op ? metrics::RedisEvent::command
                      : metrics::RedisEvent::error);
    return op;
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

void RedisClient::watch(RedisWatcher *w) noexcept
{
    if (conn_ != nullptr) {
        conn_->watch(w);
    }
}

void redis_free_str(char *str) noexcept
{
    std::free(str);   // reply strings are malloc'd by core::RespReader
}

}  // namespace fly
