// fly-edge nginx shell: the Redis client (see ngx_fly_redis.hpp).
//
// hiredis's async API with our own nginx adapter:
// - the socket hiredis opens becomes an ngx_connection_t (ngx_get_connection)
//   registered once, edge-triggered where nginx is (epoll, kqueue), with
//   the write event added and removed as hiredis asks when level-triggered;
//   hiredis owns and closes the fd, so the cleanup hook only frees the
//   nginx connection;
// - reads are ours: recv() into a 64 KiB buffer until the socket is
//   drained, redisReaderFeed(), redisProcessCallbacks();
// - writes are batched: when hiredis asks for the write event and the
//   socket is writable, a flush event is posted to ngx_posted_events, so
//   every command issued during one event-loop iteration goes out in one
//   write() once the iteration's handlers have run;
// - our own FIFO of ops carries each command's deadline (one timer for the
//   oldest), lets cancel() silence a callback while hiredis still holds the
//   op, and holds commands queued while the host name is being resolved.
// hiredis may free its context from inside any call into it (errors,
// redisAsyncFree from a callback): every such call is followed by a check
// of gen_, which the cleanup hook bumps.
#include "ngx_fly_redis.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

// Exported by hiredis 0.14 but declared in async.h only from 1.0 on.
extern "C" void redisProcessCallbacks(redisAsyncContext *ac);

namespace fly {

namespace {

constexpr ngx_msec_t kBackoffMin = 50;
constexpr ngx_msec_t kBackoffMax = 5000;
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kReaderMaxBuf = 256 * 1024;  // idle reader buffer kept
constexpr ngx_uint_t kMaxPending = 65536;     // ops in flight per connection

// A growable byte buffer (malloc'd, never throws).
struct Buf {
    u_char *p = nullptr;
    size_t len = 0;
    size_t cap = 0;

    Buf() = default;
    Buf(const Buf &) = delete;
    Buf &operator=(const Buf &) = delete;
    ~Buf() { std::free(p); }

    bool reserve(size_t n) noexcept
    {
        if (n <= cap) {
            return true;
        }
        size_t ncap = cap ? cap : 256;
        while (ncap < n) {
            ncap *= 2;
        }
        auto *np = static_cast<u_char *>(std::realloc(p, ncap));
        if (np == nullptr) {
            return false;
        }
        p = np;
        cap = ncap;
        return true;
    }
};

// Appends a command in RESP (the format hiredis would make) to `b`.
bool append_command(Buf &b, int argc, const char **argv, const size_t *argvlen)
    noexcept
{
    size_t need = sizeof("*\r\n") - 1 + NGX_INT_T_LEN;
    for (int i = 0; i < argc; i++) {
        size_t n = argvlen ? argvlen[i] : std::strlen(argv[i]);
        need += sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN + n;
    }
    if (!b.reserve(b.len + need)) {
        return false;
    }
    u_char *p = b.p + b.len;
    p = ngx_sprintf(p, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t n = argvlen ? argvlen[i] : std::strlen(argv[i]);
        p = ngx_sprintf(p, "$%uz\r\n", n);
        p = ngx_cpymem(p, argv[i], n);
        *p++ = '\r';
        *p++ = '\n';
    }
    b.len = p - b.p;
    return true;
}

const char *reply_type(const redisReply *reply) noexcept
{
    if (reply == nullptr) {
        return "null";
    }
    switch (reply->type) {
    case REDIS_REPLY_STRING: return "string";
    case REDIS_REPLY_ARRAY: return "array";
    case REDIS_REPLY_INTEGER: return "integer";
    case REDIS_REPLY_NIL: return "nil";
    case REDIS_REPLY_STATUS: return "status";
    case REDIS_REPLY_ERROR: return "error";
    default: return "unknown";
    }
}

}  // namespace

struct RedisOp {
    RedisOp *prev;
    RedisOp *next;
    RedisConnection *conn;
    RedisCallback cb;
    void *data;
    ngx_msec_t deadline;
    size_t pre_off;      // bytes in conn->pre_ while unsent
    size_t pre_len;
    bool unsent;         // queued while resolving, not given to hiredis yet
    bool expired;        // failed by its deadline, reply still awaited
    bool canceled;
};

class RedisConnection {
public:
    RedisConnection(const RedisConf &conf, ngx_msec_t connect_timeout,
                    ngx_msec_t timeout, ngx_resolver_t *resolver,
                    ngx_msec_t resolver_timeout, ngx_log_t *log) noexcept;
    ~RedisConnection();
    RedisConnection(const RedisConnection &) = delete;
    RedisConnection &operator=(const RedisConnection &) = delete;

