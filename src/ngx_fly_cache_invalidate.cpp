// fly-edge nginx shell: invalidation.  A successful unsafe request
// invalidates its own key, the same-origin URIs of its Location and
// Content-Location (RFC 9111 4.4) and what fly_cache_purge_on_write names;
// the purge endpoint (ngx_fly_purge.cpp) sends its purges the same way.
// Everything goes to the primary Redis in one script call (tombstones,
// tag epoch; core/tombstone.hpp, core/cache_tags.hpp), whose replication
// carries it to every region, over region-local fills too; the tombstones
// are also written to the region's own Redis when it is another, so the
// region sees them at once.
#include "ngx_fly_cache.hpp"
#include "ngx_fly_consistency.hpp"
#include "ngx_fly_metrics.hpp"
#include "ngx_fly_redis.hpp"
#include "core/cache_tags.hpp"
#include "core/purge.hpp"
#include "core/tombstone.hpp"

#include <exception>
#include <new>
#include <string>

namespace fly {

// One fly_cache_purge_on_write directive: a regex of the request URI and
// what a match invalidates.
struct PurgeRuleTarget {
    bool tag;                            // "tag:NAME", else a URI
    ngx_http_complex_value_t value;      // the URI or the tag name
};

struct PurgeRule {
    ngx_http_regex_t *regex;
    ngx_array_t *targets;                // PurgeRuleTarget
};

namespace {

time_t log_slot_primary;
time_t log_slot_target;

bool push_unique(std::vector<std::string> &v, std::string &&s)
{
    for (const std::string &have : v) {
        if (have == s) {
            return false;
        }
    }
    v.push_back(std::move(s));
    return true;
}

// The raw path of the request URI (without its arguments).
std::string_view request_path(ngx_http_request_t *r)
{
    std::string_view u = view(r->unparsed_uri);
    return u.substr(0, u.find('?'));
}

void add_uri_target(ngx_http_request_t *r, LocConf *lcf, std::string_view uri,
                    Invalidation &inv)
{
    std::string key;
    if (key_for_uri(r, lcf, uri, key)) {
        push_unique(inv.keys, std::move(key));
    }
}

// RFC 9111 4.4: Location and Content-Location on this host.
void add_location_targets(ngx_http_request_t *r, LocConf *lcf,
                          Invalidation &inv)
{
    std::string_view host = view(r->headers_in.server);
    std::string target;
    for_each_header(r->headers_out.headers, [&](ngx_table_elt_t &h) {
        std::string_view name = view(h.key);
        if ((core::iequals(name, "Location")
             || core::iequals(name, "Content-Location"))
            && core::same_origin_target(view(h.value), host, request_path(r),
                                        target))
        {
            add_uri_target(r, lcf, target, inv);
        }
    });
}

void add_rule_targets(ngx_http_request_t *r, LocConf *lcf, Invalidation &inv)
{
    if (lcf->cache_purge_on_write == nullptr) {
        return;
    }
    auto *rules = static_cast<PurgeRule *>(lcf->cache_purge_on_write->elts);
    for (ngx_uint_t i = 0; i < lcf->cache_purge_on_write->nelts; i++) {
        // the full request URI, arguments included (MediaWiki's edits are
        // /index.php?title=T&action=submit)
        if (ngx_http_regex_exec(r, rules[i].regex, &r->unparsed_uri) != NGX_OK) {
            continue;
        }
        auto *t = static_cast<PurgeRuleTarget *>(rules[i].targets->elts);
        for (ngx_uint_t k = 0; k < rules[i].targets->nelts; k++) {
            ngx_str_t v;
            if (ngx_http_complex_value(r, &t[k].value, &v) != NGX_OK) {
                continue;
            }
            std::string_view s = view(v);
            if (t[k].tag ? !core::valid_tag(s) : (s.empty() || s[0] != '/')) {
                if (log_allowed(&log_slot_target)) {
                    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                                  "fly_cache_purge_on_write: ignoring the "
                                  "invalid %s \"%V\"",
                                  t[k].tag ? "tag" : "URI", &v);
                }
                continue;
            }
            if (t[k].tag) {
                push_unique(inv.tags, std::string(s));
            } else {
                add_uri_target(r, lcf, s, inv);
            }
        }
    }
}

// The variables a key may hold that nginx computes from the request URI.
bool uri_variable(std::string_view name)
{
    return name == "request_uri" || name == "uri" || name == "document_uri"
           || name == "args" || name == "query_string" || name == "is_args"
           || name.substr(0, 4) == "arg_";
}

// nginx keeps the values of these (they are cacheable) once computed:
// forgets those `cv` uses, so they are computed again.
void forget_uri_variables(ngx_http_request_t *r, ngx_http_complex_value_t *cv)
{
    auto *cmcf = static_cast<ngx_http_core_main_conf_t *>(
        ngx_http_get_module_main_conf(r, ngx_http_core_module));
    auto *vars = static_cast<ngx_http_variable_t *>(cmcf->variables.elts);
    for (ngx_uint_t *i = cv->flushes; i != nullptr && *i != (ngx_uint_t) -1; i++) {
        if (uri_variable(view(vars[*i].name))) {
            r->variables[*i].valid = 0;
            r->variables[*i].not_found = 0;
        }
    }
}

}  // namespace

