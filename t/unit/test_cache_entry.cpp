// Unit tests: the cache entry format, its round trips and its defences
// against corrupt, truncated and hostile values.
#include "unit.hpp"

#include <cstdlib>
#include <new>
#include <vector>

#include "core/cache_entry.hpp"

using namespace fly::core;

// ---- allocation counter (decode_entry must not allocate) ----

static size_t g_allocations = 0;

void *operator new(size_t n)
{
    g_allocations++;
    void *p = std::malloc(n != 0 ? n : 1);
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    return p;
}

void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, size_t) noexcept { std::free(p); }

namespace {

constexpr size_t kFixedLen = 34;     // magic .. nhdr
constexpr size_t kMinEntryV1 = kFixedLen + 8;
constexpr size_t kMinEntry = kFixedLen + 8 + 2 + 8;   // version 2: + epoch, ntag

using Headers = std::vector<EntryHeader>;

EntryMeta meta(uint16_t status = 200)
{
    EntryMeta m;
    m.status = status;
    m.stored = 1700000000;
    m.ttl = 3600;
    m.age = 12;
    m.swr = 30;
    m.sie = 600;
    return m;
}

std::string make_entry(const EntryMeta &m, const Headers &h, std::string_view body)
{
    std::string out = "garbage to be replaced";
    assert_true(begin_entry(m, h.data(), h.size(), out));
    size_t prefix = out.size();
    out.append(body);
    assert_true(finish_entry(out, prefix));
    return out;
}

const Headers kTextHeaders = {
    {"Content-Type", "text/html; charset=utf-8"},
    {"ETag", "\"abc\""},
    {"Set-Cookie", "a=1"},
    {"Set-Cookie", "b=2"},
    {"X-Empty", ""},
};

std::string text_entry()
{
    return make_entry(meta(), kTextHeaders, "<html>hello</html>\n");
}

const std::string_view kTags[] = {"post-1", "list:posts", "user/7"};

std::string tagged_entry()
{
    EntryMeta m = meta();
    m.epoch = 42;
    std::string out;
    assert_true(begin_entry(m, kTextHeaders.data(), kTextHeaders.size(), out, kTags, 3));
    size_t prefix = out.size();
    out.append("tagged body");
    assert_true(finish_entry(out, prefix));
    return out;
}

bool is_v2(std::string_view e) { return e.size() > 4 && e[4] == 2; }

// Offset of hsum in an entry: the end of the header list (version 1), or
// of the tag list (version 2).
size_t hsum_offset(std::string_view e)
{
    auto u16 = [&](size_t at) {
        return (static_cast<size_t>(static_cast<unsigned char>(e[at])) << 8)
               | static_cast<unsigned char>(e[at + 1]);
    };
    size_t p = kFixedLen + (is_v2(e) ? 8 : 0);
    size_t n = u16(32);
    for (size_t i = 0; i < n; i++) {
        size_t nlen = u16(p);
        p += 2 + nlen;
        size_t vlen = 0;
        for (int k = 0; k < 4; k++) {
            vlen = (vlen << 8) | static_cast<unsigned char>(e[p + k]);
        }
        p += 4 + vlen;
    }
    if (is_v2(e)) {
        size_t ntag = u16(p);
        p += 2;
        for (size_t i = 0; i < ntag; i++) {
            p += 2 + u16(p);
        }
    }
    return p;
}

uint32_t fnv1a(std::string_view s)
{
    uint32_t h = 2166136261u;
    for (char c : s) {
        h ^= static_cast<unsigned char>(c);
        h *= 16777619u;
    }
    return h;
}

void put_be(std::string &s, size_t at, uint64_t v, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++) {
        s[at + i] = static_cast<char>(v >> (8 * (bytes - 1 - i)));
    }
}

void append_be(std::string &s, uint64_t v, size_t bytes)
{
    s.append(bytes, '\0');
    put_be(s, s.size() - bytes, v, bytes);
}

// Recomputes the checksum after a deliberate edit of the header section,
// so that the edit itself is what decode_entry meets.
void reseal(std::string &e)
{
    size_t at = hsum_offset(e);
    put_be(e, at, fnv1a(std::string_view(e).substr(0, at)), 4);
}

// The documented layout, written independently of begin_entry(), without
// its checks: lets tests forge entries that begin_entry() refuses.
struct Raw {
    std::string magic = "FLYC";
    uint8_t version = 1, flags = 0;
    uint16_t status = 200;
    uint64_t stored = 1700000000;
    uint32_t ttl = 60, age = 0, swr = 0, sie = 0;
    uint64_t epoch = 0;                              // version 2
    std::vector<std::pair<std::string, std::string>> headers;
    std::vector<std::string> tags;                   // version 2
    std::string body;

