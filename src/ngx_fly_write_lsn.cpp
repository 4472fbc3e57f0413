// fly-edge nginx shell: read your writes, the primary region's side (see
// ngx_fly_consistency.hpp).  A write that passes and succeeds gets the
// fly-lsn cookie with the primary's WAL position taken after the app
// answered, so that it covers the write's commit; a write that
// invalidates the cache (fly_cache) is held for that position too, which
// its tombstone carries (the fill fence of the regions), cookie or not.
//
// A header filter cannot wait, so the response is held (ngx_fly_hold.hpp)
// until the position comes (one query for every write queued during that
// event-loop iteration, WriteBatch); then the next header filter runs with
// the cookie added, and the body goes on.  When the primary's
// PostgreSQL cannot be asked, or does not answer within
// fly_postgres_timeout, the response goes at once without the position.
#include "ngx_fly_consistency.hpp"
#include "ngx_fly_hold.hpp"
#include "ngx_fly_metrics.hpp"
#include "ngx_fly_pg.hpp"

#include <exception>
#include <new>
#include <string>

namespace fly {

namespace {

ngx_http_output_header_filter_pt next_header_filter;
ngx_http_output_body_filter_pt next_body_filter;

time_t log_slot_no_lsn;

constexpr const char *kWriteSql =
    "SELECT pg_current_wal_insert_lsn(), "
    "current_setting('wal_block_size'), "
    "pg_size_bytes(current_setting('wal_segment_size'))";

void log_no_lsn(ngx_log_t *log, const char *why)
{
    if (log_allowed(&log_slot_no_lsn)) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "fly_consistency: %s: the answer of a write goes "
                      "without its WAL position (no %s cookie, none in its "
                      "invalidation)", why, core::kLsnCookie.data());
    }
}

}  // namespace

struct ConsistencyHold {
    ngx_queue_t link;
    bool queued = false;
    bool released = false;
    bool cookie = false;             // fly_consistency lsn: set fly-lsn
    ngx_http_request_t *r = nullptr;
    ResponseHold out;                // the answer, until the position
    ngx_msec_t since = ngx_current_msec;   // held (for the metrics)

    ~ConsistencyHold()
    {
        if (!released) {
            metrics::lsn_wait(metrics::LsnWait::write_abandoned, since);
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
    void release(bool has_lsn, uint64_t lsn) noexcept;
};

namespace {

void hold_cleanup(void *data) noexcept
{
    static_cast<ConsistencyHold *>(data)->~ConsistencyHold();
}

}  // namespace

// The header with the cookie, then what the body filter kept.
void ConsistencyHold::release(bool has_lsn, uint64_t lsn) noexcept
{
    unlink();
    if (released) {
        return;
    }
    released = true;
    metrics::lsn_wait(has_lsn ? metrics::LsnWait::write_positioned
                              : metrics::LsnWait::write_no_position, since);
    ngx_http_request_t *req = r;
    ngx_connection_t *c = req->connection;

    ngx_int_t rc = NGX_OK;
    try {
        RequestCtx *ctx = get_ctx(req);
        if (has_lsn && ctx != nullptr) {
            ctx->has_write_lsn = true;
            ctx->write_lsn = lsn;
            if (cookie) {
                std::string v = core::lsn_cookie(lsn);
                u_char *p = pool_dup(req->pool, v);
                if (p == nullptr
                    || push_header(req, "Set-Cookie",
                                   {reinterpret_cast<char *>(p), v.size()})
                           == nullptr)
                {
                    rc = NGX_ERROR;
                }
            }
        }
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "fly consistency: releasing the answer of a write, "
                       "LSN %s", has_lsn ? core::lsn_text(lsn).c_str() : "none");
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0, "fly_consistency: %s", e.what());
    }

    out.release(rc);
}

bool write_position(ngx_http_request_t *r, uint64_t *lsn) noexcept
{
    RequestCtx *ctx = r == r->main ? get_ctx(r) : nullptr;
    if (ctx == nullptr || ctx->hold == nullptr || !ctx->hold->released
        || !ctx->has_write_lsn)
    {
        return false;
    }
    *lsn = ctx->write_lsn;
    return true;
}

// ---- WriteBatch -------------------------------------------------------------

WriteBatch::WriteBatch(PgClient *primary, ngx_log_t *log) noexcept
    : primary_(primary), log_(log)
{
    ngx_queue_init(&pending_);
    ngx_queue_init(&covered_);
    send_.init(call<&WriteBatch::send>, this, log);
}

WriteBatch::~WriteBatch()
{
    PgClient::cancel(q_);
    for (ngx_queue_t *list : {&pending_, &covered_}) {
        while (!ngx_queue_empty(list)) {
            (ngx_queue_data(ngx_queue_head(list), ConsistencyHold, link))->unlink();
        }
    }
}

