// libFuzzer target: decide_store() fed with arbitrary facts, and
// is_hop_by_hop() with arbitrary names and Connection values.
//
// Input: lines "key: value" (the ": " is required; unknown keys ignored),
// readable so that the seeds say what they test:
//   status N | cache-control TEXT (parsed, repeatable) | expires DATE |
//   date DATE | expires-raw N | date-raw N | expires-bad | age N | now N |
//   set-cookie | authorization | range | vary-star | valid STATUS TTL
//   (repeatable, status 0 = any) | min-ttl N | max-ttl N |
//   ignore-set-cookie | max-age N | s-maxage N | swr N | sie N (raw
//   Cache-Control fields, beyond what the parser yields: any int64) |
//   must-revalidate | proxy-revalidate | no-store | private | no-cache |
//   public | invalid | connection TEXT (repeatable) | header NAME
//
// Properties (UBSan catches any signed overflow on the way):
//   - the verdict is a known one with a name;
//   - store: 0 < ttl <= 2^31 and ttl <= max-ttl when set; ttl >= min-ttl
//     unless max-ttl or 2^31 caps it; swr, sie >= 0, and both 0 under
//     must-revalidate / proxy-revalidate;
//   - not store: ttl, swr and sie are 0;
//   - the refusals hold: a status outside 200..599, 206 and 304 are
//     "status"; no-store, private, no-cache, Vary: *, Range never store;
//   - an older response (larger Age) never gets a longer ttl;
//   - is_hop_by_hop() holds for every name the Connection values list.
#include "fuzz.hpp"

#include "core/cache_rules.hpp"
#include "core/http_text.hpp"

using namespace fly::core;

namespace {

constexpr int64_t kTtlMax = int64_t{1} << 31;

struct Input {
    ResponseFacts f;
    CachePolicy p;
    std::vector<ValidRule> rules;
    std::string connection;
    std::vector<std::string_view> names;
};

void parse_input(std::string_view s, Input &in)
{
    for (std::string_view line : fuzz::split_lines(s, 64)) {
        size_t colon = line.find(": ");
        std::string_view k = line.substr(0, colon);
        std::string_view v = colon == std::string_view::npos ? std::string_view()
                                                             : line.substr(colon + 2);
        int64_t n = fuzz::parse_num(v);
        ResponseFacts &f = in.f;
        CachePolicy &p = in.p;
        if (k == "status") f.status = static_cast<int>(n);
        else if (k == "cache-control") parse_cache_control(v, f.cc);
        else if (k == "expires") { f.has_expires = true; f.expires_valid = parse_http_date(v, f.expires); }
        else if (k == "date") f.has_date = parse_http_date(v, f.date);
        else if (k == "expires-raw") { f.has_expires = f.expires_valid = true; f.expires = n; }
        else if (k == "expires-bad") { f.has_expires = true; f.expires_valid = false; }
        else if (k == "date-raw") { f.has_date = true; f.date = n; }
        else if (k == "age") f.age = n;
        else if (k == "now") f.now = n;
        else if (k == "set-cookie") f.has_set_cookie = true;
        else if (k == "authorization") f.request_authorization = true;
        else if (k == "range") f.request_range = true;
        else if (k == "vary-star") f.vary_star = true;
        else if (k == "valid") {
            std::vector<std::string_view> w = fuzz::words(v);
            in.rules.push_back({static_cast<int>(n), w.size() > 1 ? fuzz::parse_num(w[1]) : 0});
        }
        else if (k == "min-ttl") p.min_ttl = n;
        else if (k == "max-ttl") p.max_ttl = n;
        else if (k == "ignore-set-cookie") p.ignore_set_cookie = true;
        else if (k == "max-age") f.cc.max_age = n;
        else if (k == "s-maxage") f.cc.s_maxage = n;
        else if (k == "swr") f.cc.stale_while_revalidate = n;
        else if (k == "sie") f.cc.stale_if_error = n;
        else if (k == "must-revalidate") f.cc.must_revalidate = true;
        else if (k == "proxy-revalidate") f.cc.proxy_revalidate = true;
        else if (k == "no-store") f.cc.no_store = true;
        else if (k == "private") f.cc.is_private = true;
        else if (k == "no-cache") f.cc.no_cache = true;
        else if (k == "public") f.cc.is_public = true;
        else if (k == "invalid") f.cc.invalid = true;
        else if (k == "connection") {
            if (!in.connection.empty()) in.connection += ", ";
            in.connection.append(v);
        }
        else if (k == "header") in.names.push_back(v);
    }
    in.p.valid = in.rules.data();
    in.p.nvalid = in.rules.size();
}

void check_decision(const Input &in, const StoreDecision &d)
{
    const ResponseFacts &f = in.f;
    const CachePolicy &p = in.p;
    std::string_view name = verdict_name(d.verdict);
    FUZZ_CHECK(!name.empty() && name != "unknown");

    if (d.verdict != StoreVerdict::store) {
        FUZZ_CHECK(d.ttl == 0 && d.stale_while_revalidate == 0 && d.stale_if_error == 0);
    } else {
        FUZZ_CHECK(d.ttl > 0 && d.ttl <= kTtlMax);
        FUZZ_CHECK(p.max_ttl <= 0 || d.ttl <= p.max_ttl);
        if (p.min_ttl > 0 && d.ttl < p.min_ttl) {
            FUZZ_CHECK((p.max_ttl > 0 && d.ttl == p.max_ttl) || d.ttl == kTtlMax);
        }
        FUZZ_CHECK(d.stale_while_revalidate >= 0 && d.stale_if_error >= 0);
        if (f.cc.must_revalidate || f.cc.proxy_revalidate) {
            FUZZ_CHECK(d.stale_while_revalidate == 0 && d.stale_if_error == 0);
        }
        FUZZ_CHECK(!f.cc.no_store && !f.cc.is_private && !f.cc.no_cache && !f.vary_star &&
                   !f.request_range && !f.cc.invalid);
        FUZZ_CHECK(!f.has_set_cookie || p.ignore_set_cookie);
    }
    bool cacheable = f.status >= 200 && f.status <= 599 && f.status != 206 && f.status != 304;
    FUZZ_CHECK(cacheable || d.verdict == StoreVerdict::status);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Input in;
    parse_input(fuzz::as_view(data, size), in);
    StoreDecision d = decide_store(in.f, in.p);
    check_decision(in, d);

    // older: the same response with a larger Age (saturating)
    for (int64_t more : {int64_t{1}, int64_t{1} << 31, INT64_MAX}) {
        Input older = in;
        older.p.valid = older.rules.data();
        int64_t base = in.f.age > 0 ? in.f.age : 0;
        older.f.age = base > INT64_MAX - more ? INT64_MAX : base + more;
        StoreDecision o = decide_store(older.f, older.p);
        check_decision(older, o);
        FUZZ_CHECK(o.ttl <= d.ttl);
    }

    for (std::string_view name : in.names) {
        bool hop = is_hop_by_hop(name, in.connection);
        for (std::string_view e : fuzz::list_elements(in.connection)) {
            if (iequals(e, name)) {
                FUZZ_CHECK(hop);
            }
        }
        if (iequals(name, "connection") || iequals(name, "transfer-encoding") ||
            iequals(name, "upgrade") || iequals(name, "keep-alive")) {
            FUZZ_CHECK(hop);
        }
    }
    return 0;
}