    std::string bytes() const
    {
        std::string s = magic;
        append_be(s, version, 1);
        append_be(s, flags, 1);
        append_be(s, status, 2);
        append_be(s, stored, 8);
        append_be(s, ttl, 4);
        append_be(s, age, 4);
        append_be(s, swr, 4);
        append_be(s, sie, 4);
        append_be(s, headers.size(), 2);
        if (version == 2) {
            append_be(s, epoch, 8);
        }
        for (const auto &h : headers) {
            append_be(s, h.first.size(), 2);
            s += h.first;
            append_be(s, h.second.size(), 4);
            s += h.second;
        }
        if (version == 2) {
            append_be(s, tags.size(), 2);
            for (const std::string &t : tags) {
                append_be(s, t.size(), 2);
                s += t;
            }
        }
        append_be(s, fnv1a(s), 4);
        append_be(s, body.size(), 4);
        return s + body;
    }
};

DecodeError decode(std::string_view data)
{
    EntryView v;
    return decode_entry(data, v);
}

void expect_error(std::string_view data, DecodeError want)
{
    DecodeError got = decode(data);
    if (got != want) {
        print_error("decode: %s, expected %s\n", std::string(decode_error_name(got)).c_str(),
                    std::string(decode_error_name(want)).c_str());
        fail();
    }
}

void assert_headers_equal(const EntryView &v, const Headers &h)
{
    assert_int_equal(v.nheaders, h.size());
    for (size_t i = 0; i < h.size(); i++) {
        assert_sv_equal(v.headers[i].name, h[i].name);
        assert_int_equal(v.headers[i].value.size(), h[i].value.size());
        assert_true(v.headers[i].value == h[i].value);
    }
}

void assert_meta_equal(const EntryMeta &a, const EntryMeta &b)
{
    assert_int_equal(a.version, b.version);
    assert_int_equal(a.epoch, b.epoch);
    assert_int_equal(a.flags, b.flags);
    assert_int_equal(a.status, b.status);
    assert_int_equal(a.stored, b.stored);
    assert_int_equal(a.ttl, b.ttl);
    assert_int_equal(a.age, b.age);
    assert_int_equal(a.swr, b.swr);
    assert_int_equal(a.sie, b.sie);
}

void round_trip(const EntryMeta &m, const Headers &h, std::string_view body)
{
    std::string e = make_entry(m, h, body);
    EntryView v;
    size_t before = g_allocations;
    DecodeError err = decode_entry(e, v);
    assert_int_equal(g_allocations, before);          // no allocation
    assert_int_equal(err, DecodeError::none);
    assert_meta_equal(v.meta, m);
    assert_headers_equal(v, h);
    assert_int_equal(v.body.size(), body.size());
    assert_true(v.body == body);
    // views point into the buffer
    assert_true(v.body.data() >= e.data() && v.body.data() + v.body.size() == e.data() + e.size());
}

// ---- round trips ----

void test_layout_matches_documentation(void **)
{
    Raw r;
    r.version = 2;
    r.status = 404;
    r.ttl = 3600;
    r.age = 12;
    r.swr = 30;
    r.sie = 600;
    r.headers = {{"Content-Type", "text/plain"}, {"X-A", ""}};
    r.body = "not found";
    EntryMeta m = meta(404);
    std::string e = make_entry(m, {{"Content-Type", "text/plain"}, {"X-A", ""}}, "not found");
    assert_int_equal(e.size(), r.bytes().size());
    assert_true(e == r.bytes());
    assert_int_equal(hsum_offset(e) + 8 + 9, e.size());

    // with an epoch and tags
    r.epoch = 0x0102030405060708ull;
    r.tags = {"post-1", "list:posts"};
    m.epoch = r.epoch;
    const std::string_view tags[] = {"post-1", "list:posts"};
    Headers h = {{"Content-Type", "text/plain"}, {"X-A", ""}};
    std::string t;
    assert_true(begin_entry(m, h.data(), h.size(), t, tags, 2));
    size_t prefix = t.size();
    t.append("not found");
    assert_true(finish_entry(t, prefix));
    assert_true(t == r.bytes());
    assert_int_equal(static_cast<unsigned char>(t[kEntryEpochOffset]), 1);
    assert_int_equal(static_cast<unsigned char>(t[kEntryEpochOffset + 7]), 8);

    // and the version 1 layout, for a meta that asks for it
    Raw v1 = r;
    v1.version = 1;
    v1.epoch = 0;
    v1.tags.clear();
    m.version = 1;
    m.epoch = 0;
    assert_true(make_entry(m, h, "not found") == v1.bytes());
}

void test_round_trip_text(void **)
{
    // the allocation counter works (round_trip() relies on it)
    size_t before = g_allocations;
    std::string big(1000, 'x');
    assert_true(g_allocations > before);

    round_trip(meta(), kTextHeaders, "<html>hello</html>\n");
    round_trip(meta(301), {{"Location", "https://example.com/"}}, "");
}

void test_round_trip_binary(void **)
{
    std::string body;
    for (int i = 0; i < 4096; i++) {
        body += static_cast<char>(i * 7);
    }
    body[0] = '\0';
    body += std::string(3, '\0');
    round_trip(meta(), {{"Content-Type", "application/octet-stream"},
                        {"Content-Encoding", "gzip"},
                        {"X-Bin", "\x80\xff\t obs-text \x01"}},
               body);
}

