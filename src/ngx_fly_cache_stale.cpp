// fly-edge nginx shell: what the cache does with an expired entry
// (core/freshness.hpp has the rules).  At the lookup, an entry with a
// validator gets our conditional request (If-None-Match /
// If-Modified-Since added to the request the location's content handler
// sends on, e.g. proxy_pass) and the entry stays in memory while the app
// answers.  In the header filter, before the fill decides:
//   - a 304 to our conditional request: the stored headers updated by the
//     304's (RFC 9111 4.3.4) and the stored body go to the client
//     (REVALIDATED), and the fill stores the updated entry as it stores a
//     200 (its fenced fill script, its new TTL);
//   - an app failure (nginx's 502/504 for error/timeout, or the app's
//     500/502/503/504): the stale entry (STALE) within its stale window,
//     or, for must-revalidate when the app cannot be reached, a 504.
// The app's own body is then consumed in the body filter and the stored
// one sent in its place.
#include "ngx_fly_cache.hpp"
#include "core/cache_rules.hpp"
#include "core/freshness.hpp"

#include <cstdlib>
#include <cstring>
#include <string>

namespace fly {

namespace {

time_t log_slot_stale;
time_t log_slot_background;

constexpr core::StaleCause kCauses[] = {
    core::StaleCause::error,    core::StaleCause::timeout,
    core::StaleCause::http_500, core::StaleCause::http_502,
    core::StaleCause::http_503, core::StaleCause::http_504,
};

core::StaleConfig stale_config(LocConf *lcf)
{
    core::StaleConfig c;
    c.use_stale = static_cast<uint32_t>(lcf->cache_use_stale);
    c.stale = lcf->cache_stale;
    c.revalidate = lcf->cache_revalidate != 0;
    return c;
}

// Adds a header to the request the content handler sends on.  Only the
// list gets it: r->headers_in.if_none_match and the like stay the
// client's (nullptr here), so nothing takes ours for the client's.
bool add_request_header(ngx_http_request_t *r, std::string_view name,
                        std::string_view value)
{
    auto *h = static_cast<ngx_table_elt_t *>(ngx_list_push(&r->headers_in.headers));
    if (h == nullptr) {
        return false;
    }
    auto *lc = static_cast<u_char *>(ngx_pnalloc(r->pool, name.size()));
    if (lc == nullptr) {
        return false;
    }
    ngx_strlow(lc, (u_char *) name.data(), name.size());
    h->key.data = (u_char *) name.data();
    h->key.len = name.size();
    h->value.data = (u_char *) value.data();
    h->value.len = value.size();
    h->lowcase_key = lc;
    h->hash = ngx_hash_key(lc, name.size());
    return true;
}

// r->headers_out as if nothing had been set (as nginx cleans it before
// an error page).
bool clean_headers_out(ngx_http_request_t *r)
{
    ngx_http_headers_out_t &o = r->headers_out;
    if (ngx_list_init(&o.headers, r->pool, 20, sizeof(ngx_table_elt_t)) != NGX_OK) {
        return false;
    }
    o.status_line.len = 0;
    o.server = nullptr;
    o.date = nullptr;
    o.content_length = nullptr;
    o.content_encoding = nullptr;
    o.location = nullptr;
    o.refresh = nullptr;
    o.last_modified = nullptr;
    o.content_range = nullptr;
    o.accept_ranges = nullptr;
    o.www_authenticate = nullptr;
    o.expires = nullptr;
    o.etag = nullptr;
    o.override_charset = nullptr;
    o.content_type_len = 0;
    o.content_type.len = 0;
    o.content_type.data = nullptr;
    o.charset.len = 0;
    o.content_type_lowcase = nullptr;
    o.content_type_hash = 0;
    o.cache_control.nelts = 0;
    o.link.nelts = 0;
    o.content_length_n = -1;
    o.content_offset = 0;
    o.date_time = 0;
    o.last_modified_time = -1;
    return true;
}

void begin_substitute(CacheCtx *cc, std::string_view body)
{
    cc->substituting = true;
    cc->substitute_sent = false;
    cc->substitute = body;
}

// The stored response `e` (its headers possibly updated) in place of the
// app's, with status `s`; `with_age` for a stale answer.
ngx_int_t serve_stored(ngx_http_request_t *r, RequestCtx *ctx, CacheCtx *cc,
                       const core::EntryView &e, CacheStatus s, bool with_age)
{
    if (!clean_headers_out(r)) {
        return NGX_ERROR;
    }
    ctx->cache_status = s;
    bool not_modified = false;
    ngx_int_t rc = stored_response_headers(r, e, s, with_age, not_modified);
    if (rc == NGX_HTTP_PRECONDITION_FAILED) {
        r->headers_out.status = NGX_HTTP_PRECONDITION_FAILED;
        r->headers_out.content_length_n = 0;
        begin_substitute(cc, {});
        return NGX_OK;
    }
    if (rc != NGX_OK) {
        return rc;
    }
    begin_substitute(cc, not_modified ? std::string_view() : e.body);
    return NGX_OK;
}

// A 304 to our conditional request: the stored headers updated by its own
// (the fill then stores the result); the stored body.
ngx_int_t revalidated(ngx_http_request_t *r, RequestCtx *ctx, CacheCtx *cc,
                      const core::EntryView &stored)
{
    core::EntryHeader fresh[core::kEntryMaxHeaders];
    size_t nfresh = 0;
    bool too_many = false;
    bool has_date = false;
    std::string connection;
    for_each_header(r->headers_out.headers, [&](ngx_table_elt_t &h) {
        std::string_view k = view(h.key);
        if (core::iequals(k, "Connection")) {
            if (!connection.empty()) {
                connection.append(", ");
            }
            connection.append(view(h.value));
        }
        if (core::iequals(k, "Server")
            || (loc_conf(r)->cache_status_header.len
                && core::iequals(k, view(loc_conf(r)->cache_status_header))))
        {
            return;
        }
        has_date = has_date || core::iequals(k, "Date");
        if (nfresh == core::kEntryMaxHeaders) {
            too_many = true;
            return;
        }
        fresh[nfresh++] = {k, view(h.value)};
    });
    if (r->upstream != nullptr) {
        // proxy_pass keeps the origin's Date and Connection apart
        ngx_http_upstream_headers_in_t &u = r->upstream->headers_in;
        if (u.connection != nullptr) {
            if (!connection.empty()) {
                connection.append(", ");
            }
            connection.append(view(u.connection->value));
        }
        if (!has_date && u.date != nullptr && nfresh < core::kEntryMaxHeaders) {
            fresh[nfresh++] = {"Date", view(u.date->value)};
        }
    }

    core::EntryView e = stored;
    size_t n = 0;
    if (too_many
        || !core::merge_304(stored.headers, stored.nheaders, fresh, nfresh,
                            connection, e.headers, core::kEntryMaxHeaders, n))
    {
        // served as it was; not stored again
        cc->want_store = false;
        n = stored.nheaders;
        for (size_t i = 0; i < n; i++) {
            e.headers[i] = stored.headers[i];
        }
    }
    e.nheaders = n;
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: 304, %uz headers updated into %uz",
                   nfresh, n);
    // The client sent no precondition (or we would not have asked ours).
    return serve_stored(r, ctx, cc, e, CacheStatus::revalidated, false);
}

// must-revalidate and the app out of reach: a 504 with no body.
ngx_int_t gateway_timeout(ngx_http_request_t *r, LocConf *lcf,
                          RequestCtx *ctx, CacheCtx *cc)
{
    if (!clean_headers_out(r)) {
        return NGX_ERROR;
    }
    cc->want_store = false;
    r->headers_out.status = NGX_HTTP_GATEWAY_TIME_OUT;
    r->headers_out.content_length_n = 0;
    begin_substitute(cc, {});
    return add_status_header(r, lcf, ctx->cache_status) ? NGX_OK : NGX_ERROR;
}

std::string_view cause_name(core::StaleCause c)
{
    switch (c) {
    case core::StaleCause::error:    return "error";
    case core::StaleCause::timeout:  return "timeout";
    case core::StaleCause::http_500: return "http_500";
    case core::StaleCause::http_502: return "http_502";
    case core::StaleCause::http_503: return "http_503";
    case core::StaleCause::http_504: return "http_504";
    }
    return "";
}

// The background refresh's own list of request headers: the client's
// without its preconditions and ranges (the refresh asks for the whole
// response, or for ours: prepare_expired adds the stored validators).
bool own_request_headers(ngx_http_request_t *sr)
{
    ngx_list_t client = sr->headers_in.headers;     // the main request's
    if (ngx_list_init(&sr->headers_in.headers, sr->pool, 20,
                      sizeof(ngx_table_elt_t)) != NGX_OK)
    {
        return false;
    }
    bool ok = true;
    for_each_header(client, [&](ngx_table_elt_t &h) {
        std::string_view k = view(h.key);
        for (std::string_view skip : {"If-Match", "If-None-Match",
                                      "If-Modified-Since", "If-Unmodified-Since",
                                      "If-Range", "Range"})
        {
            if (core::iequals(k, skip)) {
                return;
            }
        }
        auto *copy = static_cast<ngx_table_elt_t *>(
            ngx_list_push(&sr->headers_in.headers));
        if (copy == nullptr) {
            ok = false;
            return;
        }
        *copy = h;
    });
    ngx_http_headers_in_t &in = sr->headers_in;
    in.if_match = nullptr;
    in.if_none_match = nullptr;
    in.if_modified_since = nullptr;
    in.if_unmodified_since = nullptr;
    in.if_range = nullptr;
    in.range = nullptr;
    return ok;
}

}  // namespace

