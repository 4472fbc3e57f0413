// fly-edge pure core: a Redis connection's commands in flight (see
// redis_pipeline.hpp).
#include "core/redis_pipeline.hpp"

#include <cstring>

namespace fly::core {

namespace {

// How many commands are sent ahead of their replies.  Unbounded pipelining
// lets Redis run far ahead of us when we are the bottleneck: megabytes of
// replies then wait in socket buffers, out of the CPU caches, and both
// Redis's copy into the socket and ours out of it get slower; and when the
// kernel's receive-buffer autotuning stays small (it sometimes does, at
// ~600 KB on loopback), Redis is window-limited and every recv() of ours
// makes Redis's kernel send the next segment from inside it.  With 64
// concurrent 32 KiB HITs on loopback a HIT cost 21 us of CPU (nginx + Redis)
// unbounded, 19 us with this, up to 31 us when window-limited.  So commands
// are held while the replies expected for those in flight (the average
// reply size times their number) would exceed a budget: kInflightMin, or
// what a fast worker consumes (kInflightRate) during the smallest round
// trip seen lately, whichever is larger, so that a distant Redis still has
// enough in flight.  Small replies are never held back in practice
// (512 KiB is 512 replies of 1 KiB).
constexpr size_t kInflightMin = 512 * 1024;
constexpr size_t kInflightMax = 64 * 1024 * 1024;
constexpr size_t kInflightRate = 2048;          // bytes per microsecond
constexpr size_t kReplyOverhead = 16;           // a reply's RESP framing
constexpr uint64_t kRttEpoch = 10000;           // min RTT: over 10-20 s
constexpr size_t kHeldCompact = 64 * 1024;

}  // namespace

RedisPipeline::RedisPipeline(uint64_t timeout_ms, uint64_t liveness_ms) noexcept
    : timeout_(timeout_ms), liveness_(liveness_ms)
{
    set_budget();
}

uint64_t RedisPipeline::liveness_for(uint64_t timeout_ms) noexcept
{
    uint64_t l = timeout_ms * 5;
    return l < 1000 ? 1000 : l;
}

// ---- lists ------------------------------------------------------------------

void RedisPipeline::push(PipelineOp *op) noexcept
{
    op->prev = tail_;
    op->next = nullptr;
    if (tail_ != nullptr) {
        tail_->next = op;
    } else {
        head_ = op;
    }
    tail_ = op;
    count_++;
}

void RedisPipeline::unlink(PipelineOp *op) noexcept
{
    if (op == first_held_) {
        first_held_ = op->next;            // held ops end the FIFO
    }
    if (op == first_output_) {
        PipelineOp *n = op->next;
        first_output_ = n && n->stage == PipelineStage::output ? n : nullptr;
    }
    if (op->prev != nullptr) {
        op->prev->next = op->next;
    } else {
        head_ = op->next;
    }
    if (op->next != nullptr) {
        op->next->prev = op->prev;
    } else {
        tail_ = op->prev;
    }
    op->prev = op->next = nullptr;
    count_--;
}

void RedisPipeline::dpush(List &l, PipelineOp *op) noexcept
{
    op->dprev = l.tail;
    op->dnext = nullptr;
    if (l.tail != nullptr) {
        l.tail->dnext = op;
    } else {
        l.head = op;
    }
    l.tail = op;
}

void RedisPipeline::dremove(List &l, PipelineOp *op) noexcept
{
    if (op->dprev != nullptr) {
        op->dprev->dnext = op->dnext;
    } else {
        l.head = op->dnext;
    }
    if (op->dnext != nullptr) {
        op->dnext->dprev = op->dprev;
    } else {
        l.tail = op->dprev;
    }
    op->dprev = op->dnext = nullptr;
}

// ---- issuing ----------------------------------------------------------------

size_t RedisPipeline::send_cap() const noexcept
{
    size_t cap = budget_ / avg_reply_;
    if (cap < kMinOps) {
        cap = kMinOps;
    }
    return cap < kMaxOps ? cap : kMaxOps;
}

void RedisPipeline::set_budget() noexcept
{
    uint64_t rtt = rtt_min_ < rtt_min_prev_ ? rtt_min_ : rtt_min_prev_;
    budget_ = kInflightMin;
    if (rtt != UINT64_MAX) {
        uint64_t b = rtt < kInflightMax / kInflightRate ? rtt * kInflightRate
                                                        : kInflightMax;
        if (b > budget_) {
            budget_ = static_cast<size_t>(b);
        }
    }
}

bool RedisPipeline::hold(PipelineOp *op, int argc, const char *const *argv,
                         const size_t *argvlen, uint64_t now_ms) noexcept
{
    size_t off = held_buf_.len;
    if (!resp_append_command(held_buf_, argc, argv, argvlen)) {
        return false;
    }
    op->held_off = off;
    op->held_len = held_buf_.len - off;
    op->stage = PipelineStage::held;
    op->expired = false;
    op->deadline = now_ms + timeout_;
    push(op);
    dpush(issued_, op);
    if (first_held_ == nullptr) {
        first_held_ = op;
    }
    nheld_++;
    return true;
}

void RedisPipeline::to_output(PipelineOp *op, size_t n, uint64_t now_ms,
                              uint64_t now_us) noexcept
{
    out_total_ += n;
    op->out_end = out_total_;
    op->out_us = now_us;
    op->stage = PipelineStage::output;
    if (first_output_ == nullptr) {
        first_output_ = op;
    }
    if (inflight_++ == 0) {
        silent_since_ = now_ms;
    }
}

void RedisPipeline::output(PipelineOp *op, size_t n, uint64_t now_ms,
                           uint64_t now_us) noexcept
{
    op->expired = false;
    op->deadline = now_ms + timeout_;
    push(op);
    dpush(issued_, op);
    to_output(op, n, now_ms, now_us);
}

void RedisPipeline::output_other(size_t n) noexcept
{
    out_total_ += n;
}

void RedisPipeline::written(size_t n, uint64_t now_ms) noexcept
{
    out_written_ += n;
    while (first_output_ != nullptr && first_output_->out_end <= out_written_) {
        PipelineOp *op = first_output_;
        op->stage = PipelineStage::written;
        if (!op->expired) {
            // From now on it waits for its reply: a deadline of its own.
            dremove(issued_, op);
            op->deadline = now_ms + timeout_;
            dpush(awaited_, op);
        }
        PipelineOp *n2 = op->next;
        first_output_ = n2 && n2->stage == PipelineStage::output ? n2 : nullptr;
    }
}

// ---- held ops ---------------------------------------------------------------

PipelineOp *RedisPipeline::releasable() const noexcept
{
    return first_held_ != nullptr && room() ? first_held_ : nullptr;
}

const char *RedisPipeline::held_bytes(const PipelineOp *op) const noexcept
{
    return held_buf_.p + op->held_off;
}

void RedisPipeline::released(PipelineOp *op, uint64_t now_ms,
                             uint64_t now_us) noexcept
{
    first_held_ = op->next;
    nheld_--;
    to_output(op, op->held_len, now_ms, now_us);   // keeps its deadline
    tidy_held();
}

void RedisPipeline::drop(PipelineOp *op) noexcept
{
    dremove(issued_, op);
    unlink(op);
    nheld_--;
    tidy_held();
}

// Forgets the bytes of ops no longer held: all of them when none is left,
// else the sent prefix once it is large.
void RedisPipeline::tidy_held() noexcept
{
    if (first_held_ == nullptr) {
        held_buf_.len = 0;
        return;
    }
    size_t off = first_held_->held_off;
    if (off >= kHeldCompact && off * 2 >= held_buf_.len) {
        std::memmove(held_buf_.p, held_buf_.p + off, held_buf_.len - off);
        held_buf_.len -= off;
        for (PipelineOp *op = first_held_; op != nullptr; op = op->next) {
            op->held_off -= off;
        }
    }
}

// ---- replies ----------------------------------------------------------------

PipelineOp *RedisPipeline::awaiting() const noexcept
{
    return head_ != nullptr && head_->stage == PipelineStage::written ? head_
                                                                       : nullptr;
}

void RedisPipeline::answered(PipelineOp *op, size_t bytes, uint64_t now_ms,
                             uint64_t now_us) noexcept
{
    if (!op->expired) {
        dremove(awaited_, op);
    }
    unlink(op);
    inflight_--;

    bytes += kReplyOverhead;
    avg_reply_ = bytes >= avg_reply_ ? avg_reply_ + (bytes - avg_reply_) / 8
                                     : avg_reply_ - (avg_reply_ - bytes) / 8;
    if (avg_reply_ < kReplyOverhead) {
        avg_reply_ = kReplyOverhead;
    }
    uint64_t rtt = now_us > op->out_us ? now_us - op->out_us : 0;
    if (now_ms >= rtt_epoch_) {
        rtt_epoch_ = now_ms + kRttEpoch;
        rtt_min_prev_ = rtt_min_;
        rtt_min_ = UINT64_MAX;
    }
    if (rtt < rtt_min_) {
        rtt_min_ = rtt;
        set_budget();
    }
}

void RedisPipeline::received(uint64_t now_ms) noexcept
{
    silent_since_ = now_ms;
}

// ---- time -------------------------------------------------------------------

uint64_t RedisPipeline::next_deadline() const noexcept
{
    uint64_t a = issued_.head ? issued_.head->deadline : kNever;
    uint64_t b = awaited_.head ? awaited_.head->deadline : kNever;
    return a < b ? a : b;
}

PipelineOp *RedisPipeline::expire(uint64_t now_ms, bool *gone) noexcept
{
    PipelineOp *a = issued_.head;
    PipelineOp *b = awaited_.head;
    PipelineOp *op = a == nullptr ? b
                     : b == nullptr ? a
                     : a->deadline <= b->deadline ? a : b;
    *gone = false;
    if (op == nullptr || op->deadline > now_ms) {
        return nullptr;
    }
    if (op->stage == PipelineStage::held) {
        // Deadlines follow the issue order: this is the oldest held op.
        drop(op);
        *gone = true;
        return op;
    }
    dremove(op->stage == PipelineStage::written ? awaited_ : issued_, op);
    op->expired = true;
    return op;
}

uint64_t RedisPipeline::silent_deadline() const noexcept
{
    return inflight_ > 0 ? silent_since_ + liveness_ : kNever;
}

// ---- failing ----------------------------------------------------------------

PipelineOp *RedisPipeline::pop() noexcept
{
    PipelineOp *op = head_;
    if (op == nullptr) {
        return nullptr;
    }
    if (!op->expired) {
        dremove(op->stage == PipelineStage::written ? awaited_ : issued_, op);
    }
    if (op->stage == PipelineStage::held) {
        nheld_--;
    } else {
        inflight_--;
    }
    unlink(op);
    if (head_ == nullptr) {
        held_buf_.len = 0;
    }
    return op;
}

void RedisPipeline::restart() noexcept
{
    out_total_ = 0;
    out_written_ = 0;
}

}  // namespace fly::core
