// libFuzzer target: the RESP reader (src/core/resp.*), fed the bytes a
// Redis server (or anything that answers on its port) sends, and the
// command writer.
//
// Input: a RESP byte stream, as it comes from the socket.  Each input is
// read under two sets of small limits (RespLimits), each four ways:
//   whole   feed() of all bytes, then next() until it has no more;
//   bytes   one byte per prepare()/commit(), next() drained after each;
//   pieces  pieces of random sizes (a generator seeded from the input),
//           next() drained after each;
//   lazy    random pieces, next() drained only now and then, so that
//           several replies wait in the buffer together.
//
// Properties:
//   - the replies (type, value, every nested element) are those of an
//     independent model of RESP2 with the same limits, in the same order,
//     whichever way the bytes were split; where the model stops (malformed
//     input, a limit) the reader reports an error, where the input ends
//     inside a reply it asks for more, and pending() is then exactly the
//     bytes of that unfinished reply;
//   - the reader never reads bytes it was not given: what it did not get
//     committed of the spans prepare() handed out is poisoned (ASan) until
//     the next prepare(); every span it hands out is writable memory;
//   - strings are NUL-terminated and may be taken by the caller (str set
//     to nullptr and std::free()d later); every reply is freed (the leak
//     check of ASan);
//   - errors are sticky: after an error, next() says error again, with the
//     same message, prepare() hands out nothing and feed() refuses; reset()
//     then gives a reader that reads a fresh stream;
//   - an array of bulk strings written back with resp_append_command() /
//     resp_write_command() (within resp_command_size()) reads back as the
//     same array.
#include "fuzz.hpp"

#include <cstring>
#include <memory>

#include <sanitizer/asan_interface.h>

#include "core/resp.hpp"

using namespace fly::core;

namespace {

// ---- the model ----------------------------------------------------------

// The limits of a run; the model mirrors what RespLimits means.
struct Limits {
    RespLimits resp;
    const char *name;
};

const Limits kLimitSets[] = {
    {{64, 4, 2, 64 * 1024}, "tiny"},
    {{64 * 1024, 256, 5, 64 * 1024}, "small"},
};

// A "$", "*" or ":" line longer than this with no CRLF yet is an error
// (the reader's kMaxHeader: a type byte, a sign, 19 digits and some).
constexpr size_t kMaxHeader = 32;

enum class End { clean, more, error };

struct ModelResult {
    std::vector<std::string> replies;   // canonical forms
    size_t consumed = 0;                // bytes of the complete replies
    End end = End::clean;
    // What pending() says once all is read: the bytes after the complete
    // replies, but for a top-level bulk string being received in place,
    // whose header line is consumed already (only its body is pending).
    size_t pending = 0;
};

// Canonical, unambiguous text of a reply: a type letter and lengths.
void canon_str(std::string &out, char tag, const char *p, size_t n)
{
    out += tag;
    out += std::to_string(n);
    out += ':';
    out.append(p, n);
}

std::string canon(const RespReply &r)
{
    std::string out;
    switch (r.type) {
    case RespType::nil: return "N";
    case RespType::string:
        FUZZ_CHECK(r.str != nullptr && r.str[r.len] == '\0');
        canon_str(out, 'S', r.str, r.len);
        return out;
    case RespType::status:
        FUZZ_CHECK(r.str != nullptr && r.str[r.len] == '\0');
        canon_str(out, '+', r.str, r.len);
        return out;
    case RespType::error:
        FUZZ_CHECK(r.str != nullptr && r.str[r.len] == '\0');
        canon_str(out, '-', r.str, r.len);
        return out;
    case RespType::integer:
        return "I" + std::to_string(r.integer);
    case RespType::array:
        FUZZ_CHECK(r.elements == 0 || r.element != nullptr);
        out = "A" + std::to_string(r.elements) + "[";
        for (size_t i = 0; i < r.elements; i++) {
            out += canon(r.element[i]);
            out += ',';
        }
        return out + "]";
    }
    FUZZ_CHECK(false && "unknown reply type");
    return out;
}

// An independent reading of RESP2: parses one reply at `pos`.
class Model {
public:
    Model(std::string_view in, const RespLimits &lim) : in_(in), lim_(lim) {}

