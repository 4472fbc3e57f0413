// Unit tests: ${VAR} and {region} expansion, region names, Redis URLs.
#include "unit.hpp"

#include <map>

#include "core/url.hpp"

using namespace fly::core;

namespace {

const std::map<std::string, std::string> kEnv = {
    {"REDIS_PASSWORD", "s3cret"},
    {"EMPTY", ""},
    {"_X1", "one"},
    {"NESTED", "${REDIS_PASSWORD}"},
};

const char *fake_env(const std::string &name)
{
    auto it = kEnv.find(name);
    return it == kEnv.end() ? nullptr : it->second.c_str();
}

std::string expand_ok(std::string_view in)
{
    std::string out, err;
    bool ok = expand_env(in, fake_env, out, err);
    if (!ok) {
        print_error("expand_env(%s) failed: %s\n", std::string(in).c_str(), err.c_str());
    }
    assert_true(ok);
    return out;
}

void expand_fails(std::string_view in, std::string_view needle)
{
    std::string out, err;
    assert_false(expand_env(in, fake_env, out, err));
    if (err.find(needle) == std::string::npos) {
        print_error("error for %s: \"%s\" lacks \"%s\"\n", std::string(in).c_str(),
                    err.c_str(), std::string(needle).c_str());
        fail();
    }
}

RedisUrl url_ok(std::string_view in)
{
    RedisUrl u;
    std::string err;
    bool ok = parse_redis_url(in, u, err);
    if (!ok) {
        print_error("parse_redis_url(%s) failed: %s\n", std::string(in).c_str(), err.c_str());
    }
    assert_true(ok);
    return u;
}

void url_fails(std::string_view in)
{
    RedisUrl u;
    std::string err;
    if (parse_redis_url(in, u, err)) {
        print_error("parse_redis_url(%s) accepted it\n", std::string(in).c_str());
        fail();
    }
    assert_false(err.empty());
}

void test_expand_env(void **)
{
    assert_sv_equal(expand_ok(""), "");
    assert_sv_equal(expand_ok("plain"), "plain");
    assert_sv_equal(expand_ok("redis://x:${REDIS_PASSWORD}@h"), "redis://x:s3cret@h");
    assert_sv_equal(expand_ok("${REDIS_PASSWORD}${_X1}"), "s3cretone");
    assert_sv_equal(expand_ok("a${EMPTY}b"), "ab");
    // '$' not followed by '{' is kept
    assert_sv_equal(expand_ok("$"), "$");
    assert_sv_equal(expand_ok("a$b$"), "a$b$");
    assert_sv_equal(expand_ok("$$${_X1}"), "$$one");
    assert_sv_equal(expand_ok("{region}"), "{region}");
    // one pass: a value holding ${...} is not expanded again
    assert_sv_equal(expand_ok("${NESTED}"), "${REDIS_PASSWORD}");
}

void test_expand_env_errors(void **)
{
    expand_fails("${UNSET_VARIABLE}", "UNSET_VARIABLE");
    expand_fails("x${UNSET_VARIABLE}y", "not set");
    expand_fails("${", "unterminated");
    expand_fails("abc${REDIS_PASSWORD", "unterminated");
    expand_fails("${}", "invalid variable name");
    expand_fails("${1x}", "invalid variable name");
    expand_fails("${a b}", "invalid variable name");
    expand_fails("${a-b}", "invalid variable name");
    expand_fails("${REDIS_PASSWORD}${", "unterminated");
}

void test_expand_region(void **)
{
    assert_sv_equal(expand_region("", "fra"), "");
    assert_sv_equal(expand_region("no placeholder", "fra"), "no placeholder");
    assert_sv_equal(expand_region("{region}.redis.internal", "fra"), "fra.redis.internal");
    assert_sv_equal(expand_region("{region}-{region}", "ams"), "ams-ams");
    assert_sv_equal(expand_region("{region", "ams"), "{region");
    assert_sv_equal(expand_region("{{region}}", "ams"), "{ams}");
    assert_sv_equal(expand_region("a{region}b", ""), "ab");
}

void test_valid_region(void **)
{
    assert_true(valid_region("fra"));
    assert_true(valid_region("scl"));
    assert_true(valid_region("us-east-1"));
    assert_true(valid_region("a"));
    assert_true(valid_region(std::string(32, 'a')));
    assert_false(valid_region(""));
    assert_false(valid_region(std::string(33, 'a')));
    assert_false(valid_region("FRA"));
    assert_false(valid_region("fra "));
    assert_false(valid_region("fra.x"));
    assert_false(valid_region("fr_a"));
    assert_false(valid_region("{region}"));
}

void test_url_minimal(void **)
{
    RedisUrl u = url_ok("redis://localhost");
    assert_sv_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_true(u.user.empty());
    assert_true(u.password.empty());
    assert_false(u.ipv6);
    assert_false(u.needs_auth());
    assert_false(u.auth_user());

    u = url_ok("REDIS://Cache.Internal:6380/3");
    assert_sv_equal(u.host, "Cache.Internal");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 3);
}

