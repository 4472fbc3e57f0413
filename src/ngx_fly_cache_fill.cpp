// fly-edge nginx shell: the cache's fill side.  The header filter decides
// whether the response may be stored (RFC 9111, in the core), takes the
// response's cache tags (hidden from the client unless
// fly_cache_tags_pass) and invalidates on successful unsafe requests
// (ngx_fly_cache_invalidate.cpp); the body filter copies the body as it
// streams to the client, and when it is complete the fill script writes
// it to the region's Redis, unless a purge or an invalidation since the
// lookup forbids it (ngx_fly_cache_script.cpp).  The lookup side is
// ngx_fly_cache_lookup.cpp.
#include "ngx_fly_cache.hpp"
#include "ngx_fly_redis.hpp"
#include "core/cache_entry.hpp"
#include "core/cache_lock.hpp"
#include "core/cache_tags.hpp"
#include "core/tombstone.hpp"

extern "C" {
#include <hiredis/hiredis.h>
}

#include <exception>
#include <string>

namespace fly {

namespace {

ngx_http_output_header_filter_pt next_header_filter;
ngx_http_output_header_filter_pt next_targeted_filter;
ngx_http_output_body_filter_pt next_body_filter;

// Gathers what the core's store rules need from the response headers,
// but Date and Expires (response_dates()).
void response_facts(ngx_http_request_t *r, LocConf *lcf,
                    core::ResponseFacts &f, std::string &vary,
                    std::string &connection)
{
    f.status = static_cast<int>(r->headers_out.status);
    f.now = ngx_time();
    f.request_authorization = r->headers_in.authorization != nullptr;
    f.request_range = r->headers_in.range != nullptr;
    ngx_http_headers_in_t &in = r->headers_in;
    f.request_conditional = in.if_match || in.if_none_match
                            || in.if_modified_since || in.if_unmodified_since
                            || in.if_range;

    // RFC 9213: the field targeted at fly-edge alone, then
    // CDN-Cache-Control, then Cache-Control.
    core::CacheControl targeted[2];
    core::AgeField age;
    std::string_view own = view(lcf->cache_control_header);
    for_each_header(r->headers_out.headers, [&](ngx_table_elt_t &h) {
        std::string_view k = view(h.key);
        std::string_view v = view(h.value);
        if (core::iequals(k, "Cache-Control")) {
            core::parse_cache_control(v, f.cc);
        } else if (!own.empty() && core::iequals(k, own)) {
            core::parse_cache_control(v, targeted[0]);
        } else if (core::iequals(k, "CDN-Cache-Control")) {
            core::parse_cache_control(v, targeted[1]);
        } else if (core::iequals(k, "Age")) {
            core::parse_age(v, age);
        } else if (core::iequals(k, "Set-Cookie")) {
            f.has_set_cookie = true;
        } else if (core::iequals(k, "fly-replay")) {
            f.has_fly_replay = true;
        } else if (core::iequals(k, "Vary")) {
            if (!vary.empty()) {
                vary.append(", ");
            }
            vary.append(v);
        } else if (core::iequals(k, "Connection")) {
            if (!connection.empty()) {
                connection.append(", ");
            }
            connection.append(v);
        }
    });
    size_t used = core::select_targeted(targeted, 2);
    if (used < 2) {
        f.cc = targeted[used];
        f.targeted = true;
    }
    f.age = age.seconds > 0 ? age.seconds : 0;
    f.age_invalid = age.invalid();

    // proxy_pass consumes the origin's Connection header (and Date).
    if (r->upstream != nullptr) {
        ngx_http_upstream_headers_in_t &u = r->upstream->headers_in;
        if (u.connection != nullptr) {
            if (!connection.empty()) {
                connection.append(", ");
            }
            connection.append(view(u.connection->value));
        }
    }

    f.vary_star = !core::for_each_element(vary, [](std::string_view e) {
        return e != "*";
    });

    // What the key does not hold: a body, and headers through which apps
    // rebuild the URL or the method (unless Vary names them).
    f.request_body = in.content_length_n > 0 || in.chunked;
    for_each_header(in.headers, [&](ngx_table_elt_t &h) {
        f.request_forwarded = f.request_forwarded
                              || core::unkeyed_forwarding(view(h.key), vary);
    });
}

// Expires and the origin's Date when it is valid (else `date` stays
// empty), parsed only for a response the store rules did not refuse.
void response_dates(ngx_http_request_t *r, core::ResponseFacts &f,
                    std::string_view &date)
{
    for_each_header(r->headers_out.headers, [&](ngx_table_elt_t &h) {
        std::string_view k = view(h.key);
        std::string_view v = view(h.value);
        if (core::iequals(k, "Expires")) {
            f.has_expires = true;
            f.expires_valid = core::parse_http_date(v, f.expires);
        } else if (core::iequals(k, "Date")) {
            if (date.empty() && core::parse_http_date(v, f.date)) {
                f.has_date = true;
                date = v;
            }
        }
    });
    // proxy_pass consumes the origin's Date header.
    if (r->upstream != nullptr) {
        ngx_http_upstream_headers_in_t &u = r->upstream->headers_in;
        if (!f.has_date && u.date != nullptr
            && core::parse_http_date(view(u.date->value), f.date))
        {
            f.has_date = true;
            date = view(u.date->value);
        }
    }
}

// The response's fly_cache_tags_header lines, joined with ", " into
// `tags` (when not nullptr); hidden from the client unless
// fly_cache_tags_pass is on.
void take_tags(ngx_http_request_t *r, LocConf *lcf, std::string *tags)
{
    for_each_header(r->headers_out.headers, [&](ngx_table_elt_t &h) {
        if (!core::iequals(view(h.key), view(lcf->cache_tags_header))) {
            return;
        }
        if (tags != nullptr) {
            if (!tags->empty()) {
                tags->append(", ");
            }
            tags->append(view(h.value));
        }
        if (!lcf->cache_tags_pass) {
            h.hash = 0;
        }
    });
}

// Starts the capture when the response may be stored.
void begin_store(ngx_http_request_t *r, LocConf *lcf, CacheCtx *cc,
                 const std::string &tag_list)
{
    if (r->method != NGX_HTTP_GET) {
        return;  // a HEAD has no body to store; GET fills the entry
    }
    if (lcf->cache_no_store != nullptr
        && ngx_http_test_predicates(r, lcf->cache_no_store) == NGX_DECLINED)
    {
        return;
    }
    if (r->headers_out.content_length_n > static_cast<off_t>(lcf->cache_max_size)) {
        return;
    }

    // RFC 9111 5.2.1.5: no-store in the request forbids storing the
    // response too.  (Request no-cache / max-age are not honoured: any
    // client could send every request to the app.)
    core::CacheControl request_cc;
    for_each_header(r->headers_in.headers, [&](ngx_table_elt_t &h) {
        if (core::iequals(view(h.key), "Cache-Control")) {
            core::parse_cache_control(view(h.value), request_cc);
        }
    });
    if (request_cc.no_store) {
        return;
    }

    core::ResponseFacts f;
    std::string vary, connection;
    response_facts(r, lcf, f, vary, connection);

    core::CachePolicy policy;
    if (lcf->cache_valid != nullptr) {
        policy.valid = static_cast<core::ValidRule *>(lcf->cache_valid->elts);
        policy.nvalid = lcf->cache_valid->nelts;
    }
    policy.min_ttl = lcf->cache_min_ttl;
    policy.max_ttl = lcf->cache_max_ttl;
    policy.ignore_set_cookie = lcf->cache_ignore_set_cookie == 1;
    policy.revalidate = lcf->cache_revalidate == 1;
    f.has_validator = r->headers_out.etag != nullptr
                      || r->headers_out.last_modified != nullptr
                      || r->headers_out.last_modified_time != -1;

    // A refused response (no-store, private, Set-Cookie, ...) stops here,
    // before its dates are parsed.
    core::StoreDecision d;
    std::string_view date;
    if (!core::store_refused(f, policy, d.verdict)) {
        response_dates(r, f, date);
        d = core::decide_store(f, policy);
    }
    if (d.verdict != core::StoreVerdict::store) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly cache: not storing: %s",
                       std::string(core::verdict_name(d.verdict)).c_str());
        return;
    }