bool WriteBatch::add(ConsistencyHold *h) noexcept
{
    if (!primary_->available()) {
        return false;
    }
    ngx_queue_insert_tail(&pending_, &h->link);
    h->queued = true;
    if (q_ == nullptr) {
        send_.post();            // once this iteration's writes are in
    }
    return true;
}

// One query covers every write queued before it was sent.
void WriteBatch::send() noexcept
{
    if (q_ != nullptr || ngx_queue_empty(&pending_)) {
        return;
    }
    ngx_queue_add(&covered_, &pending_);
    ngx_queue_init(&pending_);
    q_ = primary_->query(kWriteSql, on_answer, this);
    if (q_ == nullptr) {
        log_no_lsn(log_, "the primary's PostgreSQL cannot be asked");
        on_answer(this, nullptr);
    }
}

void WriteBatch::on_answer(void *data, const PgRow *row) noexcept
{
    auto *b = static_cast<WriteBatch *>(data);
    b->q_ = nullptr;
    uint64_t lsn = 0;
    bool ok = row != nullptr && core::parse_lsn(row->col(0), lsn);
    if (ok) {
        uint64_t block = 0, segment = 0;
        core::parse_decimal(row->col(1), block);
        core::parse_decimal(row->col(2), segment);
        lsn = core::record_end_lsn(lsn, block, segment);
    } else if (row != nullptr || b->primary_->available()) {
        log_no_lsn(b->log_, "no WAL position from the primary's PostgreSQL");
    } else {
        log_no_lsn(b->log_, "the primary's PostgreSQL did not answer");
    }

    ngx_queue_t ready;
    ngx_queue_init(&ready);
    ngx_queue_add(&ready, &b->covered_);
    ngx_queue_init(&b->covered_);
    // A hold leaves the list in release() (or in its pool's cleanup).
    while (!ngx_queue_empty(&ready)) {
        auto *h = ngx_queue_data(ngx_queue_head(&ready), ConsistencyHold, link);
        h->release(ok, lsn);
    }
    if (!ngx_queue_empty(&b->pending_)) {
        b->send_.post();
    }
}

// ---- the filters ------------------------------------------------------------

namespace {

// A write whose invalidation of the cache (a tombstone) should carry its
// position, for the fill fence of the regions: not a safe method, in a
// location with fly_cache (the cache invalidates on the 2xx and 3xx of
// the unsafe ones, a subset of these).
bool fenced_write(ngx_http_request_t *r, const LocConf *lcf)
{
    constexpr ngx_uint_t kSafe = NGX_HTTP_GET | NGX_HTTP_HEAD
                                 | NGX_HTTP_OPTIONS | NGX_HTTP_TRACE;
    return lcf->cache && (r->method & kSafe) == 0;
}

ngx_int_t hold_header_filter(ngx_http_request_t *r) noexcept
{
    ConsistencyWorker *cw = main_conf(r)->consistency;
    if (r != r->main || cw == nullptr || cw->writes == nullptr
        || r->headers_out.status < 200 || r->headers_out.status >= 400)
    {
        return next_header_filter(r);
    }
    LocConf *lcf = loc_conf(r);
    bool cookie = lcf->consistency
                      == static_cast<ngx_uint_t>(core::ConsistencyMode::lsn)
                  && replay_write(r, lcf);
    if (!cookie && !fenced_write(r, lcf)) {
        return next_header_filter(r);
    }
    RequestCtx *ctx = create_ctx(r);
    if (ctx == nullptr || ctx->hold != nullptr) {
        return next_header_filter(r);    // a second header: not held again
    }
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(r->pool,
                                                   sizeof(ConsistencyHold));
    if (cln == nullptr) {
        return NGX_ERROR;
    }
    auto *h = new (cln->data) ConsistencyHold();
    cln->handler = hold_cleanup;
    h->r = r;
    h->cookie = cookie;
    ctx->hold = h;
    if (!cw->writes->add(h)) {
        h->released = true;
        log_no_lsn(r->connection->log, "the primary's PostgreSQL cannot be asked");
        return next_header_filter(r);
    }
    h->out.start(r, ctx, next_header_filter, next_body_filter);
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly consistency: holding the answer of a write for the "
                   "primary's WAL position");
    return NGX_OK;
}

// While held: the links are kept (the buffers stay busy), nothing passes.
ngx_int_t hold_body_filter(ngx_http_request_t *r, ngx_chain_t *in) noexcept
{
    RequestCtx *ctx = r == r->main ? get_ctx(r) : nullptr;
    ConsistencyHold *h = ctx ? ctx->hold : nullptr;
    if (h == nullptr || !h->out.holding()) {
        return next_body_filter(r, in);
    }
    return h->out.keep(in);
}

}  // namespace

ngx_int_t consistency_hold_init(ngx_conf_t *)
{
    next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = hold_header_filter;
    next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = hold_body_filter;
    return NGX_OK;
}

}  // namespace fly