void test_round_trip_empty(void **)
{
    round_trip(meta(204), {}, "");
    round_trip(meta(200), {}, "body only");
    EntryMeta m;                       // all zero but the status
    m.status = 100;
    round_trip(m, {}, "");
    m = meta(599);
    m.ttl = m.age = m.swr = m.sie = UINT32_MAX;
    m.stored = (int64_t{1} << 40) - 1;
    round_trip(m, {}, "");
}

void test_round_trip_many_headers(void **)
{
    std::vector<std::string> names, values;
    for (size_t i = 0; i < kEntryMaxHeaders; i++) {
        names.push_back("X-Header-" + std::to_string(i));
        values.push_back(std::string(i * 3, 'v'));
    }
    Headers h;
    for (size_t i = 0; i < kEntryMaxHeaders; i++) {
        h.push_back({names[i], values[i]});
    }
    round_trip(meta(), h, "x");

    // one more is refused by the writer
    h.push_back({"X-One-Too-Many", "v"});
    std::string out;
    assert_false(begin_entry(meta(), h.data(), h.size(), out));
}

void test_header_bytes_limit(void **)
{
    // names + values up to kEntryMaxHeaderBytes exactly
    std::string big(kEntryMaxHeaderBytes - 2, 'v');
    std::string rest = big.substr(0, big.size() - 2);     // 3 names + "a" + rest
    round_trip(meta(), {{"X", "a"}, {"Y", rest}, {"Z", ""}}, "");
    round_trip(meta(), {{"XY", big}}, "");
    std::string out;
    Headers over = {{"XYZ", big}};
    assert_false(begin_entry(meta(), over.data(), over.size(), out));
    std::string huge(70000, 'v');
    Headers one = {{"X", huge}};
    assert_false(begin_entry(meta(), one.data(), one.size(), out));
}

void test_round_trip_vary_marker(void **)
{
    EntryMeta m = meta();
    m.flags = kEntryVaryMarker;
    // a marker's body is its generation token
    round_trip(m, {{"Vary", "Accept-Encoding, Accept-Language"}}, "0f3a9c");
    round_trip(m, {{"vary", "accept"}}, "z");
    m.status = 0;                      // a marker's status is not sent: any
    round_trip(m, {{"VARY", "x"}}, std::string(kMaxGenerationLen, 'a'));

    std::string out;
    Headers two = {{"Vary", "a"}, {"X", "b"}};
    assert_false(begin_entry(m, two.data(), two.size(), out));
    Headers none;
    assert_false(begin_entry(m, none.data(), 0, out));
    Headers other = {{"Varies", "a"}};
    assert_false(begin_entry(m, other.data(), 1, out));
    Headers empty = {{"Vary", " \t"}};
    assert_false(begin_entry(m, empty.data(), 1, out));
    Headers commas = {{"Vary", " , ,"}};
    assert_false(begin_entry(m, commas.data(), 1, out));

    // a marker whose body is not a generation token is refused by the reader
    Raw r;
    r.flags = kEntryVaryMarker;
    r.headers = {{"Vary", "a"}};
    r.body = "1a2b";
    assert_int_equal(decode(r.bytes()), DecodeError::none);
    for (const char *bad : {"", "A", "x y", "-", "\x01"}) {
        r.body = bad;
        expect_error(r.bytes(), DecodeError::bad_header);
    }
    r.body = std::string(kMaxGenerationLen + 1, 'a');
    expect_error(r.bytes(), DecodeError::bad_header);
    r.body = "1a2b";
    r.headers = {{"Vary", "a"}, {"X", "b"}};
    expect_error(r.bytes(), DecodeError::bad_header);
    r.headers = {{"X-Vary", "a"}};
    expect_error(r.bytes(), DecodeError::bad_header);
    r.headers = {};
    expect_error(r.bytes(), DecodeError::bad_header);
    r.headers = {{"Vary", ""}};
    expect_error(r.bytes(), DecodeError::bad_header);
    r.headers = {{"Vary", ","}};
    expect_error(r.bytes(), DecodeError::bad_header);
}

void test_writer_refuses_bad_input(void **)
{
    std::string out;
    const char *bad_names[] = {"", "Bad Name", "X:Y", "X\r", "\xc3\xa9", "(x)", "a\"b"};
    for (const char *n : bad_names) {
        Headers h = {{n, "v"}};
        assert_false(begin_entry(meta(), h.data(), 1, out));
    }
    Headers nul = {{std::string_view("X\0", 2), "v"}};
    assert_false(begin_entry(meta(), nul.data(), 1, out));
    const std::string_view bad_values[] = {"a\rb", "a\nb", std::string_view("a\0b", 3), "\r\n"};
    for (std::string_view v : bad_values) {
        Headers h = {{"X", v}};
        assert_false(begin_entry(meta(), h.data(), 1, out));
    }
    for (uint16_t s : {0, 99, 600, 65535}) {
        assert_false(begin_entry(meta(s), nullptr, 0, out));
    }
    EntryMeta m = meta();
    m.flags = 0x10;
    assert_false(begin_entry(m, nullptr, 0, out));
    m = meta();
    m.stored = -1;
    assert_false(begin_entry(m, nullptr, 0, out));
    m.stored = int64_t{1} << 40;
    assert_false(begin_entry(m, nullptr, 0, out));
    m.stored = INT64_MAX;
    assert_false(begin_entry(m, nullptr, 0, out));
}