    bool init(const RedisConf &conf) noexcept;
    RedisOp *command(int argc, const char **argv, const size_t *argvlen,
                     RedisCallback cb, void *data) noexcept;
    bool ready() const noexcept { return state_ == State::ready; }

private:
    enum class State {
        idle,        // no connection; the next command connects
        resolving,   // waiting for nginx's resolver
        connecting,  // TCP connect, then AUTH / SELECT
        ready,
        closing,     // being torn down (pending callbacks are running)
        backoff,     // after a failure, until backoff_ev_ fires
        closed,      // worker exiting: never again
    };

    // connecting
    bool start_connect(bool probe) noexcept;
    bool start_resolve() noexcept;
    bool connect_to(const char *ip) noexcept;
    void submit_unsent() noexcept;
    void become_ready() noexcept;

    // failing
    void fail(const char *what, ngx_err_t err = 0) noexcept;
    void teardown() noexcept;
    void on_cleanup() noexcept;
    void release_nc() noexcept;
    void after_close() noexcept;
    void enter_backoff() noexcept;
    void fail_all_ops() noexcept;
    void log_error(ngx_err_t err, const char *what) noexcept;

    // events
    void want_write() noexcept;
    void no_write() noexcept;
    void do_write() noexcept;
    void do_read() noexcept;
    void on_op_timer() noexcept;
    bool short_read_drains() const noexcept;

    // ops
    RedisOp *alloc_op() noexcept;
    void free_op(RedisOp *op) noexcept;
    void link(RedisOp *op) noexcept;
    void unlink(RedisOp *op) noexcept;
    void complete(RedisOp *op, redisReply *reply) noexcept;
    void expire(RedisOp *op) noexcept;
    void invoke(RedisCallback cb, void *data, redisReply *reply) noexcept;

    // called by nginx and hiredis
    static void ev_add_read(void *) noexcept {}
    static void ev_del_read(void *) noexcept {}
    static void ev_add_write(void *p) noexcept;
    static void ev_del_write(void *p) noexcept;
    static void ev_cleanup(void *p) noexcept;
    static void on_connect(const redisAsyncContext *ac, int status) noexcept;
    static void on_reply(redisAsyncContext *ac, void *r, void *privdata) noexcept;
    static void on_auth(redisAsyncContext *ac, void *r, void *privdata) noexcept;
    static void on_select(redisAsyncContext *ac, void *r, void *privdata) noexcept;
    static void on_handshake(RedisConnection *self, redisReply *reply,
                             const char *what) noexcept;
    static void on_resolved(ngx_resolver_ctx_t *ctx) noexcept;
    static void on_read_event(ngx_event_t *ev) noexcept;
    static void on_write_event(ngx_event_t *ev) noexcept;
    static void on_flush_event(ngx_event_t *ev) noexcept;
    static void on_op_timer_event(ngx_event_t *ev) noexcept;
    static void on_connect_timer_event(ngx_event_t *ev) noexcept;
    static void on_backoff_event(ngx_event_t *ev) noexcept;

    // configuration
    ngx_log_t *log_;
    const char *name_;
    ngx_str_t host_{};            // NUL-terminated copy
    ngx_str_t endpoint_{};        // host:port for logs
    in_port_t port_;
    bool literal_ = false;
    ngx_addr_t *addrs_;
    ngx_uint_t naddrs_;
    ngx_resolver_t *resolver_;
    ngx_msec_t resolver_timeout_;
    ngx_msec_t connect_timeout_;
    ngx_msec_t timeout_;
    Buf auth_;                    // AUTH command, empty if none
    Buf select_;                  // SELECT command, empty if db 0
    bool et_ = false;             // edge-triggered events: never delete
    char endpoint_buf_[NGX_SOCKADDR_STRLEN + 1];

    // connection
    State state_ = State::idle;
    bool probing_ = false;        // reconnecting after a failure
    bool ever_failed_ = false;
    bool shutting_down_ = false;
    bool in_write_ = false;
    bool torn_down_ = false;      // we closed it (and logged why)
    int handshake_ = 0;           // AUTH / SELECT replies still awaited
    uint64_t gen_ = 0;            // bumped whenever a context goes away
    ngx_uint_t rr_ = 0;           // address rotation
    ngx_msec_t next_backoff_ = kBackoffMin;
    redisAsyncContext *ac_ = nullptr;
    ngx_connection_t *nc_ = nullptr;
    ngx_resolver_ctx_t *resolve_ctx_ = nullptr;
    ngx_event_t flush_ev_;
    ngx_event_t op_timer_;
    ngx_event_t connect_timer_;
    ngx_event_t backoff_ev_;
    u_char *rbuf_ = nullptr;
    Buf fmt_;                     // scratch for one command
    Buf pre_;                     // commands queued while resolving

