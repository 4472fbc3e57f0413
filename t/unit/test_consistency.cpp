// Unit tests: the consistency decision (serve, wait, replay with
// state=lsn / state=lag) and the replica lag.
#include "unit.hpp"

#include "core/consistency.hpp"

using namespace fly::core;

namespace {

using A = ConsistencyAction;
using R = ConsistencyReason;

// A replica region, fly_consistency lsn, a fence at 100, a reachable
// replica at 50 with no lag, no lag guard.
ConsistencyInput base()
{
    ConsistencyInput in;
    in.mode = ConsistencyMode::lsn;
    in.has_fence = true;
    in.fence = 100;
    in.replica.reachable = true;
    in.replica.known = true;
    in.replica.lsn = 50;
    return in;
}

void expect(const ConsistencyInput &in, A action, R reason,
            std::string_view state = {}, bool clear = false)
{
    ConsistencyDecision d = decide_consistency(in);
    if (d.action != action || d.reason != reason || d.state != state
        || d.clear_cookie != clear)
    {
        print_error("got action %d reason %s state \"%s\" clear %d; want %d %s \"%s\" %d\n",
                    static_cast<int>(d.action),
                    std::string(consistency_reason_name(d.reason)).c_str(),
                    std::string(d.state).c_str(), d.clear_cookie,
                    static_cast<int>(action),
                    std::string(consistency_reason_name(reason)).c_str(),
                    std::string(state).c_str(), clear);
        fail();
    }
}

void test_fence(void **)
{
    ConsistencyInput in = base();
    expect(in, A::wait, R::behind);                 // not replayed yet: wait
    in.replica.lsn = 99;
    expect(in, A::wait, R::behind);
    in.replica.lsn = 100;                           // exactly the fence
    expect(in, A::pass, R::caught_up, {}, true);
    in.replica.lsn = 1ull << 40;                    // far past it (64 bits)
    expect(in, A::pass, R::caught_up, {}, true);
    in.fence = (1ull << 40) + 1;
    expect(in, A::wait, R::behind);

    in = base();
    in.waited_out = true;                           // the wait is over
    expect(in, A::replay, R::waited_out, "lsn");
    in.replica.lsn = 100;                           // caught up at the last moment
    expect(in, A::pass, R::caught_up, {}, true);
}

void test_no_fence(void **)
{
    ConsistencyInput in = base();
    in.has_fence = false;                           // no cookie: at once
    expect(in, A::pass, R::none);
    in.replica.reachable = false;                   // whatever the replica
    expect(in, A::pass, R::none);
    in.replica.pending = true;
    expect(in, A::pass, R::none);

    in = base();
    in.mode = ConsistencyMode::off;                 // fly_consistency off: the
    expect(in, A::pass, R::none);                   // cookie is not looked at

    in = base();
    in.is_primary = true;                           // the primary region
    expect(in, A::pass, R::none);
    in.max_lag_ms = 0;
    in.replica.reachable = false;
    expect(in, A::pass, R::none);
}

// A fence just passed skips the cache: in a replica region when the
// replica has replayed it, in the primary while the last sample has not.
void test_skip_cache(void **)
{
    ConsistencyInput in = base();
    assert_false(decide_consistency(in).skip_cache);        // waiting
    in.replica.lsn = 100;
    ConsistencyDecision d = decide_consistency(in);
    assert_true(d.clear_cookie);
    assert_true(d.skip_cache);                              // passed: skip
    in.has_fence = false;
    assert_false(decide_consistency(in).skip_cache);        // no cookie
    in = base();
    in.waited_out = true;
    in.can_replay = false;                                  // served behind
    assert_false(decide_consistency(in).skip_cache);
    in = base();
    in.mode = ConsistencyMode::off;
    in.replica.lsn = 100;
    assert_false(decide_consistency(in).skip_cache);        // not looked at

    in = base();
    in.is_primary = true;                                   // sampled at 50
    assert_true(decide_consistency(in).skip_cache);
    in.replica.lsn = 100;                                   // sampled past it
    assert_false(decide_consistency(in).skip_cache);
    in.replica.known = false;                               // nothing sampled
    assert_true(decide_consistency(in).skip_cache);
    in.has_fence = false;
    assert_false(decide_consistency(in).skip_cache);
    in = base();
    in.is_primary = true;
    in.mode = ConsistencyMode::off;
    assert_false(decide_consistency(in).skip_cache);
}

void test_unreachable(void **)
{
    ConsistencyInput in = base();
    in.replica.reachable = false;                   // down: replay at once
    expect(in, A::replay, R::unreachable, "lsn");
    in.replica.known = false;
    expect(in, A::replay, R::unreachable, "lsn");

    // a position sampled before it went away that passes the fence: the
    // replica had replayed it
    in = base();
    in.replica.reachable = false;
    in.replica.lsn = 200;
    expect(in, A::pass, R::caught_up, {}, true);
}

void test_pending(void **)
{
    ConsistencyInput in = base();
    in.replica = ReplicaView();
    in.replica.pending = true;                      // worker just started
    expect(in, A::wait, R::pending);
    in.waited_out = true;                           // nothing came in time
    expect(in, A::replay, R::unreachable, "lsn");

    in = base();
    in.has_fence = false;
    in.max_lag_ms = 1000;
    in.replica = ReplicaView();
    in.replica.pending = true;
    expect(in, A::wait, R::pending);
    in.waited_out = true;
    expect(in, A::replay, R::unreachable, "lag");
}

void test_lag_guard(void **)
{
    ConsistencyInput in = base();
    in.has_fence = false;
    in.max_lag_ms = 1000;
    in.replica.lag_ms = 0;
    expect(in, A::pass, R::none);
    in.replica.lag_ms = 1000;                       // at the bound: fine
    expect(in, A::pass, R::none);
    in.replica.lag_ms = 1001;
    expect(in, A::replay, R::lagging, "lag");
    in.replica.lag_ms = 0;
    in.replica.reachable = false;                   // unreachable counts as lagging
    expect(in, A::replay, R::unreachable, "lag");

    // the lag guard comes first, fence or not
    in = base();
    in.max_lag_ms = 1000;
    in.replica.lag_ms = 5000;
    expect(in, A::replay, R::lagging, "lag");
    in.replica.lsn = 500;                           // even past the fence
    expect(in, A::replay, R::lagging, "lag");
    in.replica.lag_ms = 10;                         // not lagging: the fence
    expect(in, A::pass, R::caught_up, {}, true);

    // fly_replica_max_lag 0: any lag at all
    in = base();
    in.has_fence = false;
    in.max_lag_ms = 0;
    in.replica.lag_ms = 0;
    expect(in, A::pass, R::none);
    in.replica.lag_ms = 1;
    expect(in, A::replay, R::lagging, "lag");
}

void test_cannot_replay(void **)
{
    // already replayed here once (fly-replay-src): wait as usual, then
    // serve here rather than replay again
    ConsistencyInput in = base();
    in.can_replay = false;
    expect(in, A::wait, R::behind);
    in.waited_out = true;
    ConsistencyDecision d = decide_consistency(in);
    assert_int_equal(static_cast<int>(d.action), static_cast<int>(A::pass));
    assert_true(d.replay_refused);
    assert_false(d.clear_cookie);
    in.waited_out = false;
    in.replica.reachable = false;
    d = decide_consistency(in);
    assert_int_equal(static_cast<int>(d.action), static_cast<int>(A::pass));
    assert_true(d.replay_refused);

    // the lag guard does not replay it either; the fence still waits
    in = base();
    in.can_replay = false;
    in.max_lag_ms = 10;
    in.replica.lag_ms = 5000;
    expect(in, A::wait, R::behind);
    in.has_fence = false;
    expect(in, A::pass, R::none);
}

void test_lag_tracker(void **)
{
    LagTracker t;
    assert_int_equal(t.lag_ms(1000), 0);            // nothing known: no lag

    // idle primary, caught-up replica: zero, however long ago it wrote
    t.primary_at(1000, 500);
    t.replica_at(500);
    assert_int_equal(t.lag_ms(1000), 0);
    assert_int_equal(t.lag_ms(1000000), 0);
    t.primary_at(900000, 500);                      // nothing new written
    t.replica_at(500);
    assert_int_equal(t.lag_ms(1000000), 0);

    // a write the replica has not replayed: lag grows from that sample
    t.primary_at(2000, 600);
    t.replica_at(500);
    assert_int_equal(t.lag_ms(2000), 0);
    assert_int_equal(t.lag_ms(2500), 500);
    t.primary_at(3000, 700);
    t.replica_at(550);                              // some progress, not past 600
    assert_int_equal(t.lag_ms(3500), 1500);
    t.replica_at(600);                              // past the first: from the second
    assert_int_equal(t.lag_ms(3500), 500);
    assert_int_equal(t.behind(), 1);
    t.replica_at(700);                              // caught up
    assert_int_equal(t.lag_ms(3500), 0);
    assert_int_equal(t.behind(), 0);

    // samples the replica has replayed already are not kept
    t.replica_at(800);
    t.primary_at(4000, 800);
    assert_int_equal(t.behind(), 0);
    t.primary_at(4000, 750);                        // older than what was seen
    assert_int_equal(t.behind(), 0);

    // a clock that went back does not make a negative lag
    t.primary_at(5000, 900);
    assert_int_equal(t.lag_ms(4000), 0);

    // 64-bit positions
    LagTracker big;
    big.primary_at(10, 1ull << 40);
    big.replica_at((1ull << 40) - 1);
    assert_int_equal(big.lag_ms(20), 10);
    big.replica_at(1ull << 40);
    assert_int_equal(big.lag_ms(20), 0);

    // another replica behind the one before (replaced): its own position
    LagTracker r;
    r.primary_at(0, 100);
    r.replica_at(100);
    r.primary_at(10, 200);
    r.replica_at(300);
    assert_int_equal(r.lag_ms(20), 0);
    r.primary_at(30, 400);
    r.replica_at(150);                              // a new server, further behind
    assert_int_equal(r.lag_ms(40), 10);
}

void test_lag_tracker_full(void **)
{
    // more samples than it keeps while the replica is stuck: the oldest
    // stays, so the lag still counts from the first unreplayed write
    LagTracker t;
    t.replica_at(0);
    for (int i = 1; i <= 1000; i++) {
        t.primary_at(i * 10, static_cast<uint64_t>(i));
    }
    assert_int_equal(t.behind(), LagTracker::kMaxSamples);
    assert_int_equal(t.lag_ms(10010), 10000);
    t.replica_at(1);                                // past the oldest only
    int64_t lag = t.lag_ms(10010);
    assert_true(lag > 0 && lag < 10000);
    t.replica_at(1000);
    assert_int_equal(t.lag_ms(10010), 0);
    t.reset();
    assert_int_equal(t.behind(), 0);
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fence),
        cmocka_unit_test(test_no_fence),
        cmocka_unit_test(test_skip_cache),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_pending),
        cmocka_unit_test(test_lag_guard),
        cmocka_unit_test(test_cannot_replay),
        cmocka_unit_test(test_lag_tracker),
        cmocka_unit_test(test_lag_tracker_full),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
