// Unit tests: the RESP reader (every type, nesting and size limits, input
// split at every byte, malformed lengths and terminators, the in-place
// path of large bulk strings, pushed pub/sub arrays) and the command
// writer.
#include "unit.hpp"

#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/resp.hpp"

using namespace fly::core;

namespace {

// A reply as text: +OK, -ERR x, :42, $5:hello, nil, *2[:1,$1:a].
std::string show(const RespReply &r)
{
    switch (r.type) {
    case RespType::nil: return "nil";
    case RespType::status: return "+" + std::string(r.str, r.len);
    case RespType::error: return "-" + std::string(r.str, r.len);
    case RespType::integer: return ":" + std::to_string(r.integer);
    case RespType::string:
        assert_int_equal(r.str[r.len], '\0');
        return "$" + std::to_string(r.len) + ":" + std::string(r.str, r.len);
    case RespType::array: {
        std::string s = "*" + std::to_string(r.elements) + "[";
        for (size_t i = 0; i < r.elements; i++) {
            s += (i ? "," : "") + show(r.element[i]);
        }
        return s + "]";
    }
    }
    return "?";
}

// What a reader makes of `in` handed over in pieces of `piece` bytes
// through prepare()/commit() (0: all at once with feed()): the replies
// joined with " | ", then "!why" after an error.
std::string read_all(const std::string &in, size_t piece = 0,
                     const RespLimits &limits = RespLimits())
{
    RespReader rd(limits);
    std::string out;
    auto drain = [&]() {
        for (;;) {
            RespReply r;
            RespReader::Status st = rd.next(r);
            if (st == RespReader::Status::more) {
                return true;
            }
            if (st == RespReader::Status::error) {
                out += std::string(out.empty() ? "" : " | ") + "!" + rd.error();
                return false;
            }
            out += (out.empty() ? "" : " | ") + show(r);
            resp_free(r);
        }
    };
    if (piece == 0) {
        if (!rd.feed(in.data(), in.size())) {
            return out + "!" + rd.error();
        }
        drain();
        return out;
    }
    size_t off = 0;
    while (off < in.size()) {
        RespSpan s[2];
        size_t k = rd.prepare(s);
        if (k == 0) {
            return out + "!" + rd.error();
        }
        size_t want = in.size() - off < piece ? in.size() - off : piece;
        size_t got = 0;
        for (size_t i = 0; i < k && got < want; i++) {
            size_t c = want - got < s[i].len ? want - got : s[i].len;
            std::memcpy(s[i].data, in.data() + off + got, c);
            got += c;
        }
        rd.commit(got);
        off += got;
        if (!drain()) {
            return out;
        }
    }
    return out;
}

// The same stream split in two at every byte, and in 1-byte pieces: the
// same replies as read whole.
void check_every_split(const std::string &in, const std::string &want)
{
    assert_sv_equal(read_all(in), want);
    assert_sv_equal(read_all(in, 1), want);
    assert_sv_equal(read_all(in, 7), want);
    for (size_t cut = 1; cut < in.size(); cut++) {
        RespReader rd;
        std::string out;
        auto take = [&]() {
            RespReply r;
            RespReader::Status st;
            while ((st = rd.next(r)) == RespReader::Status::reply) {
                out += (out.empty() ? "" : " | ") + show(r);
                resp_free(r);
            }
            assert_true(st == RespReader::Status::more);
        };
        assert_true(rd.feed(in.data(), cut));
        take();
        assert_true(rd.feed(in.data() + cut, in.size() - cut));
        take();
        if (out != want) {
            fprintf(stderr, "split at %zu of %zu\n", cut, in.size());
        }
        assert_sv_equal(out, want);
        assert_int_equal(rd.pending(), 0);
    }
}

std::string bulk(const std::string &s)
{
    return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
}

std::string pattern(size_t n, unsigned seed)
{
    std::string s(n, '\0');
    for (size_t i = 0; i < n; i++) {
        s[i] = static_cast<char>((i * 131 + seed * 7 + (i >> 8)) & 0xff);
    }
    return s;
}

}  // namespace

// ---- every type ---------------------------------------------------------------

