// fly-edge nginx shell: write routing.  A rewrite phase handler (run
// before the rewrite module's own, so before `return`) asks
// the core whether this request belongs to the primary region and, if
// so, answers with fly-replay (Fly's proxy replays it there), forwards
// it through a named location, or refuses it when replaying would loop
// or cannot work.  A header filter sets the sticky read-your-writes
// cookie on writes that pass in the primary region, and, in a replica
// region, replaces an app's answer whose status is in
// fly_replay_on_status by a replay (the body filter then drops the
// app's body, which the upstream still reads to its end).
#include "ngx_fly.hpp"
#include "ngx_fly_consistency.hpp"
#include "core/http_text.hpp"

#include <exception>
#include <string>

namespace fly {

bool request_cookie(ngx_http_request_t *r, std::string_view name,
                    std::string_view &value)
{
#if defined(nginx_version) && nginx_version >= 1023000
    for (ngx_table_elt_t *h = r->headers_in.cookie; h; h = h->next) {
        if (core::find_cookie(view(h->value), name, value)) {
            return true;
        }
    }
#else
    auto **hs = static_cast<ngx_table_elt_t **>(r->headers_in.cookies.elts);
    for (ngx_uint_t i = 0; i < r->headers_in.cookies.nelts; i++) {
        if (core::find_cookie(view(hs[i]->value), name, value)) {
            return true;
        }
    }
#endif
    return false;
}

namespace {

using core::ReplayAction;

ngx_http_output_header_filter_pt next_header_filter;
ngx_http_output_body_filter_pt next_body_filter;

// Is the request's method in fly_replay_methods?
bool is_replay_method(ngx_http_request_t *r, const LocConf *lcf)
{
    core::MethodSet set;
    set.bits = static_cast<uint32_t>(lcf->replay_methods);
    if (lcf->replay_method_names != nullptr) {
        set.names = static_cast<const std::string_view *>(
            lcf->replay_method_names->elts);
        set.nnames = lcf->replay_method_names->nelts;
    }
    return core::method_in(set, method_bit(r->method), view(r->method_name));
}

// The live fly-replay-until cookie, if the client has one.
bool sticky_live(ngx_http_request_t *r, bool log)
{
    std::string_view value;
    if (!request_cookie(r, core::kStickyCookie, value)) {
        return false;
    }
    int64_t until;
    if (!core::parse_sticky_until(value, until)) {
        if (log) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "fly_replay: ignoring malformed %s cookie",
                          core::kStickyCookie.data());
        }
        return false;
    }
    return until > ngx_time();
}

// A plain-text answer with no request body read.
ngx_int_t send_text(ngx_http_request_t *r, ngx_uint_t status,
                    const char *text, bool retry_after)
{
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    if (retry_after && push_header(r, "Retry-After", "1") == nullptr) {
        return NGX_ERROR;
    }
    return send_small_response(r, status, "text/plain", text);
}

// Does any value of a fly_replay_bypass / fly_replay_when list hold?
bool any_value(ngx_http_request_t *r, ngx_array_t *predicates)
{
    return predicates != nullptr
           && ngx_http_test_predicates(r, predicates) == NGX_DECLINED;
}

// What the core's decisions need from the request and the location.
// `log`: report malformed fly-replay-src and cookie values (the phase
// handler does, once per request).
void request_facts(ngx_http_request_t *r, const LocConf *lcf,
                   const MainConf *mcf, core::ReplayInput &in,
                   core::ReplaySrc &parsed, bool log)
{
    in.mode = static_cast<core::ReplayMode>(lcf->replay);
    in.is_primary = mcf->is_primary == 1;
    in.method_matches = is_replay_method(r, lcf);
    in.bypass = any_value(r, lcf->replay_bypass);
    in.when = any_value(r, lcf->replay_when);

    ngx_table_elt_t *src = nullptr;
    for_each_header(r->headers_in.headers, [&](ngx_table_elt_t &h) {
        if (core::iequals(view(h.key), "fly-replay-src")) {
            src = &h;
        } else if (core::iequals(view(h.key), "fly-replay-failed")) {
            in.replay_failed = true;
        }
    });
    if (src != nullptr) {
        if (core::parse_replay_src(view(src->value), parsed)) {
            in.replay_src = true;
        } else if (log) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "fly_replay: ignoring malformed fly-replay-src "
                          "\"%V\"", &src->value);
        }
    }
    in.sticky = sticky_live(r, log);
    in.has_body = r->headers_in.content_length_n > 0 || r->headers_in.chunked;
    in.length_known = !r->headers_in.chunked;
    in.content_length = r->headers_in.content_length_n;
    in.max_body = static_cast<int64_t>(lcf->replay_max_body);
    in.has_forward = lcf->replay_forward.len > 0;
    in.forward_always = lcf->replay_forward_always == 1;
}

