// libFuzzer target: parse_cache_control() (response and request
// Cache-Control header values).
//
// Input: one or two header lines, separated by '\n' (a response may send
// Cache-Control more than once; the shell parses each line into the same
// CacheControl).
//
// Properties:
//   - every delta-seconds field is -1 (absent) or 0..2^31;
//   - directive names are case-insensitive: upper-casing the whole input
//     changes nothing (arguments that matter are digits);
//   - two lines parsed one after the other equal the two joined with a
//     comma, when the first holds no quote (a quote may swallow the comma);
//   - parsing the same line twice changes nothing (flags are sticky, the
//     first delta wins).
#include "fuzz.hpp"

#include "core/cache_control.hpp"

using namespace fly::core;

namespace {

bool same(const CacheControl &a, const CacheControl &b)
{
    return a.no_store == b.no_store && a.no_cache == b.no_cache &&
           a.is_private == b.is_private && a.is_public == b.is_public &&
           a.must_revalidate == b.must_revalidate &&
           a.proxy_revalidate == b.proxy_revalidate && a.immutable == b.immutable &&
           a.max_age == b.max_age && a.s_maxage == b.s_maxage &&
           a.stale_while_revalidate == b.stale_while_revalidate &&
           a.stale_if_error == b.stale_if_error && a.invalid == b.invalid;
}

bool delta_ok(int64_t v) { return v == -1 || (v >= 0 && v <= (int64_t{1} << 31)); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::vector<std::string_view> l = fuzz::split_lines(fuzz::as_view(data, size), 2);
    std::string_view a = l[0], b = l[1];

    CacheControl one;
    parse_cache_control(a, one);
    FUZZ_CHECK(delta_ok(one.max_age) && delta_ok(one.s_maxage) &&
               delta_ok(one.stale_while_revalidate) && delta_ok(one.stale_if_error));

    CacheControl up;
    parse_cache_control(fuzz::recase(a, true), up);
    FUZZ_CHECK(same(one, up));

    CacheControl twice = one;
    parse_cache_control(a, twice);
    FUZZ_CHECK(same(one, twice));

    CacheControl lines = one;
    parse_cache_control(b, lines);
    FUZZ_CHECK(delta_ok(lines.max_age) && delta_ok(lines.s_maxage) &&
               delta_ok(lines.stale_while_revalidate) && delta_ok(lines.stale_if_error));
    if (a.find('"') == std::string_view::npos) {
        std::string joined(a);
        joined += ',';
        joined.append(b);
        CacheControl j;
        parse_cache_control(joined, j);
        FUZZ_CHECK(same(lines, j));
    }
    return 0;
}
