// Unit tests: tombstones and the fill fence.
#include "unit.hpp"

#include "core/tombstone.hpp"

using namespace fly::core;

namespace {

void test_encode_decode(void **)
{
    Tombstone t;
    t.time_ms = 1700000000123;
    std::string e = encode_tombstone(t);
    assert_int_equal(e.size(), kTombstoneLen);
    assert_string_equal(e.c_str(), "FLYT100000018bcfe5687b0000000000000000");
    assert_true(is_tombstone(e));
    Tombstone d;
    assert_true(decode_tombstone(e, d));
    assert_int_equal(d.time_ms, t.time_ms);
    assert_false(d.has_lsn);
    assert_int_equal(d.lsn, 0);

    // with an LSN (issue 9: the primary's WAL position, 64 bits)
    t.has_lsn = true;
    t.lsn = 0x16B3748ull << 8;
    e = encode_tombstone(t);
    assert_int_equal(e[5], '1');
    assert_true(decode_tombstone(e, d));
    assert_true(d.has_lsn);
    assert_true(d.lsn == t.lsn);
    t.lsn = UINT64_MAX;
    assert_true(decode_tombstone(encode_tombstone(t), d));
    assert_true(d.lsn == UINT64_MAX);

    // a negative time is written as 0
    t = Tombstone();
    t.time_ms = -5;
    assert_true(decode_tombstone(encode_tombstone(t), d));
    assert_int_equal(d.time_ms, 0);
}

void test_decode_refuses(void **)
{
    Tombstone t;
    t.time_ms = 1700000000123;
    std::string good = encode_tombstone(t);
    Tombstone d;
    d.time_ms = 7;
    assert_false(decode_tombstone("", d));
    assert_int_equal(d.time_ms, 0);
    assert_false(decode_tombstone("FLYT", d));
    assert_false(decode_tombstone(good.substr(0, kTombstoneLen - 1), d));
    assert_false(decode_tombstone(good + "0", d));
    std::string bad = good;
    bad[4] = '2';                                   // version
    assert_false(decode_tombstone(bad, d));
    bad = good;
    bad[5] = '2';                                   // unknown flag
    assert_false(decode_tombstone(bad, d));
    bad = good;
    bad[10] = 'A';                                  // upper-case hex
    assert_false(decode_tombstone(bad, d));
    bad = good;
    bad[30] = 'g';
    assert_false(decode_tombstone(bad, d));
    bad = good;
    bad[37] = '1';                                  // LSN bits without the flag
    assert_false(decode_tombstone(bad, d));
    bad = good;
    bad.replace(6, 16, "0020000000000001");        // beyond 2^53 ms
    assert_false(decode_tombstone(bad, d));
    // an entry is not a tombstone
    assert_false(is_tombstone("FLYC\x02"));
    assert_true(is_tombstone("FLYTgarbage"));       // but this one is, unreadable
}

void test_fence_without_lsn(void **)
{
    Tombstone t;
    t.time_ms = 100000;
    FillFence f;
    f.fence_ms = 2000;
    // a lookup before the invalidation never passes: its response may
    // have been rendered from the data before the write
    f.lookup_ms = 99000;
    assert_false(fence_allows(t, f));
    // nor one within the fence
    f.lookup_ms = 100000;
    assert_false(fence_allows(t, f));
    f.lookup_ms = 101999;
    assert_false(fence_allows(t, f));
    // a fence later, the database had that long to replay the write
    f.lookup_ms = 102000;
    assert_true(fence_allows(t, f));
    f.lookup_ms = 500000;
    assert_true(fence_allows(t, f));
    // fence 0: only "after the invalidation" is asked
    f.fence_ms = 0;
    f.lookup_ms = 100000;
    assert_true(fence_allows(t, f));
    f.lookup_ms = 99999;
    assert_false(fence_allows(t, f));
}

void test_fence_with_lsn(void **)
{
    Tombstone t;
    t.time_ms = 100000;
    t.has_lsn = true;
    t.lsn = 0x5000;
    FillFence f;
    f.fence_ms = 2000;
    f.lookup_ms = 100500;                 // within the fence
    assert_false(fence_allows(t, f));     // no sample: the time rule
    f.has_lsn = true;
    f.replica_lsn = 0x4fff;               // the replica had not replayed it
    assert_false(fence_allows(t, f));
    f.replica_lsn = 0x5000;               // it had
    assert_true(fence_allows(t, f));
    f.replica_lsn = UINT64_MAX;           // far past it (64 bits)
    assert_true(fence_allows(t, f));
    // past the time fence, the position still decides: a replica far
    // behind stores nothing
    f.lookup_ms = 1000000;
    f.replica_lsn = 0x4fff;
    assert_false(fence_allows(t, f));
    f.replica_lsn = 0x5000;
    assert_true(fence_allows(t, f));
    // a lookup before the invalidation: its sample is older than the
    // write, so below the tombstone's position
    f.lookup_ms = 99000;
    f.replica_lsn = 0x4000;
    assert_false(fence_allows(t, f));
    // no sample: the time rule
    f.has_lsn = false;
    f.lookup_ms = 1000000;
    assert_true(fence_allows(t, f));
    f.lookup_ms = 100500;
    assert_false(fence_allows(t, f));
    // a tombstone without an LSN: the time rule only
    f.has_lsn = true;
    f.replica_lsn = UINT64_MAX;
    t.has_lsn = false;
    assert_false(fence_allows(t, f));
    f.lookup_ms = 102000;
    assert_true(fence_allows(t, f));
}

void test_script_args(void **)
{
    // the fill script compares 16-hex-digit strings: the same decision
    FillFence f;
    f.lookup_ms = 102000;
    f.fence_ms = 2000;
    assert_string_equal(fence_threshold_arg(f).c_str(), "00000000000186a0");
    assert_string_equal(fence_lsn_arg(f).c_str(), "");
    f.has_lsn = true;
    f.replica_lsn = 0xabc;
    assert_string_equal(fence_lsn_arg(f).c_str(), "0000000000000abc");
    f.lookup_ms = 100;
    assert_string_equal(fence_threshold_arg(f).c_str(), "0000000000000000");
    // string order of the encoded fields is numeric order
    for (int64_t a : {0ll, 1ll, 15ll, 16ll, 255ll, 1700000000123ll}) {
        for (int64_t b : {0ll, 1ll, 15ll, 16ll, 255ll, 1700000000123ll}) {
            assert_int_equal(hex16(a) < hex16(b), a < b);
        }
    }
    Tombstone t;
    t.time_ms = 0x186a0;
    assert_true(encode_tombstone(t).substr(6, 16) == hex16(0x186a0));
}

void test_keys_and_times(void **)
{
    assert_true(fence_record_key("fly:k") == std::string("fly:k\x1fi"));
    // a staged fill is no entry's key: not the base key's, and not a Vary
    // variant's ("\x1f<name>=<value>")
    std::string staged = fill_staging_key("fly:k", "1f.2a.3b");
    assert_true(staged == std::string("fly:k\x1fs1f.2a.3b"));
    assert_true(staged.find('=') == std::string::npos);
    assert_true(fill_staging_key("fly:k\x1f" "accept=x", "9")
                == std::string("fly:k\x1f" "accept=x\x1fs9"));
    assert_int_equal(tombstone_ttl_ms(2000), 2000 + kFenceGraceMs);
    assert_true(fill_in_time(0));
    assert_true(fill_in_time(kFenceGraceMs - 1));
    assert_false(fill_in_time(kFenceGraceMs));
    assert_false(fill_in_time(-1));
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_decode),
        cmocka_unit_test(test_decode_refuses),
        cmocka_unit_test(test_fence_without_lsn),
        cmocka_unit_test(test_fence_with_lsn),
        cmocka_unit_test(test_script_args),
        cmocka_unit_test(test_keys_and_times),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
