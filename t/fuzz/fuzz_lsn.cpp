// libFuzzer target: parse_lsn() (the fly-lsn cookie any client sends, the
// positions PostgreSQL returns), the cookie's value in a Cookie header,
// parse_decimal() and record_end_lsn() (the server's sizes).
//
// Input: line 1 an LSN text, line 2 a Cookie header value, line 3 a
// decimal, then 16 bytes: two 64-bit numbers (a block and a segment size,
// also used as positions).
//
// Properties:
//   - parse_lsn() accepts exactly what a plain model of pg_lsn's input
//     accepts (1..8 hex digits, '/', 1..8 hex digits, nothing else) with
//     the model's value; written back by format_lsn() (at most
//     kLsnTextMax bytes, upper case, no leading zeros but a lone 0) it
//     parses to the same value, and is the input upper-cased with leading
//     zeros dropped;
//   - two accepted positions compare as their (high, low) pairs do;
//   - the fly-lsn value found in a Cookie header parses as above, and the
//     cookie lsn_cookie() sets is read back with its position;
//   - parse_decimal() agrees with a model (1..19 digits);
//   - record_end_lsn() moves a position back by 0, 24 or 40 bytes only,
//     to a page boundary when it moves it, and applied twice changes
//     nothing more.
#include "fuzz.hpp"

#include "core/lsn.hpp"
#include "core/replay.hpp"

#include <cstring>
#include <tuple>

using namespace fly::core;

namespace {

int hex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool model_half(std::string_view s, uint64_t &v)
{
    if (s.empty() || s.size() > 8) {
        return false;
    }
    v = 0;
    for (char c : s) {
        if (hex(c) < 0) {
            return false;
        }
        v = v * 16 + static_cast<uint64_t>(hex(c));
    }
    return true;
}

bool model_lsn(std::string_view s, uint64_t &hi, uint64_t &lo)
{
    size_t slash = s.find('/');
    return slash != std::string_view::npos && model_half(s.substr(0, slash), hi)
           && model_half(s.substr(slash + 1), lo);
}

// upper case, leading zeros of each half dropped (but one)
std::string canonical(std::string_view s)
{
    size_t slash = s.find('/');
    auto half = [](std::string_view h) {
        std::string out;
        for (char c : h) {
            out.push_back(c >= 'a' && c <= 'f' ? static_cast<char>(c - 'a' + 'A') : c);
        }
        size_t nz = out.find_first_not_of('0');
        return nz == std::string::npos ? std::string("0") : out.substr(nz);
    };
    return half(s.substr(0, slash)) + "/" + half(s.substr(slash + 1));
}

void check_lsn(std::string_view s, uint64_t *out, bool *ok)
{
    uint64_t v = 0x5a5a5a5a5a5a5a5aull, hi = 0, lo = 0;
    bool got = parse_lsn(s, v);
    bool want = model_lsn(s, hi, lo);
    FUZZ_CHECK(got == want);
    *ok = got;
    if (!got) {
        FUZZ_CHECK(v == 0x5a5a5a5a5a5a5a5aull);   // untouched
        return;
    }
    FUZZ_CHECK(v == ((hi << 32) | lo));
    char buf[kLsnTextMax];
    size_t n = format_lsn(v, buf);
    FUZZ_CHECK(n >= 3 && n <= kLsnTextMax);
    std::string_view text(buf, n);
    FUZZ_CHECK(text == canonical(s));
    FUZZ_CHECK(lsn_text(v) == text);
    uint64_t back = 0;
    FUZZ_CHECK(parse_lsn(text, back) && back == v);
    *out = v;
}

void check_cookie(std::string_view header)
{
    std::string_view value;
    if (find_cookie(header, kLsnCookie, value)) {
        uint64_t v = 0;
        bool ok = false;
        check_lsn(value, &v, &ok);
        if (ok) {
            std::string set = lsn_cookie(v);
            std::string pair = set.substr(0, set.find(';'));
            std::string_view back;
            uint64_t b = 0;
            FUZZ_CHECK(find_cookie("x=1; " + pair, kLsnCookie, back) && parse_lsn(back, b) && b == v);
        }
    }
}

void check_decimal(std::string_view s)
{
    uint64_t v = 7;
    bool ok = parse_decimal(s, v);
    bool model = !s.empty() && s.size() <= 19 && fuzz::all_digits(s);
    FUZZ_CHECK(ok == model);
    if (ok) {
        uint64_t m = 0;
        for (char c : s) {
            m = m * 10 + static_cast<uint64_t>(c - '0');
        }
        FUZZ_CHECK(v == m);
    }
}

void check_record_end(uint64_t pos, uint64_t block, uint64_t segment)
{
    uint64_t r = record_end_lsn(pos, block, segment);
    FUZZ_CHECK(r <= pos);
    uint64_t d = pos - r;
    FUZZ_CHECK(d == 0 || d == 24 || d == 40);
    if (d != 0) {
        FUZZ_CHECK(block != 0 && r % block == 0);
        FUZZ_CHECK(d == 24 || (segment != 0 && r % segment == 0));
    }
    FUZZ_CHECK(record_end_lsn(r, block, segment) == r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t tail = size >= 16 ? 16 : 0;
    std::vector<std::string_view> l = fuzz::split_lines(fuzz::as_view(data, size - tail), 3);
    uint64_t a = 0, b = 0;
    bool ok_a = false, ok_b = false;
    check_lsn(l[0], &a, &ok_a);
    check_cookie(l[1]);
    std::string_view cv;
    if (find_cookie(l[1], kLsnCookie, cv)) {
        check_lsn(cv, &b, &ok_b);
    }
    if (ok_a && ok_b) {
        auto pair = [](uint64_t v) { return std::make_tuple(v >> 32, v & 0xffffffffu); };
        FUZZ_CHECK((a < b) == (pair(a) < pair(b)));
        FUZZ_CHECK((a == b) == (pair(a) == pair(b)));
    }
    check_decimal(l[2]);

    uint64_t block = 8192, segment = 16u << 20;
    if (tail) {
        std::memcpy(&block, data + size - 16, 8);
        std::memcpy(&segment, data + size - 8, 8);
        // also sizes PostgreSQL can have: powers of two from the bytes
        check_record_end(block, uint64_t{1} << (10 + segment % 6), uint64_t{1} << (20 + block % 11));
    }
    for (uint64_t pos : {a, b, block, segment}) {
        check_record_end(pos, block, segment);
        check_record_end(pos, 8192, 16u << 20);
    }
    return 0;
}