    // ops
    RedisOp *head_ = nullptr;
    RedisOp *tail_ = nullptr;
    ngx_uint_t npending_ = 0;
    RedisOp *free_ops_ = nullptr;

    time_t log_slot_ = 0;
    time_t log_slot_ok_ = 0;
};

// ---- construction -------------------------------------------------------

RedisConnection::RedisConnection(const RedisConf &conf,
                                 ngx_msec_t connect_timeout,
                                 ngx_msec_t timeout,
                                 ngx_resolver_t *resolver,
                                 ngx_msec_t resolver_timeout,
                                 ngx_log_t *log) noexcept
    : log_(log),
      name_(conf.name ? conf.name : "redis"),
      port_(conf.port),
      addrs_(conf.addrs),
      naddrs_(conf.naddrs),
      resolver_(resolver),
      resolver_timeout_(resolver_timeout),
      connect_timeout_(connect_timeout),
      timeout_(timeout)
{
    endpoint_buf_[0] = '\0';
    ngx_event_t *evs[] = {&flush_ev_, &op_timer_, &connect_timer_,
                          &backoff_ev_};
    for (ngx_event_t *ev : evs) {
        ngx_memzero(ev, sizeof(ngx_event_t));
        ev->data = this;
        ev->log = log;
        ev->cancelable = 1;
    }
    flush_ev_.handler = on_flush_event;
    op_timer_.handler = on_op_timer_event;
    connect_timer_.handler = on_connect_timer_event;
    backoff_ev_.handler = on_backoff_event;
}

bool RedisConnection::init(const RedisConf &conf) noexcept
{
    host_.data = static_cast<u_char *>(std::malloc(conf.host.len + 1));
    rbuf_ = static_cast<u_char *>(std::malloc(kReadChunk));
    if (host_.data == nullptr || rbuf_ == nullptr) {
        return false;
    }
    ngx_memcpy(host_.data, conf.host.data, conf.host.len);
    host_.data[conf.host.len] = '\0';
    host_.len = conf.host.len;

    bool v6 = false;
    if (ngx_inet_addr(host_.data, host_.len) != INADDR_NONE) {
        literal_ = true;
    }
#if (NGX_HAVE_INET6)
    u_char a6[16];
    if (!literal_ && ngx_inet6_addr(host_.data, host_.len, a6) == NGX_OK) {
        literal_ = true;
        v6 = true;
    }
#endif
    u_char *e = ngx_snprintf(reinterpret_cast<u_char *>(endpoint_buf_),
                             sizeof(endpoint_buf_) - 1,
                             v6 ? "[%V]:%d" : "%V:%d", &host_, (int) port_);
    endpoint_.data = reinterpret_cast<u_char *>(endpoint_buf_);
    endpoint_.len = e - endpoint_.data;

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
        if (!append_command(auth_, argc, argv, argvlen)) {
            return false;
        }
    }
    if (conf.db != 0) {
        u_char db[NGX_INT_T_LEN];
        const char *argv[2] = {"SELECT", reinterpret_cast<const char *>(db)};
        size_t argvlen[2] = {6, static_cast<size_t>(
                                    ngx_sprintf(db, "%i", conf.db) - db)};
        if (!append_command(select_, 2, argv, argvlen)) {
            return false;
        }
    }
    return true;
}

RedisConnection::~RedisConnection()
{
    shutting_down_ = true;
    for (RedisOp *op = head_; op; op = op->next) {
        op->cb = nullptr;   // the worker is exiting: no callbacks now
    }
    if (resolve_ctx_ != nullptr) {
        ngx_resolve_name_done(resolve_ctx_);
        resolve_ctx_ = nullptr;
    }
    if (ac_ != nullptr) {
        state_ = State::closing;
        redisAsyncFree(ac_);          // runs on_cleanup
    }
    release_nc();
    fail_all_ops();
    ngx_event_t *timers[] = {&op_timer_, &connect_timer_, &backoff_ev_};
    for (ngx_event_t *ev : timers) {
        if (ev->timer_set) {
            ngx_del_timer(ev);
        }
    }
    if (flush_ev_.posted) {
        ngx_delete_posted_event(&flush_ev_);
    }
    while (free_ops_ != nullptr) {
        RedisOp *op = free_ops_;
        free_ops_ = op->next;
        std::free(op);
    }
    std::free(rbuf_);
    std::free(host_.data);
}

// ---- commands -----------------------------------------------------------

