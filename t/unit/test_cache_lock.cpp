// Unit tests: the fill lock's key, token, poll interval and TTL.
#include "unit.hpp"

#include "core/cache_lock.hpp"

using namespace fly::core;

namespace {

void test_lock_key(void **)
{
    std::string k = lock_key("fly:https://a/b");
    assert_int_equal(k.size(), 17);
    assert_memory_equal(k.data(), "fly:https://a/b\x1fl", 17);
    assert_true(lock_key("fly:x") != lock_key("fly:y"));
}

void test_lock_token(void **)
{
    assert_string_equal(lock_token(0x1a, 0xff, 1000).c_str(), "1a.ff.3e8");
    assert_string_equal(lock_token(1, 2, -5).c_str(), "1.2.0");
    // another pid, random or time: another token
    assert_true(lock_token(1, 2, 3) != lock_token(2, 2, 3));
    assert_true(lock_token(1, 2, 3) != lock_token(1, 3, 3));
    assert_true(lock_token(1, 2, 3) != lock_token(1, 2, 4));
}

void test_poll_and_ttl(void **)
{
    assert_int_equal(lock_poll_ms(0), 5);
    assert_int_equal(lock_poll_ms(60), 5);
    assert_int_equal(lock_poll_ms(200), 10);
    assert_int_equal(lock_poll_ms(5000), 25);
    assert_int_equal(lock_poll_ms(UINT64_MAX), 25);
    assert_int_equal(lock_ttl_ms(0), 1);
    assert_int_equal(lock_ttl_ms(5000), 10000);
    assert_true(lock_ttl_ms(UINT64_MAX) == UINT64_MAX);
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_key),
        cmocka_unit_test(test_lock_token),
        cmocka_unit_test(test_poll_and_ttl),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
