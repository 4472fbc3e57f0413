// fly-edge nginx shell: read your writes, the replica regions' side (see
// ngx_fly_consistency.hpp): the worker's PostgreSQL clients, the sampled
// position and lag of the region's replica, the decision on a request
// (from the replay phase handler, before the cache's lookup), requests
// parked until the replica replays their fence, the filter that clears
// the fly-lsn cookie, and what the $fly_replica_* variables read.
#include "ngx_fly_consistency.hpp"
#include "ngx_fly_metrics.hpp"
#include "ngx_fly_pg.hpp"

#include <exception>
#include <new>

namespace fly {

namespace {

ngx_http_output_header_filter_pt next_clear_filter;

time_t log_slot_cookie;          // rate limits for log lines
time_t log_slot_unreachable;

// The region's database: its replayed position when it is a replica,
// else (the primary region's, or a promoted one) the record end of the
// insert position (lsn.hpp), with the page and segment sizes for that.
constexpr const char *kReplicaSql =
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
    "CASE WHEN pg_is_in_recovery() THEN NULL "
    "ELSE pg_current_wal_insert_lsn() END, "
    "current_setting('wal_block_size'), "
    "pg_size_bytes(current_setting('wal_segment_size'))";

// The primary's written position, for the lag of a replica region.
constexpr const char *kPrimarySql = "SELECT pg_current_wal_lsn()";

int64_t now_ms()
{
    return static_cast<int64_t>(ngx_current_msec);
}

ConsistencyWorker *worker_of(ngx_http_request_t *r)
{
    return main_conf(r)->consistency;
}

// The first fly-lsn cookie of the request, when well-formed.
bool request_fence(ngx_http_request_t *r, uint64_t *lsn)
{
    std::string_view v;
    if (!request_cookie(r, core::kLsnCookie, v)) {
        return false;
    }
    if (core::parse_lsn(v, *lsn)) {
        return true;
    }
    if (log_allowed(&log_slot_cookie)) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fly_consistency: ignoring malformed %s cookie",
                      core::kLsnCookie.data());
    }
    return false;
}

// The decision is in the request's context: the phase handler acts on it.
void apply(ngx_http_request_t *r, RequestCtx *ctx,
           const core::ConsistencyDecision &d, const core::ConsistencyInput &in)
{
    switch (d.action) {
    case core::ConsistencyAction::pass:
        ctx->consistency = static_cast<uint8_t>(ConsistencyState::pass);
        ctx->clear_lsn_cookie = d.clear_cookie;
        ctx->lsn_skip_cache = d.skip_cache;
        break;
    case core::ConsistencyAction::replay:
        ctx->consistency = static_cast<uint8_t>(ConsistencyState::replay);
        ctx->consistency_lag = d.state == "lag";
        break;
    case core::ConsistencyAction::wait:
        ctx->consistency = static_cast<uint8_t>(ConsistencyState::waiting);
        break;
    }
    if (d.reason == core::ConsistencyReason::unreachable
        && log_allowed(&log_slot_unreachable))
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "fly_consistency: the region's PostgreSQL cannot be "
                      "asked: %s",
                      d.action == core::ConsistencyAction::replay
                          ? "replaying to the primary region"
                          : "serving the request here");
    }
    if (d.action != core::ConsistencyAction::wait) {
        ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly consistency: %s (%s)%s, fence %s",
                       d.action == core::ConsistencyAction::pass
                           ? "serving here" : d.state == "lag"
                           ? "replaying, state=lag" : "replaying, state=lsn",
                       std::string(core::consistency_reason_name(d.reason)).c_str(),
                       d.replay_refused ? " (already replayed once)" : "",
                       in.has_fence ? core::lsn_text(in.fence).c_str() : "none");
    }
}

}  // namespace

// ---- waiters ----------------------------------------------------------------

// A request parked until its decision (lives in the request's pool).
struct ConsistencyWaiter {
    ngx_queue_t link;
    ngx_http_request_t *r;
    WalSampler *sampler;
    core::ConsistencyInput in;      // the request's part of the decision
    bool waited_out = false;
    bool queued = false;
    bool decided = false;
    ngx_msec_t since = ngx_current_msec;   // parked (for the metrics)
    Event deadline;                 // fly_consistency_wait (not cancelable)

