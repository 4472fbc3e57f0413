// fly-edge nginx shell: the Redis client (see ngx_fly_redis.hpp).
//
// hiredis's async API with our own nginx adapter:
// - the socket hiredis opens becomes an ngx_connection_t (ngx_get_connection)
//   registered once, edge-triggered where nginx is (epoll, kqueue), with
//   the write event added and removed as hiredis asks when level-triggered;
//   hiredis owns and closes the fd, so the cleanup hook only frees the
//   nginx connection;
// - writes are batched: commands are formatted straight into hiredis's
//   output buffer; when the socket is writable a flush event is posted to
//   ngx_posted_events, so every command issued during one event-loop
//   iteration goes out in one write() (redisAsyncHandleWrite) once the
//   iteration's handlers have run;
// - reads and replies are ours (hiredis's reader and callback list are not
//   used): recv() into our buffer until the socket is drained, parse RESP in
//   place and hand each reply to the oldest op of our FIFO.  A top-level
//   bulk string (GET) that is not complete in the buffer is received in
//   place: its body goes straight from the socket into the malloc'd block
//   that becomes reply->str (readv() into the body and, behind it, a little
//   of our buffer for the replies that follow), so a large HIT costs no
//   user-space copy at all; smaller replies cost one copy (buffer ->
//   reply->str) and the buffer is never shifted except for a partial reply
//   at its end;
// - our own FIFO of ops carries each command's deadline (one timer for the
//   oldest), lets cancel() silence a callback while its reply is awaited,
//   and holds commands queued while the host name is being resolved or
//   while enough replies are already on their way (see kInflightMin).
// hiredis may free its context from inside any call into it (errors in
// redisAsyncHandleWrite, the connect callback): every such call, and every
// reply callback, is followed by a check of gen_, which the cleanup hook
// bumps.
#include "ngx_fly_redis.hpp"

// hiredis 0.14's sds.h declares its functions without extern "C".
extern "C" {
#include <hiredis/sds.h>
}
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <sys/uio.h>

#include <cerrno>
#include <climits>
#include <ctime>
#include <cstdlib>
#include <cstring>
#include <new>

