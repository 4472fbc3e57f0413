# Revalidation (issue 10): an expired entry with a validator is refreshed
# with a conditional request (If-None-Match / If-Modified-Since from the
# stored ETag / Last-Modified); a 304 updates the stored headers (RFC 9111
# 4.3.4: not the framing ones) and the TTL and the client gets the stored
# body (REVALIDATED); a 200 is a normal fill; fly_cache_revalidate off and
# the client's own preconditions send the request on as it came.
#
# The demo app's /hdr?cond=1 answers a matching If-None-Match (or a
# not-earlier If-Modified-Since) with a 304 carrying the URL's headers
# (Cache-Control from cc304= when given) and counts its requests
# (X-Origin-Count), so the 304's count shows in the updated headers.  With
# fly_cache_revalidate on, a response with a validator and max-age=0 is
# stored with ttl 0: every request after it revalidates, no clock needed.
# Requests go straight to the scl nginx on one keep-alive connection (one
# worker), so a fill is in Redis before the next lookup.  Each test has a
# path of its own (`t=`), since Redis keeps keys between blocks.
use FlyEdge::Test;
use FlyEdge::CacheCheck qw(:http);    # url req xcache oc hv show expect rkey pttl redis_http

our $HTTP = redis_http(timeout => '5s');

our $CACHE = <<'EOF';
fly_cache on;
fly_cache_status_header X-Cache;
location / {
    proxy_pass http://app;
}
location /off/ {
    fly_cache_revalidate off;
    proxy_pass http://app/;
}
EOF

our $LM = 'Tue, 01 Oct 2024 10:00:00 GMT';

run_tests(pg => 0);

__DATA__

=== TEST 1: ETag: a 304 updates the headers and the TTL, the stored body is served (REVALIDATED), then HITs
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => 1, cond => 1, ETag => '"e1"', 'Cache-Control' => 'max-age=0',
                  cc304 => 'max-age=300', 'X-Kept' => 'k', body => "the body\n");
my $m = main::req($p);
main::expect($m, 'first', cache => 'MISS', body => "the body\n");
my $n = main::oc($m);
my $r = main::req($p);
main::expect($r, 'expired, revalidated with If-None-Match', cache => 'REVALIDATED', body => "the body\n");
is(main::oc($r), $n + 1, 'the app was asked (its 304 count is in the updated headers)');
is(main::hv($r, 'cache-control'), 'max-age=300', "the 304's Cache-Control replaced the stored one");
is(main::hv($r, 'etag'), '"e1"', 'ETag kept');
is(main::hv($r, 'x-kept'), 'k', 'a header the 304 repeats');
is(main::hv($r, 'content-type'), 'text/plain', "the stored Content-Type (a 304 has none)");
is(main::hv($r, 'content-length'), length("the body\n"), 'the stored body framing');
ok(!defined main::hv($r, 'age'), 'no Age: the response was just validated');
my $h = main::req($p);
main::expect($h, 'after the 304', cache => 'HIT', body => "the body\n");
is(main::oc($h), $n + 1, 'the HIT carries the stored, updated headers: the app was not asked');
is(main::hv($h, 'cache-control'), 'max-age=300', 'stored with the new freshness');
cmp_ok(main::pttl(main::rkey($p)), '>', 250_000, 'and its Redis TTL');


=== TEST 2: Last-Modified alone: If-Modified-Since; HEAD is not revalidated; the updated entry is stored for every region worker
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => 2, cond => 1, 'Last-Modified' => $main::LM, 'Cache-Control' => 'max-age=0',
                  body => "lm\n");
my $m = main::req($p);
main::expect($m, 'first', cache => 'MISS', body => "lm\n");
my $r = main::req($p);
main::expect($r, 'expired', cache => 'REVALIDATED', body => "lm\n");
is(main::oc($r), main::oc($m) + 1, 'a 304 from the app');
is(main::hv($r, 'last-modified'), $main::LM, 'Last-Modified kept');
my $hd = main::req($p, method => 'HEAD');
is(main::xcache($hd), 'EXPIRED', 'HEAD of an expired entry goes to the app as it came');
my $again = main::req($p);
main::expect($again, 'max-age=0 again: revalidated again', cache => 'REVALIDATED', body => "lm\n");


=== TEST 3: the representation changed: a 200 to our conditional request is a normal fill
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => 3, cond => 1, ETag => '"e1"', 'Cache-Control' => 'max-age=0',
                  echo => 'If-None-Match', body => "v:");
