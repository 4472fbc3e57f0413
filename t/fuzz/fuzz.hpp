// Shared helpers of the libFuzzer targets in t/fuzz/ (see t/fuzz/README.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "core/http_text.hpp"

// A property that does not hold is a crash: libFuzzer saves the input.
#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__,   \
                         __LINE__, #cond);                                    \
            std::abort();                                                     \
        }                                                                     \
    } while (0)

namespace fuzz {

inline std::string_view as_view(const uint8_t *data, size_t size)
{
    return std::string_view(reinterpret_cast<const char *>(data), size);
}

// Several inputs in one: fields separated by '\n'.  Used by the targets
// whose fields are HTTP header values, which never hold a raw LF, so that
// the seed files stay readable.  Missing fields are empty.
inline std::vector<std::string_view> split_lines(std::string_view s, size_t max)
{
    std::vector<std::string_view> out;
    while (out.size() + 1 < max) {
        size_t nl = s.find('\n');
        if (nl == std::string_view::npos) {
            break;
        }
        out.push_back(s.substr(0, nl));
        s.remove_prefix(nl + 1);
    }
    out.push_back(s);
    while (out.size() < max) {
        out.push_back(std::string_view());
    }
    return out;
}

// True when `part` is a view into `whole` (not a copy).
inline bool inside(std::string_view part, std::string_view whole)
{
    if (part.empty()) {
        return true;
    }
    const char *b = whole.data(), *e = whole.data() + whole.size();
    return part.data() >= b && part.data() + part.size() <= e;
}

inline bool all_digits(std::string_view s)
{
    if (s.empty()) {
        return false;
    }
    for (char c : s) {
        if (c < '0' || c > '9') {
            return false;
        }
    }
    return true;
}

}  // namespace fuzz

namespace fuzz {

// A decimal integer as text, for the targets whose inputs are readable:
// optional '-', then digits; wraps modulo 2^64 (so that every 64-bit
// value can be written); anything after the digits is ignored; no digit
// at all gives 0.
inline int64_t parse_num(std::string_view s)
{
    bool neg = !s.empty() && s[0] == '-';
    if (neg) {
        s.remove_prefix(1);
    }
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') {
            break;
        }
        v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    if (neg) {
        v = ~v + 1;
    }
    return static_cast<int64_t>(v);
}

// The words of a line separated by single spaces (empty words kept).
inline std::vector<std::string_view> words(std::string_view s)
{
    std::vector<std::string_view> out;
    while (true) {
        size_t sp = s.find(' ');
        out.push_back(s.substr(0, sp));
        if (sp == std::string_view::npos) {
            return out;
        }
        s.remove_prefix(sp + 1);
    }
}

}  // namespace fuzz

namespace fuzz {

// ASCII upper- or lower-cased copy.
inline std::string recase(std::string_view s, bool up)
{
    std::string r(s);
    for (char &c : r) {
        if (up && c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
        if (!up && c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return r;
}

// The elements of a comma-separated list (RFC 9110 5.6.1), trimmed of
// white space, empty ones dropped.
inline std::vector<std::string_view> list_elements(std::string_view list)
{
    std::vector<std::string_view> out;
    while (true) {
        size_t comma = list.find(',');
        std::string_view e = fly::core::trim_ows(list.substr(0, comma));
        if (!e.empty()) out.push_back(e);
        if (comma == std::string_view::npos) return out;
        list.remove_prefix(comma + 1);
    }
}

}  // namespace fuzz