bool key_for_uri(ngx_http_request_t *r, LocConf *lcf, std::string_view uri,
                 std::string &key)
{
    // Evaluates the key as if this request's URI were `uri`: the variables
    // a key is made of ($request_uri, $uri, $args, $arg_*, $is_args) read
    // these fields.  They are put back after, and those variables forgotten
    // before and after.
    ngx_str_t saved_unparsed = r->unparsed_uri;
    ngx_str_t saved_uri = r->uri;
    ngx_str_t saved_args = r->args;

    size_t q = uri.find('?');
    std::string_view path = uri.substr(0, q);
    auto *decoded = static_cast<u_char *>(ngx_pnalloc(r->pool, path.size() + 1));
    if (decoded == nullptr) {
        return false;
    }
    u_char *dst = decoded;
    auto *src = reinterpret_cast<u_char *>(const_cast<char *>(path.data()));
    ngx_unescape_uri(&dst, &src, path.size(), NGX_UNESCAPE_URI);

    r->unparsed_uri.data = reinterpret_cast<u_char *>(const_cast<char *>(uri.data()));
    r->unparsed_uri.len = uri.size();
    r->uri.data = decoded;
    r->uri.len = static_cast<size_t>(dst - decoded);
    r->args.len = q == std::string_view::npos ? 0 : uri.size() - q - 1;
    r->args.data = r->args.len ? r->unparsed_uri.data + q + 1 : nullptr;
    forget_uri_variables(r, lcf->cache_key);

    ngx_str_t configured;
    ngx_int_t rc = ngx_http_complex_value(r, lcf->cache_key, &configured);

    r->unparsed_uri = saved_unparsed;
    r->uri = saved_uri;
    r->args = saved_args;
    forget_uri_variables(r, lcf->cache_key);

    if (rc != NGX_OK) {
        return false;
    }
    if (!core::build_key(view(configured), key)) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "fly_cache: key of %uz bytes not invalidated",
                      configured.len);
        return false;
    }
    return true;
}

ScriptCall *send_invalidation(ngx_http_request_t *r, LocConf *lcf,
                              Invalidation &&inv, ScriptDone done, void *data)
{
    MainConf *mcf = main_conf(r);
    if (inv.keys.empty() && inv.tags.empty()) {
        return nullptr;
    }
    core::Tombstone ts;
    ts.time_ms = now_ms();
    ts.has_lsn = write_position(r, &ts.lsn);    // issue 9
    std::string tomb = core::encode_tombstone(ts);
    std::string px = std::to_string(
        core::tombstone_ttl_ms(static_cast<int64_t>(lcf->cache_fence)));

    // The region sees its tombstones at once, without waiting for
    // replication (the epoch and tag records are the primary's alone).
    if (mcf->redis_client != mcf->redis_primary_client && mcf->redis_client != nullptr
        && !inv.keys.empty())
    {
        std::vector<std::string> local;
        local.reserve(1 + 2 * inv.keys.size() + 4);
        local.emplace_back(core::kEpochKey);
        for (const std::string &k : inv.keys) {
            local.push_back(k);
            local.push_back(core::fence_record_key(k));
        }
        size_t nkeys = local.size();
        local.insert(local.end(), {"0", "H", tomb, px});
        run_script(mcf->redis_client, invalidate_script, nkeys,
                   std::move(local), nullptr, nullptr);
    }

    // This worker's near cache lets go at once (the others when Redis
    // tells them).
    for (const std::string &k : inv.keys) {
        near_drop(k);
    }
    if (!inv.tags.empty()) {
        near_drop(core::kEpochKey);
    }

    std::vector<std::string> words;
    words.reserve(1 + inv.tags.size() + 2 * inv.keys.size() + 4);
    words.emplace_back(core::kEpochKey);
    for (const std::string &t : inv.tags) {
        words.push_back(core::tag_record_key(t));
    }
    for (std::string &k : inv.keys) {
        std::string record = core::fence_record_key(k);
        words.push_back(std::move(k));
        words.push_back(std::move(record));
    }
    size_t nkeys = words.size();
    words.insert(words.end(), {std::to_string(inv.tags.size()),
                               inv.soft_tags ? "S" : "H", tomb, px});

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: invalidate %uz keys, %uz tags%s",
                   inv.keys.size(), inv.tags.size(),
                   inv.soft_tags ? " (soft)" : "");
    ScriptCall *call = run_script(mcf->redis_primary_client, invalidate_script,
                                  nkeys, std::move(words), done, data);
    if (call == nullptr && log_allowed(&log_slot_primary)) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "fly_cache: the primary Redis is unavailable: "
                      "invalidation not sent");
    }
    return call;
}

