// fly-edge nginx shell: the fly_replay* directives (values checked so
// that a mistake fails `nginx -t` naming the file and line), and the
// creation and merging of their part of the location configuration.
// The command table and the rest of the configuration are in
// ngx_fly_conf.cpp.
#include "ngx_fly.hpp"

namespace fly {

namespace {

using core::ReplayMode;

ngx_conf_enum_t replay_modes[] = {
    {ngx_string("off"), static_cast<ngx_uint_t>(ReplayMode::off)},
    {ngx_string("on"), static_cast<ngx_uint_t>(ReplayMode::on)},
    {ngx_string("always"), static_cast<ngx_uint_t>(ReplayMode::always)},
    {ngx_null_string, 0},
};

}  // namespace

// fly_replay off | on | always;
char *set_replay(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    if (lcf->replay != NGX_CONF_UNSET_UINT) {
        return const_cast<char *>("is duplicate");
    }
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    for (ngx_conf_enum_t *e = replay_modes; e->name.len; e++) {
        if (e->name.len == value[1].len
            && ngx_strncmp(e->name.data, value[1].data, value[1].len) == 0)
        {
            lcf->replay = e->value;
            if (e->value != static_cast<ngx_uint_t>(ReplayMode::off)) {
                MainConf *mcf = main_conf(cf);
                remember_place(cf, mcf->need_region_file,
                               mcf->need_region_line);
            }
            return static_cast<char *>(NGX_CONF_OK);
        }
    }
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\": invalid value \"%V\", expected \"off\", "
                       "\"on\" or \"always\"", &cmd->name, &value[1]);
    return static_cast<char *>(NGX_CONF_ERROR);
}

char *set_replay_methods(ngx_conf_t *cf, ngx_command_t *cmd,
                         void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    return set_methods(cf, cmd, lcf->replay_methods, ~0u,
                       &lcf->replay_method_names);
}

// fly_replay_on_status CODE ... | off;
char *set_replay_on_status(ngx_conf_t *cf, ngx_command_t *cmd,
                           void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    if (lcf->replay_on_status != NGX_CONF_UNSET_PTR) {
        return const_cast<char *>("is duplicate");
    }
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    if (cf->args->nelts == 2 && view(value[1]) == "off") {
        lcf->replay_on_status = nullptr;
        return static_cast<char *>(NGX_CONF_OK);
    }
    lcf->replay_on_status = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                             sizeof(ngx_uint_t));
    if (lcf->replay_on_status == nullptr) {
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    for (ngx_uint_t i = 1; i < cf->args->nelts; i++) {
        ngx_int_t n = ngx_atoi(value[i].data, value[i].len);
        if (n < 200 || n > 599) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": invalid status \"%V\", "
                               "expected a code from 200 to 599 or \"off\"",
                               &cmd->name, &value[i]);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        auto *slot = static_cast<ngx_uint_t *>(
            ngx_array_push(lcf->replay_on_status));
        if (slot == nullptr) {
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        *slot = static_cast<ngx_uint_t>(n);
    }
    return static_cast<char *>(NGX_CONF_OK);
}

// fly_replay_status CODE;
char *set_replay_status(ngx_conf_t *cf, ngx_command_t *cmd,
                        void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    if (lcf->replay_status != NGX_CONF_UNSET_UINT) {
        return const_cast<char *>("is duplicate");
    }
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    ngx_int_t n = ngx_atoi(value[1].data, value[1].len);
    if (n < 200 || n > 599) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": invalid status \"%V\", "
                           "expected a code from 200 to 599",
                           &cmd->name, &value[1]);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    lcf->replay_status = n;
    return static_cast<char *>(NGX_CONF_OK);
}

// fly_replay_sticky TIME | off;
char *set_replay_sticky(ngx_conf_t *cf, ngx_command_t *cmd,
                        void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    if (lcf->replay_sticky != NGX_CONF_UNSET) {
        return const_cast<char *>("is duplicate");
    }
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        lcf->replay_sticky = 0;
        return static_cast<char *>(NGX_CONF_OK);
    }
    ngx_int_t t = ngx_parse_time(&value[1], 1);
    if (t == NGX_ERROR || t == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": invalid time \"%V\"", &cmd->name,
                           &value[1]);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    lcf->replay_sticky = t;
    return static_cast<char *>(NGX_CONF_OK);
}

