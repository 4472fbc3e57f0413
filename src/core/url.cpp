// fly-edge pure core: configuration value templates and Redis URLs.
#include "core/url.hpp"
#include "core/http_text.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace fly::core {

namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

bool is_env_name(std::string_view name)
{
    if (name.empty() || !(is_alpha(name[0]) || name[0] == '_')) {
        return false;
    }
    for (char c : name) {
        if (!(is_alpha(c) || is_digit(c) || c == '_')) {
            return false;
        }
    }
    return true;
}

std::string quoted(std::string_view s)
{
    std::string q = "\"";
    q.append(s);
    q += '"';
    return q;
}

// Parses one or more decimal digits into a value no greater than `max`.
bool parse_uint(std::string_view s, uint64_t max, uint64_t &out)
{
    if (s.empty()) {
        return false;
    }
    uint64_t v = 0;
    for (char c : s) {
        if (!is_digit(c)) {
            return false;
        }
        v = v * 10 + static_cast<uint64_t>(c - '0');
        if (v > max) {
            return false;
        }
    }
    out = v;
    return true;
}

// Dotted-quad IPv4 (RFC 3986 3.2.2 dec-octet): four parts 0..255 without
// leading zeros (which some resolvers would read as octal).
bool valid_ipv4(std::string_view s)
{
    int parts = 0;
    size_t i = 0;
    while (true) {
        size_t start = i;
        while (i < s.size() && is_digit(s[i])) {
            i++;
        }
        std::string_view part = s.substr(start, i - start);
        uint64_t v = 0;
        if (part.size() > 3 || (part.size() > 1 && part[0] == '0') ||
            !parse_uint(part, 255, v)) {
            return false;
        }
        parts++;
        if (i == s.size()) {
            break;
        }
        if (s[i] != '.' || parts == 4) {
            return false;
        }
        i++;
    }
    return parts == 4;
}

bool valid_ipv6(std::string_view s)
{
    // inet_pton() reads a C string: an embedded NUL would hide what follows
    if (s.empty() || s.size() > 45 || s.find('\0') != std::string_view::npos) {
        return false;
    }
    char buf[46];
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = '\0';
    unsigned char addr[16];
    return inet_pton(AF_INET6, buf, addr) == 1;
}

// A DNS name (RFC 1123 2.1, plus '_' which private DNS setups use):
// labels of 1..63 letters, digits, '-' and '_', not starting or ending
// with '-', separated by single dots; at most 253 bytes, one trailing dot
// allowed.  A name made only of digits and dots must be an IPv4 literal.
bool valid_host_name(std::string_view s)
{
    if (!s.empty() && s.back() == '.') {
        s.remove_suffix(1);
    }
    if (s.empty() || s.size() > 253) {
        return false;
    }
    bool numeric = true;
    size_t label = 0;
    for (size_t i = 0; i <= s.size(); i++) {
        if (i == s.size() || s[i] == '.') {
            if (label == 0 || label > 63 || s[i - 1] == '-') {
                return false;
            }
            label = 0;
            continue;
        }
        char c = s[i];
        if (!(is_alpha(c) || is_digit(c) || c == '-' || c == '_')) {
            return false;
        }
        if (label == 0 && c == '-') {
            return false;
        }
        if (!is_digit(c)) {
            numeric = false;
        }
        label++;
    }
    return !numeric || valid_ipv4(s);
}

bool lower_equals(std::string_view a, std::string_view lower)
{
    if (a.size() != lower.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); i++) {
        char c = a[i];
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
        if (c != lower[i]) {
            return false;
        }
    }
    return true;
}

bool fail(std::string &err, std::string msg)
{
    err = std::move(msg);
    return false;
}

// user[:password] (RFC 3986 3.2.1 userinfo), both percent-decoded.
bool parse_userinfo(std::string_view info, RedisUrl &out, std::string &err)
{
    size_t colon = info.find(':');
    std::string_view user = info.substr(0, colon);
    if (!percent_decode(user, out.user)) {
        return fail(err, "bad percent-escape in the user of the redis URL");
    }
    if (colon != std::string_view::npos &&
        !percent_decode(info.substr(colon + 1), out.password)) {
        return fail(err, "bad percent-escape in the password of the redis URL "
                         "(write a literal '%' as %25)");
    }
    return true;
}