    ModelResult run()
    {
        ModelResult res;
        size_t pos = 0;
        while (pos < in_.size()) {
            std::string c;
            size_t next = pos;
            End e = one(pos, 0, c, next);
            if (e != End::clean) {
                res.end = e;
                res.pending = in_.size() - pos;
                size_t nl = crlf(pos + 1);
                if (e == End::more && in_[pos] == '$'
                    && nl != std::string_view::npos)
                {
                    res.pending = in_.size() - (nl + 2);
                }
                return res;
            }
            res.replies.push_back(c);
            pos = next;
            res.consumed = pos;
        }
        return res;
    }

private:
    // The first "\r\n" at or after `from`, or npos.
    size_t crlf(size_t from) const
    {
        for (size_t i = from; i + 1 < in_.size(); i++) {
            if (in_[i] == '\r' && in_[i + 1] == '\n') {
                return i;
            }
        }
        return std::string_view::npos;
    }

    // RESP integers: an optional '-', 1 to 19 digits, in long long's range.
    static bool integer(std::string_view s, long long &out)
    {
        bool neg = !s.empty() && s[0] == '-';
        std::string_view d = neg ? s.substr(1) : s;
        if (!fuzz::all_digits(d) || d.size() > 19) {
            return false;
        }
        // 19 digits fit in an unsigned long long
        unsigned long long v = 0;
        for (char ch : d) {
            v = v * 10 + static_cast<unsigned>(ch - '0');
        }
        unsigned long long max = 9223372036854775807ull;
        if (v > max + (neg ? 1 : 0)) {
            return false;
        }
        out = neg ? static_cast<long long>(0ull - v) : static_cast<long long>(v);
        return true;
    }

    End one(size_t pos, int depth, std::string &c, size_t &next) const
    {
        char type = in_[pos];
        if (type != '+' && type != '-' && type != ':' && type != '$'
            && type != '*')
        {
            return End::error;
        }
        size_t nl = crlf(pos + 1);
        if (nl == std::string_view::npos) {
            bool line = type == '+' || type == '-';
            return !line && in_.size() - pos > kMaxHeader ? End::error
                                                          : End::more;
        }
        std::string_view text = in_.substr(pos + 1, nl - pos - 1);
        next = nl + 2;
        long long n = 0;
        switch (type) {
        case '+':
        case '-':
            canon_str(c, type, text.data(), text.size());
            return End::clean;
        case ':':
            if (!integer(text, n)) {
                return End::error;
            }
            c = "I" + std::to_string(n);
            return End::clean;
        case '$':
            if (!integer(text, n) || n < -1
                || (n > 0 && static_cast<unsigned long long>(n) > lim_.max_bulk))
            {
                return End::error;
            }
            if (n == -1) {
                c = "N";
                return End::clean;
            }
            if (in_.size() - next < static_cast<size_t>(n) + 2) {
                return End::more;
            }
            if (in_[next + n] != '\r' || in_[next + n + 1] != '\n') {
                return End::error;
            }
            canon_str(c, 'S', in_.data() + next, static_cast<size_t>(n));
            next += static_cast<size_t>(n) + 2;
            return End::clean;
        default: {  // '*'
            size_t max_el = lim_.max_elements;
            if (!integer(text, n) || n < -1
                || (n > 0 && static_cast<unsigned long long>(n) > max_el))
            {
                return End::error;
            }
            if (n == -1) {
                c = "N";
                return End::clean;
            }
            if (n > 0 && depth >= lim_.max_depth) {
                return End::error;
            }
            c = "A" + std::to_string(n) + "[";
            for (long long i = 0; i < n; i++) {
                if (next >= in_.size()) {
                    return End::more;
                }
                std::string e;
                size_t after = next;
                End r = one(next, depth + 1, e, after);
                if (r != End::clean) {
                    return r;
                }
                c += e;
                c += ',';
                next = after;
            }
            c += "]";
            return End::clean;
        }
        }
    }