    ~ConsistencyWaiter()
    {
        if (!decided) {
            metrics::lsn_wait(metrics::LsnWait::read_abandoned, since);
        }
        unlink();
    }
    void unlink()
    {
        if (queued) {
            ngx_queue_remove(&link);
            queued = false;
        }
    }
    core::ConsistencyDecision decide() const
    {
        core::ConsistencyInput i = in;
        i.waited_out = waited_out;
        i.replica = sampler->view();
        return core::decide_consistency(i);
    }
    void on_deadline() noexcept;
    // Decided: the phases run again, and the phase handler acts.
    void resume() noexcept
    {
        unlink();
        deadline.disarm();
        ngx_http_request_t *req = r;
        ngx_connection_t *c = req->connection;
        req->main->count--;
        req->write_event_handler = ngx_http_core_run_phases;
        ngx_http_core_run_phases(req);
        ngx_http_run_posted_requests(c);
    }
};

namespace {

void waiter_cleanup(void *data) noexcept
{
    static_cast<ConsistencyWaiter *>(data)->~ConsistencyWaiter();
}

// Decides again; true when decided (the context has it).
bool redecide(ConsistencyWaiter *w)
{
    core::ConsistencyDecision d = w->decide();
    if (d.action == core::ConsistencyAction::wait) {
        return false;
    }
    RequestCtx *ctx = get_ctx(w->r);
    if (ctx == nullptr) {
        return false;            // cannot be: it was made when parking
    }
    apply(w->r, ctx, d, w->in);
    w->decided = true;
    metrics::lsn_wait(metrics::read_wait(d.reason), w->since);
    return true;
}

}  // namespace

void ConsistencyWaiter::on_deadline() noexcept
{
    waited_out = true;
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly consistency: fly_consistency_wait is over");
    if (redecide(this)) {
        resume();
    }
}

// ---- WalSampler -------------------------------------------------------------

WalSampler::WalSampler(PgClient *regional, PgClient *primary,
                       ngx_log_t *log) noexcept
    : regional_(regional), primary_(primary), log_(log)
{
    ngx_queue_init(&waiters_);
    tick_.init(call<&WalSampler::on_tick>, this, log);
    poll_.init(call<&WalSampler::on_poll>, this, log);
}

WalSampler::~WalSampler()
{
    PgClient::cancel(replica_q_);
    PgClient::cancel(primary_q_);
    while (!ngx_queue_empty(&waiters_)) {
        auto *w = ngx_queue_data(ngx_queue_head(&waiters_), ConsistencyWaiter,
                                 link);
        w->unlink();
    }
}

void WalSampler::start() noexcept
{
    regional_->connect();
    if (primary_ != nullptr) {
        primary_->connect();
    }
    tick_.arm(0);
}

core::ReplicaView WalSampler::view() const noexcept
{
    core::ReplicaView v;
    v.pending = !known_ && !failed_;
    v.reachable = reachable_;
    v.known = known_;
    v.lsn = lsn_;
    v.lag_ms = primary_ != nullptr ? lag_.lag_ms(now_ms()) : 0;
    return v;
}

// Every kSampleMs: the primary's position (a replica region), then the
// replica's, so that the replica's is never the older of the two.
void WalSampler::on_tick() noexcept
{
    tick_.arm(kSampleMs);
    if (primary_ != nullptr && primary_q_ == nullptr) {
        primary_q_ = primary_->query(kPrimarySql, on_primary, this);
        if (primary_q_ != nullptr) {
            return;
        }
        metrics::pg_poll(1, false, 0);
    }
    ask_replica();
}

void WalSampler::on_primary(void *data, const PgRow *row) noexcept
{
    auto *s = static_cast<WalSampler *>(data);
    s->primary_q_ = nullptr;
    uint64_t lsn = 0;
    bool ok = row != nullptr && core::parse_lsn(row->col(0), lsn);
    metrics::pg_poll(1, ok, lsn);
    if (ok) {
        s->lag_.primary_at(now_ms(), lsn);
    }
    s->ask_replica();
}

