// fly-edge nginx shell: the regional Redis cache.  What its parts share:
// the lookup (ngx_fly_cache_lookup.cpp: pre-content handler, Redis reply,
// tag check, HIT; ngx_fly_cache_near.cpp: what it takes from the near
// cache), the fill (ngx_fly_cache_fill.cpp: header and body
// filters, store), invalidation (ngx_fly_cache_invalidate.cpp: writes,
// Location targets, purge rules; the purge endpoint ngx_fly_purge.cpp
// uses it too) and the Redis scripts (ngx_fly_cache_script.cpp).
// Private to those files.  Nothing in any of them ever fails a request:
// any Redis trouble turns into a MISS or ERROR served by the app.
#pragma once

#include "ngx_fly.hpp"
#include "ngx_fly_near.hpp"
#include "core/http_text.hpp"
#include "core/tombstone.hpp"
#include "core/cache_entry.hpp"
#include "ngx_fly_event.hpp"
#include "ngx_fly_hold.hpp"

#include <string>
#include <vector>

struct redisReply;

namespace fly {

class RedisClient;
struct RedisOp;

struct CacheCtx {
    ngx_http_request_t *r;
    RedisOp *op;                 // pending GET (entry, variant, tag records)
    RedisOp *epoch_op;           // pending GET of the tag epoch
    std::string key;             // Redis key of the base entry
    std::string variant_key;     // Redis key of the Vary variant, if any
    std::string generation;      // token of the Vary marker seen or made
    bool new_marker;             // the fill writes a new Vary marker
    char *reply;                 // stolen reply bytes: the value being
    size_t reply_len;            // decided on, then the body of a HIT
    uint8_t base_state;          // the base GET's outcome (lookup.cpp)
    bool waiting;                // parked on Redis
    bool lookup_variant;         // the GET in flight is for the variant
    bool want_store;             // a fill may happen if the response allows
    bool epoch_ok;               // the epoch was read (epoch_str holds it)
    uint8_t uri_changes;         // r->uri_changes at the lookup: the fill
                                 // belongs to the location that looked up
    bool capturing;              // body filter is copying the body
    std::string epoch_str;       // the tag epoch as read ("" = none)
    uint64_t epoch;
    core::FillFence fence;       // what the fill's fence knows of the lookup
    ngx_msec_t lookup_msec;      // ngx_current_msec then (the grace)
    std::string entry;           // the entry being captured
    size_t prefix_len;
    int64_t ttl;
    int64_t keep;                // its Redis TTL (seconds)
    std::string vary;            // Vary names, when a marker must be stored
    bool near;                   // the near cache is used (ngx_fly_near.hpp)
    NearToken near_token;        // what the entry's GET in flight took
    NearToken near_epoch_token;  // ... and the tag epoch's
    bool near_absent;            // the zone knew Redis has nothing: no
                                 // GET was sent (a MISS at once)
    std::string absent_key;      // the key a GET found nothing under; the
                                 // zone may record it if nothing is stored

    // An expired (or soft-purged) entry kept in cc->reply for the
    // response (ngx_fly_cache_stale.cpp): revalidated by a 304, served
    // stale when the app fails.
    bool stale_entry;            // cc->reply holds it past the lookup
    bool soft_purged;            // a soft purge made it stale
    bool revalidating;           // our conditional request went to the app
    bool substituting;           // the body filter sends `substitute`
    bool substitute_sent;        // ... and has sent it
    std::string_view substitute; // the stored body (into cc->reply)

    // The fill lock (ngx_fly_cache_lock.cpp): a MISS with fly_cache_lock
    // on takes the region's lock of the key, or waits for its holder.
    bool lock_tried;             // taken or waited for once: not again
    bool lock_held;              // this request fills; release it
    bool lock_updating;          // for an expired entry: held elsewhere
                                 // means UPDATING, not a wait
    RedisOp *lock_op;            // pending SET NX of the lock
    struct LockWatch *watch;     // waiting: the worker's poll of the key
    Event lock_timer;            // waiting: fly_cache_lock_timeout
    std::string lock_key;
    std::string lock_token;

