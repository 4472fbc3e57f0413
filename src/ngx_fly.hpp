// fly-edge nginx shell: the one header that includes nginx (inside
// extern "C") and declares what the shell's files share: the module,
// its configuration structures and the functions each file exports.
#pragma once

extern "C" {
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
}

#include "core/cache_rules.hpp"
#include "core/consistency.hpp"
#include "core/replay.hpp"

#include <string_view>

// nginx's generated ngx_modules.c refers to this symbol from C; it is the
// only symbol the shared object exports.
extern "C" __attribute__((visibility("default")))
ngx_module_t ngx_http_fly_edge_module;

namespace fly {

class RedisClient;
class PgClient;
class ConsistencyWorker;
struct ConsistencyHold;
struct MetricsConf;

// A Redis endpoint as configured (fly_redis / fly_redis_primary).
struct RedisConf {
    ngx_str_t url;               // after ${VAR} and {region} expansion
    ngx_str_t host;              // without [] for IPv6
    in_port_t port;
    ngx_str_t user;              // empty, or an ACL user for AUTH user pass
    ngx_str_t password;          // empty: no AUTH
    ngx_int_t db;                // SELECT when != 0
    ngx_addr_t *addrs;           // resolved at load time when no resolver
    ngx_uint_t naddrs;
    const char *name;            // "regional" or "primary", for logs
};

// A PostgreSQL endpoint as configured (fly_postgres / fly_postgres_primary),
// for libpq's PQconnectStartParams(): every setting of the conninfo, and
// hostaddr, which the client sets to the address it looked up.
struct PgConf {
    const char **keywords;       // NULL-terminated
    const char **values;         // values[hostaddr_at] is set per connection
    ngx_uint_t hostaddr_at;
    ngx_str_t settings;          // every "key=value" joined: two endpoints
                                 // are one when these are equal
    ngx_str_t host;              // name or address (Peer), without []
    in_port_t port;
    ngx_addr_t *addrs;           // resolved at load time when no resolver
    ngx_uint_t naddrs;
    const char *name;            // "regional" or "primary", for logs
};

struct MainConf {
    ngx_str_t region;            // fly_region / $FLY_REGION
    ngx_str_t primary_region;    // fly_primary_region / $PRIMARY_REGION
    ngx_flag_t is_primary;

    ngx_str_t redis_template;    // fly_redis as written, ${VAR} expanded
    ngx_str_t redis_primary_template;
    RedisConf redis;             // the region's Redis
    RedisConf redis_primary;     // the primary region's Redis
    ngx_msec_t redis_connect_timeout;
    ngx_msec_t redis_timeout;

    // Where the first directive that needs the regions was written, for
    // the error nginx -t prints when a region is unknown.
    ngx_str_t need_region_file;
    ngx_uint_t need_region_line;
    ngx_str_t need_redis_file;   // first "fly_cache on"
    ngx_uint_t need_redis_line;

    // PostgreSQL (ngx_fly_conf_pg.cpp)
    ngx_str_t pg_template;       // fly_postgres as written, ${VAR} expanded
    ngx_str_t pg_primary_template;
    PgConf pg;                   // the region's database (its replica)
    PgConf pg_primary;           // the primary's (the writable leader)
    ngx_msec_t pg_connect_timeout;
    ngx_msec_t pg_timeout;
    ngx_str_t need_pg_file;      // first fly_consistency lsn / fly_replica_max_lag
    ngx_uint_t need_pg_line;
    const char *need_pg_what;

    // Every location where a fly_replay_forward applies, to check that
    // its server has that named location (ngx_fly_replay.cpp).
    ngx_array_t *forward_uses;

    ngx_resolver_t *resolver;    // http-level `resolver`, nullptr if none
    ngx_msec_t resolver_timeout;

    RedisClient *redis_client;   // per worker, made in init_process
    RedisClient *redis_primary_client;  // == redis_client when the same
    ConsistencyWorker *consistency;     // per worker, with fly_postgres