namespace {

void invalidation_hold_cleanup(void *data) noexcept
{
    auto *h = static_cast<InvalidationHold *>(data);
    if (h->call != nullptr) {
        detach_script(h->call);          // the request is gone first
    }
    h->~InvalidationHold();
}

// The primary Redis answered the invalidation (or the command failed or
// timed out: the answer goes on all the same).
void on_invalidated(void *data, redisReply *) noexcept
{
    auto *h = static_cast<InvalidationHold *>(data);
    h->call = nullptr;
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, h->out.request()->connection->log, 0,
                   "fly cache: invalidation done, the write's answer goes");
    h->out.release();
}

}  // namespace

bool invalidate_on_write(ngx_http_request_t *r, LocConf *lcf,
                         ngx_http_output_header_filter_pt next_header,
                         ngx_http_output_body_filter_pt next_body)
{
    Invalidation inv;
    ngx_str_t configured;
    std::string key;
    if (ngx_http_complex_value(r, lcf->cache_key, &configured) == NGX_OK
        && core::build_key(view(configured), key))
    {
        inv.keys.push_back(std::move(key));
    }
    add_location_targets(r, lcf, inv);
    add_rule_targets(r, lcf, inv);

    // The answer waits for the primary Redis, so that the client cannot
    // read the old page from the cache with its next request.
    RequestCtx *ctx = create_ctx(r);
    InvalidationHold *h = nullptr;
    if (ctx != nullptr && ctx->invalidation == nullptr) {
        ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(r->pool,
                                                       sizeof(InvalidationHold));
        if (cln != nullptr) {
            h = new (cln->data) InvalidationHold();
            cln->handler = invalidation_hold_cleanup;
        }
    }
    ScriptCall *call = send_invalidation(r, lcf, std::move(inv),
                                         h ? on_invalidated : nullptr, h);
    if (call == nullptr) {
        return false;
    }
    metrics::count(r, core::Metric::cache_invalidations);
    if (h == nullptr) {
        return false;
    }
    h->call = call;
    ctx->invalidation = h;
    h->out.start(r, ctx, next_header, next_body);
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "fly cache: holding the write's answer for its invalidation");
    return true;
}

// fly_cache_purge_on_write ~REGEX | ~*REGEX TARGET ...;
char *set_cache_purge_on_write(ngx_conf_t *cf, ngx_command_t *cmd,
                               void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    auto error = [&](const char *fmt, ngx_str_t *arg) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, fmt, &cmd->name, arg);
        return static_cast<char *>(NGX_CONF_ERROR);
    };

    if (lcf->cache_purge_on_write == NGX_CONF_UNSET_PTR) {
        lcf->cache_purge_on_write = ngx_array_create(cf->pool, 2, sizeof(PurgeRule));
        if (lcf->cache_purge_on_write == nullptr) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
    }
    auto *rule = static_cast<PurgeRule *>(ngx_array_push(lcf->cache_purge_on_write));
    if (rule == nullptr) {
        return static_cast<char *>(NGX_CONF_ERROR);
    }

    ngx_str_t &re = value[1];
    if (re.len < 2 || re.data[0] != '~') {
        return error("\"%V\": the first argument must be ~REGEX or ~*REGEX, "
                     "not \"%V\"", &re);
    }
    u_char errstr[NGX_MAX_CONF_ERRSTR];
    ngx_regex_compile_t rc;
    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));
    bool caseless = re.data[1] == '*';
    rc.pattern.data = re.data + (caseless ? 2 : 1);
    rc.pattern.len = re.len - (caseless ? 2 : 1);
    rc.options = caseless ? NGX_REGEX_CASELESS : 0;
    rc.pool = cf->pool;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;
    if (rc.pattern.len == 0) {
        return error("\"%V\": empty regex in \"%V\"", &re);
    }
    // ngx_http_regex_compile() names the directive's file and line
    rule->regex = ngx_http_regex_compile(cf, &rc);
    if (rule->regex == nullptr) {
        return static_cast<char *>(NGX_CONF_ERROR);
    }

    rule->targets = ngx_array_create(cf->pool, cf->args->nelts - 2,
                                     sizeof(PurgeRuleTarget));
    if (rule->targets == nullptr) {
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    for (ngx_uint_t i = 2; i < cf->args->nelts; i++) {
        auto *t = static_cast<PurgeRuleTarget *>(ngx_array_push(rule->targets));
        if (t == nullptr) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        ngx_str_t text = value[i];
        t->tag = text.len > 4 && ngx_strncmp(text.data, "tag:", 4) == 0;
        if (t->tag) {
            text.data += 4;
            text.len -= 4;
        } else if (text.len == 0 || text.data[0] != '/') {
            return error("\"%V\": invalid target \"%V\", expected a URI "
                         "starting with \"/\" or \"tag:NAME\"", &value[i]);
        }
        ngx_http_compile_complex_value_t ccv;
        ngx_memzero(&ccv, sizeof(ccv));
        ccv.cf = cf;
        ccv.value = &text;
        ccv.complex_value = &t->value;
        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (t->tag && t->value.lengths == nullptr
            && !core::valid_tag(view(t->value.value)))
        {
            return error("\"%V\": invalid tag in \"%V\"", &value[i]);
        }
    }
    return static_cast<char *>(NGX_CONF_OK);
}

}  // namespace fly