RedisOp *RedisConnection::command(int argc, const char **argv,
                                  const size_t *argvlen, RedisCallback cb,
                                  void *data) noexcept
{
    if (argc <= 0 || ngx_exiting || ngx_terminate) {
        return nullptr;
    }
    if (state_ == State::idle && !start_connect(false)) {
        return nullptr;
    }
    if (probing_ || npending_ >= kMaxPending
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
    op->deadline = ngx_current_msec + timeout_;
    op->expired = false;
    op->canceled = false;

    if (state_ == State::resolving) {
        size_t off = pre_.len;
        if (!append_command(pre_, argc, argv, argvlen)) {
            free_op(op);
            return nullptr;
        }
        op->unsent = true;
        op->pre_off = off;
        op->pre_len = pre_.len - off;
    } else {
        fmt_.len = 0;
        if (!append_command(fmt_, argc, argv, argvlen)
            || redisAsyncFormattedCommand(ac_, on_reply, op,
                                          reinterpret_cast<char *>(fmt_.p),
                                          fmt_.len) != REDIS_OK)
        {
            free_op(op);
            return nullptr;
        }
        op->unsent = false;
    }
    link(op);

    if (!op_timer_.timer_set) {
        ngx_add_timer(&op_timer_, timeout_);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly redis command %*s, %ui pending",
                   argvlen ? argvlen[0] : std::strlen(argv[0]), argv[0],
                   npending_);
    return op;
}

RedisOp *RedisConnection::alloc_op() noexcept
{
    RedisOp *op = free_ops_;
    if (op != nullptr) {
        free_ops_ = op->next;
    } else {
        op = static_cast<RedisOp *>(std::malloc(sizeof(RedisOp)));
        if (op == nullptr) {
            return nullptr;
        }
    }
    op->conn = this;
    op->prev = op->next = nullptr;
    return op;
}

void RedisConnection::free_op(RedisOp *op) noexcept
{
    op->cb = nullptr;
    op->data = nullptr;
    op->next = free_ops_;
    free_ops_ = op;
}

void RedisConnection::link(RedisOp *op) noexcept
{
    op->prev = tail_;
    op->next = nullptr;
    if (tail_) {
        tail_->next = op;
    } else {
        head_ = op;
    }
    tail_ = op;
    npending_++;
}

void RedisConnection::unlink(RedisOp *op) noexcept
{
    if (op->prev) {
        op->prev->next = op->next;
    } else {
        head_ = op->next;
    }
    if (op->next) {
        op->next->prev = op->prev;
    } else {
        tail_ = op->prev;
    }
    op->prev = op->next = nullptr;
    npending_--;
}

void RedisConnection::invoke(RedisCallback cb, void *data,
                             redisReply *reply) noexcept
{
    try {
        cb(data, reply);
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, log_, 0,
                      "fly redis %s %V: exception in a reply callback",
                      name_, &endpoint_);
    }
}

// hiredis hands back a reply, or nullptr while freeing the context.
void RedisConnection::on_reply(redisAsyncContext *, void *r,
                               void *privdata) noexcept
{
    auto *op = static_cast<RedisOp *>(privdata);
    op->conn->complete(op, static_cast<redisReply *>(r));
}

void RedisConnection::complete(RedisOp *op, redisReply *reply) noexcept
{
    if (reply == nullptr && state_ != State::closing) {
        state_ = State::closing;      // hiredis is dropping the connection
    }
    unlink(op);
    RedisCallback cb = op->cb;
    void *data = op->data;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log_, 0, "fly redis reply %s%s",
                   reply_type(reply),
                   cb ? "" : (op->canceled ? " canceled" : " ignored"));

    if (cb != nullptr) {
        invoke(cb, data, reply);
    }
    free_op(op);
}

// Fails one op by its deadline while the connection is being set up.
void RedisConnection::expire(RedisOp *op) noexcept
{
    RedisCallback cb = op->cb;
    void *data = op->data;
    op->cb = nullptr;
    op->expired = true;
    if (op->unsent) {
        unlink(op);
        free_op(op);
    }
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly redis command timed out while connecting");
    if (cb != nullptr) {
        invoke(cb, data, nullptr);
    }
}

// Fails every op still on our list (ones hiredis does not hold).
void RedisConnection::fail_all_ops() noexcept
{
    while (head_ != nullptr) {
        RedisOp *op = head_;
        unlink(op);
        RedisCallback cb = op->cb;
        void *data = op->data;
        free_op(op);
        if (cb != nullptr) {
            invoke(cb, data, nullptr);
        }
    }
    pre_.len = 0;
    if (op_timer_.timer_set) {
        ngx_del_timer(&op_timer_);
    }
}

// ---- connecting ---------------------------------------------------------