// fly_replay_forward @name [always];
char *set_replay_forward(ngx_conf_t *cf, ngx_command_t *cmd,
                         void *conf) noexcept
{
    auto *lcf = static_cast<LocConf *>(conf);
    if (lcf->replay_forward.data != nullptr) {
        return const_cast<char *>("is duplicate");
    }
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    if (value[1].len < 2 || value[1].data[0] != '@') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": \"%V\" is not a named location "
                           "(\"@name\")", &cmd->name, &value[1]);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    lcf->replay_forward = value[1];
    lcf->replay_forward_always = 0;
    lcf->replay_forward_file = cf->conf_file->file.name;
    lcf->replay_forward_line = cf->conf_file->line;
    if (cf->args->nelts == 3) {
        if (value[2].len != 6 || ngx_strncmp(value[2].data, "always", 6) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": invalid parameter \"%V\", "
                               "expected \"always\"", &cmd->name, &value[2]);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        lcf->replay_forward_always = 1;
    }
    return static_cast<char *>(NGX_CONF_OK);
}

void init_replay_conf(LocConf *lcf)
{
    // ngx_pcalloc set: replay_method_names, replay_forward (null = unset).
    lcf->replay = NGX_CONF_UNSET_UINT;
    lcf->replay_methods = NGX_CONF_UNSET_UINT;
    lcf->replay_bypass = static_cast<ngx_array_t *>(NGX_CONF_UNSET_PTR);
    lcf->replay_when = static_cast<ngx_array_t *>(NGX_CONF_UNSET_PTR);
    lcf->replay_on_status = static_cast<ngx_array_t *>(NGX_CONF_UNSET_PTR);
    lcf->replay_status = NGX_CONF_UNSET_UINT;
    lcf->replay_sticky = NGX_CONF_UNSET;
    lcf->replay_max_body = NGX_CONF_UNSET_SIZE;
    lcf->replay_forward_always = NGX_CONF_UNSET;
}

char *merge_replay_conf(ngx_conf_t *cf, LocConf *prev, LocConf *conf)
{
    ngx_conf_merge_uint_value(conf->replay, prev->replay,
                              static_cast<ngx_uint_t>(ReplayMode::off));
    if (conf->replay_methods == NGX_CONF_UNSET_UINT) {
        // the bits and the other tokens come from one directive
        conf->replay_method_names = prev->replay_method_names;
    }
    ngx_conf_merge_uint_value(conf->replay_methods, prev->replay_methods,
                              core::kDefaultReplayMethods);
    ngx_conf_merge_ptr_value(conf->replay_bypass, prev->replay_bypass, nullptr);
    ngx_conf_merge_ptr_value(conf->replay_when, prev->replay_when, nullptr);
    ngx_conf_merge_ptr_value(conf->replay_on_status, prev->replay_on_status,
                             nullptr);
    ngx_conf_merge_uint_value(conf->replay_status, prev->replay_status, 409);
    ngx_conf_merge_value(conf->replay_sticky, prev->replay_sticky, 0);
    ngx_conf_merge_size_value(conf->replay_max_body, prev->replay_max_body,
                              1024 * 1024);
    if (conf->replay_forward.data == nullptr) {
        conf->replay_forward = prev->replay_forward;
        conf->replay_forward_always = prev->replay_forward_always;
        conf->replay_forward_file = prev->replay_forward_file;
        conf->replay_forward_line = prev->replay_forward_line;
    }
    ngx_conf_merge_value(conf->replay_forward_always,
                         prev->replay_forward_always, 0);
    if (conf->replay_forward.len
        && conf->replay != static_cast<ngx_uint_t>(ReplayMode::off)
        && !remember_forward_use(cf, conf))
    {
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    return static_cast<char *>(NGX_CONF_OK);
}

}  // namespace fly
