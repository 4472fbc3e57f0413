// fly-edge pure core: RESP2 reader and command writer (see resp.hpp).
#include "core/resp.hpp"

#include <climits>
#include <cstdlib>
#include <cstring>

namespace fly::core {

namespace {

// The buffer is kReadChunk; it grows only for a reply other than a
// top-level bulk string that does not fit (an array, a long status line),
// up to max_buffer, and shrinks back once empty.
constexpr size_t kReadChunk = 64 * 1024;
// After a large bulk string (kLargeBulk or more), the next one is probably
// large too: a receive then takes at most kBodySpare into the buffer (the
// next reply's head; what lands in the buffer is copied once more), and
// the body follows in place.  Otherwise a receive takes what fits.
constexpr size_t kLargeBulk = 16 * 1024;
constexpr size_t kBodySpare = 4 * 1024;
// A "$", "*" or ":" line: the type, a sign and 19 digits, CRLF.
constexpr size_t kMaxHeader = 32;
constexpr int kDepthCap = 16;      // RespReader::left_

bool is_type_byte(char c)
{
    return c == '+' || c == '-' || c == ':' || c == '$' || c == '*';
}

// The first CRLF in [p, end), or nullptr.
const char *find_crlf(const char *p, const char *end) noexcept
{
    while (p < end) {
        auto *cr = static_cast<const char *>(std::memchr(p, '\r', end - p));
        if (cr == nullptr || cr + 1 >= end) {
            return nullptr;
        }
        if (cr[1] == '\n') {
            return cr;
        }
        p = cr + 1;
    }
    return nullptr;
}

// A decimal integer filling [p, e), optionally negative, without overflow.
bool parse_ll(const char *p, const char *e, long long &out) noexcept
{
    bool neg = false;
    if (p < e && *p == '-') {
        neg = true;
        p++;
    }
    if (p == e || e - p > 19) {
        return false;
    }
    unsigned long long v = 0;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        v = v * 10 + static_cast<unsigned>(*p - '0');
    }
    if (v > (neg ? static_cast<unsigned long long>(LLONG_MAX) + 1
                 : static_cast<unsigned long long>(LLONG_MAX)))
    {
        return false;
    }
    out = neg ? static_cast<long long>(0 - v) : static_cast<long long>(v);
    return true;
}

// A malloc'd, NUL-terminated copy of n bytes.
char *copy_str(const char *p, size_t n) noexcept
{
    auto *s = static_cast<char *>(std::malloc(n + 1));
    if (s != nullptr) {
        std::memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

// Writes "<c><v>\r\n" (small numbers, the usual ones, without a loop).
char *write_line(char *p, char c, size_t v) noexcept
{
    *p++ = c;
    if (v < 10) {
        *p++ = static_cast<char>('0' + v);
    } else if (v < 100) {
        *p++ = static_cast<char>('0' + v / 10);
        *p++ = static_cast<char>('0' + v % 10);
    } else {
        char tmp[24];
        char *d = tmp + sizeof(tmp);
        do {
            *--d = static_cast<char>('0' + v % 10);
            v /= 10;
        } while (v != 0);
        while (d < tmp + sizeof(tmp)) {
            *p++ = *d++;
        }
    }
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

size_t arg_len(const char *const *argv, const size_t *argvlen, int i) noexcept
{
    return argvlen ? argvlen[i] : std::strlen(argv[i]);
}

}  // namespace

// ---- replies ----------------------------------------------------------------

void resp_free_parts(RespReply &r) noexcept
{
    if (r.element != nullptr) {
        for (size_t i = 0; i < r.elements; i++) {
            resp_free(r.element[i]);
        }
        std::free(r.element);
    }
    std::free(r.str);
    r = RespReply();
}

const char *resp_type_name(RespType t) noexcept
{
    switch (t) {
    case RespType::nil: return "nil";
    case RespType::string: return "string";
    case RespType::status: return "status";
    case RespType::error: return "error";
    case RespType::integer: return "integer";
    case RespType::array: return "array";
    }
    return "unknown";
}

// ---- the reader -------------------------------------------------------------

RespReader::RespReader(const RespLimits &limits) noexcept : limits_(limits)
{
    if (limits_.max_depth > kDepthCap) {
        limits_.max_depth = kDepthCap;
    }
    if (limits_.max_elements > INT_MAX) {
        limits_.max_elements = INT_MAX;
    }
}

RespReader::~RespReader()
{
    std::free(body_);
    std::free(buf_);
}

void RespReader::reset() noexcept
{
    std::free(body_);
    body_ = nullptr;
    body_len_ = body_got_ = 0;
    pos_ = len_ = 0;
    scanned_ = 0;
    line_from_ = 0;
    depth_ = 0;
    large_ = false;
    error_ = nullptr;
}

size_t RespReader::pending() const noexcept
{
    return (body_ ? body_got_ : 0) + (len_ - pos_);
}

RespReader::Status RespReader::broken(const char *why) noexcept
{
    error_ = why;
    return Status::error;
}

// Room at the end of buf_ for a receive.  Only a partial reply is kept, at
// the start; the buffer grows for one that does not fit and shrinks back
// once empty.
bool RespReader::make_room() noexcept
{
    if (buf_ == nullptr) {
        buf_ = static_cast<char *>(std::malloc(kReadChunk));
        if (buf_ == nullptr) {
            broken("out of memory");
            return false;
        }
        cap_ = kReadChunk;
    }
    if (pos_ == len_) {
        pos_ = len_ = 0;
        if (cap_ > kReadChunk) {
            auto *p = static_cast<char *>(std::realloc(buf_, kReadChunk));
            if (p != nullptr) {
                buf_ = p;
                cap_ = kReadChunk;
            }
        }
        return true;
    }
    if (cap_ - len_ >= kReadChunk / 2) {
        return true;
    }
    if (pos_ > 0) {
        std::memmove(buf_, buf_ + pos_, len_ - pos_);
        len_ -= pos_;
        pos_ = 0;
    }
    if (cap_ - len_ >= kReadChunk / 4) {
        return true;
    }
    if (cap_ >= limits_.max_buffer) {
        broken("reply too large");
        return false;
    }
    auto *p = static_cast<char *>(std::realloc(buf_, cap_ * 2));
    if (p == nullptr) {
        broken("out of memory");
        return false;
    }
    buf_ = p;
    cap_ *= 2;
    return true;
}

size_t RespReader::prepare(RespSpan out[2]) noexcept
{
    if (error_ != nullptr) {
        return 0;
    }
    if (body_ != nullptr && body_got_ < body_len_ + 2) {
        // The rest of the bulk string, straight into its own block; then a
        // little of what follows (buf_ is empty meanwhile).
        out[0] = {body_ + body_got_, body_len_ + 2 - body_got_};
        out[1] = {buf_, cap_ < kBodySpare ? cap_ : kBodySpare};
        return 2;
    }
    if (!make_room()) {
        return 0;
    }
    size_t room = cap_ - len_;
    if (large_ && len_ == 0 && room > kBodySpare) {
        room = kBodySpare;
    }
    out[0] = {buf_ + len_, room};
    return 1;
}

void RespReader::commit(size_t n) noexcept
{
    if (body_ != nullptr && body_got_ < body_len_ + 2) {
        size_t need = body_len_ + 2 - body_got_;
        size_t k = n < need ? n : need;
        body_got_ += k;
        n -= k;
    }
    len_ += n;
}

bool RespReader::feed(const char *p, size_t n) noexcept
{
    while (n > 0) {
        RespSpan s[2];
        size_t k = prepare(s);
        if (k == 0) {
            return false;
        }
        size_t got = 0;
        for (size_t i = 0; i < k && got < n; i++) {
            size_t c = n - got < s[i].len ? n - got : s[i].len;
            std::memcpy(s[i].data, p + got, c);
            got += c;
        }
        commit(got);
        p += got;
        n -= got;
    }
    return true;
}

RespReader::Status RespReader::next_other(RespReply &out) noexcept
{
    if (error_ != nullptr) {
        return Status::error;
    }
    if (body_ != nullptr) {
        return body_got_ < body_len_ + 2 ? Status::more : finish_body(out);
    }
    if (pos_ == len_) {
        return Status::more;
    }

    size_t end = 0;
    Status s = scan(&end);
    if (s != Status::reply) {
        return s;
    }
    out = RespReply();
    const char *next = nullptr;
    bool ok = build(out, buf_ + pos_, &next);
    pos_ = end;
    scanned_ = 0;
    line_from_ = 0;
    depth_ = 0;
    if (pos_ == len_) {
        pos_ = len_ = 0;
    }
    if (!ok) {
        resp_free(out);
        return broken("out of memory");
    }
    return Status::reply;
}

// A top-level bulk string at pos_: returned when all there, else moved to
// its own block (body_) to receive the rest in place.
RespReader::Status RespReader::next_bulk(RespReply &out) noexcept
{
    const char *p = buf_ + pos_;
    const char *end = buf_ + len_;
    const char *nl = find_crlf(p + 1, end);
    if (nl == nullptr) {
        if (static_cast<size_t>(end - p) > kMaxHeader) {
            return broken("bad bulk string length");
        }
        return Status::more;
    }
    long long n = 0;
    if (!parse_ll(p + 1, nl, n) || n < -1
        || (n > 0 && static_cast<unsigned long long>(n) > limits_.max_bulk))
    {
        return broken("bad bulk string length");
    }
    const char *body = nl + 2;
    out = RespReply();
    if (n == -1) {
        pos_ = body - buf_;
    } else {
        size_t len = static_cast<size_t>(n);
        size_t have = end - body;
        large_ = len >= kLargeBulk;
        if (have < len + 2) {
            body_ = static_cast<char *>(std::malloc(len + 2));
            if (body_ == nullptr) {
                return broken("out of memory");
            }
            std::memcpy(body_, body, have);
            body_len_ = len;
            body_got_ = have;
            pos_ = len_ = 0;
            return Status::more;
        }
        if (body[len] != '\r' || body[len + 1] != '\n') {
            return broken("bulk string not followed by CRLF");
        }
        out.str = copy_str(body, len);
        if (out.str == nullptr) {
            return broken("out of memory");
        }
        out.type = RespType::string;
        out.len = len;
        pos_ = body + len + 2 - buf_;
    }
    if (pos_ == len_) {
        pos_ = len_ = 0;
    }
    return Status::reply;
}

// The bulk string received in place is complete.
RespReader::Status RespReader::finish_body(RespReply &out) noexcept
{
    char *s = body_;
    size_t len = body_len_;
    body_ = nullptr;
    body_len_ = body_got_ = 0;
    if (s[len] != '\r' || s[len + 1] != '\n') {
        std::free(s);
        return broken("bulk string not followed by CRLF");
    }
    s[len] = '\0';
    large_ = len >= kLargeBulk;
    out = RespReply();
    out.type = RespType::string;
    out.str = s;
    out.len = len;
    return Status::reply;
}

// Is the reply at pos_ complete and well-formed?  Then *end is the offset
// just past it.  Allocates nothing; goes on from where the last call
// stopped.
RespReader::Status RespReader::scan(size_t *end_off) noexcept
{
    const char *base = buf_ + pos_;
    const char *end = buf_ + len_;
    const char *p = base + scanned_;
    for (;;) {
        if (p >= end) {
            scanned_ = p - base;
            return Status::more;
        }
        if (!is_type_byte(*p)) {
            return broken("bad reply type byte");
        }
        // A long status line arriving in pieces is searched once: from
        // where the last search stopped.
        const char *from = p + 1;
        if (line_from_ > static_cast<size_t>(from - base)) {
            from = base + line_from_;
        }
        const char *nl = find_crlf(from, end);
        if (nl == nullptr) {
            if (*p != '+' && *p != '-'
                && static_cast<size_t>(end - p) > kMaxHeader)
            {
                return broken("line too long");
            }
            scanned_ = p - base;
            line_from_ = end - base - 1;      // a CR may end what is there
            return Status::more;
        }
        line_from_ = 0;
        long long n = 0;
        switch (*p) {
        case '+':
        case '-':
            p = nl + 2;
            break;
        case ':':
            if (!parse_ll(p + 1, nl, n)) {
                return broken("bad integer value");
            }
            p = nl + 2;
            break;
        case '$': {
            if (!parse_ll(p + 1, nl, n) || n < -1
                || (n > 0
                    && static_cast<unsigned long long>(n) > limits_.max_bulk))
            {
                return broken("bad bulk string length");
            }
            const char *body = nl + 2;
            if (n == -1) {
                p = body;
                break;
            }
            size_t len = static_cast<size_t>(n);
            if (static_cast<size_t>(end - body) < len + 2) {
                scanned_ = p - base;
                return Status::more;
            }
            if (body[len] != '\r' || body[len + 1] != '\n') {
                return broken("bulk string not followed by CRLF");
            }
            p = body + len + 2;
            break;
        }
        default:  // '*'
            if (!parse_ll(p + 1, nl, n) || n < -1
                || (n > 0
                    && static_cast<unsigned long long>(n)
                           > limits_.max_elements))
            {
                return broken("bad multi-bulk length");
            }
            p = nl + 2;
            if (n > 0) {
                if (depth_ >= limits_.max_depth) {
                    return broken("multi-bulk replies nested too deep");
                }
                left_[depth_++] = static_cast<uint32_t>(n);
                scanned_ = p - base;
                continue;
            }
            break;
        }
        // One element is complete, and with it maybe the arrays it ends.
        while (depth_ > 0 && --left_[depth_ - 1] == 0) {
            depth_--;
        }
        scanned_ = p - base;
        if (depth_ == 0) {
            *end_off = pos_ + scanned_;
            return Status::reply;
        }
    }
}

// Fills `r` from the reply at p, which scan() found complete.  Returns
// false when out of memory (what was built is left in `r` to free).
bool RespReader::build(RespReply &r, const char *p, const char **next) noexcept
{
    const char *nl = find_crlf(p + 1, buf_ + len_);
    long long n = 0;
    *next = nl + 2;
    switch (*p) {
    case '+':
    case '-':
        r.type = *p == '+' ? RespType::status : RespType::error;
        r.len = static_cast<size_t>(nl - (p + 1));
        r.str = copy_str(p + 1, r.len);
        return r.str != nullptr;
    case ':':
        parse_ll(p + 1, nl, n);
        r.type = RespType::integer;
        r.integer = n;
        return true;
    case '$':
        parse_ll(p + 1, nl, n);
        if (n == -1) {
            r.type = RespType::nil;
            return true;
        }
        r.type = RespType::string;
        r.len = static_cast<size_t>(n);
        r.str = copy_str(nl + 2, r.len);
        *next = nl + 2 + r.len + 2;
        return r.str != nullptr;
    default:  // '*'
        parse_ll(p + 1, nl, n);
        if (n == -1) {
            r.type = RespType::nil;
            return true;
        }
        r.type = RespType::array;
        if (n == 0) {
            return true;
        }
        r.element = static_cast<RespReply *>(
            std::calloc(static_cast<size_t>(n), sizeof(RespReply)));
        if (r.element == nullptr) {
            return false;
        }
        r.elements = static_cast<size_t>(n);
        const char *q = nl + 2;
        for (size_t i = 0; i < r.elements; i++) {
            if (!build(r.element[i], q, &q)) {
                return false;
            }
        }
        *next = q;
        return true;
    }
}

// ---- commands ---------------------------------------------------------------

ByteBuf::~ByteBuf()
{
    std::free(p);
}

bool ByteBuf::reserve(size_t n) noexcept
{
    if (n <= cap) {
        return true;
    }
    size_t ncap = cap ? cap : 256;
    while (ncap < n) {
        ncap *= 2;
    }
    auto *np = static_cast<char *>(std::realloc(p, ncap));
    if (np == nullptr) {
        return false;
    }
    p = np;
    cap = ncap;
    return true;
}

char *resp_write_command(char *p, int argc, const char *const *argv,
                         const size_t *argvlen) noexcept
{
    p = write_line(p, '*', static_cast<size_t>(argc));
    for (int i = 0; i < argc; i++) {
        size_t n = arg_len(argv, argvlen, i);
        p = write_line(p, '$', n);
        if (n != 0) {
            std::memcpy(p, argv[i], n);
            p += n;
        }
        *p++ = '\r';
        *p++ = '\n';
    }
    return p;
}

bool resp_append_command(ByteBuf &b, int argc, const char *const *argv,
                         const size_t *argvlen) noexcept
{
    if (!b.reserve(b.len + resp_command_size(argc, argv, argvlen))) {
        return false;
    }
    b.len = resp_write_command(b.p + b.len, argc, argv, argvlen) - b.p;
    return true;
}

}  // namespace fly::core