int64_t entry_keep(LocConf *lcf, const core::EntryMeta &m, bool validators)
{
    return core::keep_seconds(m, stale_config(lcf), validators);
}

bool background_refresh(ngx_http_request_t *r, LocConf *lcf, CacheCtx *cc)
{
    // the subrequest's copy of the entry (its 304 merge, its stale answer)
    size_t len = cc->reply_len;
    auto *copy = static_cast<char *>(std::malloc(len ? len : 1));
    if (copy == nullptr || cc->reply == nullptr) {
        std::free(copy);
        return false;
    }
    std::memcpy(copy, cc->reply, len);
    core::EntryView e;
    if (core::decode_entry(std::string_view(copy, len), e)
        != core::DecodeError::none)
    {
        std::free(copy);
        return false;
    }
    // nginx's proxy_cache_background_update does the same: a clone of the
    // request (same location, from this phase on) whose output nobody
    // waits for; the main request lives until it is done.
    ngx_http_request_t *sr = nullptr;
    auto *sctx = static_cast<RequestCtx *>(ngx_pcalloc(r->pool, sizeof(RequestCtx)));
    if (sctx == nullptr
        || ngx_http_subrequest(r, &r->uri, &r->args, &sr, nullptr,
                               NGX_HTTP_SUBREQUEST_CLONE
                               | NGX_HTTP_SUBREQUEST_BACKGROUND) != NGX_OK
        || sr == nullptr)
    {
        std::free(copy);
        if (log_allowed(&log_slot_background)) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "fly_cache: no background refresh of key \"%*s\" "
                          "(subrequest refused); refreshing in the foreground",
                          (int) cc->key.size(), cc->key.data());
        }
        return false;
    }
    // Its own context (not create_ctx(): that one would find the main
    // request's through the shared pool).
    ngx_http_set_ctx(sr, sctx, ngx_http_fly_edge_module);
    CacheCtx *scc = new_cache_ctx(sr, sctx);
    if (scc == nullptr || !own_request_headers(sr)) {
        // no memory: the subrequest goes to the app, stores nothing and
        // sends nothing (as nginx's header_only); we refresh as well
        std::free(copy);
        sr->header_only = 1;
        return false;
    }
    scc->background = true;
    scc->reply = copy;
    scc->reply_len = len;
    scc->key = cc->key;
    scc->variant_key = cc->variant_key;
    scc->generation = cc->generation;
    scc->lookup_variant = cc->lookup_variant;
    scc->epoch_ok = cc->epoch_ok;
    scc->epoch_str = cc->epoch_str;
    scc->epoch = cc->epoch;
    scc->fence = cc->fence;
    scc->lookup_msec = cc->lookup_msec;
    scc->uri_changes = sr->uri_changes;      // a subrequest's own
    scc->soft_purged = cc->soft_purged;
    scc->lock_tried = true;
    scc->want_store = true;
    sctx->cache_status = CacheStatus::expired;
    prepare_expired(sr, lcf, scc, e);
    // the lock goes with the refresh: released after its fill
    scc->lock_key = std::move(cc->lock_key);
    scc->lock_token = std::move(cc->lock_token);
    scc->lock_held = cc->lock_held;
    cc->lock_held = false;
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: background refresh%s",
                   scc->revalidating ? ", conditional" : "");
    return true;
}

