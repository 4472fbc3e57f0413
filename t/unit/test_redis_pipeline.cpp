// Unit tests: a Redis connection's commands in flight: deadlines that
// count from the write, held commands that fail alone and unsent, late
// replies that stay matched to their (expired) commands, the liveness
// period, the in-flight bound and failing everything.
#include "unit.hpp"

#include <vector>

#include "core/redis_pipeline.hpp"

using namespace fly::core;

namespace {

constexpr uint64_t T = 100;         // the command timeout, ms
constexpr uint64_t L = 1000;        // the liveness period, ms

struct Op : PipelineOp {
    int id = 0;
};

const char *kGet[] = {"GET", "k"};

// Issues `op` as the caller would: held when it must be, else output.
// Returns the number of output bytes it took (0 when held).
size_t issue(RedisPipeline &p, Op &op, uint64_t now, size_t bytes = 20)
{
    if (p.must_hold()) {
        assert_true(p.hold(&op, 2, kGet, nullptr, now));
        return 0;
    }
    p.output(&op, bytes, now, now * 1000);
    return bytes;
}

// Answers the awaiting op, which must be `want`.
void answer(RedisPipeline &p, Op &want, uint64_t now, size_t bytes = 100)
{
    PipelineOp *op = p.awaiting();
    assert_ptr_equal(op, &want);
    p.answered(op, bytes, now, now * 1000);
}

}  // namespace

static void test_liveness_for(void **)
{
    assert_int_equal(RedisPipeline::liveness_for(100), 1000);
    assert_int_equal(RedisPipeline::liveness_for(199), 1000);
    assert_int_equal(RedisPipeline::liveness_for(250), 1250);
    assert_int_equal(RedisPipeline::liveness_for(3000), 15000);
}

static void test_answered_in_order(void **)
{
    RedisPipeline p(T, L);
    Op a, b;
    assert_null(p.awaiting());
    issue(p, a, 0);
    issue(p, b, 0);
    assert_int_equal(p.size(), 2);
    assert_int_equal(p.in_flight(), 2);
    // not written yet: a reply now answers nothing
    assert_null(p.awaiting());
    p.written(20, 1);
    assert_ptr_equal(p.awaiting(), &a);
    assert_int_equal(a.stage, PipelineStage::written);
    assert_int_equal(b.stage, PipelineStage::output);
    p.written(20, 1);
    answer(p, a, 2);
    answer(p, b, 2);
    assert_int_equal(p.size(), 0);
    assert_int_equal(p.in_flight(), 0);
    assert_null(p.awaiting());
    assert_true(p.next_deadline() == RedisPipeline::kNever);
    bool gone;
    assert_null(p.expire(1000000, &gone));
}

static void test_deadline_counts_from_the_write(void **)
{
    RedisPipeline p(T, L);
    Op a;
    issue(p, a, 0);
    // issued at 0: must be written by 100
    assert_int_equal(p.next_deadline(), 100);
    p.written(10, 50);             // half of it
    assert_int_equal(p.next_deadline(), 100);
    p.written(10, 80);             // all of it, at 80: answered by 180
    assert_int_equal(p.next_deadline(), 180);
    bool gone = true;
    assert_null(p.expire(150, &gone));
    assert_false(gone);
    assert_ptr_equal(p.expire(180, &gone), &a);
    assert_false(gone);
    assert_true(a.expired);
    assert_true(p.next_deadline() == RedisPipeline::kNever);
    // still in line: its late reply is matched to it, and discarded by the
    // caller since it expired
    assert_ptr_equal(p.awaiting(), &a);
    answer(p, a, 400);
    assert_int_equal(p.size(), 0);
}

static void test_unwritten_op_fails_alone(void **)
{
    // The socket does not take the bytes: an op handed to the output fails
    // by issue time + T, and stays (its bytes go out later)
    RedisPipeline p(T, L);
    Op a, b;
    issue(p, a, 0);
    issue(p, b, 30);
    bool gone;
    assert_ptr_equal(p.expire(100, &gone), &a);
    assert_false(gone);
    assert_null(p.expire(100, &gone));
    assert_ptr_equal(p.expire(130, &gone), &b);
    assert_int_equal(p.size(), 2);
    // now written: no new deadline for failed ops; replies still matched
    p.written(40, 200);
    assert_true(p.next_deadline() == RedisPipeline::kNever);
    answer(p, a, 210);
    answer(p, b, 210);
}

