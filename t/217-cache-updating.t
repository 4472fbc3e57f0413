# UPDATING (issue 10): stale-while-revalidate (RFC 5861 3, honoured without
# configuration) and fly_cache_use_stale updating (with fly_cache_stale).
# An expired entry within that window takes the key's fill lock in the
# regional Redis: the holder refreshes it (EXPIRED, or REVALIDATED after
# a 304), every other request of the region meanwhile gets the stored
# entry at once as UPDATING; exactly one refresh reaches the app.  Never
# where must-revalidate forbids stale.
#
# The app's /hdr answers after `delay` ms (the refresh is slow, so the
# concurrent requests come while it runs), with `cond=1` a 304 to our
# conditional request whose Cache-Control is `cc304` (a long max-age: the
# refreshed entry is then a HIT for good).  Entries get max-age=1; a test
# polls the clock until the second after it is over.
use FlyEdge::Test;
use FlyEdge::CacheTest;
use HTTP::Tiny;
use IO::Socket::INET;

sub ms { int(scaled($_[0]) * 1000) }
sub url { my ($path, @kv) = @_; "$path?" . HTTP::Tiny->new->www_form_urlencode([@kv]) }
sub apps_total { my $n = 0; $n += app_count($_) for qw(scl ord atl); $n }

# GET $path from scl's nginx on a connection of its own; returns the
# answer's head once the head and the body are in (Content-Length), and
# closes the connection then, without waiting for nginx to close it.
sub answer_then_close {
    my ($path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => main::topology()->nginx_port('scl'),
                                  Proto => 'tcp', Timeout => 5) or die "connect: $!";
    print $s "GET $path HTTP/1.1\r\nHost: $FlyEdge::CacheTest::HOST\r\n\r\n";
    my $buf = '';
    my $deadline = time + scaled(30);
    while (time < $deadline) {
        if ($buf =~ /\r\n\r\n/) {
            my ($h, $b) = split /\r\n\r\n/, $buf, 2;
            my ($len) = $h =~ /^Content-Length:\s*(\d+)/mi;
            if (defined $len && length($b) >= $len) {
                close $s;
                return $h;
            }
        }
        my $rin = '';
        vec($rin, fileno($s), 1) = 1;
        next unless select(my $rout = $rin, undef, undef, 0.5);
        my $n = sysread($s, $buf, 65536, length $buf);
        last unless $n;
    }
    close $s;
    return $buf;
}

sub until_expired {
    my ($when, $ttl) = @_;
    main::topology()->wait_until(sub { time >= $when + $ttl + 1 }, $ttl + 5)
        or die "the clock did not move";
}