bool updating_allowed(LocConf *lcf, const core::EntryView &e)
{
    return core::may_serve_updating(e.meta, stale_config(lcf), ngx_time());
}

void prepare_expired(ngx_http_request_t *r, LocConf *lcf, CacheCtx *cc,
                     const core::EntryView &e)
{
    core::StaleConfig sc = stale_config(lcf);
    std::string_view etag, last_modified;
    core::entry_validators(e, etag, last_modified);
    ngx_http_headers_in_t &in = r->headers_in;
    bool client_conditional = in.if_match || in.if_none_match
                              || in.if_modified_since || in.if_unmodified_since
                              || in.if_range || in.range;
    bool keep = false;
    if (core::should_revalidate(sc.revalidate, r->method == NGX_HTTP_GET,
                                client_conditional, etag, last_modified)
        && (etag.empty() || add_request_header(r, "If-None-Match", etag))
        && (last_modified.empty()
            || add_request_header(r, "If-Modified-Since", last_modified)))
    {
        cc->revalidating = true;
        keep = true;
    }
    if (e.meta.flags & core::kEntryMustRevalidate) {
        keep = true;                 // for the 504
    }
    for (core::StaleCause c : kCauses) {
        keep = keep || core::may_serve_stale(e.meta, sc, c, ngx_time());
    }
    cc->stale_entry = keep;
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: expired entry%s%s%s",
                   cc->soft_purged ? " (soft purge)" : "",
                   cc->revalidating ? ", revalidating" : "",
                   keep ? ", kept" : "");
}

