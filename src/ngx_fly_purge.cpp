// fly-edge nginx shell: purge requests.  Two forms of fly_cache_purge:
//   fly_cache_purge [soft];                     (location) a purge endpoint:
//       the location's content handler answers PURGE requests;
//   fly_cache_purge METHOD [soft] [from all | ADDRESS[/BITS] ...];
//       in a caching location: a request with METHOD from those
//       addresses (default: this machine) purges what a GET of its URI
//       would hit and never reaches the app; from others it gets 403.
// Either way the purge is computed with the location's fly_cache_key
// (core/purge.hpp says what the target means), sent to the primary Redis
// as one script call (ngx_fly_cache_invalidate.cpp), and answered with a
// short JSON body once the primary has it (502 when it cannot be sent).
#include "ngx_fly_cache.hpp"
#include "ngx_fly_metrics.hpp"
#include "core/cache_tags.hpp"
#include "core/purge.hpp"

extern "C" {
#include <hiredis/hiredis.h>
}

#include <exception>
#include <string>

namespace fly {

struct PurgeConf {
    bool endpoint;               // `fly_cache_purge [soft];`
    bool off;                    // `fly_cache_purge off;`
    bool soft;
    ngx_str_t method;            // the same-location form's method
    ngx_array_t *from;           // ngx_cidr_t; nullptr: every address
};

namespace {

time_t log_slot_reply;

constexpr std::string_view kPurgeMethod = "PURGE";

// What a purge in flight answers with, in the request pool.
struct PurgeState {
    ngx_http_request_t *r;
    ScriptCall *call;
    bool tag_purge;
    bool soft;
    std::string key;             // configured key (URL purges)
    std::vector<std::string> tags;
};

void purge_cleanup(void *data) noexcept
{
    auto *ps = static_cast<PurgeState *>(data);
    if (ps->call != nullptr) {
        detach_script(ps->call);
    }
    ps->~PurgeState();
}

ngx_int_t send_json(ngx_http_request_t *r, ngx_uint_t status,
                    const std::string &body)
{
    return send_small_response(r, status, "application/json", body);
}

ngx_int_t answer(PurgeState *ps, redisReply *reply)
{
    ngx_http_request_t *r = ps->r;
    if (reply == nullptr || reply->type != REDIS_REPLY_INTEGER) {
        if (reply == nullptr && log_allowed(&log_slot_reply)) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "fly_cache_purge: the primary Redis did not "
                          "answer: nothing purged");
        }
        return send_json(r, NGX_HTTP_BAD_GATEWAY,
                         core::purge_json_error("the primary Redis did not "
                                                "take the purge"));
    }
    uint64_t epoch = reply->integer > 0 ? static_cast<uint64_t>(reply->integer) : 0;
    metrics::count(r, core::Metric::cache_purges);
    if (ps->tag_purge) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fly_cache_purge: %s purge of %uz tags, epoch %uL",
                      ps->soft ? "soft" : "hard", ps->tags.size(), epoch);
        return send_json(r, NGX_HTTP_OK,
                         core::purge_json_tags(ps->tags, ps->soft, epoch));
    }
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "fly_cache_purge: %s purge of key \"%*s\"",
                  ps->soft ? "soft" : "hard", (int) ps->key.size(),
                  ps->key.data());
    return send_json(r, NGX_HTTP_OK,
                     core::purge_json_url(ps->key, ps->soft, epoch));
}

void on_purge_done(void *data, redisReply *reply) noexcept
{
    auto *ps = static_cast<PurgeState *>(data);
    ngx_http_request_t *r = ps->r;
    ngx_connection_t *c = r->connection;
    ps->call = nullptr;
    ngx_int_t rc;
    try {
        rc = answer(ps, reply);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0, "fly_cache_purge: %s", e.what());
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}

ngx_int_t purge(ngx_http_request_t *r)
{
    LocConf *lcf = loc_conf(r);
    PurgeConf *pc = lcf->cache_purge;
    if (pc == nullptr) {
        return NGX_DECLINED;
    }
    if (pc->endpoint && view(r->method_name) != kPurgeMethod) {
        if (push_header(r, "Allow", kPurgeMethod) == nullptr) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        return NGX_HTTP_NOT_ALLOWED;
    }
    ngx_int_t rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    std::string_view uri = view(r->unparsed_uri);
    std::string_view path = uri.substr(0, uri.find('?'));
    core::PurgeTarget target = core::parse_purge_target(path, view(r->args));
    if (!target.ok) {
        return send_json(r, NGX_HTTP_BAD_REQUEST,
                         core::purge_json_error(target.error));
    }

    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(r->pool, sizeof(PurgeState));
    if (cln == nullptr) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    auto *ps = new (cln->data) PurgeState();
    cln->handler = purge_cleanup;
    ps->r = r;
    ps->soft = target.soft || pc->soft;
    ps->tag_purge = target.tag_purge;

    Invalidation inv;
    inv.soft_tags = ps->soft;
    if (target.tag_purge) {
        ps->tags = target.tags;
        inv.tags = std::move(target.tags);
    } else {
        std::string key;
        bool ok;
        if (target.args_changed) {
            std::string u(path);
            if (!target.key_args.empty()) {
                u.append("?").append(target.key_args);
            }
            ok = key_for_uri(r, lcf, u, key);
        } else {
            ngx_str_t configured;
            ok = ngx_http_complex_value(r, lcf->cache_key, &configured) == NGX_OK
                 && core::build_key(view(configured), key);
        }
        if (!ok) {
            return send_json(r, NGX_HTTP_BAD_REQUEST,
                             core::purge_json_error("no cache key for this URI"));
        }
        ps->key = key.substr(core::kKeyPrefix.size());
        if (ps->soft) {
            inv.tags.push_back(core::implicit_tag(key));
        } else {
            inv.keys.push_back(std::move(key));
        }
    }

    ps->call = send_invalidation(r, lcf, std::move(inv), on_purge_done, ps);
    if (ps->call == nullptr) {
        return send_json(r, NGX_HTTP_BAD_GATEWAY,
                         core::purge_json_error("the primary Redis is "
                                                "unavailable"));
    }
    r->main->count++;
    return NGX_DONE;
}