void test_finish_entry(void **)
{
    std::string out;
    assert_true(begin_entry(meta(), nullptr, 0, out));
    size_t prefix = out.size();
    assert_int_equal(prefix, kMinEntry);
    // the body length is patched in
    out += "12345";
    assert_true(finish_entry(out, prefix));
    EntryView v;
    assert_int_equal(decode_entry(out, v), DecodeError::none);
    assert_sv_equal(v.body, "12345");
    // finishing again after more body is appended
    out += "678";
    assert_true(finish_entry(out, prefix));
    assert_int_equal(decode_entry(out, v), DecodeError::none);
    assert_sv_equal(v.body, "12345678");
    // nonsense prefix lengths
    assert_false(finish_entry(out, 0));
    assert_false(finish_entry(out, kMinEntryV1 - 1));
    assert_false(finish_entry(out, out.size() + 1));
    std::string empty;
    assert_false(finish_entry(empty, kMinEntryV1));
}

// ---- corruption ----

void test_every_truncation(void **)
{
    EntryMeta v1 = meta();
    v1.version = 1;
    std::string entries[] = {
        text_entry(),
        make_entry(meta(), {}, ""),
        make_entry(meta(), {{"A", ""}}, std::string(100, '\0')),
        tagged_entry(),
        make_entry(v1, kTextHeaders, "v1"),
    };
    for (const std::string &e : entries) {
        assert_int_equal(decode(e), DecodeError::none);
        size_t min = is_v2(e) ? kMinEntry : kMinEntryV1;
        for (size_t len = 0; len < e.size(); len++) {
            // a fresh copy of just `len` bytes, so ASan sees any overread
            std::vector<char> copy(e.begin(), e.begin() + static_cast<std::ptrdiff_t>(len));
            DecodeError err = decode(std::string_view(copy.data(), len));
            DecodeError want = len < min ? DecodeError::too_short : DecodeError::truncated;
            if (err != want) {
                print_error("length %zu of %zu: %s\n", len, e.size(),
                            std::string(decode_error_name(err)).c_str());
                fail();
            }
        }
    }
}

void test_trailing_bytes(void **)
{
    std::string e = text_entry();
    expect_error(e + "x", DecodeError::trailing_bytes);
    expect_error(e + std::string(1000, '\0'), DecodeError::trailing_bytes);
    // and the body length one too small
    std::string shorter = e;
    put_be(shorter, hsum_offset(e) + 4, 18, 4);
    expect_error(shorter, DecodeError::trailing_bytes);
}

void test_every_bit_flip_in_header_section(void **)
{
    std::string e = text_entry();
    size_t end = hsum_offset(e) + 4;          // everything hashed, plus hsum
    for (size_t i = 0; i < end; i++) {
        for (int bit = 0; bit < 8; bit++) {
            std::string bad = e;
            bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
            DecodeError err = decode(bad);
            if (err == DecodeError::none) {
                print_error("flip of bit %d of byte %zu accepted\n", bit, i);
                fail();
            }
        }
    }
    // a flip inside a header value keeps the syntax: only the checksum sees it
    size_t at = e.find("charset");
    std::string bad = e;
    bad[at] = 'C';
    expect_error(bad, DecodeError::bad_checksum);
    // as do flips in the stored/ttl fields
    bad = e;
    bad[20] = static_cast<char>(bad[20] ^ 0x01);    // ttl
    expect_error(bad, DecodeError::bad_checksum);
    bad = e;
    bad[hsum_offset(e)] ^= 0x40;                    // hsum itself
    expect_error(bad, DecodeError::bad_checksum);
}

void test_body_not_checksummed(void **)
{
    // the body is bounded by its exact length, not hashed (it can be large)
    std::string e = text_entry();
    e[e.size() - 2] = 'X';
    EntryView v;
    assert_int_equal(decode_entry(e, v), DecodeError::none);
    assert_sv_equal(v.body, "<html>hello</htmlX\n");
}

