// libFuzzer target: RedisPipeline (src/core/redis_pipeline.*), the
// commands of one Redis connection from being issued to being answered,
// checked against a model.
//
// Input: a program.  Byte 0 picks the command timeout T; then each byte
// is an action, most followed by an argument byte or two, driven the way
// the Redis client (src/ngx_fly_redis.cpp) drives the pipeline:
//   issue     a command of 1..3 arguments taken from the input: held while
//             the connection is down or when must_hold(), else output
//   time      the clock moves on, then the deadline timer runs: expire()
//             until it returns nothing
//   written   some of the output went to the socket
//   reply     Redis sends something, then a reply: answered() for the
//             awaiting() op, or, when none awaits, a protocol error (the
//             connection fails)
//   release   held ops go out while releasable() (or leave unsent, as
//             canceled ones do)
//   fail      the connection is lost: pop() every op
//   open      a new connection: restart(), handshake bytes, release
//
// Properties, after every action: size(), held() and in_flight() are
// the model's; the FIFO links, every op's stage and expired flag are the
// model's, stages contiguous (written, output, held); awaiting() is the
// head exactly when it is written; next_deadline() is the earliest
// deadline of an op not failed, silent_deadline() the liveness period
// after Redis last sent something (kNever with nothing in flight);
// must_hold() and releasable() hold to their rules (never with fewer than
// 4 in flight); a held op's bytes are its command in RESP; no live op's
// deadline is later than 2T after it was issued; expire() returns ops in
// deadline order and only those due, the held ones gone; pop() empties
// it in FIFO order.  ASan: no op is touched after it left.
#include "fuzz.hpp"

#include <cstring>
#include <deque>
#include <map>
#include <memory>

#include "core/redis_pipeline.hpp"
#include "core/resp.hpp"

using namespace fly::core;

namespace {

constexpr size_t kMinOps = 4;         // the pipeline's in-flight floor
constexpr size_t kMaxOps = 65536;

struct Op : PipelineOp {
    int id = 0;
};

struct Model {
    Op *op;
    PipelineStage stage;
    bool expired;
    uint64_t issued;
    uint64_t deadline;
    std::string cmd;                // its bytes (RESP)
};

class Input {
public:
    Input(const uint8_t *d, size_t n) : d_(d), n_(n) {}
    bool done() const { return pos_ >= n_; }
    uint8_t byte() { return pos_ < n_ ? d_[pos_++] : 0; }
    std::string bytes(size_t k)
    {
        std::string s;
        while (k-- > 0 && pos_ < n_) {
            s += static_cast<char>(d_[pos_++]);
        }
        return s;
    }

private:
    const uint8_t *d_;
    size_t n_;
    size_t pos_ = 0;
};

class Harness {
public:
    explicit Harness(uint64_t timeout)
        : T_(timeout), L_(RedisPipeline::liveness_for(timeout)), p_(T_, L_)
    {
        FUZZ_CHECK(L_ == (timeout * 5 < 1000 ? 1000 : timeout * 5));
    }

    ~Harness()
    {
        fail();   // pop() every op, in order
    }

    void step(Input &in)
    {
        switch (in.byte() % 8) {
        case 0: issue(in); break;
        case 1: advance(in); break;
        case 2: written(in); break;
        case 3: reply(in); break;
        case 4: release(in); break;
        case 5:
            p_.received(now_);
            silent_since_ = now_;
            break;
        case 6: fail(); break;
        case 7: open(in); break;
        }
        check();
    }

private:
    // ---- actions

    void issue(Input &in)
    {
        int argc = 1 + in.byte() % 3;
        std::string args[3];
        const char *argv[3];
        size_t argvlen[3];
        for (int i = 0; i < argc; i++) {
            args[i] = in.bytes(in.byte() % 24);
            argv[i] = args[i].data();
            argvlen[i] = args[i].size();
        }
        std::string cmd(resp_command_size(argc, argv, argvlen), '\0');
        char *e = resp_write_command(&cmd[0], argc, argv, argvlen);
        cmd.resize(static_cast<size_t>(e - cmd.data()));

        auto op = std::make_unique<Op>();
        op->id = ++ids_;
        Model m{op.get(), PipelineStage::held, false, now_, now_ + T_, cmd};
        if (!up_ || p_.must_hold()) {
            FUZZ_CHECK(p_.hold(op.get(), argc, argv, argvlen, now_));
        } else {
            p_.output(op.get(), cmd.size(), now_, now_ * 1000);
            to_output(m);
        }
        fifo_.push_back(m);
        op.release();
    }