static void test_types(void **)
{
    assert_sv_equal(read_all("+OK\r\n"), "+OK");
    assert_sv_equal(read_all("+\r\n"), "+");
    assert_sv_equal(read_all("-ERR wrong\r\n"), "-ERR wrong");
    assert_sv_equal(read_all(":42\r\n"), ":42");
    assert_sv_equal(read_all(":-7\r\n"), ":-7");
    assert_sv_equal(read_all(":9223372036854775807\r\n"), ":9223372036854775807");
    assert_sv_equal(read_all(":-9223372036854775808\r\n"), ":-9223372036854775808");
    assert_sv_equal(read_all("$5\r\nhello\r\n"), "$5:hello");
    assert_sv_equal(read_all("$0\r\n\r\n"), "$0:");
    assert_sv_equal(read_all("$-1\r\n"), "nil");
    assert_sv_equal(read_all("*-1\r\n"), "nil");
    assert_sv_equal(read_all("*0\r\n"), "*0[]");
    assert_sv_equal(read_all("*2\r\n$1\r\na\r\n$2\r\nbc\r\n"), "*2[$1:a,$2:bc]");
    assert_sv_equal(read_all("*3\r\n:1\r\n$-1\r\n*2\r\n+x\r\n*0\r\n"),
                    "*3[:1,nil,*2[+x,*0[]]]");
    assert_sv_equal(read_all("*2\r\n-ERR a\r\n*-1\r\n"), "*2[-ERR a,nil]");
    // binary bytes, CR and LF inside a bulk string
    std::string bin("a\r\nb\0c\r", 7);
    assert_sv_equal(read_all(bulk(bin)), "$7:" + bin);
    // a status line holding a lone CR is read up to the CRLF
    assert_sv_equal(read_all("+a\rb\r\n"), "+a\rb");
    // several replies in one piece
    assert_sv_equal(read_all("+OK\r\n:1\r\n$-1\r\n$3\r\nabc\r\n"),
                    "+OK | :1 | nil | $3:abc");
    assert_string_equal(resp_type_name(RespType::array), "array");
    assert_string_equal(resp_type_name(RespType::nil), "nil");
}

static void test_incomplete(void **)
{
    // nothing is returned until a reply is complete
    assert_sv_equal(read_all("+OK"), "");
    assert_sv_equal(read_all("+OK\r"), "");
    assert_sv_equal(read_all("$5\r\nhel"), "");
    assert_sv_equal(read_all("$5\r\nhello"), "");
    assert_sv_equal(read_all("$5\r\nhello\r"), "");
    assert_sv_equal(read_all("*2\r\n:1\r\n"), "");
    assert_sv_equal(read_all("*2\r\n*1\r\n"), "");
    RespReader rd;
    assert_true(rd.feed("*2\r\n:1\r\n", 8));
    RespReply r;
    assert_true(rd.next(r) == RespReader::Status::more);
    assert_int_equal(rd.pending(), 8);
    assert_true(rd.feed(":2\r\n", 4));
    assert_true(rd.next(r) == RespReader::Status::reply);
    assert_sv_equal(show(r), "*2[:1,:2]");
    resp_free(r);
    assert_int_equal(rd.pending(), 0);
    assert_true(rd.next(r) == RespReader::Status::more);
    assert_true(rd.feed(nullptr, 0));
}

// ---- split at every byte ------------------------------------------------------

static void test_split_every_byte(void **)
{
    std::string big = pattern(16500, 1);     // a large bulk: received in place
    std::string in = "+OK\r\n" + bulk("hello") + ":-12\r\n" + "$-1\r\n"
                     + "*3\r\n:1\r\n$-1\r\n*2\r\n+x\r\n*0\r\n" + bulk(big)
                     + "-ERR x\r\n" + bulk("") + bulk(pattern(16400, 2))
                     + "*2\r\n" + bulk(pattern(300, 3)) + bulk("z");
    std::string want = "+OK | $5:hello | :-12 | nil | *3[:1,nil,*2[+x,*0[]]] | $16500:"
                       + big + " | -ERR x | $0: | $16400:" + pattern(16400, 2)
                       + " | *2[$300:" + pattern(300, 3) + ",$1:z]";
    check_every_split(in, want);
    for (size_t piece : {2, 3, 4095, 4096, 4097, 16384, 70000}) {
        assert_sv_equal(read_all(in, piece), want);
    }
}

