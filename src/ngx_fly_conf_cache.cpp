// fly-edge nginx shell: the fly_cache* directive handlers (values checked
// so that a mistake fails `nginx -t` naming the file and line), and the
// creation and merging of the cache's part of the location configuration.
// The command table and the rest of the configuration are in
// ngx_fly_conf.cpp; fly_cache_purge* in ngx_fly_purge.cpp and
// ngx_fly_cache_invalidate.cpp, fly_cache_near* in ngx_fly_near.cpp.
#include "ngx_fly.hpp"
#include "core/freshness.hpp"

#include <cctype>
#include <string_view>

namespace fly {

namespace {

// A header name directive (letters, digits, '-', '_') stored at
// cmd->offset; `off` (when allowed) stores an empty name; cmd->post, when
// set, is a name the directive refuses (an ngx_str_t).
char *set_header_name_or_off(ngx_conf_t *cf, ngx_command_t *cmd, void *conf,
                             bool off_allowed)
{
    auto *field = reinterpret_cast<ngx_str_t *>(static_cast<char *>(conf)
                                                + cmd->offset);
    if (field->data != nullptr) {
        return const_cast<char *>("is duplicate");
    }
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    if (off_allowed && value[1].len == 3
        && ngx_strncmp(value[1].data, "off", 3) == 0)
    {
        field->data = reinterpret_cast<u_char *>(const_cast<char *>(""));
        field->len = 0;
        return static_cast<char *>(NGX_CONF_OK);
    }
    for (size_t i = 0; i <= value[1].len; i++) {
        u_char c = i < value[1].len ? value[1].data[i] : '-';
        if (value[1].len == 0 || !(isalnum(c) || c == '-' || c == '_')) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": invalid header name \"%V\"",
                               &cmd->name, &value[1]);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
    }
    auto *refused = static_cast<const ngx_str_t *>(cmd->post);
    if (refused != nullptr && value[1].len == refused->len
        && ngx_strncasecmp(value[1].data, refused->data, refused->len) == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": \"%V\" cannot be used here",
                           &cmd->name, &value[1]);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    *field = value[1];
    return static_cast<char *>(NGX_CONF_OK);
}

}  // namespace

char *set_cache_methods(ngx_conf_t *cf, ngx_command_t *cmd,
                        void *conf) noexcept
{
    return set_methods(cf, cmd, static_cast<LocConf *>(conf)->cache_methods,
                       core::kGet | core::kHead, nullptr);
}

// fly_cache on | off;
char *set_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    char *rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if (rv == NGX_CONF_OK && static_cast<LocConf *>(conf)->cache == 1) {
        MainConf *mcf = main_conf(cf);
        remember_place(cf, mcf->need_redis_file, mcf->need_redis_line);
    }
    return rv;
}

// fly_cache_valid [code ...] TIME;   codes are 100..599 or "any";
// without codes: 200 301 302 (as proxy_cache_valid).
char *set_cache_valid(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    ngx_uint_t n = cf->args->nelts - 1;

    ngx_int_t ttl = ngx_parse_time(&value[n], 1);
    if (ttl == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": invalid time \"%V\"",
                           &cmd->name, &value[n]);
        return static_cast<char *>(NGX_CONF_ERROR);
    }

    if (lcf->cache_valid == nullptr) {
        lcf->cache_valid = ngx_array_create(cf->pool, 4,
                                            sizeof(core::ValidRule));
        if (lcf->cache_valid == nullptr) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
    }

    auto add = [&](int status) {
        auto *rule = static_cast<core::ValidRule *>(
            ngx_array_push(lcf->cache_valid));
        if (rule == nullptr) {
            return false;
        }
        rule->status = status;
        rule->ttl = ttl;
        return true;
    };

    if (n == 1) {
        for (int s : {200, 301, 302}) {
            if (!add(s)) {
                return static_cast<char *>(NGX_CONF_ERROR);
            }
        }
        return static_cast<char *>(NGX_CONF_OK);
    }

    for (ngx_uint_t i = 1; i < n; i++) {
        int status;
        if (value[i].len == 3 && ngx_strncmp(value[i].data, "any", 3) == 0) {
            status = 0;
        } else {
            ngx_int_t s = ngx_atoi(value[i].data, value[i].len);
            if (s < 100 || s > 599) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\": invalid status \"%V\"",
                                   &cmd->name, &value[i]);
                return static_cast<char *>(NGX_CONF_ERROR);
            }
            status = static_cast<int>(s);
        }
        if (!add(status)) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
    }
    return static_cast<char *>(NGX_CONF_OK);
}