ngx_int_t purge_handler(ngx_http_request_t *r) noexcept
{
    try {
        return purge(r);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_cache_purge: %s", e.what());
    } catch (...) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_cache_purge: unknown error");
    }
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}

// Addresses allowed by default: this machine.
bool add_cidr(ngx_conf_t *cf, ngx_array_t *from, ngx_str_t text)
{
    auto *cidr = static_cast<ngx_cidr_t *>(ngx_array_push(from));
    if (cidr == nullptr) {
        return false;
    }
    ngx_int_t rc = ngx_ptocidr(&text, cidr);
    if (rc == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fly_cache_purge\": invalid address \"%V\"", &text);
        return false;
    }
    if (rc == NGX_DONE) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "low address bits of %V are meaningless", &text);
    }
    return true;
}

}  // namespace

ngx_int_t purge_precontent(ngx_http_request_t *r, LocConf *lcf)
{
    PurgeConf *pc = lcf->cache_purge;
    if (pc == nullptr || pc->endpoint || pc->off || r != r->main
        || view(r->method_name) != view(pc->method))
    {
        return NGX_DECLINED;
    }
    if (pc->from != nullptr
        && ngx_cidr_match(r->connection->sockaddr, pc->from) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fly_cache_purge: %V from %V refused",
                      &r->method_name, &r->connection->addr_text);
        return NGX_HTTP_FORBIDDEN;
    }
    // The rest of the pre-content phase (try_files, mirror) and the
    // location's own content handler (proxy_pass, ...) are skipped.
    r->content_handler = purge_handler;
    return NGX_OK;
}

// fly_cache_purge [METHOD] [soft] [from all | ADDRESS[/BITS] ...] | off;
char *set_cache_purge(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    if (lcf->cache_purge != nullptr) {
        return const_cast<char *>("is duplicate");
    }
    auto *pc = static_cast<PurgeConf *>(ngx_pcalloc(cf->pool, sizeof(PurgeConf)));
    if (pc == nullptr) {
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    auto is = [](const ngx_str_t &s, const char *w) {
        return s.len == ngx_strlen(w) && ngx_strncmp(s.data, w, s.len) == 0;
    };
    auto fail = [&](const char *why) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": %s", &cmd->name, why);
        return static_cast<char *>(NGX_CONF_ERROR);
    };

    ngx_uint_t n = cf->args->nelts;
    if (n == 2 && is(value[1], "off")) {
        pc->off = true;
        lcf->cache_purge = pc;
        return static_cast<char *>(NGX_CONF_OK);
    }
    ngx_uint_t i = 1;
    bool from = false;
    for (; i < n && !from; i++) {
        if (is(value[i], "soft")) {
            pc->soft = true;
        } else if (is(value[i], "from")) {
            from = true;
        } else if (pc->method.len == 0 && core::is_token(view(value[i]))
                   && !is(value[i], "GET") && !is(value[i], "HEAD"))
        {
            pc->method = value[i];   // any method token but the reads
        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": invalid parameter \"%V\"",
                               &cmd->name, &value[i]);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
    }

    if (pc->method.len == 0) {
        // the endpoint: this location's content handler
        if (from) {
            return fail("\"from\" needs a METHOD; restrict a purge "
                        "endpoint with allow and deny");
        }
        if (cf->cmd_type != NGX_HTTP_LOC_CONF) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" without a METHOD (a purge endpoint) "
                               "is only allowed in a location", &cmd->name);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        pc->endpoint = true;
        auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
            ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
        clcf->handler = purge_handler;
        lcf->cache_purge = pc;
        return static_cast<char *>(NGX_CONF_OK);
    }

    if (from && i == n) {
        return fail("\"from\" needs \"all\" or addresses");
    }
    if (from && n - i == 1 && is(value[i], "all")) {
        pc->from = nullptr;
    } else {
        pc->from = ngx_array_create(cf->pool, 4, sizeof(ngx_cidr_t));
        if (pc->from == nullptr) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (!from) {
            ngx_str_t v4 = ngx_string("127.0.0.0/8");
            ngx_str_t v6 = ngx_string("::1");
            if (!add_cidr(cf, pc->from, v4) || !add_cidr(cf, pc->from, v6)) {
                return static_cast<char *>(NGX_CONF_ERROR);
            }
        }
        for (; i < n; i++) {
            if (is(value[i], "all")) {
                return fail("\"all\" cannot be combined with addresses");
            }
            if (!add_cidr(cf, pc->from, value[i])) {
                return static_cast<char *>(NGX_CONF_ERROR);
            }
        }
    }
    lcf->cache_purge = pc;
    return static_cast<char *>(NGX_CONF_OK);
}

void merge_cache_purge(LocConf *prev, LocConf *conf)
{
    // the same-location form inherits like any directive; an endpoint is
    // its location's content handler, which nested locations do not get
    if (conf->cache_purge == nullptr && prev->cache_purge != nullptr
        && !prev->cache_purge->endpoint)
    {
        conf->cache_purge = prev->cache_purge;
    }
}

}  // namespace fly