    // (after the store rules: a refused response skips the tag array)
    std::string_view tags[core::kMaxTags];
    size_t ntags = 0;
    if (!core::parse_tags(tag_list, tags, core::kMaxTags, ntags)) {
        // stored without them, a purge of its tags would miss it
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fly_cache: not storing a response with an invalid "
                      "or too long \"%V\" header", &lcf->cache_tags_header);
        return;
    }

    if (!vary.empty()) {
        // Variants stored under the marker the lookup saw keep its
        // generation; otherwise a new marker starts a new generation.
        cc->new_marker = cc->generation.empty();
        if (cc->new_marker) {
            char g[24];
            cc->generation.assign(g, snprintf(g, sizeof(g), "%lx%x",
                                              static_cast<unsigned long>(ngx_random()),
                                              static_cast<unsigned>(ngx_pid)));
        }
        std::string base = variant_base(cc);
        if (!core::build_variant_key(
                base, vary,
                [&](std::string_view name) { return request_header(r, name); },
                cc->variant_key))
        {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "fly_cache: Vary with an invalid name, over 16 "
                          "names or a variant key over %uz bytes: not stored",
                          core::kMaxKeyLen);
            return;
        }
        if (cc->variant_key != base) {   // "Vary: ," names nothing
            cc->vary = vary;
        }
    }

    // The headers to keep: the response's own, less hop-by-hop ones and
    // (with fly_cache_ignore_set_cookie) Set-Cookie; Content-Type lives
    // outside the list in nginx.  Date is the origin's (proxy_pass keeps
    // it apart), else the time of receipt (RFC 9110 6.6.1): a HIT carries
    // it, and Age says how old the response is.
    core::EntryHeader hdrs[core::kEntryMaxHeaders];
    size_t n = 0;
    bool too_many = false;
    std::string ctype;
    if (r->headers_out.content_type.len) {
        ctype.assign(view(r->headers_out.content_type));
        if (r->headers_out.charset.len
            && ctype.find("charset") == std::string::npos)
        {
            ctype.append("; charset=").append(view(r->headers_out.charset));
        }
        hdrs[n++] = {"Content-Type", ctype};
    }
    u_char lm[sizeof("Mon, 28 Sep 1970 06:00:00 GMT")];
    if (r->headers_out.last_modified == nullptr
        && r->headers_out.last_modified_time != -1)
    {
        size_t len = ngx_http_time(lm, r->headers_out.last_modified_time) - lm;
        hdrs[n++] = {"Last-Modified", {reinterpret_cast<char *>(lm), len}};
    }
    u_char received[sizeof("Mon, 28 Sep 1970 06:00:00 GMT")];
    if (date.empty()) {
        date = {reinterpret_cast<char *>(received),
                static_cast<size_t>(ngx_http_time(received, f.now) - received)};
    }
    hdrs[n++] = {"Date", date};
    for_each_header(r->headers_out.headers, [&](ngx_table_elt_t &h) {
        std::string_view k = view(h.key);
        if (core::is_hop_by_hop(k, connection) || core::iequals(k, "Content-Length")
            || core::iequals(k, "Age") || core::iequals(k, "Date")
            || core::iequals(k, "Server")
            || (core::iequals(k, "Set-Cookie") && policy.ignore_set_cookie)
            || (lcf->cache_status_header.len
                && core::iequals(k, view(lcf->cache_status_header))))
        {
            return;
        }
        if (n == core::kEntryMaxHeaders) {
            too_many = true;
            return;
        }
        hdrs[n++] = {k, view(h.value)};
    });
    if (too_many) {
        return;
    }

    core::EntryMeta meta;
    meta.status = static_cast<uint16_t>(f.status);
    meta.stored = f.now;
    meta.ttl = static_cast<uint32_t>(d.ttl);
    meta.age = static_cast<uint32_t>(f.age);
    meta.swr = static_cast<uint32_t>(d.stale_while_revalidate);
    meta.sie = static_cast<uint32_t>(d.stale_if_error);
    meta.epoch = cc->epoch;
    meta.flags = d.stale_flags;

    if (!core::begin_entry(meta, hdrs, n, cc->entry, tags, ntags)) {
        return;
    }
    cc->prefix_len = cc->entry.size();
    if (r->headers_out.content_length_n > 0) {
        cc->entry.reserve(cc->prefix_len + r->headers_out.content_length_n);
    }
    cc->ttl = d.ttl;
    cc->keep = entry_keep(lcf, meta, f.has_validator);
    cc->capturing = true;
    // The copy filter, which runs before the body filter, then hands it
    // memory buffers only: a response spilled to a temporary file is
    // read back there, as for gzip or ssi (through aio when configured).
    r->filter_need_in_memory = 1;
}