void WalSampler::ask_replica() noexcept
{
    if (replica_q_ != nullptr) {
        return;                  // its answer is as new as this one
    }
    replica_q_ = regional_->query(kReplicaSql, on_replica, this);
    if (replica_q_ == nullptr) {
        metrics::pg_poll(0, false, 0);
        reachable_ = false;      // down, or backing off
        failed_ = true;
        wake();
    }
}

void WalSampler::on_replica(void *data, const PgRow *row) noexcept
{
    auto *s = static_cast<WalSampler *>(data);
    s->replica_q_ = nullptr;

    uint64_t lsn = 0;
    bool ok = false;
    if (row != nullptr) {
        if (row->col(0) == "t") {
            ok = core::parse_lsn(row->col(1), lsn);
        } else if (core::parse_lsn(row->col(2), lsn)) {
            uint64_t block = 0, segment = 0;
            core::parse_decimal(row->col(3), block);
            core::parse_decimal(row->col(4), segment);
            lsn = core::record_end_lsn(lsn, block, segment);
            ok = true;
        }
    }
    metrics::pg_poll(0, ok, lsn);
    if (ok) {
        s->known_ = true;
        s->reachable_ = true;
        s->lsn_ = lsn;
        s->lag_.replica_at(lsn);
        if (s->primary_ != nullptr) {
            metrics::pg_replica_lag(s->view().lag_ms, lsn);
        }
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, s->log_, 0,
                       "fly consistency: replica at %s, lag %L ms",
                       core::lsn_text(lsn).c_str(), s->view().lag_ms);
    } else {
        s->reachable_ = false;
        s->failed_ = true;
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, s->log_, 0,
                       "fly consistency: replica position unknown");
    }
    s->wake();
    if (!ngx_queue_empty(&s->waiters_)) {
        s->poll_.arm(kPollMs);
    }
}

void WalSampler::on_poll() noexcept
{
    if (!ngx_queue_empty(&waiters_)) {
        ask_replica();
    }
}

void WalSampler::park(ConsistencyWaiter *w) noexcept
{
    ngx_queue_insert_tail(&waiters_, &w->link);
    w->queued = true;
    // A fresh position at once (after this handler: a failure to ask
    // resumes the waiters).
    if (replica_q_ == nullptr) {
        poll_.post();
    }
}

// Requests whose decision the new sample (or its failure) makes are resumed.
void WalSampler::wake() noexcept
{
    ngx_queue_t ready;
    ngx_queue_init(&ready);
    ngx_queue_t *q = ngx_queue_head(&waiters_);
    while (q != ngx_queue_sentinel(&waiters_)) {
        ngx_queue_t *next = ngx_queue_next(q);
        auto *w = ngx_queue_data(q, ConsistencyWaiter, link);
        if (redecide(w)) {
            ngx_queue_remove(q);
            ngx_queue_insert_tail(&ready, q);
        }
        q = next;
    }
    // One at a time: a request resumed may end (its waiter leaves this
    // list in its pool's cleanup), never another's.
    while (!ngx_queue_empty(&ready)) {
        auto *w = ngx_queue_data(ngx_queue_head(&ready), ConsistencyWaiter,
                                 link);
        w->resume();
    }
}

// ---- the decision -----------------------------------------------------------

namespace {

// The primary region serves everything, but a read whose fly-lsn the
// worker's last sample has not reached (a write of the last second) is
// not answered from the cache: the write's tombstone may still be on its
// way to Redis.
void primary_fence(ngx_http_request_t *r, ConsistencyWorker *cw)
{
    LocConf *lcf = loc_conf(r);
    core::ConsistencyInput in;
    in.is_primary = true;
    in.mode = static_cast<core::ConsistencyMode>(lcf->consistency);
    if (in.mode != core::ConsistencyMode::lsn || !lcf->cache
        || !request_fence(r, &in.fence))
    {
        return;
    }
    in.has_fence = true;
    in.replica = cw->sampler->view();
    if (!core::decide_consistency(in).skip_cache) {
        return;
    }
    RequestCtx *ctx = create_ctx(r);
    if (ctx != nullptr) {
        ctx->consistency = static_cast<uint8_t>(ConsistencyState::pass);
        ctx->lsn_skip_cache = true;
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly consistency: fence %s not sampled yet: not "
                       "from the cache", core::lsn_text(in.fence).c_str());
    }
}

}  // namespace

