# Stale (issue 10): fly_cache_use_stale error | timeout | http_500 ...,
# fly_cache_stale and RFC 5861 stale-if-error.  When the app fails (stopped:
# nginx's 502; too slow: its 504; or its own 5xx) an expired entry is
# served instead, with STALE, within its stale window; after it the
# failure goes to the client.  must-revalidate / proxy-revalidate never
# serve stale (a disconnected cache answers 504), s-maxage only by the
# response's own stale-if-error.  A soft purge (issue 8) makes an entry
# stale: served only under these rules.
#
# The demo app answers any request carrying `X-Test-Status: N` with N (a
# failing app); the test bed's stop_app() stops it (heal() starts it again
# for the next block).  Entries get max-age=1: a test waits (polling the
# clock) until the second after it is over, then asserts on X-Cache and
# X-Origin-Count.  Requests go straight to the scl nginx on one keep-alive
# connection, so a fill is in Redis before the next lookup.
use FlyEdge::Test;
use FlyEdge::CacheTest;
use FlyEdge::CacheCheck qw(:http);    # url req xcache oc hv show expect redis_http
use Time::HiRes ();

# A MISS that stores $p; returns the response and the second it was stored in.
sub fill {
    my ($p, $name) = @_;
    my $res = req($p);
    expect($res, "$name: filled", cache => 'MISS');
    return ($res, time);
}

# Polls the clock until the entry stored at $when with max-age $ttl has
# expired (the second after its last fresh one).
sub until_expired {
    my ($when, $ttl) = @_;
    main::topology()->wait_until(sub { time >= $when + $ttl + 1 }, $ttl + 5)
        or die "the clock did not move";
}

our $HTTP = redis_http(primary => 1, timeout => '5s');

# The slow route: /to/... with X-Slow goes to the app's /slow (the key is
# the request URI's), and nginx gives up after a second: its 504.
our $CACHE = <<'EOF';
fly_cache on;
fly_cache_status_header X-Cache;
fly_cache_purge PURGE;
location / {
    fly_cache_use_stale error timeout http_500 http_502 http_503 http_504;
    fly_cache_stale 1h;
    proxy_pass http://app;
}
location /short/ {
    fly_cache_use_stale error http_503;
    fly_cache_stale 1s;
    proxy_pass http://app/;
}
location /some/ {
    fly_cache_use_stale http_503;
    fly_cache_stale 1h;
    proxy_pass http://app/;
}
location /none/ {
    proxy_pass http://app/;
}
location /to/ {
    fly_cache_use_stale timeout;
    fly_cache_stale 1h;
    proxy_read_timeout 1s;
    if ($http_x_slow) {
        rewrite ^ /slow?ms=8000 break;
    }
    proxy_pass http://app/;
}
EOF

run_tests(pg => 0);

__DATA__

=== TEST 1: the app stopped: the expired entry is served (STALE, with its Age) within fly_cache_stale, 502 after it
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => 1, 'Cache-Control' => 'max-age=1', body => "stale body\n");
my ($m, $when) = main::fill($p, 'long window');
my $q = main::url('/short/hdr', t => 1, 'Cache-Control' => 'max-age=1', body => "short\n");
my ($s, $swhen) = main::fill($q, 'short window');
main::until_expired($when, 1);
$t->stop_app('scl');
my $r = main::req($p);
main::expect($r, 'app stopped, within the window', cache => 'STALE', body => "stale body\n");
is(main::oc($r), main::oc($m), 'the stored response');
cmp_ok(main::hv($r, 'age'), '>=', 1, 'with its Age');
main::expect(main::req($p), 'again', cache => 'STALE', body => "stale body\n");
# fly_cache_stale 1s: stale until the second after expiry, then gone
$t->wait_until(sub { time >= $swhen + 1 + 1 + 1 }, 10) or die "the clock did not move";
my $late = main::req($q);
main::expect($late, 'app stopped, after the window', status => 502);
isnt(main::xcache($late), 'STALE', 'not stale');


=== TEST 2: the app's own 5xx: stale by fly_cache_use_stale http_5xx; a cause it does not name passes; no fly_cache_use_stale: the failure
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => 2, 'Cache-Control' => 'max-age=1', body => "b2\n");
my $q = main::url('/some/hdr', t => 2, 'Cache-Control' => 'max-age=1', body => "b2\n");
my $n = main::url('/none/hdr', t => 2, 'Cache-Control' => 'max-age=1', body => "b2\n");
my (undef, $when) = main::fill($p, 'all causes');
main::fill($q, 'http_503 only');
main::fill($n, 'no use_stale');
main::until_expired($when, 1);
for my $st (500, 502, 503, 504) {
    main::expect(main::req($p, 'X-Test-Status' => $st), "the app answers $st", cache => 'STALE', body => "b2\n");
}
main::expect(main::req($q, 'X-Test-Status' => 503), 'http_503 named', cache => 'STALE', body => "b2\n");
main::expect(main::req($q, 'X-Test-Status' => 500), 'http_500 not named', status => 500, cache => 'EXPIRED',
             body => "forced 500\n");
my $nr = main::req($n, 'X-Test-Status' => 503);
main::expect($nr, 'no fly_cache_use_stale', status => 503, body => "forced 503\n");
is(main::xcache($nr), 'MISS', 'nothing kept past its freshness there');
main::expect(main::req($p, 'X-Test-Status' => 404), 'a 404 is no failure', status => 404);
my $ok = main::req($p);
main::expect($ok, 'the app well again: refilled', cache => 'EXPIRED', body => "b2\n");
main::expect(main::req($p), 'then', cache => 'HIT', body => "b2\n");


