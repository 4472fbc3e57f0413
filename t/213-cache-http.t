# The HTTP details clients see on a cache HIT (issue 10): conditional
# requests answered from the entry in RFC 9110 13.2.2's order, with the
# headers a 304 must carry; Range requests served from a stored full
# response (If-Range, multi-range, HEAD); Age with several values; the
# stored Date; CDN-Cache-Control and fly_cache_control_header (RFC 9213).
#
# The demo app's /hdr sends the validators asked for and counts requests
# (X-Origin-Count), so a HIT that did not reach it shows the fill's count.
# Requests go straight to the scl nginx on one keep-alive connection (one
# worker), so a fill is in Redis before the next lookup.  Each test uses
# its own path (a `t` query parameter), since Redis keeps keys between
# blocks.
use FlyEdge::Test;
use FlyEdge::CacheCheck qw(:http);    # url req xcache oc hv show rkey pttl redis_http
use POSIX ();
use Time::Local qw(timegm);

sub http_date { POSIX::strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime($_[0])) }

my %MON = (Jan => 0, Feb => 1, Mar => 2, Apr => 3, May => 4, Jun => 5, Jul => 6, Aug => 7,
           Sep => 8, Oct => 9, Nov => 10, Dec => 11);
sub unix_of {
    my ($d) = @_;
    my ($day, $mon, $y, $H, $M, $S) = ($d // '') =~ /^\w{3}, (\d\d) (\w{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT$/
        or return undef;
    return timegm($S, $M, $H, $day, $MON{$mon}, $y);
}

# MISS then HIT: returns both.
sub fill {
    my ($path, $name) = @_;
    my $m = req($path);
    my $h = req($path);
    my $ok = is(xcache($m), 'MISS', "$name: first request is a MISS");
    $ok &= is(xcache($h), 'HIT', "$name: the second is a HIT");
    unless ($ok) { show($m); show($h) }
    return ($m, $h);
}

# A Redis reply slower than the default 100 ms turns a HIT into ERROR (fail
# open); nothing here is about that, and a busy machine (CI's, or the ASan
# pass) can be that slow.
our $HTTP = redis_http(timeout => '5s');

our $CACHE = <<'EOF';
fly_cache on;
fly_cache_status_header X-Cache;
location / {
    proxy_pass http://app;
}
location /date/ {
    proxy_pass_header Date;
    proxy_pass http://app/;
}
location /own/ {
    fly_cache_control_header Fly-Cache-Control;
    proxy_pass http://app/;
}
location /pass/ {
    fly_cache_control_header Fly-Cache-Control;
    fly_cache_control_pass on;
    proxy_pass http://app/;
}
location /nocache/ {
    fly_cache off;
    proxy_pass http://app/;
}
EOF

our $LM = 'Tue, 01 Oct 2024 10:00:00 GMT';
our $LM_T = main::unix_of($LM);

run_tests(pg => 0);

__DATA__

=== TEST 1: conditional requests on a HIT: RFC 9110 13.2.2's order, 304 and 412 from the entry
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $lm = $main::LM_T;
my $p = main::url('/hdr', t => 1, 'Cache-Control' => 'max-age=60', ETag => '"v1"', 'Last-Modified' => $main::LM,
                  body => "the page\n");
my ($m, $h) = main::fill($p, 'validators');
my $count = main::oc($m);
my @cases = (
    # [name, headers, status]: what RFC 9110 13.2.2 gives
    ['If-None-Match that matches wins over an earlier If-Modified-Since',
        { 'If-None-Match' => '"v1"', 'If-Modified-Since' => main::http_date($lm - 3600) }, 304],
    ['If-Modified-Since later than Last-Modified', { 'If-Modified-Since' => main::http_date($lm + 3600) }, 304],
    ['If-Modified-Since equal to Last-Modified', { 'If-Modified-Since' => $main::LM }, 304],
    ['If-Modified-Since earlier than Last-Modified', { 'If-Modified-Since' => main::http_date($lm - 1) }, 200],
    ['If-None-Match that does not match: If-Modified-Since is not looked at',
        { 'If-None-Match' => '"v2"', 'If-Modified-Since' => main::http_date($lm + 3600) }, 200],
    ['If-None-Match compares weakly: W/"v1"', { 'If-None-Match' => 'W/"v1"' }, 304],
    ['If-None-Match with a list', { 'If-None-Match' => '"a", "b,c" ,"v1"' }, 304],
    ['If-None-Match: *', { 'If-None-Match' => '*' }, 304],
    ['a malformed If-None-Match counts as absent: If-Modified-Since decides',
        { 'If-None-Match' => 'v1', 'If-Modified-Since' => main::http_date($lm + 60) }, 304],
    ['a malformed If-None-Match alone', { 'If-None-Match' => '"v1' }, 200],
    ['If-Match that matches', { 'If-Match' => '"v1"' }, 200],
    ['If-Match: *', { 'If-Match' => '*' }, 200],
    ['If-Match that does not match', { 'If-Match' => '"v2"' }, 412],
    ['If-Match compares strongly: W/"v1" does not match', { 'If-Match' => 'W/"v1"' }, 412],
    ['If-Match that matches: If-Unmodified-Since is not looked at',
        { 'If-Match' => '"v1"', 'If-Unmodified-Since' => main::http_date($lm - 3600) }, 200],
    ['If-Unmodified-Since earlier than Last-Modified', { 'If-Unmodified-Since' => main::http_date($lm - 1) }, 412],
    ['If-Unmodified-Since equal to Last-Modified', { 'If-Unmodified-Since' => $main::LM }, 200],
    ['If-Unmodified-Since that is not a date is ignored', { 'If-Unmodified-Since' => 'yesterday' }, 200],
    ['If-Match is evaluated before If-None-Match', { 'If-Match' => '"v2"', 'If-None-Match' => '"v1"' }, 412],
    ['If-Unmodified-Since is evaluated before If-None-Match',
        { 'If-Unmodified-Since' => main::http_date($lm - 1), 'If-None-Match' => '"v1"' }, 412],
    ['a passing If-Match, then If-None-Match', { 'If-Match' => '"v1"', 'If-None-Match' => '"v1"' }, 304],
);
for my $c (@cases) {
    my ($name, $hdrs, $want) = @$c;
    my $r = main::req($p, %$hdrs);
    my $ok = is($r->{status}, $want, "$name: $want");
    $ok &= is(main::xcache($r), 'HIT', "$name: answered from the cache");
    $ok &= is(main::oc($r), $count, "$name: the app was not asked") if $want != 412;
    $ok &= is($r->{content}, "the page\n", "$name: the body") if $want == 200;
    $ok &= is($r->{content}, '', "$name: no body") if $want == 304;
    main::show($r) unless $ok;
}
my $head = main::req($p, method => 'HEAD', 'If-None-Match' => '"v1"');
is($head->{status}, 304, 'HEAD with a matching If-None-Match: 304');
my $after = main::req($p);
is($after->{status}, 200, 'the entry is untouched by them: 200');
is(main::xcache($after), 'HIT', 'still a HIT');
is(main::oc($after), $count, 'from the fill');
--- error_log
fly_cache: ignoring malformed If-None-Match


=== TEST 2: a 304 from the cache carries ETag, Cache-Control, Expires, Vary, Date, Content-Location, Age; no representation metadata
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => 2, 'Cache-Control' => 'max-age=60', ETag => 'W/"w2"', 'Last-Modified' => $main::LM,
                  Expires => main::http_date(time + 3600), Vary => 'Accept-Language', 'Content-Location' => '/hdr/2.en',
                  'Content-Language' => 'en', 'Content-Type' => 'text/plain; charset=utf-8', 'X-Kept' => 'yes',
                  body => 'the page');