constexpr ngx_uint_t kUnsafeMethods =
    NGX_HTTP_POST | NGX_HTTP_PUT | NGX_HTTP_DELETE | NGX_HTTP_PATCH
    | NGX_HTTP_MKCOL | NGX_HTTP_COPY | NGX_HTTP_MOVE | NGX_HTTP_PROPPATCH
    | NGX_HTTP_LOCK | NGX_HTTP_UNLOCK;

ngx_int_t cache_header(ngx_http_request_t *r);

ngx_int_t header_filter(ngx_http_request_t *r) noexcept
{
    if (r != r->main) {
        CacheCtx *bg = filter_cache_ctx(r);
        if (bg == nullptr) {
            return next_header_filter(r);
        }
        // a background refresh: stored as a MISS is, never sent
        ngx_int_t rc = cache_header(r);
        r->header_sent = 1;
        return rc == NGX_ERROR ? NGX_ERROR : NGX_OK;
    }
    return cache_header(r);
}

// The header filter's work for the main request or a background refresh;
// what it returns is next_header_filter()'s (or NGX_ERROR).
ngx_int_t cache_header(ngx_http_request_t *r)
{
    LocConf *lcf = loc_conf(r);
    RequestCtx *ctx = get_ctx(r);

    if ((r->method & kUnsafeMethods) && r->headers_out.status >= 200
        && r->headers_out.status < 400)
    {
        // not for this nginx's own fly-replay answer: the write happens
        // in the primary, which invalidates then
        if (lcf->cache && (ctx == nullptr || ctx->replay_state.len == 0)) {
            try {
                take_tags(r, lcf, nullptr);
                if (invalidate_on_write(r, lcf, next_header_filter,
                                        next_body_filter))
                {
                    return NGX_OK;      // the header goes once Redis has it
                }
            } catch (const std::exception &e) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "fly_cache: %s; not invalidated", e.what());
            }
        }
        return next_header_filter(r);
    }

    CacheCtx *cc = ctx ? ctx->cache : nullptr;
    if (cc != nullptr && (ctx->cache_status == CacheStatus::hit
                          || ctx->cache_status == CacheStatus::updating))
    {
        // send_hit() set the status header; stored without the targeted
        // fields (unless pass)
        return next_header_filter(r);
    }
    if (cc == nullptr) {
        if (lcf->cache) {
            take_tags(r, lcf, nullptr);
        }
        return next_header_filter(r);
    }

    // A 304 to our revalidation, or an app failure the stale entry
    // answers (ngx_fly_cache_stale.cpp), changes the response first.
    bool substituted = cc->substituting;
    if (cc->stale_entry && !cc->substituting) {
        ngx_int_t rc;
        try {
            rc = substitute_response(r, lcf, ctx, cc);
        } catch (const std::exception &e) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "fly_cache: %s; the app's answer is sent", e.what());
            rc = NGX_OK;
        }
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }
        substituted = cc->substituting;
    }
    if (!substituted && !add_status_header(r, lcf, ctx->cache_status)) {
        return NGX_ERROR;
    }
    bool store = cc->want_store && !cc->capturing;
    std::string tags;
    try {
        take_tags(r, lcf, store ? &tags : nullptr);
    } catch (const std::exception &e) {
        store = false;
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_cache: %s; not storing", e.what());
    }
    if (store) {
        if (r->uri_changes != cc->uri_changes) {
            // An internal redirect since the lookup (error_page, try_files,
            // X-Accel-Redirect, a named location): this is another
            // location's response, not the one the key stands for.
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "fly cache: not storing: internal redirect "
                           "since the lookup");
        } else {
            try {
                begin_store(r, lcf, cc, tags);
            } catch (const std::exception &e) {
                cc->capturing = false;
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "fly_cache: %s; not storing", e.what());
            }
        }
        cc->want_store = false;
    }
    if (!cc->capturing) {
        if (ctx->cache_status == CacheStatus::miss) {
            offer_absent(cc);    // the near cache may remember the MISS
        }
        lock_release(r, cc);     // nothing will be stored: waiters go on
    }
    return cc->background ? NGX_OK : next_header_filter(r);
}