void consistency_primary_phase(ngx_http_request_t *r) noexcept
{
    try {
        ConsistencyWorker *cw = worker_of(r);
        RequestCtx *ctx = get_ctx(r);
        if (r == r->main && cw != nullptr && cw->sampler != nullptr
            && (ctx == nullptr || ctx->consistency == 0))
        {
            primary_fence(r, cw);
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_consistency: %s", e.what());
    }
}

ngx_int_t consistency_phase(ngx_http_request_t *r, bool can_replay,
                            std::string_view *state) noexcept
{
    try {
        RequestCtx *ctx = get_ctx(r);
        if (ctx != nullptr) {
            switch (static_cast<ConsistencyState>(ctx->consistency)) {
            case ConsistencyState::none:
                break;
            case ConsistencyState::waiting:
                return NGX_DONE;
            case ConsistencyState::pass:
                return NGX_DECLINED;
            case ConsistencyState::replay:
                *state = ctx->consistency_lag ? "lag" : "lsn";
                return NGX_OK;
            }
        }

        LocConf *lcf = loc_conf(r);
        ConsistencyWorker *cw = worker_of(r);
        if (r != r->main || cw == nullptr || cw->sampler == nullptr) {
            return NGX_DECLINED;
        }
        if (main_conf(r)->is_primary == 1) {
            return NGX_DECLINED;     // consistency_primary_phase()
        }
        core::ConsistencyInput in;
        in.mode = static_cast<core::ConsistencyMode>(lcf->consistency);
        in.max_lag_ms = lcf->replica_max_lag >= 0 ? lcf->replica_max_lag
                                                  : core::kMaxLagOff;
        if (in.mode == core::ConsistencyMode::off
            && in.max_lag_ms == core::kMaxLagOff)
        {
            return NGX_DECLINED;
        }
        if (in.mode == core::ConsistencyMode::lsn) {
            in.has_fence = request_fence(r, &in.fence);
        }
        if (!in.has_fence && in.max_lag_ms == core::kMaxLagOff) {
            return NGX_DECLINED;           // no cookie: costs nothing more
        }
        in.waited_out = lcf->consistency_wait == 0;
        in.can_replay = can_replay;

        if (ctx == nullptr) {
            ctx = create_ctx(r);
            if (ctx == nullptr) {
                return NGX_DECLINED;
            }
        }
        if (in.has_fence) {
            ctx->has_write_lsn = true;
            ctx->write_lsn = in.fence;
        }

        core::ConsistencyInput now = in;
        now.replica = cw->sampler->view();
        core::ConsistencyDecision d = core::decide_consistency(now);
        apply(r, ctx, d, in);
        if (d.action == core::ConsistencyAction::pass) {
            return NGX_DECLINED;
        }
        if (d.action == core::ConsistencyAction::replay) {
            *state = d.state;
            return NGX_OK;
        }

        // Park it: the sampler or the deadline resumes it.
        ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(
            r->pool, sizeof(ConsistencyWaiter));
        if (cln == nullptr) {
            ctx->consistency = static_cast<uint8_t>(ConsistencyState::pass);
            return NGX_DECLINED;
        }
        auto *w = new (cln->data) ConsistencyWaiter();
        cln->handler = waiter_cleanup;
        w->r = r;
        w->sampler = cw->sampler;
        w->in = in;
        w->deadline.init(call<&ConsistencyWaiter::on_deadline>, w,
                         r->connection->log, false);
        w->deadline.arm(lcf->consistency_wait);
        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly consistency: waiting up to %M ms for the replica "
                       "to replay %s (%s)", lcf->consistency_wait,
                       in.has_fence ? core::lsn_text(in.fence).c_str() : "-",
                       std::string(core::consistency_reason_name(d.reason)).c_str());
        r->main->count++;
        // Wake-ups of the client connection must not re-enter the phases.
        r->write_event_handler = ngx_http_request_empty_handler;
        cw->sampler->park(w);
        return NGX_DONE;
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_consistency: %s; serving the request here", e.what());
    }
    return NGX_DECLINED;
}

