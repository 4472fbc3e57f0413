// fly-edge pure core: the consistency decision and replica lag
// (consistency.hpp).
#include "core/consistency.hpp"

namespace fly::core {

namespace {

ConsistencyDecision make(ConsistencyAction a, ConsistencyReason why,
                         std::string_view state = {})
{
    ConsistencyDecision d;
    d.action = a;
    d.reason = why;
    d.state = state;
    return d;
}

// A replay that cannot be made: the request is served here.
ConsistencyDecision replay_or_serve(const ConsistencyInput &in,
                                    ConsistencyReason why,
                                    std::string_view state)
{
    if (in.can_replay) {
        return make(ConsistencyAction::replay, why, state);
    }
    ConsistencyDecision d = make(ConsistencyAction::pass, why);
    d.replay_refused = true;
    return d;
}

}  // namespace

ConsistencyDecision decide_consistency(const ConsistencyInput &in)
{
    if (in.is_primary) {
        ConsistencyDecision d;
        d.skip_cache = in.mode == ConsistencyMode::lsn && in.has_fence
                       && !(in.replica.known && in.replica.lsn >= in.fence);
        return d;
    }
    const ReplicaView &rep = in.replica;
    bool pending = rep.pending && !in.waited_out;
    bool reachable = rep.reachable && !rep.pending;

    if (in.max_lag_ms != kMaxLagOff) {
        if (pending) {
            return make(ConsistencyAction::wait, ConsistencyReason::pending);
        }
        ConsistencyReason why = ConsistencyReason::none;
        if (!reachable) {
            why = ConsistencyReason::unreachable;
        } else if (rep.lag_ms > in.max_lag_ms) {
            why = ConsistencyReason::lagging;
        }
        if (why != ConsistencyReason::none && in.can_replay) {
            return make(ConsistencyAction::replay, why, "lag");
        }
        // Not replayable: the fence may still make it wait.
    }

    if (in.mode != ConsistencyMode::lsn || !in.has_fence) {
        return {};
    }
    if (rep.known && rep.lsn >= in.fence) {
        ConsistencyDecision d = make(ConsistencyAction::pass,
                                     ConsistencyReason::caught_up);
        d.clear_cookie = true;
        d.skip_cache = true;
        return d;
    }
    if (pending) {
        return make(ConsistencyAction::wait, ConsistencyReason::pending);
    }
    if (!reachable) {
        return replay_or_serve(in, ConsistencyReason::unreachable, "lsn");
    }
    if (in.waited_out) {
        return replay_or_serve(in, ConsistencyReason::waited_out, "lsn");
    }
    return make(ConsistencyAction::wait, ConsistencyReason::behind);
}

bool replay_possible(const ReplayInput &in)
{
    if (in.replay_src || in.replay_failed || in.forward_always) {
        return false;
    }
    return !in.has_body || (in.length_known && in.content_length <= in.max_body);
}

std::string_view consistency_reason_name(ConsistencyReason r)
{
    switch (r) {
    case ConsistencyReason::none: return "none";
    case ConsistencyReason::caught_up: return "caught up";
    case ConsistencyReason::pending: return "first sample pending";
    case ConsistencyReason::behind: return "replica behind";
    case ConsistencyReason::unreachable: return "replica unreachable";
    case ConsistencyReason::lagging: return "replica lagging";
    case ConsistencyReason::waited_out: return "waited out";
    }
    return "?";
}

// ---- LagTracker -----------------------------------------------------------

void LagTracker::primary_at(int64_t now_ms, uint64_t lsn)
{
    if (lsn <= replayed_ || (size_ > 0 && at(size_ - 1).lsn >= lsn)) {
        return;       // replayed already, or nothing new since the last one
    }
    if (size_ == kMaxSamples) {
        // Full: keep the oldest (it says since when the replica is
        // behind) and drop the one after it; the lag is then
        // underestimated once the replica passes the oldest, by the
        // interval the two covered.
        for (size_t i = 1; i + 1 < size_; i++) {
            at(i) = at(i + 1);
        }
        size_--;
    }
    at(size_) = {now_ms, lsn};
    size_++;
}

void LagTracker::replica_at(uint64_t lsn)
{
    // Not the maximum: a position lower than before is another server
    // (a replaced replica), behind by what it has not replayed.
    replayed_ = lsn;
    while (size_ > 0 && at(0).lsn <= replayed_) {
        head_ = (head_ + 1) % kMaxSamples;
        size_--;
    }
    if (size_ == 0) {
        head_ = 0;
    }
}

int64_t LagTracker::lag_ms(int64_t now_ms) const
{
    if (size_ == 0) {
        return 0;
    }
    int64_t d = now_ms - at(0).ms;
    return d > 0 ? d : 0;
}

}  // namespace fly::core