// Runs after header_filter (which stores them): CDN-Cache-Control and the
// fly_cache_control_header field are meant for this cache, so they do not
// reach the client, from a MISS or a HIT, unless fly_cache_control_pass.
ngx_int_t targeted_filter(ngx_http_request_t *r) noexcept
{
    LocConf *lcf = loc_conf(r);
    if (r == r->main && lcf->cache && !lcf->cache_control_pass) {
        std::string_view own = view(lcf->cache_control_header);
        for_each_header(r->headers_out.headers, [&](ngx_table_elt_t &h) {
            std::string_view k = view(h.key);
            if (core::iequals(k, "CDN-Cache-Control")
                || (!own.empty() && core::iequals(k, own)))
            {
                h.hash = 0;
            }
        });
    }
    return next_targeted_filter(r);
}

// The capture ends (the entry is sent to Redis, or is not storable):
// the fill lock goes (after the fill: the same connection, in order).
void stop_capture(CacheCtx *cc)
{
    cc->capturing = false;
    std::string().swap(cc->entry);
    lock_release(cc->r, cc);
}

// What the fill script answered (the request may be gone): `data` is
// the stored key, for the log.
void on_fill_done(void *data, redisReply *reply) noexcept
{
    auto *key = static_cast<std::string *>(data);
    if (reply != nullptr && reply->type == REDIS_REPLY_INTEGER
        && reply->integer != 0)
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "fly cache: fill of \"%s\" refused: %s", key->c_str(),
                       reply->integer == 1 ? "tag epoch changed since the lookup"
                       : reply->integer == 2 ? "fenced by an invalidation"
                                             : "the staged entry is gone");
    }
    delete key;
}

