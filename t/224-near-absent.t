# The near cache remembers MISSes (issue 11, the MISS path): a lookup that
# found nothing in Redis and whose response was not stored (no-store,
# private, ...) leaves a record of the key's absence in the zone, vouched
# for by the tracking session like an entry.  The key's next lookups are
# MISSes with no Redis command at all (no GET, no fill lock); the app
# answers each of them.
#
# - The record ends with any change of the key in Redis (a SET by anyone,
#   the module's own fill, the tombstone of a write in scl), and with the
#   tracking session (CLIENT KILL): the next lookup asks Redis again.
# - A response that may be stored is stored as after any MISS, and then
#   HITs follow.
# - Vary: a variant that is not stored under a marker that is.
#
# The cache key leaves most of the query out (fly_cache_key $host$uri$arg_k),
# so that one key gets a no-store answer or a cacheable one as the test asks
# the app.
# Timing: events only (statuses, Redis command counts, the app's count,
# log lines); every wait is a scaled poll.
use FlyEdge::Test;
use FlyEdge::Near;

our $TIMEOUT = int(scaled(2) * 1000);
our $HTTP = <<"EOF";
fly_redis "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT}/0";
fly_redis_primary "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT_SCL}/0";
fly_redis_timeout ${TIMEOUT}ms;
fly_redis_connect_timeout ${TIMEOUT}ms;
fly_cache_near_zone 8m;
EOF

our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_key $host$uri$arg_k;
    fly_cache_lock on;
    fly_cache_status_header X-Cache;
    add_header X-Tier "$fly_cache_tier" always;
    add_header X-Status-Var "[$fly_cache_status]" always;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
EOF

sub key_of { "fly:$FlyEdge::Near::HOST$_[0]" }    # key_of("/bin" . k)

# GETs of $path until one costs Redis no command (the zone knew the key is
# absent); each must be the app's MISS.  True when one did.
sub until_absent {
    my ($t, $path, %o) = @_;
    return $t->wait_until(sub {
        my $before = redis_commands($t, 'atl');
        my $r = near_get($path, %o);
        die "GET $path: $r->{status} " . cache_of($r) . "\n"
            unless $r->{status} == 200 && cache_of($r) eq 'MISS';
        return redis_commands($t, 'atl') == $before;
    }, scaled(10));
}

