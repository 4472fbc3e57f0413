// fly-edge nginx shell: the near cache (see ngx_fly_near.hpp): the shared
// memory zone, its directives, and the worker's tracking of Redis.
//
// What ends a tracking session (every entry it vouched for unusable at
// once, core/near_session.hpp), and why:
//   - the subscriber connection is lost, or SUBSCRIBE fails: Redis drops
//     invalidations meant for a closed connection (RESP2 tells the data
//     connection nothing);
//   - the data connection is lost (a Redis restart loses both): Redis
//     forgets its tracking with the client;
//   - a null invalidation (FLUSHALL, FLUSHDB, a replica's full resync):
//     everything changed; tracking stays on, a new session starts;
//   - the lease runs out: no PONG for 3 s (the subscriber may be wedged,
//     or the worker hung);
//   - a reload: the zone is kept (same size) but emptied and its sessions
//     ended, by the master, before new workers start; old workers drop
//     their connections as they exit;
//   - the worker exits.
// A new session needs CLIENT TRACKING acknowledged on the data connection
// after the subscriber is up; the GETs sent before that acknowledgement
// cannot bring anything into the zone.
#include "ngx_fly_near.hpp"
#include "ngx_fly_metrics.hpp"
#include "ngx_fly_redis.hpp"
#include "ngx_fly_redis_sub.hpp"
#include "core/cache_tags.hpp"
#include "core/redis_pipeline.hpp"

extern "C" {
#include <hiredis/hiredis.h>
}

#include <signal.h>

#include <cerrno>
#include <cstring>
#include <new>

