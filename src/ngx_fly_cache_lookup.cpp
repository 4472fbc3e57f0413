// fly-edge nginx shell: the cache's lookup side.  A pre-content phase
// handler sends, in one round trip, a GET of the key and a GET of the tag
// epoch to the region's Redis and parks the request; from the two replies
// the request gets a HIT sent from the reply's own bytes (send_hit, in
// ngx_fly_cache_send.cpp), or the phases resume and the location's content
// handler answers (MISS, EXPIRED, BYPASS, ERROR).  A Vary marker costs a
// GET of the variant; an entry stored before the last tag purge costs an MGET of its tag records
// (core/cache_tags.hpp).  A tombstone is a MISS whose fill the fence may
// forbid (core/tombstone.hpp).  The same-location purge is dispatched
// from here (ngx_fly_purge.cpp).  The fill side is ngx_fly_cache_fill.cpp.
#include "ngx_fly_cache.hpp"
#include "ngx_fly_consistency.hpp"
#include "ngx_fly_redis.hpp"
#include "core/cache_entry.hpp"
#include "core/cache_tags.hpp"
#include "core/tombstone.hpp"

extern "C" {
#include <hiredis/hiredis.h>
}

#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace fly {

namespace {

time_t log_slot_redis;           // rate limits for log lines
time_t log_slot_entry;
time_t log_slot_epoch;

// What a GET of the key (or the variant) answered.
enum ValueState : uint8_t {
    kPending,
    kFailed,                     // no reply: Redis unavailable or slow
    kRefused,                    // an error reply (NOAUTH, LOADING, ...)
    kNil,
    kString,                     // its bytes are in cc->reply
    kNotString,                  // another type under the key
};

void free_reply(CacheCtx *cc)
{
    if (cc->reply != nullptr) {
        redis_free_str(cc->reply);
        cc->reply = nullptr;
        cc->reply_len = 0;
    }
}

void cache_cleanup(void *data) noexcept
{
    auto *cc = static_cast<CacheCtx *>(data);
    lock_cleanup(cc);
    for (RedisOp **op : {&cc->op, &cc->epoch_op}) {
        if (*op != nullptr) {
            RedisClient::cancel(*op);
            *op = nullptr;
        }
    }
    free_reply(cc);
    cc->~CacheCtx();
}

CacheCtx *create_cache_ctx(ngx_http_request_t *r, RequestCtx *ctx)
{
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(r->pool, sizeof(CacheCtx));
    if (cln == nullptr) {
        return nullptr;
    }
    auto *cc = new (cln->data) CacheCtx();
    cc->r = r;
    cln->handler = cache_cleanup;
    ctx->cache = cc;
    return cc;
}

// ---- lookup -------------------------------------------------------------

void on_base(void *data, redisReply *reply) noexcept;
void on_epoch(void *data, redisReply *reply) noexcept;
void on_variant(void *data, redisReply *reply) noexcept;
void on_tags(void *data, redisReply *reply) noexcept;
bool send_lookup(ngx_http_request_t *r, CacheCtx *cc);

RedisOp *send_get(ngx_http_request_t *r, CacheCtx *cc, std::string_view key,
                  RedisCallback cb)
{
    MainConf *mcf = main_conf(r);
    if (cc->near) {
        // what the zone checks before a reply of this GET may enter it
        (key == core::kEpochKey ? cc->near_epoch_token : cc->near_token) =
            near_token(core::near_hash(key));
    }
    const char *argv[2] = {"GET", key.data()};
    size_t argvlen[2] = {3, key.size()};
    RedisOp *op = mcf->redis_client->command(2, argv, argvlen, cb, cc);
    if (op == nullptr) {
        forget_scripts(mcf->redis_client);
    }
    return op;
}

// Lets the phases run on after a lookup: the content handler answers.
void resume(ngx_http_request_t *r, CacheCtx *cc)
{
    if (!cc->stale_entry) {
        free_reply(cc);
    }
    cc->waiting = false;
    r->main->count--;
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}

// The lookup's outcome when it is not a HIT; `store`: a fill may follow.
void finish(ngx_http_request_t *r, CacheCtx *cc, CacheStatus s, bool store)
{
    get_ctx(r)->cache_status = s;
    if (!store) {
        cc->want_store = false;  // Redis is in trouble, or the fence says no
    }
    resume(r, cc);
}

// A MISS: with fly_cache_lock, one request of the region fills the key
// and the others wait for it (ngx_fly_cache_lock.cpp).
void miss(ngx_http_request_t *r, CacheCtx *cc, bool store)
{
    if (store && loc_conf(r)->cache_lock && !cc->lock_tried
        && lock_try(r, cc))
    {
        return;
    }
    finish(r, cc, CacheStatus::miss, store);
}

// HIT: the body is sent from the reply's bytes, kept until the request ends.
// The entry is valid at the epoch the lookup read (its own, or its tag
// records said so): it may enter the near cache at that epoch.
void hit(ngx_http_request_t *r, CacheCtx *cc, const core::EntryView &e)
{
    get_ctx(r)->cache_tier = CacheTier::redis;
    if (cc->near) {
        const std::string &k = cc->lookup_variant ? cc->variant_key : cc->key;
        near_offer(k, core::near_hash(k), cc->near_token,
                   std::string_view(cc->reply, cc->reply_len),
                   e.meta.stored + e.meta.ttl, false, cc->epoch,
                   cc->near_epoch_token);
    }
    cc->waiting = false;
    cc->want_store = false;
    r->main->count--;
    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: HIT status %ui, %uz body bytes",
                   (ngx_uint_t) e.meta.status, e.body.size());