// fly_cache_status_header NAME | off; fly_cache_control_header NAME | off;
char *set_header_name(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    return set_header_name_or_off(cf, cmd, conf, true);
}

// fly_cache_tags_header NAME;
char *set_tags_header(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    return set_header_name_or_off(cf, cmd, conf, false);
}

// fly_cache_control_header names a field that stands in for Cache-Control.
ngx_str_t cache_control_name = ngx_string("Cache-Control");

// fly_cache_use_stale error | timeout | updating | http_500 | http_502 |
// http_503 | http_504 ... | off;
char *set_use_stale(ngx_conf_t *cf, ngx_command_t *, void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    if (lcf->cache_use_stale != NGX_CONF_UNSET_UINT) {
        return const_cast<char *>("is duplicate");
    }
    static constexpr struct {
        std::string_view name;
        core::StaleCause cause;
    } kCauses[] = {
        {"error", core::StaleCause::error},
        {"timeout", core::StaleCause::timeout},
        {"http_500", core::StaleCause::http_500},
        {"http_502", core::StaleCause::http_502},
        {"http_503", core::StaleCause::http_503},
        {"http_504", core::StaleCause::http_504},
    };
    auto *args = static_cast<ngx_str_t *>(cf->args->elts);
    ngx_uint_t bits = 0;
    bool off = false;
    for (ngx_uint_t i = 1; i < cf->args->nelts; i++) {
        std::string_view a = view(args[i]);
        if (a == "off") {
            off = true;
            continue;
        }
        bool known = false;
        if (a == "updating") {
            bits |= core::kUseStaleUpdating;
            continue;
        }
        for (const auto &c : kCauses) {
            if (a == c.name) {
                bits |= core::stale_bit(c.cause);
                known = true;
            }
        }
        if (!known) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in "
                               "\"fly_cache_use_stale\"", &args[i]);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
    }
    if (off && (bits != 0 || cf->args->nelts > 2)) {
        return const_cast<char *>("has \"off\" with other values");
    }
    lcf->cache_use_stale = bits;
    return static_cast<char *>(NGX_CONF_OK);
}

// fly_cache_min_ttl TIME; fly_cache_max_ttl TIME; checked against each
// other when both are set at the same level (and again when merging).
char *set_ttl(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    char *rv = ngx_conf_set_sec_slot(cf, cmd, conf);
    auto *lcf = static_cast<LocConf *>(conf);
    lcf->cache_ttl_file = cf->conf_file->file.name;
    lcf->cache_ttl_line = cf->conf_file->line;
    if (rv == NGX_CONF_OK && lcf->cache_min_ttl != NGX_CONF_UNSET
        && lcf->cache_max_ttl != NGX_CONF_UNSET && lcf->cache_max_ttl
        && lcf->cache_min_ttl > lcf->cache_max_ttl)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"fly_cache_min_ttl\" is greater than "
                           "\"fly_cache_max_ttl\"");
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    return rv;
}

void init_cache_conf(LocConf *lcf)
{
    lcf->cache = NGX_CONF_UNSET;
    lcf->cache_methods = NGX_CONF_UNSET_UINT;
    lcf->cache_bypass = static_cast<ngx_array_t *>(NGX_CONF_UNSET_PTR);
    lcf->cache_no_store = static_cast<ngx_array_t *>(NGX_CONF_UNSET_PTR);
    lcf->cache_max_size = NGX_CONF_UNSET_SIZE;
    lcf->cache_min_ttl = NGX_CONF_UNSET;
    lcf->cache_max_ttl = NGX_CONF_UNSET;
    lcf->cache_ignore_set_cookie = NGX_CONF_UNSET;
    lcf->cache_control_pass = NGX_CONF_UNSET;
    lcf->cache_near = NGX_CONF_UNSET;
    lcf->cache_fence = NGX_CONF_UNSET_MSEC;
    lcf->cache_revalidate = NGX_CONF_UNSET;
    lcf->cache_use_stale = NGX_CONF_UNSET_UINT;
    lcf->cache_stale = NGX_CONF_UNSET;
    lcf->cache_lock = NGX_CONF_UNSET;
    lcf->cache_lock_timeout = NGX_CONF_UNSET_MSEC;
    lcf->cache_background_update = NGX_CONF_UNSET;
    lcf->cache_tags_pass = NGX_CONF_UNSET;
    lcf->cache_purge_on_write = static_cast<ngx_array_t *>(NGX_CONF_UNSET_PTR);
}