# X-Cache values of the responses, counted; all must be 200 with $body.
sub counted {
    my ($name, $body, @res) = @_;
    my @bad = grep { $_->{status} != 200 || $_->{content} ne $body } @res;
    ok(!@bad, "$name: all " . scalar(@res) . " answered 200 with the body")
        or diag(join "\n", map { "$_->{status} [" . ($_->{headers}{'x-cache'} // '') . "] " . substr($_->{content}, 0, 80) } @bad);
    my %xc;
    $xc{ $_->{headers}{'x-cache'} // '' }++ for @res;
    return \%xc;
}

our $HTTP = qq{fly_redis "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT}/0";\n}
          . qq{fly_redis_primary "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT_SCL}/0";\n}
          . qq{fly_redis_timeout 5s;\n};

our $CACHE = <<'CONF';
fly_cache on;
fly_cache_status_header X-Cache;
location / {
    proxy_pass http://app;
}
location /upd/ {
    fly_cache_use_stale updating;
    fly_cache_stale 1h;
    proxy_pass http://app/;
}
location /bg/ {
    fly_cache_use_stale updating;
    fly_cache_stale 1h;
    fly_cache_background_update on;
    # the lock (its TTL) outlasts the slowest refresh here, even under ASan
    fly_cache_lock_timeout 5m;
    proxy_pass http://app/;
}
CONF

run_tests(pg => 0);

__DATA__

=== TEST 1: stale-while-revalidate without configuration: 20 concurrent requests for the expired entry, one refresh reaches the app, the others get UPDATING; then the refreshed entry is a HIT
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
my $p = main::url('/hdr', t => 1, ETag => '"v1"', cond => 1, body => "swr\n", delay => main::ms(2),
                  'Cache-Control' => 'max-age=1, stale-while-revalidate=3600', cc304 => 'max-age=3600');
my $m = get($p);
is($m->{headers}{'x-cache'}, 'MISS', 'filled');
my $when = time;
main::until_expired($when, 1);
my $before = main::apps_total();
my @res = parallel_get([($p) x 20], host => 'localhost', timeout => 60);
my $xc = main::counted('expired, swr', "swr\n", @res);
is(main::apps_total() - $before, 1, 'exactly one refresh reached the app');
is(($xc->{REVALIDATED} // 0) + ($xc->{EXPIRED} // 0), 1, 'one request refreshed it') or diag(explain($xc));
cmp_ok($xc->{UPDATING} // 0, '>=', 1, 'the others got the stored entry as UPDATING') or diag(explain($xc));
is(($xc->{UPDATING} // 0) + ($xc->{HIT} // 0), 19, 'nobody else went to the app') or diag(explain($xc));
my ($u) = grep { ($_->{headers}{'x-cache'} // '') eq 'UPDATING' } @res;
is($u->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, 'UPDATING is the stored response') if $u;
ok($t->wait_until(sub { (get($p)->{headers}{'x-cache'} // '') eq 'HIT' }, main::scaled(10)),
   'then the refreshed entry is a HIT');


=== TEST 2: fly_cache_use_stale updating with fly_cache_stale: the same for a response without stale-while-revalidate; without updating, none
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
my $p = main::url('/upd/hdr', t => 2, ETag => '"v2"', cond => 1, body => "upd\n", delay => main::ms(2),
                  'Cache-Control' => 'max-age=1', cc304 => 'max-age=3600');
my $n = main::url('/hdr', t => '2n', ETag => '"v2"', cond => 1, body => "upd\n", delay => main::ms(2),
                  'Cache-Control' => 'max-age=1', cc304 => 'max-age=3600');
is(get($p)->{headers}{'x-cache'}, 'MISS', 'filled (updating)');
is(get($n)->{headers}{'x-cache'}, 'MISS', 'filled (no updating)');
my $when = time;
main::until_expired($when, 1);
my $before = main::apps_total();
my @res = parallel_get([($p) x 10], host => 'localhost', timeout => 60);
my $xc = main::counted('updating', "upd\n", @res);
is(main::apps_total() - $before, 1, 'exactly one refresh reached the app');
cmp_ok($xc->{UPDATING} // 0, '>=', 1, 'UPDATING') or diag(explain($xc));
$before = main::apps_total();
my @none = parallel_get([($n) x 5], host => 'localhost', timeout => 60);
my $nc = main::counted('no updating', "upd\n", @none);
ok(!$nc->{UPDATING}, 'no UPDATING without updating or stale-while-revalidate') or diag(explain($nc));
cmp_ok(main::apps_total() - $before, '>', 1, 'each went to the app');


=== TEST 3: must-revalidate: never UPDATING, even with stale-while-revalidate and updating configured
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
my $p = main::url('/upd/hdr', t => 3, ETag => '"v3"', cond => 1, body => "mr\n", delay => main::ms(2),
                  'Cache-Control' => 'max-age=1, must-revalidate, stale-while-revalidate=3600',
                  cc304 => 'max-age=3600, must-revalidate');
is(get($p)->{headers}{'x-cache'}, 'MISS', 'filled');
my $when = time;
main::until_expired($when, 1);
my $before = main::apps_total();
my @res = parallel_get([($p) x 5], host => 'localhost', timeout => 60);
my $xc = main::counted('must-revalidate', "mr\n", @res);
ok(!$xc->{UPDATING}, 'no UPDATING') or diag(explain($xc));
cmp_ok(main::apps_total() - $before, '>', 1, 'each revalidated with the app');


=== TEST 4: nginx -t accepts updating with the other causes
--- http_config eval: $main::HTTP
--- config
fly_cache on;
fly_cache_use_stale error timeout updating http_503;
location / { proxy_pass http://app; }
--- request
GET /__health
--- error_code: 200


=== TEST 5: background update: the first request after expiry gets the stored entry as UPDATING while the slow refresh runs; then the refreshed entry (new headers) is a HIT
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 180
--- test
my $p = main::url('/bg/hdr', t => 5, body => "bg\n", delay => main::ms(5), 'Cache-Control' => 'max-age=1');
my $m = get($p);
is($m->{headers}{'x-cache'}, 'MISS', 'filled');
my $when = time;
main::until_expired($when, 1);
my $before = main::apps_total();
my $r1 = get($p, 'scl', timeout => main::scaled(60));
is($r1->{status}, 200, 'answered');
is($r1->{headers}{'x-cache'}, 'UPDATING', 'the refreshing request itself got UPDATING') or diag(join ', ', map { "$_=" . (ref $r1->{headers}{$_} ? join('|', @{ $r1->{headers}{$_} }) : $r1->{headers}{$_}) } sort keys %{ $r1->{headers} });
is($r1->{content}, "bg\n", 'the stored body');
is($r1->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, 'the stored response, not the refresh');
ok($t->wait_until(sub { main::apps_total() == $before + 1 }, main::scaled(10)),
   'the background refresh reached the app');
my $r2 = get($p);
is($r2->{headers}{'x-cache'}, 'UPDATING', 'a request after that answer: still UPDATING (the refresh is still in progress)');
my $hit;
ok($t->wait_until(sub { $hit = get($p); ($hit->{headers}{'x-cache'} // '') eq 'HIT' }, main::scaled(30)),
   'after the refresh: HIT');
isnt($hit->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, 'the HIT is the refreshed response');
is($hit->{content}, "bg\n", 'with its body');
is(main::apps_total() - $before, 1, 'exactly one refresh reached the app');


=== TEST 6: background update, 20 concurrent requests for an expired entry with validators: all UPDATING, one conditional refresh (a 304, REVALIDATED seen by no client), then HIT with the 304's headers and TTL
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 180
--- test
my $p = main::url('/bg/hdr', t => 6, ETag => '"v6"', cond => 1, body => "bg304\n", delay => main::ms(2),
                  'Cache-Control' => 'max-age=1, stale-while-revalidate=3600', cc304 => 'max-age=3600');
my $m = get($p);
is($m->{headers}{'x-cache'}, 'MISS', 'filled');
my $when = time;
main::until_expired($when, 1);
my $before = main::apps_total();
my @res = parallel_get([($p) x 20], host => 'localhost', timeout => 60);
my $xc = main::counted('background, 304', "bg304\n", @res);
is(($xc->{UPDATING} // 0) + ($xc->{HIT} // 0), 20, 'every request was answered from the cache (UPDATING, or HIT once refreshed)')
    or diag(explain($xc));
cmp_ok($xc->{UPDATING} // 0, '>=', 1, 'UPDATING') or diag(explain($xc));
ok(!$xc->{REVALIDATED} && !$xc->{EXPIRED}, 'no client saw the refresh') or diag(explain($xc));
my $hit;
ok($t->wait_until(sub { $hit = get($p); ($hit->{headers}{'x-cache'} // '') eq 'HIT' }, main::scaled(30)),
   'after the refresh: HIT');
is($hit->{content}, "bg304\n", 'the stored body');
isnt($hit->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, "the 304's headers were merged");
like($hit->{headers}{'cache-control'} // '', qr/max-age=3600/, "with the 304's Cache-Control");
is(main::apps_total() - $before, 1, 'exactly one (conditional) refresh reached the app');
my $again = get($p);
is($again->{headers}{'x-cache'}, 'HIT', 'the TTL was renewed: still a HIT');


=== TEST 7: background update: the refresh asks without the client's preconditions; a client's If-None-Match still gets its 304 from the stored entry
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 180
--- test
my $p = main::url('/bg/hdr', t => 7, ETag => '"v7"', body => "pre\n", echo => 'If-None-Match', 'Cache-Control' => 'max-age=1');
my $m = get($p);
is($m->{headers}{'x-cache'}, 'MISS', 'filled');
my $when = time;
main::until_expired($when, 1);
my $before = main::apps_total();
my $r = get($p, 'scl', headers => { 'If-None-Match' => '"other"' });
is($r->{headers}{'x-cache'}, 'UPDATING', 'UPDATING');
my $hit;
ok($t->wait_until(sub { $hit = get($p); ($hit->{headers}{'x-cache'} // '') eq 'HIT' }, main::scaled(30)),
   'after the refresh: HIT');
# the app echoes the If-None-Match it got: ours (the stored ETag), not the client's
is($hit->{content}, "pre\nIf-None-Match: \"v7\"\n", 'the refresh was conditional on the stored ETag only');
is(main::apps_total() - $before, 1, 'one refresh');
my $nm = get($p, 'scl', headers => { 'If-None-Match' => '"v7"' });
is($nm->{status}, 304, "a client's matching If-None-Match: 304");


=== TEST 8: background update and must-revalidate: never UPDATING; the client closing at once does not stop a refresh
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 180
--- test
my $p = main::url('/bg/hdr', t => 8, ETag => '"v8"', cond => 1, body => "mr\n", delay => main::ms(1),
                  'Cache-Control' => 'max-age=1, must-revalidate, stale-while-revalidate=3600',
                  cc304 => 'max-age=3600, must-revalidate');
is(get($p)->{headers}{'x-cache'}, 'MISS', 'filled');
my $when = time;
main::until_expired($when, 1);
my $before = main::apps_total();
my @res = parallel_get([($p) x 5], host => 'localhost', timeout => 60);
my $xc = main::counted('must-revalidate', "mr\n", @res);
ok(!$xc->{UPDATING}, 'no UPDATING') or diag(explain($xc));
cmp_ok(main::apps_total() - $before, '>', 1, 'each revalidated with the app');

my $q = main::url('/bg/hdr', t => '8c', body => "close\n", delay => main::ms(3), 'Cache-Control' => 'max-age=1');
my $m = get($q);
is($m->{headers}{'x-cache'}, 'MISS', 'filled');
$when = time;
main::until_expired($when, 1);
$before = main::apps_total();
# read the answer, then close the connection while the refresh waits for the app
my $head = main::answer_then_close($q);
like($head, qr/^X-Cache: UPDATING\r$/mi, 'UPDATING') or diag($head);
my $hit;
ok($t->wait_until(sub { $hit = get($q); ($hit->{headers}{'x-cache'} // '') eq 'HIT' }, main::scaled(30)),
   'the refresh completed after the client left: HIT');
isnt($hit->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, 'the refreshed response');
is(main::apps_total() - $before, 1, 'one refresh');


=== TEST 9: background update off (the default): the first request after expiry waits for the refresh and gets the app's answer
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- timeout: 120
--- test
my $p = main::url('/upd/hdr', t => 9, body => "fg\n", delay => main::ms(1), 'Cache-Control' => 'max-age=1');
my $m = get($p);
is($m->{headers}{'x-cache'}, 'MISS', 'filled');
my $when = time;
main::until_expired($when, 1);
my $before = main::apps_total();
my $r = get($p, 'scl', timeout => main::scaled(60));
is($r->{headers}{'x-cache'}, 'EXPIRED', 'the refreshing request went to the app');
isnt($r->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, "and got the app's answer");
is(main::apps_total() - $before, 1, 'one request reached the app');
is(get($p)->{headers}{'x-cache'}, 'HIT', 'then HIT');