    std::string_view in_;
    const RespLimits &lim_;
};

// ---- driving the reader ---------------------------------------------------

// A small deterministic generator (splitmix64), seeded from the input.
struct Rng {
    uint64_t s;
    uint64_t next()
    {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    size_t below(size_t n) { return n ? static_cast<size_t>(next() % n) : 0; }
};

uint64_t hash(std::string_view s)
{
    uint64_t h = 1469598103934665603ull;
    for (unsigned char ch : s) {
        h = (h ^ ch) * 1099511628211ull;
    }
    return h;
}

enum class Mode { whole, bytes, pieces, lazy };

struct ReadResult {
    std::vector<std::string> replies;
    End end = End::clean;
    size_t pending = 0;
};

// Takes a reply's strings the way the Redis client takes a HIT's body:
// str set to nullptr, freed by the taker.  Exercised on every other
// top-level string.
void maybe_steal(RespReply &r, size_t n)
{
    if (r.type == RespType::string && n % 2 == 1) {
        char *s = r.str;
        r.str = nullptr;
        r.len = 0;
        std::free(s);
    }
}

class Driver {
public:
    Driver(std::string_view in, const RespLimits &lim, Mode mode, uint64_t seed)
        : in_(in), rd_(lim), mode_(mode), rng_{seed}
    {
    }

    ~Driver() { unpoison(); }

    ReadResult run()
    {
        if (mode_ == Mode::whole) {
            if (!rd_.feed(in_.data(), in_.size())) {
                check_sticky();
                res_.end = End::error;
                return res_;
            }
            drain();
        } else {
            size_t off = 0;
            while (off < in_.size() && res_.end != End::error) {
                size_t piece = mode_ == Mode::bytes ? 1 : 1 + rng_.below(rng_.below(4) == 0 ? 4096 : 24);
                if (piece > in_.size() - off) {
                    piece = in_.size() - off;
                }
                if (!give(in_.data() + off, piece)) {
                    res_.end = End::error;
                    return res_;
                }
                off += piece;
                if (mode_ != Mode::lazy || rng_.below(4) == 0) {
                    drain();
                }
            }
            if (res_.end != End::error) {
                drain();
            }
        }
        if (res_.end != End::error) {
            res_.pending = rd_.pending();
            // (a bulk string whose header alone is there has pending() 0:
            // only error or not is compared, and pending())
            res_.end = res_.pending == 0 ? End::clean : End::more;
        }
        unpoison();
        return res_;
    }

    RespReader &reader() { return rd_; }

private:
    // Hands `n` bytes over through prepare()/commit(), possibly in several
    // rounds, committing sometimes less than the spans could take.
    bool give(const char *p, size_t n)
    {
        while (n > 0) {
            unpoison();
            RespSpan s[2] = {};
            size_t k = rd_.prepare(s);
            if (k == 0) {
                FUZZ_CHECK(rd_.error() != nullptr);
                check_sticky();
                return false;
            }
            FUZZ_CHECK(k <= 2);
            size_t room = 0;
            for (size_t i = 0; i < k; i++) {
                FUZZ_CHECK(s[i].data != nullptr && s[i].len > 0);
                // every byte handed out is the reader's, live memory
                FUZZ_CHECK(__asan_region_is_poisoned(s[i].data, s[i].len) == nullptr);
                room += s[i].len;
            }
            size_t want = n < room ? n : room;
            if (mode_ == Mode::lazy && want > 1 && rng_.below(3) == 0) {
                want = 1 + rng_.below(want);
            }
            size_t got = 0;
            for (size_t i = 0; i < k && got < want; i++) {
                size_t c = want - got < s[i].len ? want - got : s[i].len;
                std::memcpy(s[i].data, p + got, c);
                got += c;
            }
            rd_.commit(got);
            // what was not committed must not be read before the next
            // prepare(): poison it
            size_t left = got;
            for (size_t i = 0; i < k; i++) {
                size_t used = left < s[i].len ? left : s[i].len;
                left -= used;
                if (used < s[i].len) {
                    poison(s[i].data + used, s[i].len - used);
                }
            }
            p += got;
            n -= got;
        }
        return true;
    }