    // The op's bytes go to the output stream (the caller appended them).
    void to_output(Model &m)
    {
        if (in_flight() == 0) {
            silent_since_ = now_;
        }
        m.stage = PipelineStage::output;
        out_total_ += m.cmd.size();
        out_end_[m.op->id] = out_total_;
    }

    void advance(Input &in)
    {
        uint8_t a = in.byte();
        now_ += (a & 0x80) ? static_cast<uint64_t>(a & 0x7f) * 16 : a;
        // the deadline timer
        for (;;) {
            bool gone = true;
            PipelineOp *p = p_.expire(now_, &gone);
            uint64_t min = earliest();
            if (p == nullptr) {
                FUZZ_CHECK(!gone);
                FUZZ_CHECK(min == RedisPipeline::kNever || min > now_);
                break;
            }
            size_t i = find(p);
            Model &m = fifo_[i];
            FUZZ_CHECK(!m.expired && m.deadline <= now_ && m.deadline == min);
            FUZZ_CHECK(gone == (m.stage == PipelineStage::held));
            if (gone) {
                // the oldest held op
                FUZZ_CHECK(i == first_held());
                erase(i);
            } else {
                m.expired = true;
            }
        }
    }

    void written(Input &in)
    {
        if (!up_ || out_written_ == out_total_) {
            return;
        }
        uint64_t n = 1 + in.byte();
        if (n > out_total_ - out_written_) {
            n = out_total_ - out_written_;
        }
        p_.written(static_cast<size_t>(n), now_);
        out_written_ += n;
        for (Model &m : fifo_) {
            if (m.stage == PipelineStage::output
                && out_end_[m.op->id] <= out_written_)
            {
                m.stage = PipelineStage::written;
                if (!m.expired) {
                    m.deadline = now_ + T_;
                }
            }
        }
    }

    void reply(Input &in)
    {
        if (!up_) {
            return;
        }
        p_.received(now_);
        silent_since_ = now_;
        PipelineOp *p = p_.awaiting();
        if (p == nullptr) {
            fail();            // a reply nobody asked for
            return;
        }
        FUZZ_CHECK(p == fifo_.front().op);
        size_t bytes = static_cast<size_t>(in.byte()) * 97;
        p_.answered(p, bytes, now_, now_ * 1000 + in.byte());
        erase(0);
    }

    void release(Input &in)
    {
        if (!up_) {
            return;
        }
        while (PipelineOp *p = p_.releasable()) {
            size_t i = find(p);
            FUZZ_CHECK(i == first_held());
            Model &m = fifo_[i];
            FUZZ_CHECK(p->held_len == m.cmd.size());
            FUZZ_CHECK(std::memcmp(p_.held_bytes(p), m.cmd.data(), m.cmd.size()) == 0);
            if (in.byte() % 5 == 0) {
                p_.drop(p);          // canceled meanwhile: leaves unsent
                erase(i);
                continue;
            }
            p_.released(p, now_, now_ * 1000);
            to_output(m);
        }
    }

    void fail()
    {
        while (PipelineOp *p = p_.pop()) {
            FUZZ_CHECK(!fifo_.empty() && p == fifo_.front().op);
            erase(0);
        }
        FUZZ_CHECK(fifo_.empty() && p_.size() == 0 && p_.held() == 0
                   && p_.in_flight() == 0);
        up_ = false;
    }

    void open(Input &in)
    {
        if (up_) {
            return;
        }
        // only held ops survive a closed connection
        FUZZ_CHECK(p_.in_flight() == 0);
        p_.restart();
        out_total_ = out_written_ = 0;
        size_t handshake = in.byte() % 64;
        p_.output_other(handshake);
        out_total_ += handshake;
        up_ = true;
        release(in);
    }

    // ---- the model

    size_t find(const PipelineOp *p) const
    {
        for (size_t i = 0; i < fifo_.size(); i++) {
            if (fifo_[i].op == p) {
                return i;
            }
        }
        FUZZ_CHECK(false && "an op the model does not know");
        return 0;
    }

