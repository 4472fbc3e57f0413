// fly-edge nginx shell: the read-your-writes directives: fly_postgres and
// fly_postgres_primary (libpq's PQconninfoParse() reads the conninfo, so
// a malformed one fails `nginx -t` naming its file and line),
// fly_consistency, fly_consistency_wait, fly_replica_max_lag; their part
// of creating and merging the configuration.  The command table and the
// rest of the configuration are in ngx_fly_conf.cpp.
#include "ngx_fly.hpp"
#include "core/conninfo.hpp"
#include "core/url.hpp"

#include <libpq-fe.h>

#include <string>

namespace fly {

namespace {

using core::ConsistencyMode;

// Parses a conninfo (key/value or URI) with libpq: the settings written.
bool parse_conninfo(const std::string &conninfo, core::ConnParams &out,
                    std::string &err)
{
    char *msg = nullptr;
    PQconninfoOption *opts = PQconninfoParse(conninfo.c_str(), &msg);
    if (opts == nullptr) {
        std::string m = msg ? msg : "out of memory";
        PQfreemem(msg);
        while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) {
            m.pop_back();
        }
        err = core::redact_conninfo(m, conninfo);
        return false;
    }
    out.clear();
    for (PQconninfoOption *o = opts; o->keyword != nullptr; o++) {
        if (o->val != nullptr) {
            out.push_back({o->keyword, o->val});
        }
    }
    PQconninfoFree(opts);
    return true;
}

bool is_address(const std::string &s)
{
    auto *p = reinterpret_cast<u_char *>(const_cast<char *>(s.data()));
    if (ngx_inet_addr(p, s.size()) != INADDR_NONE) {
        return true;
    }
#if (NGX_HAVE_INET6)
    u_char a6[16];
    return ngx_inet6_addr(p, s.size(), a6) == NGX_OK;
#else
    return false;
#endif
}

// Where the connection goes, checked (for a directive's own error).
bool endpoint_of(const core::ConnParams &params, core::PgEndpoint &ep,
                 std::string &err)
{
    if (!core::pg_endpoint(params, ep, err)) {
        return false;
    }
    if (!ep.hostaddr.empty() && !is_address(ep.hostaddr)) {
        err = "hostaddr \"" + ep.hostaddr + "\" is not an IP address";
        return false;
    }
    return true;
}

bool uses_region(const ngx_str_t &tmpl)
{
    return view(tmpl).find("{region}") != std::string_view::npos;
}

// The endpoint's settings for PQconnectStartParams(): those of the
// conninfo, application_name=fly-edge and gssencmode=disable unless set
// (a GSSAPI handshake may block), and a hostaddr slot.
bool make_pg_conf(ngx_conf_t *cf, core::ConnParams params, PgConf &pc,
                  const char *name)
{
    core::PgEndpoint ep;
    std::string err;
    if (!endpoint_of(params, ep, err)) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "fly_edge: %s PostgreSQL: %s", name, err.c_str());
        return false;
    }
    if (core::conn_param(params, "application_name") == nullptr) {
        core::set_conn_param(params, "application_name", "fly-edge");
    }
    if (core::conn_param(params, "gssencmode") == nullptr) {
        core::set_conn_param(params, "gssencmode", "disable");
    }

    std::string settings;
    core::ConnParams out;
    for (const core::ConnParam &p : params) {
        settings.append(p.key).append("=").append(p.value).append("\n");
        if (p.key != "hostaddr") {
            out.push_back(p);
        }
    }
    size_t n = out.size() + 1;        // + hostaddr
    pc.keywords = static_cast<const char **>(
        ngx_pcalloc(cf->pool, (n + 1) * sizeof(char *)));
    pc.values = static_cast<const char **>(
        ngx_pcalloc(cf->pool, (n + 1) * sizeof(char *)));
    if (pc.keywords == nullptr || pc.values == nullptr) {
        return false;
    }
    for (size_t i = 0; i < out.size(); i++) {
        ngx_str_t k, v;
        if (!to_ngx(cf->pool, out[i].key, k) || !to_ngx(cf->pool, out[i].value, v)) {
            return false;
        }
        pc.keywords[i] = reinterpret_cast<const char *>(k.data);
        pc.values[i] = reinterpret_cast<const char *>(v.data);
    }
    pc.hostaddr_at = out.size();
    pc.keywords[pc.hostaddr_at] = "hostaddr";
    pc.values[pc.hostaddr_at] = "";
    pc.port = ep.port;
    pc.name = name;
    return to_ngx(cf->pool, settings, pc.settings)
           && to_ngx(cf->pool, ep.hostaddr.empty() ? ep.host : ep.hostaddr,
                     pc.host);
}

