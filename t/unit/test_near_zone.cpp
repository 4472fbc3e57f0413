// Unit tests: the near cache's table: storing and finding, what makes an
// entry usable (freshness, a live session, the tag epoch), LRU eviction
// under a memory budget (never of an entry being sent), invalidation and
// replacement of entries being sent, clearing on reload.
#include "unit.hpp"

#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/near_zone.hpp"

using namespace fly::core;

namespace {

// malloc with a budget, and a record of what is allocated
struct Budget {
    size_t limit = SIZE_MAX;
    size_t used = 0;
    std::set<void *> live;
};

void *b_alloc(void *ctx, size_t size) noexcept
{
    auto *b = static_cast<Budget *>(ctx);
    if (b->used + size > b->limit) {
        return nullptr;
    }
    void *p = std::malloc(size + sizeof(size_t));
    if (p == nullptr) {
        return nullptr;
    }
    *static_cast<size_t *>(p) = size;
    b->used += size;
    void *q = static_cast<char *>(p) + sizeof(size_t);
    b->live.insert(q);
    return q;
}

void b_free(void *ctx, void *q) noexcept
{
    auto *b = static_cast<Budget *>(ctx);
    assert_true(b->live.erase(q) == 1);      // never freed twice
    void *p = static_cast<char *>(q) - sizeof(size_t);
    b->used -= *static_cast<size_t *>(p);
    std::free(p);
}

struct Fixture {
    Budget budget;
    NearAlloc a{b_alloc, b_free, &budget};
    std::vector<NearEntry *> buckets;
    std::unique_ptr<NearZone> z{new NearZone()};
    NearVouch v;
    NearNow now{1000, 50};

    explicit Fixture(size_t nbuckets = 64) : buckets(nbuckets)
    {
        z->init(buckets.data(), nbuckets);
        uint32_t id = 0;
        int slot = z->sessions.claim(1, 0, 10000, nullptr, &id);
        assert_true(slot >= 0);
        v.slot = static_cast<int16_t>(slot);
        v.session = id;
        z->set_epoch(5, v);
    }
    ~Fixture()
    {
        z->clear(a);
    }
    NearEntry *put(const std::string &k, const std::string &val,
                   int64_t fresh_until = 2000, uint64_t ep = 5)
    {
        return z->store(k, near_hash(k), val, v, ep, fresh_until, 0, a);
    }
    NearEntry *get(const std::string &k)
    {
        return z->acquire(k, near_hash(k), now);
    }
};

}  // namespace

static void test_hash(void **)
{
    assert_true(near_hash("") == 0xcbf29ce484222325ull);
    assert_true(near_hash("a") == 0xaf63dc4c8601ec8cull);   // FNV-1a 64 of "a"
    assert_true(near_hash("fly:a") != near_hash("fly:b"));
    assert_true(NearZone::buckets_for(0) == 64);
    assert_true(NearZone::buckets_for(64u << 20) == 16384);
    size_t n = NearZone::buckets_for(1000000000);
    assert_true((n & (n - 1)) == 0);
}

static void test_admissible(void **)
{
    assert_true(near_admissible(100, 100, 11, 10));
    assert_false(near_admissible(101, 100, 11, 10));   // over max_entry
    assert_false(near_admissible(10, 100, 10, 10));    // not fresh now
}

static void test_store_acquire_release(void **)
{
    Fixture f;
    assert_null(f.get("fly:a"));
    NearEntry *e = f.put("fly:a", "value-a");
    assert_non_null(e);
    assert_sv_equal(e->key(), "fly:a");
    assert_sv_equal(e->value(), "value-a");
    assert_int_equal(f.z->stats.entries, 1);

    NearEntry *g = f.get("fly:a");
    assert_ptr_equal(g, e);
    assert_int_equal(g->refs, 1);
    f.z->release(g, f.a);
    assert_int_equal(g->refs, 0);
    assert_null(f.get("fly:b"));

    // replaced: the new value is what a request gets
    f.put("fly:a", "value-a2");
    g = f.get("fly:a");
    assert_sv_equal(g->value(), "value-a2");
    f.z->release(g, f.a);
    assert_int_equal(f.z->stats.entries, 1);
}

