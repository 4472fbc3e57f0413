// fly-edge pure core: the commands of one Redis connection, from being
// issued to being answered, with their deadlines and the bound on replies
// in flight.  No nginx header: the caller passes the time (milliseconds
// of a clock that does not wrap, for deadlines; microseconds, for round
// trips) and does the I/O.  Unit-tested (t/unit/test_redis_pipeline.cpp).
//
// Redis answers in order, so the ops form one FIFO.  An op goes through up
// to three stages, and the ops of each stage are contiguous in the FIFO
// (written ones first, then output, then held):
//   held     its bytes wait here, unsent: the connection is not up yet, or
//            enough replies are already on their way (send_cap());
//   output   its bytes were handed to the caller's output buffer, not all
//            of them written to the socket yet;
//   written  all of its bytes went to the socket: its reply is awaited.
//
// Deadlines, with T the command timeout (fly_redis_timeout):
//   - an op must be written within T of being issued; if not, it fails
//     alone: a held op leaves unsent, an output op stays in line (its
//     bytes go out, its reply will be discarded);
//   - a written op must be answered within T of being written; if not, it
//     fails alone and stays in line: its late reply is discarded when it
//     comes, so that replies stay matched to their commands.
// So no op waits more than about 2T.  The connection itself is given up
// only when Redis has sent nothing at all for the liveness period while
// replies are awaited (silent_deadline()).
#pragma once

#include "core/resp.hpp"

#include <cstddef>
#include <cstdint>

namespace fly::core {

enum class PipelineStage : uint8_t { held, output, written };

// The pipeline's part of an op; the caller's op type derives from it and
// owns the memory.  Fields are the pipeline's.
struct PipelineOp {
    PipelineOp *prev = nullptr;     // the FIFO
    PipelineOp *next = nullptr;
    PipelineOp *dprev = nullptr;    // the deadline list it is on, if any
    PipelineOp *dnext = nullptr;
    uint64_t deadline = 0;          // ms
    uint64_t out_us = 0;            // handed to the output (round trips)
    uint64_t out_end = 0;           // output stream offset just past it
    size_t held_off = 0;            // its bytes in the held buffer
    size_t held_len = 0;
    PipelineStage stage = PipelineStage::held;
    bool expired = false;           // failed by its deadline, still in line
};

class RedisPipeline {
public:
    static constexpr uint64_t kNever = UINT64_MAX;

    RedisPipeline(uint64_t timeout_ms, uint64_t liveness_ms) noexcept;
    RedisPipeline(const RedisPipeline &) = delete;
    RedisPipeline &operator=(const RedisPipeline &) = delete;

    // The liveness period for a command timeout: max(1 s, 5 x timeout).
    static uint64_t liveness_for(uint64_t timeout_ms) noexcept;

    // ---- issuing
    // Must a new op be held?  (Some are held already, or send_cap() replies
    // are on their way.)
    bool must_hold() const noexcept
    {
        return first_held_ != nullptr || !room();
    }
    // Queues `op`, its command held here (formatted in RESP).  False when
    // out of memory (`op` is not queued).
    bool hold(PipelineOp *op, int argc, const char *const *argv,
              const size_t *argvlen, uint64_t now_ms) noexcept;
    // Queues `op`, whose `n` bytes the caller appended to its output (only
    // when must_hold() is false).
    void output(PipelineOp *op, size_t n, uint64_t now_ms,
                uint64_t now_us) noexcept;
    // The caller appended `n` bytes that belong to no op (AUTH, SELECT).
    void output_other(size_t n) noexcept;
    // `n` more bytes of the output went to the socket.
    void written(size_t n, uint64_t now_ms) noexcept;

    // ---- held ops
    // The oldest held op, if it may go to the output now.
    PipelineOp *releasable() const noexcept;
    const char *held_bytes(const PipelineOp *op) const noexcept;
    // The releasable() op was appended to the output.
    void released(PipelineOp *op, uint64_t now_ms, uint64_t now_us) noexcept;
    // The releasable() op leaves unsent (its request is gone).
    void drop(PipelineOp *op) noexcept;

    // ---- replies
    // The op the next reply answers; nullptr when none was asked (a reply
    // now is a protocol error).
    PipelineOp *awaiting() const noexcept;
    // The awaiting() op got its reply of `bytes`; it leaves the line.
    void answered(PipelineOp *op, size_t bytes, uint64_t now_ms,
                  uint64_t now_us) noexcept;
    // Redis sent something (liveness).
    void received(uint64_t now_ms) noexcept;

    // ---- time
    // The earliest deadline of an op not failed yet, or kNever.
    uint64_t next_deadline() const noexcept;
    // The next op whose deadline has passed, or nullptr.  It is marked
    // expired and stays in line, or, if it was held, leaves (*gone =
    // true): the caller fails it, and frees it if gone.
    PipelineOp *expire(uint64_t now_ms, bool *gone) noexcept;
    // When Redis, silent since then, is given up for dead; kNever when
    // no reply is awaited.
    uint64_t silent_deadline() const noexcept;

    // ---- failing
    // Takes the oldest op out of the line (to fail it), or nullptr.
    PipelineOp *pop() noexcept;
    // A new connection: the output stream starts again (held ops stay).
    void restart() noexcept;

    size_t size() const noexcept { return count_; }
    size_t held() const noexcept { return nheld_; }
    size_t in_flight() const noexcept { return inflight_; }
    // How many ops may be in flight at once (see the .cpp).
    size_t send_cap() const noexcept;

private:
    struct List {
        PipelineOp *head = nullptr;
        PipelineOp *tail = nullptr;
    };
    void push(PipelineOp *op) noexcept;
    void unlink(PipelineOp *op) noexcept;
    static void dpush(List &l, PipelineOp *op) noexcept;
    static void dremove(List &l, PipelineOp *op) noexcept;
    void to_output(PipelineOp *op, size_t n, uint64_t now_ms,
                   uint64_t now_us) noexcept;
    void tidy_held() noexcept;
    // Do the replies expected for the ops in flight leave room for one
    // more?  (What send_cap() says, without a division per command.)
    bool room() const noexcept
    {
        return inflight_ < kMinOps
               || (inflight_ < kMaxOps
                   && (inflight_ + 1) * avg_reply_ <= budget_);
    }
    void set_budget() noexcept;

    static constexpr size_t kMinOps = 4;          // in flight, at least
    static constexpr size_t kMaxOps = 65536;      // and at most

    uint64_t timeout_;
    uint64_t liveness_;

    PipelineOp *head_ = nullptr;        // the FIFO
    PipelineOp *tail_ = nullptr;
    PipelineOp *first_output_ = nullptr;
    PipelineOp *first_held_ = nullptr;
    List issued_;       // live held and output ops: deadline issued + T
    List awaited_;      // live written ops: deadline written + T
    size_t count_ = 0;
    size_t nheld_ = 0;
    size_t inflight_ = 0;                // output and written ops
    ByteBuf held_buf_;

    uint64_t out_total_ = 0;             // bytes appended to the output
    uint64_t out_written_ = 0;           // of which written
    uint64_t silent_since_ = 0;

    size_t budget_ = 0;                  // bytes of replies in flight
    size_t avg_reply_ = 4096;            // moving average of reply sizes
    uint64_t rtt_min_ = UINT64_MAX;      // smallest round trip, this epoch
    uint64_t rtt_min_prev_ = UINT64_MAX; // and the previous one
    uint64_t rtt_epoch_ = 0;             // ms
};

}  // namespace fly::core
