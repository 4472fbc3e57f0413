// Unit tests: what a connection subscribed to Redis's tracking channel
// receives, as the core's RESP reader parses it: SUBSCRIBE's answer,
// invalidations of keys, the null invalidation of a flush, PONG, and
// anything else (including unreadable messages on the channel, which
// count as a flush).
#include "unit.hpp"

#include "core/near_push.hpp"
#include "core/resp.hpp"

using namespace fly::core;

namespace {

// Parses exactly one reply from `wire` and classifies it.
struct Parsed {
    RespReader reader;
    RespReply reply;
    PushMessage m;
    explicit Parsed(std::string_view wire)
    {
        assert_true(reader.feed(wire.data(), wire.size()));
        assert_int_equal(static_cast<int>(reader.next(reply)),
                         static_cast<int>(RespReader::Status::reply));
        m = classify_push(reply);
    }
    ~Parsed() { resp_free(reply); }
};

}  // namespace

static void test_subscribed(void **)
{
    Parsed p("*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n");
    assert_int_equal(static_cast<int>(p.m.kind), static_cast<int>(PushKind::subscribed));
    assert_int_equal(p.m.count, 1);
    // another channel: not ours
    Parsed q("*3\r\n$9\r\nsubscribe\r\n$5\r\nother\r\n:1\r\n");
    assert_int_equal(static_cast<int>(q.m.kind), static_cast<int>(PushKind::other));
}

static void test_invalidate(void **)
{
    Parsed p("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n"
             "*1\r\n$5\r\nfly:a\r\n");
    assert_int_equal(static_cast<int>(p.m.kind), static_cast<int>(PushKind::invalidate));
    assert_int_equal(p.m.nkeys, 1);
    assert_sv_equal(std::string_view(p.m.keys[0].str, p.m.keys[0].len), "fly:a");

    // several keys in one message, binary-safe
    Parsed q("*3\r\n$7\r\nMESSAGE\r\n$20\r\n__redis__:invalidate\r\n"
             "*2\r\n$10\r\nfly:\x1f" "epoch\r\n$3\r\na\r\n\r\n");
    assert_int_equal(static_cast<int>(q.m.kind), static_cast<int>(PushKind::invalidate));
    assert_int_equal(q.m.nkeys, 2);
    assert_sv_equal(std::string_view(q.m.keys[0].str, q.m.keys[0].len), "fly:\x1f" "epoch");
    assert_int_equal(q.m.keys[1].len, 3);
}

static void test_flush(void **)
{
    // FLUSHALL, FLUSHDB, a full resync: the null invalidation
    Parsed p("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n");
    assert_int_equal(static_cast<int>(p.m.kind), static_cast<int>(PushKind::flush));
    assert_false(p.m.malformed);
    Parsed q("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*-1\r\n");
    assert_int_equal(static_cast<int>(q.m.kind), static_cast<int>(PushKind::flush));

    // unreadable messages on the channel: some key changed, which one is
    // unknown: a flush
    for (const char *wire : {
             "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n:5\r\n",
             "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*0\r\n",
             "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*2\r\n$1\r\na\r\n:1\r\n",
             "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$3\r\nabc\r\n",
         })
    {
        Parsed m(wire);
        assert_int_equal(static_cast<int>(m.m.kind), static_cast<int>(PushKind::flush));
        assert_true(m.m.malformed);
    }
}

static void test_pong(void **)
{
    Parsed p("*2\r\n$4\r\npong\r\n$3\r\n123\r\n");
    assert_int_equal(static_cast<int>(p.m.kind), static_cast<int>(PushKind::pong));
    assert_sv_equal(p.m.payload, "123");
    Parsed q("*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_int_equal(static_cast<int>(q.m.kind), static_cast<int>(PushKind::pong));
    assert_int_equal(q.m.payload.size(), 0);
}

static void test_other(void **)
{
    for (const char *wire : {
             "+PONG\r\n",
             ":1\r\n",
             "-ERR no\r\n",
             "$-1\r\n",
             "*0\r\n",
             "*1\r\n$7\r\nmessage\r\n",
             "*3\r\n$7\r\nmessage\r\n$5\r\nother\r\n*1\r\n$1\r\na\r\n",
             "*3\r\n:1\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\na\r\n",
             "*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$20\r\n__redis__:invalidate\r\n$1\r\na\r\n",
             "*3\r\n$11\r\nunsubscribe\r\n$20\r\n__redis__:invalidate\r\n:0\r\n",
             "*2\r\n$4\r\npong\r\n:1\r\n",
         })
    {
        Parsed m(wire);
        assert_int_equal(static_cast<int>(m.m.kind), static_cast<int>(PushKind::other));
    }
}

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subscribed),
        cmocka_unit_test(test_invalidate),
        cmocka_unit_test(test_flush),
        cmocka_unit_test(test_pong),
        cmocka_unit_test(test_other),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
