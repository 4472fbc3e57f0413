// Unit tests: what a shared cache may store and for how long, hop-by-hop
// headers, the key builder and Vary variants.
#include "unit.hpp"

#include <map>

#include "core/cache_rules.hpp"

using namespace fly::core;

namespace {

constexpr int64_t kNow = 1700000000;

// A 200 with a Date of now and the given Cache-Control.
ResponseFacts facts(std::string_view cache_control = "", int status = 200)
{
    ResponseFacts f;
    f.status = status;
    f.now = kNow;
    f.has_date = true;
    f.date = kNow;
    parse_cache_control(cache_control, f.cc);
    return f;
}

const CachePolicy kNoPolicy{};

StoreDecision decide(const ResponseFacts &f, const CachePolicy &p = kNoPolicy)
{
    return decide_store(f, p);
}

void expect(const ResponseFacts &f, const CachePolicy &p, StoreVerdict v, int64_t ttl = -1)
{
    StoreDecision d = decide_store(f, p);
    if (d.verdict != v) {
        print_error("verdict %s, expected %s\n", std::string(verdict_name(d.verdict)).c_str(),
                    std::string(verdict_name(v)).c_str());
        fail();
    }
    if (ttl >= 0) {
        assert_int_equal(d.ttl, ttl);
    }
}

void stored(const ResponseFacts &f, int64_t ttl, const CachePolicy &p = kNoPolicy)
{
    expect(f, p, StoreVerdict::store, ttl);
}

// Verdicts decided on freshness (Date, Expires, max-age, fly_cache_valid),
// which store_refused() leaves to decide_store().
bool freshness_verdict(StoreVerdict v)
{
    return v == StoreVerdict::store || v == StoreVerdict::no_freshness
           || v == StoreVerdict::expired;
}

void refused(const ResponseFacts &f, StoreVerdict v, const CachePolicy &p = kNoPolicy)
{
    expect(f, p, v);
    assert_int_equal(decide_store(f, p).ttl, 0);
    // the early check (before the dates are parsed) agrees
    StoreVerdict why = StoreVerdict::store;
    bool early = store_refused(f, p, why);
    assert_int_equal(early, !freshness_verdict(v));
    if (early) {
        assert_int_equal(static_cast<int>(why), static_cast<int>(v));
    }
}

// ---- the early refusal check ----

// store_refused() reads neither Date nor Expires: a response it lets
// through is decided by decide_store() on its freshness, and one it
// refuses is refused whatever its dates say.
void test_store_refused_ignores_dates(void **)
{
    StoreVerdict why = StoreVerdict::store;
    ResponseFacts f = facts("max-age=60");
    assert_false(store_refused(f, kNoPolicy, why));
    stored(f, 60);

    // no Date, an Expires already past: not a refusal, expired on freshness
    ResponseFacts e = facts();
    e.has_date = false;
    e.has_expires = true;
    e.expires_valid = true;
    e.expires = kNow - 10;
    assert_false(store_refused(e, kNoPolicy, why));
    refused(e, StoreVerdict::expired);

    // nothing says how long: not a refusal either
    ResponseFacts n = facts();
    assert_false(store_refused(n, kNoPolicy, why));
    refused(n, StoreVerdict::no_freshness);

    // no-store with an Expires far ahead: refused before any date
    ResponseFacts s = facts("no-store");
    s.has_date = false;
    s.has_expires = true;
    s.expires_valid = true;
    s.expires = kNow + 3600;
    assert_true(store_refused(s, kNoPolicy, why));
    assert_int_equal(static_cast<int>(why), static_cast<int>(StoreVerdict::no_store));
    ResponseFacts c = facts("max-age=60");
    c.has_set_cookie = true;
    assert_true(store_refused(c, kNoPolicy, why));
    assert_int_equal(static_cast<int>(why), static_cast<int>(StoreVerdict::set_cookie));
}

// ---- statuses ----

void test_status(void **)
{
    const int storable[] = {200, 203, 204, 300, 301, 302, 307, 308, 404, 410, 500, 503, 599};
    for (int s : storable) {
        stored(facts("max-age=60", s), 60);
    }
    const int never[] = {0, 100, 101, 103, 199, 206, 304, 412, 600, 999, -1};
    for (int s : never) {
        refused(facts("max-age=60, public", s), StoreVerdict::status);
    }
    // even with a fly_cache_valid "any" rule
    ValidRule any[] = {{0, 600}};
    CachePolicy p;
    p.valid = any;
    p.nvalid = 1;
    refused(facts("", 206), StoreVerdict::status, p);
    refused(facts("", 304), StoreVerdict::status, p);
    refused(facts("", 412), StoreVerdict::status, p);
    refused(facts("", 101), StoreVerdict::status, p);
}

// ---- Cache-Control refusals ----

void test_no_store_private_no_cache(void **)
{
    refused(facts("no-store, max-age=60"), StoreVerdict::no_store);
    refused(facts("max-age=60, private"), StoreVerdict::is_private);
    refused(facts("private=\"X-User\", s-maxage=60"), StoreVerdict::is_private);
    refused(facts("no-cache, max-age=60"), StoreVerdict::no_cache);
    refused(facts("no-cache=\"Set-Cookie\", max-age=60"), StoreVerdict::no_cache);
    refused(facts("public, no-store"), StoreVerdict::no_store);
    refused(facts("public, private, max-age=60"), StoreVerdict::is_private);
    // the same responses without those directives are stored
    stored(facts("max-age=60"), 60);
    stored(facts("public, max-age=60"), 60);
}

void test_invalid_cache_control(void **)
{
    // RFC 9111 4.2.1: invalid freshness information is stale
    refused(facts("max-age=abc"), StoreVerdict::invalid);
    refused(facts("max-age=60, max-age=x"), StoreVerdict::invalid);
    refused(facts("max-age=60, foo=\"unterminated"), StoreVerdict::invalid);
    // even with a fly_cache_valid rule
    ValidRule any[] = {{0, 600}};
    CachePolicy p;
    p.valid = any;
    p.nvalid = 1;
    refused(facts("max-age=-5"), StoreVerdict::invalid, p);
    // a restrictive directive still wins the reason
    refused(facts("no-store, max-age=x"), StoreVerdict::no_store);
}

void test_vary_star_and_range(void **)
{
    ResponseFacts f = facts("max-age=60");
    f.vary_star = true;
    refused(f, StoreVerdict::vary_star);

    f = facts("max-age=60");
    f.request_range = true;
    refused(f, StoreVerdict::range);
}

// A request with a precondition (If-Match, If-None-Match,
// If-Modified-Since, If-Unmodified-Since, If-Range) fills only with a 200.
void test_conditional(void **)
{
    ResponseFacts f = facts("max-age=60");
    f.request_conditional = true;
    stored(f, 60);                       // the full answer, as for anyone

    // what answers the precondition itself is never stored
    for (int s : {304, 412}) {
        f = facts("max-age=60, public", s);
        f.request_conditional = true;
        refused(f, StoreVerdict::status);
        f.request_conditional = false;   // not even without one
        refused(f, StoreVerdict::status);
    }

    // other answers to a conditional request are not either, even with an
    // "any" rule; the same answers to a plain request are
    ValidRule any[] = {{0, 600}};
    CachePolicy p;
    p.valid = any;
    p.nvalid = 1;
    for (int s : {203, 204, 301, 302, 404, 500}) {
        f = facts("max-age=60", s);
        f.request_conditional = true;
        refused(f, StoreVerdict::conditional);
        refused(f, StoreVerdict::conditional, p);
        f.request_conditional = false;
        stored(f, 60);
    }

    // a 200 to a conditional request still follows every other rule
    f = facts("no-store");
    f.request_conditional = true;
    refused(f, StoreVerdict::no_store);
    f = facts("");
    f.request_conditional = true;
    refused(f, StoreVerdict::no_freshness);
    stored(f, 600, p);
}

void test_authorization(void **)
{
    ResponseFacts f = facts("max-age=60");
    f.request_authorization = true;
    refused(f, StoreVerdict::authorization);

    f = facts("max-age=60, proxy-revalidate");     // not in RFC 9111 3.5's list
    f.request_authorization = true;
    refused(f, StoreVerdict::authorization);

    f = facts("public, max-age=60");
    f.request_authorization = true;
    stored(f, 60);

    f = facts("s-maxage=30");
    f.request_authorization = true;
    stored(f, 30);

    f = facts("must-revalidate, max-age=60");
    f.request_authorization = true;
    stored(f, 60);

    // without Authorization none of them is needed
    stored(facts("max-age=60"), 60);
}

// A request header through which apps rebuild the URL, not in the key:
// what the app made of it is not stored for everyone.
void test_forwarded(void **)
{
    ResponseFacts f = facts("public, max-age=60");
    f.request_forwarded = true;
    refused(f, StoreVerdict::forwarded);
    // a stronger reason still wins
    f = facts("private, max-age=60");
    f.request_forwarded = true;
    refused(f, StoreVerdict::is_private);

    const char *listed[] = {
        "X-Forwarded-Host", "x-forwarded-host", "X-FORWARDED-SERVER",
        "X-Forwarded-Prefix", "X-Forwarded-Uri", "X-Forwarded-Scheme",
        "X-Forwarded-SSL", "Forwarded", "X-Host", "X-Original-Host",
        "X-HTTP-Host-Override", "X-Original-URL", "X-Original-URI",
        "X-Rewrite-URL", "Front-End-Https", "X-HTTP-Method-Override",
        "X-HTTP-Method", "X-Method-Override",
    };
    for (const char *h : listed) {
        assert_true(unkeyed_forwarding(h, ""));
        assert_true(unkeyed_forwarding(h, "Accept-Encoding, Cookie"));
        // Vary names it: the request's value is in the variant key
        std::string vary = std::string("Accept-Encoding, ") + h;
        assert_false(unkeyed_forwarding(h, vary));
    }
    assert_false(unkeyed_forwarding("x-forwarded-host", " X-FORWARDED-HOST "));
    assert_true(unkeyed_forwarding("X-Forwarded-Host", "X-Forwarded-Hostname"));
    // what Fly's proxy sets, and everything else, is not
    const char *not_listed[] = {
        "X-Forwarded-Proto", "X-Forwarded-Port", "X-Forwarded-For", "Fly-Region",
        "Fly-Client-IP", "Host", "Cookie", "Authorization", "X-Forwarded",
        "X-Forwarded-Hos", "", "Forwarded-Host",
    };
    for (const char *h : not_listed) {
        assert_false(unkeyed_forwarding(h, ""));
    }
}

// A GET with a body (the key does not hold it), a response that asks Fly
// to replay the request: never stored.
void test_request_body_and_replay(void **)
{
    ResponseFacts f = facts("public, max-age=60");
    f.request_body = true;
    refused(f, StoreVerdict::request_body);
    f = facts("public, max-age=60");
    f.has_fly_replay = true;
    refused(f, StoreVerdict::fly_replay);
    f.request_body = true;
    f.request_forwarded = true;
    refused(f, StoreVerdict::fly_replay);
    stored(facts("public, max-age=60"), 60);
}

void test_set_cookie(void **)
{
    ResponseFacts f = facts("public, max-age=60");
    f.has_set_cookie = true;
    refused(f, StoreVerdict::set_cookie);

    CachePolicy p;
    p.ignore_set_cookie = true;
    stored(f, 60, p);
}

// ---- freshness ----

void test_freshness_precedence(void **)
{
    ResponseFacts f = facts("max-age=60, s-maxage=30");
    f.has_expires = true;
    f.expires_valid = true;
    f.expires = kNow + 90;
    stored(f, 30);                       // s-maxage first

    f = facts("max-age=60");
    f.has_expires = true;
    f.expires_valid = true;
    f.expires = kNow + 90;
    stored(f, 60);                       // then max-age

    f = facts("");
    f.has_expires = true;
    f.expires_valid = true;
    f.expires = kNow + 90;
    stored(f, 90);                       // then Expires - Date

    f = facts("s-maxage=0, max-age=60");
    refused(f, StoreVerdict::expired);  // s-maxage=0 beats max-age

    // max-age present: an invalid or past Expires is ignored (RFC 9111 5.3)
    f = facts("max-age=60");
    f.has_expires = true;
    f.expires_valid = false;
    stored(f, 60);
    f.expires_valid = true;
    f.expires = kNow - 1000;
    stored(f, 60);
}

void test_expires(void **)
{
    // Expires minus Date, not minus now
    ResponseFacts f = facts("");
    f.date = kNow - 100;
    f.has_expires = true;
    f.expires_valid = true;
    f.expires = kNow + 100;
    stored(f, 200);

    // without Date: minus the receipt time
    f.has_date = false;
    stored(f, 100);

    // an invalid Expires means already expired, and is explicit freshness:
    // fly_cache_valid does not rescue it
    ValidRule any[] = {{0, 600}};
    CachePolicy p;
    p.valid = any;
    p.nvalid = 1;
    f = facts("");
    f.has_expires = true;
    f.expires_valid = false;
    refused(f, StoreVerdict::expired);
    refused(f, StoreVerdict::expired, p);

    // Expires in the past or equal to Date
    f = facts("");
    f.has_expires = true;
    f.expires_valid = true;
    f.expires = kNow;
    refused(f, StoreVerdict::expired);
    f.expires = kNow - 1;
    refused(f, StoreVerdict::expired, p);

    // extreme values do not overflow
    f.expires = INT64_MAX;
    f.date = INT64_MIN;
    StoreDecision d = decide(f);
    assert_int_equal(d.verdict, StoreVerdict::store);
    assert_int_equal(d.ttl, int64_t{1} << 31);
    f.expires = INT64_MIN;
    f.date = INT64_MAX;
    refused(f, StoreVerdict::expired);
}

void test_max_age_zero(void **)
{
    refused(facts("max-age=0"), StoreVerdict::expired);
    refused(facts("s-maxage=0"), StoreVerdict::expired);
    // min_ttl does not resurrect an explicitly stale response
    CachePolicy p;
    p.min_ttl = 300;
    refused(facts("max-age=0"), StoreVerdict::expired, p);
    ValidRule any[] = {{0, 600}};
    p.valid = any;
    p.nvalid = 1;
    refused(facts("max-age=0"), StoreVerdict::expired, p);
}

void test_age_subtracted(void **)
{
    ResponseFacts f = facts("max-age=60");
    f.age = 20;
    stored(f, 40);
    f.age = 59;
    stored(f, 1);
    f.age = 60;
    refused(f, StoreVerdict::expired);
    f.age = 1000;
    refused(f, StoreVerdict::expired);
    f.age = INT64_MAX;
    refused(f, StoreVerdict::expired);
    f.age = -50;                          // nonsense: ignored
    stored(f, 60);

    // fly_cache_valid lifetimes age too
    ValidRule any[] = {{0, 600}};
    CachePolicy p;
    p.valid = any;
    p.nvalid = 1;
    f = facts("");
    f.age = 100;
    stored(f, 500, p);
    f.age = 600;
    refused(f, StoreVerdict::expired, p);
}

void test_cache_valid(void **)
{
    // no freshness of its own and no rule: not stored
    refused(facts(""), StoreVerdict::no_freshness);
    refused(facts("public"), StoreVerdict::no_freshness);
    refused(facts("must-revalidate"), StoreVerdict::no_freshness);

    ValidRule rules[] = {{0, 60}, {200, 600}, {404, 30}, {200, 999}};
    CachePolicy p;
    p.valid = rules;
    p.nvalid = 4;
    stored(facts("", 200), 600, p);        // the named status beats "any"
    stored(facts("", 404), 30, p);
    stored(facts("", 301), 60, p);         // "any"
    stored(facts("", 500), 60, p);

    // a rule only for 200
    ValidRule only200[] = {{200, 600}};
    p.valid = only200;
    p.nvalid = 1;
    stored(facts("", 200), 600, p);
    refused(facts("", 404), StoreVerdict::no_freshness, p);

    // the response's own freshness wins over the rule, both ways
    stored(facts("max-age=5", 200), 5, p);
    stored(facts("max-age=6000", 200), 6000, p);

    // a rule of 0 seconds stores nothing
    ValidRule zero[] = {{200, 0}};
    p.valid = zero;
    refused(facts("", 200), StoreVerdict::expired, p);

    // a rule does not override the refusals
    ValidRule any[] = {{0, 600}};
    p.valid = any;
    refused(facts("no-store"), StoreVerdict::no_store, p);
    refused(facts("private"), StoreVerdict::is_private, p);
    refused(facts("no-cache"), StoreVerdict::no_cache, p);
    ResponseFacts f = facts("");
    f.has_set_cookie = true;
    refused(f, StoreVerdict::set_cookie, p);
    f = facts("");
    f.request_authorization = true;
    refused(f, StoreVerdict::authorization, p);
}

void test_min_max_ttl(void **)
{
    CachePolicy p;
    p.min_ttl = 100;
    stored(facts("max-age=10"), 100, p);      // raised
    stored(facts("max-age=1000"), 1000, p);
    ResponseFacts f = facts("max-age=60");
    f.age = 50;
    stored(f, 100, p);                        // remaining 10, raised

    p = CachePolicy{};
    p.max_ttl = 300;
    stored(facts("max-age=10"), 10, p);
    stored(facts("max-age=1000"), 300, p);    // capped
    stored(facts("s-maxage=2147483648"), 300, p);

    // max_ttl is the hard ceiling, even below min_ttl
    p.min_ttl = 500;
    stored(facts("max-age=10"), 300, p);

    // fly_cache_valid lifetimes are clamped as well
    ValidRule any[] = {{0, 5}};
    p = CachePolicy{};
    p.valid = any;
    p.nvalid = 1;
    p.min_ttl = 60;
    stored(facts(""), 60, p);

    // huge lifetimes fit the entry's 32-bit TTL
    p = CachePolicy{};
    StoreDecision d = decide(facts("max-age=99999999999999"), p);
    assert_int_equal(d.verdict, StoreVerdict::store);
    assert_int_equal(d.ttl, int64_t{1} << 31);
    // negative settings mean none
    p.min_ttl = -5;
    p.max_ttl = -5;
    stored(facts("max-age=10"), 10, p);
}

void test_stale_extensions(void **)
{
    StoreDecision d = decide(facts("max-age=60, stale-while-revalidate=30, stale-if-error=600"));
    assert_int_equal(d.verdict, StoreVerdict::store);
    assert_int_equal(d.stale_while_revalidate, 30);
    assert_int_equal(d.stale_if_error, 600);

    d = decide(facts("max-age=60"));
    assert_int_equal(d.stale_while_revalidate, 0);
    assert_int_equal(d.stale_if_error, 0);

    // s-maxage with stale-while-revalidate: the response asks for it
    d = decide(facts("s-maxage=1, stale-while-revalidate=59"));
    assert_int_equal(d.stale_while_revalidate, 59);

    // must-revalidate / proxy-revalidate forbid any stale use
    d = decide(facts("max-age=60, must-revalidate, stale-while-revalidate=30, stale-if-error=9"));
    assert_int_equal(d.verdict, StoreVerdict::store);
    assert_int_equal(d.stale_while_revalidate, 0);
    assert_int_equal(d.stale_if_error, 0);
    d = decide(facts("max-age=60, proxy-revalidate, stale-if-error=9"));
    assert_int_equal(d.stale_if_error, 0);
}

void test_verdict_names(void **)
{
    assert_sv_equal(verdict_name(StoreVerdict::store), "store");
    assert_sv_equal(verdict_name(StoreVerdict::no_store), "no-store");
    assert_sv_equal(verdict_name(StoreVerdict::is_private), "private");
    assert_sv_equal(verdict_name(StoreVerdict::no_cache), "no-cache");
    assert_sv_equal(verdict_name(StoreVerdict::authorization), "authorization");
    assert_sv_equal(verdict_name(StoreVerdict::set_cookie), "set-cookie");
    assert_sv_equal(verdict_name(StoreVerdict::vary_star), "vary-star");
    assert_sv_equal(verdict_name(StoreVerdict::status), "status");
    assert_sv_equal(verdict_name(StoreVerdict::no_freshness), "no-freshness");
    assert_sv_equal(verdict_name(StoreVerdict::expired), "expired");
    assert_sv_equal(verdict_name(StoreVerdict::range), "range");
    assert_sv_equal(verdict_name(StoreVerdict::invalid), "invalid-cache-control");
    assert_sv_equal(verdict_name(StoreVerdict::conditional), "conditional");
    assert_sv_equal(verdict_name(StoreVerdict::invalid_age), "invalid-age");
    assert_sv_equal(verdict_name(StoreVerdict::forwarded), "forwarded-header");
    assert_sv_equal(verdict_name(StoreVerdict::request_body), "request-body");
    assert_sv_equal(verdict_name(StoreVerdict::fly_replay), "fly-replay");
    assert_sv_equal(verdict_name(static_cast<StoreVerdict>(200)), "unknown");
}

// RFC 9111 5.1 via parse_age: an Age whose first member is unreadable
// leaves how old the response is unknown: stale, not stored.
void test_invalid_age(void **)
{
    ResponseFacts f = facts("max-age=60");
    f.age_invalid = true;
    refused(f, StoreVerdict::invalid_age);
    ValidRule any[] = {{0, 600}};
    CachePolicy p;
    p.valid = any;
    p.nvalid = 1;
    refused(facts(""), StoreVerdict::no_freshness);
    f = facts("");
    f.age_invalid = true;
    refused(f, StoreVerdict::invalid_age, p);   // fly_cache_valid does not rescue it
    f = facts("no-store, max-age=60");
    f.age_invalid = true;
    refused(f, StoreVerdict::no_store);          // a refusal of its own wins the reason

    // from the header lines, through parse_age
    auto with_age = [](std::initializer_list<std::string_view> lines) {
        ResponseFacts r = facts("max-age=3600");
        AgeField a;
        for (std::string_view l : lines) {
            parse_age(l, a);
        }
        r.age = a.seconds > 0 ? a.seconds : 0;
        r.age_invalid = a.invalid();
        return r;
    };
    refused(with_age({"7200, 0"}), StoreVerdict::expired);
    stored(with_age({"0", "7200"}), 3600);
    refused(with_age({"7200", "0"}), StoreVerdict::expired);
    stored(with_age({"10, 7200"}), 3590);
    refused(with_age({"abc"}), StoreVerdict::invalid_age);
    refused(with_age({""}), StoreVerdict::invalid_age);
    stored(with_age({}), 3600);
}

// RFC 9213: with a targeted field in use, Expires does not count.
void test_targeted_ignores_expires(void **)
{
    ResponseFacts f = facts("public");
    f.has_expires = true;
    f.expires_valid = true;
    f.expires = kNow + 100;
    stored(f, 100);
    f.targeted = true;
    refused(f, StoreVerdict::no_freshness);
    ValidRule any[] = {{0, 600}};
    CachePolicy p;
    p.valid = any;
    p.nvalid = 1;
    stored(f, 600, p);                           // fly_cache_valid applies then
    // an invalid Expires (already expired) is ignored too
    f.expires_valid = false;
    stored(f, 600, p);
    // its own freshness counts as Cache-Control's would
    f = facts("max-age=30");
    f.targeted = true;
    f.has_expires = true;
    f.expires_valid = true;
    f.expires = kNow + 100;
    stored(f, 30);
}

// ---- Content-Type as nginx's upstream module reads it ----

void content_type_is(std::string_view value, std::string_view type,
                     std::string_view charset)
{
    ContentType ct = split_content_type(value);
    assert_sv_equal(value.substr(0, ct.type_len), type);
    assert_sv_equal(ct.charset, charset);
    if (!ct.charset.empty()) {           // a view into the value itself
        assert_true(ct.charset.data() >= value.data()
                    && ct.charset.data() + ct.charset.size()
                           <= value.data() + value.size());
    }
}

void test_split_content_type(void **)
{
    content_type_is("text/html", "text/html", "");
    content_type_is("", "", "");
    content_type_is("text/html; charset=utf-8", "text/html", "utf-8");
    content_type_is("text/html;charset=UTF-8", "text/html", "UTF-8");
    content_type_is("text/html;   CharSet=koi8-r", "text/html", "koi8-r");
    content_type_is("text/html; charset=\"utf-8\"", "text/html", "utf-8");
    // other parameters: the type ends only at the ';' before charset=
    content_type_is("text/html; q=1; charset=utf-8", "text/html; q=1", "utf-8");
    content_type_is("text/html; q=1", "text/html; q=1", "");
    // what follows charset= is all the charset, as nginx takes it
    content_type_is("text/html; charset=utf-8; x=y", "text/html", "utf-8; x=y");
    // degenerate values do not read past the end
    content_type_is("text/html;", "text/html;", "");
    content_type_is("text/html;   ", "text/html;   ", "");
    content_type_is("text/html; charset=", "text/html", "");
    content_type_is("text/html; charset=\"", "text/html", "");
    content_type_is("text/html; charset=\"\"", "text/html", "");
    content_type_is(";charset=x", "", "x");
    // a tab is not skipped (nginx skips spaces only)
    content_type_is("text/html;\tcharset=utf-8", "text/html;\tcharset=utf-8", "");
    // nginx steps over the character after the spaces of a ';' it passes
    content_type_is("text/html; ;charset=x", "text/html; ;charset=x", "");
    content_type_is("text/html; a;charset=x", "text/html; a", "x");
}

// ---- hop-by-hop ----

void test_hop_by_hop(void **)
{
    const char *hop[] = {
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Proxy-Authenticate", "Proxy-Authorization",
        "connection", "TRANSFER-ENCODING", "te",
    };
    for (const char *h : hop) {
        assert_true(is_hop_by_hop(h, ""));
    }
    const char *end_to_end[] = {
        "Content-Type", "Content-Length", "Cache-Control", "Vary", "ETag", "Age",
        "Set-Cookie", "Trailers", "Connection2", "T", "", "Content-Encoding",
    };
    for (const char *h : end_to_end) {
        assert_false(is_hop_by_hop(h, ""));
    }
    // headers named by Connection
    assert_true(is_hop_by_hop("X-Internal", "close, X-Internal"));
    assert_true(is_hop_by_hop("x-internal", "X-INTERNAL"));
    assert_true(is_hop_by_hop("X-B", " x-a ,\tX-B\t, "));
    assert_true(is_hop_by_hop("X-B", "x-a,,x-b"));
    assert_false(is_hop_by_hop("X-Internal", "close"));
    assert_false(is_hop_by_hop("X-Int", "X-Internal"));
    assert_false(is_hop_by_hop("X-Internal", "X-Int"));
    assert_false(is_hop_by_hop("X-A", "x-a-b, b-x-a"));
    assert_false(is_hop_by_hop("", ", ,"));
}

// ---- keys ----

void test_build_key(void **)
{
    std::string key = "old";
    assert_true(build_key("httpsexample.com/a?b=1", key));
    assert_sv_equal(key, "fly:httpsexample.com/a?b=1");

    // binary-safe: bytes other than 0x1f are kept as they are
    assert_true(build_key(std::string_view("a\0b\xff", 4), key));
    assert_int_equal(key.size(), 8);

    std::string longest(kMaxKeyLen - kKeyPrefix.size(), 'k');
    assert_true(build_key(longest, key));
    assert_int_equal(key.size(), kMaxKeyLen);
    longest += 'k';
    assert_false(build_key(longest, key));

    assert_false(build_key("", key));
    // the variant separator could forge another URL's variant key
    assert_false(build_key("host/x\x1f" "accept-encoding=gzip", key));

    // in parts: the same as their concatenation, the same limits
    assert_true(build_key({"https", "example.com", "/a?b=1"}, key));
    assert_sv_equal(key, "fly:httpsexample.com/a?b=1");
    assert_true(build_key({"", "h", ""}, key));
    assert_sv_equal(key, "fly:h");
    assert_false(build_key({"", "", ""}, key));
    assert_false(build_key({"http", "h\x1f", "/"}, key));
    std::string half((kMaxKeyLen - kKeyPrefix.size()) / 2, 'k');
    assert_true(build_key({half, half}, key));
    assert_false(build_key({half, half, "k"}, key));
}

void test_vary_names(void **)
{
    std::string names[16];
    size_t n = 99;
    assert_true(vary_names("Accept-Encoding", names, 16, n));
    assert_int_equal(n, 1);
    assert_sv_equal(names[0], "accept-encoding");

    // lower-cased, sorted, duplicates removed, white space and empty elements skipped
    assert_true(vary_names(" User-Agent ,accept-encoding,, Accept-Language,\tACCEPT-ENCODING ",
                           names, 16, n));
    assert_int_equal(n, 3);
    assert_sv_equal(names[0], "accept-encoding");
    assert_sv_equal(names[1], "accept-language");
    assert_sv_equal(names[2], "user-agent");

    assert_true(vary_names("", names, 16, n));
    assert_int_equal(n, 0);
    assert_true(vary_names(" , ", names, 16, n));
    assert_int_equal(n, 0);

    assert_false(vary_names("*", names, 16, n));
    assert_false(vary_names("Accept, *", names, 16, n));
    assert_false(vary_names(" * ", names, 16, n));
    assert_false(vary_names("Accept Encoding", names, 16, n));
    assert_false(vary_names("Accept;q=1", names, 16, n));
    assert_false(vary_names("\"Accept\"", names, 16, n));
    assert_false(vary_names("Accept\x01", names, 16, n));

    // at most `max` distinct names
    assert_true(vary_names("a, b, c, a, b, c", names, 3, n));
    assert_int_equal(n, 3);
    assert_false(vary_names("a, b, c, d", names, 3, n));
    assert_true(vary_names("d, c, b, a", names, 4, n));
    assert_sv_equal(names[0], "a");
    assert_sv_equal(names[3], "d");
}

void test_append_vary_part(void **)
{
    std::string key = "fly:k";
    append_vary_part(key, "accept-encoding", "gzip, br");
    assert_sv_equal(key, "fly:k\x1f" "accept-encoding=gzip,br");

    key = "k";
    append_vary_part(key, "Accept", "  text/html ,\t application/json ;q=0.9 ,, ");
    assert_sv_equal(key, "k\x1f" "accept=text/html,application/json ;q=0.9");

    key = "k";
    append_vary_part(key, "x", "");
    assert_sv_equal(key, "k\x1fx=");

    // '%', control bytes and DEL are escaped: a value cannot forge a separator
    key = "k";
    append_vary_part(key, "x", std::string_view("a\x1f" "b=c%\x7f\0", 8));
    assert_sv_equal(key, "k\x1fx=a%1Fb=c%25%7F%00");
    // bytes >= 0x80 are kept
    key = "k";
    append_vary_part(key, "x", "\xc3\xa9");
    assert_sv_equal(key, "k\x1fx=\xc3\xa9");
}

void test_build_variant_key(void **)
{
    std::map<std::string, std::string> req = {
        {"accept-encoding", "gzip,  deflate"},
        {"accept-language", "fr"},
    };
    auto lookup = [&](std::string_view name) -> std::string_view {
        auto it = req.find(std::string(name));
        return it == req.end() ? std::string_view() : std::string_view(it->second);
    };
    std::string key;
    assert_true(build_variant_key("fly:k", "Accept-Language, Accept-Encoding, X-Absent", lookup,
                                  key));
    assert_sv_equal(key, "fly:k\x1f" "accept-encoding=gzip,deflate\x1f"
                         "accept-language=fr\x1fx-absent=");

    // same request, Vary written differently: the same key
    std::string again;
    assert_true(build_variant_key("fly:k", "x-absent,ACCEPT-ENCODING, accept-language", lookup,
                                  again));
    assert_sv_equal(again, key);

    // normalisation: white space around commas does not make a new variant
    req["accept-encoding"] = " gzip ,deflate ";
    assert_true(build_variant_key("fly:k", "accept-encoding", lookup, again));
    assert_sv_equal(again, "fly:k\x1f" "accept-encoding=gzip,deflate");

    assert_false(build_variant_key("fly:k", "*", lookup, key));
    assert_false(build_variant_key("fly:k", "Accept, *", lookup, key));

    // too long
    req["accept-language"] = std::string(kMaxKeyLen, 'x');
    assert_false(build_variant_key("fly:k", "accept-language", lookup, key));
    req["accept-language"] = std::string(kMaxKeyLen - 5 - 17, 'x');
    assert_true(build_variant_key("fly:k", "accept-language", lookup, key));
    assert_int_equal(key.size(), kMaxKeyLen);
    req["accept-language"] += 'x';
    assert_false(build_variant_key("fly:k", "accept-language", lookup, key));

    // more than 16 names
    std::string many;
    for (int i = 0; i < 17; i++) {
        many += "h" + std::to_string(i) + ",";
    }
    assert_false(build_variant_key("fly:k", many, lookup, key));
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_no_store_private_no_cache),
        cmocka_unit_test(test_invalid_cache_control),
        cmocka_unit_test(test_vary_star_and_range),
        cmocka_unit_test(test_conditional),
        cmocka_unit_test(test_authorization),
        cmocka_unit_test(test_forwarded),
        cmocka_unit_test(test_request_body_and_replay),
        cmocka_unit_test(test_set_cookie),
        cmocka_unit_test(test_freshness_precedence),
        cmocka_unit_test(test_expires),
        cmocka_unit_test(test_max_age_zero),
        cmocka_unit_test(test_age_subtracted),
        cmocka_unit_test(test_cache_valid),
        cmocka_unit_test(test_min_max_ttl),
        cmocka_unit_test(test_stale_extensions),
        cmocka_unit_test(test_invalid_age),
        cmocka_unit_test(test_targeted_ignores_expires),
        cmocka_unit_test(test_verdict_names),
        cmocka_unit_test(test_split_content_type),
        cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_build_key),
        cmocka_unit_test(test_vary_names),
        cmocka_unit_test(test_append_vary_part),
        cmocka_unit_test(test_build_variant_key),
        cmocka_unit_test(test_store_refused_ignores_dates),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
