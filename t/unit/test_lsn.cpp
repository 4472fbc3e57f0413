// Unit tests: WAL positions (X/Y), their order, the record-end rule for
// pg_current_wal_insert_lsn(), the fly-lsn cookie.
#include "unit.hpp"

#include "core/lsn.hpp"
#include "core/replay.hpp"

using namespace fly::core;

namespace {

uint64_t lsn_ok(std::string_view s)
{
    uint64_t v = 0xdeadbeef;
    bool ok = parse_lsn(s, v);
    if (!ok) {
        print_error("parse_lsn(%s) failed\n", std::string(s).c_str());
    }
    assert_true(ok);
    return v;
}

void lsn_bad(std::string_view s)
{
    uint64_t v = 42;
    if (parse_lsn(s, v)) {
        print_error("parse_lsn(\"%s\") accepted\n", std::string(s).c_str());
        fail();
    }
    assert_int_equal(v, 42);   // untouched
}

void test_lsn_parse(void **)
{
    assert_int_equal(lsn_ok("0/0"), 0);
    assert_int_equal(lsn_ok("0/1"), 1);
    assert_int_equal(lsn_ok("0/3000148"), 0x3000148);
    assert_int_equal(lsn_ok("16/B374D848"), 0x16B374D848ull);
    assert_int_equal(lsn_ok("16/b374d848"), 0x16B374D848ull);   // either case
    assert_int_equal(lsn_ok("1/0"), 1ull << 32);
    assert_int_equal(lsn_ok("FFFFFFFF/FFFFFFFF"), ~0ull);
    assert_int_equal(lsn_ok("00000000/00000001"), 1);            // 8 digits with zeros
    assert_int_equal(lsn_ok("0000000A/0000000B"), 0xA0000000Bull);
}

void test_lsn_parse_malformed(void **)
{
    lsn_bad("");
    lsn_bad("/");
    lsn_bad("0/");
    lsn_bad("/0");
    lsn_bad("0");
    lsn_bad("3000148");
    lsn_bad("0//1");
    lsn_bad("0/1/2");
    lsn_bad("123456789/0");      // 9 digits in a half
    lsn_bad("0/123456789");
    lsn_bad("100000000/0");
    lsn_bad(" 0/1");
    lsn_bad("0/1 ");
    lsn_bad("0 /1");
    lsn_bad("0/ 1");
    lsn_bad("+0/1");
    lsn_bad("-1/0");
    lsn_bad("0x1/0");
    lsn_bad("0/G");
    lsn_bad("g/0");
    lsn_bad("0/1;");
    lsn_bad("\"0/1\"");
    using namespace std::string_literals;
    lsn_bad("0/1\0"s);
    lsn_bad("0\0/1"s);
}

void test_lsn_format_round_trip(void **)
{
    char buf[kLsnTextMax];
    assert_int_equal(format_lsn(0, buf), 3);
    assert_sv_equal(std::string_view(buf, 3), "0/0");
    assert_sv_equal(lsn_text(0x16B374D848ull), "16/B374D848");
    assert_sv_equal(lsn_text(1ull << 32), "1/0");
    assert_sv_equal(lsn_text(~0ull), "FFFFFFFF/FFFFFFFF");
    assert_int_equal(lsn_text(~0ull).size(), kLsnTextMax);
    const uint64_t samples[] = {0, 1, 0xf, 0x10, 0xffffffffull, 0x100000000ull,
                                0x123456789abcdefull, 0x8000000000000000ull,
                                ~0ull - 1, ~0ull};
    for (uint64_t v : samples) {
        uint64_t back = 0;
        assert_true(parse_lsn(lsn_text(v), back));
        assert_int_equal(back, v);
    }
}

// Positions compare as 64-bit numbers: the high half first, and not as
// text ("9/0" < "10/0", "0/FFFFFFFF" < "1/0").
void test_lsn_order(void **)
{
    assert_true(lsn_ok("9/0") < lsn_ok("10/0"));
    assert_true(lsn_ok("0/FFFFFFFF") < lsn_ok("1/0"));
    assert_true(lsn_ok("1/0") < lsn_ok("1/1"));
    assert_true(lsn_ok("0/A") == lsn_ok("0/a"));
    assert_true(lsn_ok("0/00A") == lsn_ok("0/A"));
    assert_true(lsn_ok("FFFFFFFF/0") > lsn_ok("7FFFFFFF/FFFFFFFF"));   // no sign
}

void test_decimal(void **)
{
    uint64_t v = 0;
    assert_true(parse_decimal("8192", v));
    assert_int_equal(v, 8192);
    assert_true(parse_decimal("16777216", v));
    assert_int_equal(v, 16777216);
    assert_true(parse_decimal("0", v));
    assert_int_equal(v, 0);
    assert_true(parse_decimal("9999999999999999999", v));
    assert_false(parse_decimal("", v));
    assert_false(parse_decimal("16MB", v));
    assert_false(parse_decimal("-1", v));
    assert_false(parse_decimal(" 1", v));
    assert_false(parse_decimal("12345678901234567890", v));   // 20 digits
}

// pg_current_wal_insert_lsn() right after a page header is the page's
// boundary; anywhere else it is already a record end.
void test_record_end(void **)
{
    const uint64_t blk = 8192, seg = 16u << 20;
    // a short page header (24 bytes) on a page that is not a segment's first
    assert_int_equal(record_end_lsn(3 * blk + 24, blk, seg), 3 * blk);
    assert_int_equal(record_end_lsn(seg + 5 * blk + 24, blk, seg), seg + 5 * blk);
    // the long header (40 bytes) of a segment's first page
    assert_int_equal(record_end_lsn(7 * seg + 40, blk, seg), 7 * seg);
    assert_int_equal(record_end_lsn(40, blk, seg), 0);
    // elsewhere: unchanged
    assert_int_equal(record_end_lsn(3 * blk + 25, blk, seg), 3 * blk + 25);
    assert_int_equal(record_end_lsn(3 * blk + 32, blk, seg), 3 * blk + 32);
    assert_int_equal(record_end_lsn(3 * blk, blk, seg), 3 * blk);
    assert_int_equal(record_end_lsn(3 * blk + 40, blk, seg), 3 * blk + 40);
    assert_int_equal(record_end_lsn(7 * seg + 24, blk, seg), 7 * seg + 24);  // inside a long header: impossible, kept
    assert_int_equal(record_end_lsn(0x3000148, blk, seg), 0x3000148);
    // 64-bit positions
    uint64_t high = (0x16ull << 32) + 9 * blk;
    assert_int_equal(record_end_lsn(high + 24, blk, seg), high);
    // other sizes the server may have been built or initialised with
    assert_int_equal(record_end_lsn(2 * 32768 + 24, 32768, 1u << 30), 2 * 32768);
    assert_int_equal(record_end_lsn((1u << 20) + 40, 1024, 1u << 20), 1u << 20);
    // sizes PostgreSQL cannot have: the position as it is
    assert_int_equal(record_end_lsn(3 * blk + 24, 0, seg), 3 * blk + 24);
    assert_int_equal(record_end_lsn(3 * blk + 24, 8000, seg), 3 * blk + 24);
    assert_int_equal(record_end_lsn(3 * blk + 24, blk, 0), 3 * blk + 24);
    assert_int_equal(record_end_lsn(3 * blk + 24, blk, (16u << 20) + 1), 3 * blk + 24);
    assert_int_equal(record_end_lsn(3 * blk + 24, 512, seg), 3 * blk + 24);
    assert_int_equal(record_end_lsn(3 * blk + 24, blk, 1u << 19), 3 * blk + 24);
}

void test_cookie(void **)
{
    assert_sv_equal(lsn_cookie(0x3000148),
                    "fly-lsn=0/3000148; Max-Age=60; Path=/; HttpOnly; SameSite=Lax");
    assert_sv_equal(lsn_cookie(~0ull),
                    "fly-lsn=FFFFFFFF/FFFFFFFF; Max-Age=60; Path=/; HttpOnly; SameSite=Lax");
    assert_sv_equal(kLsnCookieClear, "fly-lsn=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax");

    // what a client sends back is read with the shared cookie finder
    std::string_view v;
    assert_true(find_cookie("a=1; fly-lsn=16/B374D848; b=2", kLsnCookie, v));
    assert_sv_equal(v, "16/B374D848");
    assert_int_equal(lsn_ok(v), 0x16B374D848ull);
    assert_true(find_cookie("fly-lsn=\"0/5\"", kLsnCookie, v));
    assert_int_equal(lsn_ok(v), 5);
    assert_true(find_cookie("fly-lsn=", kLsnCookie, v));
    lsn_bad(v);
    assert_false(find_cookie("xfly-lsn=0/1", kLsnCookie, v));
    // the cookie a write sets is read back as the position it carries
    std::string c = lsn_cookie(0xABCDEF0123ull);
    std::string pair = c.substr(0, c.find(';'));
    assert_true(find_cookie(pair, kLsnCookie, v));
    assert_int_equal(lsn_ok(v), 0xABCDEF0123ull);
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lsn_parse),
        cmocka_unit_test(test_lsn_parse_malformed),
        cmocka_unit_test(test_lsn_format_round_trip),
        cmocka_unit_test(test_lsn_order),
        cmocka_unit_test(test_decimal),
        cmocka_unit_test(test_record_end),
        cmocka_unit_test(test_cookie),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