    size_t first_held() const
    {
        for (size_t i = 0; i < fifo_.size(); i++) {
            if (fifo_[i].stage == PipelineStage::held) {
                return i;
            }
        }
        return fifo_.size();
    }

    size_t count(PipelineStage s) const
    {
        size_t n = 0;
        for (const Model &m : fifo_) {
            n += m.stage == s;
        }
        return n;
    }

    size_t in_flight() const { return fifo_.size() - count(PipelineStage::held); }

    uint64_t earliest() const
    {
        uint64_t d = RedisPipeline::kNever;
        for (const Model &m : fifo_) {
            if (!m.expired && m.deadline < d) {
                d = m.deadline;
            }
        }
        return d;
    }

    void erase(size_t i)
    {
        out_end_.erase(fifo_[i].op->id);
        delete fifo_[i].op;
        fifo_.erase(fifo_.begin() + static_cast<std::ptrdiff_t>(i));
    }

    void check()
    {
        size_t held = count(PipelineStage::held);
        FUZZ_CHECK(p_.size() == fifo_.size());
        FUZZ_CHECK(p_.held() == held);
        FUZZ_CHECK(p_.in_flight() == in_flight());

        // the FIFO: its links, stages in order, each op as the model says
        int rank = 0;
        for (size_t i = 0; i < fifo_.size(); i++) {
            const Model &m = fifo_[i];
            const Op *op = m.op;
            FUZZ_CHECK(op->prev == (i ? fifo_[i - 1].op : nullptr));
            FUZZ_CHECK(op->next == (i + 1 < fifo_.size() ? fifo_[i + 1].op : nullptr));
            FUZZ_CHECK(op->stage == m.stage && op->expired == m.expired);
            int r = m.stage == PipelineStage::written ? 0
                    : m.stage == PipelineStage::output ? 1 : 2;
            FUZZ_CHECK(r >= rank);
            rank = r;
            if (!m.expired) {
                FUZZ_CHECK(op->deadline == m.deadline);
                FUZZ_CHECK(m.deadline <= m.issued + 2 * T_);
            }
            if (m.stage == PipelineStage::held) {
                FUZZ_CHECK(op->held_len == m.cmd.size());
                FUZZ_CHECK(std::memcmp(p_.held_bytes(op), m.cmd.data(),
                                       m.cmd.size()) == 0);
            }
        }

        PipelineOp *head = fifo_.empty() ? nullptr : fifo_.front().op;
        bool head_written = head != nullptr
                            && fifo_.front().stage == PipelineStage::written;
        FUZZ_CHECK(p_.awaiting() == (head_written ? head : nullptr));

        FUZZ_CHECK(p_.next_deadline() == earliest());
        FUZZ_CHECK(p_.silent_deadline()
                   == (in_flight() > 0 ? silent_since_ + L_
                                       : RedisPipeline::kNever));

        size_t cap = p_.send_cap();
        FUZZ_CHECK(cap >= kMinOps && cap <= kMaxOps);
        if (held > 0) {
            FUZZ_CHECK(p_.must_hold());
        } else if (in_flight() < kMinOps) {
            FUZZ_CHECK(!p_.must_hold());
        }
        PipelineOp *rel = p_.releasable();
        if (held == 0) {
            FUZZ_CHECK(rel == nullptr);
        } else {
            FUZZ_CHECK(rel == nullptr || rel == fifo_[first_held()].op);
            if (in_flight() < kMinOps) {
                FUZZ_CHECK(rel != nullptr);
            }
        }
    }

    uint64_t T_;
    uint64_t L_;
    RedisPipeline p_;
    std::deque<Model> fifo_;
    std::map<int, uint64_t> out_end_;   // op id -> output offset past it
    uint64_t now_ = 1000;
    uint64_t out_total_ = 0;
    uint64_t out_written_ = 0;
    uint64_t silent_since_ = 0;
    bool up_ = false;
    int ids_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Input in(data, size);
    uint64_t timeout = 1 + in.byte() % 250;
    Harness h(timeout);
    size_t steps = 0;
    while (!in.done() && steps++ < 4096) {
        h.step(in);
    }
    return 0;
}