// Forgets every response header set so far (the app's), the way nginx
// starts an error page afresh: the header lists' entries are hidden,
// the fields after them (status, the header pointers, content type,
// lengths, times) cleared.
void clear_response(ngx_http_request_t *r)
{
    ngx_http_headers_out_t &o = r->headers_out;
    for_each_header(o.headers, [](ngx_table_elt_t &h) { h.hash = 0; });
    for_each_header(o.trailers, [](ngx_table_elt_t &h) { h.hash = 0; });
    ngx_memzero(&o.status, sizeof(ngx_http_headers_out_t)
                               - offsetof(ngx_http_headers_out_t, status));
    o.content_length_n = -1;
    o.last_modified_time = -1;
    r->allow_ranges = 0;
}

// Makes the response the fly-replay answer: status, header, no body.
// `replace`: first forget the response headers set so far.  When it
// throws (no memory for the value), the response is left as it was.
ngx_int_t set_replay_answer(ngx_http_request_t *r, const MainConf *mcf,
                            const LocConf *lcf, RequestCtx *ctx,
                            std::string_view state, bool replace)
{
    std::string value = core::replay_header(view(mcf->primary_region), state);

    u_char *v = pool_dup(r->pool, value);
    if (v == nullptr) {
        return NGX_ERROR;
    }
    if (replace) {
        clear_response(r);
    }
    if (push_header(r, "fly-replay",
                    {reinterpret_cast<char *>(v), value.size()}) == nullptr)
    {
        return NGX_ERROR;
    }

    ctx->replay_state.data = v + (value.size() - state.size());
    ctx->replay_state.len = state.size();

    r->headers_out.status = lcf->replay_status;
    r->headers_out.content_length_n = 0;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly replay: %V -> \"%s\"", &r->method_name, value.c_str());
    return NGX_OK;
}

// The fly-replay answer of the phase handler.
ngx_int_t send_replay(ngx_http_request_t *r, MainConf *mcf, LocConf *lcf,
                      RequestCtx *ctx, std::string_view state)
{
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    if (set_replay_answer(r, mcf, lcf, ctx, state, false) != NGX_OK) {
        return NGX_ERROR;
    }
    r->header_only = 1;
    return ngx_http_send_header(r);
}

// Read your writes (ngx_fly_consistency.cpp) for a request that is not
// replayed for its own sake: served here, parked, or replayed with
// state=lsn / state=lag.
ngx_int_t consistency(ngx_http_request_t *r, MainConf *mcf, LocConf *lcf,
                      bool can_replay)
{
    std::string_view state;
    ngx_int_t rc = consistency_phase(r, can_replay, &state);
    if (rc != NGX_OK) {
        return rc;                       // NGX_DECLINED or NGX_DONE
    }
    RequestCtx *ctx = create_ctx(r);
    if (ctx == nullptr) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ctx->replay_action = ReplayAction::replay;
    return send_replay(r, mcf, lcf, ctx, state);
}

