// fly-edge nginx shell: the $fly_* variables.
#include "ngx_fly.hpp"
#include "ngx_fly_consistency.hpp"

namespace fly {

namespace {

enum VarId : uintptr_t {
    kRegion, kPrimaryRegion, kIsPrimary, kReplay, kCacheStatus, kCacheTier,
    kReplicaLsn, kReplicaLag, kWriteLsn,
};

// An LSN or a number in the request's pool; empty (not found) on no memory.
ngx_int_t set_lsn(ngx_http_request_t *r, ngx_http_variable_value_t *v,
                  bool known, uint64_t lsn)
{
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->len = 0;
    v->data = nullptr;
    if (!known) {
        return NGX_OK;
    }
    auto *p = static_cast<u_char *>(ngx_pnalloc(r->pool, core::kLsnTextMax));
    if (p == nullptr) {
        return NGX_ERROR;
    }
    v->len = core::format_lsn(lsn, reinterpret_cast<char *>(p));
    v->data = p;
    return NGX_OK;
}

void set_value(ngx_http_variable_value_t *v, const u_char *data, size_t len)
{
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = const_cast<u_char *>(data);
}

ngx_int_t get_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
                       uintptr_t id) noexcept
{
    MainConf *mcf = main_conf(r);

    switch (id) {
    case kRegion:
        set_value(v, mcf->region.data, mcf->region.len);
        return NGX_OK;
    case kPrimaryRegion:
        set_value(v, mcf->primary_region.data, mcf->primary_region.len);
        return NGX_OK;
    case kIsPrimary:
        set_value(v, reinterpret_cast<const u_char *>(mcf->is_primary == 1 ? "1" : "0"), 1);
        return NGX_OK;
    case kReplicaLsn: {
        uint64_t lsn = 0;
        bool known = replica_lsn(r, &lsn);
        return set_lsn(r, v, known, lsn);
    }
    case kReplicaLag: {
        int64_t ms = 0;
        v->valid = 1;
        v->no_cacheable = 1;
        v->not_found = 0;
        v->len = 0;
        if (replica_lag(r, &ms)) {
            auto *p = static_cast<u_char *>(ngx_pnalloc(r->pool, NGX_INT64_LEN));
            if (p == nullptr) {
                return NGX_ERROR;
            }
            v->len = ngx_sprintf(p, "%L", ms) - p;
            v->data = p;
        }
        return NGX_OK;
    }
    case kWriteLsn: {
        RequestCtx *ctx = get_ctx(r);
        return set_lsn(r, v, ctx != nullptr && ctx->has_write_lsn,
                       ctx != nullptr ? ctx->write_lsn : 0);
    }
    default:
        break;
    }

    // Per-request values may change while the request runs.
    RequestCtx *ctx = get_ctx(r);
    std::string_view s;
    if (ctx != nullptr) {
        s = id == kReplay        ? view(ctx->replay_state)
            : id == kCacheTier ? cache_tier_name(ctx->cache_tier)
                               : cache_status_name(ctx->cache_status);
    }
    set_value(v, reinterpret_cast<const u_char *>(s.data()), s.size());
    v->no_cacheable = 1;
    return NGX_OK;
}

struct VarDef {
    ngx_str_t name;
    VarId id;
    ngx_uint_t flags;
};

VarDef vars[] = {
    {ngx_string("fly_region"), kRegion, 0},
    {ngx_string("fly_primary_region"), kPrimaryRegion, 0},
    {ngx_string("fly_is_primary"), kIsPrimary, 0},
    {ngx_string("fly_replay"), kReplay, NGX_HTTP_VAR_NOCACHEABLE},
    {ngx_string("fly_cache_status"), kCacheStatus, NGX_HTTP_VAR_NOCACHEABLE},
    {ngx_string("fly_replica_lsn"), kReplicaLsn, NGX_HTTP_VAR_NOCACHEABLE},
    {ngx_string("fly_replica_lag"), kReplicaLag, NGX_HTTP_VAR_NOCACHEABLE},
    {ngx_string("fly_write_lsn"), kWriteLsn, NGX_HTTP_VAR_NOCACHEABLE},
    {ngx_string("fly_cache_tier"), kCacheTier, NGX_HTTP_VAR_NOCACHEABLE},
};

}  // namespace

ngx_int_t add_variables(ngx_conf_t *cf)
{
    for (auto &d : vars) {
        ngx_http_variable_t *var = ngx_http_add_variable(cf, &d.name, d.flags);
        if (var == nullptr) {
            return NGX_ERROR;
        }
        var->get_handler = get_variable;
        var->data = d.id;
    }
    return NGX_OK;
}

}  // namespace fly