// ---- what the worker knows --------------------------------------------------

bool replica_lsn(ngx_http_request_t *r, uint64_t *lsn) noexcept
{
    ConsistencyWorker *cw = worker_of(r);
    if (cw == nullptr || cw->sampler == nullptr || !cw->sampler->known()) {
        return false;
    }
    *lsn = cw->sampler->lsn();
    return true;
}

bool replica_lag(ngx_http_request_t *r, int64_t *ms) noexcept
{
    ConsistencyWorker *cw = worker_of(r);
    if (cw == nullptr || cw->sampler == nullptr) {
        return false;
    }
    core::ReplicaView v = cw->sampler->view();
    if (!v.reachable) {
        return false;
    }
    *ms = v.lag_ms;
    return true;
}

// ---- clearing the cookie ----------------------------------------------------

namespace {

// Once the replica has passed the request's fence, its answer clears the
// cookie (CLARIFICATIONS 9), on a MISS as on a HIT.  Below the cache's
// fill filter, which would not store a response with Set-Cookie.
ngx_int_t clear_filter(ngx_http_request_t *r) noexcept
{
    if (r == r->main) {
        RequestCtx *ctx = get_ctx(r);
        if (ctx != nullptr && ctx->clear_lsn_cookie) {
            ctx->clear_lsn_cookie = false;
            if (!ctx->replay_captured
                && push_header(r, "Set-Cookie", core::kLsnCookieClear) == nullptr)
            {
                return NGX_ERROR;
            }
        }
    }
    return next_clear_filter(r);
}

}  // namespace

ngx_int_t consistency_clear_init(ngx_conf_t *)
{
    next_clear_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = clear_filter;
    return NGX_OK;
}

// ---- worker start and stop --------------------------------------------------

namespace {

bool same_endpoint(const PgConf &a, const PgConf &b)
{
    return view(a.settings) == view(b.settings);
}

PgClient *make_client(const PgConf &conf, MainConf *mcf, ngx_log_t *log)
{
    auto *c = new (std::nothrow)
        PgClient(conf, mcf->pg_connect_timeout, mcf->pg_timeout,
                 mcf->resolver, mcf->resolver_timeout, log);
    if (c != nullptr && !c->init()) {
        delete c;
        c = nullptr;
    }
    return c;
}

}  // namespace

ngx_int_t consistency_init_process(ngx_cycle_t *cycle, MainConf *mcf) noexcept
{
    if (mcf->pg.host.len == 0) {
        return NGX_OK;
    }
    auto *cw = new (std::nothrow) ConsistencyWorker();
    if (cw == nullptr) {
        return NGX_ERROR;
    }
    mcf->consistency = cw;
    cw->regional = make_client(mcf->pg, mcf, cycle->log);
    cw->primary = same_endpoint(mcf->pg, mcf->pg_primary)
                      ? cw->regional
                      : make_client(mcf->pg_primary, mcf, cycle->log);
    if (cw->regional == nullptr || cw->primary == nullptr) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "fly_edge: out of memory, PostgreSQL not used");
        consistency_exit_process(mcf);
        return NGX_OK;
    }
    bool primary_region = mcf->is_primary == 1;
    cw->sampler = new (std::nothrow) WalSampler(
        cw->regional, primary_region ? nullptr : cw->primary, cycle->log);
    if (primary_region) {
        cw->writes = new (std::nothrow) WriteBatch(cw->primary, cycle->log);
    }
    if (cw->sampler == nullptr || (primary_region && cw->writes == nullptr)) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "fly_edge: out of memory, PostgreSQL not used");
        consistency_exit_process(mcf);
        return NGX_OK;
    }
    cw->sampler->start();
    return NGX_OK;
}

void consistency_exit_process(MainConf *mcf) noexcept
{
    ConsistencyWorker *cw = mcf->consistency;
    if (cw == nullptr) {
        return;
    }
    mcf->consistency = nullptr;
    delete cw->writes;
    delete cw->sampler;
    if (cw->primary != cw->regional) {
        delete cw->primary;
    }
    delete cw->regional;
    delete cw;
}

}  // namespace fly
