// fly-edge nginx shell: the PostgreSQL client (see ngx_fly_pg.hpp).
#include "ngx_fly_pg.hpp"

#include <libpq-fe.h>

#include <cstdlib>
#include <cstring>

namespace fly {

struct PgQuery {
    PgQuery *next;
    const char *sql;
    PgCallback cb;
    void *data;
    ngx_msec_t deadline;
};

namespace {

// libpq's messages end with a newline and may span lines ("...failed:
// Connection refused\n\tIs the server running..."): one line for the log.
void one_line(const char *in, char *out, size_t size)
{
    size_t n = 0;
    bool space = false;
    for (const char *p = in ? in : ""; *p && n + 1 < size; p++) {
        if (*p == '\n' || *p == '\r' || *p == '\t' || *p == ' ') {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < size) {
            out[n++] = ' ';
        }
        space = false;
        out[n++] = *p;
    }
    out[n] = '\0';
}

}  // namespace

PgClient::PgClient(const PgConf &conf, ngx_msec_t connect_timeout,
                   ngx_msec_t timeout, ngx_resolver_t *resolver,
                   ngx_msec_t resolver_timeout, ngx_log_t *log) noexcept
    : conf_(conf), log_(log), timeout_(timeout), resolver_(resolver),
      resolver_timeout_(resolver_timeout)
{
    link_.init(this, &peer_, connect_timeout, log);
    sock_.init(this, call<&PgClient::on_readable>,
               call<&PgClient::on_writable>, call<&PgClient::on_close>, log);
    // Requests wait for the answers: a worker shutting down waits too.
    deadline_.init(call<&PgClient::on_deadline>, this, log, false);
    send_.init(call<&PgClient::send_next>, this, log);
}

bool PgClient::init() noexcept
{
    if (!peer_.init("postgres", conf_.name, conf_.host, conf_.port, resolver_,
                    resolver_timeout_, conf_.addrs, conf_.naddrs, log_))
    {
        return false;
    }
    size_t n = 0;
    while (conf_.keywords[n] != nullptr) {
        n++;
    }
    values_ = static_cast<const char **>(std::calloc(n + 1, sizeof(char *)));
    if (values_ == nullptr) {
        return false;
    }
    std::memcpy(values_, conf_.values, n * sizeof(char *));
    values_[conf_.hostaddr_at] = hostaddr_;
    return true;
}

PgClient::~PgClient()
{
    // The worker is exiting: no callbacks.
    sock_.release();
    if (conn_ != nullptr) {
        PQfinish(conn_);
    }
    if (result_ != nullptr) {
        PQclear(result_);
    }
    while (PgQuery *q = pop()) {
        std::free(q);
    }
    while (free_ != nullptr) {
        PgQuery *q = free_;
        free_ = q->next;
        std::free(q);
    }
    std::free(values_);
}

// ---- connecting -----------------------------------------------------------

bool PgClient::link_open(const PeerAddress &a) noexcept
{
    ngx_cpystrn(reinterpret_cast<u_char *>(hostaddr_),
                reinterpret_cast<u_char *>(const_cast<char *>(a.text)),
                sizeof(hostaddr_));
    PGconn *conn = PQconnectStartParams(conf_.keywords, values_, 0);
    if (conn == nullptr) {
        peer_.error(0, "out of memory");
        return false;
    }
    if (PQstatus(conn) == CONNECTION_BAD) {
        char msg[512];
        one_line(PQerrorMessage(conn), msg, sizeof(msg));
        peer_.error(0, "%s", msg);
        PQfinish(conn);
        return false;
    }
    PQsetNoticeProcessor(conn, on_notice, this);
    if (PQsetnonblocking(conn, 1) != 0 || !sock_.track(PQsocket(conn))) {
        peer_.error(0, "cannot add the socket to the event loop");
        PQfinish(conn);
        return false;
    }
    conn_ = conn;
    poll_reading_ = false;      // libpq waits for the connect to complete
    if (!sock_.want_write(true)) {
        link_.fail(0, "cannot add the write event");
    }
    return true;
}

// Drives PQconnectPoll() as libpq asks (reading or writing).
void PgClient::connect_poll() noexcept
{
    for (int round = 0; round < 64; round++) {
        PostgresPollingStatusType st = PQconnectPoll(conn_);
        if (st != PGRES_POLLING_FAILED && !sock_.track(PQsocket(conn_))) {
            link_.fail(0, "cannot add the socket to the event loop");
            return;
        }
        switch (st) {
        case PGRES_POLLING_FAILED:
            fail_libpq("connection failed");
            return;
        case PGRES_POLLING_OK:
            poll_reading_ = true;
            sock_.want_write(false);
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0,
                           "fly postgres %s: connected", conf_.name);
            link_.ready();
            return;
        case PGRES_POLLING_WRITING:
            poll_reading_ = false;
            // After the connect completes libpq asks once more whether
            // it may write, which it may: an edge-triggered event would
            // not tell it again.
            if (PQstatus(conn_) == CONNECTION_MADE) {
                continue;
            }
            if (!sock_.want_write(true)) {
                link_.fail(0, "cannot add the write event");
            }
            return;
        default:      // PGRES_POLLING_READING
            poll_reading_ = true;
            sock_.want_write(false);
            if (sock_.edge_triggered() && sock_.has_input()) {
                continue;       // libpq read once; more is there
            }
            return;
        }
    }
    // libpq keeps asking at once: let the event loop run.
    send_.post();
}

