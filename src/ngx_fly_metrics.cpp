// fly-edge nginx shell: the metrics zone, the counting hooks and the
// fly_status content handler (Prometheus text format 0.0.4).
#include "ngx_fly_metrics.hpp"
#include "ngx_fly_near.hpp"

#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace fly {

namespace {

constexpr size_t kNameMax = 128;            // a location label, NUL included
constexpr uint64_t kMagic = 0x666c792d6d657472ull;   // "fly-metr"

// The zone's contents.  Written only with atomics (values, nlocations) or
// by the master before it publishes them (names).
struct MetricsShm {
    uint64_t magic;
    uint64_t layout;
    ngx_atomic_t nlocations;                 // slots named; slot 0 "_other"
    char names[core::kMetricLocations][kNameMax];
    // then metrics_value_count() ngx_atomic_t values (see values_of())
};

constexpr size_t kValuesOffset =
    (sizeof(MetricsShm) + alignof(ngx_atomic_t) - 1)
    / alignof(ngx_atomic_t) * alignof(ngx_atomic_t);

size_t shm_bytes()
{
    return kValuesOffset + core::metrics_value_count() * sizeof(ngx_atomic_t);
}

ngx_atomic_t *values_of(MetricsShm *shm)
{
    return reinterpret_cast<ngx_atomic_t *>(reinterpret_cast<char *>(shm)
                                            + kValuesOffset);
}

// The $fly_cache_status values by CacheStatus (index 0, none, is never
// counted).  A new CacheStatus needs its name here to be shown.
constexpr size_t kCacheStatusCount =
    static_cast<size_t>(CacheStatus::revalidated) + 1;
static_assert(kCacheStatusCount <= core::kMetricCacheStatuses,
              "the status dimension has a slot for each CacheStatus");

// fly-replay states (the last slot: any other)
constexpr std::string_view kReplayStates[] = {
    "always", "method", "when", "sticky", "captured", "lsn", "lag",
};
constexpr size_t kOtherState = core::kMetricReplayStates - 1;
static_assert(sizeof(kReplayStates) / sizeof(kReplayStates[0]) < kOtherState,
              "room for the other state");

constexpr std::string_view kRefusals[] = {"loop", "too_large", "no_length"};

// The waits on a WAL position, by metrics::LsnWait.
struct LsnWaitName {
    std::string_view wait, outcome;
};
constexpr LsnWaitName kLsnWaits[] = {
    {"read", "caught_up"}, {"read", "timeout"}, {"read", "unreachable"},
    {"read", "lagging"}, {"read", "sampled"}, {"read", "abandoned"},
    {"write", "positioned"}, {"write", "no_position"}, {"write", "abandoned"},
};
static_assert(sizeof(kLsnWaits) / sizeof(kLsnWaits[0])
                  == core::kMetricLsnWaits,
              "a label for each LsnWait");

static_assert(static_cast<size_t>(CacheTier::near) < core::kMetricCacheTiers,
              "the tier dimension has a slot for each CacheTier");

// The primary's position at this worker's last sample of it (for the
// replica's lag in bytes).
uint64_t g_primary_lsn;

}  // namespace

struct MetricsConf {
    ngx_shm_zone_t *zone;
    ngx_array_t *names;          // ngx_str_t: location names, config order
    ngx_uint_t *slots;           // names[i] -> its slot in the zone
    MetricsShm *shm;             // set by init_zone
};