my %en = ('Accept-Language' => 'en');
my $m = main::req($p, %en);
my $h = main::req($p, %en);
is(main::xcache($h), 'HIT', 'the variant is stored');
my $nm = main::req($p, %en, 'If-None-Match' => 'W/"w2"');
is($nm->{status}, 304, 'If-None-Match with the weak ETag: 304');
is(main::xcache($nm), 'HIT', 'from the cache');
for my $name (qw(etag cache-control expires vary date content-location last-modified x-kept)) {
    is(main::hv($nm, $name), main::hv($h, $name), "the 304 has the HIT's $name") or main::show($nm);
}
like(main::hv($nm, 'age') // '', qr/^\d+$/, 'the 304 has Age');
for my $name (qw(content-type content-length content-language accept-ranges)) {
    ok(!defined $nm->{headers}{$name}, "the 304 has no $name") or diag("$name: " . main::hv($nm, $name));
}
my $other = main::req($p, 'Accept-Language' => 'fr', 'If-None-Match' => 'W/"w2"');
is(main::xcache($other), 'MISS', 'another variant is not answered from this one ...');
is($other->{status}, 200, '... the app has no conditionals on /hdr: 200');
my $gone = main::req(main::url('/hdr', t => '2-404', status => 404, 'Cache-Control' => 'max-age=60', ETag => '"n"',
                               body => 'missing'));
my $s404 = main::req(main::url('/hdr', t => '2-404', status => 404, 'Cache-Control' => 'max-age=60', ETag => '"n"',
                               body => 'missing'), 'If-None-Match' => '"n"');
is(main::xcache($s404), 'HIT', 'a stored 404 ...');
is($s404->{status}, 404, '... ignores preconditions (RFC 9110 13.2.1): still 404');
is($s404->{content}, 'missing', 'with its body');


=== TEST 3: Range on a HIT: 206 from the stored body, multi-range, 416, If-Range, HEAD
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/big', size => 1000, t => 3, 'Cache-Control' => 'max-age=60', ETag => '"r1"',
                  'Last-Modified' => $main::LM);