bool RedisConnection::start_connect(bool probe) noexcept
{
    probing_ = probe;

    if (literal_) {
        return connect_to(reinterpret_cast<const char *>(host_.data));
    }
    if (resolver_ != nullptr) {
        return start_resolve();
    }
    if (naddrs_ > 0) {
        ngx_addr_t &a = addrs_[rr_ % naddrs_];
        u_char ip[NGX_SOCKADDR_STRLEN + 1];
        size_t n = ngx_sock_ntop(a.sockaddr, a.socklen, ip, NGX_SOCKADDR_STRLEN,
                                 0);
        ip[n] = '\0';
        return connect_to(reinterpret_cast<const char *>(ip));
    }

    log_error(0, "host not resolved and no \"resolver\" configured");
    enter_backoff();
    fail_all_ops();
    return false;
}

bool RedisConnection::start_resolve() noexcept
{
    ngx_resolver_ctx_t *ctx = ngx_resolve_start(resolver_, nullptr);
    if (ctx == nullptr || ctx == NGX_NO_RESOLVER) {
        log_error(0, ctx ? "no resolver defined" : "cannot start resolving");
        enter_backoff();
        fail_all_ops();
        return false;
    }
    ctx->name = host_;
    ctx->handler = on_resolved;
    ctx->data = this;
    ctx->timeout = resolver_timeout_;
    ctx->cancelable = 1;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0, "fly redis resolving \"%V\"",
                   &host_);

    state_ = State::resolving;
    resolve_ctx_ = ctx;
    if (ngx_resolve_name(ctx) != NGX_OK) {
        resolve_ctx_ = nullptr;      // freed by nginx
        log_error(0, "cannot resolve");
        enter_backoff();
        fail_all_ops();
        return false;
    }
    // The answer may have come from the cache, already connecting.
    return state_ == State::resolving || state_ == State::connecting
           || state_ == State::ready;
}

void RedisConnection::on_resolved(ngx_resolver_ctx_t *ctx) noexcept
{
    auto *self = static_cast<RedisConnection *>(ctx->data);
    self->resolve_ctx_ = nullptr;

    if (ctx->state != NGX_OK || ctx->naddrs == 0) {
        u_char msg[256];
        u_char *e = ngx_snprintf(msg, sizeof(msg) - 1,
                                 "could not resolve \"%V\": %s", &ctx->name,
                                 ctx->state ? ngx_resolver_strerror(ctx->state)
                                            : "no addresses");
        *e = '\0';
        ngx_resolve_name_done(ctx);
        self->log_error(0, reinterpret_cast<const char *>(msg));
        self->enter_backoff();
        self->fail_all_ops();
        return;
    }

    ngx_resolver_addr_t &a = ctx->addrs[self->rr_ % ctx->naddrs];
    u_char ip[NGX_SOCKADDR_STRLEN + 1];
    size_t n = ngx_sock_ntop(a.sockaddr, a.socklen, ip, NGX_SOCKADDR_STRLEN, 0);
    ip[n] = '\0';
    ngx_resolve_name_done(ctx);

    self->connect_to(reinterpret_cast<const char *>(ip));
}

// Connects to an address literal (hiredis resolves nothing for those).
bool RedisConnection::connect_to(const char *ip) noexcept
{
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly redis connecting to %s port %d%s", ip, (int) port_,
                   probing_ ? " (after a failure)" : "");

    redisAsyncContext *ac = redisAsyncConnect(ip, port_);
    if (ac == nullptr || ac->err) {
        if (ac != nullptr) {
            log_error(0, ac->errstr);
            redisAsyncFree(ac);
        } else {
            log_error(0, "out of memory");
        }
        enter_backoff();
        fail_all_ops();
        return false;
    }
    ac->c.reader->maxbuf = kReaderMaxBuf;
    et_ = (ngx_event_flags & NGX_USE_CLEAR_EVENT) != 0;

    ngx_connection_t *c = ngx_get_connection(ac->c.fd, log_);
    if (c == nullptr) {
        redisAsyncFree(ac);
        log_error(0, "no free connection");
        enter_backoff();
        fail_all_ops();
        return false;
    }
    c->data = this;
    c->read->handler = on_read_event;
    c->write->handler = on_write_event;
    c->read->log = log_;
    c->write->log = log_;
    c->idle = 1;            // ngx_close_idle_connections closes it on exit
    c->log_error = NGX_ERROR_INFO;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    ngx_int_t rc;
    if (ngx_event_actions.add_conn != nullptr) {
        rc = ngx_add_conn(c);
    } else {
        ngx_uint_t flag = et_ ? static_cast<ngx_uint_t>(NGX_CLEAR_EVENT)
                              : static_cast<ngx_uint_t>(NGX_LEVEL_EVENT);
        rc = ngx_add_event(c->read, NGX_READ_EVENT, flag);
        if (rc == NGX_OK) {
            rc = ngx_add_event(c->write, NGX_WRITE_EVENT, flag);
        }
    }
    if (rc != NGX_OK) {
        nc_ = c;
        release_nc();
        redisAsyncFree(ac);
        log_error(0, "cannot add the socket to the event loop");
        enter_backoff();
        fail_all_ops();
        return false;
    }

    ac->data = this;
    ac->ev.data = this;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);

    ac_ = ac;
    nc_ = c;
    state_ = State::connecting;
    handshake_ = 0;
    in_write_ = false;

    if (auth_.len) {
        redisAsyncFormattedCommand(ac, on_auth, this,
                                   reinterpret_cast<char *>(auth_.p),
                                   auth_.len);
        handshake_++;
    }
    if (select_.len) {
        redisAsyncFormattedCommand(ac, on_select, this,
                                   reinterpret_cast<char *>(select_.p),
                                   select_.len);
        handshake_++;
    }
    submit_unsent();

    ngx_add_timer(&connect_timer_, connect_timeout_);
    return true;
}