static void test_many_pipelined(void **)
{
    // 200 replies of many sizes, read in pieces of various sizes
    std::string in, want;
    for (size_t i = 0; i < 200; i++) {
        std::string v = pattern(i * 397 % 40000, static_cast<unsigned>(i));
        in += bulk(v);
        want += (i ? " | $" : "$") + std::to_string(v.size()) + ":" + v;
    }
    for (size_t piece : {0, 1000, 4096, 65536, 100000}) {
        assert_sv_equal(read_all(in, piece), want);
    }
}

// ---- malformed input ----------------------------------------------------------

static void test_malformed(void **)
{
    assert_sv_equal(read_all("$abc\r\n"), "!bad bulk string length");
    assert_sv_equal(read_all("$-2\r\n"), "!bad bulk string length");
    assert_sv_equal(read_all("$\r\n"), "!bad bulk string length");
    assert_sv_equal(read_all("$1x\r\n"), "!bad bulk string length");
    assert_sv_equal(read_all("$99999999999999999999\r\n"), "!bad bulk string length");
    assert_sv_equal(read_all("*-5\r\n"), "!bad multi-bulk length");
    assert_sv_equal(read_all("*abc\r\n"), "!bad multi-bulk length");
    assert_sv_equal(read_all("*3000000000\r\n"), "!bad multi-bulk length");
    assert_sv_equal(read_all(":12x4\r\n"), "!bad integer value");
    assert_sv_equal(read_all(":\r\n"), "!bad integer value");
    assert_sv_equal(read_all(":-\r\n"), "!bad integer value");
    assert_sv_equal(read_all(":9223372036854775808\r\n"), "!bad integer value");
    assert_sv_equal(read_all(":-9223372036854775809\r\n"), "!bad integer value");
    assert_sv_equal(read_all(std::string("\x00\x01garbage\r\n", 10)), "!bad reply type byte");
    assert_sv_equal(read_all("hello"), "!bad reply type byte");
    assert_sv_equal(read_all("*2\r\n:1\r\n$abc\r\n"), "!bad bulk string length");
    assert_sv_equal(read_all("*2\r\n:1\r\nX\r\n"), "!bad reply type byte");
    // a reply after good ones: those come out first
    assert_sv_equal(read_all("+OK\r\n:1\r\n$abc\r\n"), "+OK | :1 | !bad bulk string length");
}

static void test_missing_crlf(void **)
{
    // a bulk string must be followed by CRLF: top level, received in place, nested
    assert_sv_equal(read_all("$3\r\nabcXY"), "!bulk string not followed by CRLF");
    assert_sv_equal(read_all("$3\r\nabc\rX"), "!bulk string not followed by CRLF");
    assert_sv_equal(read_all("$3\r\nabc\n\r"), "!bulk string not followed by CRLF");
    assert_sv_equal(read_all("$3\r\nabcXY", 1), "!bulk string not followed by CRLF");
    std::string big = pattern(30000, 9);
    assert_sv_equal(read_all("$30000\r\n" + big + "XY", 4096), "!bulk string not followed by CRLF");
    assert_sv_equal(read_all("*1\r\n$3\r\nabcXY"), "!bulk string not followed by CRLF");
    // a length line without CRLF: refused once longer than any valid one
    assert_sv_equal(read_all("$" + std::string(100, '1')), "!bad bulk string length");
    assert_sv_equal(read_all("$" + std::string(100, '1'), 1), "!bad bulk string length");
    assert_sv_equal(read_all("*" + std::string(100, '1')), "!line too long");
    assert_sv_equal(read_all(":" + std::string(100, '1')), "!line too long");
    assert_sv_equal(read_all("*1\r\n$" + std::string(100, '1')), "!line too long");
    // LF alone ends nothing
    assert_sv_equal(read_all("+OK\n:1\n"), "");
    assert_sv_equal(read_all("$1\nx\n"), "");
}

// ---- limits -------------------------------------------------------------------