// {region} filled in, then parsed (the syntax was checked when the
// directive was read; a mistake here is in a region name).
bool region_params(ngx_conf_t *cf, const ngx_str_t &tmpl,
                   const ngx_str_t &region, core::ConnParams &params,
                   const char *name)
{
    std::string conninfo = core::expand_region(view(tmpl), view(region));
    std::string err;
    if (!parse_conninfo(conninfo, params, err)) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "fly_edge: invalid %s PostgreSQL conninfo: %s", name,
                      err.c_str());
        return false;
    }
    return true;
}

ngx_conf_enum_t consistency_modes[] = {
    {ngx_string("off"), static_cast<ngx_uint_t>(ConsistencyMode::off)},
    {ngx_string("lsn"), static_cast<ngx_uint_t>(ConsistencyMode::lsn)},
    {ngx_null_string, 0},
};

void need_pg(ngx_conf_t *cf, const char *what)
{
    MainConf *mcf = main_conf(cf);
    if (mcf->need_pg_line == 0) {
        mcf->need_pg_what = what;
    }
    remember_place(cf, mcf->need_pg_file, mcf->need_pg_line);
}

}  // namespace

// fly_postgres CONNINFO; fly_postgres_primary CONNINFO; (after ${VAR}):
// libpq parses it now, with a stand-in region, so that a mistake is
// reported at this line.
bool check_conninfo(ngx_conf_t *cf, ngx_command_t *cmd, std::string_view v)
{
    std::string conninfo = core::expand_region(v, "region");
    core::ConnParams params;
    core::PgEndpoint ep;
    std::string err;
    if (!parse_conninfo(conninfo, params, err)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": invalid conninfo: %s",
                           &cmd->name, err.c_str());
        return false;
    }
    if (!endpoint_of(params, ep, err)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": %s", &cmd->name,
                           err.c_str());
        return false;
    }
    return true;
}

// fly_consistency off | lsn;
char *set_consistency(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    if (lcf->consistency != NGX_CONF_UNSET_UINT) {
        return const_cast<char *>("is duplicate");
    }
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    for (ngx_conf_enum_t *e = consistency_modes; e->name.len; e++) {
        if (view(e->name) == view(value[1])) {
            lcf->consistency = e->value;
            if (e->value == static_cast<ngx_uint_t>(ConsistencyMode::lsn)) {
                need_pg(cf, "fly_consistency lsn");
            }
            return static_cast<char *>(NGX_CONF_OK);
        }
    }
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\": invalid value \"%V\", expected \"off\" or "
                       "\"lsn\"", &cmd->name, &value[1]);
    return static_cast<char *>(NGX_CONF_ERROR);
}

// fly_replica_max_lag TIME | off;
char *set_replica_max_lag(ngx_conf_t *cf, ngx_command_t *cmd,
                          void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    if (lcf->replica_max_lag != NGX_CONF_UNSET) {
        return const_cast<char *>("is duplicate");
    }
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    if (view(value[1]) == "off") {
        lcf->replica_max_lag = kMaxLagOffConf;
        return static_cast<char *>(NGX_CONF_OK);
    }
    ngx_int_t ms = ngx_parse_time(&value[1], 0);
    if (ms == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": invalid time \"%V\", expected a time or "
                           "\"off\"", &cmd->name, &value[1]);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    lcf->replica_max_lag = ms;
    need_pg(cf, "fly_replica_max_lag");
    return static_cast<char *>(NGX_CONF_OK);
}

void init_pg_main_conf(MainConf *mcf)
{
    mcf->pg_connect_timeout = NGX_CONF_UNSET_MSEC;
    mcf->pg_timeout = NGX_CONF_UNSET_MSEC;
}