ngx_int_t handle(ngx_http_request_t *r)
{
    if (r != r->main) {
        return NGX_DECLINED;
    }
    LocConf *lcf = loc_conf(r);
    MainConf *mcf = main_conf(r);
    bool replay = lcf->replay != static_cast<ngx_uint_t>(core::ReplayMode::off);
    bool consistent =
        mcf->consistency != nullptr
        && (lcf->consistency != static_cast<ngx_uint_t>(core::ConsistencyMode::off)
            || lcf->replica_max_lag >= 0);
    if (!replay && !consistent) {
        return NGX_DECLINED;
    }
    if (mcf->is_primary == 1) {
        if (consistent) {
            consistency_primary_phase(r);
        }
        return NGX_DECLINED;
    }

    RequestCtx *ctx = get_ctx(r);
    if (ctx != nullptr && ctx->replay_action == ReplayAction::forward) {
        return NGX_DECLINED;  // already on its way through the forward location
    }
    if (ctx != nullptr && ctx->consistency != 0) {
        return consistency(r, mcf, lcf, false);  // decided, or parked
    }

    core::ReplayInput in;
    core::ReplaySrc parsed;
    request_facts(r, lcf, mcf, in, parsed, true);

    core::ReplayDecision d;
    if (replay) {
        d = core::decide_replay(in);
    }
    if (d.action == ReplayAction::pass) {
        return consistent ? consistency(r, mcf, lcf, core::replay_possible(in))
                          : NGX_DECLINED;
    }

    if (ctx == nullptr) {
        ctx = create_ctx(r);
        if (ctx == nullptr) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    ctx->replay_action = d.action;

    switch (d.action) {
    case ReplayAction::replay:
        return send_replay(r, mcf, lcf, ctx, d.state);

    case ReplayAction::loop:
        if (in.replay_failed) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "fly_replay: Fly could not replay this request to "
                          "the primary region \"%V\" (fly-replay-failed), "
                          "and this region \"%V\" is not the primary",
                          &mcf->primary_region, &mcf->region);
            return send_text(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                             "The primary region could not be reached; "
                             "try again shortly.\n", true);
        }
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_replay: request replayed from region \"%*s\" to "
                      "region \"%V\", which is not the primary region "
                      "\"%V\": not replaying it again",
                      parsed.region.size(), parsed.region.data(),
                      &mcf->region, &mcf->primary_region);
        return send_text(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                         "This request was already replayed once and this "
                         "region is not the primary; try again shortly.\n",
                         true);

    case ReplayAction::too_large:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fly_replay: body of %O bytes is over "
                      "fly_replay_max_body %uz and no fly_replay_forward "
                      "is set", r->headers_in.content_length_n,
                      lcf->replay_max_body);
        return send_text(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                         "This request must be handled by the primary region, "
                         "and its body is too large to be replayed there.\n",
                         false);

    case ReplayAction::no_length:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fly_replay: a body without Content-Length cannot be "
                      "replayed and no fly_replay_forward is set");
        return send_text(r, NGX_HTTP_LENGTH_REQUIRED,
                         "This request must be handled by the primary region; "
                         "send it with a Content-Length to be replayed.\n",
                         false);

    case ReplayAction::forward:
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "fly replay: forwarding through \"%V\"",
                       &lcf->replay_forward);
        (void) ngx_http_named_location(r, &lcf->replay_forward);
        ngx_http_finalize_request(r, NGX_DONE);
        return NGX_DONE;

    case ReplayAction::pass:
        break;
    }
    return NGX_DECLINED;
}

ngx_int_t handler(ngx_http_request_t *r) noexcept
{
    try {
        ngx_int_t rc = handle(r);
        if (rc == NGX_DECLINED || rc == NGX_DONE) {
            return rc;
        }
        // The answer was sent (or failed): end the request here.
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_replay: %s; passing the request", e.what());
    } catch (...) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_replay: unknown error; passing the request");
    }
    return NGX_DECLINED;
}

// ---- fly_replay_on_status ---------------------------------------------

bool status_listed(const ngx_array_t *codes, ngx_uint_t status)
{
    auto *c = static_cast<const ngx_uint_t *>(codes->elts);
    for (ngx_uint_t i = 0; i < codes->nelts; i++) {
        if (c[i] == status) {
            return true;
        }
    }
    return false;
}

// Is the status about to be sent the app's own?  An upstream's answer
// (proxy_pass, fastcgi_pass, ...), not one nginx made (a 502 when the
// app cannot be reached, `return`), not one from a cache: a HIT is not
// the app answering now.  After error_page for an app's status
// (proxy_intercept_errors), the status is still the app's.
bool from_app(ngx_http_request_t *r, const RequestCtx *ctx)
{
    if (ctx != nullptr
        && (ctx->cache_status == CacheStatus::hit
            || ctx->cache_status == CacheStatus::stale
            || ctx->cache_status == CacheStatus::updating))
    {
        return false;
    }
    ngx_http_upstream_t *u = r->upstream;
    if (u == nullptr || u->headers_in.status_n != r->headers_out.status) {
        return false;
    }
#if (NGX_HTTP_CACHE)
    if (u->cache_status == NGX_HTTP_CACHE_HIT
        || u->cache_status == NGX_HTTP_CACHE_STALE
        || u->cache_status == NGX_HTTP_CACHE_UPDATING
        || u->cache_status == NGX_HTTP_CACHE_REVALIDATED)
    {
        return false;
    }
#endif
    return true;
}

