// fly-edge nginx shell: the event glue that the asynchronous clients share
// (the Redis client, the PostgreSQL client):
//   Event      a timer and/or posted event (call<&C::m> makes its handler)
//   Backoff    reconnect delays, 50 ms doubling up to 5 s
//   Peer       where the peer is: address literals, names through nginx's
//              resolver (looked up again after failures; AAAA-only names
//              work), or addresses resolved at load time; and the client's
//              log lines, each level at most once a second (log_allowed)
//   Link       the life of the connection: lookup, connect deadline,
//              ready, failure, backoff, probing, graceful shutdown
//   LibSocket  a socket that a client library opened and closes, driven
//              by nginx's events
// Nothing here blocks, and every object is a plain member of its client
// (no allocation from nginx pools).  Handlers are plain functions taking
// the client (`data`), called from nginx's event loop.
//
// A library's socket (hiredis, libpq) is driven like this:
//   - after the library opens it (redisAsyncConnect; PQconnectStart, and
//     after every PQconnectPoll, since PQsocket() changes when libpq tries
//     the next address), call track(fd): the socket becomes an
//     ngx_connection_t registered for reading and writing, edge-triggered
//     where nginx's events are (epoll, kqueue); tracking the same socket
//     again is a no-op, another one (even under the same number) replaces
//     it;
//   - level-triggered (poll, select): call want_write(true/false) as the
//     library wants to write or not (hiredis's addWrite/delWrite hooks,
//     PGRES_POLLING_WRITING/READING); edge-triggered, nothing;
//   - on_read / on_write run on readiness; on_close when nginx closes idle
//     connections (graceful shutdown): call Link::shut_down() then;
//   - before the library closes the fd (hiredis's cleanup hook, PQfinish),
//     call release(): the nginx connection goes, the fd is not touched.
// For libpq (ngx_fly_pg.cpp), Link::Driver::link_open() calls
// PQconnectStartParams() with hostaddr=PeerAddress::text and the port,
// PQsetnonblocking() and track(PQsocket()); its read and write handlers
// PQconnectPoll() (again at CONNECTION_MADE, and while has_input(), when
// edge-triggered), track(PQsocket()) and want_write() by the poll status,
// then Link::ready() at PGRES_POLLING_OK; link_close() releases the
// socket, calls PQfinish() and returns true.
#pragma once

#include "ngx_fly.hpp"

namespace fly {

using EventHandler = void (*)(void *data) noexcept;

// An EventHandler that calls a member function on `data`:
// ev.init(call<&Client::on_timer>, this, log).
template <typename M> struct MemberClass;
template <typename C> struct MemberClass<void (C::*)() noexcept> {
    using type = C;
};
template <auto M>
void call(void *data) noexcept
{
    (static_cast<typename MemberClass<decltype(M)>::type *>(data)->*M)();
}

// ---- Event ---------------------------------------------------------------
// One nginx event, used as a timer, a posted event, or both.  A worker that
// is shutting down gracefully exits as soon as only cancelable timers are
// left (ngx_event_no_timers_left): a timer that bounds the wait of a
// request must not be cancelable, others should be.
class Event {
public:
    Event() noexcept;
    ~Event();
    Event(const Event &) = delete;
    Event &operator=(const Event &) = delete;

    void init(EventHandler h, void *data, ngx_log_t *log,
              bool cancelable = true) noexcept;
    // Fires in `ms`, replacing any earlier setting.
    void arm(ngx_msec_t ms) noexcept;
    // Fires at `when` (an ngx_current_msec value) or before: a setting
    // that fires sooner is kept (its handler finds nothing due and arms
    // again).
    void arm_by(ngx_msec_t when) noexcept;
    void disarm() noexcept;
    bool armed() const noexcept { return ev_.timer_set; }
    // Runs the handler once the handlers of this event-loop iteration have
    // run (ngx_posted_events).
    void post() noexcept;
    void unpost() noexcept;
    bool posted() const noexcept { return ev_.posted; }

private:
    static void on_event(ngx_event_t *ev) noexcept;

    ngx_event_t ev_;
    EventHandler handler_ = nullptr;
    void *data_ = nullptr;
};

// ---- Backoff -------------------------------------------------------------
// After a failure: wait 50 ms, doubling up to 5 s while failures go on;
// then the handler runs (it tries again).
class Backoff {
public:
    static constexpr ngx_msec_t kMin = 50;
    static constexpr ngx_msec_t kMax = 5000;

