// fly-edge nginx shell: every directive, and the creation, merging and
// checking of the configuration.  Values are validated here so that a
// mistake fails `nginx -t` with the file and line of the directive.
// The handlers and merge of fly_replay* are in ngx_fly_conf_replay.cpp, of
// fly_cache* in ngx_fly_conf_cache.cpp, of PostgreSQL in ngx_fly_conf_pg.cpp.
#include "ngx_fly.hpp"
#include "ngx_fly_near.hpp"
#include "ngx_fly_metrics.hpp"
#include "core/http_text.hpp"
#include "core/url.hpp"

#include <cstdlib>
#include <exception>
#include <string>

namespace fly {

bool to_ngx(ngx_pool_t *pool, std::string_view in, ngx_str_t &out)
{
    out.len = in.size();
    out.data = static_cast<u_char *>(ngx_pnalloc(pool, in.size() + 1));
    if (out.data == nullptr) {
        return false;
    }
    ngx_memcpy(out.data, in.data(), in.size());
    out.data[in.size()] = '\0';
    return true;
}

namespace {

const char *env_lookup(const std::string &name)
{
    return getenv(name.c_str());
}

// Expands ${VAR} in the directive's argument `i`, logging the error.
bool expand_arg(ngx_conf_t *cf, ngx_uint_t i, ngx_str_t &out)
{
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    std::string expanded, err;
    if (!core::expand_env(std::string_view(
                              reinterpret_cast<const char *>(value[i].data),
                              value[i].len),
                          env_lookup, expanded, err))
    {
        // not the value itself: it may hold a password
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": %s",
                           &value[0], err.c_str());
        return false;
    }
    return to_ngx(cf->pool, expanded, out);
}

}  // namespace

void remember_place(ngx_conf_t *cf, ngx_str_t &file, ngx_uint_t &line)
{
    if (line == 0 && cf->conf_file != nullptr) {
        file = cf->conf_file->file.name;
        line = cf->conf_file->line;
    }
}

// METHOD ... into a core::Method bit set; `allowed` limits the choice.
// With `names`, any other method token is accepted too and kept there
// (std::string_view elements, pointing into the configuration's memory).
char *set_methods(ngx_conf_t *cf, ngx_command_t *cmd, ngx_uint_t &bits,
                  uint32_t allowed, ngx_array_t **names)
{
    if (bits != NGX_CONF_UNSET_UINT) {
        return const_cast<char *>("is duplicate");
    }
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    bits = 0;
    for (ngx_uint_t i = 1; i < cf->args->nelts; i++) {
        std::string_view name = view(value[i]);
        uint32_t m = core::method_from_name(name);
        if (m != 0 && (m & allowed) != 0) {
            bits |= m;
            continue;
        }
        if (names == nullptr || m != 0 || !core::is_token(name)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": invalid method \"%V\"",
                               &cmd->name, &value[i]);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (!core::nginx_accepts_method(name)) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "\"%V\": method \"%V\" never matches: nginx "
                               "answers 400 to a method that is not made of "
                               "upper-case letters, \"_\" and \"-\"",
                               &cmd->name, &value[i]);
        }
        if (*names == nullptr) {
            *names = ngx_array_create(cf->pool, 2, sizeof(std::string_view));
            if (*names == nullptr) {
                return static_cast<char *>(NGX_CONF_ERROR);
            }
        }
        auto *slot = static_cast<std::string_view *>(ngx_array_push(*names));
        if (slot == nullptr) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        *slot = name;
    }
    return static_cast<char *>(NGX_CONF_OK);
}

namespace {

// Runs a directive handler body, turning any C++ exception into a
// configuration error.
template <typename F>
char *guarded(ngx_conf_t *cf, F &&f) noexcept
{
    try {
        return f();
    } catch (const std::exception &e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "fly_edge: %s", e.what());
    } catch (...) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "fly_edge: unknown error");
    }
    return static_cast<char *>(NGX_CONF_ERROR);
}

// A string directive whose value may hold ${VAR}: expands it, lets
// `check` refuse the result (it logs why), and stores it at cmd->offset.
template <typename Check>
char *set_expanded(ngx_conf_t *cf, ngx_command_t *cmd, void *conf,
                   Check &&check) noexcept
{
    return guarded(cf, [&]() -> char * {
        auto *field = reinterpret_cast<ngx_str_t *>(
            static_cast<char *>(conf) + cmd->offset);
        if (field->data != nullptr) {
            return const_cast<char *>("is duplicate");
        }
        ngx_str_t v;
        if (!expand_arg(cf, 1, v) || !check(view(v))) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        *field = v;
        return static_cast<char *>(NGX_CONF_OK);
    });
}

