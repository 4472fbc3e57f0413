// Unit tests: fly_postgres templates ({region}, the 5433 -> 5432 rule of
// the primary's default), the one endpoint a connection goes to, and
// passwords kept out of libpq's messages.
#include "unit.hpp"

#include "core/conninfo.hpp"
#include "core/url.hpp"

using namespace fly::core;

namespace {

ConnParams params(std::initializer_list<ConnParam> l) { return ConnParams(l); }

void test_region_template(void **)
{
    // {region} is put in before libpq parses the conninfo, in either form
    std::string_view kv = "host={region}.my-db.internal port=5433 dbname=app";
    assert_sv_equal(expand_region(kv, "ord"), "host=ord.my-db.internal port=5433 dbname=app");
    assert_sv_equal(expand_region(kv, "scl"), "host=scl.my-db.internal port=5433 dbname=app");
    assert_sv_equal(expand_region("postgres://edge@{region}.db.internal:5433/app", "atl"),
                    "postgres://edge@atl.db.internal:5433/app");
}

void test_leader_port(void **)
{
    ConnParams p = params({{"host", "scl.db.internal"}, {"port", "5433"}, {"dbname", "app"}});
    assert_true(to_leader_port(p));
    assert_sv_equal(*conn_param(p, "port"), "5432");
    assert_sv_equal(*conn_param(p, "host"), "scl.db.internal");
    assert_sv_equal(*conn_param(p, "dbname"), "app");

    p = params({{"host", "x"}, {"port", "6543"}});     // another port: as written
    assert_false(to_leader_port(p));
    assert_sv_equal(*conn_param(p, "port"), "6543");

    p = params({{"host", "x"}, {"port", "5432"}});
    assert_false(to_leader_port(p));
    assert_sv_equal(*conn_param(p, "port"), "5432");

    p = params({{"host", "x"}});                        // no port (libpq's 5432)
    assert_false(to_leader_port(p));
    assert_null(conn_param(p, "port"));

    p = params({{"host", "a,b"}, {"port", "5433,5433,6000"}});   // every element
    assert_true(to_leader_port(p));
    assert_sv_equal(*conn_param(p, "port"), "5432,5432,6000");

    p = params({{"host", "x"}, {"port", "54330"}});
    assert_false(to_leader_port(p));
    p = params({{"dbname", "5433"}, {"application_name", "5433"}});   // ports only
    assert_false(to_leader_port(p));
    assert_sv_equal(*conn_param(p, "dbname"), "5433");
}

void test_params(void **)
{
    ConnParams p = params({{"host", "a"}, {"host", "b"}});
    assert_sv_equal(*conn_param(p, "host"), "b");     // the last wins, as in libpq
    set_conn_param(p, "port", "1");
    assert_sv_equal(*conn_param(p, "port"), "1");
    set_conn_param(p, "port", "2");
    assert_sv_equal(*conn_param(p, "port"), "2");
    assert_int_equal(p.size(), 3);
}

PgEndpoint endpoint_ok(const ConnParams &p)
{
    PgEndpoint e;
    std::string err;
    bool ok = pg_endpoint(p, e, err);
    if (!ok) {
        print_error("pg_endpoint failed: %s\n", err.c_str());
    }
    assert_true(ok);
    return e;
}

void endpoint_fails(const ConnParams &p, std::string_view needle)
{
    PgEndpoint e;
    std::string err;
    assert_false(pg_endpoint(p, e, err));
    if (err.find(needle) == std::string::npos) {
        print_error("error \"%s\" lacks \"%s\"\n", err.c_str(), std::string(needle).c_str());
        fail();
    }
}

void test_endpoint(void **)
{
    PgEndpoint e = endpoint_ok(params({{"host", "ord.db.internal"}, {"port", "5433"}}));
    assert_sv_equal(e.host, "ord.db.internal");
    assert_true(e.hostaddr.empty());
    assert_int_equal(e.port, 5433);

    e = endpoint_ok(params({{"host", "127.0.0.1"}}));
    assert_int_equal(e.port, 5432);                     // libpq's default

    e = endpoint_ok(params({{"host", "db"}, {"hostaddr", "fdaa::3"}, {"port", "1"}}));
    assert_sv_equal(e.host, "db");
    assert_sv_equal(e.hostaddr, "fdaa::3");
    assert_int_equal(e.port, 1);

    e = endpoint_ok(params({{"hostaddr", "10.0.0.1"}, {"port", "65535"}}));
    assert_sv_equal(e.host, "10.0.0.1");
    assert_int_equal(e.port, 65535);

    endpoint_fails(params({{"dbname", "x"}}), "no host");
    endpoint_fails(params({{"host", ""}}), "no host");
    endpoint_fails(params({{"host", "/var/run/postgresql"}}), "Unix-domain");
    endpoint_fails(params({{"host", "@abstract"}}), "Unix-domain");
    endpoint_fails(params({{"host", "a,b"}}), "list of hosts");
    endpoint_fails(params({{"host", "a"}, {"hostaddr", "1.1.1.1,2.2.2.2"}}), "list of host addresses");
    endpoint_fails(params({{"host", "a"}, {"port", "5432,5433"}}), "list of ports");
    endpoint_fails(params({{"host", "a"}, {"port", "0"}}), "invalid port");
    endpoint_fails(params({{"host", "a"}, {"port", "65536"}}), "invalid port");
    endpoint_fails(params({{"host", "a"}, {"port", "54x"}}), "invalid port");
    endpoint_fails(params({{"host", "a"}, {"port", "123456"}}), "invalid port");
}

void redacts(std::string_view message, std::string_view conninfo,
             std::string_view secret, std::string_view want)
{
    std::string out = redact_conninfo(message, conninfo);
    if (!secret.empty() && out.find(secret) != std::string::npos) {
        print_error("\"%s\" still holds \"%s\"\n", out.c_str(), std::string(secret).c_str());
        fail();
    }
    assert_sv_equal(out, want);
}

void test_redact(void **)
{
    // libpq quotes the whole URI in some of its messages
    std::string_view uri = "postgres://edge:s3cr%40t@[::1/app";
    redacts("end of string reached when looking for matching \"]\" in IPv6 host "
            "address in URI: \"postgres://edge:s3cr%40t@[::1/app\"", uri, "s3cr",
            "end of string reached when looking for matching \"]\" in IPv6 host "
            "address in URI: \"postgres://edge:***@[::1/app\"");
    // ... or only the decoded part
    redacts("password is \"s3cr@t\"", uri, "s3cr", "password is \"***\"");
    // in the query
    redacts("invalid URI query parameter: \"password=hunter2&x\"",
            "postgresql://h/db?password=hunter2&x", "hunter2",
            "invalid URI query parameter: \"password=***&x\"");
    // key = value forms, plain and quoted
    redacts("missing \"=\" after \"pw\" in connection info string",
            "host=a password=pw dbname", "", "missing \"=\" after \"***\" in connection info string");
    redacts("x 'it''s' it's", "host=a password = 'it\\'s' x", "it's", "x 'it''s' ***");
    redacts("value: secret here", "password=secret", "secret", "value: *** here");
    // no password: the message as it is
    redacts("invalid connection option \"hots\"", "hots=a port=1", "",
            "invalid connection option \"hots\"");
    redacts("a message", "postgres://user@host/db", "", "a message");
    // a password that holds another one is hidden whole
    redacts("abcdef", "host=x password=abcdef password=abc", "abc", "***");
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_region_template),
        cmocka_unit_test(test_leader_port),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_endpoint),
        cmocka_unit_test(test_redact),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