void PgClient::on_writable() noexcept
{
    if (conn_ == nullptr) {
        return;
    }
    if (link_.state() == Link::State::connecting) {
        if (!poll_reading_) {
            connect_poll();
        }
        return;
    }
    if (link_.state() == Link::State::ready) {
        flush_output();
    }
}

void PgClient::on_readable() noexcept
{
    if (conn_ == nullptr) {
        return;
    }
    if (link_.state() == Link::State::connecting) {
        if (poll_reading_) {
            connect_poll();
        }
        return;
    }
    if (link_.state() == Link::State::ready) {
        read_input();
    }
}

bool PgClient::link_close() noexcept
{
    sock_.release();
    if (conn_ != nullptr) {
        PQfinish(conn_);          // closes the socket
        conn_ = nullptr;
    }
    if (result_ != nullptr) {
        PQclear(result_);
        result_ = nullptr;
    }
    inflight_ = nullptr;
    send_.unpost();
    gen_++;
    return true;
}

// Every query fails (sent or not).
void PgClient::link_down() noexcept
{
    deadline_.disarm();
    inflight_ = nullptr;
    while (PgQuery *q = pop()) {
        invoke(q, nullptr);
        free_query(q);
    }
}

void PgClient::fail_libpq(const char *what) noexcept
{
    char msg[512];
    one_line(conn_ ? PQerrorMessage(conn_) : nullptr, msg, sizeof(msg));
    link_.fail(0, *msg ? msg : what);
}

// Notices, and an error the server sends while no query runs ("FATAL:
// terminating connection due to administrator command"), at info: the
// failure that follows is logged as an error.  A rate limit of its own,
// so that the "connected" notice after it is not lost.
void PgClient::on_notice(void *arg, const char *message) noexcept
{
    auto *self = static_cast<PgClient *>(arg);
    if (self->log_->log_level < NGX_LOG_INFO
        || !log_allowed(&self->notice_slot_))
    {
        return;
    }
    char msg[256];
    one_line(message, msg, sizeof(msg));
    ngx_log_error(NGX_LOG_INFO, self->log_, 0, "fly postgres %s %V: server says: %s",
                  self->conf_.name, &self->peer_.endpoint(), msg);
}

// ---- queries --------------------------------------------------------------

PgQuery *PgClient::query(const char *sql, PgCallback cb, void *data) noexcept
{
    if (values_ == nullptr || link_.exiting() || !link_.start()
        || queued_ >= kMaxQueries)
    {
        return nullptr;
    }
    PgQuery *q = free_;
    if (q != nullptr) {
        free_ = q->next;
    } else {
        q = static_cast<PgQuery *>(std::malloc(sizeof(PgQuery)));
        if (q == nullptr) {
            return nullptr;
        }
    }
    q->next = nullptr;
    q->sql = sql;
    q->cb = cb;
    q->data = data;
    q->deadline = ngx_current_msec + timeout_;
    if (tail_ != nullptr) {
        tail_->next = q;
    } else {
        head_ = q;
    }
    tail_ = q;
    queued_++;
    arm_deadline();
    if (ready() && inflight_ == nullptr) {
        send_.post();
    }
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly postgres %s: query \"%s\", %uz queued", conf_.name,
                   sql, queued_);
    return q;
}

void PgClient::cancel(PgQuery *q) noexcept
{
    if (q != nullptr) {
        q->cb = nullptr;
        q->data = nullptr;
    }
}

PgQuery *PgClient::pop() noexcept
{
    PgQuery *q = head_;
    if (q != nullptr) {
        head_ = q->next;
        if (head_ == nullptr) {
            tail_ = nullptr;
        }
        queued_--;
    }
    return q;
}

void PgClient::free_query(PgQuery *q) noexcept
{
    q->cb = nullptr;
    q->data = nullptr;
    q->next = free_;
    free_ = q;
}

