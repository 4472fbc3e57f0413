// fly-edge pure core: read-your-writes through WAL positions.  What a
// replica region does with a request (serve it, let it wait for the
// region's replica, or replay it to the primary), and how far the
// replica is behind.  No nginx header here: unit-tested with cmocka.
#pragma once

#include "core/replay.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fly::core {

enum class ConsistencyMode : uint8_t { off, lsn };

// What the worker knows of its region's replica (sampled by a timer).
struct ReplicaView {
    bool pending = false;     // no position yet, the first sample is under way
    bool reachable = false;   // the last sample succeeded (and the link is up)
    bool known = false;       // a position has been sampled (now or before)
    uint64_t lsn = 0;         // the position replayed, when known
    int64_t lag_ms = 0;       // how far behind the primary, when reachable
};

constexpr int64_t kMaxLagOff = -1;

struct ConsistencyInput {
    ConsistencyMode mode = ConsistencyMode::off;   // fly_consistency
    bool is_primary = false;    // this region is the primary region
    bool has_fence = false;     // a well-formed fly-lsn cookie came in
    uint64_t fence = 0;         // its position
    int64_t max_lag_ms = kMaxLagOff;   // fly_replica_max_lag
    bool waited_out = false;    // fly_consistency_wait is over (or 0)
    bool can_replay = true;     // a replay to the primary is possible (the
                                // request was not replayed here already)
    ReplicaView replica;
};

enum class ConsistencyAction : uint8_t {
    pass,      // serve it in this region
    wait,      // park it until the next sample, or fly_consistency_wait
    replay,    // answer with fly-replay to the primary, `state`
};

// Why, for the logs and the tests.
enum class ConsistencyReason : uint8_t {
    none,           // nothing to decide (primary, no fence, no lag guard)
    caught_up,      // the replica has replayed the fence
    pending,        // the first sample is under way
    behind,         // the replica has not replayed the fence yet
    unreachable,    // the replica cannot be asked
    lagging,        // further behind than fly_replica_max_lag
    waited_out,     // fly_consistency_wait is over
};

struct ConsistencyDecision {
    ConsistencyAction action = ConsistencyAction::pass;
    std::string_view state;          // "lsn" or "lag" with replay
    ConsistencyReason reason = ConsistencyReason::none;
    bool clear_cookie = false;       // the answer clears fly-lsn (the
                                     // replica has passed its position)
    bool replay_refused = false;     // a replay was due but !can_replay:
                                     // served here instead
    bool skip_cache = false;         // served from the app, not from the
                                     // cache (its answer may be stored)
};

// The lag guard first (fly_replica_max_lag: a replica that cannot be
// asked, or is further behind, replays with state=lag), then the fence
// (fly_consistency lsn and a fly-lsn cookie: serve once the replica has
// replayed it; wait while it has not, until fly_consistency_wait is over,
// then replay with state=lsn; at once when the replica cannot be asked).
// While the first sample is under way, both wait.  A replay that cannot
// be made (can_replay false) serves the request here after the wait.
// A request whose fence has just been passed skips the cache (a copy
// there may be older than the write: its tombstone, sent when the write
// was answered, may not have reached this region's Redis yet): in a
// replica region once the replica has replayed it (the answer clears the
// cookie, so this happens once), in the primary region while the
// worker's last sample of the primary has not reached it.
ConsistencyDecision decide_consistency(const ConsistencyInput &in);

std::string_view consistency_reason_name(ConsistencyReason r);

// Can a consistency decision replay this request to the primary?  Not
// when it was replayed here already (fly-replay-src) or Fly failed to
// (fly-replay-failed), not with fly_replay_forward ... always (no Fly
// proxy), not with a body Fly cannot replay (no Content-Length, over
// fly_replay_max_body).
bool replay_possible(const ReplayInput &in);

// ---- lag --------------------------------------------------------------

// How far a replica's replay is behind what the primary has written
// (CLARIFICATIONS 10), from samples of the primary's write position
// (pg_current_wal_lsn()) and of the replica's replay position
// (pg_last_wal_replay_lsn()): the time since the oldest primary sample
// that the replica has not replayed yet; 0 once it has replayed every
// position the primary was seen at.  An idle primary with a caught-up
// replica has zero lag, however long ago its last transaction was.
// Sample the primary first and the replica after it, so that a replica
// sample is never older than the primary sample it is compared with.
// A lag is underestimated by at most the sampling interval.
class LagTracker {
public:
    static constexpr size_t kMaxSamples = 64;

    // The primary had written up to `lsn` at `now_ms`.
    void primary_at(int64_t now_ms, uint64_t lsn);
    // The replica has replayed up to `lsn`.
    void replica_at(uint64_t lsn);
    int64_t lag_ms(int64_t now_ms) const;
    // Primary samples the replica has not replayed yet.
    size_t behind() const { return size_; }
    void reset() { head_ = size_ = 0; replayed_ = 0; }

private:
    struct Sample {
        int64_t ms;
        uint64_t lsn;
    };
    const Sample &at(size_t i) const { return ring_[(head_ + i) % kMaxSamples]; }
    Sample &at(size_t i) { return ring_[(head_ + i) % kMaxSamples]; }

    Sample ring_[kMaxSamples] = {};
    size_t head_ = 0;
    size_t size_ = 0;
    uint64_t replayed_ = 0;
};

}  // namespace fly::core