namespace fly {

namespace {

constexpr ngx_msec_t kPingEvery = 1000;  // the subscriber's PING
constexpr ngx_msec_t kLease = 3000;      // trust without a PONG
constexpr std::string_view kZoneName = "fly_cache_near";

time_t log_slot_track;
time_t log_slot_slot;

// ---- the zone ---------------------------------------------------------------

void *slab_alloc(void *ctx, size_t n) noexcept
{
    return ngx_slab_alloc_locked(static_cast<ngx_slab_pool_t *>(ctx), n);
}

void slab_free(void *ctx, void *p) noexcept
{
    ngx_slab_free_locked(static_cast<ngx_slab_pool_t *>(ctx), p);
}

class ZoneLock {
public:
    explicit ZoneLock(ngx_slab_pool_t *p) noexcept : p_(p)
    {
        ngx_shmtx_lock(&p_->mutex);
    }
    ~ZoneLock() { ngx_shmtx_unlock(&p_->mutex); }
    ZoneLock(const ZoneLock &) = delete;
    ZoneLock &operator=(const ZoneLock &) = delete;

private:
    ngx_slab_pool_t *p_;
};

core::NearAlloc alloc_of(ngx_slab_pool_t *p)
{
    return core::NearAlloc{slab_alloc, slab_free, p};
}

core::NearNow now()
{
    return core::NearNow{static_cast<int64_t>(ngx_time()),
                         static_cast<uint64_t>(ngx_current_msec)};
}

bool pid_alive(int64_t pid)
{
    return kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// init_zone: a new zone, or the old one on a reload (same size), emptied:
// the sessions that vouched for its entries belong to the old workers.
ngx_int_t init_zone(ngx_shm_zone_t *shm, void *data) noexcept
{
    auto *pool = reinterpret_cast<ngx_slab_pool_t *>(shm->shm.addr);
    if (data != nullptr) {
        auto *z = static_cast<core::NearZone *>(data);
        shm->data = z;
        ZoneLock lock(pool);
        z->clear(alloc_of(pool));
        return NGX_OK;
    }
    if (shm->shm.exists) {
        shm->data = pool->data;
        return NGX_OK;
    }
    size_t n = core::NearZone::buckets_for(shm->shm.size);
    void *mem = ngx_slab_alloc(pool, sizeof(core::NearZone));
    auto *buckets = static_cast<core::NearEntry **>(
        ngx_slab_alloc(pool, n * sizeof(core::NearEntry *)));
    static const char ctx_fmt[] = " in fly_cache_near_zone";
    auto *ctx = static_cast<u_char *>(ngx_slab_alloc(pool, sizeof(ctx_fmt)));
    if (mem == nullptr || buckets == nullptr || ctx == nullptr) {
        return NGX_ERROR;
    }
    auto *z = new (mem) core::NearZone();
    z->init(buckets, n);
    ngx_memcpy(ctx, ctx_fmt, sizeof(ctx_fmt));
    pool->log_ctx = ctx;
    pool->log_nomem = 0;     // a full zone evicts; "no memory" is expected
    pool->data = z;
    shm->data = z;
    return NGX_OK;
}

// ---- the worker's tracking ----------------------------------------------------

class NearTracker final : private RedisSubscriber::Handler,
                          private RedisWatcher {
public:
    NearTracker(RedisClient *data, ngx_slab_pool_t *pool, core::NearZone *z,
                ngx_msec_t connect_timeout, ngx_msec_t pong_timeout,
                ngx_log_t *log) noexcept
        : data_(data), pool_(pool), zone_(z), log_(log),
          sub_(this, connect_timeout, kPingEvery, pong_timeout, log)
    {
    }
    ~NearTracker()
    {
        end_session("worker exiting");
        data_->watch(nullptr);
    }
    NearTracker(const NearTracker &) = delete;
    NearTracker &operator=(const NearTracker &) = delete;

    bool init(const RedisConf &conf, ngx_resolver_t *resolver,
              ngx_msec_t resolver_timeout) noexcept
    {
        char name[48];
        u_char *e = ngx_snprintf(reinterpret_cast<u_char *>(name),
                                 sizeof(name) - 1, "fly-edge-near-%P", ngx_pid);
        *e = '\0';
        if (!sub_.init(conf, resolver, resolver_timeout, name)) {
            return false;
        }
        data_->watch(this);
        sub_.start();
        return true;
    }

    NearToken token(uint64_t hash) const noexcept { return race_.take(hash); }

    // May a reply to a GET that took `t` enter the zone?  Then *v is the
    // session that vouches for it.
    bool vouched(const NearToken &t, core::NearVouch *v) const noexcept
    {
        if (confirmed_gen_ == 0 || t.gen != confirmed_gen_ || !race_.holds(t)
            || !zone_->sessions.live(slot_, session_, ngx_current_msec))
        {
            return false;
        }
        v->slot = static_cast<int16_t>(slot_);
        v->session = session_;
        return true;
    }

    // Keys this worker knows changed (invalidations, its own writes).
    void forget(std::string_view key, uint64_t hash) noexcept
    {
        ZoneLock lock(pool_);
        forget_locked(key, hash, alloc_of(pool_));
    }

private:
    // RedisSubscriber::Handler
    void sub_up(long long client_id) noexcept override
    {
        sub_id_ = client_id;
        if (data_ready_) {
            enable();
        }
    }
    void sub_down() noexcept override
    {
        sub_id_ = -1;
        stop("tracking connection lost");
    }
    void sub_message(const core::PushMessage &m) noexcept override;
    void sub_pong(ngx_msec_t sent) noexcept override;

    // RedisWatcher (the data connection)
    void redis_ready() noexcept override
    {
        data_ready_ = true;
        stop("new data connection");
        if (sub_id_ > 0) {
            enable();
        }
    }
    void redis_lost() noexcept override
    {
        data_ready_ = false;
        stop("data connection lost");
    }

    bool forget_locked(std::string_view key, uint64_t hash,
                       core::NearAlloc a) noexcept;
    void enable() noexcept;
    static void on_tracking(void *data, redisReply *reply) noexcept;
    void begin_session() noexcept;
    void end_session(const char *why) noexcept;
    void stop(const char *why) noexcept;

    RedisClient *data_;
    ngx_slab_pool_t *pool_;
    core::NearZone *zone_;
    ngx_log_t *log_;
    RedisSubscriber sub_;
    core::NearRace race_;
    long long sub_id_ = -1;       // the subscriber's CLIENT ID when up
    bool data_ready_ = false;
    RedisOp *track_op_ = nullptr; // CLIENT TRACKING in flight
    uint32_t track_gen_ = 0;      // ... and the generation it starts
    uint32_t confirmed_gen_ = 0;  // the generation tracking is on for
    int slot_ = -1;               // the session
    uint32_t session_ = 0;
};

// CLIENT TRACKING on REDIRECT <subscriber> on the data connection: every
// GET sent after it is tracked, so a new generation starts now (earlier
// tokens fail) and becomes usable once Redis says OK.
void NearTracker::enable() noexcept
{
    stop("tracking turned on again");
    u_char id[NGX_INT64_LEN];
    size_t idlen = static_cast<size_t>(ngx_sprintf(id, "%L", sub_id_) - id);
    const char *argv[5] = {"CLIENT", "TRACKING", "on", "REDIRECT",
                           reinterpret_cast<const char *>(id)};
    size_t argvlen[5] = {6, 8, 2, 8, idlen};
    track_gen_ = race_.next_generation();
    track_op_ = data_->command(5, argv, argvlen, on_tracking, this);
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly near: CLIENT TRACKING on REDIRECT %L%s", sub_id_,
                   track_op_ ? "" : " could not be sent");
}

void NearTracker::on_tracking(void *data, redisReply *reply) noexcept
{
    auto *self = static_cast<NearTracker *>(data);
    self->track_op_ = nullptr;
    if (reply == nullptr || reply->type != REDIS_REPLY_STATUS) {
        if (reply != nullptr && log_allowed(&log_slot_track)) {
            ngx_log_error(NGX_LOG_WARN, self->log_, 0,
                          "fly near: CLIENT TRACKING refused (%*s): the "
                          "near cache is not used",
                          reply->type == REDIS_REPLY_ERROR
                              ? static_cast<int>(reply->len) : 7,
                          reply->type == REDIS_REPLY_ERROR ? reply->str
                                                           : "no reply");
        }
        return;
    }
    if (self->track_gen_ != self->race_.generation() || self->sub_id_ <= 0) {
        return;     // something changed since: a new CLIENT TRACKING follows
    }
    self->confirmed_gen_ = self->track_gen_;
    self->begin_session();
}

void NearTracker::begin_session() noexcept
{
    uint64_t t = ngx_current_msec;
    uint32_t id = 0;
    int s = zone_->sessions.claim(ngx_pid, t, t + kLease, pid_alive, &id);
    if (s < 0) {
        if (log_allowed(&log_slot_slot)) {
            ngx_log_error(NGX_LOG_WARN, log_, 0,
                          "fly near: all %uz session slots of the zone are "
                          "in use: this worker does not use the zone",
                          core::kNearSlots);
        }
        return;
    }
    slot_ = s;
    session_ = id;
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly near: tracking on, session %uD in slot %d", id, s);
}

void NearTracker::end_session(const char *why) noexcept
{
    if (session_ == 0) {
        return;
    }
    zone_->sessions.end(slot_, session_);
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log_, 0,
                   "fly near: session %uD ended: %s", session_, why);
    slot_ = -1;
    session_ = 0;
}

// Nothing read from now on may rely on the tracking of before.
void NearTracker::stop(const char *why) noexcept
{
    end_session(why);
    confirmed_gen_ = 0;
    race_.next_generation();
    if (track_op_ != nullptr) {
        RedisClient::cancel(track_op_);
        track_op_ = nullptr;
    }
}

// `key` changed (the zone's lock held): out of the zone, and a GET of it
// in flight may not enter.  A tag purge changes the epoch and tag records
// in one script: either one changing means that entries valid at the
// zone's epoch may not be any more, and a GET of the epoch in flight
// may not vouch for anything.
bool NearTracker::forget_locked(std::string_view key, uint64_t hash,
                                core::NearAlloc a) noexcept
{
    race_.invalidated(hash);
    bool had = zone_->forget(key, hash, a);
    if (key == core::kEpochKey
        || key.substr(0, core::kTagKeyPrefix.size()) == core::kTagKeyPrefix)
    {
        race_.invalidated(core::near_hash(core::kEpochKey));
        zone_->forget_epoch();
    }
    return had;
}

void NearTracker::sub_message(const core::PushMessage &m) noexcept
{
    if (m.kind == core::PushKind::invalidate) {
        metrics::near_invalidation_keys(m.nkeys);
        ZoneLock lock(pool_);
        core::NearAlloc a = alloc_of(pool_);
        for (size_t i = 0; i < m.nkeys; i++) {
            std::string_view key(m.keys[i].str, m.keys[i].len);
            bool had = forget_locked(key, core::near_hash(key), a);
            ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log_, 0,
                           "fly near: invalidate \"%*s\"%s",
                           key.size(), key.data(), had ? ", dropped" : "");
        }
        return;
    }
    // Everything changed (FLUSHALL/FLUSHDB, a full resync), or something
    // unreadable came: the session's entries go; tracking is still on.
    if (m.malformed && log_allowed(&log_slot_track)) {
        ngx_log_error(NGX_LOG_WARN, log_, 0,
                      "fly near: unreadable invalidation message, taken "
                      "as a flush");
    }
    bool on = confirmed_gen_ != 0;
    end_session("flush");
    race_.next_generation();
    confirmed_gen_ = 0;
    if (on) {
        confirmed_gen_ = race_.generation();
        begin_session();
    }
}