void PgClient::invoke(PgQuery *q, const PgRow *row) noexcept
{
    PgCallback cb = q->cb;
    if (cb == nullptr) {
        return;
    }
    q->cb = nullptr;
    try {
        cb(q->data, row);
    } catch (...) {
        ngx_log_error(NGX_LOG_ALERT, log_, 0,
                      "fly postgres: exception in a query callback");
    }
}

void PgClient::send_next() noexcept
{
    if (link_.state() == Link::State::connecting && conn_ != nullptr) {
        connect_poll();           // connect_poll() gave the loop a turn
        return;
    }
    if (!ready() || inflight_ != nullptr) {
        return;
    }
    while (head_ != nullptr && head_->cb == nullptr) {
        free_query(pop());        // canceled before it was sent
    }
    if (head_ == nullptr) {
        deadline_.disarm();
        return;
    }
    if (!PQsendQuery(conn_, head_->sql)) {
        fail_libpq("cannot send the query");
        return;
    }
    inflight_ = head_;
    flush_output();
}

void PgClient::flush_output() noexcept
{
    int rc = PQflush(conn_);
    if (rc < 0) {
        fail_libpq("cannot send the query");
        return;
    }
    // Level-triggered: be told when the rest may be written (edge-
    // triggered, the write event comes once the socket drains).
    if (!sock_.want_write(rc == 1)) {
        link_.fail(0, "cannot add the write event");
    }
}

void PgClient::read_input() noexcept
{
    uint64_t gen = gen_;
    for (int round = 0; round < 64; round++) {
        if (!PQconsumeInput(conn_)) {
            fail_libpq("connection lost");
            return;
        }
        while (PGnotify *n = PQnotifies(conn_)) {
            PQfreemem(n);         // not asked for
        }
        while (inflight_ != nullptr && !PQisBusy(conn_)) {
            PGresult *res = PQgetResult(conn_);
            if (res == nullptr) {
                complete();       // every result of the query is in
                if (gen != gen_) {
                    return;       // a callback failed the connection
                }
                continue;
            }
            if (result_ == nullptr) {
                result_ = res;
            } else {
                PQclear(res);
            }
        }
        if (PQstatus(conn_) == CONNECTION_BAD) {
            fail_libpq("connection lost");
            return;
        }
        if (!sock_.edge_triggered() || !sock_.has_input()) {
            return;
        }
    }
}

// The query in flight is answered: its callback, then the next query.
void PgClient::complete() noexcept
{
    PgQuery *q = pop();
    PGresult *res = result_;
    result_ = nullptr;
    inflight_ = nullptr;

    PgRow row;
    bool ok = false;
    if (res != nullptr && PQresultStatus(res) == PGRES_TUPLES_OK
        && PQntuples(res) > 0)
    {
        row.ncols = PQnfields(res) < PgRow::kMaxCols ? PQnfields(res)
                                                     : PgRow::kMaxCols;
        for (int i = 0; i < row.ncols; i++) {
            if (!PQgetisnull(res, 0, i)) {
                row.value[i] = PQgetvalue(res, 0, i);
                row.len[i] = static_cast<size_t>(PQgetlength(res, 0, i));
            }
        }
        ok = true;
    } else {
        char msg[512];
        one_line(res ? PQresultErrorMessage(res) : "no result", msg,
                 sizeof(msg));
        peer_.warn("query failed: %s", *msg ? msg : "no row");
    }
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly postgres %s: answered%s", conf_.name,
                   ok ? "" : " (failed)");
    invoke(q, ok ? &row : nullptr);
    free_query(q);
    if (res != nullptr) {
        PQclear(res);
    }
    arm_deadline();
    if (head_ != nullptr) {
        send_.post();
    }
}

// ---- timers ---------------------------------------------------------------

void PgClient::arm_deadline() noexcept
{
    if (head_ == nullptr) {
        deadline_.disarm();
        return;
    }
    // Queries are queued in deadline order: the oldest's is the earliest.
    deadline_.arm_by(head_->deadline);
}

void PgClient::on_deadline() noexcept
{
    while (head_ != nullptr
           && static_cast<ngx_msec_int_t>(head_->deadline - ngx_current_msec) <= 0)
    {
        if (head_ == inflight_) {
            // Sent and not answered: libpq cannot take it back, the
            // connection goes (every query fails).
            link_.fail(0, "query timed out (fly_postgres_timeout)");
            return;
        }
        PgQuery *q = pop();
        peer_.warn("query timed out before it could be sent "
                   "(fly_postgres_timeout)");
        invoke(q, nullptr);
        free_query(q);
    }
    if (head_ == nullptr && link_.exiting()
        && link_.state() == Link::State::resolving)
    {
        link_.shut_down();        // nothing waits for the resolver any more
        return;
    }
    arm_deadline();
}

}  // namespace fly