namespace fly {

namespace {

constexpr ngx_msec_t kBackoffMin = 50;
constexpr ngx_msec_t kBackoffMax = 5000;
constexpr ngx_uint_t kMaxPending = 65536;     // ops in flight per connection

// How many commands are sent ahead of their replies.  Unbounded pipelining
// lets Redis run far ahead of us when we are the bottleneck: megabytes of
// replies then wait in socket buffers, out of the CPU caches, and both
// Redis's copy into the socket and ours out of it get slower; and when the
// kernel's receive-buffer autotuning stays small (it sometimes does, at
// ~600 KB on loopback), Redis is window-limited and every recv() of ours
// makes Redis's kernel send the next segment from inside it.  With 64
// concurrent 32 KiB HITs on loopback a HIT cost 21 us of CPU (nginx + Redis)
// unbounded, 19 us with this, up to 31 us when window-limited.  So commands
// wait in pre_ while the replies expected for those sent (the average reply
// size times their number) would exceed a budget: kInflightMin, or what a
// fast worker consumes (kInflightRate) during the smallest round trip seen
// lately, whichever is larger, so that a distant Redis still has enough in
// flight.  Small replies are never held back in practice (512 KiB is 512
// replies of 1 KiB).
constexpr size_t kInflightMin = 512 * 1024;
constexpr size_t kInflightMax = 64 * 1024 * 1024;
constexpr size_t kInflightRate = 2048;          // bytes per microsecond
constexpr ngx_uint_t kInflightMinOps = 4;
constexpr size_t kReplyOverhead = 16;           // a reply's RESP framing
constexpr ngx_msec_t kRttEpoch = 10000;         // min RTT: over 10-20 s

// A monotonic clock in microseconds (vDSO).
uint64_t now_us() noexcept
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000
           + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// Receiving.  The buffer is kReadChunk; it grows only for a reply other than
// a top-level bulk string that does not fit (an array, a long status line),
// up to kMaxReplyBuf, and shrinks back once empty.
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMaxReplyBuf = 64 * 1024 * 1024;
// After a large bulk string (kLargeBulk or more), the next one is probably
// large too: a read then takes at most kBodySpare into the buffer (the next
// reply's head; what lands in the buffer is copied once more), and the body
// follows in place.  Otherwise a read takes what fits.
constexpr size_t kLargeBulk = 16 * 1024;
constexpr size_t kBodySpare = 4 * 1024;
constexpr long long kMaxBulk = 512LL * 1024 * 1024;  // Redis's own limit
constexpr int kMaxDepth = 7;                          // nested arrays, as hiredis
constexpr size_t kMaxHeader = 32;   // "$", "*" or ":" line: sign, 19 digits

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

// An upper bound of the size of a command in RESP.
size_t command_size(int argc, const char **argv, const size_t *argvlen)
    noexcept
{
    size_t need = sizeof("*\r\n") - 1 + NGX_INT_T_LEN;
    for (int i = 0; i < argc; i++) {
        size_t n = argvlen ? argvlen[i] : std::strlen(argv[i]);
        need += sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN + n;
    }
    return need;
}

// Writes "<c><v>\r\n" (what ngx_sprintf would, for a fraction of the cost).
u_char *write_line(u_char *p, u_char c, size_t v) noexcept
{
    u_char tmp[NGX_SIZE_T_LEN];
    u_char *d = tmp + sizeof(tmp);
    do {
        *--d = static_cast<u_char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    *p++ = c;
    while (d < tmp + sizeof(tmp)) {
        *p++ = *d++;
    }
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

// Writes a command in RESP (the format hiredis would make) at `p`, which
// has room for command_size() bytes; returns the end.
u_char *write_command(u_char *p, int argc, const char **argv,
                      const size_t *argvlen) noexcept
{
    p = write_line(p, '*', static_cast<size_t>(argc));
    for (int i = 0; i < argc; i++) {
        size_t n = argvlen ? argvlen[i] : std::strlen(argv[i]);
        p = write_line(p, '$', n);
        p = ngx_cpymem(p, argv[i], n);
        *p++ = '\r';
        *p++ = '\n';
    }
    return p;
}

// Appends a command in RESP to `b`.
bool append_command(Buf &b, int argc, const char **argv, const size_t *argvlen)
    noexcept
{
    if (!b.reserve(b.len + command_size(argc, argv, argvlen))) {
        return false;
    }
    b.len = write_command(b.p + b.len, argc, argv, argvlen) - b.p;
    return true;
}

// ---- RESP replies ---------------------------------------------------------

// The first CRLF in [p, end), or nullptr.
const char *find_crlf(const char *p, const char *end) noexcept
{
    while (p < end) {
        auto *cr = static_cast<const char *>(std::memchr(p, '\r', end - p));
        if (cr == nullptr || cr + 1 >= end) {
            return nullptr;
        }
        if (cr[1] == '\n') {
            return cr;
        }
        p = cr + 1;
    }
    return nullptr;
}

// A decimal integer filling [p, e), optionally negative, without overflow.
bool parse_ll(const char *p, const char *e, long long &out) noexcept
{
    bool neg = false;
    if (p < e && *p == '-') {
        neg = true;
        p++;
    }
    if (p == e || e - p > 19) {
        return false;
    }
    unsigned long long v = 0;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        v = v * 10 + static_cast<unsigned>(*p - '0');
    }
    if (v > (neg ? static_cast<unsigned long long>(LLONG_MAX) + 1
                 : static_cast<unsigned long long>(LLONG_MAX)))
    {
        return false;
    }
    out = neg ? static_cast<long long>(0 - v) : static_cast<long long>(v);
    return true;
}

enum class Scan { done, more, bad };

// Is one complete, well-formed reply at p?  Then *next is just past it.
// Allocates nothing: a reply is only built once it is all there.
Scan scan_reply(const char *p, const char *end, int depth, const char **next,
                const char **why) noexcept
{
    if (p >= end) {
        return Scan::more;
    }
    const char *nl = find_crlf(p + 1, end);
    if (nl == nullptr) {
        if (*p != '+' && *p != '-' && static_cast<size_t>(end - p) > kMaxHeader)
        {
            *why = "line too long";
            return Scan::bad;
        }
        return Scan::more;
    }
    long long n = 0;
    switch (*p) {
    case '+':
    case '-':
        *next = nl + 2;
        return Scan::done;
    case ':':
        if (!parse_ll(p + 1, nl, n)) {
            *why = "bad integer value";
            return Scan::bad;
        }
        *next = nl + 2;
        return Scan::done;
    case '$': {
        if (!parse_ll(p + 1, nl, n) || n < -1 || n > kMaxBulk) {
            *why = "bad bulk string length";
            return Scan::bad;
        }
        const char *body = nl + 2;
        if (n == -1) {
            *next = body;
            return Scan::done;
        }
        size_t len = static_cast<size_t>(n);
        if (static_cast<size_t>(end - body) < len + 2) {
            return Scan::more;
        }
        if (body[len] != '\r' || body[len + 1] != '\n') {
            *why = "bulk string not followed by CRLF";
            return Scan::bad;
        }
        *next = body + len + 2;
        return Scan::done;
    }
    case '*': {
        if (!parse_ll(p + 1, nl, n) || n < -1 || n > INT_MAX) {
            *why = "bad multi-bulk length";
            return Scan::bad;
        }
        if (depth >= kMaxDepth && n > 0) {
            *why = "multi-bulk replies nested too deep";
            return Scan::bad;
        }
        const char *q = nl + 2;
        for (long long i = 0; i < n; i++) {
            Scan s = scan_reply(q, end, depth + 1, &q, why);
            if (s != Scan::done) {
                return s;
            }
        }
        *next = q;
        return Scan::done;
    }
    default:
        *why = "bad reply type byte";
        return Scan::bad;
    }
}

void free_reply(redisReply *r) noexcept
{
    if (r == nullptr) {
        return;
    }
    if (r->element != nullptr) {
        for (size_t i = 0; i < r->elements; i++) {
            free_reply(r->element[i]);
        }
        std::free(r->element);
    }
    std::free(r->str);
    std::free(r);
}

// A malloc'd, NUL-terminated copy of n bytes.
char *copy_str(const char *p, size_t n) noexcept
{
    auto *s = static_cast<char *>(std::malloc(n + 1));
    if (s != nullptr) {
        std::memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

// Fills `r` from the reply at p, which scan_reply() found complete; nested
// replies are malloc'd (free_reply), `r` itself is the caller's.  Returns
// false when out of memory (what was built is left in `r` to free).
bool build_reply(redisReply *r, const char *p, const char *end,
                 const char **next) noexcept
{
    const char *nl = find_crlf(p + 1, end);
    long long n = 0;
    *next = nl + 2;
    switch (*p) {
    case '+':
    case '-':
        r->type = *p == '+' ? REDIS_REPLY_STATUS : REDIS_REPLY_ERROR;
        r->len = static_cast<size_t>(nl - (p + 1));
        r->str = copy_str(p + 1, r->len);
        return r->str != nullptr;
    case ':':
        parse_ll(p + 1, nl, n);
        r->type = REDIS_REPLY_INTEGER;
        r->integer = n;
        return true;
    case '$':
        parse_ll(p + 1, nl, n);
        if (n == -1) {
            r->type = REDIS_REPLY_NIL;
            return true;
        }
        r->type = REDIS_REPLY_STRING;
        r->len = static_cast<size_t>(n);
        r->str = copy_str(nl + 2, r->len);
        *next = nl + 2 + r->len + 2;
        return r->str != nullptr;
    default:  // '*'
        parse_ll(p + 1, nl, n);
        if (n == -1) {
            r->type = REDIS_REPLY_NIL;
            return true;
        }
        r->type = REDIS_REPLY_ARRAY;
        if (n == 0) {
            return true;
        }
        r->element = static_cast<redisReply **>(
            std::calloc(static_cast<size_t>(n), sizeof(redisReply *)));
        if (r->element == nullptr) {
            return false;
        }
        r->elements = static_cast<size_t>(n);
        const char *q = nl + 2;
        for (size_t i = 0; i < r->elements; i++) {
            auto *e = static_cast<redisReply *>(
                std::calloc(1, sizeof(redisReply)));
            if (e == nullptr) {
                return false;
            }
            r->element[i] = e;
            if (!build_reply(e, q, end, &q)) {
                return false;
            }
        }
        *next = q;
        return true;
    }
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
    uint64_t sent_us;    // when it went to the output buffer
    size_t pre_off;      // bytes in conn->pre_ while unsent
    size_t pre_len;
    bool unsent;         // held in pre_ (resolving, or too many in flight)
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
    void release_held() noexcept;
    ngx_uint_t send_cap() const noexcept;
    void note_reply(RedisOp *op, size_t bytes) noexcept;
    void become_ready() noexcept;

    // writing
    bool output_command(int argc, const char **argv,
                        const size_t *argvlen) noexcept;
    bool output_raw(const u_char *p, size_t n) noexcept;

    // replies
    bool prepare_rbuf() noexcept;
    bool process_rbuf() noexcept;
    bool finish_body() noexcept;
    bool dispatch(redisReply *reply) noexcept;
    bool dispatch_owned(redisReply *reply) noexcept;
    void reset_reader() noexcept;
    void protocol_error(const char *why) noexcept;

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
    int hs_next_ = 0;             // index in hs_what_ of the next one
    const char *hs_what_[2] = {nullptr, nullptr};
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
    Buf pre_;                     // held commands (RedisOp::unsent)
    RedisOp *held_ = nullptr;     // the first of them: they end the FIFO
    ngx_uint_t sent_ = 0;         // ops sent, reply awaited
    size_t avg_reply_ = 4096;     // moving average of reply sizes
    uint64_t rtt_min_ = UINT64_MAX;       // smallest reply time, this epoch
    uint64_t rtt_min_prev_ = UINT64_MAX;  // and the previous one
    ngx_msec_t rtt_epoch_ = 0;

    // receiving: replies not yet dispatched are at rbuf_[rpos_, rlen_)
    char *rbuf_ = nullptr;
    size_t rcap_ = 0;
    size_t rpos_ = 0;
    size_t rlen_ = 0;
    // a top-level bulk string received in place: body_len_ bytes and CRLF,
    // body_got_ of them there; rbuf_ is empty meanwhile
    char *body_ = nullptr;
    size_t body_len_ = 0;
    size_t body_got_ = 0;
    bool large_ = false;          // the last bulk string was large

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
    rbuf_ = static_cast<char *>(std::malloc(kReadChunk));
    rcap_ = kReadChunk;
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
    std::free(body_);
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

    if (state_ == State::resolving || held_ != nullptr
        || sent_ >= send_cap())
    {
        size_t off = pre_.len;
        if (!append_command(pre_, argc, argv, argvlen)) {
            free_op(op);
            return nullptr;
        }
        op->unsent = true;
        op->pre_off = off;
        op->pre_len = pre_.len - off;
        link(op);
        if (held_ == nullptr) {
            held_ = op;
        }
    } else {
        if (!output_command(argc, argv, argvlen)) {
            free_op(op);
            return nullptr;
        }
        op->unsent = false;
        op->sent_us = now_us();
        sent_++;
        link(op);
    }

    if (!op_timer_.timer_set) {
        ngx_add_timer(&op_timer_, timeout_);
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly redis command %*s, %ui pending",
                   argvlen ? argvlen[0] : std::strlen(argv[0]), argv[0],
                   npending_);
    return op;
}

// Formats a command straight into hiredis's output buffer.
bool RedisConnection::output_command(int argc, const char **argv,
                                     const size_t *argvlen) noexcept
{
    redisContext *c = &ac_->c;
    if (c->flags & (REDIS_DISCONNECTING | REDIS_FREEING)) {
        return false;
    }
    size_t need = command_size(argc, argv, argvlen);
    if (need > INT_MAX / 2) {
        return false;          // sdsIncrLen() takes an int
    }
    sds ob = sdsMakeRoomFor(c->obuf, need);
    if (ob == nullptr) {
        return false;
    }
    c->obuf = ob;
    auto *p = reinterpret_cast<u_char *>(ob) + sdslen(ob);
    u_char *e = write_command(p, argc, argv, argvlen);
    sdsIncrLen(ob, static_cast<int>(e - p));
    want_write();
    return true;
}

bool RedisConnection::output_raw(const u_char *p, size_t n) noexcept
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
    if (op == held_) {
        held_ = op->next;   // held ops end the FIFO
    }
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

// Hands an op its reply (never nullptr: failed ops go by fail_all_ops()).
void RedisConnection::complete(RedisOp *op, redisReply *reply) noexcept
{
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

// Fails every op (sent, held or expired: the client holds them all).
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
    held_ = nullptr;
    sent_ = 0;
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
    hs_next_ = 0;
    in_write_ = false;
    reset_reader();

    // The first replies on the connection are these.
    if (auth_.len) {
        if (!output_raw(auth_.p, auth_.len)) {
            fail("out of memory");
            return false;
        }
        hs_what_[handshake_++] = "AUTH";
    }
    if (select_.len) {
        if (!output_raw(select_.p, select_.len)) {
            fail("out of memory");
            return false;
        }
        hs_what_[handshake_++] = "SELECT";
    }
    release_held();

    ngx_add_timer(&connect_timer_, connect_timeout_);
    return true;
}

// How many ops may await their reply (see kInflightMin).
ngx_uint_t RedisConnection::send_cap() const noexcept
{
    uint64_t rtt = rtt_min_ < rtt_min_prev_ ? rtt_min_ : rtt_min_prev_;
    size_t budget = kInflightMin;
    if (rtt != UINT64_MAX) {
        uint64_t b = rtt < kInflightMax / kInflightRate ? rtt * kInflightRate
                                                        : kInflightMax;
        if (b > budget) {
            budget = static_cast<size_t>(b);
        }
    }
    size_t cap = budget / avg_reply_;
    if (cap < kInflightMinOps) {
        cap = kInflightMinOps;
    }
    return cap < kMaxPending ? static_cast<ngx_uint_t>(cap) : kMaxPending;
}

// A reply of `bytes` came for a sent op: updates the averages.
void RedisConnection::note_reply(RedisOp *op, size_t bytes) noexcept
{
    if (sent_ > 0) {
        sent_--;
    }
    bytes += kReplyOverhead;
    avg_reply_ = bytes >= avg_reply_ ? avg_reply_ + (bytes - avg_reply_) / 8
                                     : avg_reply_ - (avg_reply_ - bytes) / 8;
    if (avg_reply_ < kReplyOverhead) {
        avg_reply_ = kReplyOverhead;
    }
    uint64_t now = now_us();
    uint64_t rtt = now > op->sent_us ? now - op->sent_us : 0;
    if (static_cast<ngx_msec_int_t>(ngx_current_msec - rtt_epoch_) >= 0) {
        rtt_epoch_ = ngx_current_msec + kRttEpoch;
        rtt_min_prev_ = rtt_min_;
        rtt_min_ = UINT64_MAX;
    }
    if (rtt < rtt_min_) {
        rtt_min_ = rtt;
    }
}

// Sends held commands (queued while resolving, or while too many were in
// flight) as far as send_cap() allows, in order.
void RedisConnection::release_held() noexcept
{
    if (state_ != State::connecting && state_ != State::ready) {
        return;
    }
    ngx_uint_t cap = send_cap();
    uint64_t now = 0;
    while (held_ != nullptr && sent_ < cap) {
        RedisOp *op = held_;
        held_ = op->next;
        op->unsent = false;
        if (op->canceled) {
            unlink(op);
            free_op(op);
            continue;
        }
        if (!output_raw(pre_.p + op->pre_off, op->pre_len)) {
            unlink(op);
            RedisCallback cb = op->cb;
            void *data = op->data;
            free_op(op);
            if (cb) {
                invoke(cb, data, nullptr);   // may issue commands: held_ on
            }
            if (state_ != State::connecting && state_ != State::ready) {
                return;
            }
            continue;
        }
        if (now == 0) {
            now = now_us();
        }
        op->sent_us = now;
        sent_++;
    }
    if (held_ == nullptr) {
        pre_.len = 0;
    } else if (held_->pre_off >= kReadChunk && held_->pre_off * 2 >= pre_.len) {
        // Drop the sent prefix.
        size_t off = held_->pre_off;
        std::memmove(pre_.p, pre_.p + off, pre_.len - off);
        pre_.len -= off;
        for (RedisOp *op = held_; op != nullptr; op = op->next) {
            op->pre_off -= off;
        }
    }
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
        // Runs on_cleanup, which fails the pending ops: at once, or from
        // inside a hiredis callback once that callback has returned.
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
    reset_reader();
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

// There are bytes to send (a command was appended, or hiredis asks).
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
        // Maybe called from inside hiredis: never free the context.  If the
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
    for (;;) {
        struct iovec iov[2];
        int niov = 0;
        size_t body_need = 0;
        if (body_ != nullptr) {
            // The rest of a bulk string, straight into its own block; then a
            // little of what follows (rbuf_ is empty meanwhile).
            body_need = body_len_ + 2 - body_got_;
            iov[niov].iov_base = body_ + body_got_;
            iov[niov++].iov_len = body_need;
            iov[niov].iov_base = rbuf_;
            iov[niov++].iov_len = rcap_ < kBodySpare ? rcap_ : kBodySpare;
        } else {
            if (!prepare_rbuf()) {
                return;
            }
            size_t room = rcap_ - rlen_;
            if (large_ && rlen_ == 0 && room > kBodySpare) {
                room = kBodySpare;
            }
            iov[niov].iov_base = rbuf_ + rlen_;
            iov[niov++].iov_len = room;
        }
        size_t want = 0;
        for (int i = 0; i < niov; i++) {
            want += iov[i].iov_len;
        }

        ssize_t n = niov == 1 ? recv(c->fd, iov[0].iov_base, iov[0].iov_len, 0)
                              : readv(c->fd, iov, niov);
        if (n > 0) {
            size_t got = static_cast<size_t>(n);
            size_t rest = got;
            if (body_ != nullptr) {
                size_t k = got < body_need ? got : body_need;
                body_got_ += k;
                rest -= k;
                if (body_got_ == body_len_ + 2 && !finish_body()) {
                    return;   // the connection is gone
                }
            }
            rlen_ += rest;
            if (!process_rbuf()) {
                return;
            }
            if (held_ != nullptr) {
                release_held();
            }
            if (got < want && short_read_drains()) {
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

// ---- replies ------------------------------------------------------------

void RedisConnection::reset_reader() noexcept
{
    std::free(body_);
    body_ = nullptr;
    body_len_ = body_got_ = 0;
    rpos_ = rlen_ = 0;
}

void RedisConnection::protocol_error(const char *why) noexcept
{
    u_char msg[128];
    u_char *e = ngx_snprintf(msg, sizeof(msg) - 1, "protocol error: %s", why);
    *e = '\0';
    fail(reinterpret_cast<const char *>(msg));
}

// Makes room at the end of rbuf_ for a read.  Only a partial reply is
// kept, at the start; the buffer grows for one that does not fit and
// shrinks back once empty.
bool RedisConnection::prepare_rbuf() noexcept
{
    if (rpos_ == rlen_) {
        rpos_ = rlen_ = 0;
        if (rcap_ > kReadChunk) {
            auto *p = static_cast<char *>(std::realloc(rbuf_, kReadChunk));
            if (p != nullptr) {
                rbuf_ = p;
                rcap_ = kReadChunk;
            }
        }
        return true;
    }
    if (rcap_ - rlen_ >= kReadChunk / 2) {
        return true;
    }
    if (rpos_ > 0) {
        std::memmove(rbuf_, rbuf_ + rpos_, rlen_ - rpos_);
        rlen_ -= rpos_;
        rpos_ = 0;
    }
    if (rcap_ - rlen_ >= kReadChunk / 4) {
        return true;
    }
    if (rcap_ >= kMaxReplyBuf) {
        protocol_error("reply too large");
        return false;
    }
    auto *p = static_cast<char *>(std::realloc(rbuf_, rcap_ * 2));
    if (p == nullptr) {
        fail("out of memory");
        return false;
    }
    rbuf_ = p;
    rcap_ *= 2;
    return true;
}

// A bulk string received in place is complete.
bool RedisConnection::finish_body() noexcept
{
    char *s = body_;
    size_t len = body_len_;
    body_ = nullptr;
    body_len_ = body_got_ = 0;
    if (s[len] != '\r' || s[len + 1] != '\n') {
        std::free(s);
        protocol_error("bulk string not followed by CRLF");
        return false;
    }
    s[len] = '\0';
    large_ = len >= kLargeBulk;
    redisReply r{};
    r.type = REDIS_REPLY_STRING;
    r.str = s;
    r.len = len;
    return dispatch_owned(&r);
}

// Dispatches every complete reply in rbuf_.  A top-level bulk string that
// is not all there moves to its own block (body_), the rest of it to be
// received in place.  Returns false when the connection is gone.
bool RedisConnection::process_rbuf() noexcept
{
    while (rpos_ < rlen_) {
        const char *p = rbuf_ + rpos_;
        const char *end = rbuf_ + rlen_;

        if (*p == '$') {
            // The common case (GET), without scanning twice.
            const char *nl = find_crlf(p + 1, end);
            if (nl == nullptr) {
                if (static_cast<size_t>(end - p) > kMaxHeader) {
                    protocol_error("bad bulk string length");
                    return false;
                }
                break;
            }
            long long n;
            if (!parse_ll(p + 1, nl, n) || n < -1 || n > kMaxBulk) {
                protocol_error("bad bulk string length");
                return false;
            }
            const char *body = nl + 2;
            redisReply r{};
            if (n == -1) {
                rpos_ = body - rbuf_;
                r.type = REDIS_REPLY_NIL;
                if (!dispatch(&r)) {
                    return false;
                }
                continue;
            }
            size_t len = static_cast<size_t>(n);
            size_t have = end - body;
            large_ = len >= kLargeBulk;
            if (have >= len + 2) {
                if (body[len] != '\r' || body[len + 1] != '\n') {
                    protocol_error("bulk string not followed by CRLF");
                    return false;
                }
                r.type = REDIS_REPLY_STRING;
                r.len = len;
                r.str = copy_str(body, len);
                if (r.str == nullptr) {
                    fail("out of memory");
                    return false;
                }
                rpos_ = body + len + 2 - rbuf_;
                if (!dispatch_owned(&r)) {
                    return false;
                }
                continue;
            }
            body_ = static_cast<char *>(std::malloc(len + 2));
            if (body_ == nullptr) {
                fail("out of memory");
                return false;
            }
            std::memcpy(body_, body, have);
            body_len_ = len;
            body_got_ = have;
            rpos_ = rlen_ = 0;
            return true;
        }

        const char *next = nullptr;
        const char *why = "";
        Scan sc = scan_reply(p, end, 0, &next, &why);
        if (sc == Scan::more) {
            break;
        }
        if (sc == Scan::bad) {
            protocol_error(why);
            return false;
        }
        redisReply r{};
        bool ok = build_reply(&r, p, end, &next);
        rpos_ = next - rbuf_;
        if (!ok) {
            for (size_t i = 0; i < r.elements; i++) {
                free_reply(r.element[i]);
            }
            std::free(r.element);
            std::free(r.str);
            fail("out of memory");
            return false;
        }
        if (!dispatch_owned(&r)) {
            return false;
        }
    }
    if (rpos_ == rlen_) {
        rpos_ = rlen_ = 0;
    }
    return true;
}

// Dispatches a reply whose parts are malloc'd (the callback may have taken
// str) and frees them; the redisReply itself is the caller's.
bool RedisConnection::dispatch_owned(redisReply *reply) noexcept
{
    bool alive = dispatch(reply);
    for (size_t i = 0; i < reply->elements; i++) {
        free_reply(reply->element[i]);
    }
    std::free(reply->element);
    std::free(reply->str);
    return alive;
}

// The next reply on the connection: a handshake's, then the oldest op's.
// Returns false when the connection is gone.
bool RedisConnection::dispatch(redisReply *reply) noexcept
{
    uint64_t gen = gen_;
    if (handshake_ > 0) {
        on_handshake(this, reply, hs_what_[hs_next_++ & 1]);
        return gen == gen_;
    }
    RedisOp *op = head_;
    if (op == nullptr || op->unsent) {
        // Nothing was asked (e.g. "max number of clients reached" before
        // Redis closes the connection).
        u_char msg[256];
        u_char *e = ngx_snprintf(msg, sizeof(msg) - 1,
                                 "unexpected %s reply%s%*s", reply_type(reply),
                                 reply->type == REDIS_REPLY_ERROR ? ": " : "",
                                 reply->type == REDIS_REPLY_ERROR
                                     ? (reply->len < 200 ? reply->len : 200)
                                     : static_cast<size_t>(0),
                                 reply->str ? reply->str : "");
        *e = '\0';
        fail(reinterpret_cast<const char *>(msg));
        return false;
    }
    note_reply(op, reply->type == REDIS_REPLY_STRING ? reply->len : 0);
    complete(op, reply);
    return gen == gen_;
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
    std::free(str);   // reply strings are malloc'd (copy_str, do_read)
}

}  // namespace fly