// Every invalidation Redis sent before answering the PING sent at `sent`
// has been applied: the session is trusted until sent + kLease.
void NearTracker::sub_pong(ngx_msec_t sent) noexcept
{
    if (session_ != 0) {
        if (zone_->sessions.renew(slot_, session_, sent + kLease)) {
            return;
        }
        // Taken by another worker after the lease ran out.
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log_, 0,
                       "fly near: session %uD lost its slot", session_);
        slot_ = -1;
        session_ = 0;
    }
    if (confirmed_gen_ != 0) {
        // tracking is on, but no session: (again) one
        race_.next_generation();
        confirmed_gen_ = race_.generation();
        begin_session();
    }
}

// ---- this process -----------------------------------------------------------------

struct NearProcess {
    ngx_slab_pool_t *pool = nullptr;
    core::NearZone *zone = nullptr;
    size_t max_entry = 0;
    NearTracker *tracker = nullptr;
};
NearProcess g_near;

}  // namespace

// ---- configuration ------------------------------------------------------------------

char *set_near_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    auto *mcf = static_cast<MainConf *>(conf);
    auto *value = static_cast<ngx_str_t *>(cf->args->elts);
    if (mcf->near_zone != nullptr) {
        return const_cast<char *>("is duplicate");
    }
    ssize_t size = ngx_parse_size(&value[1]);
    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"%V\": invalid size \"%V\"",
                           &cmd->name, &value[1]);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    if (size < static_cast<ssize_t>(8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": zone of %z bytes is too small (at least "
                           "%uz)", &cmd->name, size, 8 * ngx_pagesize);
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    size_t quarter = static_cast<size_t>(size) / 4;
    size_t max_entry = 1024 * 1024;
    if (max_entry > quarter) {
        max_entry = quarter;
    }
    for (ngx_uint_t i = 2; i < cf->args->nelts; i++) {
        std::string_view arg = view(value[i]);
        if (arg.substr(0, 10) != "max_entry=") {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": invalid parameter \"%V\"",
                               &cmd->name, &value[i]);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        ngx_str_t s = {value[i].len - 10, value[i].data + 10};
        ssize_t m = ngx_parse_size(&s);
        if (m == NGX_ERROR || m == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": invalid max_entry \"%V\"",
                               &cmd->name, &s);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        if (static_cast<size_t>(m) > quarter) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": max_entry=%V is more than a quarter "
                               "of the zone", &cmd->name, &s);
            return static_cast<char *>(NGX_CONF_ERROR);
        }
        max_entry = static_cast<size_t>(m);
    }

    ngx_str_t name = {kZoneName.size(),
                      reinterpret_cast<u_char *>(
                          const_cast<char *>(kZoneName.data()))};
    ngx_shm_zone_t *shm = ngx_shared_memory_add(cf, &name, size,
                                                &ngx_http_fly_edge_module);
    if (shm == nullptr) {
        return static_cast<char *>(NGX_CONF_ERROR);
    }
    shm->init = init_zone;
    mcf->near_zone = shm;
    mcf->near_max_entry = max_entry;
    return static_cast<char *>(NGX_CONF_OK);
}