// init_main_conf: the regions are known now.
char *setup_pg_conf(ngx_conf_t *cf, MainConf *mcf)
{
    ngx_conf_init_msec_value(mcf->pg_connect_timeout, 1000);
    ngx_conf_init_msec_value(mcf->pg_timeout, 500);

    if (mcf->pg_template.len == 0) {
        if (mcf->need_pg_line) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"%s\" needs \"fly_postgres\" (in %V:%ui)",
                          mcf->need_pg_what, &mcf->need_pg_file,
                          mcf->need_pg_line);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (mcf->pg_primary_template.len) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"fly_postgres_primary\" needs \"fly_postgres\"");
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        return static_cast<char *>(NGX_CONF_OK);
    }
    if (mcf->need_pg_line
        && (mcf->region.len == 0 || mcf->primary_region.len == 0))
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"%s\" needs %s: set \"%s\" or the environment "
                      "variable %s (in %V:%ui)", mcf->need_pg_what,
                      mcf->region.len == 0 ? "this region" : "the primary region",
                      mcf->region.len == 0 ? "fly_region" : "fly_primary_region",
                      mcf->region.len == 0 ? "FLY_REGION" : "PRIMARY_REGION",
                      &mcf->need_pg_file, mcf->need_pg_line);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (uses_region(mcf->pg_template) && mcf->region.len == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"fly_postgres\" uses {region}, but this region is "
                      "unknown: set \"fly_region\" or FLY_REGION");
        return static_cast<char *>(NGX_CONF_ERROR);
    }

    core::ConnParams regional, primary;
    if (!region_params(cf, mcf->pg_template, mcf->region, regional,
                       "regional"))
    {
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (mcf->pg_primary_template.len) {
        if (uses_region(mcf->pg_primary_template)
            && mcf->primary_region.len == 0)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"fly_postgres_primary\" uses {region}, but the "
                          "primary region is unknown: set "
                          "\"fly_primary_region\" or PRIMARY_REGION");
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (!region_params(cf, mcf->pg_primary_template, mcf->primary_region,
                           primary, "primary"))
        {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
    } else {
        // The regional template in the primary region, on the leader's port.
        if (uses_region(mcf->pg_template) && mcf->primary_region.len == 0) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"fly_postgres\" uses {region}, but the primary "
                          "region is unknown: set \"fly_primary_region\", "
                          "PRIMARY_REGION or \"fly_postgres_primary\"");
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (!region_params(cf, mcf->pg_template, mcf->primary_region,
                           primary, "primary"))
        {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        core::to_leader_port(primary);
    }
    if (!make_pg_conf(cf, regional, mcf->pg, "regional")
        || !make_pg_conf(cf, primary, mcf->pg_primary, "primary"))
    {
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    return static_cast<char *>(NGX_CONF_OK);
}

void resolve_pg_at_load(ngx_conf_t *cf, MainConf *mcf)
{
    for (PgConf *pc : {&mcf->pg, &mcf->pg_primary}) {
        if (pc->host.len) {
            resolve_at_load(cf, pc->host, pc->port, pc->addrs, pc->naddrs,
                            pc == &mcf->pg ? "regional PostgreSQL"
                                           : "primary PostgreSQL");
        }
    }
}

void init_consistency_conf(LocConf *lcf)
{
    lcf->consistency = NGX_CONF_UNSET_UINT;
    lcf->consistency_wait = NGX_CONF_UNSET_MSEC;
    lcf->replica_max_lag = NGX_CONF_UNSET;
}

char *merge_consistency_conf(ngx_conf_t *, LocConf *prev, LocConf *conf)
{
    ngx_conf_merge_uint_value(conf->consistency, prev->consistency,
                              static_cast<ngx_uint_t>(ConsistencyMode::off));
    ngx_conf_merge_msec_value(conf->consistency_wait, prev->consistency_wait,
                              500);
    ngx_conf_merge_value(conf->replica_max_lag, prev->replica_max_lag,
                         kMaxLagOffConf);
    return static_cast<char *>(NGX_CONF_OK);
}

}  // namespace fly
