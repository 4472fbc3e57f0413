// fly-edge pure core: the Cache-Control header (RFC 9111 section 5.2),
// targeted fields (RFC 9213), Age (RFC 9111 5.1) and HTTP-date (RFC 9110
// section 5.6.7).
#include "core/http_text.hpp"
#include "core/cache_control.hpp"

namespace fly::core {

namespace {

constexpr int64_t kDeltaMax = int64_t{1} << 31;   // RFC 9111 1.2.2


// delta-seconds = 1*DIGIT; values over 2^31 are clamped to 2^31 (RFC 9111
// 1.2.2).  False when `v` is empty or holds anything but digits.
bool parse_delta(std::string_view v, int64_t &out)
{
    if (v.empty()) {
        return false;
    }
    int64_t n = 0;
    for (char c : v) {
        if (!is_digit(c)) {
            return false;
        }
        if (n < kDeltaMax) {
            n = n * 10 + (c - '0');
        }
    }
    out = n < kDeltaMax ? n : kDeltaMax;
    return true;
}

// One cache-directive: token [ "=" ( token / quoted-string ) ]
struct Directive {
    std::string_view name;
    std::string_view arg;      // without the quotes, escapes left as they are
    bool has_arg = false;
};

// A cursor over one header value.
struct Scanner {
    std::string_view s;
    size_t i = 0;

    bool done() const { return i >= s.size(); }
    char peek() const { return s[i]; }
    void skip_ows() { while (!done() && is_ows(s[i])) i++; }

    std::string_view token()
    {
        size_t start = i;
        while (!done() && is_tchar(s[i])) i++;
        return s.substr(start, i - start);
    }

    // At an opening quote: reads a quoted-string (RFC 9110 5.6.4).  False
    // when it is not terminated.
    bool quoted(std::string_view &out)
    {
        size_t start = ++i;
        while (!done()) {
            char c = s[i];
            if (c == '"') {
                out = s.substr(start, i - start);
                i++;
                return true;
            }
            i += (c == '\\') ? 2 : 1;
        }
        return false;
    }

