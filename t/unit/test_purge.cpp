// Unit tests: purge targets, the JSON answers, and the same-origin URIs a
// write invalidates.
#include "unit.hpp"

#include "core/cache_tags.hpp"
#include "core/purge.hpp"

using namespace fly::core;

namespace {

void test_url_purge(void **)
{
    PurgeTarget t = parse_purge_target("/wiki/X", "");
    assert_true(t.ok);
    assert_false(t.tag_purge);
    assert_false(t.soft);
    assert_false(t.args_changed);
    assert_string_equal(t.key_args.c_str(), "");

    t = parse_purge_target("/index.php", "title=X&action=history");
    assert_true(t.ok);
    assert_false(t.args_changed);
    assert_string_equal(t.key_args.c_str(), "title=X&action=history");

    // soft=1 asks for a soft purge and is not part of the purged URI
    t = parse_purge_target("/p", "a=1&soft=1&b=2");
    assert_true(t.ok && t.soft && t.args_changed);
    assert_string_equal(t.key_args.c_str(), "a=1&b=2");
    t = parse_purge_target("/p", "soft=1");
    assert_true(t.ok && t.soft);
    assert_string_equal(t.key_args.c_str(), "");
    t = parse_purge_target("/p", "soft=0&x");
    assert_true(t.ok && !t.soft && t.args_changed);
    assert_string_equal(t.key_args.c_str(), "x");
    // empty arguments are kept as they were
    t = parse_purge_target("/p", "&a&&b&");
    assert_false(t.args_changed);
    assert_string_equal(t.key_args.c_str(), "&a&&b&");
    t = parse_purge_target("/p", "soft=yes");
    assert_false(t.ok);
    assert_string_equal(t.error.c_str(), "soft must be 1 or 0");

    // tag= on another path is part of that URL
    t = parse_purge_target("/list", "tag=news");
    assert_true(t.ok);
    assert_false(t.tag_purge);
    assert_string_equal(t.key_args.c_str(), "tag=news");
}

void test_tag_purge(void **)
{
    PurgeTarget t = parse_purge_target("/", "tag=post-1");
    assert_true(t.ok && t.tag_purge && !t.soft);
    assert_int_equal(t.tags.size(), 1);
    assert_string_equal(t.tags[0].c_str(), "post-1");

    // several, as lists and as repeated arguments, percent-encoded, deduped
    t = parse_purge_target("/", "tag=a,b&tag=c%20a&tag=node%3A1+d&soft=1&other=x");
    assert_true(t.ok && t.tag_purge && t.soft);
    assert_int_equal(t.tags.size(), 5);
    const char *want[] = {"a", "b", "c", "node:1", "d"};
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(t.tags[i].c_str(), want[i]);
    }

    for (const char *bad : {"tag=", "tag", "tag=%zz", "tag=%4", "tag=a%01", "tag=%20%2C"}) {
        t = parse_purge_target("/", bad);
        assert_false(t.ok);
        assert_false(t.error.empty());
    }
    std::string many;
    for (size_t i = 0; i <= kMaxTags; i++) {
        many += "tag=t" + std::to_string(i) + "&";
    }
    t = parse_purge_target("/", many);
    assert_false(t.ok);
    assert_string_equal(t.error.c_str(), "too many tags");
}

void test_json(void **)
{
    assert_string_equal(purge_json_url("httpexample.com/wiki/X", false, 0).c_str(),
                        "{\"purged\":\"url\",\"mode\":\"hard\",\"key\":\"httpexample.com/wiki/X\"}\n");
    assert_string_equal(purge_json_url("k", true, 12).c_str(),
                        "{\"purged\":\"url\",\"mode\":\"soft\",\"key\":\"k\",\"epoch\":12}\n");
    assert_string_equal(purge_json_tags({"a", "b\"c"}, false, 3).c_str(),
                        "{\"purged\":\"tags\",\"mode\":\"hard\",\"tags\":[\"a\",\"b\\\"c\"],\"epoch\":3}\n");
    assert_string_equal(purge_json_error("the primary Redis is unavailable").c_str(),
                        "{\"error\":\"the primary Redis is unavailable\"}\n");
    std::string s;
    json_string(s, std::string_view("a\\b\n\x01\x7f\xc3\xa9\0", 9));
    assert_string_equal(s.c_str(), "\"a\\\\b\\u000a\\u0001\\u007f\\u00c3\\u00a9\\u0000\"");
}

void expect_target(std::string_view ref, const char *want, std::string_view path = "/posts/5/edit")
{
    std::string out;
    bool ok = same_origin_target(ref, "example.com", path, out);
    if (want == nullptr) {
        if (ok) {
            print_error("\"%s\" -> \"%s\", expected not same-origin\n", std::string(ref).c_str(), out.c_str());
            fail();
        }
        return;
    }
    if (!ok || out != want) {
        print_error("\"%s\" -> %d \"%s\", expected \"%s\"\n", std::string(ref).c_str(), ok, out.c_str(), want);
        fail();
    }
}

void test_same_origin(void **)
{
    expect_target("/posts/5", "/posts/5");
    expect_target("/posts/5?x=1#top", "/posts/5?x=1");
    expect_target("http://example.com/posts/5", "/posts/5");
    expect_target("HTTPS://Example.COM:443/posts/5?a", "/posts/5?a");
    expect_target("http://example.com", "/");
    expect_target("http://example.com?q", "/?q");
    expect_target("//example.com/x", "/x");
    // relative references, resolved against the request's path
    expect_target("6", "/posts/5/6");
    expect_target("../6", "/posts/6");
    expect_target("./", "/posts/5/");
    expect_target("?page=2", "/posts/5/edit?page=2");
    expect_target("/a/./b/../c", "/a/c");
    expect_target("/../../x", "/x");
    expect_target("6", "/6", "/");
    // other origins, other schemes, garbage
    expect_target("http://other.com/posts/5", nullptr);
    expect_target("http://example.com.evil/x", nullptr);
    expect_target("http://user@example.com/x", nullptr);
    expect_target("//other.com/x", nullptr);
    expect_target("ftp://example.com/x", nullptr);
    expect_target("mailto:a@example.com", nullptr);
    expect_target("javascript:alert(1)", nullptr);
    expect_target("", nullptr);
    expect_target("#top", nullptr);
    expect_target("/a b", nullptr);
    expect_target("/a\r\nX-Injected: 1", nullptr);
    expect_target("http://[::1]/x", nullptr);
    std::string out;
    assert_true(same_origin_target("http://[::1]:8080/x", "[::1]", "/", out));
    assert_string_equal(out.c_str(), "/x");
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_purge),
        cmocka_unit_test(test_tag_purge),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_same_origin),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