void test_magic_version_flags(void **)
{
    std::string e = text_entry();
    std::string bad = e;
    bad[0] = 'X';
    expect_error(bad, DecodeError::bad_magic);
    expect_error("FLYC", DecodeError::too_short);
    expect_error(std::string(100, '\0'), DecodeError::bad_magic);
    expect_error("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\nhello world!", DecodeError::bad_magic);

    Raw r;
    r.version = 0;
    expect_error(r.bytes(), DecodeError::bad_version);
    r.version = 3;
    expect_error(r.bytes(), DecodeError::bad_version);
    r.version = 0xff;
    expect_error(r.bytes(), DecodeError::bad_version);
    r.version = 1;
    r.flags = 0x80;                     // a feature this version lacks
    expect_error(r.bytes(), DecodeError::bad_version);
    r.flags = 0;
    assert_int_equal(decode(r.bytes()), DecodeError::none);
}

void test_absurd_lengths(void **)
{
    // nhdr
    Raw r;
    std::string e = r.bytes();
    put_be(e, 32, 0xffff, 2);
    expect_error(e, DecodeError::too_many_headers);
    put_be(e, 32, kEntryMaxHeaders + 1, 2);
    expect_error(e, DecodeError::too_many_headers);
    put_be(e, 32, 1, 2);                // one header announced, none there
    expect_error(e, DecodeError::truncated);

    // a name length / value length beyond the data
    r.headers = {{"Name", "value"}};
    e = r.bytes();
    put_be(e, kFixedLen, 0xffff, 2);
    expect_error(e, DecodeError::truncated);
    e = r.bytes();
    put_be(e, kFixedLen + 2 + 4, 0xffffffff, 4);
    expect_error(e, DecodeError::truncated);
    e = r.bytes();
    put_be(e, kFixedLen + 2 + 4, 0x7fffffff, 4);
    expect_error(e, DecodeError::truncated);

    // a body length beyond the data
    e = r.bytes();
    size_t blen_at = hsum_offset(e) + 4;
    put_be(e, blen_at, 0xffffffff, 4);
    expect_error(e, DecodeError::truncated);
    put_be(e, blen_at, 1, 4);
    expect_error(e, DecodeError::truncated);

    // lengths that fit but exceed the header byte budget
    r.headers = {{"A", std::string(40000, 'a')}, {"B", std::string(30000, 'b')}};
    expect_error(r.bytes(), DecodeError::bad_header);
}

void test_forged_entries(void **)
{
    // valid checksums over values begin_entry() would refuse
    Raw r;
    assert_int_equal(decode(r.bytes()), DecodeError::none);

    const char *bad_names[] = {"", "A B", "A:B", "\xff"};
    for (const char *n : bad_names) {
        r.headers = {{n, "v"}};
        expect_error(r.bytes(), DecodeError::bad_header);
    }
    const std::string bad_values[] = {"a\rb", "a\nb", std::string("a\0b", 3)};
    for (const std::string &v : bad_values) {
        r.headers = {{"X", v}};
        expect_error(r.bytes(), DecodeError::bad_header);
    }
    r.headers.clear();

    for (uint16_t s : {0, 99, 600, 65535}) {
        r.status = s;
        expect_error(r.bytes(), DecodeError::bad_header);
    }
    r.status = 200;

    // stored so large that stored + ttl would overflow int64
    r.stored = UINT64_MAX;
    expect_error(r.bytes(), DecodeError::bad_header);
    r.stored = uint64_t{1} << 63;
    expect_error(r.bytes(), DecodeError::bad_header);
    r.stored = uint64_t{1} << 40;
    expect_error(r.bytes(), DecodeError::bad_header);
    r.stored = 0;
    assert_int_equal(decode(r.bytes()), DecodeError::none);

    // an edit resealed with a good checksum is caught by the syntax checks
    std::string e = text_entry();
    e[e.find("ETag")] = ' ';
    reseal(e);
    expect_error(e, DecodeError::bad_header);
}

void test_error_names(void **)
{
    assert_sv_equal(decode_error_name(DecodeError::none), "none");
    assert_sv_equal(decode_error_name(DecodeError::too_short), "too short");
    assert_sv_equal(decode_error_name(DecodeError::bad_magic), "bad magic");
    assert_sv_equal(decode_error_name(DecodeError::bad_version), "bad version");
    assert_sv_equal(decode_error_name(DecodeError::truncated), "truncated");
    assert_sv_equal(decode_error_name(DecodeError::bad_header), "bad header");
    assert_sv_equal(decode_error_name(DecodeError::bad_checksum), "bad checksum");
    assert_sv_equal(decode_error_name(DecodeError::trailing_bytes), "trailing bytes");
    assert_sv_equal(decode_error_name(DecodeError::too_many_headers), "too many headers");
    assert_sv_equal(decode_error_name(static_cast<DecodeError>(99)), "unknown");
}

void test_age_and_freshness(void **)
{
    EntryMeta m = meta();
    m.stored = 1000;
    m.ttl = 60;
    m.age = 5;
    assert_int_equal(entry_age(m, 1000), 5);
    assert_int_equal(entry_age(m, 1030), 35);
    assert_int_equal(entry_age(m, 900), 5);        // clock went back
    assert_true(entry_fresh(m, 1000));
    assert_true(entry_fresh(m, 1059));
    assert_false(entry_fresh(m, 1060));
    // the extremes a decoded entry can hold do not overflow
    m.stored = (int64_t{1} << 40) - 1;
    m.ttl = m.age = UINT32_MAX;
    assert_true(entry_fresh(m, 0));
    assert_int_equal(entry_age(m, INT64_MAX / 2), INT64_MAX / 2 - m.stored + UINT32_MAX);
}

