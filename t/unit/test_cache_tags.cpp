// Unit tests: cache tags, the tag epoch and tag records, and the verdict
// a HIT takes from them.
#include "unit.hpp"

#include <vector>

#include "core/cache_tags.hpp"

using namespace fly::core;

namespace {

std::vector<std::string> tags_of(std::string_view list, bool expect_ok = true, size_t max = kMaxTags)
{
    std::vector<std::string_view> out(kMaxTags + 1);
    size_t n = 99;
    bool ok = parse_tags(list, out.data(), max, n);
    if (ok != expect_ok) {
        print_error("parse_tags(\"%s\") returned %d\n", std::string(list).c_str(), ok);
        fail();
    }
    std::vector<std::string> r;
    if (ok) {
        for (size_t i = 0; i < n; i++) {
            r.emplace_back(out[i]);
        }
    }
    return r;
}

void expect_tags(std::string_view list, std::vector<std::string> want)
{
    std::vector<std::string> got = tags_of(list);
    assert_int_equal(got.size(), want.size());
    for (size_t i = 0; i < want.size(); i++) {
        assert_string_equal(got[i].c_str(), want[i].c_str());
    }
}

void test_valid_tag(void **)
{
    assert_true(valid_tag("a"));
    assert_true(valid_tag("node:12"));
    assert_true(valid_tag("config:system.site"));
    assert_true(valid_tag("!~/\"'{}"));
    assert_true(valid_tag(std::string(kMaxTagLen, 'x')));
    assert_false(valid_tag(""));
    assert_false(valid_tag(std::string(kMaxTagLen + 1, 'x')));
    assert_false(valid_tag("a,b"));
    assert_false(valid_tag("a b"));
    assert_false(valid_tag("a\tb"));
    assert_false(valid_tag("\x1fu"));
    assert_false(valid_tag("\x7f"));
    assert_false(valid_tag("caf\xc3\xa9"));
    assert_false(valid_tag(std::string_view("a\0", 2)));
}

void test_parse_tags(void **)
{
    // Cloudflare's Cache-Tag (commas), Fastly's Surrogate-Key (spaces), both
    expect_tags("post-1,post-2", {"post-1", "post-2"});
    expect_tags("post-1 post-2", {"post-1", "post-2"});
    expect_tags(" post-1 ,\tpost-2 , , list  ", {"post-1", "post-2", "list"});
    expect_tags("", {});
    expect_tags(" , ,", {});
    // duplicates go, order stays
    expect_tags("b a b c a", {"b", "a", "c"});
    // malformed: the whole list is refused
    tags_of("ok caf\xc3\xa9", false);
    tags_of("ok \x01", false);
    tags_of(std::string(kMaxTagLen + 1, 'x'), false);
    // bounds: count and bytes
    std::string list;
    for (size_t i = 0; i < kMaxTags; i++) {
        list += "t" + std::to_string(i) + " ";
    }
    assert_int_equal(tags_of(list).size(), kMaxTags);
    tags_of(list + "one-more", false);
    tags_of("a b c", false, 2);
    assert_int_equal(tags_of("a b b a", true, 2).size(), 2);   // duplicates do not count
    std::string bytes;
    for (size_t i = 0; i < kMaxTagBytes / 200; i++) {
        bytes += std::string(197, 'y') + std::to_string(100 + i) + " ";
    }
    assert_int_equal(tags_of(bytes).size(), kMaxTagBytes / 200);    // 8000 bytes
    tags_of(bytes + std::string(193, 'z'), false);                  // 8193
}

void test_epoch(void **)
{
    uint64_t e = 99;
    assert_true(parse_epoch("0", e));
    assert_int_equal(e, 0);
    assert_true(parse_epoch("12345", e));
    assert_int_equal(e, 12345);
    assert_true(parse_epoch("18446744073709551615", e));
    assert_true(e == UINT64_MAX);
    assert_false(parse_epoch("18446744073709551616", e));
    assert_int_equal(e, 0);
    assert_false(parse_epoch("", e));
    assert_false(parse_epoch("-1", e));
    assert_false(parse_epoch("1 ", e));
    assert_false(parse_epoch("0x10", e));
    assert_false(parse_epoch("123456789012345678901", e));
}

void test_keys(void **)
{
    assert_true(kEpochKey == std::string_view("fly:\x1f" "epoch"));
    assert_true(tag_record_key("post-1") == "fly:\x1ftpost-1");
    assert_true(implicit_tag("fly:httpexample.com/a?b") == "\x1fuhttpexample.com/a?b");
    assert_true(tag_record_key(implicit_tag("fly:k")) == std::string("fly:\x1ft\x1fuk"));
    // an explicit tag can never spell an implicit one
    assert_false(valid_tag(implicit_tag("fly:k")));
}

void test_tag_record(void **)
{
    uint64_t h = 9, s = 9;
    assert_true(parse_tag_record("3:0", h, s));
    assert_int_equal(h, 3);
    assert_int_equal(s, 0);
    assert_true(parse_tag_record("0:17", h, s));
    assert_int_equal(h, 0);
    assert_int_equal(s, 17);
    for (const char *bad : {"", ":", "3", "3:", ":3", "a:1", "1:2:3", "1 :2", "-1:0"}) {
        assert_false(parse_tag_record(bad, h, s));
        assert_int_equal(h, 0);
        assert_int_equal(s, 0);
    }
}

TagVerdict verdict(uint64_t epoch, std::vector<const char *> recs, bool *malformed = nullptr)
{
    std::vector<TagRecord> r;
    for (const char *v : recs) {
        TagRecord t;
        t.present = v != nullptr;
        if (v) {
            t.value = v;
        }
        r.push_back(t);
    }
    bool m = false;
    TagVerdict out = tag_verdict(epoch, r.data(), r.size(), m);
    if (malformed) {
        *malformed = m;
    }
    return out;
}

void test_tag_verdict(void **)
{
    // no records: never purged
    assert_int_equal(verdict(5, {}), TagVerdict::valid);
    assert_int_equal(verdict(5, {nullptr, nullptr}), TagVerdict::valid);
    // purges at or before the fill's epoch do not touch it
    assert_int_equal(verdict(5, {"5:0", "3:5"}), TagVerdict::valid);
    // a later hard purge of any tag: absent
    assert_int_equal(verdict(5, {nullptr, "6:0"}), TagVerdict::purged);
    // a later soft purge: stale
    assert_int_equal(verdict(5, {"2:6"}), TagVerdict::stale);
    // hard wins over soft, whatever the order
    assert_int_equal(verdict(5, {"0:9", "7:0"}), TagVerdict::purged);
    assert_int_equal(verdict(5, {"7:0", "0:9"}), TagVerdict::purged);
    // a soft purge after a hard one does not revive what the hard one purged
    assert_int_equal(verdict(5, {"6:8"}), TagVerdict::purged);
    // but an entry filled between them is only stale
    assert_int_equal(verdict(7, {"6:8"}), TagVerdict::stale);
    // malformed: counted as purged, and said
    bool m = false;
    assert_int_equal(verdict(5, {"garbage"}, &m), TagVerdict::purged);
    assert_true(m);
    assert_int_equal(verdict(5, {"1:1"}, &m), TagVerdict::valid);
    assert_false(m);
    // a v1 entry (epoch 0) is purged by any purge of its implicit tag
    assert_int_equal(verdict(0, {"1:0"}), TagVerdict::purged);
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_tag),
        cmocka_unit_test(test_parse_tags),
        cmocka_unit_test(test_epoch),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_tag_record),
        cmocka_unit_test(test_tag_verdict),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