# $n GETs of $path: how many were MISSes answered by the app with its
# body, and how many Redis commands they cost.
sub misses {
    my ($t, $path, $n, %o) = @_;
    my $before = redis_commands($t, 'atl');
    my $app = app_count('atl');
    my $ok = 0;
    for (1 .. $n) {
        my $r = near_get($path, %o);
        $ok++ if $r->{status} == 200 && cache_of($r) eq 'MISS' && tier($r) eq ''
                 && ($r->{headers}{'x-status-var'} // '') eq '[MISS]'
                 && length($r->{content}) == ($o{size} // 700);
    }
    return ($ok, redis_commands($t, 'atl') - $before, app_count('atl') - $app);
}

run_tests(pg => 0);

__DATA__

=== TEST 1: a no-store key: after the first MISS, MISSes with no Redis command (no GET, no fill lock); the app answers each
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/bin?k=t1&size=700&Cache-Control=no-store';
my $first = near_get($p);
is(cache_of($first), 'MISS', 'the first request: MISS');
ok(main::until_absent($t, $p), 'then a MISS that asked Redis nothing');
my ($ok, $cmds, $app) = main::misses($t, $p, 10);
is($ok, 10, '10 more MISSes, each with the app\'s 700 bytes');
is($cmds, 0, 'Redis ran no command for them (neither GET nor the fill lock)');
is($app, 10, 'the app answered all 10');
ok(!defined $t->redis('atl')->get(main::key_of('/bint1')), 'nothing stored in Redis');
--- error_log_atl
fly cache: near MISS: Redis has no entry
qr/fly near: stored absent "fly:near\.test\/bint1"/
--- no_error_log_atl
[crit]
[alert]


=== TEST 2: the key's answer becomes cacheable: the MISS that skipped Redis still fills, its SET ends the record, HITs follow
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/bin?k=t2&size=700&Cache-Control=no-store';
near_get($p);
ok(main::until_absent($t, $p), 'the key is known absent');
my $c = '/bin?k=t2&size=700&Cache-Control=max-age%3D300';
my $before = redis_commands($t, 'atl');
my $m = near_get($c);
is(cache_of($m), 'MISS', 'a cacheable answer: MISS');
ok($t->wait_until(sub { defined $t->redis('atl')->get(main::key_of('/bint2')) }, scaled(5)),
   'and stored in Redis');
my ($first, $near) = until_near($p);     # the key, whatever the query
is(cache_of($first), 'HIT', 'the next request HITs (the record ended)');
is($near->{headers}{'x-origin-count'}, $m->{headers}{'x-origin-count'}, 'the stored answer, from the zone');
--- no_error_log_atl
[crit]
[alert]


=== TEST 3: any change of the key in Redis ends the record: a SET by someone else, then the tombstone of a write in scl
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/bin?k=t3&size=700&Cache-Control=no-store';
my $k = main::key_of('/bint3');
near_get($p);
ok(main::until_absent($t, $p), 'the key is known absent');

# another client writes the key in atl's Redis (not an entry: unreadable)
$t->redis('atl')->set($k, 'not an entry');
my $asked = $t->wait_until(sub {
    my $before = redis_commands($t, 'atl');
    my $r = near_get($p);
    return $r->{status} == 200 && cache_of($r) eq 'MISS' && redis_commands($t, 'atl') > $before;
}, scaled(5));
ok($asked, 'after the SET, the lookup asks Redis again');
$t->redis('atl')->del($k);
ok(main::until_absent($t, $p), 'known absent again after the DEL');

# a write in scl: its tombstone reaches atl's Redis by replication
my $w = near_get('/bin?k=t3&size=10', method => 'POST', region => 'scl');
is($w->{status}, 200, 'the write in scl');
ok($t->wait_until(sub { defined $t->redis('atl')->get($k) }, scaled(5)), 'its tombstone is in atl\'s Redis');
$asked = $t->wait_until(sub {
    my $before = redis_commands($t, 'atl');
    my $r = near_get($p);
    return $r->{status} == 200 && cache_of($r) eq 'MISS' && redis_commands($t, 'atl') > $before;
}, scaled(5));
ok($asked, 'after the write, the lookup asks Redis again');
--- error_log_atl
ignoring unreadable entry
--- no_error_log_atl
[crit]
[alert]


=== TEST 4: CLIENT KILL of the tracking connections: the records they vouched for are not used
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $p = '/bin?k=t4&size=700&Cache-Control=no-store';
near_get($p);
ok(main::until_absent($t, $p), 'the key is known absent');
my $from = $t->error_log_size('atl');
my @ids = map { /\bid=(\d+) .*\bname=fly-edge-near-\d+/ ? $1 : () } $t->redis_cli('atl', 'CLIENT', 'LIST');
is(scalar(@ids), 2, 'one tracking connection per worker');
$t->redis_cli('atl', 'CLIENT', 'KILL', 'ID', $_) for @ids;
ok(wait_sessions($t, 'atl', $from, qr/^ended \d+: tracking connection lost$/),
   'every worker ended its session');
my $before = redis_commands($t, 'atl');
my $r = near_get($p);
is(cache_of($r), 'MISS', 'MISS');
cmp_ok(redis_commands($t, 'atl') - $before, '>', 0, 'the lookup asked Redis');
ok(wait_sessions($t, 'atl', $from, qr/^on \d+$/), 'tracking is back on');
ok(main::until_absent($t, $p), 'and the zone knows the key absent again');


=== TEST 5: Vary: under a marker the zone holds, a variant that is not stored is known absent, and can still be stored
--- http_config eval: $main::HTTP
--- config eval: $main::CACHE
--- test
my $q = 'k=t5&Vary=Accept-Language&echo=Accept-Language';
my $en = { 'Accept-Language' => 'en' };
my $fr = { 'Accept-Language' => 'fr' };
near_get("/hdr?$q&Cache-Control=max-age%3D300", headers => $en);
my ($first, $near) = until_near("/hdr?$q", headers => $en);
is(tier($near), 'near', 'en: stored, and in the zone (its marker too)');
my $nf = "/hdr?$q&Cache-Control=no-store";
is(cache_of(near_get($nf, headers => $fr)), 'MISS', 'fr: a no-store answer, MISS');
ok(main::until_absent($t, $nf, headers => $fr), 'fr: then a MISS that asked Redis nothing');
my ($ok, $cmds, $app) = main::misses($t, $nf, 5, headers => $fr, size => length(near_get($nf, headers => $fr)->{content}));
is("$ok $cmds $app", '5 0 5', 'fr: 5 MISSes from the app, no Redis command');
my $h = near_get("/hdr?$q", headers => $en);
is(tier($h), 'near', 'en: still served from the zone');
like($h->{content}, qr/Accept-Language: en/, 'en: its own variant');
# fr becomes cacheable: stored under the same marker
my $m = near_get("/hdr?$q&Cache-Control=max-age%3D300", headers => $fr);
is(cache_of($m), 'MISS', 'fr cacheable: MISS');
my ($f1, $f2) = until_near("/hdr?$q", headers => $fr);
like($f2->{content}, qr/Accept-Language: fr/, 'fr: its stored variant, from the zone');
is(tier(near_get("/hdr?$q", headers => $en)), 'near', 'en: still in the zone');
--- no_error_log_atl
[crit]
[alert]