char *merge_cache_conf(ngx_conf_t *cf, LocConf *prev, LocConf *conf)
{
    ngx_conf_merge_value(conf->cache, prev->cache, 0);
    if (conf->cache_key == nullptr) {
        conf->cache_key = prev->cache_key;
        conf->cache_key_default = prev->cache_key_default;
    }
    if (conf->cache_key == nullptr) {
        conf->cache_key_default = true;
        // $scheme$host$request_uri: the host is always part of the key.
        conf->cache_key = static_cast<ngx_http_complex_value_t *>(
            ngx_pcalloc(cf->pool, sizeof(ngx_http_complex_value_t)));
        if (conf->cache_key == nullptr) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        ngx_str_t def = ngx_string("$scheme$host$request_uri");
        ngx_http_compile_complex_value_t ccv;
        ngx_memzero(&ccv, sizeof(ccv));
        ccv.cf = cf;
        ccv.value = &def;
        ccv.complex_value = conf->cache_key;
        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
    }
    ngx_conf_merge_uint_value(conf->cache_methods, prev->cache_methods,
                              core::kGet | core::kHead);
    if (conf->cache_valid == nullptr) {
        conf->cache_valid = prev->cache_valid;
    }
    ngx_conf_merge_ptr_value(conf->cache_bypass, prev->cache_bypass, nullptr);
    ngx_conf_merge_ptr_value(conf->cache_no_store, prev->cache_no_store,
                             nullptr);
    ngx_conf_merge_size_value(conf->cache_max_size, prev->cache_max_size,
                              1024 * 1024);
    ngx_conf_merge_value(conf->cache_min_ttl, prev->cache_min_ttl, 0);
    ngx_conf_merge_value(conf->cache_max_ttl, prev->cache_max_ttl, 0);
    ngx_conf_merge_value(conf->cache_ignore_set_cookie,
                         prev->cache_ignore_set_cookie, 0);
    ngx_conf_merge_str_value(conf->cache_status_header,
                             prev->cache_status_header, "");
    ngx_conf_merge_str_value(conf->cache_control_header,
                             prev->cache_control_header, "");
    ngx_conf_merge_value(conf->cache_control_pass, prev->cache_control_pass, 0);
    ngx_conf_merge_value(conf->cache_near, prev->cache_near, 1);
    ngx_conf_merge_msec_value(conf->cache_fence, prev->cache_fence, 2000);
    ngx_conf_merge_value(conf->cache_revalidate, prev->cache_revalidate, 1);
    ngx_conf_merge_uint_value(conf->cache_use_stale, prev->cache_use_stale, 0);
    ngx_conf_merge_sec_value(conf->cache_stale, prev->cache_stale,
                             NGX_CONF_UNSET);
    ngx_conf_merge_value(conf->cache_lock, prev->cache_lock, 0);
    ngx_conf_merge_msec_value(conf->cache_lock_timeout,
                              prev->cache_lock_timeout, 5000);
    ngx_conf_merge_value(conf->cache_background_update,
                         prev->cache_background_update, 0);
    ngx_conf_merge_str_value(conf->cache_tags_header, prev->cache_tags_header,
                             "Cache-Tag");
    ngx_conf_merge_value(conf->cache_tags_pass, prev->cache_tags_pass, 0);
    ngx_conf_merge_ptr_value(conf->cache_purge_on_write,
                             prev->cache_purge_on_write, nullptr);
    merge_cache_purge(prev, conf);

    if (conf->cache_ttl_line == 0) {
        conf->cache_ttl_file = prev->cache_ttl_file;
        conf->cache_ttl_line = prev->cache_ttl_line;
    }
    if (conf->cache_max_ttl && conf->cache_min_ttl > conf->cache_max_ttl) {
        // an inherited mix: name the last of the two directives
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"fly_cache_min_ttl\" is greater than "
                      "\"fly_cache_max_ttl\" in %V:%ui",
                      &conf->cache_ttl_file, conf->cache_ttl_line);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    return static_cast<char *>(NGX_CONF_OK);
}

}  // namespace fly