bool has_fly_replay(ngx_http_request_t *r)
{
    bool found = false;
    for_each_header(r->headers_out.headers, [&](ngx_table_elt_t &h) {
        found = found || core::iequals(view(h.key), "fly-replay");
    });
    return found;
}

// In a replica region: replaces an app's answer whose status is listed
// by the replay answer, before anything of it is sent.  NGX_OK when it
// did, NGX_DECLINED when the app's answer passes, NGX_ERROR.
ngx_int_t capture(ngx_http_request_t *r, LocConf *lcf, MainConf *mcf)
{
    ngx_uint_t status = r->headers_out.status;
    if (!status_listed(lcf->replay_on_status, status)) {
        return NGX_DECLINED;
    }

    RequestCtx *ctx = get_ctx(r);
    core::CaptureInput c;
    c.status_listed = true;
    c.from_app = from_app(r, ctx);
    c.app_replays = has_fly_replay(r);
    c.answered_here = ctx != nullptr && ctx->replay_action != ReplayAction::pass;
    core::ReplayInput in;
    core::ReplaySrc parsed;
    request_facts(r, lcf, mcf, in, parsed, false);

    core::ReplayDecision d = core::decide_capture(in, c);
    if (d.action == ReplayAction::too_large || d.action == ReplayAction::no_length) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fly_replay_on_status: the app answered %ui, but this "
                      "request's body %s, so Fly cannot replay it: the "
                      "app's answer is sent", status,
                      d.action == ReplayAction::no_length
                          ? "has no Content-Length"
                          : "is over fly_replay_max_body");
        return NGX_DECLINED;
    }
    if (d.action != ReplayAction::replay) {
        return NGX_DECLINED;
    }

    if (ctx == nullptr) {
        ctx = create_ctx(r);
        if (ctx == nullptr) {
            return NGX_ERROR;
        }
    }
    if (set_replay_answer(r, mcf, lcf, ctx, d.state, true) != NGX_OK) {
        return NGX_ERROR;
    }
    ctx->replay_action = ReplayAction::replay;
    ctx->replay_captured = true;
    // The answer is no longer the app's: the cache neither stores it
    // nor adds its status header (its fill filter, which ran before
    // this one, finds no state and lets the body pass), and neither
    // does proxy_cache (the upstream decides after sending the header).
    ctx->cache = nullptr;
    if (r->upstream != nullptr) {
        r->upstream->cacheable = 0;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "fly_replay_on_status: the app answered %ui in region "
                  "\"%V\": replaying to the primary region \"%V\"",
                  status, &mcf->region, &mcf->primary_region);
    return NGX_OK;
}

// Drops the body of an answer that capture() replaced: every buffer is
// marked sent, so the upstream reads the app's body to its end (its
// connection stays usable for keepalive).  The replay answer itself is
// flushed at once; the request ends with the app's body.
ngx_int_t body_filter(ngx_http_request_t *r, ngx_chain_t *in) noexcept
{
    if (in == nullptr || r != r->main || loc_conf(r)->replay_on_status == nullptr) {
        return next_body_filter(r, in);
    }
    RequestCtx *ctx = get_ctx(r);
    if (ctx == nullptr || !ctx->replay_captured) {
        return next_body_filter(r, in);
    }

    bool last = false;
    for (ngx_chain_t *cl = in; cl; cl = cl->next) {
        ngx_buf_t *b = cl->buf;
        b->pos = b->last;
        if (b->in_file) {
            b->file_pos = b->file_last;
        }
        last = last || b->last_buf;
    }
    if (!last && ctx->replay_flushed) {
        return NGX_OK;
    }
    ctx->replay_flushed = true;

    auto *b = static_cast<ngx_buf_t *>(ngx_calloc_buf(r->pool));
    if (b == nullptr) {
        return NGX_ERROR;
    }
    if (last) {
        b->last_buf = 1;
        b->last_in_chain = 1;
    } else {
        b->flush = 1;
    }
    ngx_chain_t out = {b, nullptr};
    return next_body_filter(r, &out);
}