// ---- version 2: epoch and tags; version 1 still read ----

void test_round_trip_tags_and_epoch(void **)
{
    std::string e = tagged_entry();
    EntryView v;
    size_t before = g_allocations;
    assert_int_equal(decode_entry(e, v), DecodeError::none);
    assert_int_equal(g_allocations, before);
    assert_int_equal(v.meta.version, 2);
    assert_int_equal(v.meta.epoch, 42);
    assert_int_equal(v.ntags, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_sv_equal(v.tags[i], kTags[i]);
    }
    assert_headers_equal(v, kTextHeaders);
    assert_sv_equal(v.body, "tagged body");

    // the largest tag lists
    std::vector<std::string> names;
    for (size_t i = 0; i < kMaxTags; i++) {
        names.push_back("t" + std::to_string(i) + std::string(40, 'x'));
    }
    std::vector<std::string_view> tags(names.begin(), names.end());
    std::string out;
    EntryMeta m = meta();
    m.epoch = UINT64_MAX;
    assert_true(begin_entry(m, nullptr, 0, out, tags.data(), tags.size()));
    assert_true(finish_entry(out, out.size()));
    assert_int_equal(decode_entry(out, v), DecodeError::none);
    assert_int_equal(v.ntags, kMaxTags);
    assert_int_equal(v.meta.epoch, UINT64_MAX);
    std::string one_more = "x";
    tags.push_back(one_more);
    assert_false(begin_entry(m, nullptr, 0, out, tags.data(), tags.size()));
}

void test_version_1_still_decodes(void **)
{
    Raw r;
    r.headers = {{"Content-Type", "text/plain"}};
    r.body = "old";
    std::string old = r.bytes();
    EntryView v;
    assert_int_equal(decode_entry(old, v), DecodeError::none);
    assert_int_equal(v.meta.version, 1);
    assert_int_equal(v.meta.epoch, 0);
    assert_int_equal(v.ntags, 0);
    assert_sv_equal(v.body, "old");
    // and re-encodes to the same bytes
    std::string again;
    assert_true(begin_entry(v.meta, v.headers, v.nheaders, again));
    again.append(v.body);
    assert_true(finish_entry(again, again.size() - 3));
    assert_true(again == old);
    // a version 2 layout (epoch, tag count) is read as version 2 only
    r.version = 2;
    r.epoch = 7;
    r.tags = {"a"};
    assert_int_equal(decode_entry(r.bytes(), v), DecodeError::none);
    assert_int_equal(v.meta.epoch, 7);
    assert_int_equal(v.ntags, 1);
}

void test_epoch_and_tags_checksummed(void **)
{
    // the epoch sits at its fixed offset, under the checksum like the
    // tags: a damaged one is never taken for a newer fill
    std::string e = tagged_entry();
    std::string bad = e;
    put_be(bad, kEntryEpochOffset, 0x1234, 8);
    expect_error(bad, DecodeError::bad_checksum);
    reseal(bad);
    EntryView v;
    assert_int_equal(decode_entry(bad, v), DecodeError::none);
    assert_int_equal(v.meta.epoch, 0x1234);
    bad = e;
    bad[e.find("list:posts")] = 'L';
    expect_error(bad, DecodeError::bad_checksum);
}

void test_bad_tags(void **)
{
    std::string out;
    EntryMeta m = meta();
    const std::string_view bad[] = {"", "a,b", "a b", "\x01", "caf\xc3\xa9",
                                    std::string_view("a\0", 2)};
    for (std::string_view t : bad) {
        assert_false(begin_entry(m, nullptr, 0, out, &t, 1));
    }
    std::string long_tag(kMaxTagLen + 1, 't');
    std::string_view lt = long_tag;
    assert_false(begin_entry(m, nullptr, 0, out, &lt, 1));
    std::string max_tag(kMaxTagLen, 't');
    std::string_view mt = max_tag;
    assert_true(begin_entry(m, nullptr, 0, out, &mt, 1));
    // more than kMaxTagBytes in all
    std::vector<std::string_view> many(kMaxTagBytes / kMaxTagLen + 1, mt);
    assert_false(begin_entry(m, nullptr, 0, out, many.data(), many.size()));
    // no tags in a vary marker, none and no epoch in version 1
    EntryMeta marker = meta();
    marker.flags = kEntryVaryMarker;
    Headers vary = {{"Vary", "Accept"}};
    std::string_view ok = "ok";
    assert_false(begin_entry(marker, vary.data(), 1, out, &ok, 1));
    EntryMeta v1 = meta();
    v1.version = 1;
    assert_false(begin_entry(v1, nullptr, 0, out, &ok, 1));
    v1.epoch = 1;
    assert_false(begin_entry(v1, nullptr, 0, out));
    EntryMeta v3 = meta();
    v3.version = 3;
    assert_false(begin_entry(v3, nullptr, 0, out));

    // the reader refuses the same (valid checksums)
    Raw r;
    r.version = 2;
    for (std::string_view t : bad) {
        r.tags = {std::string(t)};
        expect_error(r.bytes(), DecodeError::bad_header);
    }
    r.tags = {long_tag};
    expect_error(r.bytes(), DecodeError::bad_header);
    r.tags.assign(kMaxTags + 1, "t");
    expect_error(r.bytes(), DecodeError::too_many_headers);
    r.tags = {"ok"};
    r.flags = kEntryVaryMarker;
    r.headers = {{"Vary", "Accept"}};
    r.body = "g1";
    expect_error(r.bytes(), DecodeError::bad_header);
    r.tags.clear();
    assert_int_equal(decode(r.bytes()), DecodeError::none);
    // a tag count beyond the data
    std::string e = tagged_entry();
    size_t ntag_at = e.find("post-1") - 4;
    put_be(e, ntag_at, 50, 2);
    expect_error(e, DecodeError::truncated);
}