static void test_nesting(void **)
{
    std::string seven, eight;
    for (int i = 0; i < 7; i++) seven += "*1\r\n";
    eight = seven + "*1\r\n";
    assert_sv_equal(read_all(seven + ":1\r\n"), "*1[*1[*1[*1[*1[*1[*1[:1]]]]]]]");
    assert_sv_equal(read_all(eight + ":1\r\n"), "!multi-bulk replies nested too deep");
    assert_sv_equal(read_all(eight + ":1\r\n", 1), "!multi-bulk replies nested too deep");
    // an empty (or nil) array opens no level
    assert_sv_equal(read_all(seven + "*0\r\n"), "*1[*1[*1[*1[*1[*1[*1[*0[]]]]]]]]");
    assert_sv_equal(read_all(seven + "*-1\r\n"), "*1[*1[*1[*1[*1[*1[*1[nil]]]]]]]");
    // levels close as their last element comes
    assert_sv_equal(read_all("*2\r\n*2\r\n:1\r\n*1\r\n:2\r\n:3\r\n+after\r\n"),
                    "*2[*2[:1,*1[:2]],:3] | +after");
    RespLimits shallow;
    shallow.max_depth = 2;
    assert_sv_equal(read_all("*1\r\n*1\r\n:1\r\n", 0, shallow), "*1[*1[:1]]");
    assert_sv_equal(read_all("*1\r\n*1\r\n*1\r\n:1\r\n", 0, shallow),
                    "!multi-bulk replies nested too deep");
}

static void test_huge_lengths(void **)
{
    // Redis's own limit is 512 MiB: one byte more is refused before any
    // allocation
    assert_sv_equal(read_all("$536870913\r\n"), "!bad bulk string length");
    assert_sv_equal(read_all("*1\r\n$536870913\r\n"), "!bad bulk string length");
    RespLimits small;
    small.max_bulk = 1000;
    small.max_elements = 3;
    assert_sv_equal(read_all(bulk(pattern(1000, 4)), 0, small).substr(0, 6), "$1000:");
    assert_sv_equal(read_all("$1001\r\n", 0, small), "!bad bulk string length");
    assert_sv_equal(read_all("*3\r\n:1\r\n:2\r\n:3\r\n", 0, small), "*3[:1,:2,:3]");
    assert_sv_equal(read_all("*4\r\n", 0, small), "!bad multi-bulk length");
    // a reply that is not a bulk string must fit in max_buffer
    RespLimits tight;
    tight.max_buffer = 64 * 1024;
    std::string line = "+" + std::string(200000, 'x') + "\r\n";
    assert_sv_equal(read_all(line, 0, tight), "!reply too large");
    assert_sv_equal(read_all(line).substr(0, 10), "+xxxxxxxxx");
    // a long line arriving in pieces (searched for its CRLF once)
    std::string got = read_all(line + ":7\r\n", 1000);
    assert_int_equal(got.size(), 1 + 200000 + 5);
    assert_sv_equal(got.substr(got.size() - 6), "x | :7");
    assert_sv_equal(read_all("+ab\r", 1) , "");
    assert_sv_equal(read_all("+ab\r\n", 1), "+ab");
    assert_sv_equal(read_all("+a\rb\r\r\n", 1), "+a\rb\r");
    std::string arr = "*2\r\n" + bulk(std::string(100000, 'a')) + bulk("b");
    assert_sv_equal(read_all(arr, 0, tight), "!reply too large");
    assert_sv_equal(read_all(arr, 5000).substr(0, 13), "*2[$100000:aa");
}

static void test_error_is_sticky(void **)
{
    RespReader rd;
    assert_true(rd.feed("$x\r\n+OK\r\n", 9));
    RespReply r;
    assert_true(rd.next(r) == RespReader::Status::error);
    assert_string_equal(rd.error(), "bad bulk string length");
    assert_true(rd.next(r) == RespReader::Status::error);
    RespSpan s[2];
    assert_int_equal(rd.prepare(s), 0);
    assert_false(rd.feed("+OK\r\n", 5));
    // a new connection: a fresh stream
    rd.reset();
    assert_null(rd.error());
    assert_true(rd.feed("+OK\r\n", 5));
    assert_true(rd.next(r) == RespReader::Status::reply);
    assert_sv_equal(show(r), "+OK");
    resp_free(r);
    // reset also drops a bulk string being received in place
    std::string head = "$100000\r\n" + pattern(10, 1);
    assert_true(rd.feed(head.data(), head.size()));
    assert_true(rd.next(r) == RespReader::Status::more);
    assert_int_equal(rd.pending(), 10);
    rd.reset();
    assert_int_equal(rd.pending(), 0);
    assert_true(rd.feed(":5\r\n", 4));
    assert_true(rd.next(r) == RespReader::Status::reply);
    assert_sv_equal(show(r), ":5");
}