// host[:port][/db]
bool parse_hostport(std::string_view s, RedisUrl &out, std::string &err)
{
    size_t pos;
    if (!s.empty() && s[0] == '[') {
        size_t close = s.find(']');
        if (close == std::string_view::npos) {
            return fail(err, "unterminated '[' in the redis URL host");
        }
        std::string_view host = s.substr(1, close - 1);
        if (!valid_ipv6(host)) {
            return fail(err, "invalid IPv6 address " + quoted(host) +
                             " in the redis URL");
        }
        out.host.assign(host);
        out.ipv6 = true;
        pos = close + 1;
    } else {
        pos = s.find_first_of(":/");
        if (pos == std::string_view::npos) {
            pos = s.size();
        }
        std::string_view host = s.substr(0, pos);
        if (host.empty()) {
            if (s.find(':') != s.rfind(':')) {
                return fail(err, "an IPv6 address in a redis URL must be "
                                 "written in brackets: [addr]");
            }
            return fail(err, "empty host in the redis URL");
        }
        if (!valid_host_name(host)) {
            return fail(err, "invalid host " + quoted(host) + " in the redis URL");
        }
        out.host.assign(host);
    }

    if (pos < s.size() && s[pos] == ':') {
        size_t end = s.find('/', pos + 1);
        if (end == std::string_view::npos) {
            end = s.size();
        }
        std::string_view port = s.substr(pos + 1, end - pos - 1);
        uint64_t v = 0;
        if (!parse_uint(port, 65535, v) || v == 0) {
            return fail(err, "invalid port " + quoted(port) +
                             " in the redis URL (1..65535)");
        }
        out.port = static_cast<uint16_t>(v);
        pos = end;
    }

    if (pos < s.size() && s[pos] == '/') {
        std::string_view db = s.substr(pos + 1);
        uint64_t v = 0;
        // "redis://host/" means database 0, as redis-cli reads it.
        if (!db.empty() && !parse_uint(db, 0x7fffffff, v)) {
            return fail(err, "invalid database " + quoted(db) +
                             " in the redis URL (0..2147483647)");
        }
        out.db = static_cast<int>(v);
        pos = s.size();
    }

    if (pos != s.size()) {
        return fail(err, "unexpected " + quoted(s.substr(pos)) +
                         " after the host of the redis URL");
    }
    return true;
}

}  // namespace

bool percent_decode(std::string_view in, std::string &out, bool plus_is_space)
{
    out.clear();
    for (size_t i = 0; i < in.size(); i++) {
        if (in[i] == '+' && plus_is_space) {
            out += ' ';
            continue;
        }
        if (in[i] != '%') {
            out += in[i];
            continue;
        }
        if (in.size() - i < 3) {
            return false;
        }
        int hi = hex_value(in[i + 1]);
        int lo = hex_value(in[i + 2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            return false;
        }
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return true;
}


bool expand_env(std::string_view in, const EnvLookup &env, std::string &out,
                std::string &err)
{
    out.clear();
    size_t i = 0;
    while (i < in.size()) {
        if (in[i] != '$' || i + 1 >= in.size() || in[i + 1] != '{') {
            out += in[i++];
            continue;
        }
        size_t close = in.find('}', i + 2);
        if (close == std::string_view::npos) {
            // the value is not quoted: it may hold a literal password
            return fail(err, "unterminated \"${\" at offset " + std::to_string(i));
        }
        std::string name(in.substr(i + 2, close - i - 2));
        if (!is_env_name(name)) {
            return fail(err, "invalid variable name " + quoted("${" + name + "}") +
                             " (expected ${NAME}, NAME of [A-Za-z_][A-Za-z0-9_]*)");
        }
        const char *value = env(name);
        if (value == nullptr) {
            return fail(err, "environment variable " + quoted(name) + " is not set");
        }
        out += value;
        i = close + 1;
    }
    return true;
}

std::string expand_region(std::string_view in, std::string_view region)
{
    constexpr std::string_view placeholder = "{region}";
    std::string out;
    size_t i = 0;
    while (true) {
        size_t at = in.find(placeholder, i);
        if (at == std::string_view::npos) {
            out.append(in.substr(i));
            return out;
        }
        out.append(in.substr(i, at - i));
        out.append(region);
        i = at + placeholder.size();
    }
}

bool valid_region(std::string_view name)
{
    if (name.empty() || name.size() > 32) {
        return false;
    }
    for (char c : name) {
        if (!((c >= 'a' && c <= 'z') || is_digit(c) || c == '-')) {
            return false;
        }
    }
    return true;
}

bool parse_redis_url(std::string_view url, RedisUrl &out, std::string &err)
{
    out = RedisUrl{};
    size_t sep = url.find("://");
    if (sep == std::string_view::npos) {
        // the URL is not quoted: it may hold a password
        return fail(err, "the redis URL lacks its scheme "
                         "(redis://[user:password@]host[:port][/db])");
    }
    std::string_view scheme = url.substr(0, sep);
    if (lower_equals(scheme, "rediss")) {
        return fail(err, "rediss:// (TLS) is not supported; use redis://");
    }
    if (!lower_equals(scheme, "redis")) {
        // name the scheme only when it looks like one (not like a password)
        bool plain = scheme.size() <= 16;
        for (char c : scheme) {
            plain = plain && (is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.');
        }
        return fail(err, "unsupported scheme " + (plain ? quoted(scheme) + " " : "") +
                         "in the redis URL (expected redis://)");
    }
    std::string_view rest = url.substr(sep + 3);

    // The user information ends at the LAST '@': a password pasted from an
    // environment variable may hold '@', '/', ':', '?' or '#' unescaped,
    // while the host, port and database never hold '@'.
    size_t at = rest.rfind('@');
    if (at != std::string_view::npos) {
        if (!parse_userinfo(rest.substr(0, at), out, err)) {
            return false;
        }
        rest = rest.substr(at + 1);
    }
    return parse_hostport(rest, out, err);
}

}  // namespace fly::core