char *set_near(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) noexcept
{
    char *rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if (rv == NGX_CONF_OK && static_cast<LocConf *>(conf)->cache_near == 1) {
        MainConf *mcf = main_conf(cf);
        remember_place(cf, mcf->need_near_file, mcf->need_near_line);
    }
    return rv;
}

bool check_near_conf(ngx_conf_t *cf, MainConf *mcf) noexcept
{
    if (mcf->need_near_line && mcf->near_zone == nullptr) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"fly_cache_near on\" needs \"fly_cache_near_zone\" "
                      "(fly_cache_near in %V:%ui)", &mcf->need_near_file,
                      mcf->need_near_line);
        return false;
    }
    return true;
}

// ---- the worker ---------------------------------------------------------------------

void near_init_process(ngx_cycle_t *cycle, MainConf *mcf) noexcept
{
    if (mcf->near_zone == nullptr || mcf->near_zone->data == nullptr
        || mcf->redis_client == nullptr)
    {
        return;
    }
    g_near.pool = reinterpret_cast<ngx_slab_pool_t *>(mcf->near_zone->shm.addr);
    g_near.zone = static_cast<core::NearZone *>(mcf->near_zone->data);
    g_near.max_entry = mcf->near_max_entry;
    auto *t = new (std::nothrow) NearTracker(
        mcf->redis_client, g_near.pool, g_near.zone,
        mcf->redis_connect_timeout,
        static_cast<ngx_msec_t>(
            core::RedisPipeline::liveness_for(mcf->redis_timeout)),
        cycle->log);
    if (t == nullptr
        || !t->init(mcf->redis, mcf->resolver, mcf->resolver_timeout))
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "fly near: out of memory, the zone is not used");
        delete t;
        return;
    }
    g_near.tracker = t;
}