// ---- the in-place path --------------------------------------------------------

static void test_large_bulk_in_place(void **)
{
    const size_t n = 900 * 1024;
    std::string v = pattern(n, 5);
    std::string wire = bulk(v) + "+NEXT\r\n" + bulk(pattern(50000, 6));

    RespReader rd;
    RespSpan s[2];
    // the first receive goes to the buffer: it holds the header
    assert_int_equal(rd.prepare(s), 1);
    assert_true(s[0].len >= 4096);
    size_t first = 1000;
    std::memcpy(s[0].data, wire.data(), first);
    rd.commit(first);
    RespReply r;
    assert_true(rd.next(r) == RespReader::Status::more);

    // from now on the body goes straight into its block, followed by a
    // little of the buffer for what comes after
    assert_int_equal(rd.prepare(s), 2);
    size_t header = wire.find("\r\n") + 2;
    char *block = s[0].data - (first - header);
    assert_int_equal(s[0].len, n + 2 - (first - header));
    assert_true(s[1].len > 0 && s[1].len <= 4096);
    size_t off = first;
    // receive the body in 64 KiB pieces: always into the same block
    while (off < header + n + 2) {
        assert_int_equal(rd.prepare(s), 2);
        assert_ptr_equal(s[0].data, block + (off - header));
        size_t c = 65536 < s[0].len ? 65536 : s[0].len;
        std::memcpy(s[0].data, wire.data() + off, c);
        rd.commit(c);
        off += c;
        if (off < header + n + 2) {
            assert_true(rd.next(r) == RespReader::Status::more);
        }
    }
    // the reply's string is that block: no copy
    assert_true(rd.next(r) == RespReader::Status::reply);
    assert_ptr_equal(r.str, block);
    assert_int_equal(r.len, n);
    assert_int_equal(r.str[n], '\0');
    assert_true(std::memcmp(r.str, v.data(), n) == 0);
    // the caller may keep it
    char *kept = r.str;
    r.str = nullptr;
    resp_free(r);

    // after a large bulk string, a receive takes at most 4 KiB into the
    // buffer, so that the next large body is received in place again
    assert_int_equal(rd.prepare(s), 1);
    assert_true(s[0].len <= 4096);
    size_t c = s[0].len < wire.size() - off ? s[0].len : wire.size() - off;
    std::memcpy(s[0].data, wire.data() + off, c);
    rd.commit(c);
    off += c;
    assert_true(rd.next(r) == RespReader::Status::reply);
    assert_sv_equal(show(r), "+NEXT");
    resp_free(r);
    assert_true(rd.next(r) == RespReader::Status::more);
    assert_int_equal(rd.prepare(s), 2);       // the 50000-byte one, in place
    c = wire.size() - off;
    assert_int_equal(s[0].len, c);
    std::memcpy(s[0].data, wire.data() + off, c);
    rd.commit(c);
    assert_true(rd.next(r) == RespReader::Status::reply);
    assert_int_equal(r.len, 50000);
    assert_true(std::memcmp(r.str, pattern(50000, 6).data(), 50000) == 0);
    resp_free(r);
    std::free(kept);
}

static void test_body_and_next_reply_in_one_receive(void **)
{
    // a receive that completes the body also brings the next replies
    // (into the spare span): both come out, in order
    std::string v = pattern(40000, 7);
    std::string wire = bulk(v) + ":1\r\n+OK\r\n";
    RespReader rd;
    assert_true(rd.feed(wire.data(), 100));
    RespReply r;
    assert_true(rd.next(r) == RespReader::Status::more);
    RespSpan s[2];
    assert_int_equal(rd.prepare(s), 2);
    size_t rest = wire.size() - 100;
    assert_true(s[0].len < rest && s[0].len + s[1].len >= rest);
    std::memcpy(s[0].data, wire.data() + 100, s[0].len);
    std::memcpy(s[1].data, wire.data() + 100 + s[0].len, rest - s[0].len);
    rd.commit(rest);
    assert_true(rd.next(r) == RespReader::Status::reply);
    assert_int_equal(r.len, 40000);
    resp_free(r);
    assert_true(rd.next(r) == RespReader::Status::reply);
    assert_sv_equal(show(r), ":1");
    assert_true(rd.next(r) == RespReader::Status::reply);
    assert_sv_equal(show(r), "+OK");
    resp_free(r);
    assert_true(rd.next(r) == RespReader::Status::more);
    assert_int_equal(rd.pending(), 0);
}