my ($m, $h) = main::fill($p, 'full body');
my $body = $m->{content};
my $count = main::oc($m);
is(length $body, 1000, 'the whole body was stored');
is(main::hv($h, 'accept-ranges'), 'bytes', 'a HIT says it accepts ranges');

my $r = main::req($p, Range => 'bytes=0-9');
is($r->{status}, 206, 'Range: bytes=0-9 gives 206');
is(main::xcache($r), 'HIT', 'from the cache');
is(main::oc($r), $count, 'without the app');
is(main::hv($r, 'content-range'), 'bytes 0-9/1000', 'Content-Range');
is($r->{content}, substr($body, 0, 10), 'the first 10 bytes');
is(main::hv($r, 'etag'), '"r1"', 'with the ETag');

my $tail = main::req($p, Range => 'bytes=-5');
is($tail->{status}, 206, 'a suffix range: 206');
is($tail->{content}, substr($body, -5), 'the last 5 bytes');

my $multi = main::req($p, Range => 'bytes=0-4,100-104');
is($multi->{status}, 206, 'two ranges: 206');
my ($boundary) = (main::hv($multi, 'content-type') // '') =~ m{^multipart/byteranges; boundary=(\S+)$};
ok($boundary, 'multipart/byteranges') or main::show($multi);
like($multi->{content}, qr{Content-Range: bytes 0-4/1000\r\n\r\n\Q${\ substr($body, 0, 5)}\E\r\n}, 'the first part');
like($multi->{content}, qr{Content-Range: bytes 100-104/1000\r\n\r\n\Q${\ substr($body, 100, 5)}\E\r\n}, 'the second part');

my $bad = main::req($p, Range => 'bytes=5000-');
is($bad->{status}, 416, 'a range past the end: 416');
is(main::hv($bad, 'content-range'), 'bytes */1000', 'with the length');

my @if_range = (
    ['If-Range with the ETag', '"r1"', 206],
    ['If-Range with another ETag', '"r0"', 200],
    ['If-Range with a weak ETag never holds', 'W/"r1"', 200],
    ['If-Range with Last-Modified (a year before Date: strong)', $main::LM, 206],
    ['If-Range with another date', main::http_date($main::LM_T + 1), 200],
    ['If-Range that is neither', 'whenever', 200],
);
for my $c (@if_range) {
    my ($name, $v, $want) = @$c;
    my $x = main::req($p, Range => 'bytes=0-9', 'If-Range' => $v);
    is($x->{status}, $want, "$name: $want") or main::show($x);
    is(length $x->{content}, $want == 206 ? 10 : 1000, "$name: " . ($want == 206 ? 'the range' : 'the whole body'));
    is(main::oc($x), $count, "$name: without the app");
}
my $inm = main::req($p, Range => 'bytes=0-9', 'If-None-Match' => '"r1"');
is($inm->{status}, 304, 'If-None-Match is evaluated before Range: 304');

my $head = main::req($p, method => 'HEAD', Range => 'bytes=0-9');
is($head->{status}, 200, 'HEAD ignores Range (RFC 9110 14.2): 200');
is(main::hv($head, 'content-length'), 1000, 'with the whole length');
is(main::hv($head, 'accept-ranges'), 'bytes', 'and Accept-Ranges');
is($head->{content}, '', 'no body');

# a Last-Modified 10 s before Date is weak for If-Range (RFC 9110 8.8.2.2)
my $lm = main::http_date(time - 10);
my $q = main::url('/big', size => 100, t => '3-recent', 'Cache-Control' => 'max-age=60', 'Last-Modified' => $lm);
main::fill($q, 'recent Last-Modified');
my $weak = main::req($q, Range => 'bytes=0-9', 'If-Range' => $lm);
is($weak->{status}, 200, 'If-Range with a Last-Modified only 10 s before Date: the whole body');
is(length $weak->{content}, 100, 'all 100 bytes');
is(main::req($q, Range => 'bytes=0-9')->{status}, 206, 'the same Range without If-Range: 206');


=== TEST 4: Age with several values: the first member counts; an invalid Age is treated as stale
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my @cases = (
    # [name, [Age values, one header line each], stored?]
    ['Age: 7200, 0 with max-age=3600', ['7200, 0'], 0],
    ['Age: 0 then Age: 7200 on two lines', ['0', '7200'], 1],
    ['Age: 7200 then Age: 0 on two lines', ['7200', '0'], 0],
    ['Age: 10, 7200', ['10, 7200'], 1],
    ['Age: , 20 (an empty member first)', [', 20'], 1],
    ['Age: abc', ['abc'], 0],
    ['Age: -5', ['-5'], 0],
    ['Age: 1.5', ['1.5'], 0],
);
my $i = 0;
for my $c (@cases) {
    my ($name, $ages, $stored) = @$c;
    $i++;
    my $p = main::url('/hdr', t => "4-$i", 'Cache-Control' => 'max-age=3600', map { (Age => $_) } @$ages);
    my $a = main::req($p);
    my $b = main::req($p);
    is(main::xcache($a), 'MISS', "$name: MISS");
    if ($stored) {
        is(main::xcache($b), 'HIT', "$name: stored, fresh");
        is(main::oc($b), main::oc($a), "$name: the HIT did not reach the app");
    } else {
        is(main::xcache($b), 'MISS', "$name: not stored");
        cmp_ok(main::oc($b), '>', main::oc($a), "$name: the app answered again");
    }
}
my $p = main::url('/hdr', t => '4-age', 'Cache-Control' => 'max-age=3600', Age => '100, 5');
main::req($p);
my $hit = main::req($p);
cmp_ok($hit->{headers}{age}, '>=', 100, 'the HIT counts the first Age value (100) ...');
cmp_ok($hit->{headers}{age}, '<', 3600, '... and is fresh');
--- error_log
fly cache: not storing: invalid-age
fly cache: not storing: expired


=== TEST 5: a HIT carries the stored Date, not a new one; Age says how old it is
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
for my $loc ('/', '/date/') {
    my $p = main::url("${loc}hdr", t => 5, 'Cache-Control' => 'max-age=60');
    my ($m, $h) = main::fill($p, "$loc: Date");
    my $filled = time;     # the entry was stored no later than this second
    my $stored = main::unix_of($h->{headers}{date});
    ok(defined $stored, "$loc: the HIT has a Date") or main::show($h);
    cmp_ok($stored, '<=', main::unix_of($m->{headers}{date}), "$loc: not later than the MISS's");
    is($h->{headers}{date}, $m->{headers}{date}, "$loc: the origin's Date, which the MISS passed on")
        if $loc eq '/date/';
    # two seconds later the clock has moved on, the stored Date has not
    ok($t->wait_until(sub { time >= $filled + 2 }, scaled(5)), "$loc: 2 s went by");
    my $later = main::req($p);
    is(main::xcache($later), 'HIT', "$loc: still a HIT");
    is($later->{headers}{date}, $h->{headers}{date}, "$loc: the same Date as the first HIT");
    my $now = time;
    cmp_ok($later->{headers}{age}, '>=', 2, "$loc: Age counts the time since");
    cmp_ok(abs($stored + $later->{headers}{age} - $now), '<=', scaled(2), "$loc: Date + Age is the time the HIT was sent");
}


=== TEST 6: CDN-Cache-Control is the field this cache follows over Cache-Control, and it is not sent on
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => '6-store', 'Cache-Control' => 'no-store', 'CDN-Cache-Control' => 'max-age=60');
my ($m, $h) = main::fill($p, 'Cache-Control: no-store, CDN-Cache-Control: max-age=60');
is(main::oc($h), main::oc($m), 'the HIT did not reach the app');
is(main::hv($h, 'cache-control'), 'no-store', 'the client still gets Cache-Control: no-store');
ok(!defined $m->{headers}{'cdn-cache-control'}, 'the MISS does not pass CDN-Cache-Control on');
ok(!defined $h->{headers}{'cdn-cache-control'}, 'nor does the HIT');