// ---- fuzz-ish: random bytes and mutations, under ASan ----

// xorshift64*: deterministic, local state
struct Rng {
    uint64_t s;
    uint64_t next()
    {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 2685821657736338717ull;
    }
    size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(next() % n); }
};

// Whatever decode_entry accepts is in bounds and re-encodes to the very
// same bytes (the format is canonical).
void check_accepted(const std::vector<char> &buf, const EntryView &v)
{
    const char *lo = buf.data();
    const char *hi = buf.data() + buf.size();
    assert_true(v.nheaders <= kEntryMaxHeaders);
    assert_true(v.body.data() >= lo && v.body.data() + v.body.size() == hi);
    for (size_t i = 0; i < v.nheaders; i++) {
        const EntryHeader &h = v.headers[i];
        assert_true(h.name.data() >= lo && h.name.data() + h.name.size() <= hi);
        assert_true(h.value.data() >= lo && h.value.data() + h.value.size() <= hi);
    }
    for (size_t i = 0; i < v.ntags; i++) {
        assert_true(v.tags[i].data() >= lo && v.tags[i].data() + v.tags[i].size() <= hi);
    }
    std::string again;
    assert_true(begin_entry(v.meta, v.headers, v.nheaders, again, v.tags, v.ntags));
    size_t prefix = again.size();
    again.append(v.body);
    assert_true(finish_entry(again, prefix));
    assert_int_equal(again.size(), buf.size());
    assert_memory_equal(again.data(), buf.data(), buf.size());
}

size_t decode_exact(const std::vector<char> &buf)
{
    EntryView v;
    // an exactly sized heap copy: any overread is an ASan report
    DecodeError e = decode_entry(std::string_view(buf.data(), buf.size()), v);
    if (e == DecodeError::none) {
        check_accepted(buf, v);
        return 1;
    }
    return 0;
}

void mutate(Rng &rng, std::vector<char> &b)
{
    switch (rng.below(6)) {
    case 0:                                          // flip a bit
        if (!b.empty()) b[rng.below(b.size())] ^= static_cast<char>(1 << rng.below(8));
        break;
    case 1:                                          // random byte
        if (!b.empty()) b[rng.below(b.size())] = static_cast<char>(rng.next());
        break;
    case 2:                                          // 0xff run (absurd lengths)
        for (size_t i = rng.below(b.size() + 1), k = 0; i < b.size() && k < 4; i++, k++) {
            b[i] = '\xff';
        }
        break;
    case 3:                                          // truncate
        b.resize(rng.below(b.size() + 1));
        break;
    case 4:                                          // insert a byte
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(rng.below(b.size() + 1)),
                 static_cast<char>(rng.next()));
        break;
    default:                                         // delete a byte
        if (!b.empty()) b.erase(b.begin() + static_cast<std::ptrdiff_t>(rng.below(b.size())));
        break;
    }
}

void test_fuzz_random_bytes(void **)
{
    Rng rng{0x5eed1234abcdefull};
    size_t accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        std::vector<char> buf(rng.below(400));
        for (char &c : buf) {
            c = static_cast<char>(rng.next());
        }
        // half of them get a valid magic and version, to reach deeper
        if (iter % 2 == 0 && buf.size() >= 5) {
            buf[0] = 'F'; buf[1] = 'L'; buf[2] = 'Y'; buf[3] = 'C'; buf[4] = 1;
            if (buf.size() >= kFixedLen) {
                buf[5] = 0;
                buf[32] = 0;
                buf[33] = static_cast<char>(rng.below(4));
            }
        }
        accepted += decode_exact(buf);
    }
    assert_int_equal(accepted, 0);     // 32 random checksum bits never match here
}