// fly_region NAME; fly_primary_region NAME;
char *set_region(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    return set_expanded(cf, cmd, conf, [&](std::string_view v) {
        if (core::valid_region(v)) {
            return true;
        }
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": invalid region name \"%*s\"",
                           &cmd->name, v.size(), v.data());
        return false;
    });
}

// fly_redis URL; fly_redis_primary URL;
char *set_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    return set_expanded(cf, cmd, conf, [&](std::string_view v) {
        // Check the syntax now, with a stand-in region, so a mistake is
        // reported at this line; the real region is put in later.
        core::RedisUrl parsed;
        std::string err;
        if (core::parse_redis_url(core::expand_region(v, "region"), parsed,
                                  err))
        {
            return true;
        }
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": invalid Redis URL: %s", &cmd->name,
                           err.c_str());
        return false;
    });
}

// fly_postgres CONNINFO; fly_postgres_primary CONNINFO;
char *set_postgres(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    return set_expanded(cf, cmd, conf, [&](std::string_view v) {
        return check_conninfo(cf, cmd, v);
    });
}

constexpr ngx_uint_t kHttpMain = NGX_HTTP_MAIN_CONF;
constexpr ngx_uint_t kAnyLevel =
    NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

#define FLY_MAIN(field) NGX_HTTP_MAIN_CONF_OFFSET, offsetof(MainConf, field)
#define FLY_LOC(field) NGX_HTTP_LOC_CONF_OFFSET, offsetof(LocConf, field)

}  // namespace

