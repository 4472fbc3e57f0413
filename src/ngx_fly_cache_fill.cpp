// fly-edge nginx shell: the cache's fill side.  The header filter decides
// whether the response may be stored (RFC 9111, in the core) and
// invalidates on successful unsafe requests; the body filter copies the
// body as it streams to the client, and when it is complete one SET
// writes it to the region's Redis.  The lookup side is
// ngx_fly_cache_lookup.cpp.
#include "ngx_fly_cache.hpp"
#include "ngx_fly_redis.hpp"
#include "core/cache_entry.hpp"

#include <exception>
#include <string>

namespace fly {

namespace {

ngx_http_output_header_filter_pt next_header_filter;
ngx_http_output_header_filter_pt next_targeted_filter;
ngx_http_output_body_filter_pt next_body_filter;

// Gathers what the core's store rules need from the response headers,
// and the origin's Date when it is valid (else `date` stays empty).
void response_facts(ngx_http_request_t *r, LocConf *lcf,
                    core::ResponseFacts &f, std::string &vary,
                    std::string &connection, std::string_view &date)
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
        } else if (core::iequals(k, "Expires")) {
            f.has_expires = true;
            f.expires_valid = core::parse_http_date(v, f.expires);
        } else if (core::iequals(k, "Date")) {
            if (date.empty() && core::parse_http_date(v, f.date)) {
                f.has_date = true;
                date = v;
            }
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

    // proxy_pass consumes the origin's Date and Connection headers.
    if (r->upstream != nullptr) {
        ngx_http_upstream_headers_in_t &u = r->upstream->headers_in;
        if (!f.has_date && u.date != nullptr
            && core::parse_http_date(view(u.date->value), f.date))
        {
            f.has_date = true;
            date = view(u.date->value);
        }
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

// Starts the capture when the response may be stored.
void begin_store(ngx_http_request_t *r, LocConf *lcf, CacheCtx *cc)
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
    std::string_view date;
    response_facts(r, lcf, f, vary, connection, date);

    core::CachePolicy policy;
    if (lcf->cache_valid != nullptr) {
        policy.valid = static_cast<core::ValidRule *>(lcf->cache_valid->elts);
        policy.nvalid = lcf->cache_valid->nelts;
    }
    policy.min_ttl = lcf->cache_min_ttl;
    policy.max_ttl = lcf->cache_max_ttl;
    policy.ignore_set_cookie = lcf->cache_ignore_set_cookie == 1;

    core::StoreDecision d = core::decide_store(f, policy);
    if (d.verdict != core::StoreVerdict::store) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly cache: not storing: %s",
                       std::string(core::verdict_name(d.verdict)).c_str());
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

    if (!core::begin_entry(meta, hdrs, n, cc->entry)) {
        return;
    }
    cc->prefix_len = cc->entry.size();
    if (r->headers_out.content_length_n > 0) {
        cc->entry.reserve(cc->prefix_len + r->headers_out.content_length_n);
    }
    cc->ttl = d.ttl;
    cc->capturing = true;
    // The copy filter, which runs before the body filter, then hands it
    // memory buffers only: a response spilled to a temporary file is
    // read back there, as for gzip or ssi (through aio when configured).
    r->filter_need_in_memory = 1;
}

// RFC 9111 4.4: a successful unsafe request invalidates the stored
// response for its target.  The delete goes to the primary region's
// Redis, whose replication carries it to every region (removing fills
// that replicas made locally too); here also when this region's Redis is
// another.  Deleting the base key drops a Vary marker: the next marker
// has a new generation, so no variant stored before is reached again.
void invalidate(ngx_http_request_t *r, LocConf *lcf)
{
    MainConf *mcf = main_conf(r);
    ngx_str_t configured;
    std::string key;
    if (mcf->redis_primary_client == nullptr
        || ngx_http_complex_value(r, lcf->cache_key, &configured) != NGX_OK
        || !core::build_key(view(configured), key))
    {
        return;
    }
    // A plain DEL of a key the primary does not hold is not replicated,
    // and replicas may hold region-local fills of it: SET then DEL is
    // (Redis replicates a script's effects), so every replica drops it.
    static const char script[] =
        "redis.call('SET', KEYS[1], '') return redis.call('DEL', KEYS[1])";
    const char *argv[4] = {"EVAL", script, "1", key.data()};
    size_t argvlen[4] = {4, sizeof(script) - 1, 1, key.size()};
    if (mcf->redis_primary_client->command(4, argv, argvlen, nullptr, nullptr)
        == nullptr)
    {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly cache: primary Redis unavailable, not invalidated");
    }
    if (mcf->redis_client != mcf->redis_primary_client) {
        const char *del[2] = {"DEL", key.data()};
        size_t dellen[2] = {3, key.size()};
        mcf->redis_client->command(2, del, dellen, nullptr, nullptr);
    }
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: invalidate \"%s\"", key.c_str());
}