    void init(EventHandler when_over, void *data, ngx_log_t *log) noexcept;
    // Starts waiting; returns the delay.
    ngx_msec_t start() noexcept;
    void cancel() noexcept { timer_.disarm(); }
    // A connection succeeded: the next failure waits kMin again.
    void reset() noexcept { next_ = kMin; }
    bool waiting() const noexcept { return timer_.armed(); }

private:
    Event timer_;
    ngx_msec_t next_ = kMin;
};

// ---- Peer ----------------------------------------------------------------
// Where a client connects, and its log lines.

struct PeerAddress {
    ngx_sockaddr_t sockaddr;               // with the port
    socklen_t socklen;
    char text[NGX_SOCKADDR_STRLEN + 1];    // the address alone, for
                                           // redisAsyncConnect / hostaddr=
};

class Peer {
public:
    using Found = void (*)(void *data, const PeerAddress *a) noexcept;
    enum class Lookup { ready, pending, failed };

    Peer() = default;
    ~Peer();
    Peer(const Peer &) = delete;
    Peer &operator=(const Peer &) = delete;

    // `kind` and `name` begin its log lines ("fly redis regional
    // 127.0.0.1:6379: ...").  `host` is an IPv4 or IPv6 literal (no
    // brackets) or a name, resolved with `resolver`, or without one taken
    // from `addrs` (resolved when the configuration was loaded).  False
    // when out of memory.
    bool init(const char *kind, const char *name, const ngx_str_t &host,
              in_port_t port, ngx_resolver_t *resolver,
              ngx_msec_t resolver_timeout, ngx_addr_t *addrs,
              ngx_uint_t naddrs, ngx_log_t *log) noexcept;

    // An address to connect to.  `ready`: it is in *out (a literal, a load
    // time address or an answer from the resolver's cache).  `pending`:
    // found() is called later, from the event loop, with the address or
    // nullptr (logged).  `failed` (logged): no address now; found() is not
    // called.  A name is looked up again every time (nginx's resolver
    // caches it for the DNS TTL or `valid=`), so a moved host is found
    // after a failure.
    Lookup lookup(PeerAddress *out, Found found, void *data) noexcept;
    void cancel_lookup() noexcept;
    bool looking_up() const noexcept { return ctx_ != nullptr; }
    // The last address failed: the next lookup picks the next one.
    void next_address() noexcept { rr_++; }

    // "fly <kind> <name> <host:port>: <fmt>" (nginx's ngx_sprintf format),
    // each level at most once a second (log_allowed).  error() also marks
    // the peer failed, until clear_failed().
    void error(ngx_err_t err, const char *fmt, ...) noexcept;
    void warn(const char *fmt, ...) noexcept;
    void notice(const char *fmt, ...) noexcept;
    bool failed() const noexcept { return failed_; }
    void clear_failed() noexcept { failed_ = false; }

    ngx_log_t *log() const noexcept { return log_; }
    const char *kind() const noexcept { return kind_; }
    const char *name() const noexcept { return name_; }
    const ngx_str_t &endpoint() const noexcept { return endpoint_; }
    in_port_t port() const noexcept { return port_; }

private:
    static void on_resolved(ngx_resolver_ctx_t *ctx) noexcept;
    void say(ngx_uint_t level, ngx_err_t err, time_t *slot, const char *fmt,
             va_list args) noexcept;
    void set_address(const struct sockaddr *sa, socklen_t len,
                     PeerAddress *out) const noexcept;

    const char *kind_ = "";
    const char *name_ = "";
    ngx_log_t *log_ = nullptr;
    ngx_str_t host_{};                     // NUL-terminated copy
    ngx_str_t endpoint_{};
    char endpoint_buf_[NGX_SOCKADDR_STRLEN + 8] = {};
    in_port_t port_ = 0;
    bool literal_ = false;
    PeerAddress literal_addr_{};
    ngx_resolver_t *resolver_ = nullptr;
    ngx_msec_t resolver_timeout_ = 0;
    ngx_addr_t *addrs_ = nullptr;
    ngx_uint_t naddrs_ = 0;
    ngx_uint_t rr_ = 0;

    ngx_resolver_ctx_t *ctx_ = nullptr;
    Found found_ = nullptr;
    void *found_data_ = nullptr;
    PeerAddress *sync_out_ = nullptr;     // set while inside lookup()
    bool sync_answered_ = false;
    bool sync_ok_ = false;

    bool failed_ = false;
    time_t err_slot_ = 0;
    time_t warn_slot_ = 0;
    time_t notice_slot_ = 0;
};

// ---- Link ----------------------------------------------------------------
// The life of a client's connection to its peer, whatever the library:
//   idle --lookup--> resolving --> connecting (connect_timeout) --> ready
// On any failure: it is logged (rate-limited), the connection dropped,
// the client fails what waits, and after a backoff a new connection is
// made in the background ("probing": until it is ready the client fails
// new commands at once), to the name's next address, looked up again.
// When the worker shuts down: dropped for good.
class Link {
public:
    enum class State : uint8_t {
        idle,        // nothing yet: the first command connects
        resolving,   // waiting for nginx's resolver
        connecting,  // the library connects (and authenticates)
        ready,
        closing,     // being dropped (the client's callbacks may run)
        backoff,     // after a failure, until the backoff is over
        closed,      // the worker is exiting: never again
    };