    // Skips what is left of a malformed element, up to the next comma
    // outside a quoted string.  False when a quote is not terminated.
    bool skip_element()
    {
        while (!done() && s[i] != ',') {
            if (s[i] == '"') {
                std::string_view ignored;
                if (!quoted(ignored)) return false;
            } else {
                i++;
            }
        }
        return true;
    }
};

enum class Step { ok, malformed, unterminated };

// Reads the next directive; the scanner stands at its first byte.
Step next_directive(Scanner &sc, Directive &d)
{
    d = Directive{};
    d.name = sc.token();
    if (d.name.empty()) {
        return Step::malformed;
    }
    sc.skip_ows();   // tolerated, though the grammar has no space around '='
    if (!sc.done() && sc.peek() == '=') {
        sc.i++;
        sc.skip_ows();
        d.has_arg = true;
        if (!sc.done() && sc.peek() == '"') {
            if (!sc.quoted(d.arg)) {
                return Step::unterminated;
            }
        } else {
            d.arg = sc.token();
        }
        sc.skip_ows();
    }
    if (!sc.done() && sc.peek() != ',') {
        return Step::malformed;
    }
    return Step::ok;
}

void set_delta(const Directive &d, int64_t &field, CacheControl &cc)
{
    int64_t v = 0;
    if (!d.has_arg || !parse_delta(d.arg, v)) {
        cc.invalid = true;       // the directive stays absent
        return;
    }
    if (field < 0) {
        field = v;               // the first value wins (RFC 9111 4.2.1)
    }
}

// Directives of RFC 9111 5.2.2 and RFC 5861 that a shared cache acts on.
// An argument given to a directive that takes none is ignored; the
// qualified forms no-cache="..." and private="..." count as the plain
// ones (we do not store partial responses).
void apply(const Directive &d, CacheControl &cc)
{
    const std::string_view n = d.name;
    if (iequals(n, "no-store")) {
        cc.no_store = true;
    } else if (iequals(n, "no-cache")) {
        cc.no_cache = true;
    } else if (iequals(n, "private")) {
        cc.is_private = true;
    } else if (iequals(n, "public")) {
        cc.is_public = true;
    } else if (iequals(n, "must-revalidate")) {
        cc.must_revalidate = true;
    } else if (iequals(n, "proxy-revalidate")) {
        cc.proxy_revalidate = true;
    } else if (iequals(n, "immutable")) {
        cc.immutable = true;
    } else if (iequals(n, "max-age")) {
        set_delta(d, cc.max_age, cc);
    } else if (iequals(n, "s-maxage")) {
        set_delta(d, cc.s_maxage, cc);
    } else if (iequals(n, "stale-while-revalidate")) {
        set_delta(d, cc.stale_while_revalidate, cc);
    } else if (iequals(n, "stale-if-error")) {
        set_delta(d, cc.stale_if_error, cc);
    }
    // other directives are ignored (RFC 9111 5.2.3)
}

// ---- HTTP-date ----

constexpr std::string_view kMonths[12] = {
    "jan", "feb", "mar", "apr", "may", "jun",
    "jul", "aug", "sep", "oct", "nov", "dec",
};
constexpr std::string_view kDays[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
constexpr std::string_view kLongDays[7] = {
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
};

bool digits(std::string_view s, size_t pos, size_t n, int &out)
{
    if (pos + n > s.size()) {
        return false;
    }
    int v = 0;
    for (size_t i = pos; i < pos + n; i++) {
        if (!is_digit(s[i])) {
            return false;
        }
        v = v * 10 + (s[i] - '0');
    }
    out = v;
    return true;
}

// Three letters (lower case) in one integer, so that a month or a day
// name is found by integer compares rather than by string compares.
constexpr uint32_t pack3(std::string_view s, size_t pos)
{
    return static_cast<uint32_t>(static_cast<unsigned char>(ascii_lower(s[pos]))) << 16
           | static_cast<uint32_t>(static_cast<unsigned char>(ascii_lower(s[pos + 1]))) << 8
           | static_cast<uint32_t>(static_cast<unsigned char>(ascii_lower(s[pos + 2])));
}

constexpr uint32_t kMonths3[12] = {
    pack3(kMonths[0], 0), pack3(kMonths[1], 0), pack3(kMonths[2], 0),
    pack3(kMonths[3], 0), pack3(kMonths[4], 0), pack3(kMonths[5], 0),
    pack3(kMonths[6], 0), pack3(kMonths[7], 0), pack3(kMonths[8], 0),
    pack3(kMonths[9], 0), pack3(kMonths[10], 0), pack3(kMonths[11], 0),
};
constexpr uint32_t kDays3[7] = {
    pack3(kDays[0], 0), pack3(kDays[1], 0), pack3(kDays[2], 0), pack3(kDays[3], 0),
    pack3(kDays[4], 0), pack3(kDays[5], 0), pack3(kDays[6], 0),
};

bool month(std::string_view s, size_t pos, int &out)
{
    if (pos + 3 > s.size()) {
        return false;
    }
    uint32_t v = pack3(s, pos);
    for (int m = 0; m < 12; m++) {
        if (v == kMonths3[m]) {
            out = m + 1;
            return true;
        }
    }
    return false;
}

// A three-letter day name ("Sun") at the start of `s`.
bool day3(std::string_view s)
{
    if (s.size() < 3) {
        return false;
    }
    uint32_t v = pack3(s, 0);
    for (uint32_t d : kDays3) {
        if (v == d) {
            return true;
        }
    }
    return false;
}

bool one_of(std::string_view s, const std::string_view *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (iequals(s, names[i])) {
            return true;
        }
    }
    return false;
}

bool literal(std::string_view s, size_t pos, std::string_view lit)
{
    return pos + lit.size() <= s.size() && iequals(s.substr(pos, lit.size()), lit);
}

struct Civil {
    int year = 0, month = 0, day = 0, hour = 0, min = 0, sec = 0;
};

// "HH:MM:SS" at pos
bool time_of_day(std::string_view s, size_t pos, Civil &c)
{
    return digits(s, pos, 2, c.hour) && literal(s, pos + 2, ":") &&
           digits(s, pos + 3, 2, c.min) && literal(s, pos + 5, ":") &&
           digits(s, pos + 6, 2, c.sec);
}

bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int days_in_month(int y, int m)
{
    static constexpr int kDaysIn[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return (m == 2 && leap(y)) ? 29 : kDaysIn[m - 1];
}

// Leap years among 1 .. y-1 (y >= 1).
int64_t leaps_before(int64_t y)
{
    y -= 1;
    return y / 4 - y / 100 + y / 400;
}

// Days from 1970-01-01 to the Gregorian date y-m-d (y >= 1, valid date).
int64_t days_from_civil(int64_t y, int m, int d)
{
    static constexpr int kBeforeMonth[12] = {0, 31, 59, 90, 120, 151,
                                             181, 212, 243, 273, 304, 334};
    int64_t days = (y - 1970) * 365 + leaps_before(y) - leaps_before(1970);
    days += kBeforeMonth[m - 1] + (m > 2 && leap(static_cast<int>(y)) ? 1 : 0);
    return days + d - 1;
}

bool to_unix(const Civil &c, int64_t &out)
{
    // second 60: a leap second, which unix time folds into the next one
    if (c.year < 1 || c.month < 1 || c.month > 12 || c.day < 1 ||
        c.day > days_in_month(c.year, c.month) || c.hour > 23 || c.min > 59 ||
        c.sec > 60) {
        return false;
    }
    out = days_from_civil(c.year, c.month, c.day) * 86400 + c.hour * 3600 +
          c.min * 60 + c.sec;
    return true;
}

// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
bool imf_fixdate(std::string_view s, Civil &c)
{
    return s.size() == 29 && day3(s) &&
           literal(s, 3, ", ") && digits(s, 5, 2, c.day) && literal(s, 7, " ") &&
           month(s, 8, c.month) && literal(s, 11, " ") && digits(s, 12, 4, c.year) &&
           literal(s, 16, " ") && time_of_day(s, 17, c) && literal(s, 25, " gmt");
}

// rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT".  A two-digit year is read
// as 1970..2069 (RFC 9110 5.6.7 wants "no more than 50 years in the
// future"; a fixed pivot keeps this function free of the clock).
bool rfc850_date(std::string_view s, Civil &c)
{
    size_t comma = s.find(',');
    if (comma == std::string_view::npos || !one_of(s.substr(0, comma), kLongDays, 7)) {
        return false;
    }
    size_t p = comma;
    if (s.size() - p != 24 || !literal(s, p, ", ") || !digits(s, p + 2, 2, c.day) ||
        !literal(s, p + 4, "-") || !month(s, p + 5, c.month) || !literal(s, p + 8, "-") ||
        !digits(s, p + 9, 2, c.year) || !literal(s, p + 11, " ") ||
        !time_of_day(s, p + 12, c) || !literal(s, p + 20, " gmt")) {
        return false;
    }
    c.year += c.year < 70 ? 2000 : 1900;
    return true;
}

// asctime-date: "Sun Nov  6 08:49:37 1994" (day as 2DIGIT or SP DIGIT)
bool asctime_date(std::string_view s, Civil &c)
{
    if (s.size() != 24 || !day3(s) || !literal(s, 3, " ") ||
        !month(s, 4, c.month) || !literal(s, 7, " ")) {
        return false;
    }
    bool day_ok = s[8] == ' ' ? digits(s, 9, 1, c.day) : digits(s, 8, 2, c.day);
    return day_ok && literal(s, 10, " ") && time_of_day(s, 11, c) &&
           literal(s, 19, " ") && digits(s, 20, 4, c.year);
}

}  // namespace

void parse_cache_control(std::string_view value, CacheControl &cc)
{
    Scanner sc{value};
    while (true) {
        // empty list elements are allowed (RFC 9110 5.6.1)
        while (!sc.done() && (is_ows(sc.peek()) || sc.peek() == ',')) {
            sc.i++;
        }
        if (sc.done()) {
            return;
        }
        cc.empty = false;
        Directive d;
        switch (next_directive(sc, d)) {
        case Step::ok:
            apply(d, cc);
            break;
        case Step::malformed:
            cc.invalid = true;
            if (!sc.skip_element()) {
                return;
            }
            break;
        case Step::unterminated:
            // nothing after an open quote can be trusted
            cc.invalid = true;
            return;
        }
    }
}

size_t select_targeted(const CacheControl *targeted, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!targeted[i].empty && !targeted[i].invalid) {
            return i;
        }
    }
    return n;
}

void parse_age(std::string_view value, AgeField &age)
{
    age.present = true;
    if (age.first_seen) {
        return;
    }
    // the first member (empty list elements do not count)
    for_each_element(value, [&](std::string_view member) {
        age.first_seen = true;
        int64_t v = 0;
        age.seconds = parse_delta(member, v) ? v : -1;
        return false;
    });
}

bool parse_http_date(std::string_view value, int64_t &out)
{
    value = trim_ows(value);
    Civil c;
    if (!imf_fixdate(value, c) && !rfc850_date(value, c) && !asctime_date(value, c)) {
        return false;
    }
    return to_unix(c, out);
}

}  // namespace fly::core