    ngx_http_finalize_request(r, send_hit(r, get_ctx(r), e));
}

// EXPIRED (or soft-purged): revalidated with a conditional request when
// possible; kept for a 304, a stale answer or a 504 when it may serve.
// Within its stale-while-revalidate (or fly_cache_use_stale updating)
// window, the entry's lock decides: its holder refreshes, the others of
// the region get the entry as UPDATING (ngx_fly_cache_lock.cpp).
void expired(ngx_http_request_t *r, CacheCtx *cc, const core::EntryView &e)
{
    LocConf *lcf = loc_conf(r);
    if (!cc->lock_tried
        && (r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))
        && updating_allowed(lcf, e))
    {
        cc->lock_updating = true;
        if (lock_try(r, cc)) {
            return;              // lookup_updating() follows
        }
    }
    prepare_expired(r, lcf, cc, e);
    finish(r, cc, CacheStatus::expired, true);
}

// Sorts a GET reply out, logging what is worth it; a string's bytes are
// taken into cc->reply.
ValueState classify(ngx_http_request_t *r, CacheCtx *cc, redisReply *reply)
{
    if (reply == nullptr) {
        forget_scripts(main_conf(r)->redis_client);
        return kFailed;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        return kNil;
    }
    if (reply->type == REDIS_REPLY_ERROR
        && std::string_view(reply->str, reply->len).substr(0, 9) != "WRONGTYPE")
    {
        // Redis refuses (NOAUTH, LOADING, OOM, ...): leave it alone.
        if (log_allowed(&log_slot_redis)) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "fly_cache: Redis answered GET with \"%*s\"",
                          (int) reply->len, reply->str);
        }
        return kRefused;
    }
    if (reply->type != REDIS_REPLY_STRING) {
        // Not ours (another type under the key): a MISS whose fill
        // replaces it, as for an unreadable entry.
        if (log_allowed(&log_slot_entry)) {
            bool err = reply->type == REDIS_REPLY_ERROR;
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "fly_cache: ignoring a value that is not a string "
                          "under key \"%*s\" (%*s)", (int) cc->key.size(),
                          cc->key.data(), err ? (int) reply->len : 10,
                          err ? reply->str : "wrong type");
        }
        return kNotString;
    }
    // keep the reply's bytes (a HIT's body); the client frees the rest
    cc->reply = reply->str;
    cc->reply_len = reply->len;
    reply->str = nullptr;
    reply->len = 0;
    return kString;
}

// The epoch read with the lookup; a fill stores it, a HIT compares it.
void record_epoch(ngx_http_request_t *r, CacheCtx *cc, redisReply *reply)
{
    cc->epoch_ok = false;
    if (reply == nullptr) {
        return;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        cc->epoch_ok = true;     // no purge ever: epoch 0
        return;
    }
    if (reply->type == REDIS_REPLY_STRING) {
        cc->epoch_str.assign(reply->str, reply->len);
        cc->epoch_ok = true;
        if (!core::parse_epoch(cc->epoch_str, cc->epoch)
            && log_allowed(&log_slot_epoch))
        {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "fly_cache: the tag epoch \"%*s\" is not a number; "
                          "tag purges fail until it is deleted",
                          (int) reply->len, reply->str);
        }
        return;
    }
    bool refused = reply->type == REDIS_REPLY_ERROR
                   && std::string_view(reply->str, reply->len).substr(0, 9)
                          != "WRONGTYPE";
    if (!refused) {
        // another type under the key: as a garbage value, epoch 0
        cc->epoch_ok = true;
    }
    ngx_uint_t level = refused ? NGX_LOG_ERR : NGX_LOG_WARN;
    if (log_allowed(&log_slot_epoch)) {
        ngx_log_error(level, r->connection->log, 0,
                      "fly_cache: Redis answered GET of the tag epoch with %s",
                      reply->type == REDIS_REPLY_ERROR ? reply->str
                                                       : "another type");
    }
}

