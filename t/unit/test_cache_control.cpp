// Unit tests: the Cache-Control parser, targeted fields (RFC 9213), Age
// and HTTP-date.
#include "unit.hpp"

#include "core/cache_control.hpp"

using namespace fly::core;

namespace {

constexpr int64_t k2p31 = int64_t{1} << 31;

CacheControl cc_of(std::string_view v)
{
    CacheControl cc;
    parse_cache_control(v, cc);
    return cc;
}

void assert_default(const CacheControl &cc)
{
    assert_false(cc.no_store);
    assert_false(cc.no_cache);
    assert_false(cc.is_private);
    assert_false(cc.is_public);
    assert_false(cc.must_revalidate);
    assert_false(cc.proxy_revalidate);
    assert_false(cc.immutable);
    assert_int_equal(cc.max_age, -1);
    assert_int_equal(cc.s_maxage, -1);
    assert_int_equal(cc.stale_while_revalidate, -1);
    assert_int_equal(cc.stale_if_error, -1);
}

void test_empty(void **)
{
    for (std::string_view v : {"", " ", "\t", ",", " , ,, ", ",,,"}) {
        CacheControl cc = cc_of(v);
        assert_default(cc);
        assert_false(cc.invalid);
    }
}

void test_flags(void **)
{
    CacheControl cc = cc_of(
        "no-store, no-cache, private, public, must-revalidate, proxy-revalidate, immutable");
    assert_true(cc.no_store);
    assert_true(cc.no_cache);
    assert_true(cc.is_private);
    assert_true(cc.is_public);
    assert_true(cc.must_revalidate);
    assert_true(cc.proxy_revalidate);
    assert_true(cc.immutable);
    assert_false(cc.invalid);

    cc = cc_of("public");
    assert_true(cc.is_public);
    assert_false(cc.no_store);
    assert_false(cc.is_private);
}

void test_case_insensitive(void **)
{
    CacheControl cc = cc_of("No-Store, MAX-AGE=60, S-MaxAge=30, Private, PUBLIC");
    assert_true(cc.no_store);
    assert_true(cc.is_private);
    assert_true(cc.is_public);
    assert_int_equal(cc.max_age, 60);
    assert_int_equal(cc.s_maxage, 30);
    assert_false(cc.invalid);
}

void test_numbers(void **)
{
    CacheControl cc = cc_of("max-age=0, s-maxage=3600, stale-while-revalidate=30, stale-if-error=86400");
    assert_int_equal(cc.max_age, 0);
    assert_int_equal(cc.s_maxage, 3600);
    assert_int_equal(cc.stale_while_revalidate, 30);
    assert_int_equal(cc.stale_if_error, 86400);
    assert_false(cc.invalid);

    assert_int_equal(cc_of("max-age=007").max_age, 7);
    // quoted delta-seconds are accepted (RFC 9111 5.2)
    cc = cc_of("max-age=\"120\"");
    assert_int_equal(cc.max_age, 120);
    assert_false(cc.invalid);
}

void test_huge_numbers_clamped(void **)
{
    assert_int_equal(cc_of("max-age=2147483647").max_age, k2p31 - 1);
    assert_int_equal(cc_of("max-age=2147483648").max_age, k2p31);
    assert_int_equal(cc_of("max-age=2147483649").max_age, k2p31);
    assert_int_equal(cc_of("max-age=99999999999999999999999999999999").max_age, k2p31);
    CacheControl cc = cc_of("s-maxage=18446744073709551616");
    assert_int_equal(cc.s_maxage, k2p31);
    assert_false(cc.invalid);
}

void test_bad_numbers(void **)
{
    const char *bad[] = {
        "max-age=", "max-age", "max-age=-1", "max-age=1.5", "max-age=abc",
        "max-age=60s", "max-age=+60", "max-age=\"\"", "max-age=\" 60\"",
        "max-age=0x10", "max-age=\"6\\0\"",
    };
    for (const char *v : bad) {
        CacheControl cc = cc_of(v);
        if (cc.max_age != -1 || !cc.invalid) {
            print_error("%s: max_age %lld invalid %d\n", v,
                        static_cast<long long>(cc.max_age), cc.invalid);
            fail();
        }
    }
    // the other directives still count
    CacheControl cc = cc_of("max-age=x, no-store, s-maxage=10");
    assert_true(cc.invalid);
    assert_true(cc.no_store);
    assert_int_equal(cc.s_maxage, 10);
    assert_int_equal(cc.max_age, -1);

    cc = cc_of("stale-while-revalidate=soon");
    assert_true(cc.invalid);
    assert_int_equal(cc.stale_while_revalidate, -1);
    cc = cc_of("stale-if-error");
    assert_true(cc.invalid);
    assert_int_equal(cc.stale_if_error, -1);
}

void test_qualified_forms(void **)
{
    CacheControl cc = cc_of("no-cache=\"Set-Cookie, Set-Cookie2\", max-age=60");
    assert_true(cc.no_cache);
    assert_int_equal(cc.max_age, 60);
    assert_false(cc.invalid);

    cc = cc_of("private=\"X-User\"");
    assert_true(cc.is_private);
    assert_false(cc.invalid);

    cc = cc_of("private=x-user, public");
    assert_true(cc.is_private);
    assert_true(cc.is_public);

    cc = cc_of("no-cache=\"\"");
    assert_true(cc.no_cache);
}

void test_quotes(void **)
{
    // commas and escaped quotes inside a quoted string do not split it
    CacheControl cc = cc_of("foo=\"a, no-store, \\\"b\\\", max-age=1\", max-age=5");
    assert_false(cc.no_store);
    assert_int_equal(cc.max_age, 5);
    assert_false(cc.invalid);

    // an unterminated quote ends parsing: the rest cannot be trusted
    cc = cc_of("max-age=5, foo=\"abc, no-store");
    assert_int_equal(cc.max_age, 5);
    assert_false(cc.no_store);
    assert_true(cc.invalid);

    cc = cc_of("private=\"");
    assert_true(cc.invalid);
    cc = cc_of("private=\"\\");
    assert_true(cc.invalid);
    cc = cc_of("\"");
    assert_true(cc.invalid);
}

void test_duplicates_first_wins(void **)
{
    CacheControl cc = cc_of("max-age=60, max-age=3600");
    assert_int_equal(cc.max_age, 60);
    // across header lines too
    parse_cache_control("max-age=10, s-maxage=20", cc);
    assert_int_equal(cc.max_age, 60);
    assert_int_equal(cc.s_maxage, 20);
    parse_cache_control("no-store", cc);
    assert_true(cc.no_store);
    assert_false(cc.invalid);
}

void test_whitespace(void **)
{
    CacheControl cc = cc_of("  max-age=60 ,\tno-cache\t,  public  ");
    assert_int_equal(cc.max_age, 60);
    assert_true(cc.no_cache);
    assert_true(cc.is_public);
    assert_false(cc.invalid);

    // tolerated around '='
    cc = cc_of("max-age = 60");
    assert_int_equal(cc.max_age, 60);
    assert_false(cc.invalid);
}

void test_malformed_elements(void **)
{
    // garbage elements set `invalid` but do not hide the others
    CacheControl cc = cc_of("max age=60, no-store");
    assert_true(cc.invalid);
    assert_true(cc.no_store);
    assert_int_equal(cc.max_age, -1);

    cc = cc_of("max-age=60; private");
    assert_true(cc.invalid);
    assert_int_equal(cc.max_age, -1);
    assert_false(cc.is_private);

    cc = cc_of("=60, public");
    assert_true(cc.invalid);
    assert_true(cc.is_public);

    cc = cc_of("@@@, max-age=9");
    assert_true(cc.invalid);
    assert_int_equal(cc.max_age, 9);

    cc = cc_of("max-age=60 30");
    assert_true(cc.invalid);
    assert_int_equal(cc.max_age, -1);

    cc = cc_of("junk \"a,b\" x, max-age=4");
    assert_true(cc.invalid);
    assert_int_equal(cc.max_age, 4);
}

void test_unknown_ignored(void **)
{
    CacheControl cc = cc_of("community=\"UCI\", x-foo, bar=baz, max-age=1, no-transform");
    assert_int_equal(cc.max_age, 1);
    assert_false(cc.invalid);
    // names that merely start like known ones
    cc = cc_of("no-stores, max-ages=5, privately");
    assert_false(cc.no_store);
    assert_false(cc.is_private);
    assert_int_equal(cc.max_age, -1);
}

void test_binary_garbage(void **)
{
    // never crashes, whatever the bytes
    std::string v;
    for (int i = 0; i < 256; i++) {
        v += static_cast<char>(i);
    }
    CacheControl cc = cc_of(v);
    assert_true(cc.invalid);
    cc = cc_of(std::string_view("max-age=1\0, no-store", 20));
    assert_true(cc.invalid);
}

// `empty`: RFC 9213 does not use a targeted field without any element.
void test_empty_flag(void **)
{
    for (std::string_view v : {"", " ", ",", " , ,, "}) {
        assert_true(cc_of(v).empty);
    }
    for (std::string_view v : {"x-foo", "max-age=5", ", no-store", "max-age=abc", "\"x"}) {
        assert_false(cc_of(v).empty);
    }
    // several lines: one with an element is enough
    CacheControl cc;
    parse_cache_control("", cc);
    parse_cache_control("public", cc);
    parse_cache_control(",", cc);
    assert_false(cc.empty);
}

// RFC 9213: the first targeted field that is valid and non-empty, else
// Cache-Control (index n).
void test_select_targeted(void **)
{
    CacheControl t[2];
    assert_int_equal(select_targeted(t, 2), 2);            // neither present
    assert_int_equal(select_targeted(t, 0), 0);            // no targeted field at all
    parse_cache_control("max-age=60", t[1]);
    assert_int_equal(select_targeted(t, 2), 1);            // CDN-Cache-Control
    parse_cache_control("no-store", t[0]);
    assert_int_equal(select_targeted(t, 2), 0);            // the most specific one
    assert_int_equal(select_targeted(t, 1), 0);

    CacheControl bad[2];
    parse_cache_control("max-age=abc", bad[0]);            // invalid: skipped
    parse_cache_control("private", bad[1]);
    assert_int_equal(select_targeted(bad, 2), 1);
    CacheControl unterminated[1];
    parse_cache_control("max-age=60, x=\"open", unterminated[0]);
    assert_int_equal(select_targeted(unterminated, 1), 1);
    CacheControl blank[2];
    parse_cache_control(" , ", blank[0]);                   // empty: skipped
    parse_cache_control("", blank[1]);
    assert_int_equal(select_targeted(blank, 2), 2);
    // unknown directives only: valid and non-empty, so it is used
    CacheControl unknown[1];
    parse_cache_control("x-whatever", unknown[0]);
    assert_int_equal(select_targeted(unknown, 1), 0);
}

AgeField age_of(std::initializer_list<std::string_view> lines)
{
    AgeField a;
    for (std::string_view l : lines) {
        parse_age(l, a);
    }
    return a;
}

// RFC 9111 5.1: Age is delta-seconds; of a list (one line with commas, or
// several lines) the first member counts.
void test_age(void **)
{
    AgeField a = age_of({});
    assert_false(a.present);
    assert_false(a.invalid());
    assert_int_equal(a.seconds, -1);

    assert_int_equal(age_of({"0"}).seconds, 0);
    assert_int_equal(age_of({"120"}).seconds, 120);
    assert_int_equal(age_of({" 7 "}).seconds, 7);
    assert_int_equal(age_of({"\t7"}).seconds, 7);
    assert_int_equal(age_of({"007"}).seconds, 7);
    assert_int_equal(age_of({"7200, 0"}).seconds, 7200);
    assert_int_equal(age_of({"0, 7200"}).seconds, 0);
    assert_int_equal(age_of({"0", "7200"}).seconds, 0);
    assert_int_equal(age_of({"7200", "0"}).seconds, 7200);
    assert_int_equal(age_of({"7200", "junk"}).seconds, 7200);   // later members are not read
    assert_int_equal(age_of({", 20"}).seconds, 20);            // empty elements do not count
    assert_int_equal(age_of({"", " ", "30"}).seconds, 30);
    assert_int_equal(age_of({",,", "5,6"}).seconds, 5);
    assert_int_equal(age_of({"99999999999999999999999"}).seconds, k2p31);
    for (AgeField x : {age_of({"7200"}), age_of({"0, 1"}), age_of({"", "3"})}) {
        assert_true(x.present);
        assert_false(x.invalid());
    }

    // invalid: the first member is not delta-seconds, or there is none
    for (std::string_view v : {"abc", "-5", "+5", "1.5", "5s", "5 5", "0x10", "\"5\"", "", " ", ",",
                               "abc, 5"}) {
        AgeField x = age_of({v});
        assert_true(x.present);
        assert_true(x.invalid());
        assert_int_equal(x.seconds, -1);
    }
    assert_true(age_of({"abc", "5"}).invalid());              // the first member decides
    assert_true(age_of({"", ""}).invalid());
    assert_true(age_of({std::string_view("5\0", 2)}).invalid());
}

int64_t date_of(std::string_view v)
{
    int64_t t = -12345;
    if (!parse_http_date(v, t)) {
        print_error("parse_http_date(%s) failed\n", std::string(v).c_str());
        fail();
    }
    return t;
}

void date_fails(std::string_view v)
{
    int64_t t = 0;
    if (parse_http_date(v, t)) {
        print_error("parse_http_date(%s) accepted it: %lld\n", std::string(v).c_str(),
                    static_cast<long long>(t));
        fail();
    }
}

void test_http_date_forms(void **)
{
    // RFC 9110 5.6.7's example, in its three forms
    assert_int_equal(date_of("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
    assert_int_equal(date_of("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777);
    assert_int_equal(date_of("Sun Nov  6 08:49:37 1994"), 784111777);
    assert_int_equal(date_of("Sun Nov 06 08:49:37 1994"), 784111777);

    assert_int_equal(date_of("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    assert_int_equal(date_of("Wed, 31 Dec 1969 23:59:59 GMT"), -1);
    assert_int_equal(date_of("Tue, 19 Jan 2038 03:14:08 GMT"), int64_t{1} << 31);
    assert_int_equal(date_of("Thu, 29 Feb 2024 12:00:00 GMT"), 1709208000);
    assert_int_equal(date_of("Tue, 29 Feb 2000 00:00:00 GMT"), 951782400);
    assert_int_equal(date_of("Fri, 31 Dec 9999 23:59:59 GMT"), 253402300799);
    assert_int_equal(date_of("Mon, 01 Jan 0001 00:00:00 GMT"), -62135596800);
    // leap second folds into the next second
    assert_int_equal(date_of("Sat, 31 Dec 2016 23:59:60 GMT"), 1483228800);
    // surrounding white space, lower case names
    assert_int_equal(date_of("  sun, 06 nov 1994 08:49:37 gmt\t"), 784111777);
    // the weekday is not cross-checked with the date
    assert_int_equal(date_of("Mon, 06 Nov 1994 08:49:37 GMT"), 784111777);
}

// Every month and day name (found by packed three-letter compares), in
// any case; a name one letter off is no name.
void test_http_date_names(void **)
{
    static const char *const months[12] = {"Jan", "FEB", "mar", "Apr", "mAY", "Jun",
                                           "jul", "AUG", "Sep", "oCt", "Nov", "DEC"};
    static const int64_t firsts[12] = {1704067200, 1706745600, 1709251200, 1711929600,
                                       1714521600, 1717200000, 1719792000, 1722470400,
                                       1725148800, 1727740800, 1730419200, 1733011200};
    for (int m = 0; m < 12; m++) {
        std::string d = std::string("Mon, 01 ") + months[m] + " 2024 00:00:00 GMT";
        assert_int_equal(date_of(d), firsts[m]);   // 2024-MM-01
        std::string a = std::string("Mon ") + months[m] + "  1 00:00:00 2024";
        assert_int_equal(date_of(a), firsts[m]);
    }
    for (const char *day : {"Mon", "TUE", "wed", "Thu", "fRi", "Sat", "sun"}) {
        assert_int_equal(date_of(std::string(day) + ", 06 Nov 1994 08:49:37 GMT"), 784111777);
        assert_int_equal(date_of(std::string(day) + " Nov  6 08:49:37 1994"), 784111777);
    }
    date_fails("Sun, 06 Nob 1994 08:49:37 GMT");
    date_fails("Sun, 06 Mov 1994 08:49:37 GMT");
    date_fails("Sun, 06 No\x80 1994 08:49:37 GMT");
    date_fails("Sux, 06 Nov 1994 08:49:37 GMT");
    date_fails("Tun, 06 Nov 1994 08:49:37 GMT");
    date_fails("Su\xee, 06 Nov 1994 08:49:37 GMT");
    date_fails("Sux Nov  6 08:49:37 1994");
}

void test_http_date_rfc850_years(void **)
{
    assert_int_equal(date_of("Thursday, 01-Jan-70 00:00:00 GMT"), 0);
    assert_int_equal(date_of("Wednesday, 31-Dec-69 23:59:59 GMT"), 3155759999);  // 2069
    assert_int_equal(date_of("Saturday, 01-Jan-00 00:00:00 GMT"), 946684800);    // 2000
}

void test_http_date_garbage(void **)
{
    date_fails("");
    date_fails("0");
    date_fails("-1");
    date_fails("now");
    date_fails("Sun, 06 Nov 1994 08:49:37");          // no GMT
    date_fails("Sun, 06 Nov 1994 08:49:37 UTC");
    date_fails("Sun, 06 Nov 1994 08:49:37 +0000");
    date_fails("Sun, 6 Nov 1994 08:49:37 GMT");       // one-digit day
    date_fails("Sun,  06 Nov 1994 08:49:37 GMT");
    date_fails("Sun 06 Nov 1994 08:49:37 GMT");
    date_fails("Sun, 06 Nov 94 08:49:37 GMT");
    date_fails("Xyz, 06 Nov 1994 08:49:37 GMT");
    date_fails("Sun, 06 Foo 1994 08:49:37 GMT");
    date_fails("Sun, 00 Nov 1994 08:49:37 GMT");
    date_fails("Sun, 31 Nov 1994 08:49:37 GMT");
    date_fails("Sun, 29 Feb 1900 08:49:37 GMT");      // not a leap year
    date_fails("Sun, 29 Feb 2023 08:49:37 GMT");
    date_fails("Sun, 06 Nov 1994 24:00:00 GMT");
    date_fails("Sun, 06 Nov 1994 08:60:00 GMT");
    date_fails("Sun, 06 Nov 1994 08:49:61 GMT");
    date_fails("Sun, 06 Nov 1994 08-49-37 GMT");
    date_fails("Sun, 06 Nov 1994 8:49:37 GMT");
    date_fails("Sun, 06 Nov 0000 08:49:37 GMT");
    date_fails("Sun, 06 Nov 1994 08:49:37 GMT x");
    date_fails("Sun, 06 Nov 1994 08:49:37 GMTT");
    date_fails("Sun, 06 Nov 19a4 08:49:37 GMT");
    date_fails("Sun, 06 Nov 1994 08:49:37 GMT\r\n");
    date_fails("Sunday, 06-Nov-1994 08:49:37 GMT");
    date_fails("Sunday, 06 Nov 94 08:49:37 GMT");
    date_fails("Sundae, 06-Nov-94 08:49:37 GMT");
    date_fails("Sun, 06-Nov-94 08:49:37 GMT");        // short day in rfc850 form
    date_fails(", 06-Nov-94 08:49:37 GMT");
    date_fails("Sun Nov  6 08:49:37 94");
    date_fails("Sun Nov 6 08:49:37 1994");
    date_fails("Sun Nov  6 08:49:37 1994 GMT");
    date_fails("Sunday Nov  6 08:49:37 1994");
    date_fails(std::string_view("Sun, 06 Nov 1994 08:49:37 GMT\0", 30));
    date_fails(std::string_view("Sun, 06 Nov 1994\0 8:49:37 GMT", 29));
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_case_insensitive),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_huge_numbers_clamped),
        cmocka_unit_test(test_bad_numbers),
        cmocka_unit_test(test_qualified_forms),
        cmocka_unit_test(test_quotes),
        cmocka_unit_test(test_duplicates_first_wins),
        cmocka_unit_test(test_whitespace),
        cmocka_unit_test(test_malformed_elements),
        cmocka_unit_test(test_unknown_ignored),
        cmocka_unit_test(test_binary_garbage),
        cmocka_unit_test(test_empty_flag),
        cmocka_unit_test(test_select_targeted),
        cmocka_unit_test(test_age),
        cmocka_unit_test(test_http_date_forms),
        cmocka_unit_test(test_http_date_names),
        cmocka_unit_test(test_http_date_rfc850_years),
        cmocka_unit_test(test_http_date_garbage),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