namespace metrics {

namespace {

MetricsConf *conf_of(ngx_conf_t *cf)
{
    MainConf *mcf = main_conf(cf);
    if (mcf->metrics == nullptr) {
        mcf->metrics = static_cast<MetricsConf *>(
            ngx_pcalloc(cf->pool, sizeof(MetricsConf)));
    }
    return mcf->metrics;
}

MetricsShm *shm_of(MainConf *mcf)
{
    return mcf != nullptr && mcf->metrics != nullptr ? mcf->metrics->shm
                                                     : nullptr;
}

MetricsShm *shm_of(ngx_http_request_t *r)
{
    return shm_of(main_conf(r));
}

// The worker's current configuration (for code without a request).
MetricsShm *shm_of_cycle()
{
    if (ngx_cycle == nullptr || ngx_cycle->conf_ctx == nullptr
        || ngx_cycle->conf_ctx[ngx_http_module.index] == nullptr)
    {
        return nullptr;
    }
    return shm_of(static_cast<MainConf *>(ngx_http_cycle_get_module_main_conf(
        ngx_cycle, ngx_http_fly_edge_module)));
}

inline void add(MetricsShm *shm, size_t index, uint64_t n)
{
    ngx_atomic_fetch_add(&values_of(shm)[index],
                         static_cast<ngx_atomic_int_t>(n));
}

// A gauge: the last value any worker measured (an aligned word store).
inline void set(MetricsShm *shm, size_t index, uint64_t v)
{
    values_of(shm)[index] = static_cast<ngx_atomic_uint_t>(v);
}

void observe(MetricsShm *shm, size_t at, uint64_t us)
{
    add(shm, at + core::histogram_bucket(us), 1);
    add(shm, at + core::kHistogramBuckets + 1, us);
}

// A slot for each location name: the one it had (a reload), else a new one
// while there is room, else "_other".  Only the master runs this.
void assign_slots(MetricsConf *mc, MetricsShm *shm, ngx_log_t *log)
{
    if (mc->names == nullptr) {
        return;
    }
    auto *names = static_cast<ngx_str_t *>(mc->names->elts);
    for (ngx_uint_t i = 0; i < mc->names->nelts; i++) {
        size_t len = names[i].len < kNameMax - 1 ? names[i].len : kNameMax - 1;
        ngx_atomic_uint_t n = shm->nlocations;
        ngx_uint_t slot = 0;
        for (ngx_atomic_uint_t s = 1; s < n; s++) {
            if (std::strlen(shm->names[s]) == len
                && std::memcmp(shm->names[s], names[i].data, len) == 0)
            {
                slot = s;
                break;
            }
        }
        if (slot == 0 && n < core::kMetricLocations) {
            std::memcpy(shm->names[n], names[i].data, len);
            shm->names[n][len] = '\0';
            ngx_memory_barrier();
            shm->nlocations = n + 1;
            slot = n;
        } else if (slot == 0) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "fly_status: more than %uz locations with "
                          "fly_cache, location \"%V\" counted as \"_other\"",
                          core::kMetricLocations - 1, &names[i]);
        }
        mc->slots[i] = slot;
    }
}

ngx_int_t init_zone(ngx_shm_zone_t *zone, void *data) noexcept
{
    auto *mc = static_cast<MetricsConf *>(zone->data);
    auto *sp = reinterpret_cast<ngx_slab_pool_t *>(zone->shm.addr);
    if (data != nullptr) {
        mc->shm = static_cast<MetricsConf *>(data)->shm;   // a reload
    } else if (zone->shm.exists) {
        mc->shm = static_cast<MetricsShm *>(sp->data);
    } else {
        auto *shm = static_cast<MetricsShm *>(ngx_slab_alloc(sp, shm_bytes()));
        if (shm == nullptr) {
            return NGX_ERROR;
        }
        ngx_memzero(shm, shm_bytes());
        shm->magic = kMagic;
        shm->layout = core::metrics_layout_hash();
        shm->nlocations = 1;
        sp->data = shm;
        static u_char log_ctx[] = " in fly_edge metrics zone";
        sp->log_ctx = log_ctx;
        mc->shm = shm;
    }
    if (mc->shm == nullptr || mc->shm->magic != kMagic
        || mc->shm->layout != core::metrics_layout_hash())
    {
        mc->shm = nullptr;
        ngx_log_error(NGX_LOG_ALERT, zone->shm.log, 0,
                      "fly_edge: metrics zone of another layout");
        return NGX_ERROR;
    }
    assign_slots(mc, mc->shm, zone->shm.log);
    return NGX_OK;
}

size_t state_index(std::string_view state)
{
    for (size_t i = 0; i < sizeof(kReplayStates) / sizeof(kReplayStates[0]);
         i++)
    {
        if (kReplayStates[i] == state) {
            return i;
        }
    }
    return kOtherState;
}

