// fly-edge nginx shell: a non-blocking PostgreSQL client (libpq) on
// nginx's event loop, for the few small queries of read-your-writes
// (WAL positions): one client per endpoint per worker, each with one
// connection.
//
// libpq connects (PQconnectStartParams / PQconnectPoll) to an address
// that nginx's resolver found (Peer; hostaddr= is set, so libpq never
// calls getaddrinfo()), and its socket is driven by nginx's events
// (LibSocket); the life of the connection (connect timeout, failures,
// backoff, shutdown) is Link's (ngx_fly_event.hpp).  Queries are sent
// one at a time (PQsendQuery, PQflush), their results read with
// PQconsumeInput / PQisBusy / PQgetResult.
//
// Every wait has a timer.  A query must be answered within the timeout
// (fly_postgres_timeout) of being issued; if it is not and it was sent,
// the connection is dropped (libpq 15 cannot cancel without blocking)
// and every query fails; one not sent yet (still connecting) fails
// alone.  While the connection is down or being made again after a
// failure, query() fails at once, so a database that is down adds no
// delay.
#pragma once

#include "ngx_fly.hpp"
#include "ngx_fly_event.hpp"

struct pg_conn;
struct pg_result;

namespace fly {

// The first row of a result, as text (valid during the callback only).
struct PgRow {
    static constexpr int kMaxCols = 8;
    int ncols = 0;
    const char *value[kMaxCols] = {};   // nullptr for SQL NULL
    size_t len[kMaxCols] = {};

    bool null(int i) const { return i >= ncols || value[i] == nullptr; }
    std::string_view col(int i) const
    {
        return null(i) ? std::string_view() : std::string_view(value[i], len[i]);
    }
};

// Called once per query with the first row of its result, or with
// nullptr when it failed (not connected, timed out, connection lost, an
// error or no row: logged, at most once a second).  A callback may issue
// queries; it must not delete the client.
using PgCallback = void (*)(void *data, const PgRow *row) noexcept;

struct PgQuery;

class PgClient final : private Link::Driver {
public:
    static constexpr size_t kMaxQueries = 16;

    // `conf` and the timeouts come from the main conf (they outlive the
    // client); `resolver` is the http-level `resolver` or nullptr.
    PgClient(const PgConf &conf, ngx_msec_t connect_timeout,
             ngx_msec_t timeout, ngx_resolver_t *resolver,
             ngx_msec_t resolver_timeout, ngx_log_t *log) noexcept;
    // Closes the connection; callbacks are NOT called (the worker is
    // exiting): from exit_process only.
    ~PgClient();
    PgClient(const PgClient &) = delete;
    PgClient &operator=(const PgClient &) = delete;

    // False when out of memory (the client is then not used).
    bool init() noexcept;
    // Connects now, if not yet (worker start): the first query need not
    // wait for it.
    void connect() noexcept { (void) link_.start(); }

    // Queues `sql` (a static string).  nullptr, without calling `cb`, when
    // it cannot be sent now (down, reconnecting after a failure, worker
    // exiting, too many queued); otherwise `cb` is called exactly once,
    // later (never from inside query()), unless cancel() comes first.
    PgQuery *query(const char *sql, PgCallback cb, void *data) noexcept;
    // The caller is gone: its callback will not be called (only before it
    // was; clear your copy of the pointer in the callback).
    static void cancel(PgQuery *q) noexcept;

    bool ready() const noexcept { return link_.state() == Link::State::ready; }
    // Would a query be taken now (connected, connecting, or not yet)?
    bool available() const noexcept
    {
        return !link_.exiting()
               && (link_.usable() || link_.state() == Link::State::idle);
    }
    Peer &peer() noexcept { return peer_; }

private:
    // Link::Driver
    bool link_open(const PeerAddress &a) noexcept override;
    bool link_close() noexcept override;
    void link_down() noexcept override;
    void link_up() noexcept override { send_.post(); }

    void on_readable() noexcept;
    void on_writable() noexcept;
    void on_close() noexcept { link_.shut_down(); }
    void connect_poll() noexcept;
    void send_next() noexcept;
    void flush_output() noexcept;
    void read_input() noexcept;
    void complete() noexcept;
    void fail_libpq(const char *what) noexcept;
    void arm_deadline() noexcept;
    void on_deadline() noexcept;
    PgQuery *pop() noexcept;
    void free_query(PgQuery *q) noexcept;
    void invoke(PgQuery *q, const PgRow *row) noexcept;
    static void on_notice(void *arg, const char *message) noexcept;

    const PgConf &conf_;
    ngx_log_t *log_;
    ngx_msec_t timeout_;
    ngx_resolver_t *resolver_;
    ngx_msec_t resolver_timeout_;
    Peer peer_;
    Link link_;
    LibSocket sock_;
    pg_conn *conn_ = nullptr;
    bool poll_reading_ = false;      // connecting: libpq waits to read
    const char **values_ = nullptr;  // conf_.values with this hostaddr
    char hostaddr_[NGX_SOCKADDR_STRLEN + 1] = {};

    PgQuery *head_ = nullptr;        // queued, oldest first
    PgQuery *tail_ = nullptr;
    size_t queued_ = 0;
    PgQuery *inflight_ = nullptr;    // == head_ once sent
    pg_result *result_ = nullptr;    // its first result
    PgQuery *free_ = nullptr;
    uint64_t gen_ = 0;               // bumped when a connection goes
    time_t notice_slot_ = 0;         // rate limit of the server's notices
    Event deadline_;                 // the oldest query's (not cancelable)
    Event send_;                     // posted: send the next query
};

}  // namespace fly