ngx_int_t substitute_response(ngx_http_request_t *r, LocConf *lcf,
                              RequestCtx *ctx, CacheCtx *cc)
{
    if (!cc->stale_entry || cc->substituting || cc->reply == nullptr
        || r->uri_changes != cc->uri_changes)
    {
        return NGX_OK;
    }
    core::EntryView e;
    if (core::decode_entry(std::string_view(cc->reply, cc->reply_len), e)
        != core::DecodeError::none)
    {
        return NGX_OK;               // it decoded at the lookup
    }

    ngx_uint_t status = r->headers_out.status;
    bool generated = r->err_status != 0;
    if (cc->revalidating && status == NGX_HTTP_NOT_MODIFIED && !generated) {
        return revalidated(r, ctx, cc, e);
    }

    core::StaleCause cause;
    if (!core::failure_cause(static_cast<int>(status), generated, cause)) {
        return NGX_OK;
    }
    if (core::must_answer_504(e.meta, cause)) {
        if (status == NGX_HTTP_GATEWAY_TIME_OUT) {
            return NGX_OK;
        }
        return gateway_timeout(r, lcf, ctx, cc);
    }
    if (!core::may_serve_stale(e.meta, stale_config(lcf), cause, ngx_time())) {
        return NGX_OK;
    }
    if (log_allowed(&log_slot_stale)) {
        std::string_view name = cause_name(cause);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "fly_cache: serving a stale entry of key \"%*s\" "
                      "(%*s, status %ui)", (int) cc->key.size(),
                      cc->key.data(), (int) name.size(), name.data(), status);
    }
    cc->want_store = false;
    return serve_stored(r, ctx, cc, e, CacheStatus::stale, true);
}

ngx_int_t substitute_body(ngx_http_request_t *r, CacheCtx *cc,
                          ngx_chain_t *&in)
{
    bool last = false;
    for (ngx_chain_t *cl = in; cl; cl = cl->next) {
        ngx_buf_t *b = cl->buf;
        last = last || last_of_response(r, b);
        b->pos = b->last;            // consumed: the app's buffers free up
        if (b->in_file) {
            b->file_pos = b->file_last;
        }
    }
    in = nullptr;
    if (!last || cc->substitute_sent) {
        return NGX_OK;
    }
    cc->substitute_sent = true;
    ngx_buf_t *b = static_cast<ngx_buf_t *>(ngx_calloc_buf(r->pool));
    ngx_chain_t *out = ngx_alloc_chain_link(r->pool);
    if (b == nullptr || out == nullptr) {
        return NGX_ERROR;
    }
    if (!cc->substitute.empty()) {
        b->pos = (u_char *) cc->substitute.data();
        b->last = b->pos + cc->substitute.size();
        b->memory = 1;
    }
    b->last_buf = 1;
    b->last_in_chain = 1;
    out->buf = b;
    out->next = nullptr;
    in = out;
    return NGX_OK;
}

}  // namespace fly
