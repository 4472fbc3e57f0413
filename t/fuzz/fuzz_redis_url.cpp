// libFuzzer target: parse_redis_url() (fly_redis / fly_redis_primary,
// after ${VAR} and {region} expansion: the password comes from the
// environment and may hold anything).
//
// Properties:
//   - a refused URL comes with a message;
//   - the message never holds the user information (what comes before the
//     last '@', where the password is) nor, when the URL has no "://", any
//     of it: checked with a marker byte 0x01, which no message template
//     holds, whenever the input has it only in such a part;
//   - an accepted URL has a host (no '@', '/', brackets; ':' only in an
//     IPv6 literal), port 1..65535, database 0..2^31-1;
//   - written again from its fields (user and password percent-encoded) it
//     parses to the same fields, also with the scheme in capitals;
//   - the output is reset: parsing into a used RedisUrl gives the same.
#include "fuzz.hpp"

#include "core/url.hpp"

using namespace fly::core;

namespace {

bool same(const RedisUrl &a, const RedisUrl &b)
{
    return a.host == b.host && a.port == b.port && a.user == b.user &&
           a.password == b.password && a.db == b.db && a.ipv6 == b.ipv6;
}

// Percent-encodes all but the unreserved bytes (RFC 3986 2.3), and NUL:
// the parser refuses %00 but takes a raw NUL as it is (a NUL cannot come
// from an environment variable, only from the configuration file).
std::string pct(std::string_view s)
{
    static const char kHex[] = "0123456789ABCDEF";
    std::string o;
    for (unsigned char c : s) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~' || c == 0) {
            o += static_cast<char>(c);
        } else {
            o += '%';
            o += kHex[c >> 4];
            o += kHex[c & 15];
        }
    }
    return o;
}

std::string unparse(const RedisUrl &u, std::string_view scheme)
{
    std::string s(scheme);
    s += "://";
    if (!u.user.empty() || !u.password.empty()) {
        s += pct(u.user) + ":" + pct(u.password) + "@";
    }
    s += u.ipv6 ? "[" + u.host + "]" : u.host;
    s += ":" + std::to_string(u.port) + "/" + std::to_string(u.db);
    return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::string_view in = fuzz::as_view(data, size);
    RedisUrl u;
    std::string err;
    bool ok = parse_redis_url(in, u, err);

    RedisUrl used;
    used.host = "old";
    used.port = 1;
    used.user = used.password = "old";
    used.db = 7;
    used.ipv6 = true;
    std::string err2;
    FUZZ_CHECK(parse_redis_url(in, used, err2) == ok);
    if (!ok) {
        FUZZ_CHECK(!err.empty() && err == err2);
        size_t sep = in.find("://");
        std::string_view secret, rest;
        if (sep == std::string_view::npos) {
            secret = in;
        } else {
            std::string_view after = in.substr(sep + 3);
            size_t at = after.rfind('@');
            if (at != std::string_view::npos) {
                secret = after.substr(0, at);
                rest = after.substr(at + 1);
            }
            // the scheme is named only when it looks like one
            if (in.substr(0, sep).find('\x01') != std::string_view::npos &&
                rest.find('\x01') == std::string_view::npos) {
                FUZZ_CHECK(err.find('\x01') == std::string::npos);
            }
        }
        if (secret.find('\x01') != std::string_view::npos &&
            rest.find('\x01') == std::string_view::npos) {
            FUZZ_CHECK(err.find('\x01') == std::string::npos);
        }
        return 0;
    }
    FUZZ_CHECK(same(u, used));

    FUZZ_CHECK(!u.host.empty());
    FUZZ_CHECK(u.host.find_first_of("@/[]") == std::string::npos);
    FUZZ_CHECK(u.ipv6 || u.host.find(':') == std::string::npos);
    FUZZ_CHECK(u.port >= 1);
    FUZZ_CHECK(u.db >= 0);

    for (std::string_view scheme : {"redis", "REDIS"}) {
        RedisUrl back;
        std::string again = unparse(u, scheme), e;
        FUZZ_CHECK(parse_redis_url(again, back, e));
        FUZZ_CHECK(same(back, u));
    }
    return 0;
}
