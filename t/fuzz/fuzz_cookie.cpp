// libFuzzer target: find_cookie() and parse_sticky_until() (the request's
// Cookie header and the fly-replay-until value, sent by any client).
//
// Input: line 1 a cookie name, line 2 a Cookie header value.
//
// Properties:
//   - find_cookie() agrees with a plain model of "a=1; b=2" (pairs split
//     at ';', OWS trimmed, the first pair whose name matches exactly
//     wins, one pair of surrounding quotes removed), for the given name
//     and for fly-replay-until; the value it returns is a view into the
//     header;
//   - parse_sticky_until() accepts exactly 1..12 digits and returns their
//     value;
//   - the cookie sticky_cookie() sets is found again, with its time.
#include "fuzz.hpp"

#include "core/http_text.hpp"
#include "core/replay.hpp"

using namespace fly::core;

namespace {

bool model_find(std::string_view header, std::string_view name, std::string_view &value)
{
    if (name.find('=') != std::string_view::npos) {
        return false;   // a cookie name never holds '='
    }
    while (true) {
        size_t semi = header.find(';');
        std::string_view pair = trim_ows(header.substr(0, semi));
        if (pair.size() > name.size() && pair.substr(0, name.size()) == name &&
            pair[name.size()] == '=') {
            value = pair.substr(name.size() + 1);
            if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
                value = value.substr(1, value.size() - 2);
            }
            return true;
        }
        if (semi == std::string_view::npos) {
            return false;
        }
        header.remove_prefix(semi + 1);
    }
}

void check_find(std::string_view header, std::string_view name)
{
    std::string_view got = "untouched", want;
    bool found = find_cookie(header, name, got);
    bool model = model_find(header, name, want);
    FUZZ_CHECK(found == model);
    if (found) {
        FUZZ_CHECK(got == want && fuzz::inside(got, header));
    }
}

void check_sticky(std::string_view v)
{
    int64_t until = -1;
    bool ok = parse_sticky_until(v, until);
    FUZZ_CHECK(ok == (fuzz::all_digits(v) && v.size() <= 12));
    if (!ok) {
        return;
    }
    FUZZ_CHECK(until >= 0 && until <= 999999999999 && until == fuzz::parse_num(v));

    // the cookie we would set from such a time is read back
    int64_t seconds = 5;
    if (until + seconds <= 999999999999) {
        // sticky_cookie() takes the time in microseconds: a whole second
        // is not rounded up, so the value read back is exactly until + seconds
        std::string set = sticky_cookie(until * 1000000, seconds);
        std::string header = "a=b; " + set.substr(0, set.find(';')) + "; c=d";
        std::string_view value;
        int64_t back = 0;
        FUZZ_CHECK(find_cookie(header, kStickyCookie, value));
        FUZZ_CHECK(parse_sticky_until(value, back) && back == until + seconds);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::vector<std::string_view> l = fuzz::split_lines(fuzz::as_view(data, size), 2);
    std::string_view name = l[0], header = l[1];
    check_find(header, name);
    check_find(header, kStickyCookie);

    std::string_view v;
    if (find_cookie(header, kStickyCookie, v)) {
        check_sticky(v);
    }
    check_sticky(name);
    return 0;
}