void near_exit_process() noexcept
{
    delete g_near.tracker;
    g_near.tracker = nullptr;
}

bool near_enabled(ngx_http_request_t *r) noexcept
{
    return g_near.tracker != nullptr && loc_conf(r)->cache_near == 1;
}

NearToken near_token(uint64_t hash) noexcept
{
    return g_near.tracker ? g_near.tracker->token(hash) : NearToken{};
}

namespace {

struct NearRef {
    ngx_slab_pool_t *pool;
    core::NearZone *zone;
    core::NearEntry *e;
};

void release_ref(void *data) noexcept
{
    auto *ref = static_cast<NearRef *>(data);
    ZoneLock lock(ref->pool);
    ref->zone->release(ref->e, alloc_of(ref->pool));
}

}  // namespace

const core::NearEntry *near_get(ngx_http_request_t *r, std::string_view key,
                                uint64_t hash) noexcept
{
    if (g_near.tracker == nullptr) {
        return nullptr;
    }
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(r->pool, sizeof(NearRef));
    if (cln == nullptr) {
        return nullptr;
    }
    core::NearEntry *e;
    {
        ZoneLock lock(g_near.pool);
        e = g_near.zone->acquire(key, hash, now());
    }
    if (e == nullptr) {
        return nullptr;        // the cleanup has no handler: nothing runs
    }
    auto *ref = static_cast<NearRef *>(cln->data);
    *ref = NearRef{g_near.pool, g_near.zone, e};
    cln->handler = release_ref;
    return e;
}

namespace {

void offer(std::string_view key, uint64_t hash, const NearToken &token,
           std::string_view value, int64_t fresh_until, uint8_t flags,
           uint64_t epoch, const NearToken &epoch_token) noexcept
{
    NearTracker *t = g_near.tracker;
    if (t == nullptr) {
        return;
    }
    core::NearVouch ve, vk;
    bool epoch_ok = t->vouched(epoch_token, &ve);
    const char *why = nullptr;
    if (!epoch_ok || !t->vouched(token, &vk)) {
        why = "not vouched for (untracked, or changed since the GET)";
    } else if (value.size() > g_near.max_entry) {
        why = "over max_entry";
    } else if (!core::near_admissible(value.size(), g_near.max_entry,
                                      fresh_until, ngx_time()))
    {
        why = "not fresh";
    }
    if (epoch_ok) {
        ZoneLock lock(g_near.pool);
        g_near.zone->set_epoch(epoch, ve);
        if (why == nullptr
            && g_near.zone->store(key, hash, value, vk, epoch, fresh_until,
                                  flags, alloc_of(g_near.pool)) == nullptr)
        {
            why = "no room, even after evicting";
        }
    }
    const char *what = (flags & core::kNearAbsent) ? "absent " : "";
    if (why == nullptr) {
        ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "fly near: stored %s\"%*s\" (%uz bytes)", what,
                       key.size(), key.data(), value.size());
    } else {
        ngx_log_debug5(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "fly near: not stored %s\"%*s\" (%uz bytes): %s",
                       what, key.size(), key.data(), value.size(), why);
    }
}

}  // namespace

void near_offer(std::string_view key, uint64_t hash, const NearToken &token,
                std::string_view value, int64_t fresh_until, bool marker,
                uint64_t epoch, const NearToken &epoch_token) noexcept
{
    offer(key, hash, token, value, fresh_until, marker ? core::kNearMarker : 0,
          epoch, epoch_token);
}

void near_offer_absent(std::string_view key, const NearToken &token,
                       uint64_t epoch, const NearToken &epoch_token) noexcept
{
    offer(key, core::near_hash(key), token, {},
          ngx_time() + core::kNearAbsentSeconds, core::kNearAbsent, epoch,
          epoch_token);
}

bool near_stats(core::NearStats *out) noexcept
{
    if (g_near.zone == nullptr) {
        return false;
    }
    ZoneLock lock(g_near.pool);
    *out = g_near.zone->stats;
    return true;
}

void near_drop(std::string_view key) noexcept
{
    if (g_near.tracker != nullptr) {
        g_near.tracker->forget(key, core::near_hash(key));
    }
}

}  // namespace fly
