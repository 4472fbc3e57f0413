// libFuzzer target: parse_replay_src() (the fly-replay-src request header,
// which any client can send).
//
// Properties, for every value it accepts:
//   - region is set, t is at most 18 digits, every view lies in the input;
//   - the input is made only of visible ASCII other than ','  (no space,
//     no control byte can reach the logs or the decision);
//   - the fields written again as "state=..;t=..;instance=..;region=.."
//     parse to the same fields (any key order; t without leading zeros);
//   - an unknown key appended is ignored, a repeated known key, an empty
//     item before or after is refused.
#include "fuzz.hpp"

#include "core/replay.hpp"

using namespace fly::core;

namespace {

bool same(const ReplaySrc &a, const ReplaySrc &b)
{
    return a.instance == b.instance && a.region == b.region && a.state == b.state &&
           a.t == b.t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::string_view in = fuzz::as_view(data, size);
    ReplaySrc src;
    src.region = src.instance = src.state = "stale";   // must be reset
    if (!parse_replay_src(in, src)) {
        return 0;
    }

    FUZZ_CHECK(!src.region.empty());
    FUZZ_CHECK(src.t >= 0 && src.t <= 999999999999999999);
    FUZZ_CHECK(fuzz::inside(src.region, in) && fuzz::inside(src.instance, in) &&
               fuzz::inside(src.state, in));
    for (unsigned char c : in) {
        FUZZ_CHECK(c > 0x20 && c < 0x7f && c != ',');
    }

    std::string again = "t=" + std::to_string(src.t);
    if (!src.state.empty()) {
        again = "state=" + std::string(src.state) + ";" + again;
    }
    if (!src.instance.empty()) {
        again += ";instance=" + std::string(src.instance);
    }
    again += ";region=" + std::string(src.region);
    ReplaySrc re;
    FUZZ_CHECK(parse_replay_src(again, re) && same(re, src));

    std::string s(in);
    ReplaySrc x;
    FUZZ_CHECK(parse_replay_src(s + ";zz=1", x) && same(x, src));
    FUZZ_CHECK(!parse_replay_src(s + ";region=x", x));
    FUZZ_CHECK(!parse_replay_src(s + ";t=1", x));
    FUZZ_CHECK(!parse_replay_src(s + ";", x));
    FUZZ_CHECK(!parse_replay_src(";" + s, x));
    return 0;
}
