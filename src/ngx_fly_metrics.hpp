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

// PostgreSQL's WAL positions (ngx_fly_consistency.cpp's WalSampler):
// a position query of endpoint 0 (the region's database) or 1 (the
// primary, for the lag) gave `lsn` (ok) or nothing.
void pg_poll(size_t endpoint, bool ok, uint64_t lsn) noexcept;
// A replica region's sample of its replica: the lag (LagTracker, ms) and
// the position replayed (its WAL bytes behind the last primary sample).
void pg_replica_lag(int64_t lag_ms, uint64_t replica_lsn) noexcept;

// Waits on a WAL position, by outcome (the slots of MetricDim::lsn_wait).
enum class LsnWait : uint8_t {
    read_caught_up,     // the replica replayed the read's fly-lsn
    read_timeout,       // fly_consistency_wait was over first
    read_unreachable,   // the replica could not be asked
    read_lagging,       // further behind than fly_replica_max_lag
    read_sampled,       // the first sample came, nothing more to wait for
    read_abandoned,     // the request ended while parked
    write_positioned,   // a held write answer got the primary's position
    write_no_position,  // PostgreSQL did not give it (error, timeout)
    write_abandoned,    // the request ended while held
};
LsnWait read_wait(core::ConsistencyReason reason) noexcept;
// A wait that began at `since` (ngx_current_msec) is over.
void lsn_wait(LsnWait outcome, ngx_msec_t since) noexcept;

// The near cache (ngx_fly_near.cpp): keys named by an invalidation message.
void near_invalidation_keys(uint64_t n) noexcept;

}  // namespace metrics
}  // namespace fly