my $q = main::url('/hdr', t => '6-nostore', 'Cache-Control' => 'max-age=60', 'CDN-Cache-Control' => 'no-store');
my $a = main::req($q);
my $b = main::req($q);
is(main::xcache($b), 'MISS', 'CDN-Cache-Control: no-store over Cache-Control: max-age=60: not stored');
cmp_ok(main::oc($b), '>', main::oc($a), 'the app answered again');
is(main::hv($b, 'cache-control'), 'max-age=60', 'Cache-Control reaches the client');

my $short = main::url('/hdr', t => '6-ttl', 'Cache-Control' => 'max-age=600', 'CDN-Cache-Control' => 'max-age=30');
main::fill($short, 'CDN-Cache-Control: max-age=30');
my $ttl = main::pttl(main::rkey($short));
ok($ttl > 0 && $ttl <= 30_000, "its max-age, not Cache-Control's (Redis TTL $ttl ms)");

my $exp = main::url('/hdr', t => '6-expires', 'CDN-Cache-Control' => 'public', Expires => main::http_date(time + 600));
my $e1 = main::req($exp);
is(main::xcache(main::req($exp)), 'MISS', 'with CDN-Cache-Control in use, Expires does not count (RFC 9213): not stored');

for my $c (['max-age=abc', 'an invalid one'], ['', 'an empty one'], ['max-age=60, "x', 'an unterminated one']) {
    my ($v, $name) = @$c;
    my $f = main::url('/hdr', t => "6-fallback-$name", 'Cache-Control' => 'max-age=120', 'CDN-Cache-Control' => $v);
    main::fill($f, "$name falls back to Cache-Control");
    my $ttl = main::pttl(main::rkey($f));
    ok($ttl > 60_000 && $ttl <= 120_000, "$name: Cache-Control's max-age=120 (Redis TTL $ttl ms)");
}