    void drain()
    {
        for (;;) {
            RespReply r;
            RespReader::Status st = rd_.next(r);
            if (st == RespReader::Status::more) {
                FUZZ_CHECK(r.type == RespType::nil && r.str == nullptr
                           && r.element == nullptr);
                return;
            }
            if (st == RespReader::Status::error) {
                check_sticky();
                res_.end = End::error;
                return;
            }
            res_.replies.push_back(canon(r));
            maybe_steal(r, res_.replies.size());
            resp_free(r);
            FUZZ_CHECK(r.type == RespType::nil && r.str == nullptr
                       && r.element == nullptr);
        }
    }

    // After an error: the same error again, nothing handed out, nothing
    // taken.
    void check_sticky()
    {
        const char *why = rd_.error();
        FUZZ_CHECK(why != nullptr && *why != '\0');
        unpoison();
        for (int i = 0; i < 2; i++) {
            RespReply r;
            FUZZ_CHECK(rd_.next(r) == RespReader::Status::error);
            FUZZ_CHECK(r.str == nullptr && r.element == nullptr);
            FUZZ_CHECK(rd_.error() == why);
            RespSpan s[2] = {};
            FUZZ_CHECK(rd_.prepare(s) == 0);
            FUZZ_CHECK(!rd_.feed("+OK\r\n", 5));
            FUZZ_CHECK(rd_.error() == why);
        }
    }

    void poison(char *p, size_t n)
    {
        ASAN_POISON_MEMORY_REGION(p, n);
        poisoned_.push_back({p, n});
    }

    // The poisoned tails belong to blocks the reader still holds: they
    // are freed or moved only inside prepare() (make_room) or reset().
    void unpoison()
    {
        for (auto &s : poisoned_) {
            ASAN_UNPOISON_MEMORY_REGION(s.data, s.len);
        }
        poisoned_.clear();
    }