static void test_usable_rules(void **)
{
    Fixture f;
    f.put("fly:fresh", "x", 2000);
    f.put("fly:old-epoch", "x", 2000, 4);

    // freshness: at or after fresh_until, not served
    f.now.unix_s = 1999;
    NearEntry *e = f.get("fly:fresh");
    assert_non_null(e);
    f.z->release(e, f.a);
    f.now.unix_s = 2000;
    assert_null(f.get("fly:fresh"));
    f.now.unix_s = 1000;

    // an entry valid at another tag epoch: not usable
    assert_null(f.get("fly:old-epoch"));

    // the epoch record gone (its key was invalidated): nothing is usable
    f.z->forget_epoch();
    assert_null(f.get("fly:fresh"));
    // read again (a lookup), at the entry's epoch: usable again
    f.z->set_epoch(5, f.v);
    e = f.get("fly:fresh");
    assert_non_null(e);
    f.z->release(e, f.a);
    // a newer epoch (a tag purge): entries of epoch 5 are not
    f.z->set_epoch(6, f.v);
    assert_null(f.get("fly:fresh"));
    f.z->set_epoch(5, f.v);

    // the session's lease runs out: nothing it vouched for is usable; a
    // renew brings them back
    f.now.mono_ms = 10000;
    assert_null(f.get("fly:fresh"));
    assert_true(f.z->sessions.renew(f.v.slot, f.v.session, 20000));
    e = f.get("fly:fresh");
    assert_non_null(e);
    f.z->release(e, f.a);

    // the session ends: its entries, and the epoch it vouched for, at once
    f.z->sessions.end(f.v.slot, f.v.session);
    assert_null(f.get("fly:fresh"));
    assert_false(f.z->epoch_usable(f.now.mono_ms));

    // a new session: the epoch must be read under it, and so must the
    // entries (the old ones stay unusable)
    uint32_t id = 0;
    int slot = f.z->sessions.claim(1, 0, 30000, nullptr, &id);
    NearVouch v2{static_cast<int16_t>(slot), id};
    f.z->set_epoch(5, v2);
    assert_null(f.get("fly:fresh"));
    assert_non_null(f.z->store("fly:fresh", near_hash("fly:fresh"), "y", v2, 5,
                               2000, 0, f.a));
    e = f.get("fly:fresh");
    assert_non_null(e);
    assert_sv_equal(e->value(), "y");
    f.z->release(e, f.a);
}

static void test_forget(void **)
{
    Fixture f;
    f.put("fly:a", "1");
    f.put("fly:b", "2");
    assert_true(f.z->forget("fly:a", near_hash("fly:a"), f.a));
    assert_false(f.z->forget("fly:a", near_hash("fly:a"), f.a));
    assert_null(f.get("fly:a"));
    NearEntry *b = f.get("fly:b");
    assert_non_null(b);
    f.z->release(b, f.a);
    assert_int_equal(f.z->stats.invalidated, 1);
    assert_int_equal(f.z->stats.entries, 1);
}

// A record of a key's absence (kNearAbsent): no value, usable under the
// same rules as an entry, replaced by a value, gone with the key.
static void test_absent_record(void **)
{
    Fixture f;
    NearEntry *e = f.z->store("fly:none", near_hash("fly:none"), {}, f.v, 5,
                              f.now.unix_s + kNearAbsentSeconds, kNearAbsent,
                              f.a);
    assert_non_null(e);
    assert_int_equal(e->value_len, 0);
    NearEntry *g = f.get("fly:none");
    assert_ptr_equal(g, e);
    assert_true(g->flags & kNearAbsent);
    assert_int_equal(g->epoch, 5);
    f.z->release(g, f.a);

    // the tag epoch moved on: not usable (the fill needs the epoch)
    f.z->set_epoch(6, f.v);
    assert_null(f.get("fly:none"));
    f.z->set_epoch(5, f.v);
    // expired: not usable
    f.now.unix_s += kNearAbsentSeconds;
    assert_null(f.get("fly:none"));
    f.now.unix_s -= kNearAbsentSeconds;
    // its session ended: not usable
    f.z->sessions.end(f.v.slot, f.v.session);
    assert_null(f.get("fly:none"));
    uint32_t id = 0;
    f.v.slot = static_cast<int16_t>(f.z->sessions.claim(1, 0, 10000, nullptr, &id));
    f.v.session = id;
    f.z->set_epoch(5, f.v);

    // a value replaces the record (and the other way round)
    f.z->store("fly:none", near_hash("fly:none"), {}, f.v, 5, 2000,
               kNearAbsent, f.a);
    f.put("fly:none", "entry");
    g = f.get("fly:none");
    assert_false(g->flags & kNearAbsent);
    assert_sv_equal(g->value(), "entry");
    f.z->release(g, f.a);
    f.z->store("fly:none", near_hash("fly:none"), {}, f.v, 5, 2000,
               kNearAbsent, f.a);
    g = f.get("fly:none");
    assert_true(g->flags & kNearAbsent);
    f.z->release(g, f.a);
    assert_int_equal(f.z->stats.entries, 1);

    // an invalidation of the key ends it
    assert_true(f.z->forget("fly:none", near_hash("fly:none"), f.a));
    assert_null(f.get("fly:none"));
}

