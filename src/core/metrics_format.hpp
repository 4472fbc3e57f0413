// fly-edge core: the metrics the fly_status endpoint serves.
//
// One table (FLY_METRICS below) describes every metric family: its name,
// type, up to two label dimensions and its help text.  From it come the
// layout of the values in the shared-memory zone (a flat array of 64-bit
// counters, one per series; a histogram series takes its buckets, +Inf
// and the sum) and the Prometheus text format (0.0.4) the endpoint sends.
// Adding a metric is one line in the table plus the call that counts it.
// No nginx types: the shell takes a snapshot of the zone's values and
// passes it here with the label values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fly::core {

// gauge_seconds: a gauge kept in microseconds, sent in seconds.
enum class MetricType : uint8_t { counter, gauge, gauge_seconds, histogram };

// A label dimension: the label(s) and how many values it can have (its
// slots, fixed so that the layout is fixed).  The values of a slot are
// given at format time (see MetricLabels); an empty one is not emitted.
enum class MetricDim : uint8_t {
    none,
    location,       // location="<name>": kMetricLocations slots, 0 = "_other"
    cache_status,   // status="HIT" ...: indexed by the shell's CacheStatus
    replay_state,   // state="method" ...
    refusal,        // reason="loop" ...
    endpoint,       // endpoint="host:port",role="regional|primary"
    pg_endpoint,    // the same, of fly_postgres / fly_postgres_primary
    pg_replica,     // the same, of fly_postgres alone (the region's database)
    lsn_wait,       // wait="read|write",outcome="caught_up" ...
    cache_tier,     // tier="redis|near": indexed by the shell's CacheTier
    count_
};

constexpr size_t kMetricLocations = 128;
constexpr size_t kMetricCacheStatuses = 16;
constexpr size_t kMetricReplayStates = 10;
constexpr size_t kMetricRefusals = 4;
constexpr size_t kMetricEndpoints = 2;
constexpr size_t kMetricLsnWaits = 9;
constexpr size_t kMetricCacheTiers = 3;

constexpr size_t metric_dim_size(MetricDim d)
{
    switch (d) {
    case MetricDim::location: return kMetricLocations;
    case MetricDim::cache_status: return kMetricCacheStatuses;
    case MetricDim::replay_state: return kMetricReplayStates;
    case MetricDim::refusal: return kMetricRefusals;
    case MetricDim::endpoint: return kMetricEndpoints;
    case MetricDim::pg_endpoint: return kMetricEndpoints;
    case MetricDim::lsn_wait: return kMetricLsnWaits;
    case MetricDim::cache_tier: return kMetricCacheTiers;
    default: return 1;
    }
}