// Hands hiredis the commands queued while the name was being resolved.
void RedisConnection::submit_unsent() noexcept
{
    for (RedisOp *op = head_, *next; op; op = next) {
        next = op->next;
        if (!op->unsent) {
            continue;
        }
        op->unsent = false;
        if (op->canceled) {
            unlink(op);
            free_op(op);
            continue;
        }
        if (redisAsyncFormattedCommand(ac_, on_reply, op,
                                       reinterpret_cast<char *>(pre_.p)
                                           + op->pre_off,
                                       op->pre_len) != REDIS_OK)
        {
            unlink(op);
            RedisCallback cb = op->cb;
            void *data = op->data;
            free_op(op);
            if (cb) {
                invoke(cb, data, nullptr);
            }
        }
    }
    pre_.len = 0;
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

void RedisConnection::on_auth(redisAsyncContext *, void *r,
                              void *privdata) noexcept
{
    on_handshake(static_cast<RedisConnection *>(privdata),
                 static_cast<redisReply *>(r), "AUTH");
}

void RedisConnection::on_select(redisAsyncContext *, void *r,
                                void *privdata) noexcept
{
    on_handshake(static_cast<RedisConnection *>(privdata),
                 static_cast<redisReply *>(r), "SELECT");
}

void RedisConnection::on_handshake(RedisConnection *self, redisReply *reply,
                                   const char *what) noexcept
{
    if (reply == nullptr) {
        return;   // the context is being freed
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        u_char msg[256];
        u_char *e = ngx_snprintf(msg, sizeof(msg) - 1, "%s failed: %*s", what,
                                 reply->len, reply->str);
        *e = '\0';
        self->fail(reinterpret_cast<const char *>(msg));
        return;
    }
    if (--self->handshake_ == 0 && self->state_ == State::connecting) {
        self->become_ready();
    }
}

void RedisConnection::become_ready() noexcept
{
    state_ = State::ready;
    next_backoff_ = kBackoffMin;
    if (connect_timer_.timer_set) {
        ngx_del_timer(&connect_timer_);
    }
    if (probing_ || ever_failed_) {
        if (log_allowed(&log_slot_ok_)) {
            ngx_log_error(NGX_LOG_NOTICE, log_, 0,
                          "fly redis %s %V: connected", name_, &endpoint_);
        }
    }
    probing_ = false;
    ever_failed_ = false;
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log_, 0, "fly redis connected %s %V",
                   name_, &endpoint_);
}

// ---- failing ------------------------------------------------------------

void RedisConnection::log_error(ngx_err_t err, const char *what) noexcept
{
    ever_failed_ = true;
    if (log_allowed(&log_slot_)) {
        ngx_log_error(NGX_LOG_ERR, log_, err, "fly redis %s %V: %s", name_,
                      &endpoint_, what);
    }
}

// Logs, drops the connection (every pending op fails), then backs off.
void RedisConnection::fail(const char *what, ngx_err_t err) noexcept
{
    if (state_ == State::closing || state_ == State::closed
        || state_ == State::backoff)
    {
        return;
    }
    log_error(err, what);
    teardown();
}

void RedisConnection::teardown() noexcept
{
    if (resolve_ctx_ != nullptr) {
        ngx_resolve_name_done(resolve_ctx_);
        resolve_ctx_ = nullptr;
    }
    if (connect_timer_.timer_set) {
        ngx_del_timer(&connect_timer_);
    }
    torn_down_ = true;
    if (ac_ != nullptr) {
        state_ = State::closing;
        // Runs the pending callbacks with nullptr, then on_cleanup; from
        // inside a hiredis callback, once that callback has returned.
        redisAsyncFree(ac_);
        return;
    }
    state_ = State::closing;
    fail_all_ops();
    after_close();
}