    std::string_view in_;
    RespReader rd_;
    Mode mode_;
    Rng rng_;
    ReadResult res_;
    std::vector<RespSpan> poisoned_;
};

const char *end_name(End e)
{
    return e == End::clean ? "clean" : e == End::more ? "more" : "error";
}

void check_against_model(const ReadResult &got, const ModelResult &want,
                         size_t input_size, const char *how)
{
    bool got_error = got.end == End::error, want_error = want.end == End::error;
    if (got.replies != want.replies || got_error != want_error
        || (!want_error && got.pending != want.pending))
    {
        std::fprintf(stderr, "%s: %zu replies (%s, pending %zu), model %zu (%s, pending %zu)\n",
                     how, got.replies.size(), end_name(got.end), got.pending,
                     want.replies.size(), end_name(want.end), want.pending);
        for (size_t i = 0; i < got.replies.size() || i < want.replies.size(); i++) {
            std::fprintf(stderr, "  #%zu reader %.80s\n  #%zu model  %.80s\n", i,
                         i < got.replies.size() ? got.replies[i].c_str() : "-", i,
                         i < want.replies.size() ? want.replies[i].c_str() : "-");
        }
    }
    FUZZ_CHECK(got.replies == want.replies);
    FUZZ_CHECK(got_error == want_error);
    if (!want_error) {
        FUZZ_CHECK(got.pending == want.pending);
        FUZZ_CHECK(want.pending <= input_size - want.consumed);
    }
}

// ---- the command writer -----------------------------------------------------

// An array of bulk strings, as the reply's canonical form names it, is a
// command: written back, it reads as the same array.
void check_command(const RespReply &r)
{
    if (r.type != RespType::array || r.elements == 0 || r.elements > 64) {
        return;
    }
    std::vector<const char *> argv;
    std::vector<size_t> argvlen;
    for (size_t i = 0; i < r.elements; i++) {
        if (r.element[i].type != RespType::string) {
            return;
        }
        argv.push_back(r.element[i].str);
        argvlen.push_back(r.element[i].len);
    }
    int argc = static_cast<int>(argv.size());
    size_t bound = resp_command_size(argc, argv.data(), argvlen.data());
    std::unique_ptr<char[]> direct(new char[bound]);
    char *end = resp_write_command(direct.get(), argc, argv.data(), argvlen.data());
    size_t n = static_cast<size_t>(end - direct.get());
    FUZZ_CHECK(n <= bound);

    ByteBuf b;
    FUZZ_CHECK(resp_append_command(b, argc, argv.data(), argvlen.data()));
    FUZZ_CHECK(b.len == n && std::memcmp(b.p, direct.get(), n) == 0);
    // appending again doubles it
    FUZZ_CHECK(resp_append_command(b, argc, argv.data(), argvlen.data()));
    FUZZ_CHECK(b.len == 2 * n && std::memcmp(b.p + n, direct.get(), n) == 0);

    RespReader rd;   // default limits: a command of any size reads back
    FUZZ_CHECK(rd.feed(b.p, b.len));
    for (int k = 0; k < 2; k++) {
        RespReply back;
        FUZZ_CHECK(rd.next(back) == RespReader::Status::reply);
        FUZZ_CHECK(canon(back) == canon(r));
        resp_free(back);
    }
    RespReply none;
    FUZZ_CHECK(rd.next(none) == RespReader::Status::more);
    FUZZ_CHECK(rd.pending() == 0);
}

// The whole stream again, keeping the replies: every array of strings
// goes through the command writer.
void check_commands(std::string_view in)
{
    RespReader rd(kLimitSets[1].resp);
    if (!rd.feed(in.data(), in.size())) {
        return;
    }
    for (;;) {
        RespReply r;
        if (rd.next(r) != RespReader::Status::reply) {
            return;
        }
        check_command(r);
        resp_free(r);
    }
}

// reset() after whatever happened gives a reader of a fresh stream.
void check_reset(RespReader &rd)
{
    rd.reset();
    FUZZ_CHECK(rd.error() == nullptr && rd.pending() == 0);
    FUZZ_CHECK(rd.feed("*2\r\n$3\r\nfoo\r\n:-7\r\n+O", 20));
    RespReply r;
    FUZZ_CHECK(rd.next(r) == RespReader::Status::reply);
    FUZZ_CHECK(canon(r) == "A2[S3:foo,I-7,]");
    resp_free(r);
    FUZZ_CHECK(rd.next(r) == RespReader::Status::more);
    FUZZ_CHECK(rd.pending() == 2);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::string_view in = fuzz::as_view(data, size);
    uint64_t seed = hash(in);
    for (const Limits &lim : kLimitSets) {
        ModelResult want = Model(in, lim.resp).run();
        const struct {
            Mode mode;
            const char *name;
        } modes[] = {
            {Mode::whole, "whole"},
            {Mode::bytes, "bytes"},
            {Mode::pieces, "pieces"},
            {Mode::lazy, "lazy"},
        };
        for (const auto &m : modes) {
            Driver d(in, lim.resp, m.mode, seed ^ static_cast<uint64_t>(m.mode));
            ReadResult got = d.run();
            std::string how = std::string(lim.name) + "/" + m.name;
            check_against_model(got, want, size, how.c_str());
            if (m.mode == Mode::lazy) {
                check_reset(d.reader());
            }
        }
    }
    check_commands(in);
    return 0;
}