static void test_held_ops(void **)
{
    // 900 KB replies: at most 4 in flight, the rest held in the pipeline
    RedisPipeline p(T, L);
    std::vector<Op> ops(10);
    for (int i = 0; i < 4; i++) {
        ops[i].id = i;
        issue(p, ops[i], 0);
        p.written(20, 0);
        answer(p, ops[i], 0, 900 * 1024);
    }
    assert_int_equal(p.send_cap(), 4);
    for (int i = 0; i < 10; i++) {
        issue(p, ops[i], 10);
    }
    assert_int_equal(p.in_flight(), 4);
    assert_int_equal(p.held(), 6);
    assert_null(p.releasable());
    std::string_view first(p.held_bytes(&ops[4]), ops[4].held_len);
    assert_sv_equal(first, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    p.written(80, 20);
    // one answer makes room for one held op, released in order
    answer(p, ops[0], 30, 900 * 1024);
    assert_ptr_equal(p.releasable(), &ops[4]);
    p.released(&ops[4], 30, 30000);
    assert_null(p.releasable());
    assert_int_equal(p.held(), 5);
    // held ops keep the deadline of their issue (10 + 100); written ones
    // count from their write (20 + 100)
    assert_int_equal(p.next_deadline(), 110);
    bool gone;
    // at 110 the output op 4 and the held ops 5..9 fail; the held ones
    // leave unsent, in order
    assert_ptr_equal(p.expire(110, &gone), &ops[4]);
    assert_false(gone);
    for (int i = 5; i < 10; i++) {
        assert_ptr_equal(p.expire(110, &gone), &ops[i]);
        assert_true(gone);
    }
    assert_int_equal(p.held(), 0);
    assert_int_equal(p.size(), 4);          // 1, 2, 3 and the failed 4
    assert_int_equal(p.next_deadline(), 120);
    answer(p, ops[1], 115, 900 * 1024);
    answer(p, ops[2], 115, 900 * 1024);
    answer(p, ops[3], 115, 900 * 1024);
    assert_null(p.awaiting());               // 4 is not written yet
    p.written(20, 116);
    answer(p, ops[4], 117, 900 * 1024);
    assert_int_equal(p.size(), 0);
}

static void test_late_reply_stays_matched(void **)
{
    // A slow reply: its command fails alone; the next commands get their
    // own replies after the late one is discarded
    RedisPipeline p(T, L);
    Op slow, b, c;
    issue(p, slow, 0);
    p.written(20, 0);
    bool gone;
    assert_ptr_equal(p.expire(100, &gone), &slow);
    issue(p, b, 101);
    issue(p, c, 101);
    p.written(40, 101);
    assert_int_equal(p.next_deadline(), 201);
    // the late reply arrives first: it is the slow op's
    assert_ptr_equal(p.awaiting(), &slow);
    assert_true(static_cast<Op *>(p.awaiting())->expired);
    answer(p, slow, 150);
    answer(p, b, 150);
    assert_false(b.expired);
    answer(p, c, 150);
}

static void test_liveness(void **)
{
    RedisPipeline p(T, L);
    assert_true(p.silent_deadline() == RedisPipeline::kNever);
    Op a, b;
    issue(p, a, 5000);                // idle until now: silence counts from here
    assert_int_equal(p.silent_deadline(), 6000);
    p.written(20, 5000);
    bool gone;
    assert_ptr_equal(p.expire(5100, &gone), &a);
    // failed ops still count: their replies are awaited
    assert_int_equal(p.silent_deadline(), 6000);
    p.received(5500);                 // a part of a reply
    assert_int_equal(p.silent_deadline(), 6500);
    issue(p, b, 5600);                // more in flight: no new start
    assert_int_equal(p.silent_deadline(), 6500);
    p.written(20, 5600);
    answer(p, a, 5700);
    p.received(5700);
    assert_int_equal(p.silent_deadline(), 6700);
    answer(p, b, 5800);
    assert_true(p.silent_deadline() == RedisPipeline::kNever);
}

static void test_send_cap(void **)
{
    RedisPipeline p(T, L);
    // small replies on a fast link: ~512 KiB / reply size
    Op op;
    for (int i = 0; i < 200; i++) {
        issue(p, op, 0);
        p.written(20, 0);
        answer(p, op, 0, 1024);
    }
    size_t cap = p.send_cap();
    assert_true(cap >= 400 && cap <= 600);
    // a distant Redis (10 ms round trips) gets more in flight
    RedisPipeline far(T, L);
    for (int i = 0; i < 200; i++) {
        far.output(&op, 20, 0, 0);
        far.written(20, 0);
        PipelineOp *a = far.awaiting();
        far.answered(a, 1024, 10, 10000);
    }
    assert_true(far.send_cap() > 10 * cap);
    // never fewer than 4
    RedisPipeline big(T, L);
    for (int i = 0; i < 50; i++) {
        big.output(&op, 20, 0, 0);
        big.written(20, 0);
        big.answered(big.awaiting(), 50u * 1024 * 1024, 0, 0);
    }
    assert_int_equal(big.send_cap(), 4);
}

static void test_drop_and_pop(void **)
{
    RedisPipeline p(T, L);
    std::vector<Op> ops(8);
    for (int i = 0; i < 4; i++) {
        issue(p, ops[i], 0);
        p.written(20, 0);
        answer(p, ops[i], 0, 900 * 1024);
    }
    for (int i = 0; i < 8; i++) {
        ops[i].id = i;
        issue(p, ops[i], 1);
    }
    assert_int_equal(p.held(), 4);
    p.written(40, 1);                  // ops 0 and 1 written, 2 and 3 not
    answer(p, ops[0], 2);
    // a held op whose request went away leaves unsent
    PipelineOp *h = p.releasable();
    assert_ptr_equal(h, &ops[4]);
    p.drop(h);
    assert_int_equal(p.held(), 3);
    assert_ptr_equal(p.releasable(), &ops[5]);
    answer(p, ops[1], 3);
    p.released(&ops[5], 3, 3000);
    // failing everything: the oldest first, whatever its stage
    std::vector<int> order;
    while (PipelineOp *op = p.pop()) {
        order.push_back(static_cast<Op *>(op)->id);
    }
    assert_int_equal(order.size(), 5);
    int want[] = {2, 3, 5, 6, 7};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(order[i], want[i]);
    }
    assert_int_equal(p.size(), 0);
    assert_int_equal(p.held(), 0);
    assert_int_equal(p.in_flight(), 0);
    assert_true(p.next_deadline() == RedisPipeline::kNever);
    assert_true(p.silent_deadline() == RedisPipeline::kNever);
    // a new connection: the output stream starts again
    p.restart();
    Op n;
    issue(p, n, 10);
    p.written(20, 10);
    assert_ptr_equal(p.awaiting(), &n);
}