// A tombstone under the base key: a MISS; its fill is stored only if the
// fence allows it (the fill script checks again, against the newest).
void on_tombstone(ngx_http_request_t *r, CacheCtx *cc, std::string_view data,
                  bool variant)
{
    core::Tombstone t;
    if (variant || !core::decode_tombstone(data, t)) {
        if (log_allowed(&log_slot_entry)) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "fly_cache: ignoring an unreadable tombstone (%uz "
                          "bytes) for key \"%*s\"", data.size(),
                          (int) cc->key.size(), cc->key.data());
        }
        miss(r, cc, true);
        return;
    }
    bool pass = core::fence_allows(t, cc->fence);
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: tombstone, %s",
                   pass ? "the fill may pass it" : "fill fenced");
    miss(r, cc, pass);
}

// A fresh entry stored before the last tag purge: its tag records say.
void check_tags(ngx_http_request_t *r, CacheCtx *cc, const core::EntryView &e)
{
    std::vector<std::string> keys;
    keys.reserve(1 + e.ntags);
    keys.push_back(core::tag_record_key(core::implicit_tag(cc->key)));
    for (size_t i = 0; i < e.ntags; i++) {
        keys.push_back(core::tag_record_key(e.tags[i]));
    }
    std::vector<const char *> argv;
    std::vector<size_t> argvlen;
    argv.push_back("MGET");
    argvlen.push_back(4);
    for (const std::string &k : keys) {
        argv.push_back(k.data());
        argvlen.push_back(k.size());
    }
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: entry of epoch %uL, checking %uz tags",
                   e.meta.epoch, keys.size());
    cc->op = main_conf(r)->redis_client->command(
        static_cast<int>(argv.size()), argv.data(), argvlen.data(), on_tags, cc);
    if (cc->op == nullptr) {
        finish(r, cc, CacheStatus::error, false);
    }
}

// The value under the key (or, `variant`, under the variant key) and the
// epoch are in: decide.
void decide(ngx_http_request_t *r, CacheCtx *cc, ValueState state, bool variant)
{
    if (!cc->epoch_ok || state == kFailed || state == kRefused) {
        finish(r, cc, CacheStatus::error, false);
        return;
    }
    if (state != kString) {
        if (state == kNil && cc->near) {
            // remembered by the zone if the response is not stored
            cc->absent_key = variant ? cc->variant_key : cc->key;
        }
        miss(r, cc, true);
        return;
    }

    std::string_view data(cc->reply, cc->reply_len);
    if (core::is_tombstone(data)) {
        on_tombstone(r, cc, data, variant);
        return;
    }

    core::EntryView e;
    core::DecodeError err = core::decode_entry(data, e);
    if (err != core::DecodeError::none) {
        if (log_allowed(&log_slot_entry)) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "fly_cache: ignoring unreadable entry (%*s, %uz "
                          "bytes) for key \"%*s\"",
                          (int) core::decode_error_name(err).size(),
                          core::decode_error_name(err).data(), data.size(),
                          (int) cc->key.size(), cc->key.data());
        }
        miss(r, cc, true);
        return;
    }

    if (e.meta.flags & core::kEntryVaryMarker) {
        if (variant || e.nheaders != 1) {
            miss(r, cc, true);  // a marker under a marker
            return;
        }
        if (cc->near) {
            near_offer(cc->key, core::near_hash(cc->key), cc->near_token, data,
                       e.meta.stored + e.meta.ttl, true, cc->epoch,
                       cc->near_epoch_token);
        }
        cc->generation.assign(e.body);
        bool ok = core::build_variant_key(
            variant_base(cc), e.headers[0].value,
            [&](std::string_view name) { return request_header(r, name); },
            cc->variant_key);
        free_reply(cc);
        if (!ok) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "fly_cache: the stored Vary gives this request no "
                          "variant key (over 16 names or %uz bytes): not "
                          "cached", core::kMaxKeyLen);
            finish(r, cc, CacheStatus::bypass, false);
            return;
        }
        cc->lookup_variant = true;
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly cache: vary marker, looking up the variant");
        cc->op = send_get(r, cc, cc->variant_key, on_variant);
        if (cc->op == nullptr) {
            finish(r, cc, CacheStatus::error, false);
        }
        return;
    }

    // An entry stored before the last tag purge is checked first, fresh
    // or not: a purged one is neither served nor revalidated.
    if (e.meta.epoch != cc->epoch) {
        check_tags(r, cc, e);
        return;
    }
    if (!core::entry_fresh(e.meta, ngx_time())) {
        expired(r, cc, e);
        return;
    }
    hit(r, cc, e);
}