void test_url_userinfo(void **)
{
    // the seed's placeholder user "x": password-only AUTH
    RedisUrl u = url_ok("redis://x:s3cret@fra.my-redis.internal:6379/0");
    assert_sv_equal(u.user, "x");
    assert_sv_equal(u.password, "s3cret");
    assert_sv_equal(u.host, "fra.my-redis.internal");
    assert_true(u.needs_auth());
    assert_false(u.auth_user());

    u = url_ok("redis://default:pw@h");
    assert_sv_equal(u.user, "default");
    assert_true(u.needs_auth());
    assert_false(u.auth_user());

    u = url_ok("redis://:pw@h");
    assert_true(u.user.empty());
    assert_sv_equal(u.password, "pw");
    assert_true(u.needs_auth());
    assert_false(u.auth_user());

    // a Redis 6 ACL user
    u = url_ok("redis://app:pw@h");
    assert_sv_equal(u.user, "app");
    assert_true(u.needs_auth());
    assert_true(u.auth_user());

    // user alone: no password, so no AUTH at all
    u = url_ok("redis://app@h");
    assert_sv_equal(u.user, "app");
    assert_true(u.password.empty());
    assert_false(u.needs_auth());

    u = url_ok("redis://app:@h");
    assert_sv_equal(u.user, "app");
    assert_false(u.needs_auth());

    u = url_ok("redis://@h");
    assert_true(u.user.empty());
    assert_true(u.password.empty());
    assert_sv_equal(u.host, "h");
}

void test_url_percent_and_special_passwords(void **)
{
    RedisUrl u = url_ok("redis://us%65r:p%40ss%3Aw%2fd%25@h");
    assert_sv_equal(u.user, "user");
    assert_sv_equal(u.password, "p@ss:w/d%");

    // unescaped specials in a password: the userinfo ends at the last '@'
    u = url_ok("redis://x:a@b/c:d?e#f@h.internal:7000/2");
    assert_sv_equal(u.password, "a@b/c:d?e#f");
    assert_sv_equal(u.host, "h.internal");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 2);

    // only the first ':' separates user and password
    u = url_ok("redis://u:p:q@h");
    assert_sv_equal(u.user, "u");
    assert_sv_equal(u.password, "p:q");

    url_fails("redis://x:100%@h");      // '%' not followed by two hex digits
    url_fails("redis://x:%4@h");
    url_fails("redis://x:%zz@h");
    url_fails("redis://x:%00@h");       // NUL
    url_fails("redis://%g0:pw@h");
}

void test_url_hosts(void **)
{
    RedisUrl u = url_ok("redis://10.0.0.1:6379");
    assert_sv_equal(u.host, "10.0.0.1");
    assert_false(u.ipv6);

    u = url_ok("redis://255.255.255.255");
    assert_sv_equal(u.host, "255.255.255.255");

    u = url_ok("redis://[::1]");
    assert_sv_equal(u.host, "::1");
    assert_true(u.ipv6);
    assert_int_equal(u.port, 6379);

    u = url_ok("redis://x:pw@[fdaa:0:1:a7b:1::2]:6380/1");
    assert_sv_equal(u.host, "fdaa:0:1:a7b:1::2");
    assert_true(u.ipv6);
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 1);

    u = url_ok("redis://[::ffff:10.0.0.1]");
    assert_sv_equal(u.host, "::ffff:10.0.0.1");

    u = url_ok("redis://my_redis.flycast");
    assert_sv_equal(u.host, "my_redis.flycast");

    u = url_ok("redis://host.example.");
    assert_sv_equal(u.host, "host.example.");

    u = url_ok("redis://1a.example");     // digits-first labels are fine
    u = url_ok("redis://" + std::string(63, 'a') + ".b");

    url_fails("redis://" + std::string(64, 'a') + ".b");
    url_fails("redis://10.0.0.256");
    url_fails("redis://10.0.0");
    url_fails("redis://10.0.0.1.2");
    url_fails("redis://010.0.0.1");
    url_fails("redis://10..0.1");
    url_fails("redis://-host");
    url_fails("redis://host-");
    url_fails("redis://a..b");
    url_fails("redis://.a");
    url_fails("redis://ho st");
    url_fails("redis://h%41st");
    url_fails("redis://[]");
    url_fails("redis://[::g]");
    url_fails("redis://[1.2.3.4]");
    url_fails("redis://[fe80::1%25eth0]");
    url_fails("redis://::1");             // IPv6 without brackets
}