my $off = main::url('/nocache/hdr', t => 6, 'CDN-Cache-Control' => 'max-age=60');
is(main::hv(main::req($off), 'cdn-cache-control'), 'max-age=60', 'a location without fly_cache passes it on untouched');


=== TEST 7: fly_cache_control_header: a field for fly-edge alone, over CDN-Cache-Control and Cache-Control; fly_cache_control_pass on
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my @h = ('Cache-Control' => 'no-store', 'CDN-Cache-Control' => 'no-store', 'Fly-Cache-Control' => 'max-age=60');
my $own = main::url('/own/hdr', t => 7, @h);
my ($m, $h) = main::fill($own, 'Fly-Cache-Control: max-age=60 over no-store in the others');
for my $r ($m, $h) {
    my $what = main::xcache($r);
    ok(!defined $r->{headers}{'fly-cache-control'}, "$what: Fly-Cache-Control is not sent on");
    ok(!defined $r->{headers}{'cdn-cache-control'}, "$what: nor CDN-Cache-Control");
    is(main::hv($r, 'cache-control'), 'no-store', "$what: Cache-Control is");
}
my $no = main::url('/own/hdr', t => '7-no', 'Cache-Control' => 'max-age=60', 'CDN-Cache-Control' => 'max-age=60',
                   'Fly-Cache-Control' => 'private');
my $a = main::req($no);
is(main::xcache(main::req($no)), 'MISS', 'Fly-Cache-Control: private wins: not stored');

my $plain = main::url('/hdr', t => 7, @h);
my $p1 = main::req($plain);
is(main::xcache(main::req($plain)), 'MISS', 'where it is not configured, Fly-Cache-Control is nothing: no-store holds');
is(main::hv($p1, 'fly-cache-control'), 'max-age=60', 'and it goes to the client like any header');

my $pass = main::url('/pass/hdr', t => 7, @h);
my ($pm, $ph) = main::fill($pass, 'fly_cache_control_pass on');
for my $r ($pm, $ph) {
    my $what = main::xcache($r);
    is(main::hv($r, 'fly-cache-control'), 'max-age=60', "$what: Fly-Cache-Control is sent on");
    is(main::hv($r, 'cdn-cache-control'), 'no-store', "$what: so is CDN-Cache-Control");
}


=== TEST 8: fly_cache_control_header Cache-Control is refused
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache on;
    fly_cache_control_header cache-control;
    proxy_pass http://app;
}
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_control_header": "cache-control" cannot be used here/
qr{/conf/server\.conf:3$}m


=== TEST 9: fly_cache_control_header with an invalid name, fly_cache_control_pass with a bad value
--- http_config eval: $main::HTTP
--- config
fly_cache_control_header "Fly Cache";
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_control_header": invalid header name "Fly Cache"/
qr{/conf/server\.conf:1$}m


=== TEST 10: fly_cache_control_pass takes on or off
--- http_config eval: $main::HTTP
--- config
fly_cache_control_pass yes;
--- must_die
--- error_log
qr/\[emerg\] invalid value "yes" in "fly_cache_control_pass" directive, it must be "on" or "off"/
qr{/conf/server\.conf:1$}m
