# A successful write invalidates the cached response for its URI in every
# region: a tombstone goes to the primary Redis and replication carries it.
# (The fence that keeps fills out for a while after it is t/214's; here it
# is 0, so the next GET fills again.)
use FlyEdge::Test;

# Redis's timeouts only guard against a hang here: generous and scaled
# (TEST 6: far beyond the pause there, so that the write's answer waits for
# Redis's reply, not for the timeout).
sub http_conf {
    my ($timeout) = @_;
    return sprintf(<<'EOF', scaled($timeout) * 1000, scaled(2) * 1000);
fly_redis "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT}/0";
fly_redis_primary "redis://x:${REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT_SCL}/0";
fly_redis_timeout %dms;
fly_redis_connect_timeout %dms;
fly_replay on;
fly_cache_fence 0;
EOF
}
our $HTTP = http_conf(2);
our $HTTP_LONG = http_conf(60);

our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
EOF

sub cache_of {
    my ($path, $r, %o) = @_;
    my $res = send_request(path => $path, region => $r, direct => 1, headers => { Host => 'inv.test', %{ $o{headers} // {} } });
    return $res->{headers}{'x-cache'} // '';
}

run_tests();

__DATA__

=== TEST 1: a write in the primary region invalidates the URI there and in every region
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=1&Cache-Control=max-age%3D300';
for my $r (qw(scl ord atl)) {
    main::cache_of($p, $r);
    is(main::cache_of($p, $r), 'HIT', "cached in $r");
}
my $w = send_request(method => 'POST', path => $p, region => 'scl', direct => 1, body => 'x',
                     headers => { Host => 'inv.test' });
is($w->{status}, 200, 'the write succeeds in scl');
# check atl and ord first: scl's refill would replicate to them
for my $r (qw(atl ord scl)) {
    ok($t->wait_until(sub { main::cache_of($p, $r) eq 'MISS' }, scaled(5)), "$r misses after the write");
}
is(main::cache_of($p, 'scl'), 'HIT', 'scl fills again');


=== TEST 2: a write sent to atl is replayed to scl and invalidates atl's local fill
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=2&Cache-Control=max-age%3D300';
main::cache_of($p, 'atl');
is(main::cache_of($p, 'atl'), 'HIT', 'cached in atl (a region-local fill)');
my $key = (grep { /t=2/ } $t->redis_cli('atl', 'KEYS', 'fly:*'))[0];
ok($key && !($t->redis_cli('scl', 'EXISTS', $key))[0], 'the entry is in atl only');
my $w = send_request(method => 'PUT', path => $p, region => 'atl', body => 'x', headers => { Host => 'inv.test' });
is($w->{status}, 200, 'the write succeeds');
is($w->{headers}{'fly-emulator-route'}, 'atl>scl', 'it was replayed to scl');
ok($t->wait_until(sub { ($t->redis_cli('atl', 'GET', $key))[0] =~ /^FLYT/ }, scaled(5)),
   "the tombstone replicated to atl's Redis, over its local fill");
is(main::cache_of($p, 'atl'), 'MISS', 'atl misses');


=== TEST 3: failed writes and reads invalidate nothing
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=3&Cache-Control=max-age%3D300';
main::cache_of($p, 'scl');
my $fail = send_request(method => 'POST', path => '/hdr?t=3&Cache-Control=max-age%3D300&status=500',
                        region => 'scl', direct => 1, body => 'x', headers => { Host => 'inv.test' });
is($fail->{status}, 500, 'a failed write to another URI');
my $fail2 = send_request(method => 'DELETE', path => "/nonexistent-route-404", region => 'scl', direct => 1,
                         headers => { Host => 'inv.test' });
is(main::cache_of($p, 'scl'), 'HIT', 'the entry stays');
send_request(method => 'GET', path => $p, region => 'scl', direct => 1, headers => { Host => 'other.test' });
is(main::cache_of($p, 'scl'), 'HIT', 'other hosts do not touch it');


=== TEST 4: every Vary variant is invalidated
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=4&Cache-Control=max-age%3D300&Vary=Accept-Language&echo=Accept-Language';
for my $l (qw(en fr)) {
    main::cache_of($p, 'scl', headers => { 'Accept-Language' => $l });
    is(main::cache_of($p, 'scl', headers => { 'Accept-Language' => $l }), 'HIT', "$l variant cached");
}
send_request(method => 'PATCH', path => $p, region => 'scl', direct => 1, body => 'x', headers => { Host => 'inv.test' });
for my $l (qw(en fr)) {
    ok($t->wait_until(sub { main::cache_of($p, 'scl', headers => { 'Accept-Language' => $l }) eq 'MISS' }, scaled(5)),
       "$l variant misses after the write");
}


=== TEST 5: with the primary Redis down, the write still succeeds
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=5&Cache-Control=max-age%3D300';
$t->stop_redis('scl');
my $w = send_request(method => 'POST', path => $p, region => 'scl', direct => 1, body => 'x', headers => { Host => 'inv.test' });
is($w->{status}, 200, 'the write is answered by the app');
is($w->{headers}{'x-app-region'}, 'scl', 'in scl');


=== TEST 6: a write's answer waits until the primary Redis has its invalidation: the next read cannot get the old page
--- http_config eval: $main::HTTP_LONG
--- config eval: $main::CACHE
--- test
use FlyEdge::Consistency;
my $p = '/hdr?t=6&Cache-Control=max-age%3D300';
main::cache_of($p, 'scl');
is(main::cache_of($p, 'scl'), 'HIT', 'cached in scl');
my ($key) = grep { /t=6/ } $t->redis_cli('scl', 'KEYS', 'fly:*');
$t->pause_redis('scl');
my $g = bg_request(method => 'PUT', path => $p, region => 'scl', direct => 1, body => 'x', headers => { Host => 'inv.test' });
ok(!$t->wait_until(sub { bg_answered($g) }, scaled(1)), 'no answer while the primary Redis does not answer');
$t->resume_redis('scl');
my $w = bg_response($g);
is($w->{status}, 200, 'then the write is answered');
like(($t->redis_cli('scl', 'GET', $key))[0] // '', qr/^FLYT/, 'and the tombstone was in place before the answer');
is(main::cache_of($p, 'scl'), 'MISS', 'the next read misses');
unlike($t->error_log('scl'), qr/fly redis .*timed out/, 'no Redis command timed out');