void test_url_ports_and_db(void **)
{
    assert_int_equal(url_ok("redis://h:1").port, 1);
    assert_int_equal(url_ok("redis://h:65535").port, 65535);
    assert_int_equal(url_ok("redis://h/").db, 0);
    assert_int_equal(url_ok("redis://h/15").db, 15);
    assert_int_equal(url_ok("redis://h:6379/2147483647").db, 2147483647);

    url_fails("redis://h:0");
    url_fails("redis://h:65536");
    url_fails("redis://h:99999999999999999999999");
    url_fails("redis://h:abc");
    url_fails("redis://h:");
    url_fails("redis://h:-1");
    url_fails("redis://h:+80");
    url_fails("redis://h: 80");
    url_fails("redis://[::1]:0");
    url_fails("redis://[::1]:");
    url_fails("redis://h/-1");
    url_fails("redis://h/abc");
    url_fails("redis://h/2147483648");
    url_fails("redis://h/99999999999999999999999");
    url_fails("redis://h/1.5");
    url_fails("redis://h:6379/ 1");
}

void test_url_malformed(void **)
{
    url_fails("");
    url_fails("localhost:6379");          // missing scheme
    url_fails("//localhost");
    url_fails("redis:/localhost");
    url_fails("redis:localhost");
    url_fails("http://localhost");
    url_fails("rediss://localhost");       // TLS is not supported
    url_fails("://localhost");
    url_fails("redis://");                 // empty host
    url_fails("redis://:6379");
    url_fails("redis:///0");
    url_fails("redis://x:pw@");
    url_fails("redis://x:pw@:6379");
    url_fails("redis://[::1");             // unterminated bracket
    url_fails("redis://[::1:6379/0");
    url_fails("redis://[::1]x");           // trailing junk
    url_fails("redis://[::1]/0x");
    url_fails("redis://h:6379x");
    url_fails("redis://h/0/1");
    url_fails("redis://h/0?db=1");
    url_fails("redis://h?x");
    url_fails("redis://h#frag");
    url_fails("redis://h:6379:6380");
    url_fails(" redis://h");
    url_fails("redis://h ");
    url_fails(std::string_view("redis://h\0x", 11));
}

// nginx -t prints the message: it must not reveal the password
void test_url_errors_hide_password(void **)
{
    const char *urls[] = {
        "x:s3cret@h",
        "x:s3cret://@h",
        "redis:/x:s3cret@h",
        "redis://x:s3cret@h:bad",
        "redis://x:s3cret@h/db",
        "redis://x:s3cret@",
        "redis://x:s3cret@[::1",
        "redis://x:s3cret%@h",
        "rediss://x:s3cret@h",
    };
    for (const char *s : urls) {
        RedisUrl u;
        std::string err;
        assert_false(parse_redis_url(s, u, err));
        if (err.find("s3cret") != std::string::npos) {
            print_error("%s -> %s\n", s, err.c_str());
            fail();
        }
    }
}

void test_url_resets_output(void **)
{
    RedisUrl u;
    u.host = "old";
    u.port = 1;
    u.password = "old";
    u.db = 9;
    u.ipv6 = true;
    std::string err;
    assert_true(parse_redis_url("redis://new", u, err));
    assert_sv_equal(u.host, "new");
    assert_int_equal(u.port, 6379);
    assert_true(u.password.empty());
    assert_int_equal(u.db, 0);
    assert_false(u.ipv6);
}

// The two steps together, as the shell uses them.
void test_url_template(void **)
{
    std::string expanded = expand_ok("redis://x:${REDIS_PASSWORD}@{region}.my-redis.internal:6379/0");
    RedisUrl u = url_ok(expand_region(expanded, "ams"));
    assert_sv_equal(u.host, "ams.my-redis.internal");
    assert_sv_equal(u.password, "s3cret");
    assert_false(u.auth_user());
    // an unexpanded placeholder is not a host name
    url_fails(expanded);
}

// Found by t/fuzz (fuzz_redis_url, regress/redis_url/nul-in-ipv6): the
// IPv6 check stopped at an embedded NUL, so "[::<NUL>junk/]" was taken with
// the junk in the host.
void test_url_ipv6_embedded_nul(void **)
{
    using namespace std::string_literals;
    url_fails("redis://[::\0]"s);
    url_fails("redis://[::\0\x02junk/]:6379"s);
    url_fails("redis://[::1\0:2]/0"s);
    RedisUrl u = url_ok("redis://[::]");     // the part before the NUL is fine
    assert_sv_equal(u.host, "::");
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expand_env),
        cmocka_unit_test(test_expand_env_errors),
        cmocka_unit_test(test_expand_region),
        cmocka_unit_test(test_valid_region),
        cmocka_unit_test(test_url_minimal),
        cmocka_unit_test(test_url_userinfo),
        cmocka_unit_test(test_url_percent_and_special_passwords),
        cmocka_unit_test(test_url_hosts),
        cmocka_unit_test(test_url_ipv6_embedded_nul),
        cmocka_unit_test(test_url_ports_and_db),
        cmocka_unit_test(test_url_malformed),
        cmocka_unit_test(test_url_errors_hide_password),
        cmocka_unit_test(test_url_resets_output),
        cmocka_unit_test(test_url_template),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