// Stores `value` under `key` (and a Vary marker under the base key): a
// SET of the value under a staging key, then the fill script, which moves
// it under `key` unless a purge or an invalidation since the lookup
// forbids it (ngx_fly_cache_script.cpp).  Both go on the one connection,
// in that order.
void send_fill(ngx_http_request_t *r, CacheCtx *cc, const std::string &key,
               std::string &&value, std::string &&marker)
{
    RedisClient *client = main_conf(r)->redis_client;
    std::string staged = core::fill_staging_key(
        key, core::lock_token(static_cast<uint32_t>(ngx_pid),
                              static_cast<uint64_t>(ngx_random()), now_ms()));
    std::string ttl = std::to_string(core::kStagingTtlMs);
    const char *argv[5] = {"SET", staged.data(), value.data(), "PX",
                           ttl.data()};
    size_t argvlen[5] = {3, staged.size(), value.size(), 2, ttl.size()};
    if (client == nullptr
        || client->command(5, argv, argvlen, nullptr, nullptr) == nullptr)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly cache: Redis unavailable, entry not stored");
        return;
    }
    std::string().swap(value);

    std::vector<std::string> words;
    words.reserve(10);
    words.emplace_back(core::kEpochKey);
    words.push_back(core::fence_record_key(cc->key));
    words.push_back(key);
    words.push_back(std::move(staged));
    if (!marker.empty()) {
        words.push_back(cc->key);
    }
    size_t nkeys = words.size();
    words.push_back(cc->epoch_str);
    words.push_back(core::fence_threshold_arg(cc->fence));
    words.push_back(core::fence_lsn_arg(cc->fence));
    words.push_back(std::to_string(cc->keep));
    if (!marker.empty()) {
        words.push_back(std::move(marker));
    }
    auto *logged = new std::string(key);
    if (run_script(client, fill_script, nkeys, std::move(words), on_fill_done,
                   logged)
        == nullptr)
    {
        // the staged value expires on its own (core::kStagingTtlMs)
        delete logged;
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly cache: Redis unavailable, entry not stored");
    }
}

