// libFuzzer target: parse_http_date() (Expires, Date).
//
// Properties, for every date it accepts:
//   - the result lies between 0001-01-01 and 9999-12-31 23:59:60;
//   - formatted again as an IMF-fixdate (by an independent civil-date
//     conversion below) it parses back to the same second;
//   - an accepted IMF-fixdate without a leap second formats back to the
//     input, apart from the day name (which the parser does not check)
//     and letter case;
//   - letter case and surrounding spaces/tabs do not matter.
#include "fuzz.hpp"

#include <cstdio>

#include "core/cache_control.hpp"
#include "core/http_text.hpp"

using namespace fly::core;

namespace {

constexpr int64_t kMin = -62135596800;       // 0001-01-01 00:00:00
constexpr int64_t kMax = 253402300800;       // 9999-12-31 23:59:60

bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

// Unix seconds -> IMF-fixdate, counting days from 0001-01-01 (a Monday)
// in whole 400-year cycles, then years, then months.
std::string imf(int64_t t)
{
    int64_t secs = t - kMin;              // >= 0 for what we format
    int64_t days = secs / 86400, rem = secs % 86400;
    int64_t weekday = days % 7;           // 0 = Monday
    int64_t year = 1 + 400 * (days / 146097);
    days %= 146097;
    while (days >= (is_leap(year) ? 366 : 365)) {
        days -= is_leap(year) ? 366 : 365;
        year++;
    }
    static const int kLen[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    static const char *kMon[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static const char *kDay[7] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    int month = 0;
    while (true) {
        int len = kLen[month] + (month == 1 && is_leap(year) ? 1 : 0);
        if (days < len) break;
        days -= len;
        month++;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDay[weekday],
                  static_cast<int>(days + 1), kMon[month], static_cast<int>(year),
                  static_cast<int>(rem / 3600), static_cast<int>(rem / 60 % 60),
                  static_cast<int>(rem % 60));
    return buf;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::string_view in = fuzz::as_view(data, size);
    int64_t t = 0;
    bool ok = parse_http_date(in, t);

    int64_t u = 0;
    FUZZ_CHECK(parse_http_date(fuzz::recase(in, true), u) == ok && (!ok || u == t));
    FUZZ_CHECK(parse_http_date(fuzz::recase(in, false), u) == ok && (!ok || u == t));
    std::string padded = " \t";
    padded.append(in);
    padded += "\t ";
    FUZZ_CHECK(parse_http_date(padded, u) == ok && (!ok || u == t));
    if (!ok) {
        return 0;
    }

    FUZZ_CHECK(t >= kMin && t <= kMax);
    if (t == kMax) {
        return 0;   // 9999-12-31 23:59:60 is year 10000 once folded
    }
    std::string again = imf(t);
    int64_t back = 0;
    FUZZ_CHECK(parse_http_date(again, back) && back == t);

    std::string_view trimmed = trim_ows(in);
    if (trimmed.size() == 29 && trimmed[3] == ',' && trimmed.substr(23, 2) != "60") {
        FUZZ_CHECK(iequals(trimmed.substr(3), std::string_view(again).substr(3)));
    }
    return 0;
}