// hiredis's ev.cleanup: the context is going away (its callbacks have run).
void RedisConnection::on_cleanup() noexcept
{
    redisAsyncContext *ac = ac_;
    bool ours = torn_down_;
    release_nc();
    ac_ = nullptr;
    gen_++;
    in_write_ = false;
    if (connect_timer_.timer_set) {
        ngx_del_timer(&connect_timer_);
    }
    if (!ours && !shutting_down_) {
        log_error(0, ac && ac->errstr ? ac->errstr : "connection lost");
    }
    state_ = State::closing;
    fail_all_ops();
    after_close();
}

void RedisConnection::release_nc() noexcept
{
    ngx_connection_t *c = nc_;
    if (flush_ev_.posted) {
        ngx_delete_posted_event(&flush_ev_);
    }
    if (c == nullptr) {
        return;
    }
    nc_ = nullptr;
    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }
    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }
    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }
    // hiredis closes the fd right after this: the kernel drops it from
    // epoll then, as with ngx_close_connection.
    if (ngx_event_actions.del_conn != nullptr) {
        ngx_del_conn(c, NGX_CLOSE_EVENT);
    } else {
        if (c->read->active || c->read->disabled) {
            ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }
        if (c->write->active || c->write->disabled) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }
    }
    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;   // hiredis owns the fd
}

void RedisConnection::after_close() noexcept
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log_, 0, "fly redis closed");
    torn_down_ = false;
    if (shutting_down_ || ngx_exiting || ngx_terminate) {
        state_ = State::closed;
        return;
    }
    enter_backoff();
}

void RedisConnection::enter_backoff() noexcept
{
    if (shutting_down_ || ngx_exiting || ngx_terminate) {
        state_ = State::closed;
        return;
    }
    state_ = State::backoff;
    rr_++;                        // the next attempt tries the next address
    ngx_msec_t delay = next_backoff_;
    next_backoff_ = delay * 2 > kBackoffMax ? kBackoffMax : delay * 2;
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0, "fly redis backoff %M", delay);
    if (backoff_ev_.timer_set) {
        ngx_del_timer(&backoff_ev_);
    }
    ngx_add_timer(&backoff_ev_, delay);
}

// ---- events -------------------------------------------------------------

void RedisConnection::ev_add_write(void *p) noexcept
{
    static_cast<RedisConnection *>(p)->want_write();
}

void RedisConnection::ev_del_write(void *p) noexcept
{
    static_cast<RedisConnection *>(p)->no_write();
}

void RedisConnection::ev_cleanup(void *p) noexcept
{
    static_cast<RedisConnection *>(p)->on_cleanup();
}

// hiredis has bytes to send.
void RedisConnection::want_write() noexcept
{
    ngx_connection_t *c = nc_;
    if (c == nullptr) {
        return;
    }
    ngx_event_t *wev = c->write;
    if (in_write_) {
        wev->ready = 0;          // socket buffer full: wait for the event
    } else if ((ac_->c.flags & REDIS_CONNECTED) && wev->ready) {
        // Writable: write once, after this loop iteration's handlers.
        if (!flush_ev_.posted) {
            ngx_post_event(&flush_ev_, &ngx_posted_events);
        }
        return;
    }
    if (!et_ && !wev->active) {
        // Called from inside hiredis: never free the context here.  If the
        // event cannot be added, nothing is written and the commands'
        // deadline drops the connection.
        if (ngx_add_event(wev, NGX_WRITE_EVENT, NGX_LEVEL_EVENT) != NGX_OK) {
            log_error(0, "cannot add the write event");
        }
    }
}

// hiredis's output buffer is empty.
void RedisConnection::no_write() noexcept
{
    ngx_connection_t *c = nc_;
    if (c == nullptr || et_) {
        return;
    }
    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}

void RedisConnection::on_flush_event(ngx_event_t *ev) noexcept
{
    static_cast<RedisConnection *>(ev->data)->do_write();
}

void RedisConnection::on_write_event(ngx_event_t *wev) noexcept
{
    auto *c = static_cast<ngx_connection_t *>(wev->data);
    auto *self = static_cast<RedisConnection *>(c->data);
    if (c->close) {
        self->do_read();    // handles the close
        return;
    }
    if (self->flush_ev_.posted) {
        return;             // the posted flush writes everything at once
    }
    self->do_write();
}

void RedisConnection::do_write() noexcept
{
    redisAsyncContext *ac = ac_;
    if (ac == nullptr) {
        return;
    }
    if ((ac->c.flags & REDIS_CONNECTED) && sdslen(ac->c.obuf) == 0) {
        return;
    }
    uint64_t gen = gen_;
    in_write_ = true;
    // Completes the connect first if needed; may free the context.
    redisAsyncHandleWrite(ac);
    if (gen == gen_) {
        in_write_ = false;
    }
}