// ---- pushed arrays ------------------------------------------------------------

static void test_pubsub_messages(void **)
{
    // what a SUBSCRIBEd connection receives: the confirmation, then
    // messages nobody asked for, one after the other
    std::string in = "*3\r\n$9\r\nsubscribe\r\n$3\r\ninv\r\n:1\r\n";
    std::string want = "*3[$9:subscribe,$3:inv,:1]";
    for (int i = 0; i < 50; i++) {
        std::string payload = "key-" + std::to_string(i);
        in += "*3\r\n$7\r\nmessage\r\n$3\r\ninv\r\n" + bulk(payload);
        want += " | *3[$7:message,$3:inv,$" + std::to_string(payload.size()) + ":" + payload + "]";
    }
    assert_sv_equal(read_all(in), want);
    assert_sv_equal(read_all(in, 1), want);
    assert_sv_equal(read_all(in, 13), want);
}

static void test_large_array_in_pieces(void **)
{
    // 20000 elements arriving 100 bytes at a time (the scan goes on from
    // where it stopped instead of starting again)
    std::string in = "*20000\r\n";
    for (int i = 0; i < 20000; i++) {
        in += i % 2 ? ":" + std::to_string(i) + "\r\n" : bulk(std::to_string(i));
    }
    std::string got = read_all(in, 100);
    assert_sv_equal(got.substr(0, 22), "*20000[$1:0,:1,$1:2,:3");
    assert_sv_equal(got.substr(got.size() - 16), "$5:19998,:19999]");
}

// ---- commands -----------------------------------------------------------------

static void test_commands(void **)
{
    const char *argv[] = {"GET", "fly:key"};
    ByteBuf b;
    assert_true(resp_append_command(b, 2, argv, nullptr));
    assert_sv_equal(std::string_view(b.p, b.len), "*2\r\n$3\r\nGET\r\n$7\r\nfly:key\r\n");
    // binary arguments with lengths, an empty one
    std::string val("a\0b\r\n", 5);
    const char *argv2[] = {"SET", "k", val.data(), ""};
    size_t lens[] = {3, 1, val.size(), 0};
    b.len = 0;
    assert_true(resp_append_command(b, 4, argv2, lens));
    assert_sv_equal(std::string_view(b.p, b.len),
                    std::string("*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\0b\r\n\r\n$0\r\n\r\n", 37));
    assert_true(resp_command_size(4, argv2, lens) >= b.len);
    // appends: two commands back to back, and what a reader makes of them
    assert_true(resp_append_command(b, 2, argv, nullptr));
    std::string two(b.p, b.len);
    assert_sv_equal(read_all(two.substr(two.find("*2"))), "*2[$3:GET,$7:fly:key]");
    // a large value: the size bound holds
    std::string big(1 << 20, 'v');
    const char *argv3[] = {"SET", "k", big.data()};
    size_t lens3[] = {3, 1, big.size()};
    ByteBuf c;
    assert_true(resp_append_command(c, 3, argv3, lens3));
    assert_int_equal(c.len, 4 + 9 + 7 + 10 + big.size() + 2);
    assert_true(resp_command_size(3, argv3, lens3) >= c.len);
}

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_split_every_byte),
        cmocka_unit_test(test_many_pipelined),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_missing_crlf),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_huge_lengths),
        cmocka_unit_test(test_error_is_sticky),
        cmocka_unit_test(test_large_bulk_in_place),
        cmocka_unit_test(test_body_and_next_reply_in_one_receive),
        cmocka_unit_test(test_pubsub_messages),
        cmocka_unit_test(test_large_array_in_pieces),
        cmocka_unit_test(test_commands),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