    // near cache (ngx_fly_near.cpp)
    ngx_shm_zone_t *near_zone;   // fly_cache_near_zone; nullptr if none
    size_t near_max_entry;
    ngx_str_t need_near_file;    // first explicit "fly_cache_near on"
    ngx_uint_t need_near_line;
    MetricsConf *metrics;        // fly_status's zone (ngx_fly_metrics.cpp)
};

struct ValidRules;
struct PurgeConf;

struct LocConf {
    // replay (ngx_fly_conf_replay.cpp, ngx_fly_replay.cpp)
    ngx_uint_t replay;                  // core::ReplayMode, NGX_CONF_UNSET_UINT
    ngx_uint_t replay_methods;          // core::Method bits
    ngx_array_t *replay_method_names;   // std::string_view: other tokens
    ngx_array_t *replay_bypass;         // ngx_http_complex_value_t
    ngx_array_t *replay_when;           // ngx_http_complex_value_t
    ngx_array_t *replay_on_status;      // ngx_uint_t codes; nullptr = off
    ngx_uint_t replay_status;
    time_t replay_sticky;               // 0 = off
    size_t replay_max_body;
    ngx_str_t replay_forward;           // "@name" or empty
    ngx_flag_t replay_forward_always;
    ngx_str_t replay_forward_file;      // where fly_replay_forward was set
    ngx_uint_t replay_forward_line;

    // cache (ngx_fly_cache_*.cpp)
    ngx_flag_t cache;
    ngx_http_complex_value_t *cache_key;
    bool cache_key_default;             // ... is $scheme$host$request_uri
    ngx_uint_t cache_methods;           // core::Method bits
    ngx_array_t *cache_valid;           // core::ValidRule
    ngx_array_t *cache_bypass;          // ngx_http_complex_value_t
    ngx_array_t *cache_no_store;        // ngx_http_complex_value_t
    size_t cache_max_size;
    time_t cache_min_ttl;
    time_t cache_max_ttl;
    ngx_str_t cache_ttl_file;           // where min/max ttl were last set
    ngx_uint_t cache_ttl_line;
    ngx_flag_t cache_ignore_set_cookie;
    ngx_str_t cache_status_header;      // empty = off
    ngx_str_t cache_control_header;     // a field targeted at us; empty = off
    ngx_flag_t cache_control_pass;      // send targeted fields to the client
    ngx_flag_t cache_near;              // fly_cache_near (ngx_fly_near.cpp)

    // revalidation and stale (ngx_fly_cache_stale.cpp)
    ngx_flag_t cache_revalidate;        // fly_cache_revalidate
    ngx_uint_t cache_use_stale;         // core::stale_bit()s; UNSET_UINT
    time_t cache_stale;                 // fly_cache_stale; -1 = not set

    // the fill lock (ngx_fly_cache_lock.cpp)
    ngx_flag_t cache_lock;              // fly_cache_lock
    ngx_msec_t cache_lock_timeout;      // fly_cache_lock_timeout
    ngx_flag_t cache_background_update; // fly_cache_background_update

    // read your writes (ngx_fly_conf_pg.cpp, ngx_fly_consistency.cpp)
    ngx_uint_t consistency;             // core::ConsistencyMode
    ngx_msec_t consistency_wait;
    ngx_int_t replica_max_lag;          // ms; kMaxLagOffConf = off

    // invalidation, purge and tags (ngx_fly_cache_invalidate.cpp,
    // ngx_fly_purge.cpp)
    ngx_msec_t cache_fence;             // fly_cache_fence
    ngx_str_t cache_tags_header;        // fly_cache_tags_header
    ngx_flag_t cache_tags_pass;         // fly_cache_tags_pass
    PurgeConf *cache_purge;             // fly_cache_purge; nullptr = none
    ngx_array_t *cache_purge_on_write;  // PurgeRule (ngx_fly_purge.cpp)

    // metrics (ngx_fly_metrics.cpp): 1 + the index of the location's
    // name in its label table; 0 = none
    ngx_uint_t metrics_loc;
};

// fly_replica_max_lag off (NGX_CONF_UNSET is -1: the merge must tell the two apart).
constexpr ngx_int_t kMaxLagOffConf = -2;

enum class CacheStatus : uint8_t {
    none, hit, miss, bypass, expired, error, stale, updating, revalidated,
};

// $fly_cache_status and the fly_cache_status_header value.
inline std::string_view cache_status_name(CacheStatus s)
{
    static constexpr std::string_view names[] = {
        "", "HIT", "MISS", "BYPASS", "EXPIRED", "ERROR", "STALE", "UPDATING",
        "REVALIDATED",
    };
    return names[static_cast<size_t>(s)];
}

// $fly_cache_tier: which tier a HIT came from.
enum class CacheTier : uint8_t { none, redis, near };

inline std::string_view cache_tier_name(CacheTier t)
{
    static constexpr std::string_view names[] = {"", "redis", "near"};
    return names[static_cast<size_t>(t)];
}

struct CacheCtx;
struct InvalidationHold;

// Per-request state, found again after internal redirects (see
// get_ctx()).  Trivially destructible: it lives in the request pool.
struct RequestCtx {
    core::ReplayAction replay_action;
    ngx_str_t replay_state;             // $fly_replay
    bool replay_captured;               // fly_replay_on_status replaced the
                                        // app's answer: its body is dropped
    bool replay_flushed;                // ... and the replay answer flushed
    CacheStatus cache_status;           // $fly_cache_status
    CacheTier cache_tier;               // $fly_cache_tier
    CacheCtx *cache;                    // the cache's own state (ngx_fly_cache.hpp)