// Log phase: what happened to the request, once (r is the main request).
ngx_int_t log_handler(ngx_http_request_t *r) noexcept
{
    MetricsShm *shm = shm_of(r);
    RequestCtx *ctx = shm != nullptr ? get_ctx(r) : nullptr;
    if (ctx == nullptr) {
        return NGX_OK;
    }
    using core::Metric;
    if (ctx->cache_status != CacheStatus::none) {
        LocConf *lcf = loc_conf(r);
        MetricsConf *mc = main_conf(r)->metrics;
        size_t slot = lcf->metrics_loc ? mc->slots[lcf->metrics_loc - 1] : 0;
        auto st = static_cast<size_t>(ctx->cache_status);
        add(shm, core::metric_index(Metric::cache_requests, slot, st), 1);
        if (ctx->cache_status == CacheStatus::hit
            || ctx->cache_status == CacheStatus::stale
            || ctx->cache_status == CacheStatus::updating)
        {
            off_t body = r->connection->sent - static_cast<off_t>(r->header_size);
            if (body > 0) {
                add(shm, core::metric_index(Metric::cache_served_bytes, slot),
                    static_cast<uint64_t>(body));
            }
        }
        if (ctx->cache_status == CacheStatus::hit
            && ctx->cache_tier != CacheTier::none)
        {
            add(shm, core::metric_index(Metric::cache_tier_hits, slot,
                                        static_cast<size_t>(ctx->cache_tier)),
                1);
        }
    }
    if (ctx->replay_state.len > 0) {
        add(shm, core::metric_index(Metric::replays,
                                    state_index(view(ctx->replay_state))), 1);
    }
    switch (ctx->replay_action) {
    case core::ReplayAction::forward:
        add(shm, core::metric_index(Metric::forwards), 1);
        break;
    case core::ReplayAction::loop:
        add(shm, core::metric_index(Metric::replay_refusals, 0), 1);
        break;
    case core::ReplayAction::too_large:
        add(shm, core::metric_index(Metric::replay_refusals, 1), 1);
        break;
    case core::ReplayAction::no_length:
        add(shm, core::metric_index(Metric::replay_refusals, 2), 1);
        break;
    default:
        break;
    }
    return NGX_OK;
}

std::string endpoint_label(const ngx_str_t &h, in_port_t port,
                           const char *role)
{
    std::string host(view(h));
    if (host.find(':') != std::string::npos) {
        host = "[" + host + "]";
    }
    return core::metric_label("endpoint", host + ":" + std::to_string(port))
           + "," + core::metric_label("role", role);
}

core::MetricLabels labels_of(MainConf *mcf, MetricsShm *shm)
{
    core::MetricLabels l;
    ngx_atomic_uint_t n = shm->nlocations;
    ngx_memory_barrier();
    if (n > core::kMetricLocations) {
        n = core::kMetricLocations;
    }
    auto &loc = l.of(core::MetricDim::location);
    loc.push_back(core::metric_label("location", "_other"));
    for (ngx_atomic_uint_t s = 1; s < n; s++) {
        loc.push_back(core::metric_label(
            "location", std::string_view(shm->names[s],
                                         strnlen(shm->names[s], kNameMax))));
    }
    auto &st = l.of(core::MetricDim::cache_status);
    st.resize(kCacheStatusCount);
    for (size_t i = 1; i < kCacheStatusCount; i++) {
        st[i] = core::metric_label(
            "status", cache_status_name(static_cast<CacheStatus>(i)));
    }
    auto &rs = l.of(core::MetricDim::replay_state);
    rs.resize(core::kMetricReplayStates);
    for (size_t i = 0; i < sizeof(kReplayStates) / sizeof(kReplayStates[0]);
         i++)
    {
        rs[i] = core::metric_label("state", kReplayStates[i]);
    }
    rs[kOtherState] = core::metric_label("state", "other");
    for (std::string_view reason : kRefusals) {
        l.of(core::MetricDim::refusal).push_back(
            core::metric_label("reason", reason));
    }
    auto &ep = l.of(core::MetricDim::endpoint);
    ep.resize(core::kMetricEndpoints);
    if (mcf->redis.host.len > 0) {
        ep[0] = endpoint_label(mcf->redis.host, mcf->redis.port, "regional");
        if (mcf->redis_primary_client != mcf->redis_client) {
            ep[1] = endpoint_label(mcf->redis_primary.host,
                                   mcf->redis_primary.port, "primary");
        }
    }
    // PostgreSQL: the primary is asked apart only in a replica region
    // (WalSampler), and then even when it is the same endpoint.
    if (mcf->pg.host.len > 0) {
        std::string regional = endpoint_label(mcf->pg.host, mcf->pg.port,
                                              "regional");
        l.of(core::MetricDim::pg_replica).push_back(regional);
        auto &pe = l.of(core::MetricDim::pg_endpoint);
        pe.push_back(regional);
        if (mcf->is_primary != 1) {
            pe.push_back(endpoint_label(mcf->pg_primary.host,
                                        mcf->pg_primary.port, "primary"));
        }
    }
    for (const LsnWaitName &w : kLsnWaits) {
        l.of(core::MetricDim::lsn_wait).push_back(
            core::metric_label("wait", w.wait) + ","
            + core::metric_label("outcome", w.outcome));
    }
    auto &tier = l.of(core::MetricDim::cache_tier);
    tier.resize(core::kMetricCacheTiers);
    for (CacheTier t : {CacheTier::redis, CacheTier::near}) {
        tier[static_cast<size_t>(t)] = core::metric_label("tier",
                                                          cache_tier_name(t));
    }
    return l;
}

