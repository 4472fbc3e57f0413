// fly-edge nginx shell: the metrics (fly_status) and their shared zone.
//
// One shared-memory zone holds every counter of core/metrics_format.hpp's
// table; all workers add to it with atomics (no lock anywhere: a worker
// that dies mid-update leaves every counter valid).  The zone is reused
// across reloads (same name, size and layout), so counts survive them.
// Locations that use fly_cache get a label slot at configuration time,
// by name, in a table kept in the zone (append-only, written by the
// master only), so a location keeps its slot across reloads.
//
// The hooks other files call are one line each and cost an atomic add;
// they do nothing when the zone is missing.
#pragma once

#include "ngx_fly.hpp"
#include "core/metrics_format.hpp"

namespace fly {

struct MetricsConf;

namespace metrics {

// configuration (ngx_fly_conf.cpp, ngx_http_fly_edge_module.cpp)
char *set_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept;
// merge_loc_conf: gives a location with fly_cache on its label slot.
bool merge_loc(ngx_conf_t *cf, LocConf *conf) noexcept;
// postconfiguration: the zone and the log-phase handler that counts
// requests (cache status, replays, forwards).
ngx_int_t init(ngx_conf_t *cf) noexcept;

// counting from the request's code
void count(ngx_http_request_t *r, core::Metric m, uint64_t n = 1) noexcept;

// the Redis client (no request): endpoint 0 regional, 1 primary
enum class RedisEvent : uint8_t { command, error, timeout, reconnect };
size_t redis_endpoint(const RedisConf &conf) noexcept;
void redis(size_t endpoint, RedisEvent e) noexcept;
void redis_round_trip(size_t endpoint, uint64_t us) noexcept;

}  // namespace metrics
}  // namespace fly