// Sets the sticky cookie on a write that passed in the primary region;
// in a replica region, fly_replay_on_status.
ngx_int_t header_filter(ngx_http_request_t *r) noexcept
{
    LocConf *lcf = loc_conf(r);
    if (r != r->main
        || lcf->replay == static_cast<ngx_uint_t>(core::ReplayMode::off))
    {
        return next_header_filter(r);
    }

    MainConf *mcf = main_conf(r);
    if (mcf->is_primary != 1) {
        if (lcf->replay_on_status != nullptr) {
            try {
                if (capture(r, lcf, mcf) == NGX_ERROR) {
                    return NGX_ERROR;
                }
            } catch (const std::exception &e) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "fly_replay_on_status: %s; the app's answer "
                              "is sent", e.what());
            }
        }
        return next_header_filter(r);
    }

    if (lcf->replay_sticky == 0
        || r->headers_out.status < 200 || r->headers_out.status >= 400
        || !is_replay_method(r, lcf))
    {
        return next_header_filter(r);
    }

    try {
        // The clock now, not nginx's cached time, which may lag behind:
        // the window must not start before the write was answered.
        struct timeval tv;
        ngx_gettimeofday(&tv);
        std::string c = core::sticky_cookie(
            static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec,
            lcf->replay_sticky);
        u_char *p = pool_dup(r->pool, c);
        if (p == nullptr
            || push_header(r, "Set-Cookie",
                           {reinterpret_cast<char *>(p), c.size()}) == nullptr)
        {
            return NGX_ERROR;
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_replay_sticky: %s", e.what());
    }
    return next_header_filter(r);
}

}  // namespace

bool replay_write(ngx_http_request_t *r, const LocConf *lcf)
{
    return is_replay_method(r, lcf) || any_value(r, lcf->replay_when);
}

namespace {

// A location where fly_replay_forward applies: the server it is in (the
// one whose named locations ngx_http_named_location() searches) and
// where the directive was written.
struct ForwardUse {
    ngx_http_core_srv_conf_t *server;
    ngx_str_t name;
    ngx_str_t file;
    ngx_uint_t line;
};

bool has_named_location(const ngx_http_core_srv_conf_t *cscf,
                        const ngx_str_t &name)
{
    if (cscf->named_locations == nullptr) {
        return false;
    }
    for (ngx_http_core_loc_conf_t **l = cscf->named_locations; *l; l++) {
        if (view((*l)->name) == view(name)) {
            return true;
        }
    }
    return false;
}

// Postconfiguration, when every server's named locations are known.
ngx_int_t check_forward_uses(ngx_conf_t *cf)
{
    MainConf *mcf = main_conf(cf);
    if (mcf->forward_uses == nullptr) {
        return NGX_OK;
    }
    auto *uses = static_cast<ForwardUse *>(mcf->forward_uses->elts);
    for (ngx_uint_t i = 0; i < mcf->forward_uses->nelts; i++) {
        const ForwardUse &u = uses[i];
        if (!has_named_location(u.server, u.name)) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "no location \"%V\" in server \"%V\", for "
                          "\"fly_replay_forward\" in %V:%ui",
                          &u.name, &u.server->server_name, &u.file, u.line);
            return NGX_ERROR;
        }
    }
    return NGX_OK;
}

}  // namespace

// nginx merges one server's locations at a time, with cf->ctx holding
// that server's configuration.
bool remember_forward_use(ngx_conf_t *cf, const LocConf *conf)
{
    MainConf *mcf = main_conf(cf);
    if (mcf->forward_uses == nullptr) {
        mcf->forward_uses = ngx_array_create(cf->pool, 4, sizeof(ForwardUse));
        if (mcf->forward_uses == nullptr) {
            return false;
        }
    }
    auto *u = static_cast<ForwardUse *>(ngx_array_push(mcf->forward_uses));
    if (u == nullptr) {
        return false;
    }
    *u = {static_cast<ngx_http_core_srv_conf_t *>(
              ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module)),
          conf->replay_forward, conf->replay_forward_file,
          conf->replay_forward_line};
    return true;
}

ngx_int_t replay_init(ngx_conf_t *cf)
{
    if (check_forward_uses(cf) != NGX_OK
        || add_phase_handler(cf, NGX_HTTP_REWRITE_PHASE, handler) != NGX_OK)
    {
        return NGX_ERROR;
    }

    next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = header_filter;
    next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = body_filter;
    return NGX_OK;
}

}  // namespace fly