void tags_reply(ngx_http_request_t *r, CacheCtx *cc, redisReply *reply)
{
    core::EntryView e;
    if (core::decode_entry(std::string_view(cc->reply, cc->reply_len), e)
        != core::DecodeError::none)
    {
        finish(r, cc, CacheStatus::error, false);    // cannot happen
        return;
    }
    size_t n = 1 + e.ntags;
    if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != n)
    {
        if (reply != nullptr && log_allowed(&log_slot_redis)) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "fly_cache: Redis answered MGET of tag records "
                          "with %s", reply->type == REDIS_REPLY_ERROR
                                         ? reply->str : "something else");
        }
        finish(r, cc, CacheStatus::error, false);
        return;
    }
    core::TagRecord records[1 + core::kMaxTags];
    for (size_t i = 0; i < n; i++) {
        redisReply *el = reply->element[i];
        records[i].present = el->type != REDIS_REPLY_NIL;
        if (el->type == REDIS_REPLY_STRING) {
            records[i].value = std::string_view(el->str, el->len);
        }
    }
    bool malformed = false;
    core::TagVerdict v = core::tag_verdict(e.meta.epoch, records, n, malformed);
    if (malformed && log_allowed(&log_slot_entry)) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "fly_cache: a malformed tag record of key \"%*s\" "
                      "counts as a purge", (int) cc->key.size(), cc->key.data());
    }
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: tag records say %s",
                   v == core::TagVerdict::valid   ? "valid"
                   : v == core::TagVerdict::stale ? "stale (soft purge)"
                                                  : "purged");
    switch (v) {
    case core::TagVerdict::valid:
        if (core::entry_fresh(e.meta, ngx_time())) {
            hit(r, cc, e);
        } else {
            expired(r, cc, e);
        }
        break;
    case core::TagVerdict::stale:
        // revalidated, or served only under fly_cache_use_stale rules
        cc->soft_purged = true;
        expired(r, cc, e);
        break;
    case core::TagVerdict::purged:
        miss(r, cc, true);
        break;
    }
}

// Runs a Redis callback's body for request `cc->r`, with the request's
// posted requests after it; an exception sends the request to the app.
template <typename F>
void in_callback(void *data, RedisOp *CacheCtx::*op, F &&f) noexcept
{
    auto *cc = static_cast<CacheCtx *>(data);
    ngx_http_request_t *r = cc->r;
    ngx_connection_t *c = r->connection;
    cc->*op = nullptr;
    try {
        f(r, cc);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0, "fly_cache: %s", e.what());
        if (cc->waiting && cc->op == nullptr && cc->epoch_op == nullptr) {
            finish(r, cc, CacheStatus::error, false);
        }
    }
    ngx_http_run_posted_requests(c);
}

// The key's and the epoch's replies come in that order (one connection);
// whichever is last decides.
void on_base(void *data, redisReply *reply) noexcept
{
    in_callback(data, &CacheCtx::op, [&](ngx_http_request_t *r, CacheCtx *cc) {
        cc->base_state = classify(r, cc, reply);
        if (cc->epoch_op == nullptr) {
            decide(r, cc, static_cast<ValueState>(cc->base_state), false);
        }
    });
}

void on_epoch(void *data, redisReply *reply) noexcept
{
    in_callback(data, &CacheCtx::epoch_op, [&](ngx_http_request_t *r, CacheCtx *cc) {
        record_epoch(r, cc, reply);
        if (get_ctx(r)->cache_status == CacheStatus::bypass) {
            if (!cc->epoch_ok) {
                cc->want_store = false;
            }
            resume(r, cc);
            return;
        }
        if (cc->op == nullptr) {
            decide(r, cc, static_cast<ValueState>(cc->base_state), false);
        }
    });
}