void RedisConnection::on_read_event(ngx_event_t *rev) noexcept
{
    auto *c = static_cast<ngx_connection_t *>(rev->data);
    static_cast<RedisConnection *>(c->data)->do_read();
}

// After a short read, is the socket known to be empty?
bool RedisConnection::short_read_drains() const noexcept
{
    if (!(ngx_event_flags & NGX_USE_GREEDY_EVENT)) {
        return true;    // level-triggered, or kqueue: we get told again
    }
#if (NGX_HAVE_EPOLLRDHUP)
    // epoll reports EOF separately (as ngx_unix_recv relies on).
    if ((ngx_event_flags & NGX_USE_EPOLL_EVENT) && ngx_use_epoll_rdhup
        && nc_ != nullptr && !nc_->read->pending_eof)
    {
        return true;
    }
#endif
    return false;
}

void RedisConnection::do_read() noexcept
{
    ngx_connection_t *c = nc_;
    redisAsyncContext *ac = ac_;
    if (c == nullptr || ac == nullptr) {
        return;
    }
    if (c->close) {
        // ngx_close_idle_connections: the worker is shutting down.
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, log_, 0,
                       "fly redis closing: worker exiting");
        shutting_down_ = true;
        if (backoff_ev_.timer_set) {
            ngx_del_timer(&backoff_ev_);
        }
        teardown();
        return;
    }
    if (!(ac->c.flags & REDIS_CONNECTED)) {
        return;   // the write event completes the connect (or reports it)
    }

    ngx_event_t *rev = c->read;
    uint64_t gen = gen_;
    for (;;) {
        ssize_t n = recv(c->fd, rbuf_, kReadChunk, 0);
        if (n > 0) {
            // A feed error is reported by redisProcessCallbacks, which
            // then frees the context.
            redisReaderFeed(ac->c.reader, reinterpret_cast<char *>(rbuf_),
                            static_cast<size_t>(n));
            redisProcessCallbacks(ac);
            if (gen != gen_) {
                return;   // freed by a callback or an error
            }
            if (static_cast<size_t>(n) < kReadChunk && short_read_drains()) {
                rev->ready = 0;
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
            rev->ready = 0;
            return;
        }
        if (err == NGX_EINTR) {
            continue;
        }
        fail("recv() failed", err);
        return;
    }
}

// ---- timers -------------------------------------------------------------

void RedisConnection::on_op_timer_event(ngx_event_t *ev) noexcept
{
    static_cast<RedisConnection *>(ev->data)->on_op_timer();
}

void RedisConnection::on_op_timer() noexcept
{
    if (state_ != State::resolving && state_ != State::connecting
        && state_ != State::ready)
    {
        return;
    }
    ngx_msec_t now = ngx_current_msec;
    for (RedisOp *op = head_, *next; op; op = next) {
        next = op->next;
        if (op->expired) {
            continue;
        }
        auto left = static_cast<ngx_msec_int_t>(op->deadline - now);
        if (left > 0) {
            ngx_add_timer(&op_timer_, static_cast<ngx_msec_t>(left));
            return;
        }
        if (state_ == State::ready) {
            // Redis is not answering: everything behind this op waits too.
            fail("command timed out");
            return;
        }
        // Still connecting (it has its own timeout): fail the command only.
        expire(op);
        if (state_ != State::resolving && state_ != State::connecting) {
            return;
        }
    }
}

void RedisConnection::on_connect_timer_event(ngx_event_t *ev) noexcept
{
    static_cast<RedisConnection *>(ev->data)->fail("connect timed out");
}

void RedisConnection::on_backoff_event(ngx_event_t *ev) noexcept
{
    auto *self = static_cast<RedisConnection *>(ev->data);
    if (self->shutting_down_ || ngx_exiting || ngx_terminate) {
        self->state_ = State::closed;
        return;
    }
    self->state_ = State::idle;
    self->start_connect(true);   // in the background; commands wait for it
}

// ---- the public face ----------------------------------------------------

RedisClient::RedisClient(const RedisConf &conf, ngx_msec_t connect_timeout,
                         ngx_msec_t timeout, ngx_resolver_t *resolver,
                         ngx_msec_t resolver_timeout, ngx_log_t *log)
    : conn_(nullptr)
{
    auto *conn = new (std::nothrow) RedisConnection(
        conf, connect_timeout, timeout, resolver, resolver_timeout, log);
    if (conn == nullptr || !conn->init(conf)) {
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
    std::free(str);   // hiredis 0.14 allocates reply strings with malloc
}

}  // namespace fly
