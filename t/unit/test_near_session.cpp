// Unit tests: near cache sessions (slots, leases, crash check, reload) and
// the per-worker GET / invalidation race tokens.
#include "unit.hpp"

#include <memory>

#include "core/near_session.hpp"

using namespace fly::core;

namespace {

std::unique_ptr<NearSessions> fresh()
{
    std::unique_ptr<NearSessions> s(new NearSessions());
    s->init();
    return s;
}

int64_t g_dead_pid = 0;
bool alive_unless_dead(int64_t pid) { return pid != g_dead_pid; }

}  // namespace

static void test_word(void **)
{
    // a lease until 1000 ms is live before it, not at or after it (tick
    // granularity: the deadline is rounded down to a tick)
    uint64_t w = near_slot_word(7, 1000);
    assert_true(near_word_live(w, 7, 0));
    assert_true(near_word_live(w, 7, 1000 - kNearTick - 1));
    assert_false(near_word_live(w, 7, 1000));
    assert_false(near_word_live(w, 7, 5000));
    assert_false(near_word_live(w, 8, 0));          // another session
    assert_false(near_word_live(w, 0, 0));          // 0 is no session
    assert_false(near_word_live(0, 0, 0));
    // the tick counter wraps: differences still compare
    uint64_t base = (uint64_t(1) << 32) * kNearTick - 10 * kNearTick;
    uint64_t w2 = near_slot_word(3, base + 100 * kNearTick);
    assert_true(near_word_live(w2, 3, base));
    assert_true(near_word_live(w2, 3, base + 50 * kNearTick));
    assert_false(near_word_live(w2, 3, base + 200 * kNearTick));
}

static void test_claim_renew_end(void **)
{
    auto s = fresh();
    uint32_t a = 0, b = 0;
    int sa = s->claim(100, 0, 3000, nullptr, &a);
    int sb = s->claim(101, 0, 3000, nullptr, &b);
    assert_true(sa >= 0 && sb >= 0 && sa != sb);
    assert_true(a != 0 && b != 0 && a != b);
    assert_true(s->live(sa, a, 10));
    assert_true(s->live(sb, b, 10));
    assert_false(s->live(sa, b, 10));               // not b's slot
    assert_false(s->live(-1, a, 10));
    assert_false(s->live(int(kNearSlots), a, 10));

    // the lease runs out, a renew brings it back
    assert_false(s->live(sa, a, 3000));
    assert_true(s->renew(sa, a, 6000));
    assert_true(s->live(sa, a, 3000));

    // ending it: at once, for good; its renew fails
    s->end(sa, a);
    assert_false(s->live(sa, a, 10));
    assert_false(s->renew(sa, a, 9000));
    // ending another session's slot does nothing
    s->end(sb, a);
    assert_true(s->live(sb, b, 10));
}

static void test_claim_takes_expired_and_dead(void **)
{
    auto s = fresh();
    uint32_t ids[kNearSlots];
    for (size_t i = 0; i < kNearSlots; i++) {
        assert_int_equal(s->claim(int64_t(1000 + i), 0, 1000, nullptr, &ids[i]),
                         int(i));
    }
    uint32_t x = 0;
    assert_int_equal(s->claim(5000, 10, 1000, nullptr, &x), -1);   // all taken

    // a holder that died: its slot is taken at once by a new claim
    g_dead_pid = 1007;
    int got = s->claim(5000, 10, 2000, alive_unless_dead, &x);
    assert_int_equal(got, 7);
    assert_true(s->live(7, x, 10));
    assert_false(s->live(7, ids[7], 10));           // its old session is over
    assert_false(s->renew(7, ids[7], 3000));

    // an expired lease: taken by a new claim; the old holder's renew fails
    uint32_t y = 0;
    got = s->claim(6000, 1000, 5000, nullptr, &y);
    assert_true(got >= 0 && got != 7);
    assert_false(s->renew(got, ids[got], 9000));
    assert_true(s->live(got, y, 1000));
}

static void test_end_all(void **)
{
    auto s = fresh();
    uint32_t a = 0, b = 0;
    int sa = s->claim(1, 0, 10000, nullptr, &a);
    int sb = s->claim(2, 0, 10000, nullptr, &b);
    s->end_all();
    assert_false(s->live(sa, a, 0));
    assert_false(s->live(sb, b, 0));
    assert_false(s->renew(sa, a, 20000));
    // new sessions get new ids: no entry of before can be vouched for again
    uint32_t c = 0;
    int sc = s->claim(1, 0, 10000, nullptr, &c);
    assert_true(sc >= 0);
    assert_true(c != a && c != b);
}

static void test_race_tokens(void **)
{
    NearRace race;
    NearRace::Token none = race.take(42);
    assert_false(race.holds(none));                 // no generation yet

    race.next_generation();
    NearRace::Token t = race.take(42);
    NearRace::Token u = race.take(43);
    assert_true(race.holds(t));
    assert_true(race.holds(u));

    // an invalidation of the key's bucket: its token fails, others hold
    race.invalidated(42);
    assert_false(race.holds(t));
    assert_true(race.holds(u));
    // a token taken after it holds
    NearRace::Token t2 = race.take(42);
    assert_true(race.holds(t2));
    // the same bucket (a different key): a lost chance, never a wrong entry
    race.invalidated(42 + NearRace::kBuckets);
    assert_false(race.holds(t2));

    // a new generation (connection lost, flush): every token fails
    NearRace::Token v = race.take(7);
    race.next_generation();
    assert_false(race.holds(v));
    assert_false(race.holds(u));
    assert_true(race.holds(race.take(7)));

    NearRace::Token bad = race.take(7);
    bad.bucket = NearRace::kBuckets;
    assert_false(race.holds(bad));
}

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_word),
        cmocka_unit_test(test_claim_renew_end),
        cmocka_unit_test(test_claim_takes_expired_and_dead),
        cmocka_unit_test(test_end_all),
        cmocka_unit_test(test_race_tokens),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