my $m = main::req($p);
main::expect($m, 'first', cache => 'MISS', body => "v:If-None-Match: \n");
my $r = main::req($p, 'X-Test-Etag' => '"e2"');
main::expect($r, 'a new ETag at the app', cache => 'EXPIRED', body => "v:If-None-Match: \"e1\"\n");
is(main::hv($r, 'etag'), '"e2"', 'the new representation');
my $n = main::req($p, 'X-Test-Etag' => '"e2"');
main::expect($n, 'the new entry revalidates with the new ETag', cache => 'REVALIDATED',
             body => "v:If-None-Match: \"e1\"\n");
is(main::hv($n, 'etag'), '"e2"', 'its ETag');


=== TEST 4: fly_cache_revalidate off: a plain GET; without a validator: a plain GET, not stored stale
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/off/hdr', t => 4, cond => 1, ETag => '"e1"', 'Cache-Control' => 'max-age=1',
                  echo => 'If-None-Match', body => "v:");
my $m = main::req($p);
main::expect($m, 'first', cache => 'MISS', body => "v:If-None-Match: \n");
cmp_ok(main::pttl(main::rkey($p)), '<=', 1000, 'kept no longer than its freshness');
my $q = main::url('/hdr', t => '4b', cond => 1, 'Cache-Control' => 'max-age=0', body => "no validator\n");
main::expect(main::req($q), 'max-age=0 without a validator', cache => 'MISS');
main::expect(main::req($q), 'is not stored', cache => 'MISS');
my $v = main::url('/hdr', t => '4c', cond => 1, ETag => '"x"', 'Cache-Control' => 'max-age=1', body => "x\n");
main::expect(main::req($v), 'with a validator', cache => 'MISS');
cmp_ok(main::pttl(main::rkey($v)), '>', 30_000, 'kept past its freshness, for a 304');
my $o = main::url('/off/hdr', t => '4d', cond => 1, ETag => '"e1"', 'Cache-Control' => 'max-age=0', body => "x\n");
main::expect(main::req($o), 'max-age=0 with revalidation off', cache => 'MISS');
main::expect(main::req($o), 'is not stored', cache => 'MISS');


=== TEST 5: the client's own preconditions go to the app as they came, never mixed with ours
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => 5, cond => 1, ETag => '"e1"', 'Cache-Control' => 'max-age=0',
                  echo => 'If-None-Match', body => "v:");
main::expect(main::req($p), 'first', cache => 'MISS');
my $r = main::req($p, 'If-None-Match' => '"other"');
main::expect($r, "the client's If-None-Match, not ours", cache => 'EXPIRED',
             body => "v:If-None-Match: \"other\"\n");
my $c = main::req($p, 'If-None-Match' => '"e1"');
is($c->{status}, 304, "a matching one: the app's 304 goes to the client");
is(main::xcache($c), 'EXPIRED', 'EXPIRED');
my $g = main::req($p);
main::expect($g, 'the entry still revalidates', cache => 'REVALIDATED');


=== TEST 6: must-revalidate and no-cache entries revalidate too; Content-Encoding and Content-Length are not taken from a 304
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => 6, cond => 1, ETag => '"e1"', 'Cache-Control' => 'max-age=0, must-revalidate',
                  body => "mr\n");
main::expect(main::req($p), 'must-revalidate', cache => 'MISS');
main::expect(main::req($p), 'must-revalidate', cache => 'REVALIDATED', body => "mr\n");
my $q = main::url('/hdr', t => '6b', cond => 1, ETag => '"e1"', 'Cache-Control' => 'no-cache', body => "nc\n");
main::expect(main::req($q), 'no-cache', cache => 'MISS');
main::expect(main::req($q), 'no-cache: stored to be revalidated', cache => 'REVALIDATED', body => "nc\n");
main::expect(main::req($q), 'every time', cache => 'REVALIDATED', body => "nc\n");
my $e = main::url('/hdr', t => '6c', cond => 1, ETag => '"e1"', 'Cache-Control' => 'max-age=0',
                  'Content-Encoding' => 'identity', body => "ce\n");
main::expect(main::req($e), 'Content-Encoding', cache => 'MISS');
my $r = main::req($e);
main::expect($r, 'Content-Encoding', cache => 'REVALIDATED', body => "ce\n");
is(main::hv($r, 'content-encoding'), 'identity', 'the stored coding');


=== TEST 7: nginx -t: fly_cache_revalidate takes on or off
--- http_config eval: $main::HTTP
--- config
fly_cache_revalidate maybe;
--- must_die
--- error_log
qr/\[emerg\] invalid value "maybe" in "fly_cache_revalidate" directive, it must be "on" or "off"/
qr{/conf/server\.conf:1$}m