static void test_collisions(void **)
{
    // one bucket: every key chains; each is found as itself
    Fixture f(1);
    for (int i = 0; i < 50; i++) {
        f.put("fly:k" + std::to_string(i), "v" + std::to_string(i));
    }
    for (int i = 0; i < 50; i += 7) {
        NearEntry *e = f.get("fly:k" + std::to_string(i));
        assert_non_null(e);
        assert_sv_equal(e->value(), "v" + std::to_string(i));
        f.z->release(e, f.a);
    }
    assert_true(f.z->forget("fly:k10", near_hash("fly:k10"), f.a));
    assert_null(f.get("fly:k10"));
    NearEntry *e = f.get("fly:k11");
    assert_non_null(e);
    f.z->release(e, f.a);
}

static void test_entry_being_sent(void **)
{
    Fixture f;
    f.put("fly:a", "old");
    NearEntry *sending = f.get("fly:a");
    void *mem = sending;

    // invalidated while a request sends it: out of the table at once, its
    // bytes intact until the request lets go
    f.z->forget("fly:a", near_hash("fly:a"), f.a);
    assert_null(f.get("fly:a"));
    assert_true(f.budget.live.count(mem) == 1);
    assert_sv_equal(sending->value(), "old");
    f.z->release(sending, f.a);
    assert_true(f.budget.live.count(mem) == 0);

    // replaced while sent: the same
    f.put("fly:b", "old-b");
    sending = f.get("fly:b");
    mem = sending;
    f.put("fly:b", "new-b");
    assert_sv_equal(sending->value(), "old-b");
    NearEntry *now = f.get("fly:b");
    assert_sv_equal(now->value(), "new-b");
    f.z->release(sending, f.a);
    assert_true(f.budget.live.count(mem) == 0);
    f.z->release(now, f.a);
}

static void test_lru_eviction(void **)
{
    Fixture f;
    size_t one = NearEntry::size_for(8, 1000);
    f.budget.limit = one * 4 + one / 2;      // room for four
    std::string val(1000, 'x');
    f.put("fly:k0001", val);
    f.put("fly:k0002", val);
    f.put("fly:k0003", val);
    f.put("fly:k0004", val);
    // k1 used: k2 is the least recently used now
    f.z->release(f.get("fly:k0001"), f.a);
    assert_non_null(f.put("fly:k0005", val));
    assert_null(f.get("fly:k0002"));
    assert_int_equal(f.z->stats.evicted, 1);
    for (const char *k : {"fly:k0001", "fly:k0003", "fly:k0004", "fly:k0005"}) {
        NearEntry *e = f.get(k);
        assert_non_null(e);
        f.z->release(e, f.a);
    }

    // an entry being sent is never evicted: the next oldest goes
    NearEntry *held = f.get("fly:k0001");      // sent by a request
    f.z->release(f.get("fly:k0003"), f.a);
    f.z->release(f.get("fly:k0004"), f.a);
    f.z->release(f.get("fly:k0005"), f.a);
    assert_ptr_equal(f.z->oldest, held);
    assert_non_null(f.put("fly:k0006", val));
    assert_non_null(f.z->find("fly:k0001", near_hash("fly:k0001")));
    assert_null(f.z->find("fly:k0003", near_hash("fly:k0003")));
    f.z->release(held, f.a);

    // nothing can make room (every entry is being sent, or the value is
    // bigger than everything): not stored, and nothing of the key is left
    std::string big(one * 8, 'y');
    assert_null(f.put("fly:k0004", big));
    assert_null(f.z->find("fly:k0004", near_hash("fly:k0004")));
    assert_true(f.z->stats.no_memory >= 1);
    assert_true(f.budget.used <= f.budget.limit);
}

static void test_clear(void **)
{
    Fixture f;
    f.put("fly:a", "1");
    f.put("fly:b", "2");
    NearEntry *sending = f.get("fly:a");
    f.z->clear(f.a);
    assert_int_equal(f.z->stats.entries, 0);
    assert_null(f.z->newest);
    assert_null(f.z->oldest);
    assert_false(f.z->epoch_usable(0));
    assert_false(f.z->sessions.live(f.v.slot, f.v.session, 0));
    // the one being sent survives until it is let go
    assert_int_equal(f.budget.live.size(), 1);
    f.z->release(sending, f.a);
    assert_int_equal(f.budget.live.size(), 0);
}

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_admissible),
        cmocka_unit_test(test_store_acquire_release),
        cmocka_unit_test(test_usable_rules),
        cmocka_unit_test(test_forget),
        cmocka_unit_test(test_absent_record),
        cmocka_unit_test(test_collisions),
        cmocka_unit_test(test_entry_being_sent),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_clear),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