// decode_known_entry(): what decode_entry() accepts decodes to the same
// views; every bound is still checked (truncations refused, no overread
// of mutated bytes: ASan), only the checksum and header syntax are not.
bool within(const std::vector<char> &b, std::string_view v)
{
    return v.empty() || (v.data() >= b.data() && v.data() + v.size() <= b.data() + b.size());
}

void test_known_entry(void **)
{
    std::string seeds[] = {text_entry(), make_entry(meta(), {}, ""), tagged_entry()};
    for (const std::string &e : seeds) {
        EntryView a, b;
        assert_int_equal(decode_entry(e, a), DecodeError::none);
        assert_int_equal(decode_known_entry(e, b), DecodeError::none);
        assert_int_equal(a.nheaders, b.nheaders);
        for (size_t i = 0; i < a.nheaders; i++) {
            assert_true(a.headers[i].name == b.headers[i].name);
            assert_true(a.headers[i].value == b.headers[i].value);
        }
        assert_int_equal(a.ntags, b.ntags);
        assert_true(a.body == b.body);
        assert_int_equal(a.meta.status, b.meta.status);
        assert_int_equal(a.meta.epoch, b.meta.epoch);
        for (size_t len = 0; len < e.size(); len++) {
            std::vector<char> copy(e.begin(), e.begin() + static_cast<std::ptrdiff_t>(len));
            assert_int_not_equal(decode_known_entry(std::string_view(copy.data(), len), b),
                                 DecodeError::none);
        }
    }
    // a changed header byte: refused by decode_entry, not looked at here
    std::string e = text_entry();
    size_t at = e.find("text/html");
    assert_true(at != std::string::npos);
    e[at] = '\n';
    EntryView v;
    assert_int_not_equal(decode_entry(e, v), DecodeError::none);
    assert_int_equal(decode_known_entry(e, v), DecodeError::none);

    Rng rng{7};
    for (int iter = 0; iter < 20000; iter++) {
        const std::string &seed = seeds[iter % 3];
        std::vector<char> buf(seed.begin(), seed.end());
        for (size_t r = 0, n = 1 + rng.below(4); r < n; r++) {
            mutate(rng, buf);
        }
        EntryView m;
        if (decode_known_entry(std::string_view(buf.data(), buf.size()), m) == DecodeError::none) {
            for (size_t i = 0; i < m.nheaders; i++) {
                assert_true(within(buf, m.headers[i].name) && within(buf, m.headers[i].value));
            }
            for (size_t i = 0; i < m.ntags; i++) {
                assert_true(within(buf, m.tags[i]));
            }
            assert_true(within(buf, m.body));
        }
    }
}

void test_fuzz_mutations(void **)
{
    std::string body;
    for (int i = 0; i < 64; i++) {
        body += static_cast<char>(i * 13);
    }
    EntryMeta marker = meta();
    marker.flags = kEntryVaryMarker;
    const std::string seeds[] = {
        text_entry(),
        make_entry(meta(), {}, ""),
        make_entry(meta(), {{"Content-Encoding", "gzip"}, {"X", "\x80"}}, body),
        make_entry(marker, {{"Vary", "Accept-Encoding"}}, "5e1f"),
        tagged_entry(),
    };
    Rng rng{42};
    size_t accepted = 0;
    for (int iter = 0; iter < 40000; iter++) {
        const std::string &seed = seeds[iter % 5];
        std::vector<char> buf(seed.begin(), seed.end());
        size_t rounds = 1 + rng.below(4);
        for (size_t r = 0; r < rounds; r++) {
            mutate(rng, buf);
        }
        accepted += decode_exact(buf);
    }
    // body-only edits are accepted (and checked by check_accepted); the
    // rest must not be
    assert_true(accepted > 0);
    assert_true(accepted < 40000 / 2);
}

}  // namespace

int main()
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_matches_documentation),
        cmocka_unit_test(test_round_trip_text),
        cmocka_unit_test(test_round_trip_binary),
        cmocka_unit_test(test_round_trip_empty),
        cmocka_unit_test(test_round_trip_many_headers),
        cmocka_unit_test(test_header_bytes_limit),
        cmocka_unit_test(test_round_trip_vary_marker),
        cmocka_unit_test(test_writer_refuses_bad_input),
        cmocka_unit_test(test_finish_entry),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_every_bit_flip_in_header_section),
        cmocka_unit_test(test_body_not_checksummed),
        cmocka_unit_test(test_magic_version_flags),
        cmocka_unit_test(test_absurd_lengths),
        cmocka_unit_test(test_forged_entries),
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_age_and_freshness),
        cmocka_unit_test(test_round_trip_tags_and_epoch),
        cmocka_unit_test(test_version_1_still_decodes),
        cmocka_unit_test(test_epoch_and_tags_checksummed),
        cmocka_unit_test(test_bad_tags),
        cmocka_unit_test(test_fuzz_random_bytes),
        cmocka_unit_test(test_fuzz_mutations),
        cmocka_unit_test(test_known_entry),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
