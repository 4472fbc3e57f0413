// fly-edge: the module definition, worker start and stop, and the
// per-request context every part of the shell shares.
#include "ngx_fly.hpp"
#include "ngx_fly_consistency.hpp"
#include "ngx_fly_near.hpp"
#include "ngx_fly_metrics.hpp"
#include "ngx_fly_redis.hpp"

#include <new>

namespace fly {

namespace {

ngx_int_t preconfiguration(ngx_conf_t *cf) noexcept
{
    return add_variables(cf);
}

ngx_int_t postconfiguration(ngx_conf_t *cf) noexcept
{
    // Filters run in the reverse order of their installation: the hold of
    // a write's answer (its LSN) before the cache's invalidation, the
    // cache's fill filter before the one that clears fly-lsn.
    if (replay_init(cf) != NGX_OK || consistency_clear_init(cf) != NGX_OK
        || cache_init(cf) != NGX_OK || consistency_hold_init(cf) != NGX_OK
        || metrics::init(cf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    // The http-level resolver, for Redis host names (merged by now; a
    // resolver with no address is nginx's placeholder for "none").
    auto *mcf = static_cast<MainConf *>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_fly_edge_module));
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
        ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    if (clcf->resolver != nullptr && clcf->resolver->connections.nelts > 0) {
        mcf->resolver = clcf->resolver;
        // nginx leaves the http level's resolver_timeout unset (it is
        // only merged into servers and locations): use nginx's default.
        mcf->resolver_timeout = clcf->resolver_timeout == NGX_CONF_UNSET_MSEC
                                    ? 30000 : clcf->resolver_timeout;
    } else {
        resolve_at_load(cf, mcf->redis);
        resolve_at_load(cf, mcf->redis_primary);
        resolve_pg_at_load(cf, mcf);
    }
    return NGX_OK;
}

ngx_http_module_t module_ctx = {
    preconfiguration,
    postconfiguration,
    create_main_conf,
    init_main_conf,
    nullptr,            // create server configuration
    nullptr,            // merge server configuration
    create_loc_conf,
    merge_loc_conf,
};

bool same_endpoint(const RedisConf &a, const RedisConf &b)
{
    return a.port == b.port && a.db == b.db && view(a.host) == view(b.host)
           && view(a.user) == view(b.user)
           && view(a.password) == view(b.password);
}

ngx_int_t init_process(ngx_cycle_t *cycle) noexcept
{
    auto *mcf = static_cast<MainConf *>(
        ngx_http_cycle_get_module_main_conf(cycle, ngx_http_fly_edge_module));

    if (mcf == nullptr) {
        return NGX_OK;
    }
    if (consistency_init_process(cycle, mcf) != NGX_OK) {
        return NGX_ERROR;
    }
    if (mcf->redis.host.len == 0) {
        return NGX_OK;
    }

    try {
        mcf->redis_client = new RedisClient(
            mcf->redis, mcf->redis_connect_timeout, mcf->redis_timeout,
            mcf->resolver, mcf->resolver_timeout, cycle->log);
        mcf->redis_primary_client = mcf->redis_client;
        if (!same_endpoint(mcf->redis, mcf->redis_primary)) {
            mcf->redis_primary_client = new RedisClient(
                mcf->redis_primary, mcf->redis_connect_timeout,
                mcf->redis_timeout, mcf->resolver, mcf->resolver_timeout,
                cycle->log);
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "fly_edge: cannot create the Redis clients: %s",
                      e.what());
        return NGX_ERROR;
    }
    near_init_process(cycle, mcf);
    return NGX_OK;
}

void exit_process(ngx_cycle_t *cycle) noexcept
{
    auto *mcf = static_cast<MainConf *>(
        ngx_http_cycle_get_module_main_conf(cycle, ngx_http_fly_edge_module));
    if (mcf == nullptr) {
        return;
    }
    near_exit_process();     // it watches the regional client
    consistency_exit_process(mcf);
    if (mcf->redis_primary_client != mcf->redis_client) {
        delete mcf->redis_primary_client;
    }
    delete mcf->redis_client;
    mcf->redis_client = nullptr;
    mcf->redis_primary_client = nullptr;
}

// Internal redirects (error_page, named locations) wipe r->ctx; the
// pool cleanup below keeps a pointer to the context so it is found again.
void ctx_cleanup(void *) noexcept {}

}  // namespace

RequestCtx *get_ctx(ngx_http_request_t *r)
{
    auto *ctx = static_cast<RequestCtx *>(
        ngx_http_get_module_ctx(r, ngx_http_fly_edge_module));
    if (ctx != nullptr || !r->internal) {
        return ctx;
    }
    for (ngx_pool_cleanup_t *cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ctx_cleanup) {
            ctx = static_cast<RequestCtx *>(cln->data);
            ngx_http_set_ctx(r, ctx, ngx_http_fly_edge_module);
            return ctx;
        }
    }
    return nullptr;
}