constexpr ngx_uint_t kUnsafeMethods =
    NGX_HTTP_POST | NGX_HTTP_PUT | NGX_HTTP_DELETE | NGX_HTTP_PATCH
    | NGX_HTTP_MKCOL | NGX_HTTP_COPY | NGX_HTTP_MOVE | NGX_HTTP_PROPPATCH
    | NGX_HTTP_LOCK | NGX_HTTP_UNLOCK;

ngx_int_t header_filter(ngx_http_request_t *r) noexcept
{
    if (r == r->main && (r->method & kUnsafeMethods)
        && r->headers_out.status >= 200 && r->headers_out.status < 400)
    {
        LocConf *lcf = loc_conf(r);
        if (lcf->cache) {
            try {
                invalidate(r, lcf);
            } catch (const std::exception &e) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "fly_cache: %s; not invalidated", e.what());
            }
        }
        return next_header_filter(r);
    }

    RequestCtx *ctx = r == r->main ? get_ctx(r) : nullptr;
    CacheCtx *cc = ctx ? ctx->cache : nullptr;
    if (cc == nullptr || ctx->cache_status == CacheStatus::hit) {
        return next_header_filter(r);
    }

    LocConf *lcf = loc_conf(r);
    if (!add_status_header(r, lcf, ctx->cache_status)) {
        return NGX_ERROR;
    }
    if (cc->want_store && !cc->capturing) {
        if (r->uri_changes != cc->uri_changes) {
            // An internal redirect since the lookup (error_page, try_files,
            // X-Accel-Redirect, a named location): this is another
            // location's response, not the one the key stands for.
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "fly cache: not storing: internal redirect "
                           "since the lookup");
        } else {
            try {
                begin_store(r, lcf, cc);
            } catch (const std::exception &e) {
                cc->capturing = false;
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "fly_cache: %s; not storing", e.what());
            }
        }
        cc->want_store = false;
    }
    return next_header_filter(r);
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

void stop_capture(CacheCtx *cc)
{
    cc->capturing = false;
    std::string().swap(cc->entry);
}

void send_set(ngx_http_request_t *r, const std::string &key,
              const std::string &value, int64_t ttl)
{
    MainConf *mcf = main_conf(r);
    char ttlbuf[24];
    int ttllen = snprintf(ttlbuf, sizeof(ttlbuf), "%lld",
                          static_cast<long long>(ttl));
    const char *argv[5] = {"SET", key.data(), value.data(), "EX", ttlbuf};
    size_t argvlen[5] = {3, key.size(), value.size(), 2,
                         static_cast<size_t>(ttllen)};
    if (mcf->redis_client->command(5, argv, argvlen, nullptr, nullptr)
        == nullptr)
    {
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

    if (cc->vary.empty()) {
        send_set(r, cc->key, cc->entry, cc->ttl);
    } else {
        core::EntryMeta meta;
        meta.flags = core::kEntryVaryMarker;
        meta.stored = ngx_time();
        meta.ttl = static_cast<uint32_t>(cc->ttl);
        core::EntryHeader h = {"Vary", cc->vary};
        std::string marker;
        if (!cc->new_marker) {
            send_set(r, cc->variant_key, cc->entry, cc->ttl);
        } else if (core::begin_entry(meta, &h, 1, marker)) {
            size_t plen = marker.size();
            marker.append(cc->generation);
            core::finish_entry(marker, plen);
            send_set(r, cc->key, marker, cc->ttl);
            send_set(r, cc->variant_key, cc->entry, cc->ttl);
        }
    }
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: stored %uz bytes for %L s%s", cc->entry.size(),
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

ngx_int_t body_filter(ngx_http_request_t *r, ngx_chain_t *in) noexcept
{
    RequestCtx *ctx = r == r->main ? get_ctx(r) : nullptr;
    CacheCtx *cc = ctx ? ctx->cache : nullptr;
    if (cc == nullptr || !cc->capturing || in == nullptr) {
        return next_body_filter(r, in);
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
            if (cl->buf->last_buf) {
                finish_store(r, cc);
                break;
            }
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_cache: %s; not storing", e.what());
        stop_capture(cc);
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
