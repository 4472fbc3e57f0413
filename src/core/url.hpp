// fly-edge pure core: configuration value templates and Redis URLs.
// No nginx header here: this file is unit-tested with cmocka.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace fly::core {

// Looks an environment variable up; returns nullptr when it is unset.
using EnvLookup = std::function<const char *(const std::string &name)>;

// Replaces every ${NAME} in `in` by the variable's value.  NAME is
// [A-Za-z_][A-Za-z0-9_]*.  An unset variable or a malformed reference
// ("${", "${}", "${1x}") fails with a message in `err`.  A '$' not
// followed by '{' is kept as it is.
bool expand_env(std::string_view in, const EnvLookup &env, std::string &out,
                std::string &err);

// Replaces every "{region}" in `in` by `region`.
std::string expand_region(std::string_view in, std::string_view region);

// Decodes %XX escapes (RFC 3986 2.1), and '+' as a space when
// `plus_is_space` (query strings, HTML form encoding).  A '%' that is not
// followed by two hex digits, or an escape that decodes to NUL (Redis AUTH
// arguments are passed as C strings by some clients), is an error.
bool percent_decode(std::string_view in, std::string &out,
                    bool plus_is_space = false);

// A region name as Fly spells them: 1..32 of [a-z0-9-]... lower case.
bool valid_region(std::string_view name);

struct RedisUrl {
    std::string host;      // host name or IP literal, without [] for IPv6
    uint16_t port = 6379;
    std::string user;      // empty when the URL has none
    std::string password;  // empty when the URL has none
    int db = 0;
    bool ipv6 = false;     // host was written as [v6 literal]

    // AUTH wanted at all; with `auth_user()` the two-argument form
    // (Redis 6 ACL).  Users "", "x" and "default" authenticate with the
    // password alone (the seed deployment's placeholder user is "x").
    bool needs_auth() const { return !password.empty(); }
    bool auth_user() const {
        return !user.empty() && user != "x" && user != "default";
    }
};

// redis://[user:password@]host[:port][/db]   (also [user@] and [:password@])
// Percent-escapes in user and password are decoded.  Host is a name,
// an IPv4 literal or a bracketed IPv6 literal.  Port 1..65535, db 0..
// 2^31-1.  Anything else fails with a message in `err`.
bool parse_redis_url(std::string_view url, RedisUrl &out, std::string &err);

}  // namespace fly::core