ngx_command_t commands[] = {
    {ngx_string("fly_region"), kHttpMain | NGX_CONF_TAKE1, set_region,
     FLY_MAIN(region), nullptr},
    {ngx_string("fly_primary_region"), kHttpMain | NGX_CONF_TAKE1,
     set_region, FLY_MAIN(primary_region), nullptr},
    {ngx_string("fly_redis"), kHttpMain | NGX_CONF_TAKE1, set_redis,
     FLY_MAIN(redis_template), nullptr},
    {ngx_string("fly_redis_primary"), kHttpMain | NGX_CONF_TAKE1, set_redis,
     FLY_MAIN(redis_primary_template), nullptr},
    {ngx_string("fly_redis_connect_timeout"), kHttpMain | NGX_CONF_TAKE1,
     ngx_conf_set_msec_slot, FLY_MAIN(redis_connect_timeout), nullptr},
    {ngx_string("fly_redis_timeout"), kHttpMain | NGX_CONF_TAKE1,
     ngx_conf_set_msec_slot, FLY_MAIN(redis_timeout), nullptr},

    {ngx_string("fly_postgres"), kHttpMain | NGX_CONF_TAKE1, set_postgres,
     FLY_MAIN(pg_template), nullptr},
    {ngx_string("fly_postgres_primary"), kHttpMain | NGX_CONF_TAKE1,
     set_postgres, FLY_MAIN(pg_primary_template), nullptr},
    {ngx_string("fly_postgres_connect_timeout"), kHttpMain | NGX_CONF_TAKE1,
     ngx_conf_set_msec_slot, FLY_MAIN(pg_connect_timeout), nullptr},
    {ngx_string("fly_postgres_timeout"), kHttpMain | NGX_CONF_TAKE1,
     ngx_conf_set_msec_slot, FLY_MAIN(pg_timeout), nullptr},

    {ngx_string("fly_replay"), kAnyLevel | NGX_CONF_TAKE1, set_replay,
     FLY_LOC(replay), nullptr},
    {ngx_string("fly_replay_methods"), kAnyLevel | NGX_CONF_1MORE,
     set_replay_methods, FLY_LOC(replay_methods), nullptr},
    {ngx_string("fly_replay_bypass"), kAnyLevel | NGX_CONF_1MORE,
     ngx_http_set_predicate_slot, FLY_LOC(replay_bypass), nullptr},
    {ngx_string("fly_replay_when"), kAnyLevel | NGX_CONF_1MORE,
     ngx_http_set_predicate_slot, FLY_LOC(replay_when), nullptr},
    {ngx_string("fly_replay_on_status"), kAnyLevel | NGX_CONF_1MORE,
     set_replay_on_status, FLY_LOC(replay_on_status), nullptr},
    {ngx_string("fly_replay_status"), kAnyLevel | NGX_CONF_TAKE1,
     set_replay_status, FLY_LOC(replay_status), nullptr},
    {ngx_string("fly_replay_sticky"), kAnyLevel | NGX_CONF_TAKE1,
     set_replay_sticky, FLY_LOC(replay_sticky), nullptr},
    {ngx_string("fly_replay_max_body"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_size_slot, FLY_LOC(replay_max_body), nullptr},
    {ngx_string("fly_replay_forward"), kAnyLevel | NGX_CONF_TAKE12,
     set_replay_forward, FLY_LOC(replay_forward), nullptr},

    {ngx_string("fly_cache"), kAnyLevel | NGX_CONF_FLAG, set_cache,
     FLY_LOC(cache), nullptr},
    {ngx_string("fly_cache_key"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_http_set_complex_value_slot, FLY_LOC(cache_key), nullptr},
    {ngx_string("fly_cache_methods"), kAnyLevel | NGX_CONF_1MORE,
     set_cache_methods, FLY_LOC(cache_methods), nullptr},
    {ngx_string("fly_cache_valid"), kAnyLevel | NGX_CONF_1MORE,
     set_cache_valid, FLY_LOC(cache_valid), nullptr},
    {ngx_string("fly_cache_bypass"), kAnyLevel | NGX_CONF_1MORE,
     ngx_http_set_predicate_slot, FLY_LOC(cache_bypass), nullptr},
    {ngx_string("fly_cache_no_store"), kAnyLevel | NGX_CONF_1MORE,
     ngx_http_set_predicate_slot, FLY_LOC(cache_no_store), nullptr},
    {ngx_string("fly_cache_max_size"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_size_slot, FLY_LOC(cache_max_size), nullptr},
    {ngx_string("fly_cache_min_ttl"), kAnyLevel | NGX_CONF_TAKE1,
     set_ttl, FLY_LOC(cache_min_ttl), nullptr},
    {ngx_string("fly_cache_max_ttl"), kAnyLevel | NGX_CONF_TAKE1,
     set_ttl, FLY_LOC(cache_max_ttl), nullptr},
    {ngx_string("fly_cache_ignore_set_cookie"), kAnyLevel | NGX_CONF_FLAG,
     ngx_conf_set_flag_slot, FLY_LOC(cache_ignore_set_cookie), nullptr},
    {ngx_string("fly_cache_status_header"), kAnyLevel | NGX_CONF_TAKE1,
     set_header_name, FLY_LOC(cache_status_header), nullptr},
    {ngx_string("fly_cache_control_header"), kAnyLevel | NGX_CONF_TAKE1,
     set_header_name, FLY_LOC(cache_control_header), &cache_control_name},
    {ngx_string("fly_cache_control_pass"), kAnyLevel | NGX_CONF_FLAG,
     ngx_conf_set_flag_slot, FLY_LOC(cache_control_pass), nullptr},
    {ngx_string("fly_cache_near_zone"), kHttpMain | NGX_CONF_TAKE12,
     set_near_zone, NGX_HTTP_MAIN_CONF_OFFSET, 0, nullptr},
    {ngx_string("fly_cache_near"), kAnyLevel | NGX_CONF_FLAG, set_near,
     FLY_LOC(cache_near), nullptr},
    {ngx_string("fly_cache_revalidate"), kAnyLevel | NGX_CONF_FLAG,
     ngx_conf_set_flag_slot, FLY_LOC(cache_revalidate), nullptr},
    {ngx_string("fly_cache_use_stale"), kAnyLevel | NGX_CONF_1MORE,
     set_use_stale, FLY_LOC(cache_use_stale), nullptr},
    {ngx_string("fly_cache_stale"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_sec_slot, FLY_LOC(cache_stale), nullptr},
    {ngx_string("fly_cache_lock"), kAnyLevel | NGX_CONF_FLAG,
     ngx_conf_set_flag_slot, FLY_LOC(cache_lock), nullptr},
    {ngx_string("fly_cache_lock_timeout"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_msec_slot, FLY_LOC(cache_lock_timeout), nullptr},
    {ngx_string("fly_cache_background_update"), kAnyLevel | NGX_CONF_FLAG,
     ngx_conf_set_flag_slot, FLY_LOC(cache_background_update), nullptr},
    {ngx_string("fly_cache_fence"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_msec_slot, FLY_LOC(cache_fence), nullptr},
    {ngx_string("fly_cache_tags_header"), kAnyLevel | NGX_CONF_TAKE1,
     set_tags_header, FLY_LOC(cache_tags_header), nullptr},
    {ngx_string("fly_cache_tags_pass"), kAnyLevel | NGX_CONF_FLAG,
     ngx_conf_set_flag_slot, FLY_LOC(cache_tags_pass), nullptr},
    {ngx_string("fly_cache_purge"), kAnyLevel | NGX_CONF_ANY,
     set_cache_purge, FLY_LOC(cache_purge), nullptr},
    {ngx_string("fly_cache_purge_on_write"), kAnyLevel | NGX_CONF_2MORE,
     set_cache_purge_on_write, FLY_LOC(cache_purge_on_write), nullptr},

    {ngx_string("fly_consistency"), kAnyLevel | NGX_CONF_TAKE1,
     set_consistency, FLY_LOC(consistency), nullptr},
    {ngx_string("fly_consistency_wait"), kAnyLevel | NGX_CONF_TAKE1,
     ngx_conf_set_msec_slot, FLY_LOC(consistency_wait), nullptr},
    {ngx_string("fly_replica_max_lag"), kAnyLevel | NGX_CONF_TAKE1,
     set_replica_max_lag, FLY_LOC(replica_max_lag), nullptr},
    {ngx_string("fly_status"), NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS,
     metrics::set_status, 0, 0, nullptr},

    ngx_null_command
};

void *create_main_conf(ngx_conf_t *cf)
{
    auto *mcf = static_cast<MainConf *>(ngx_pcalloc(cf->pool, sizeof(MainConf)));
    if (mcf == nullptr) {
        return nullptr;
    }
    mcf->is_primary = NGX_CONF_UNSET;
    mcf->redis_connect_timeout = NGX_CONF_UNSET_MSEC;
    mcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    init_pg_main_conf(mcf);
    return mcf;
}

namespace {

// A region from the directive, else from the environment variable.
bool region_from_env(ngx_conf_t *cf, ngx_str_t &region, const char *var)
{
    if (region.data != nullptr) {
        return true;
    }
    const char *v = getenv(var);
    if (v == nullptr || *v == '\0') {
        return true;  // unknown; an error only where it is needed
    }
    if (!core::valid_region(v)) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "fly_edge: invalid region name \"%s\" in the "
                      "environment variable %s", v, var);
        return false;
    }
    return to_ngx(cf->pool, v, region);
}

// Expands {region} and parses the URL into `rc` (syntax was checked
// when the directive was read).
bool setup_redis(ngx_conf_t *cf, const ngx_str_t &tmpl,
                 const ngx_str_t &region, RedisConf &rc, const char *name)
{
    std::string url = core::expand_region(
        std::string_view(reinterpret_cast<const char *>(tmpl.data), tmpl.len),
        std::string_view(reinterpret_cast<const char *>(region.data),
                         region.len));
    core::RedisUrl parsed;
    std::string err;
    if (!core::parse_redis_url(url, parsed, err)) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "fly_edge: invalid %s Redis URL: %s", name, err.c_str());
        return false;
    }
    rc.name = name;
    rc.port = parsed.port;
    rc.db = parsed.db;
    return to_ngx(cf->pool, url, rc.url) && to_ngx(cf->pool, parsed.host, rc.host)
           && to_ngx(cf->pool, parsed.auth_user() ? parsed.user : "", rc.user)
           && to_ngx(cf->pool, parsed.password, rc.password);
}

}  // namespace

// Without a `resolver`, host names are resolved once when the
// configuration is loaded (in the master), as nginx does for proxy_pass;
// literals need nothing.
void resolve_at_load(ngx_conf_t *cf, const ngx_str_t &host, in_port_t port,
                     ngx_addr_t *&addrs, ngx_uint_t &naddrs, const char *what)
{
    if (host.len == 0 || ngx_inet_addr(host.data, host.len) != INADDR_NONE) {
        return;
    }
#if (NGX_HAVE_INET6)
    u_char a6[16];
    if (ngx_inet6_addr(host.data, host.len, a6) == NGX_OK) {
        return;
    }
#endif
    ngx_url_t u;
    ngx_memzero(&u, sizeof(ngx_url_t));
    u.host = host;
    u.port = port;
    if (ngx_inet_resolve_host(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                      "fly_edge: %s host \"%V\" not found; set "
                      "\"resolver\" to resolve it at run time",
                      what, &host);
        return;
    }
    addrs = u.addrs;
    naddrs = u.naddrs;
}

void resolve_at_load(ngx_conf_t *cf, RedisConf &rc)
{
    char what[32];
    ngx_snprintf(reinterpret_cast<u_char *>(what), sizeof(what), "%s Redis%Z",
                 rc.name ? rc.name : "");
    resolve_at_load(cf, rc.host, rc.port, rc.addrs, rc.naddrs, what);
}

namespace {

}  // namespace

char *init_main_conf(ngx_conf_t *cf, void *conf)
{
    auto *mcf = static_cast<MainConf *>(conf);

    try {
        if (!region_from_env(cf, mcf->region, "FLY_REGION")
            || !region_from_env(cf, mcf->primary_region, "PRIMARY_REGION"))
        {
            return static_cast<char *>(NGX_CONF_ERROR);
        }

        if (mcf->need_region_line
            && (mcf->region.len == 0 || mcf->primary_region.len == 0))
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "fly_replay needs %s: set \"%s\" or the "
                          "environment variable %s (fly_replay in %V:%ui)",
                          mcf->region.len == 0 ? "this region"
                                               : "the primary region",
                          mcf->region.len == 0 ? "fly_region"
                                               : "fly_primary_region",
                          mcf->region.len == 0 ? "FLY_REGION"
                                               : "PRIMARY_REGION",
                          &mcf->need_region_file, mcf->need_region_line);
            return static_cast<char *>(NGX_CONF_ERROR);
        }

        mcf->is_primary = mcf->region.len > 0
                          && mcf->region.len == mcf->primary_region.len
                          && ngx_strncmp(mcf->region.data,
                                         mcf->primary_region.data,
                                         mcf->region.len) == 0;

        if (!check_near_conf(cf, mcf)) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }

        ngx_conf_init_msec_value(mcf->redis_connect_timeout, 200);
        ngx_conf_init_msec_value(mcf->redis_timeout, 100);

        if (setup_pg_conf(cf, mcf) != NGX_CONF_OK) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }

        if (mcf->redis_template.len == 0) {
            if (mcf->need_redis_line) {
                ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                              "\"fly_cache on\" needs \"fly_redis\" "
                              "(fly_cache in %V:%ui)",
                              &mcf->need_redis_file, mcf->need_redis_line);
                return static_cast<char *>(NGX_CONF_ERROR);
            }
            return static_cast<char *>(NGX_CONF_OK);
        }

        bool uses_region = ngx_strnstr(mcf->redis_template.data,
                                       const_cast<char *>("{region}"),
                                       mcf->redis_template.len) != nullptr;
        if (uses_region && mcf->region.len == 0) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"fly_redis\" uses {region}, but this region is "
                          "unknown: set \"fly_region\" or FLY_REGION");
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (!setup_redis(cf, mcf->redis_template, mcf->region, mcf->redis,
                         "regional"))
        {
            return static_cast<char *>(NGX_CONF_ERROR);
        }

        const ngx_str_t &ptmpl = mcf->redis_primary_template.len
                                     ? mcf->redis_primary_template
                                     : mcf->redis_template;
        if (mcf->redis_primary_template.len == 0 && uses_region
            && mcf->primary_region.len == 0)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"fly_redis\" uses {region}, but the primary "
                          "region is unknown: set \"fly_primary_region\", "
                          "PRIMARY_REGION or \"fly_redis_primary\"");
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (!setup_redis(cf, ptmpl, mcf->primary_region, mcf->redis_primary,
                         "primary"))
        {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "fly_edge: %s", e.what());
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    return static_cast<char *>(NGX_CONF_OK);
}

void *create_loc_conf(ngx_conf_t *cf)
{
    auto *lcf = static_cast<LocConf *>(ngx_pcalloc(cf->pool, sizeof(LocConf)));
    if (lcf == nullptr) {
        return nullptr;
    }
    // ngx_pcalloc set: cache_key, cache_valid, cache_status_header,
    // cache_control_header, cache_tags_header (null data = unset),
    // cache_purge (nullptr = unset).
    init_replay_conf(lcf);
    init_consistency_conf(lcf);

    init_cache_conf(lcf);
    return lcf;
}

char *merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    auto *prev = static_cast<LocConf *>(parent);
    auto *conf = static_cast<LocConf *>(child);

    if (merge_replay_conf(cf, prev, conf) != NGX_CONF_OK
        || merge_consistency_conf(cf, prev, conf) != NGX_CONF_OK)
    {
        return static_cast<char *>(NGX_CONF_ERROR);
    }

    if (merge_cache_conf(cf, prev, conf) != NGX_CONF_OK) {
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (!metrics::merge_loc(cf, conf)) {
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    return static_cast<char *>(NGX_CONF_OK);
}

}  // namespace fly
