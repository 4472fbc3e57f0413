// fly-edge pure core: PostgreSQL connection settings (fly_postgres,
// fly_postgres_primary).  libpq's PQconninfoParse() turns a conninfo
// (key/value or URI form) into keyword/value pairs in the shell; here is
// what fly-edge does with them.  No nginx header, no libpq: unit-tested
// with cmocka.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fly::core {

struct ConnParam {
    std::string key;
    std::string value;
};
using ConnParams = std::vector<ConnParam>;

// The value of `key`, nullptr when absent (the last one wins, as in libpq).
const std::string *conn_param(const ConnParams &params, std::string_view key);
void set_conn_param(ConnParams &params, std::string_view key,
                    std::string_view value);

// Fly Postgres: port 5432 reaches the writable leader, 5433 the member
// itself.  The primary's default conninfo is the regional template with
// the primary region, and 5432 where its port says 5433 (every element of
// a port list).  Returns whether a port was changed.
bool to_leader_port(ConnParams &params);

// Where a connection goes: one TCP endpoint, looked up with nginx's
// resolver (libpq itself would resolve names with a blocking
// getaddrinfo()).  `host` is a name or an address, or `hostaddr` an
// address; one of each at most (no lists); no Unix-domain socket
// directory (a host starting with '/' or '@', or none at all); a port
// of 1..65535, 5432 by default.  False with a message in `err`.
struct PgEndpoint {
    std::string host;        // the name (or address) to look up
    std::string hostaddr;    // as given, else empty
    uint16_t port = 5432;
};
bool pg_endpoint(const ConnParams &params, PgEndpoint &out, std::string &err);

// libpq's messages about a malformed conninfo may quote it, or the part
// that failed, password included: every password written in `conninfo`
// (a URI's user information, a password= value, as written and
// percent-decoded) becomes "***" in `message`.
std::string redact_conninfo(std::string_view message,
                            std::string_view conninfo);

}  // namespace fly::core