static void test_handshake_bytes(void **)
{
    // AUTH and SELECT go first on a connection: an op is written once the
    // bytes before it are
    RedisPipeline p(T, L);
    Op a;
    assert_true(p.hold(&a, 2, kGet, nullptr, 0));    // while resolving
    p.restart();
    p.output_other(30);                              // AUTH
    PipelineOp *r = p.releasable();
    assert_ptr_equal(r, &a);
    p.released(r, 5, 5000);
    p.written(30, 6);
    assert_null(p.awaiting());
    assert_int_equal(p.next_deadline(), 100);        // from its issue
    p.written(a.held_len, 7);
    assert_ptr_equal(p.awaiting(), &a);
    assert_int_equal(p.next_deadline(), 107);
}

static void test_held_bytes_compaction(void **)
{
    // thousands of held commands released one by one: each one's bytes
    // stay right while the sent prefix is dropped
    RedisPipeline p(T, L);
    Op fill;
    for (int i = 0; i < 4; i++) {
        issue(p, fill, 0);
        p.written(20, 0);
        answer(p, fill, 0, 900 * 1024);
    }
    std::vector<Op> ops(3000);
    std::vector<std::string> keys(3000);
    for (size_t i = 0; i < ops.size(); i++) {
        keys[i] = "key-" + std::to_string(i) + std::string(i % 50, 'x');
        const char *argv[] = {"GET", keys[i].c_str()};
        if (p.must_hold()) {
            assert_true(p.hold(&ops[i], 2, argv, nullptr, 0));
        } else {
            p.output(&ops[i], 30, 0, 0);
        }
    }
    assert_int_equal(p.held(), ops.size() - 4);
    size_t checked = 0;
    for (size_t i = 0; i < ops.size(); i++) {
        if (ops[i].stage != PipelineStage::held) {
            p.written(30, 0);
        } else {
            PipelineOp *r = p.releasable();
            assert_ptr_equal(r, &ops[i]);
            std::string want = "*2\r\n$3\r\nGET\r\n$" + std::to_string(keys[i].size())
                               + "\r\n" + keys[i] + "\r\n";
            assert_sv_equal(std::string_view(p.held_bytes(r), r->held_len), want);
            checked++;
            p.released(r, 0, 0);
            p.written(r->held_len, 0);
        }
        answer(p, ops[i], 0, 900 * 1024);
    }
    assert_int_equal(checked, ops.size() - 4);
    assert_int_equal(p.size(), 0);
}

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_liveness_for),
        cmocka_unit_test(test_answered_in_order),
        cmocka_unit_test(test_deadline_counts_from_the_write),
        cmocka_unit_test(test_unwritten_op_fails_alone),
        cmocka_unit_test(test_held_ops),
        cmocka_unit_test(test_late_reply_stays_matched),
        cmocka_unit_test(test_liveness),
        cmocka_unit_test(test_send_cap),
        cmocka_unit_test(test_drop_and_pop),
        cmocka_unit_test(test_handshake_bytes),
        cmocka_unit_test(test_held_bytes_compaction),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