ngx_int_t send_status(ngx_http_request_t *r)
{
    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }
    ngx_int_t rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }
    MainConf *mcf = main_conf(r);
    MetricsShm *shm = shm_of(mcf);
    if (shm == nullptr) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    size_t count = core::metrics_value_count();
    std::vector<uint64_t> values(count);
    const ngx_atomic_t *shared = values_of(shm);
    for (size_t i = 0; i < count; i++) {
        values[i] = shared[i];
    }
    // The near cache keeps its own counts, in its zone (under its lock).
    core::NearStats ns;
    if (near_stats(&ns)) {
        using core::Metric;
        values[core::metric_index(Metric::near_inserts)] = ns.stored;
        values[core::metric_index(Metric::near_evictions)] = ns.evicted;
        values[core::metric_index(Metric::near_invalidations)] = ns.invalidated;
        values[core::metric_index(Metric::near_store_failures)] = ns.no_memory;
        values[core::metric_index(Metric::near_entries)] = ns.entries;
        values[core::metric_index(Metric::near_used_bytes)] = ns.bytes;
    }
    std::string text;
    text.reserve(16384);
    core::format_metrics(values.data(), labels_of(mcf, shm), text);

    return send_small_response(r, NGX_HTTP_OK, "text/plain; version=0.0.4",
                               text);
}

ngx_int_t status_handler(ngx_http_request_t *r) noexcept
{
    try {
        return send_status(r);
    } catch (const std::exception &e) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_status: %s", e.what());
    } catch (...) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "fly_status: unknown error");
    }
    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}

}  // namespace

char *set_status(ngx_conf_t *cf, ngx_command_t *, void *) noexcept
{
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
        ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    if (clcf->handler != nullptr) {
        return const_cast<char *>("is duplicate");
    }
    clcf->handler = status_handler;
    return static_cast<char *>(NGX_CONF_OK);
}

bool merge_loc(ngx_conf_t *cf, LocConf *conf) noexcept
{
    if (conf->cache != 1 || conf->metrics_loc != 0) {
        return true;
    }
    auto *clcf = static_cast<ngx_http_core_loc_conf_t *>(
        ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module));
    if (clcf == nullptr || clcf->name.len == 0) {
        return true;            // the server level: "_other"
    }
    MetricsConf *mc = conf_of(cf);
    if (mc == nullptr) {
        return false;
    }
    if (mc->names == nullptr) {
        mc->names = ngx_array_create(cf->pool, 8, sizeof(ngx_str_t));
        if (mc->names == nullptr) {
            return false;
        }
    }
    auto *names = static_cast<ngx_str_t *>(mc->names->elts);
    for (ngx_uint_t i = 0; i < mc->names->nelts; i++) {
        if (names[i].len == clcf->name.len
            && ngx_strncmp(names[i].data, clcf->name.data, clcf->name.len) == 0)
        {
            conf->metrics_loc = i + 1;
            return true;
        }
    }
    auto *slot = static_cast<ngx_str_t *>(ngx_array_push(mc->names));
    if (slot == nullptr) {
        return false;
    }
    *slot = clcf->name;
    conf->metrics_loc = mc->names->nelts;
    return true;
}