// id, name, type, first and second label dimension, help.
#define FLY_METRICS(X)                                                        \
    X(cache_requests, "fly_edge_cache_requests_total", counter, location,     \
      cache_status, "Requests that went through fly_cache, by location and "  \
      "$fly_cache_status.")                                                   \
    X(cache_served_bytes, "fly_edge_cache_served_bytes_total", counter,       \
      location, none, "Response body bytes sent from the cache (HIT, STALE, " \
      "UPDATING).")                                                           \
    X(cache_invalidations, "fly_edge_cache_invalidations_total", counter,     \
      none, none, "Invalidations sent to the primary Redis after a "          \
      "successful unsafe request.")                                           \
    X(cache_purges, "fly_edge_cache_purges_total", counter, none, none,     \
      "Purges (fly_cache_purge: URLs or tags) the primary Redis took.")      \
    X(replays, "fly_edge_replays_total", counter, replay_state, none,         \
      "fly-replay answers sent, by their state (the reason).")               \
    X(replay_refusals, "fly_edge_replay_refusals_total", counter, refusal,    \
      none, "Requests that had to be replayed and could not be (503 loop, "  \
      "413 too large, 411 no length).")                                       \
    X(forwards, "fly_edge_forwards_total", counter, none, none,               \
      "Requests forwarded to the primary through fly_replay_forward.")       \
    X(redis_commands, "fly_edge_redis_commands_total", counter, endpoint,     \
      none, "Redis commands sent.")                                           \
    X(redis_errors, "fly_edge_redis_errors_total", counter, endpoint, none,   \
      "Redis commands that failed: not sent (Redis unavailable), lost with "  \
      "the connection, or answered with an error.")                          \
    X(redis_timeouts, "fly_edge_redis_timeouts_total", counter, endpoint,     \
      none, "Redis commands that timed out (fly_redis_timeout).")            \
    X(redis_reconnects, "fly_edge_redis_reconnects_total", counter,           \
      endpoint, none, "Redis connections made again after one was lost or "  \
      "could not be made.")                                                   \
    X(redis_round_trip, "fly_edge_redis_round_trip_seconds", histogram,       \
      endpoint, none, "Time from a Redis command's write to its reply.")      \
    X(cache_tier_hits, "fly_edge_cache_tier_hits_total", counter, location,   \
      cache_tier, "HITs by the tier that answered them ($fly_cache_tier: "    \
      "near, the worker's shared zone; redis, the regional Redis).")         \
    X(near_inserts, "fly_edge_near_inserts_total", counter, none, none,       \
      "Entries stored in the near cache zone (fly_cache_near_zone).")        \
    X(near_evictions, "fly_edge_near_evictions_total", counter, none, none,   \
      "Near cache entries evicted (least recently used) to make room.")      \
    X(near_invalidations, "fly_edge_near_invalidations_total", counter, none, \
      none, "Near cache entries removed by an invalidation (Redis client "   \
      "tracking, or this nginx's own writes and purges).")                    \
    X(near_store_failures, "fly_edge_near_store_failures_total", counter,     \
      none, none, "Values not stored in the near cache: no room, even after " \
      "evicting.")                                                            \
    X(near_invalidation_keys, "fly_edge_near_invalidation_keys_received_total",\
      counter, none, none, "Keys named in the invalidation messages Redis "   \
      "pushed to the workers (__redis__:invalidate).")                        \
    X(near_entries, "fly_edge_near_entries", gauge, none, none,               \
      "Entries in the near cache zone now.")                                  \
    X(near_used_bytes, "fly_edge_near_used_bytes", gauge, none, none,         \
      "Bytes the near cache zone's entries take now (keys, values and their " \
      "headers).")                                                            \
    X(pg_polls, "fly_edge_pg_position_polls_total", counter, pg_endpoint,     \
      none, "WAL position queries asked of PostgreSQL (the regional "         \
      "database's position, the primary's for the lag).")                    \
    X(pg_poll_failures, "fly_edge_pg_position_poll_failures_total", counter,  \
      pg_endpoint, none, "WAL position queries that gave no position (not "  \
      "sent, timed out, lost, an error or an unreadable answer).")           \
    X(pg_replica_up, "fly_edge_pg_replica_up", gauge, pg_replica, none,       \
      "1 when the last sample of the region's database gave its position, "  \
      "else 0.")                                                              \
    X(pg_replica_lag, "fly_edge_pg_replica_lag_seconds", gauge_seconds,       \
      pg_replica, none, "How far the region's replica's replay is behind "    \
      "what the primary had written, as last sampled ($fly_replica_lag; 0 "   \
      "in the primary region).")                                              \
    X(pg_replica_lag_bytes, "fly_edge_pg_replica_lag_bytes", gauge,           \
      pg_replica, none, "WAL bytes between the primary's last sampled write " \
      "position and the replica's replay position sampled after it (0 in "    \
      "the primary region).")                                                 \
    X(lsn_waits, "fly_edge_lsn_waits_total", counter, lsn_wait, none,        \
      "Waits on a WAL position, by outcome: reads parked for the replica "    \
      "(fly_consistency_wait), write answers held for the primary's "         \
      "position.")                                                            \
    X(lsn_wait_time, "fly_edge_lsn_wait_seconds", histogram, lsn_wait, none,  \
      "How long those waits took, by outcome.")

enum class Metric : uint16_t {
#define FLY_METRIC_ID(id, ...) id,
    FLY_METRICS(FLY_METRIC_ID)
#undef FLY_METRIC_ID
    count_
};

struct MetricDesc {
    const char *name;
    MetricType type;
    MetricDim dim1;
    MetricDim dim2;
    const char *help;
};

const MetricDesc &metric_desc(Metric m);

// Histogram buckets (upper bounds, microseconds); a histogram series is
// kHistogramBuckets counts (not cumulative), the +Inf count, the sum in
// microseconds.
constexpr size_t kHistogramBuckets = 13;
extern const uint64_t kHistogramBoundsUs[kHistogramBuckets];
constexpr size_t kHistogramValues = kHistogramBuckets + 2;
// The value index (within a series) an observation of `us` goes to.
size_t histogram_bucket(uint64_t us);

// Where the values of series (i1, i2) of `m` start in the flat array
// (i1, i2 < the dimensions' sizes; 0 for none).
size_t metric_index(Metric m, size_t i1 = 0, size_t i2 = 0);
size_t metrics_value_count();
// Changes whenever the table, the dimensions or the buckets change: a zone
// of another layout must not be reused.
uint64_t metrics_layout_hash();

// `name="value"` with the value escaped as the text format wants.
std::string metric_label(std::string_view name, std::string_view value);

// The label text of each slot of each dimension (already `k="v"`, several
// joined with ','); a missing or empty entry: the slot is not emitted.
struct MetricLabels {
    std::vector<std::string> dims[static_cast<size_t>(MetricDim::count_)];

    std::vector<std::string> &of(MetricDim d)
    {
        return dims[static_cast<size_t>(d)];
    }
    const std::vector<std::string> &of(MetricDim d) const
    {
        return dims[static_cast<size_t>(d)];
    }
};

// Appends every family, in table order, to `out` (text format 0.0.4:
// HELP and TYPE lines, then the samples; histograms as _bucket with
// cumulative `le`, _sum in seconds and _count).  `values` has
// metrics_value_count() entries.
void format_metrics(const uint64_t *values, const MetricLabels &labels,
                    std::string &out);

}  // namespace fly::core