void on_variant(void *data, redisReply *reply) noexcept
{
    in_callback(data, &CacheCtx::op, [&](ngx_http_request_t *r, CacheCtx *cc) {
        decide(r, cc, classify(r, cc, reply), true);
    });
}

void on_tags(void *data, redisReply *reply) noexcept
{
    in_callback(data, &CacheCtx::op, [&](ngx_http_request_t *r, CacheCtx *cc) {
        tags_reply(r, cc, reply);
    });
}

// The request's base key (core::build_key of fly_cache_key's value):
// NGX_OK, NGX_DECLINED when it cannot be a key (logged), NGX_ERROR.  The
// default, $scheme$host$request_uri, is put together here from what
// those variables of nginx's give, without running the complex value
// (about 500 instructions of a HIT from the near cache's 13,000).  The
// purge and invalidation paths run it (key_for_uri): the same key.
ngx_int_t request_key(ngx_http_request_t *r, LocConf *lcf, std::string &out)
{
    size_t len;
    bool ok;
    if (lcf->cache_key_default) {
        std::string_view scheme = "http";
#if (NGX_HTTP_SSL)
        if (r->connection->ssl) {
            scheme = "https";
        }
#endif
        ngx_str_t host = r->headers_in.server;
        if (host.len == 0) {
            auto *cscf = static_cast<ngx_http_core_srv_conf_t *>(
                ngx_http_get_module_srv_conf(r, ngx_http_core_module));
            host = cscf->server_name;
        }
        std::string_view uri = r->unparsed_uri.data ? view(r->unparsed_uri)
                                                    : std::string_view();
        ok = core::build_key({scheme, view(host), uri}, out);
        len = scheme.size() + host.len + uri.size();
    } else {
        ngx_str_t key;
        if (ngx_http_complex_value(r, lcf->cache_key, &key) != NGX_OK) {
            return NGX_ERROR;
        }
        len = key.len;
        ok = core::build_key(view(key), out);
    }
    if (!ok) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fly_cache: key of %uz bytes not cached", len);
        return NGX_DECLINED;
    }
    return NGX_OK;
}

ngx_int_t lookup(ngx_http_request_t *r, LocConf *lcf, RequestCtx *ctx)
{
    MainConf *mcf = main_conf(r);
    CacheCtx *cc = create_cache_ctx(r, ctx);
    if (cc == nullptr) {
        return NGX_DECLINED;
    }

    cc->uri_changes = r->uri_changes;
    // what the fill's fence needs to know of its lookup (issue 9: the
    // replica position sampled now goes into cc->fence too)
    cc->fence.lookup_ms = now_ms();
    cc->fence.fence_ms = static_cast<int64_t>(lcf->cache_fence);
    cc->fence.has_lsn = replica_lsn(r, &cc->fence.replica_lsn);
    cc->lookup_msec = ngx_current_msec;

    ngx_int_t krc = request_key(r, lcf, cc->key);
    if (krc != NGX_OK) {
        if (krc == NGX_DECLINED) {
            ctx->cache_status = CacheStatus::bypass;
        }
        return NGX_DECLINED;
    }

    if (mcf->redis_client == nullptr) {
        ctx->cache_status = CacheStatus::error;
        return NGX_DECLINED;
    }

    // (ctx->lsn_skip_cache: a fly-lsn just passed, ngx_fly_consistency.cpp)
    if (ctx->lsn_skip_cache
        || (lcf->cache_bypass != nullptr
            && ngx_http_test_predicates(r, lcf->cache_bypass) == NGX_DECLINED))
    {
        // Not read, but still refreshed: the fill needs the epoch of
        // before the app is asked.
        ctx->cache_status = CacheStatus::bypass;
        cc->epoch_op = send_get(r, cc, core::kEpochKey, on_epoch);
        if (cc->epoch_op == nullptr) {
            return NGX_DECLINED;
        }
    } else {
        if (near_enabled(r)) {
            cc->near = true;
            ngx_int_t rc = near_hit(r, cc, ctx);
            if (rc != NGX_DECLINED) {
                return rc;
            }
            if (cc->near_absent) {
                // the content handler answers, and the response may fill
                // (no fill lock: no fill is known to be coming)
                ctx->cache_status = CacheStatus::miss;
                cc->want_store = true;
                return NGX_DECLINED;
            }
        }
        // Two commands written together: one round trip.
        if (!send_lookup(r, cc)) {
            ctx->cache_status = CacheStatus::error;
            return NGX_DECLINED;
        }
    }

    cc->want_store = true;
    cc->waiting = true;
    r->main->count++;
    // Wake-ups of the client connection must not re-enter the phases.
    r->write_event_handler = ngx_http_request_empty_handler;
    return NGX_DONE;
}

