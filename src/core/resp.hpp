// fly-edge pure core: RESP2, the Redis protocol: a reply reader and the
// command writer.  No nginx or hiredis header here: unit-tested with
// cmocka (t/unit/test_resp.cpp) and fuzzed.
//
// The reader owns its receive buffer and tells its caller where to
// receive (prepare(), then commit()), so that the body of a large top-level
// bulk string (a GET of a big cache entry) goes straight from the socket
// into the malloc'd block that becomes the reply's `str`: no copy in user
// space.  Smaller replies are copied once, out of the buffer; the buffer
// is never shifted except for a partial reply at its end.  Bytes that did
// not come from a socket go in with feed().
//
// Replies come out in the order they were received and the reader knows
// nothing of what was asked: matching them to commands is the caller's,
// so a connection that receives arrays nobody asked for (pub/sub
// `*3 $7 message ...`) reads them the same way.
//
// Fuzzing: construct with small limits (RespLimits), then feed() the
// input, or hand it over through prepare()/commit() in pieces of any size,
// and call next() until it returns more or error, resp_free()ing each
// reply.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fly::core {

// ---- replies ----------------------------------------------------------------

enum class RespType : uint8_t { nil, string, status, error, integer, array };

// One reply.  Strings are malloc'd and NUL-terminated (str[len] == 0): the
// owner may take `str` (set it to nullptr) and std::free() it later.
// Arrays hold `elements` replies in one malloc'd block.
struct RespReply {
    RespType type = RespType::nil;
    long long integer = 0;          // integer
    char *str = nullptr;            // string, status, error
    size_t len = 0;
    RespReply *element = nullptr;   // array
    size_t elements = 0;
};

// Frees what `r` holds (not `r` itself) and leaves it nil.
void resp_free_parts(RespReply &r) noexcept;
inline void resp_free(RespReply &r) noexcept
{
    if (r.str != nullptr || r.element != nullptr) {
        resp_free_parts(r);
    }
    r.type = RespType::nil;
}

// "string", "array", ... for log lines.
const char *resp_type_name(RespType t) noexcept;

// ---- the reader -------------------------------------------------------------

struct RespLimits {
    size_t max_bulk = 512u * 1024 * 1024;   // Redis's own proto-max-bulk-len
    size_t max_elements = 1u << 20;         // elements of one array
    size_t max_buffer = 64u * 1024 * 1024;  // a reply other than a bulk string
    int max_depth = 7;                      // nested arrays, as hiredis
};

// Where to receive: a pointer and a length (an iovec without <sys/uio.h>).
struct RespSpan {
    char *data;
    size_t len;
};

class RespReader {
public:
    enum class Status { reply, more, error };

    explicit RespReader(const RespLimits &limits = RespLimits()) noexcept;
    ~RespReader();
    RespReader(const RespReader &) = delete;
    RespReader &operator=(const RespReader &) = delete;

    // Where the next receive should put its bytes: fills `out` with one or
    // two spans, to be filled in order, and returns how many; 0 after an
    // error or when out of memory (error() says which).
    size_t prepare(RespSpan out[2]) noexcept;
    // `n` bytes were received into the spans of the last prepare().
    void commit(size_t n) noexcept;
    // Copies `n` bytes in; false after an error or when out of memory.
    bool feed(const char *p, size_t n) noexcept;

    // The next complete reply, moved into `out` (which it overwrites: free
    // what it held first).  `more`: not all there yet.  `error`: malformed
    // input or out of memory (error() says why); the stream cannot go on,
    // reset() before reading another.
    Status next(RespReply &out) noexcept
    {
        if (error_ == nullptr && body_ == nullptr && pos_ < len_
            && buf_[pos_] == '$')
        {
            return next_bulk(out);    // the common case (GET), in one pass
        }
        return next_other(out);
    }
    const char *error() const noexcept { return error_; }

    // A fresh stream (a new connection).  Frees a body being received.
    void reset() noexcept;
    // Bytes received that are not part of a reply returned yet.
    size_t pending() const noexcept;

private:
    Status broken(const char *why) noexcept;
    bool make_room() noexcept;
    Status next_bulk(RespReply &out) noexcept;
    Status next_other(RespReply &out) noexcept;
    Status finish_body(RespReply &out) noexcept;
    Status scan(size_t *end) noexcept;
    bool build(RespReply &r, const char *p, const char **next) noexcept;

    RespLimits limits_;
    const char *error_ = nullptr;

    // received bytes not yet returned: buf_[pos_, len_)
    char *buf_ = nullptr;
    size_t cap_ = 0;
    size_t pos_ = 0;
    size_t len_ = 0;

    // A top-level bulk string received in place: body_len_ bytes and CRLF,
    // body_got_ of them there; buf_ is empty meanwhile.
    char *body_ = nullptr;
    size_t body_len_ = 0;
    size_t body_got_ = 0;
    bool large_ = false;            // the last bulk string was large

    // How far the reply at pos_ (not a bulk string) has been checked, so
    // that a large array (or a long line) arriving in pieces is not scanned
    // again and again: scanned_ bytes from pos_, inside depth_ open arrays
    // with left_[i] elements still to come at level i; the CRLF of the
    // element at scanned_ is not before line_from_.
    size_t scanned_ = 0;
    size_t line_from_ = 0;          // where to look for the CRLF of a line
    int depth_ = 0;
    uint32_t left_[16] = {};
};

// ---- commands ---------------------------------------------------------------

// A growable malloc'd byte buffer that never throws.
struct ByteBuf {
    char *p = nullptr;
    size_t len = 0;
    size_t cap = 0;

    ByteBuf() = default;
    ByteBuf(const ByteBuf &) = delete;
    ByteBuf &operator=(const ByteBuf &) = delete;
    ~ByteBuf();
    bool reserve(size_t n) noexcept;
};

// An upper bound of the size of a command in RESP (an array of bulk
// strings).  argvlen may be nullptr: then every argv[i] is a C string.
inline size_t resp_command_size(int argc, const char *const *argv,
                                const size_t *argvlen) noexcept
{
    size_t need = sizeof("*\r\n") - 1 + 20;
    for (int i = 0; i < argc; i++) {
        need += sizeof("$\r\n\r\n") - 1 + 20
                + (argvlen ? argvlen[i] : __builtin_strlen(argv[i]));
    }
    return need;
}
// Writes the command at `p`, which has room for resp_command_size()
// bytes; returns the end.
char *resp_write_command(char *p, int argc, const char *const *argv,
                         const size_t *argvlen) noexcept;
// Appends the command to `b`; false when out of memory.
bool resp_append_command(ByteBuf &b, int argc, const char *const *argv,
                         const size_t *argvlen) noexcept;

}  // namespace fly::core