    // What the client does with its library.
    class Driver {
    public:
        // Starts connecting to `a` (the library's connection, its socket
        // tracked).  False when nothing could be opened (log it with
        // Peer::error()); a later failure calls Link::fail().
        virtual bool link_open(const PeerAddress &a) noexcept = 0;
        // Drops the library's connection (release the socket first).
        // True when it is gone now; false when the library lets it go
        // later, and then calls Link::closed() (maybe from inside this).
        virtual bool link_close() noexcept = 0;
        // The connection is gone, or did not come: fail what waits for it.
        virtual void link_down() noexcept = 0;
        // The connection is ready.
        virtual void link_up() noexcept = 0;

    protected:
        ~Driver() = default;
    };

    void init(Driver *driver, Peer *peer, ngx_msec_t connect_timeout,
              ngx_log_t *log) noexcept;
    ~Link() = default;

    // The first command: connects.  Then: may commands be queued now (held
    // or sent)?  Not while down, nor while probing after a failure.
    bool start() noexcept
    {
        if (state_ == State::idle && !exiting()) {
            connect(false);
        }
        return usable();
    }
    bool usable() const noexcept
    {
        return !probing_
               && (state_ == State::resolving || state_ == State::connecting
                   || state_ == State::ready);
    }
    State state() const noexcept { return state_; }
    // The worker is exiting (gracefully or not).
    bool exiting() const noexcept
    {
        return shutting_down_ || ngx_exiting || ngx_terminate;
    }

    // The library's connection is established (and authenticated).
    void ready() noexcept;
    // Something failed: logs `what`, drops the connection, backs off.
    void fail(ngx_err_t err, const char *what) noexcept;
    // The library let the connection go: after link_close() returned
    // false, or by itself (then `why` is logged).
    void closed(const char *why) noexcept;
    // The worker is shutting down: drops the connection for good.
    void shut_down() noexcept;

private:
    void connect(bool probe) noexcept;
    void open(const PeerAddress &a) noexcept;
    void drop() noexcept;
    void finish() noexcept;
    static void on_found(void *data, const PeerAddress *a) noexcept;
    void on_connect_timeout() noexcept;
    void on_backoff_over() noexcept;

    Driver *driver_ = nullptr;
    Peer *peer_ = nullptr;
    ngx_msec_t connect_timeout_ = 0;
    ngx_log_t *log_ = nullptr;
    State state_ = State::idle;
    bool probing_ = false;
    bool shutting_down_ = false;
    Event connect_timer_;
    Backoff backoff_;
};

// ---- LibSocket -----------------------------------------------------------
// A socket that a library opened and will close, driven by nginx events
// (see the top of this file).
class LibSocket {
public:
    LibSocket() = default;
    ~LibSocket() { release(); }
    LibSocket(const LibSocket &) = delete;
    LibSocket &operator=(const LibSocket &) = delete;

    void init(void *data, EventHandler on_read, EventHandler on_write,
              EventHandler on_close, ngx_log_t *log) noexcept;
    // Drives `fd` (see above).  False, with nothing driven, when no nginx
    // connection is free or the events cannot be added.
    bool track(ngx_socket_t fd) noexcept;
    // Stops driving the socket; the library closes (or has closed) the fd.
    void release() noexcept;

    bool tracking() const noexcept { return c_ != nullptr; }
    ngx_connection_t *connection() const noexcept { return c_; }
    ngx_socket_t fd() const noexcept { return c_ ? c_->fd : NGX_INVALID_FILE; }
    bool edge_triggered() const noexcept { return et_; }
    // Level-triggered: be told, or not, when the socket is writable.
    // Edge-triggered: nothing to do (both events stay registered).
    bool want_write(bool on) noexcept;
    // After a read that got less than it asked for: is the socket known to
    // be empty, so that the next read can wait for the next event?
    bool drained_by_short_read() const noexcept;
    // Is there something to read (bytes, end of stream or an error) now?
    // For a library that reads by itself, less than there may be (libpq's
    // PQconsumeInput() and PQconnectPoll() read once): edge-triggered,
    // it must be called again while this holds, or it waits for an event
    // that does not come.  A peek; never blocks.
    bool has_input() const noexcept;

private:
    static void on_read_event(ngx_event_t *ev) noexcept;
    static void on_write_event(ngx_event_t *ev) noexcept;
    bool same_socket(ngx_socket_t fd) const noexcept;

    ngx_connection_t *c_ = nullptr;
    dev_t dev_ = 0;                        // which socket fd_ is (fstat)
    ino_t ino_ = 0;
    bool et_ = false;
    void *data_ = nullptr;
    EventHandler on_read_ = nullptr;
    EventHandler on_write_ = nullptr;
    EventHandler on_close_ = nullptr;
    ngx_log_t *log_ = nullptr;
};

}  // namespace fly