    // fly_cache_background_update (ngx_fly_cache_stale.cpp): this is the
    // background subrequest that refreshes an expired entry; it fills as
    // a MISS does and its output never reaches the client.
    bool background;
};

// The cache state of a background refresh subrequest, else of the main
// request only (nullptr otherwise): what the cache's filters act on.
inline CacheCtx *filter_cache_ctx(ngx_http_request_t *r)
{
    RequestCtx *ctx = get_ctx(r);
    CacheCtx *cc = ctx ? ctx->cache : nullptr;
    if (r != r->main && (cc == nullptr || !cc->background)) {
        return nullptr;
    }
    return cc;
}

// The last buffer of a response: last_buf, or for a subrequest (nginx
// sets only that) last_in_chain.
inline bool last_of_response(ngx_http_request_t *r, const ngx_buf_t *b)
{
    return b->last_buf || (r != r->main && b->last_in_chain);
}

// The request's value of header `name` (lower case), lines joined
// with ", ", as Vary compares them.
inline std::string request_header(ngx_http_request_t *r, std::string_view name)
{
    std::string v;
    for_each_header(r->headers_in.headers, [&](ngx_table_elt_t &h) {
        if (core::iequals(view(h.key), name)) {
            if (!v.empty()) {
                v.append(", ");
            }
            v.append(view(h.value));
        }
    });
    return v;
}

// Variant keys: the base key, the marker's generation, then the Vary
// parts (the core adds those).  0x1f cannot occur in a base key.
inline std::string variant_base(std::string_view key, std::string_view generation)
{
    std::string base(key);
    base.append("\x1fg").append(generation);
    return base;
}
inline std::string variant_base(const CacheCtx *cc)
{
    return variant_base(cc->key, cc->generation);
}

// Adds fly_cache_status_header, when configured; false on no memory.
inline bool add_status_header(ngx_http_request_t *r, LocConf *lcf,
                              CacheStatus s)
{
    return lcf->cache_status_header.len == 0
           || push_header(r, view(lcf->cache_status_header),
                          cache_status_name(s)) != nullptr;
}

// Unix time in milliseconds (nginx's cached time).
inline int64_t now_ms()
{
    ngx_time_t *tp = ngx_timeofday();
    return static_cast<int64_t>(tp->sec) * 1000 + tp->msec;
}

// ngx_fly_cache_fill.cpp: installs the header and body filters.
void cache_filters_init();

// ---- ngx_fly_cache_lookup.cpp (for the lock) ------------------------

// The parked lookup ends without a HIT: the phases resume (status `s`;
// `store`: a fill may follow).
void lookup_finish(ngx_http_request_t *r, CacheCtx *cc, CacheStatus s,
                   bool store);
// An expired entry (in cc->reply) that may be served while another
// request refreshes it: `updating` (the lock is held elsewhere) sends it
// as UPDATING; otherwise this request refreshes it (EXPIRED).
void lookup_updating(ngx_http_request_t *r, CacheCtx *cc, bool updating);
// The parked lookup starts again from the GET of the key (a waiter whose
// lock holder is done).
void lookup_again(ngx_http_request_t *r, CacheCtx *cc);
// A new CacheCtx of `r` in ctx->cache (freed by r's pool cleanup, which
// also releases its lock); nullptr on no memory.
CacheCtx *new_cache_ctx(ngx_http_request_t *r, RequestCtx *ctx);

// ---- ngx_fly_cache_near.cpp -------------------------------------------

// The lookup's first step where the near cache is used: a HIT from the
// zone (sent: NGX_DONE), else NGX_DECLINED, with cc->near_absent set when
// the zone knows Redis has nothing under the key (a MISS at once).
ngx_int_t near_hit(ngx_http_request_t *r, CacheCtx *cc, RequestCtx *ctx);

// A MISS whose response is not stored: a GET found nothing under
// cc->absent_key, and the near cache may remember that (near_offer_absent).
void offer_absent(CacheCtx *cc) noexcept;

// ---- ngx_fly_cache_lock.cpp ------------------------------------------

// A MISS that may be stored, fly_cache_lock on: SET NX of the key's lock
// in the regional Redis.  Taken: the request fills (lookup_finish MISS);
// held by another: the request waits, answered after that fill by
// lookup_again() or, at fly_cache_lock_timeout, sent to the app without
// storing; Redis failing: MISS as without the lock.  False when the SET
// cannot be sent (the caller goes on as without the lock).
bool lock_try(ngx_http_request_t *r, CacheCtx *cc);
// The holder is done (stored, not storable, failed): the lock goes, if
// it is still this request's.  No-op for others.
void lock_release(ngx_http_request_t *r, CacheCtx *cc) noexcept;
// The request goes (pool cleanup): stops waiting, releases.
void lock_cleanup(CacheCtx *cc) noexcept;

// ---- ngx_fly_cache_send.cpp ------------------------------------------

// Sets r->headers_out (which must be clean) to the stored response `e`
// as a HIT sends it, with status `s` in the status header: the request's
// preconditions answered (NGX_HTTP_PRECONDITION_FAILED is returned for a
// 412, `not_modified` set for a 304), ranges left to nginx's range
// filter, Age when `with_age`.  NGX_OK or NGX_ERROR otherwise.
ngx_int_t stored_response_headers(ngx_http_request_t *r,
                                  const core::EntryView &e, CacheStatus s,
                                  bool with_age, bool &not_modified);

// Sends the stored response `e` as a HIT: the whole of it, a 304 or 412
// when the request's preconditions say so, or (nginx's range filter) the
// ranges asked for.  The body points into the entry's bytes, which must
// outlive the response (cc->reply, freed by the request pool's cleanup).
// `s`: HIT, or UPDATING for an expired entry another request refreshes.
ngx_int_t send_hit(ngx_http_request_t *r, RequestCtx *ctx,
                   const core::EntryView &e,
                   CacheStatus s = CacheStatus::hit);

// ---- ngx_fly_cache_stale.cpp -----------------------------------------

// At the lookup, for an expired or soft-purged entry `e` (in cc->reply):
// adds our conditional request headers when it is to be revalidated, and
// keeps the entry for the response when it may serve it (a 304, stale,
// the 504 of must-revalidate).
void prepare_expired(ngx_http_request_t *r, LocConf *lcf, CacheCtx *cc,
                     const core::EntryView &e);

// Header filter, before the fill decides: a 304 to our conditional
// request becomes the stored response with updated headers
// (REVALIDATED, then stored); an app failure becomes the stale entry
// (STALE) or, for must-revalidate, a 504.  Returns NGX_OK when it changed
// nothing or changed r->headers_out (then the body filter sends
// cc->substitute instead of the app's body), NGX_ERROR on no memory.
ngx_int_t substitute_response(ngx_http_request_t *r, LocConf *lcf,
                              RequestCtx *ctx, CacheCtx *cc);

// Body filter: consumes the app's buffers in `in` and replaces it by
// the substituted body at the app's last buffer (nullptr before that:
// nothing to pass on).  NGX_ERROR on no memory.
ngx_int_t substitute_body(ngx_http_request_t *r, CacheCtx *cc,
                          ngx_chain_t *&in);

// fly_cache_background_update: the lock holder `cc` (an expired entry in
// cc->reply) hands the refresh, with its lock, to a background subrequest
// of the same URI in the same location, which goes to the app
// (conditional when the entry has validators) and stores the result
// through the normal fill; the request itself may then answer UPDATING.
// False when the subrequest cannot be made (refresh in the foreground).
bool background_refresh(ngx_http_request_t *r, LocConf *lcf, CacheCtx *cc);

// May the expired (or soft-purged) entry `e` be served as UPDATING while
// another request refreshes it (core::may_serve_updating)?
bool updating_allowed(LocConf *lcf, const core::EntryView &e);

// Redis TTL of an entry being filled (core::keep_seconds).
int64_t entry_keep(LocConf *lcf, const core::EntryMeta &m, bool validators);

// ---- ngx_fly_cache_script.cpp ----------------------------------------

struct Script {
    const char *name;            // for logs
    std::string_view text;
    char sha[41];                // SHA1 of text, hex (scripts_init)
    RedisClient *loaded_on[2];   // where an EVAL of it succeeded
};
extern Script fill_script;
extern Script invalidate_script;
extern Script unlock_script;

void scripts_init();            // postconfiguration

// Called once with the script's reply, or nullptr when it failed.
using ScriptDone = void (*)(void *data, redisReply *reply);
struct ScriptCall;

// Runs `script` with `words`: `nkeys` keys, then its arguments (moved in,
// kept for an EVAL after NOSCRIPT).  nullptr when it cannot be sent (Redis
// unavailable: treat as such); otherwise `done` (may be nullptr) is
// called once, later, unless detach_script() came first.  Error replies
// are logged (rate-limited) here.
ScriptCall *run_script(RedisClient *client, Script &script,
                       size_t nkeys, std::vector<std::string> &&words,
                       ScriptDone done, void *data) noexcept;
// The caller is gone: `done` is not called.
void detach_script(ScriptCall *call) noexcept;
// A command to `client` failed: its Redis may have restarted without the
// scripts; the next call sends them again (EVAL).
void forget_scripts(RedisClient *client) noexcept;

// ---- ngx_fly_cache_invalidate.cpp ------------------------------------

// What one invalidation removes: URL keys (tombstoned) and tags (the
// epoch INCRed and their records set).
struct Invalidation {
    std::vector<std::string> keys;   // base Redis keys ("fly:...")
    std::vector<std::string> tags;   // tag names (valid, or implicit)
    bool soft_tags = false;          // the tags get a soft purge
};

// The base Redis key a GET of `uri` (path[?args], raw) would have in this
// request (its Host, scheme, ...) under the location's fly_cache_key;
// false when it cannot be built (logged at info).
bool key_for_uri(ngx_http_request_t *r, LocConf *lcf, std::string_view uri,
                 std::string &key);

// Sends it to the primary Redis (the tombstones also to the region's own
// Redis when it is another); `done` gets the primary's reply (nullptr
// done: fire and forget).  nullptr when it cannot be sent.
ScriptCall *send_invalidation(ngx_http_request_t *r, LocConf *lcf,
                              Invalidation &&inv, ScriptDone done, void *data);

// RFC 9111 4.4 and fly_cache_purge_on_write: a successful unsafe request
// invalidates its own key, the same-origin Location and Content-Location
// targets and what the location's rules name.
// A successful write (header filter): sends its invalidation; true when
// its answer is held (ngx_fly_hold.hpp) until the primary Redis has it, or
// its command failed, and goes on to `next_header` / `next_body` then.
bool invalidate_on_write(ngx_http_request_t *r, LocConf *lcf,
                         ngx_http_output_header_filter_pt next_header,
                         ngx_http_output_body_filter_pt next_body);

// A write's answer held for its invalidation (the cache's body filter
// keeps what comes meanwhile).
struct InvalidationHold {
    ResponseHold out;
    ScriptCall *call = nullptr;          // until its reply
};

// ---- ngx_fly_purge.cpp -----------------------------------------------

// The pre-content part of the same-location form: NGX_DECLINED when the
// request is not a purge; otherwise the purge runs as the request's
// content handler (NGX_OK) or the request gets 403.
ngx_int_t purge_precontent(ngx_http_request_t *r, LocConf *lcf);

}  // namespace fly