ngx_int_t handle(ngx_http_request_t *r)
{
    LocConf *lcf = loc_conf(r);
    if (lcf->cache_purge != nullptr) {
        ngx_int_t rc = purge_precontent(r, lcf);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }
    if (!lcf->cache || r != r->main) {
        return NGX_DECLINED;
    }

    RequestCtx *ctx = get_ctx(r);
    if (ctx != nullptr && ctx->cache != nullptr) {
        // Back after a lookup, or after an internal redirect.
        return ctx->cache->waiting ? NGX_DONE : NGX_DECLINED;
    }

    if ((lcf->cache_methods & method_bit(r->method)) == 0) {
        return NGX_DECLINED;
    }

    if (ctx == nullptr) {
        ctx = create_ctx(r);
        if (ctx == nullptr) {
            return NGX_DECLINED;
        }
    }
    return lookup(r, lcf, ctx);
}

ngx_int_t precontent_handler(ngx_http_request_t *r) noexcept
{
    try {
        return handle(r);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_cache: %s; passing the request", e.what());
    } catch (...) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_cache: unknown error; passing the request");
    }
    return NGX_DECLINED;
}

// Sends the GETs of the key and of the tag epoch; false if impossible.
bool send_lookup(ngx_http_request_t *r, CacheCtx *cc)
{
    cc->op = send_get(r, cc, cc->key, on_base);
    if (cc->op != nullptr) {
        cc->epoch_op = send_get(r, cc, core::kEpochKey, on_epoch);
    }
    if (cc->epoch_op == nullptr) {
        if (cc->op != nullptr) {
            RedisClient::cancel(cc->op);
            cc->op = nullptr;
        }
        return false;
    }
    return true;
}

}  // namespace

void lookup_finish(ngx_http_request_t *r, CacheCtx *cc, CacheStatus s,
                   bool store)
{
    finish(r, cc, s, store);
}

void lookup_updating(ngx_http_request_t *r, CacheCtx *cc, bool updating)
{
    core::EntryView e;
    if (cc->reply == nullptr
        || core::decode_entry(std::string_view(cc->reply, cc->reply_len), e)
               != core::DecodeError::none)
    {
        finish(r, cc, CacheStatus::error, false);    // cannot happen
        return;
    }
    LocConf *lcf = loc_conf(r);
    if (!updating) {
        // fly_cache_background_update: the refresh goes to a background
        // subrequest, with the lock; this request answers UPDATING too
        if (!(cc->lock_held && lcf->cache_background_update
              && r->method == NGX_HTTP_GET && background_refresh(r, lcf, cc)))
        {
            prepare_expired(r, lcf, cc, e);
            finish(r, cc, CacheStatus::expired, true);
            return;
        }
    }
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: UPDATING: %s refreshes the entry",
                   updating ? "another request" : "a background subrequest");
    cc->waiting = false;
    cc->want_store = false;
    r->main->count--;
    r->write_event_handler = ngx_http_request_empty_handler;
    ngx_http_finalize_request(r, send_hit(r, get_ctx(r), e,
                                          CacheStatus::updating));
}

CacheCtx *new_cache_ctx(ngx_http_request_t *r, RequestCtx *ctx)
{
    return create_cache_ctx(r, ctx);
}

void lookup_again(ngx_http_request_t *r, CacheCtx *cc)
{
    free_reply(cc);
    cc->base_state = kPending;
    cc->absent_key.clear();
    cc->lookup_variant = false;
    cc->variant_key.clear();
    cc->generation.clear();
    cc->epoch_ok = false;
    cc->epoch_str.clear();
    cc->epoch = 0;
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: fill lock gone, looking up again");
    if (!send_lookup(r, cc)) {
        finish(r, cc, CacheStatus::error, false);
    }
}

ngx_int_t cache_init(ngx_conf_t *cf)
{
    if (add_phase_handler(cf, NGX_HTTP_PRECONTENT_PHASE, precontent_handler)
        != NGX_OK)
    {
        return NGX_ERROR;
    }
    scripts_init();
    cache_filters_init();
    return NGX_OK;
}

}  // namespace fly