// The body is complete: write the entry (and the Vary marker).
void finish_store(ngx_http_request_t *r, CacheCtx *cc)
{
    size_t body = cc->entry.size() - cc->prefix_len;
    if ((r->headers_out.content_length_n >= 0
         && static_cast<off_t>(body) != r->headers_out.content_length_n)
        || !core::finish_entry(cc->entry, cc->prefix_len))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fly_cache: incomplete response not stored");
        stop_capture(cc);
        return;
    }
    MainConf *mcf = main_conf(r);
    if (mcf->redis_client == nullptr) {
        stop_capture(cc);
        return;
    }
    ngx_msec_int_t elapsed = static_cast<ngx_msec_int_t>(ngx_current_msec
                                                         - cc->lookup_msec);
    if (!core::fill_in_time(elapsed)) {
        // an invalidation meanwhile may no longer be on record
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly cache: not storing a response that took %M ms",
                       elapsed);
        stop_capture(cc);
        return;
    }

    size_t bytes = cc->entry.size();
    if (cc->vary.empty()) {
        send_fill(r, cc, cc->key, std::move(cc->entry), {});
    } else {
        core::EntryMeta meta;
        meta.flags = core::kEntryVaryMarker;
        meta.stored = ngx_time();
        meta.ttl = static_cast<uint32_t>(cc->ttl);
        core::EntryHeader h = {"Vary", cc->vary};
        std::string marker;
        if (!cc->new_marker) {
            send_fill(r, cc, cc->variant_key, std::move(cc->entry), {});
        } else if (core::begin_entry(meta, &h, 1, marker)) {
            size_t plen = marker.size();
            marker.append(cc->generation);
            core::finish_entry(marker, plen);
            send_fill(r, cc, cc->variant_key, std::move(cc->entry),
                      std::move(marker));
        }
    }
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: storing %uz bytes for %L s%s", bytes,
                   static_cast<int64_t>(cc->ttl),
                   cc->vary.empty() ? "" : " (vary)");
    stop_capture(cc);
}

// Copies the bytes of one buffer into the entry; false if impossible.
bool capture_buf(CacheCtx *cc, ngx_buf_t *b, size_t max)
{
    if (ngx_buf_special(b)) {
        return true;
    }
    size_t len = static_cast<size_t>(ngx_buf_size(b));
    if (cc->entry.size() - cc->prefix_len + len > max) {
        return false;
    }
    if (!ngx_buf_in_memory(b)) {
        return false;   // not expected: begin_store asked for memory
    }
    cc->entry.append(reinterpret_cast<const char *>(b->pos), len);
    return true;
}

// The body filter's capture: copies `in` (which it leaves as it is) into
// the entry; stores it at the last buffer.  Substitutes first (a 304 or
// a stale answer, ngx_fly_cache_stale.cpp): then `in` may become nullptr.
ngx_int_t capture_body(ngx_http_request_t *r, CacheCtx *cc, ngx_chain_t *&in)
{
    if (cc->substituting && in != nullptr) {
        // the stored body in place of the app's (ngx_fly_cache_stale.cpp)
        if (substitute_body(r, cc, in) != NGX_OK) {
            return NGX_ERROR;
        }
    }
    if (!cc->capturing || in == nullptr) {
        return NGX_OK;
    }
    LocConf *lcf = loc_conf(r);
    try {
        for (ngx_chain_t *cl = in; cl; cl = cl->next) {
            if (!capture_buf(cc, cl->buf, lcf->cache_max_size)) {
                ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                               "fly cache: body not storable, capture ends");
                stop_capture(cc);
                break;
            }
            if (last_of_response(r, cl->buf)) {
                finish_store(r, cc);
                break;
            }
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_cache: %s; not storing", e.what());
        stop_capture(cc);
    }
    return NGX_OK;
}

ngx_int_t body_filter(ngx_http_request_t *r, ngx_chain_t *in) noexcept
{
    RequestCtx *ctx = r == r->main ? get_ctx(r) : nullptr;
    if (ctx != nullptr && ctx->invalidation != nullptr
        && ctx->invalidation->out.holding())
    {
        return ctx->invalidation->out.keep(in);
    }
    CacheCtx *cc = filter_cache_ctx(r);
    if (cc == nullptr) {
        return next_body_filter(r, in);
    }
    bool had = in != nullptr;
    if (capture_body(r, cc, in) != NGX_OK) {
        return NGX_ERROR;
    }
    if (cc->background) {
        // a background refresh: stored, never sent; the buffers free up
        for (ngx_chain_t *cl = in; cl; cl = cl->next) {
            cl->buf->pos = cl->buf->last;
            if (cl->buf->in_file) {
                cl->buf->file_pos = cl->buf->file_last;
            }
        }
        return NGX_OK;
    }
    if (had && in == nullptr) {
        return NGX_OK;           // substituting: nothing to pass on yet
    }
    return next_body_filter(r, in);
}

}  // namespace

void cache_filters_init()
{
    next_targeted_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = targeted_filter;
    next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = header_filter;
    next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = body_filter;
}

}  // namespace fly
