// Unit tests: revalidation decisions, the 304 header merge, the stale
// window and the Redis retention (core/freshness.hpp), and the stale
// rules decide_store() gives an entry.
#include "unit.hpp"

#include <vector>

#include "core/cache_rules.hpp"
#include "core/freshness.hpp"

using namespace fly::core;

namespace {

constexpr int64_t kStored = 1700000000;

EntryMeta meta(uint32_t ttl, uint32_t swr = 0, uint32_t sie = 0, uint8_t flags = 0)
{
    EntryMeta m;
    m.status = 200;
    m.stored = kStored;
    m.ttl = ttl;
    m.swr = swr;
    m.sie = sie;
    m.flags = flags;
    return m;
}

StaleConfig config(uint32_t use_stale, int64_t stale = -1, bool revalidate = true)
{
    StaleConfig c;
    c.use_stale = use_stale;
    c.stale = stale;
    c.revalidate = revalidate;
    return c;
}

constexpr uint32_t kError = stale_bit(StaleCause::error);
constexpr uint32_t kAll = stale_bit(StaleCause::error) | stale_bit(StaleCause::timeout)
                          | stale_bit(StaleCause::http_500) | stale_bit(StaleCause::http_502)
                          | stale_bit(StaleCause::http_503) | stale_bit(StaleCause::http_504);

void test_failure_cause(void **)
{
    StaleCause c;
    assert_true(failure_cause(502, true, c));
    assert_int_equal(static_cast<int>(c), static_cast<int>(StaleCause::error));
    assert_true(failure_cause(500, true, c));
    assert_int_equal(static_cast<int>(c), static_cast<int>(StaleCause::error));
    assert_true(failure_cause(504, true, c));
    assert_int_equal(static_cast<int>(c), static_cast<int>(StaleCause::timeout));
    assert_false(failure_cause(404, true, c));
    assert_true(failure_cause(503, false, c));
    assert_int_equal(static_cast<int>(c), static_cast<int>(StaleCause::http_503));
    assert_true(failure_cause(504, false, c));
    assert_int_equal(static_cast<int>(c), static_cast<int>(StaleCause::http_504));
    assert_false(failure_cause(501, false, c));
    assert_false(failure_cause(200, false, c));
    assert_false(failure_cause(404, false, c));
}

void test_stale_window_arithmetic(void **)
{
    // fly_cache_stale 30s, use_stale error: stale while now < end + 30
    EntryMeta m = meta(10);
    StaleConfig c = config(kError, 30);
    int64_t end = kStored + 10;
    assert_int_equal(stale_window(m, c, StaleCause::error), 30);
    assert_true(may_serve_stale(m, c, StaleCause::error, end));
    assert_true(may_serve_stale(m, c, StaleCause::error, end + 29));
    assert_false(may_serve_stale(m, c, StaleCause::error, end + 30));
    assert_false(may_serve_stale(m, c, StaleCause::error, end + 3000));
    // a cause the configuration does not name
    assert_int_equal(stale_window(m, c, StaleCause::timeout), 0);
    assert_false(may_serve_stale(m, c, StaleCause::timeout, end));

    // unset fly_cache_stale: the response's larger extension
    c = config(kAll);
    assert_int_equal(stale_window(meta(10, 5, 0), c, StaleCause::http_502), 5);
    assert_int_equal(stale_window(meta(10, 5, 50), c, StaleCause::http_502), 50);
    assert_int_equal(stale_window(meta(10, 0, 0), c, StaleCause::http_502), 0);
    // fly_cache_stale 0 turns the configured part off, not stale-if-error
    c = config(kAll, 0);
    assert_int_equal(stale_window(meta(10, 5, 0), c, StaleCause::http_502), 0);
    assert_int_equal(stale_window(meta(10, 5, 7), c, StaleCause::http_502), 7);
}

void test_stale_if_error_without_config(void **)
{
    // RFC 5861 4: stale-if-error works without fly_cache_use_stale
    EntryMeta m = meta(10, 0, 20);
    StaleConfig off = config(0);
    assert_int_equal(stale_window(m, off, StaleCause::error), 20);
    assert_int_equal(stale_window(m, off, StaleCause::http_500), 20);
    assert_true(may_serve_stale(m, off, StaleCause::timeout, kStored + 10 + 19));
    assert_false(may_serve_stale(m, off, StaleCause::timeout, kStored + 10 + 20));
    // stale-while-revalidate alone is not an error allowance
    assert_int_equal(stale_window(meta(10, 20, 0), off, StaleCause::error), 0);
}

void test_stale_forbidden(void **)
{
    StaleConfig c = config(kAll, 3600);
    // must-revalidate, proxy-revalidate, no-cache: never stale
    for (uint8_t f : {uint8_t(kEntryNoStale), uint8_t(kEntryNoStale | kEntryMustRevalidate)}) {
        EntryMeta m = meta(10, 100, 100, f);
        assert_int_equal(stale_window(m, c, StaleCause::error), 0);
        assert_false(may_serve_stale(m, c, StaleCause::error, kStored + 11));
    }
    // s-maxage: the configuration does not apply, stale-if-error does
    EntryMeta m = meta(10, 0, 0, kEntrySharedMaxAge);
    assert_int_equal(stale_window(m, c, StaleCause::error), 0);
    m.sie = 15;
    assert_int_equal(stale_window(m, c, StaleCause::error), 15);

    // must-revalidate: a disconnected cache answers 504, an app's answer passes
    EntryMeta mr = meta(10, 0, 0, kEntryNoStale | kEntryMustRevalidate);
    assert_true(must_answer_504(mr, StaleCause::error));
    assert_true(must_answer_504(mr, StaleCause::timeout));
    assert_false(must_answer_504(mr, StaleCause::http_503));
    assert_false(must_answer_504(meta(10, 0, 0, kEntryNoStale), StaleCause::error));
    assert_false(must_answer_504(meta(10), StaleCause::error));
}

// stale-while-revalidate (RFC 5861 3) and fly_cache_use_stale updating
void test_updating_window(void **)
{
    const int64_t end = kStored + 10;
    // the response's stale-while-revalidate, without configuration
    EntryMeta m = meta(10, 30);
    assert_int_equal(updating_window(m, config(0)), 30);
    assert_true(may_serve_updating(m, config(0), end));
    assert_true(may_serve_updating(m, config(0), end + 29));
    assert_false(may_serve_updating(m, config(0), end + 30));
    // stale-if-error is no allowance for UPDATING; failures' bits neither
    assert_int_equal(updating_window(meta(10, 0, 100), config(kAll, 3600)), 0);
    // updating configured: fly_cache_stale, else stale-while-revalidate
    assert_int_equal(updating_window(meta(10), config(kUseStaleUpdating)), 0);
    assert_int_equal(updating_window(meta(10, 30), config(kUseStaleUpdating)), 30);
    assert_int_equal(updating_window(meta(10), config(kUseStaleUpdating, 600)), 600);
    assert_int_equal(updating_window(meta(10, 30), config(kUseStaleUpdating, 5)), 30);
    assert_true(may_serve_updating(meta(10), config(kUseStaleUpdating, 600), end + 599));
    assert_false(may_serve_updating(meta(10), config(kUseStaleUpdating, 600), end + 600));
    // never where must-revalidate, proxy-revalidate or no-cache forbid it
    for (uint8_t f : {uint8_t(kEntryNoStale), uint8_t(kEntryNoStale | kEntryMustRevalidate)}) {
        assert_int_equal(updating_window(meta(10, 30, 0, f), config(kUseStaleUpdating, 600)), 0);
        assert_false(may_serve_updating(meta(10, 30, 0, f), config(kUseStaleUpdating, 600), end));
    }
    // s-maxage: only the response's own stale-while-revalidate
    assert_int_equal(updating_window(meta(10, 0, 0, kEntrySharedMaxAge), config(kUseStaleUpdating, 600)), 0);
    assert_int_equal(updating_window(meta(10, 7, 0, kEntrySharedMaxAge), config(kUseStaleUpdating, 600)), 7);
    // a soft-purged fresh entry counts from now
    assert_true(may_serve_updating(meta(10, 30), config(0), kStored + 1));
    // the updating bit is not a failure cause
    assert_int_equal(stale_window(meta(10, 30), config(kUseStaleUpdating, 600), StaleCause::error), 0);
}

void test_soft_purged_fresh_entry(void **)
{
    // a fresh entry made stale by a soft purge: past = 0
    EntryMeta m = meta(100);
    StaleConfig c = config(kError, 5);
    assert_true(may_serve_stale(m, c, StaleCause::error, kStored + 1));
    assert_false(may_serve_stale(m, config(0), StaleCause::error, kStored + 1));
}

void test_keep_seconds(void **)
{
    // nothing past freshness
    assert_int_equal(keep_seconds(meta(10), config(0), false), 10);
    // the response's extensions
    assert_int_equal(keep_seconds(meta(10, 30, 5), config(0), false), 40);
    // fly_cache_stale, when some cause is configured
    assert_int_equal(keep_seconds(meta(10, 30), config(kError, 100), false), 110);
    assert_int_equal(keep_seconds(meta(10, 30), config(0, 100), false), 40);
    // revalidation keeps it for its lifetime again, within bounds
    assert_int_equal(keep_seconds(meta(10), config(0), true), 10 + kRevalidateKeepMin);
    assert_int_equal(keep_seconds(meta(600), config(0), true), 1200);
    assert_int_equal(keep_seconds(meta(1000000), config(0), true),
                     1000000 + kRevalidateKeepMax);
    assert_int_equal(keep_seconds(meta(10), config(0, -1, false), true), 10);
    // ttl 0 (revalidated every time)
    assert_int_equal(keep_seconds(meta(0), config(0), true), kRevalidateKeepMin);
    assert_int_equal(keep_seconds(meta(0), config(0), false), 1);
    // no stale: kept as long, for the 504 of must-revalidate
    assert_int_equal(keep_seconds(meta(10, 0, 0, kEntryNoStale | kEntryMustRevalidate),
                                  config(kAll, 99), false), 109);
    assert_int_equal(keep_seconds(meta(10, 0, 0, kEntryNoStale), config(0), false), 10);
    // s-maxage: the configuration does not extend it
    assert_int_equal(keep_seconds(meta(10, 0, 3, kEntrySharedMaxAge), config(kAll, 99), false), 13);
}

void test_should_revalidate(void **)
{
    assert_true(should_revalidate(true, true, false, "\"a\"", ""));
    assert_true(should_revalidate(true, true, false, "", "Tue, 01 Dec 2026 10:00:00 GMT"));
    assert_false(should_revalidate(true, true, false, "", ""));        // no validator
    assert_false(should_revalidate(false, true, false, "\"a\"", ""));  // off
    assert_false(should_revalidate(true, false, false, "\"a\"", ""));  // HEAD
    assert_false(should_revalidate(true, true, true, "\"a\"", ""));    // client's own
}

void test_entry_validators(void **)
{
    EntryView e;
    e.headers[0] = {"Content-Type", "text/plain"};
    e.headers[1] = {"etag", "\"v1\""};
    e.headers[2] = {"ETag", "\"v2\""};
    e.headers[3] = {"Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT"};
    e.nheaders = 4;
    std::string_view etag, lm;
    entry_validators(e, etag, lm);
    assert_sv_equal(etag, "\"v1\"");
    assert_sv_equal(lm, "Tue, 01 Dec 2026 10:00:00 GMT");
    e.nheaders = 1;
    entry_validators(e, etag, lm);
    assert_true(etag.empty() && lm.empty());
}

std::string render(const EntryHeader *h, size_t n)
{
    std::string s;
    for (size_t i = 0; i < n; i++) {
        s.append(h[i].name).append(": ").append(h[i].value).append("\n");
    }
    return s;
}

void test_merge_304(void **)
{
    const EntryHeader stored[] = {
        {"Content-Type", "text/plain"},
        {"Cache-Control", "max-age=10"},
        {"ETag", "\"v1\""},
        {"X-A", "1"},
        {"x-a", "2"},
        {"Content-Encoding", "gzip"},
        {"Date", "Tue, 01 Dec 2026 10:00:00 GMT"},
    };
    const EntryHeader fresh[] = {
        {"cache-control", "max-age=60"},
        {"X-A", "3"},
        {"Content-Length", "0"},
        {"Content-Encoding", "br"},
        {"Date", "Tue, 01 Dec 2026 11:00:00 GMT"},
        {"X-New", "n"},
        {"Connection", "close"},
        {"X-Hop", "h"},
        {"Keep-Alive", "timeout=5"},
        {"x-a", "4"},
        {"Age", "3"},
    };
    EntryHeader out[32];
    size_t n = 0;
    assert_true(merge_304(stored, 7, fresh, 11, "X-Hop", out, 32, n));
    assert_sv_equal(render(out, n),
                    "Content-Type: text/plain\n"
                    "cache-control: max-age=60\n"
                    "ETag: \"v1\"\n"
                    "X-A: 3\n"
                    "x-a: 4\n"
                    "Content-Encoding: gzip\n"
                    "Date: Tue, 01 Dec 2026 11:00:00 GMT\n"
                    "X-New: n\n");

    // nothing in the 304: the stored headers as they were
    assert_true(merge_304(stored, 7, nullptr, 0, "", out, 32, n));
    assert_int_equal(n, 7);
    assert_sv_equal(render(out, n), render(stored, 7));

    // bounded
    assert_false(merge_304(stored, 7, fresh, 11, "", out, 7, n));
    assert_true(merge_304(stored, 7, fresh, 1, "", out, 7, n));
    assert_int_equal(n, 7);

    assert_false(kept_from_304("Transfer-Encoding", ""));
    assert_false(kept_from_304("content-range", ""));
    assert_false(kept_from_304("TE", ""));
    assert_true(kept_from_304("Expires", ""));
    assert_true(kept_from_304("Last-Modified", ""));
}

ResponseFacts facts(std::string_view cache_control)
{
    ResponseFacts f;
    f.status = 200;
    f.now = kStored;
    f.has_date = true;
    f.date = kStored;
    parse_cache_control(cache_control, f.cc);
    return f;
}

void test_store_stale_flags(void **)
{
    CachePolicy p;
    StoreDecision d = decide_store(facts("max-age=60, must-revalidate"), p);
    assert_int_equal(d.verdict, StoreVerdict::store);
    assert_int_equal(d.stale_flags, kEntryNoStale | kEntryMustRevalidate);
    d = decide_store(facts("max-age=60, proxy-revalidate"), p);
    assert_int_equal(d.stale_flags, kEntryNoStale | kEntryMustRevalidate);
    d = decide_store(facts("s-maxage=60, stale-if-error=30"), p);
    assert_int_equal(d.stale_flags, kEntrySharedMaxAge);
    assert_int_equal(d.stale_if_error, 30);
    d = decide_store(facts("max-age=60, stale-while-revalidate=5"), p);
    assert_int_equal(d.stale_flags, 0);
    assert_int_equal(d.stale_while_revalidate, 5);
}

void test_store_for_revalidation(void **)
{
    CachePolicy p;
    ResponseFacts f = facts("max-age=0");
    f.has_validator = true;
    // without fly_cache_revalidate: not stored, as before
    assert_int_equal(decide_store(f, p).verdict, StoreVerdict::expired);
    f.cc = {};
    parse_cache_control("no-cache", f.cc);
    assert_int_equal(decide_store(f, p).verdict, StoreVerdict::no_cache);

    p.revalidate = true;
    StoreDecision d = decide_store(f, p);                 // no-cache + ETag
    assert_int_equal(d.verdict, StoreVerdict::store);
    assert_int_equal(d.ttl, 0);
    assert_int_equal(d.stale_flags, kEntryNoStale);
    f.cc = {};
    parse_cache_control("no-cache, max-age=600", f.cc);
    d = decide_store(f, p);
    assert_int_equal(d.verdict, StoreVerdict::store);
    assert_int_equal(d.ttl, 0);
    f.cc = {};
    parse_cache_control("max-age=0", f.cc);
    d = decide_store(f, p);
    assert_int_equal(d.verdict, StoreVerdict::store);
    assert_int_equal(d.ttl, 0);
    assert_int_equal(d.stale_flags, 0);
    // no validator: nothing to revalidate with
    f.has_validator = false;
    assert_int_equal(decide_store(f, p).verdict, StoreVerdict::expired);
    f.cc = {};
    parse_cache_control("no-cache", f.cc);
    assert_int_equal(decide_store(f, p).verdict, StoreVerdict::no_cache);
    // a fresh response is unchanged
    f.has_validator = true;
    f.cc = {};
    parse_cache_control("max-age=60", f.cc);
    assert_int_equal(decide_store(f, p).ttl, 60);
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failure_cause),
        cmocka_unit_test(test_stale_window_arithmetic),
        cmocka_unit_test(test_stale_if_error_without_config),
        cmocka_unit_test(test_stale_forbidden),
        cmocka_unit_test(test_updating_window),
        cmocka_unit_test(test_soft_purged_fresh_entry),
        cmocka_unit_test(test_keep_seconds),
        cmocka_unit_test(test_should_revalidate),
        cmocka_unit_test(test_entry_validators),
        cmocka_unit_test(test_merge_304),
        cmocka_unit_test(test_store_stale_flags),
        cmocka_unit_test(test_store_for_revalidation),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
