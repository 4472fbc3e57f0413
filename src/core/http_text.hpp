// fly-edge pure core: the small pieces of HTTP syntax (RFC 9110 5.6) that
// the parsers share.  No nginx header here.
#pragma once

#include <cstddef>
#include <string_view>

namespace fly::core {

constexpr bool is_ows(char c) { return c == ' ' || c == '\t'; }

constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The value of a hexadecimal digit (either case), -1 for any other byte.
constexpr int hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

constexpr char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// tchar (RFC 9110 5.6.2)
constexpr bool is_tchar(char ch)
{
    unsigned char c = static_cast<unsigned char>(ch);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9'))
    {
        return true;
    }
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
    case '+': case '-': case '.': case '^': case '_': case '`': case '|':
    case '~':
        return true;
    default:
        return false;
    }
}

// True when `s` is not empty and every character of it satisfies `pred`.
template <typename Pred>
constexpr bool all_chars(std::string_view s, Pred pred)
{
    if (s.empty()) {
        return false;
    }
    for (char c : s) {
        if (!pred(c)) {
            return false;
        }
    }
    return true;
}

// token (RFC 9110 5.6.2): 1*tchar, e.g. a header name or a method.
constexpr bool is_token(std::string_view s) { return all_chars(s, is_tchar); }

// Case-insensitive ASCII comparison.
constexpr bool iequals(std::string_view a, std::string_view b)
{
    if (a.size() != b.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); i++) {
        // (names are mostly spelled as compared: equal bytes first)
        if (a[i] != b[i] && ascii_lower(a[i]) != ascii_lower(b[i])) {
            return false;
        }
    }
    return true;
}

// Without leading and trailing optional white space.
constexpr std::string_view trim_ows(std::string_view s)
{
    while (!s.empty() && is_ows(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is_ows(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

// Calls f(element) for each element of a comma-separated list (RFC 9110
// 5.6.1), trimmed of white space; empty elements are skipped.  Stops and
// returns false as soon as f does.  (Not for lists whose elements may
// hold a quoted comma.)
template <typename F>
bool for_each_element(std::string_view list, F &&f)
{
    size_t i = 0;
    while (i <= list.size()) {
        size_t comma = list.find(',', i);
        if (comma == std::string_view::npos) {
            comma = list.size();
        }
        std::string_view e = trim_ows(list.substr(i, comma - i));
        if (!e.empty() && !f(e)) {
            return false;
        }
        i = comma + 1;
    }
    return true;
}

}  // namespace fly::core