RequestCtx *create_ctx(ngx_http_request_t *r)
{
    RequestCtx *ctx = get_ctx(r);
    if (ctx != nullptr) {
        return ctx;
    }
    static_assert(std::is_trivially_destructible<RequestCtx>::value,
                  "RequestCtx lives in the request pool");
    ctx = static_cast<RequestCtx *>(ngx_pcalloc(r->pool, sizeof(RequestCtx)));
    if (ctx == nullptr) {
        return nullptr;
    }
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == nullptr) {
        return nullptr;
    }
    cln->handler = ctx_cleanup;
    cln->data = ctx;
    ngx_http_set_ctx(r, ctx, ngx_http_fly_edge_module);
    return ctx;
}

uint32_t method_bit(ngx_uint_t m)
{
    switch (m) {
    case NGX_HTTP_GET: return core::kGet;
    case NGX_HTTP_HEAD: return core::kHead;
    case NGX_HTTP_POST: return core::kPost;
    case NGX_HTTP_PUT: return core::kPut;
    case NGX_HTTP_DELETE: return core::kDelete;
    case NGX_HTTP_PATCH: return core::kPatch;
    case NGX_HTTP_OPTIONS: return core::kOptions;
    case NGX_HTTP_PROPFIND: return core::kPropfind;
    case NGX_HTTP_PROPPATCH: return core::kProppatch;
    case NGX_HTTP_MKCOL: return core::kMkcol;
    case NGX_HTTP_COPY: return core::kCopy;
    case NGX_HTTP_MOVE: return core::kMove;
    case NGX_HTTP_LOCK: return core::kLock;
    case NGX_HTTP_UNLOCK: return core::kUnlock;
    case NGX_HTTP_TRACE: return core::kTrace;
    default: return 0;
    }
}

ngx_int_t add_phase_handler(ngx_conf_t *cf, ngx_http_phases phase,
                            ngx_http_handler_pt h)
{
    auto *cmcf = static_cast<ngx_http_core_main_conf_t *>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module));
    auto *slot = static_cast<ngx_http_handler_pt *>(
        ngx_array_push(&cmcf->phases[phase].handlers));
    if (slot == nullptr) {
        return NGX_ERROR;
    }
    *slot = h;
    return NGX_OK;
}

u_char *pool_dup(ngx_pool_t *pool, std::string_view s)
{
    auto *p = static_cast<u_char *>(ngx_pnalloc(pool, s.size() ? s.size() : 1));
    if (p != nullptr) {
        ngx_memcpy(p, s.data(), s.size());
    }
    return p;
}

ngx_table_elt_t *push_header(ngx_http_request_t *r, std::string_view name,
                             std::string_view value)
{
    auto *h = static_cast<ngx_table_elt_t *>(
        ngx_list_push(&r->headers_out.headers));
    if (h == nullptr) {
        return nullptr;
    }
    h->hash = 1;
    h->key.len = name.size();
    h->key.data = (u_char *) name.data();
    h->value.len = value.size();
    h->value.data = (u_char *) value.data();
#if defined(nginx_version) && nginx_version >= 1023000
    h->next = nullptr;
#endif
    return h;
}

ngx_int_t send_small_response(ngx_http_request_t *r, ngx_uint_t status,
                              std::string_view content_type,
                              std::string_view body)
{
    u_char *p = pool_dup(r->pool, body);
    if (p == nullptr) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    r->headers_out.status = status;
    r->headers_out.content_length_n = static_cast<off_t>(body.size());
    r->headers_out.content_type.len = content_type.size();
    r->headers_out.content_type.data = (u_char *) content_type.data();
    // as nginx compares types (gzip_types and the like): without parameters
    r->headers_out.content_type_len =
        core::split_content_type(content_type).type_len;
    r->headers_out.content_type_lowcase = nullptr;
    ngx_int_t rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }
    ngx_buf_t *b = static_cast<ngx_buf_t *>(ngx_calloc_buf(r->pool));
    if (b == nullptr) {
        return NGX_ERROR;
    }
    b->pos = p;
    b->last = p + body.size();
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    ngx_chain_t out = {b, nullptr};
    return ngx_http_output_filter(r, &out);
}

}  // namespace fly

ngx_module_t ngx_http_fly_edge_module = {
    NGX_MODULE_V1,
    &fly::module_ctx,
    fly::commands,
    NGX_HTTP_MODULE,
    nullptr,                 // init master
    nullptr,                 // init module
    fly::init_process,
    nullptr,                 // init thread
    nullptr,                 // exit thread
    fly::exit_process,
    nullptr,                 // exit master
    NGX_MODULE_V1_PADDING
};
