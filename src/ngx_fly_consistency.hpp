// fly-edge nginx shell: read your writes through PostgreSQL's WAL
// positions (issue 9).  What the two sides share:
//   - ngx_fly_consistency.cpp, the replica regions: the position and lag
//     of the region's replica, sampled by a timer (WalSampler); the
//     decision on each request, from the replay phase handler (serve it,
//     park it until the replica has replayed its fly-lsn cookie, or
//     replay it to the primary with state=lsn / state=lag); the filter
//     that clears the cookie once passed; $fly_replica_lsn, $fly_replica_lag;
//   - ngx_fly_write_lsn.cpp, the primary region: a write's response is
//     held until the primary's WAL position after it is known (one query
//     for every write that completes at the same moment, WriteBatch), and
//     goes out with the fly-lsn cookie.
// One ConsistencyWorker per worker process (with fly_postgres), its
// PostgreSQL clients made in init_process.  Nothing here fails a request:
// a database that is down or slow means no cookie (primary), a replay
// to the primary (a replica region, cookie or lag guard), or nothing.
#pragma once

#include "ngx_fly.hpp"
#include "ngx_fly_event.hpp"
#include "core/consistency.hpp"
#include "core/lsn.hpp"

namespace fly {

struct PgQuery;
struct PgRow;
class WalSampler;
class WriteBatch;

// RequestCtx::consistency
enum class ConsistencyState : uint8_t {
    none,       // not decided (yet)
    waiting,    // parked until the replica replays its fence
    pass,       // served in this region
    replay,     // replayed to the primary (consistency_lag: state=lag)
};

struct ConsistencyWorker {
    PgClient *regional = nullptr;   // the region's database (its replica)
    PgClient *primary = nullptr;    // the primary (== regional when the same)
    WalSampler *sampler = nullptr;
    WriteBatch *writes = nullptr;   // the primary region only
};

// ngx_http_fly_edge_module.cpp's init_process / exit_process.
ngx_int_t consistency_init_process(ngx_cycle_t *cycle, MainConf *mcf) noexcept;
void consistency_exit_process(MainConf *mcf) noexcept;

// The replay phase handler, for a request it lets pass in a replica
// region (`can_replay`: a replay to the primary is possible: not
// replayed here already, a body Fly can replay).  NGX_DECLINED: go on;
// NGX_DONE: parked (the phases run again once decided); NGX_OK: replay
// it with *state ("lsn" or "lag").
ngx_int_t consistency_phase(ngx_http_request_t *r, bool can_replay,
                            std::string_view *state) noexcept;

// The same handler in the primary region: a read whose fly-lsn the
// worker's last sample has not reached skips the cache (lsn_skip_cache).
void consistency_primary_phase(ngx_http_request_t *r) noexcept;

// What the worker knows of its region's replica (the fill fence of the
// cache asks with the position sampled before the app is asked).
bool replica_lsn(ngx_http_request_t *r, uint64_t *lsn) noexcept;

// The primary's position after this write, when its answer was held for
// it (ngx_fly_write_lsn.cpp): the cache's invalidation puts it in the
// tombstone.  False without one (not held, or PostgreSQL not answering).
bool write_position(ngx_http_request_t *r, uint64_t *lsn) noexcept;
bool replica_lag(ngx_http_request_t *r, int64_t *ms) noexcept;

// ---- WalSampler (ngx_fly_consistency.cpp) ------------------------------

struct ConsistencyWaiter;

// The position and lag of the region's replica, sampled every
// kSampleMs (the primary's write position first, in a replica region,
// for the lag); while requests wait for a position, every kPollMs,
// shared by all of them.
class WalSampler {
public:
    static constexpr ngx_msec_t kSampleMs = 1000;
    static constexpr ngx_msec_t kPollMs = 10;

    WalSampler(PgClient *regional, PgClient *primary, ngx_log_t *log) noexcept;
    ~WalSampler();
    void start() noexcept;

    core::ReplicaView view() const noexcept;
    bool known() const noexcept { return known_; }
    uint64_t lsn() const noexcept { return lsn_; }

    void park(ConsistencyWaiter *w) noexcept;

private:
    void on_tick() noexcept;
    void on_poll() noexcept;
    void ask_replica() noexcept;
    static void on_primary(void *data, const PgRow *row) noexcept;
    static void on_replica(void *data, const PgRow *row) noexcept;
    void wake() noexcept;

    PgClient *regional_;
    PgClient *primary_;             // nullptr in the primary region
    ngx_log_t *log_;
    Event tick_;
    Event poll_;
    PgQuery *replica_q_ = nullptr;
    PgQuery *primary_q_ = nullptr;
    bool known_ = false;            // a position was sampled
    bool reachable_ = false;        // the last sample succeeded
    bool failed_ = false;           // a sample failed (none pending then)
    uint64_t lsn_ = 0;
    core::LagTracker lag_;
    ngx_queue_t waiters_;
};

// ---- WriteBatch (ngx_fly_write_lsn.cpp) --------------------------------

// A write's response held until the primary's position after it is known.
struct ConsistencyHold;

class WriteBatch {
public:
    WriteBatch(PgClient *primary, ngx_log_t *log) noexcept;
    ~WriteBatch();
    // Queues `h`; false when the primary cannot be asked now (then the
    // response goes at once, without a position).
    bool add(ConsistencyHold *h) noexcept;

private:
    void send() noexcept;
    static void on_answer(void *data, const PgRow *row) noexcept;

    PgClient *primary_;
    ngx_log_t *log_;
    ngx_queue_t pending_;           // not covered by the query in flight
    ngx_queue_t covered_;           // answered by it
    PgQuery *q_ = nullptr;
    Event send_;                    // posted: this iteration's writes, one query
};

}  // namespace fly