    // read your writes (ngx_fly_consistency.cpp)
    uint8_t consistency;                // ConsistencyState (ngx_fly_consistency.hpp)
    bool consistency_lag;               // its replay is state=lag (else lsn)
    bool clear_lsn_cookie;              // the answer clears fly-lsn
    bool lsn_skip_cache;                // its fence was just passed: the
                                        // cache is not read (is filled)
    bool has_write_lsn;                 // $fly_write_lsn: the request's fence
    uint64_t write_lsn;                 // (its cookie's, or the write's)
    ConsistencyHold *hold;              // a write's response held for its LSN
    InvalidationHold *invalidation;     // ... and for its invalidation
    uint8_t holds;                      // holds on (ngx_fly_hold.hpp)
};

// Small helpers the shell's files share.
inline std::string_view view(const ngx_str_t &s)
{
    return {reinterpret_cast<const char *>(s.data), s.len};
}

inline LocConf *loc_conf(ngx_http_request_t *r)
{
    return static_cast<LocConf *>(
        ngx_http_get_module_loc_conf(r, ngx_http_fly_edge_module));
}

inline MainConf *main_conf(ngx_http_request_t *r)
{
    return static_cast<MainConf *>(
        ngx_http_get_module_main_conf(r, ngx_http_fly_edge_module));
}

// The same while the configuration is read.
inline MainConf *main_conf(ngx_conf_t *cf)
{
    return static_cast<MainConf *>(
        ngx_http_conf_get_module_main_conf(cf, ngx_http_fly_edge_module));
}

// Calls f(ngx_table_elt_t &) for every live header of a list.
template <typename F>
void for_each_header(ngx_list_t &list, F &&f)
{
    for (ngx_list_part_t *part = &list.part; part; part = part->next) {
        auto *h = static_cast<ngx_table_elt_t *>(part->elts);
        for (ngx_uint_t i = 0; i < part->nelts; i++) {
            if (h[i].hash != 0) {
                f(h[i]);
            }
        }
    }
}

// ngx_http_fly_edge_module.cpp
RequestCtx *get_ctx(ngx_http_request_t *r);      // nullptr if none yet
RequestCtx *create_ctx(ngx_http_request_t *r);   // nullptr on no memory
uint32_t method_bit(ngx_uint_t ngx_method);      // NGX_HTTP_* -> core bit
// Appends `h` to the handlers of an HTTP phase (postconfiguration).
ngx_int_t add_phase_handler(ngx_conf_t *cf, ngx_http_phases phase,
                            ngx_http_handler_pt h);
// A copy of `s` in the pool (not NUL-terminated); nullptr on no memory.
u_char *pool_dup(ngx_pool_t *pool, std::string_view s);
// Adds a response header (name and value must outlive the request).
ngx_table_elt_t *push_header(ngx_http_request_t *r, std::string_view name,
                             std::string_view value);
// Sends a complete response of `status` whose body is a pool copy of `body`
// (content_type must outlive the request); returns what the content handler
// returns.
ngx_int_t send_small_response(ngx_http_request_t *r, ngx_uint_t status,
                              std::string_view content_type,
                              std::string_view body);

// ngx_fly_conf.cpp: directive handlers, create/merge conf
extern ngx_command_t commands[];
// A NUL-terminated copy of `in` in the pool (out.len excludes the NUL).
bool to_ngx(ngx_pool_t *pool, std::string_view in, ngx_str_t &out);
void *create_main_conf(ngx_conf_t *cf);
char *init_main_conf(ngx_conf_t *cf, void *conf);
void *create_loc_conf(ngx_conf_t *cf);
char *merge_loc_conf(ngx_conf_t *cf, void *parent, void *child);

void resolve_at_load(ngx_conf_t *cf, RedisConf &rc);
// The same for any host: `what` names it in the warning ("regional Redis").
void resolve_at_load(ngx_conf_t *cf, const ngx_str_t &host, in_port_t port,
                     ngx_addr_t *&addrs, ngx_uint_t &naddrs, const char *what);
// For directive handlers: records where the first directive that needs
// something was written (for a later error), and reads METHOD ... into
// core::Method bits (`allowed` limits them; with `names`, any other
// method token is kept there as std::string_view, else refused).
void remember_place(ngx_conf_t *cf, ngx_str_t &file, ngx_uint_t &line);
char *set_methods(ngx_conf_t *cf, ngx_command_t *cmd, ngx_uint_t &bits,
                  uint32_t allowed, ngx_array_t **names);

// ngx_fly_conf_replay.cpp: the fly_replay* directives and their part of
// create/merge (the command table is in ngx_fly_conf.cpp)
char *set_replay(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
char *set_replay_methods(ngx_conf_t *cf, ngx_command_t *cmd,
                         void *conf) noexcept;
char *set_replay_on_status(ngx_conf_t *cf, ngx_command_t *cmd,
                           void *conf) noexcept;
char *set_replay_status(ngx_conf_t *cf, ngx_command_t *cmd,
                        void *conf) noexcept;
char *set_replay_sticky(ngx_conf_t *cf, ngx_command_t *cmd,
                        void *conf) noexcept;
char *set_replay_forward(ngx_conf_t *cf, ngx_command_t *cmd,
                         void *conf) noexcept;
void init_replay_conf(LocConf *lcf);
char *merge_replay_conf(ngx_conf_t *cf, LocConf *prev, LocConf *conf);

// ngx_fly_conf_cache.cpp: the fly_cache* directive handlers and the cache's
// part of create/merge (the command table is in ngx_fly_conf.cpp)
char *set_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
char *set_cache_methods(ngx_conf_t *cf, ngx_command_t *cmd,
                        void *conf) noexcept;
char *set_cache_valid(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
char *set_header_name(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
char *set_tags_header(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
char *set_use_stale(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
char *set_ttl(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
// fly_cache_control_header refuses this name (Cache-Control itself).
extern ngx_str_t cache_control_name;
void init_cache_conf(LocConf *lcf);
char *merge_cache_conf(ngx_conf_t *cf, LocConf *prev, LocConf *conf);

// ngx_fly_conf_pg.cpp: fly_postgres*, fly_consistency*, fly_replica_max_lag
// (the command table is in ngx_fly_conf.cpp)
bool check_conninfo(ngx_conf_t *cf, ngx_command_t *cmd, std::string_view v);
char *set_consistency(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
char *set_replica_max_lag(ngx_conf_t *cf, ngx_command_t *cmd,
                          void *conf) noexcept;
void init_pg_main_conf(MainConf *mcf);
char *setup_pg_conf(ngx_conf_t *cf, MainConf *mcf);  // from init_main_conf
void resolve_pg_at_load(ngx_conf_t *cf, MainConf *mcf);
void init_consistency_conf(LocConf *lcf);
char *merge_consistency_conf(ngx_conf_t *cf, LocConf *prev, LocConf *conf);

// ngx_fly_variables.cpp
ngx_int_t add_variables(ngx_conf_t *cf);

// ngx_fly_replay.cpp
ngx_int_t replay_init(ngx_conf_t *cf);          // postconfiguration part
// The value of cookie `name` in the request (the first), if it has one.
bool request_cookie(ngx_http_request_t *r, std::string_view name,
                    std::string_view &value);
// Is the request a write: its method in fly_replay_methods, or a
// fly_replay_when value set?
bool replay_write(ngx_http_request_t *r, const LocConf *lcf);
// merge_loc_conf: `conf` forwards through fly_replay_forward; its server
// must have that named location (replay_init checks); false on no memory.
bool remember_forward_use(ngx_conf_t *cf, const LocConf *conf);

// ngx_fly_cache_lookup.cpp
ngx_int_t cache_init(ngx_conf_t *cf);           // postconfiguration part

// ngx_fly_consistency.cpp (see ngx_fly_consistency.hpp)
// Postconfiguration: the filter that clears fly-lsn (below the cache's
// fill filter, which must not see it), then, once the cache's filters are
// in, the ones that hold a write's response for its LSN (above them).
ngx_int_t consistency_clear_init(ngx_conf_t *cf);
ngx_int_t consistency_hold_init(ngx_conf_t *cf);

// ngx_fly_purge.cpp: fly_cache_purge (parsed and merged with the purge
// code it configures).
char *set_cache_purge(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
void merge_cache_purge(LocConf *prev, LocConf *conf);

// ngx_fly_cache_invalidate.cpp: fly_cache_purge_on_write.
char *set_cache_purge_on_write(ngx_conf_t *cf, ngx_command_t *cmd,
                               void *conf) noexcept;

// ngx_fly_event.cpp (with the rest of the event glue)
// Logs at most once per second per worker for each `slot` (a static
// time_t the caller owns), so a Redis outage cannot flood the log.
bool log_allowed(time_t *slot);

}  // namespace fly