ngx_int_t init(ngx_conf_t *cf) noexcept
{
    MetricsConf *mc = conf_of(cf);
    if (mc == nullptr) {
        return NGX_ERROR;
    }
    ngx_uint_t n = mc->names ? mc->names->nelts : 0;
    mc->slots = static_cast<ngx_uint_t *>(
        ngx_pcalloc(cf->pool, (n ? n : 1) * sizeof(ngx_uint_t)));
    if (mc->slots == nullptr) {
        return NGX_ERROR;
    }

    // The layout is in the name: a module with another table gets a zone
    // of its own instead of reading this one wrongly.
    ngx_str_t name;
    name.data = static_cast<u_char *>(ngx_pnalloc(cf->pool, 64));
    if (name.data == nullptr) {
        return NGX_ERROR;
    }
    name.len = ngx_sprintf(name.data, "fly_edge_metrics_%016xL",
                           core::metrics_layout_hash())
               - name.data;
    size_t size = ngx_align(shm_bytes(), ngx_pagesize) + 8 * ngx_pagesize;
    mc->zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_fly_edge_module);
    if (mc->zone == nullptr) {
        return NGX_ERROR;
    }
    mc->zone->init = init_zone;
    mc->zone->data = mc;

    return add_phase_handler(cf, NGX_HTTP_LOG_PHASE, log_handler);
}

void count(ngx_http_request_t *r, core::Metric m, uint64_t n) noexcept
{
    if (MetricsShm *shm = shm_of(r)) {
        add(shm, core::metric_index(m), n);
    }
}

size_t redis_endpoint(const RedisConf &conf) noexcept
{
    return conf.name != nullptr && std::strcmp(conf.name, "primary") == 0;
}

void redis(size_t endpoint, RedisEvent e) noexcept
{
    static constexpr core::Metric kOf[] = {
        core::Metric::redis_commands, core::Metric::redis_errors,
        core::Metric::redis_timeouts, core::Metric::redis_reconnects,
    };
    if (MetricsShm *shm = shm_of_cycle()) {
        add(shm, core::metric_index(kOf[static_cast<size_t>(e)], endpoint), 1);
    }
}

void redis_round_trip(size_t endpoint, uint64_t us) noexcept
{
    if (MetricsShm *shm = shm_of_cycle()) {
        observe(shm, core::metric_index(core::Metric::redis_round_trip,
                                        endpoint), us);
    }
}

void pg_poll(size_t endpoint, bool ok, uint64_t lsn) noexcept
{
    MetricsShm *shm = shm_of_cycle();
    if (shm == nullptr) {
        return;
    }
    add(shm, core::metric_index(core::Metric::pg_polls, endpoint), 1);
    if (!ok) {
        add(shm, core::metric_index(core::Metric::pg_poll_failures, endpoint),
            1);
    }
    if (endpoint == 0) {
        set(shm, core::metric_index(core::Metric::pg_replica_up), ok ? 1 : 0);
    } else if (ok) {
        g_primary_lsn = lsn;
    }
}

void pg_replica_lag(int64_t lag_ms, uint64_t replica_lsn) noexcept
{
    if (MetricsShm *shm = shm_of_cycle()) {
        set(shm, core::metric_index(core::Metric::pg_replica_lag),
            lag_ms > 0 ? static_cast<uint64_t>(lag_ms) * 1000 : 0);
        set(shm, core::metric_index(core::Metric::pg_replica_lag_bytes),
            g_primary_lsn > replica_lsn ? g_primary_lsn - replica_lsn : 0);
    }
}

LsnWait read_wait(core::ConsistencyReason reason) noexcept
{
    switch (reason) {
    case core::ConsistencyReason::caught_up: return LsnWait::read_caught_up;
    case core::ConsistencyReason::waited_out: return LsnWait::read_timeout;
    case core::ConsistencyReason::unreachable:
        return LsnWait::read_unreachable;
    case core::ConsistencyReason::lagging: return LsnWait::read_lagging;
    default: return LsnWait::read_sampled;
    }
}

void lsn_wait(LsnWait outcome, ngx_msec_t since) noexcept
{
    if (MetricsShm *shm = shm_of_cycle()) {
        auto slot = static_cast<size_t>(outcome);
        ngx_msec_t ms = ngx_current_msec - since;
        add(shm, core::metric_index(core::Metric::lsn_waits, slot), 1);
        observe(shm, core::metric_index(core::Metric::lsn_wait_time, slot),
                static_cast<uint64_t>(ms) * 1000);
    }
}

void near_invalidation_keys(uint64_t n) noexcept
{
    if (MetricsShm *shm = shm_of_cycle()) {
        add(shm, core::metric_index(core::Metric::near_invalidation_keys), n);
    }
}

}  // namespace metrics
}  // namespace fly