=== TEST 3: RFC 5861 stale-if-error without fly_cache_use_stale; stale-while-revalidate alone is no error allowance
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/none/hdr', t => 3, 'Cache-Control' => 'max-age=1, stale-if-error=3600', body => "sie\n");
my $q = main::url('/none/hdr', t => '3b', 'Cache-Control' => 'max-age=1, stale-while-revalidate=3600', body => "swr\n");
my (undef, $when) = main::fill($p, 'stale-if-error');
main::fill($q, 'stale-while-revalidate');
cmp_ok($t->redis('scl')->pttl('fly:http127.0.0.1' . $p), '>', 3_000_000, 'kept in Redis for its stale window');
main::until_expired($when, 1);
main::expect(main::req($p, 'X-Test-Status' => 503), 'stale-if-error', cache => 'STALE', body => "sie\n");
main::expect(main::req($q, 'X-Test-Status' => 503), 'stale-while-revalidate', status => 503);
$t->stop_app('scl');
main::expect(main::req($p), 'stale-if-error, the app stopped', cache => 'STALE', body => "sie\n");


=== TEST 4: must-revalidate and proxy-revalidate never serve stale: the app stopped gives 504, its 503 passes; s-maxage only by stale-if-error
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = main::url('/hdr', t => 4, 'Cache-Control' => 'max-age=1, must-revalidate, stale-if-error=3600', body => "mr\n");
my $x = main::url('/hdr', t => '4p', 'Cache-Control' => 'max-age=1, proxy-revalidate', body => "pr\n");
my $s = main::url('/hdr', t => '4s', 'Cache-Control' => 's-maxage=1', body => "sm\n");
my $e = main::url('/hdr', t => '4e', 'Cache-Control' => 's-maxage=1, stale-if-error=3600', body => "se\n");
my (undef, $when) = main::fill($p, 'must-revalidate');
main::fill($_, $_) for $x, $s, $e;
main::until_expired($when, 1);
main::expect(main::req($p, 'X-Test-Status' => 503), 'must-revalidate, the app answers 503', status => 503,
             body => "forced 503\n");
main::expect(main::req($s, 'X-Test-Status' => 503), 's-maxage: not by the configuration', status => 503);
main::expect(main::req($e, 'X-Test-Status' => 503), 's-maxage with stale-if-error', cache => 'STALE', body => "se\n");
$t->stop_app('scl');
my $r = main::req($p);
main::expect($r, 'must-revalidate, the app stopped', status => 504, body => '');
isnt(main::xcache($r), 'STALE', 'not stale');
main::expect(main::req($x), 'proxy-revalidate, the app stopped', status => 504, body => '');
main::expect(main::req($s), 's-maxage, the app stopped', status => 502);


=== TEST 5: timeout: nginx's 504 after proxy_read_timeout is answered from the stale entry
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 30
--- test
my $p = main::url('/to/hdr', t => 5, 'Cache-Control' => 'max-age=1', body => "to\n");
my (undef, $when) = main::fill($p, 'timeout');
main::until_expired($when, 1);
my $r = main::req($p, 'X-Slow' => 1);
main::expect($r, 'the app too slow', cache => 'STALE', body => "to\n");
my $o = main::url('/to/hdr', t => '5b', 'Cache-Control' => 'max-age=1', body => "to\n");
my (undef, $owhen) = main::fill($o, 'for error');
$t->stop_app('scl');
main::until_expired($owhen, 1);
main::expect(main::req($o), 'error is not named there: 502', status => 502);


=== TEST 6: a soft purge makes an entry stale: served only under fly_cache_use_stale rules
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
$FlyEdge::CacheTest::HOST = '127.0.0.1';
my $p = main::url('/hdr', t => 6, 'Cache-Control' => 'max-age=300', body => "soft\n");
my $n = main::url('/none/hdr', t => 6, 'Cache-Control' => 'max-age=300', body => "soft\n");
main::fill($_, $_) for $p, $n;
is(main::req($p)->{headers}{'x-cache'}, 'HIT', 'fresh');
for my $u ($p, $n) {
    my $pr = main::purge("$u&soft=1", 'scl');
    is($pr->{status}, 200, 'soft purge');
}
main::expect(main::req($p, 'X-Test-Status' => 503), 'soft-purged, the app fails', cache => 'STALE', body => "soft\n");
main::expect(main::req($n, 'X-Test-Status' => 503), 'soft-purged, no fly_cache_use_stale', status => 503);
main::expect(main::req($p), 'soft-purged, the app well: refilled', cache => 'EXPIRED', body => "soft\n");
main::expect(main::req($p), 'then', cache => 'HIT');


=== TEST 7: nginx -t: fly_cache_use_stale values
--- http_config eval: $main::HTTP
--- config
fly_cache_use_stale error bogus;
--- must_die
--- error_log
qr/\[emerg\] invalid value "bogus" in "fly_cache_use_stale"/
qr{/conf/server\.conf:1$}m


=== TEST 8: nginx -t: off with other values
--- http_config eval: $main::HTTP
--- config
location / {
    fly_cache_use_stale off error;
}
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_use_stale" directive has "off" with other values/
qr{/conf/server\.conf:2$}m


=== TEST 9: nginx -t: an unknown cause is refused (updating is t/217-cache-updating.t's)
--- http_config eval: $main::HTTP
--- config
fly_cache_use_stale error updatin;
--- must_die
--- error_log
qr/\[emerg\] invalid value "updatin" in "fly_cache_use_stale"/
qr{/conf/server\.conf:1$}m


=== TEST 10: nginx -t: fly_cache_stale takes a time
--- http_config eval: $main::HTTP
--- config
fly_cache_stale soon;
--- must_die
--- error_log
qr/\[emerg\] "fly_cache_stale" directive invalid value/
qr{/conf/server\.conf:1$}m
