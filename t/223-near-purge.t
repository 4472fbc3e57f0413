# The near cache and purges (issues 8 and 11): a tag purge (the primary's
# tag epoch INCRed, the tag records set, in one script) and a tombstone
# stop zone HITs exactly as they stop Redis HITs.  The lookup reads the
# tag epoch on the tracked connection, so its invalidation reaches every
# worker; the zone holds an entry only at the epoch its Redis HIT was valid
# at, and serves it only while that epoch is the zone's.
#
# - A hard tag purge in scl: once atl's Redis has the new epoch, atl's
#   zone serves neither the tagged entry (now a MISS, as from Redis) nor,
#   until a Redis HIT vouches for it again at the new epoch, an untagged one
#   (a HIT from Redis, then from the zone again).
# - A soft tag purge: the tagged entry is not served from the zone (EXPIRED,
#   as from Redis).
# - A hard purge of a URL (a tombstone, replicated): atl's zone stops
#   serving it; the next answer is a MISS.
#
# Timing: events only (a tracking client of the test's own on atl's Redis
# learns when the change arrived there; tiers and statuses); every wait is
# a scaled poll.
use FlyEdge::Test;
use FlyEdge::Near;

sub http_config {
    my ($tag) = @_;
    my $t = int(scaled(2) * 1000);
    return <<"EOF";
# block: $tag
fly_redis "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT}/0";
fly_redis_primary "redis://x:\${REDIS_PASSWORD}\@127.0.0.1:\${REDIS_PORT_SCL}/0";
fly_redis_timeout ${t}ms;
fly_redis_connect_timeout ${t}ms;
fly_cache_near_zone 8m;
EOF
}

our $CACHE = <<'EOF';
location / {
    fly_cache on;
    fly_cache_status_header X-Cache;
    fly_cache_purge PURGE;
    add_header X-Tier "$fly_cache_tier" always;
    proxy_set_header Host $host;
    proxy_pass http://app;
}
EOF

our $EPOCH = "fly:\x1fepoch";
sub key_of { "fly:http$FlyEdge::Near::HOST$_[0]" }

# A path served from atl's zone (MISS, stored, HITs until one is near).
sub near_in_atl {
    my ($p) = @_;
    my $t = topology();
    my $m = near_get($p);
    $t->wait_until(sub { defined $t->redis('atl')->get(key_of($p)) }, scaled(5)) or die "$p not stored\n";
    my ($first, $near) = until_near($p);
    return $m;
}

sub purge {
    my ($path) = @_;
    return near_get($path, method => 'PURGE', region => 'scl');
}

# After the change reached atl's Redis: GETs of $p in atl until one is not
# served from the zone; that answer (or undef).
sub first_not_near {
    my ($p) = @_;
    my $r;
    topology()->wait_until(sub { $r = near_get($p); tier($r) ne 'near' }, scaled(5)) or return undef;
    return $r;
}

run_tests(pg => 0);

__DATA__

=== TEST 1: a hard tag purge: the tagged entry stops being served from the zone (a MISS), an untagged one comes from Redis once, then from the zone again
--- http_config eval: main::http_config('hard tag purge')
--- config eval: $main::CACHE
--- test
my $tagged = '/hdr?t=1a&Cache-Control=max-age%3D300&Cache-Tag=near-1';
my $plain  = '/hdr?t=1b&Cache-Control=max-age%3D300';
my $mt = main::near_in_atl($tagged);
main::near_in_atl($plain);
my $tr = FlyEdge::Near::Tracker->new($t, 'atl');
$tr->track($main::EPOCH);
my $pr = main::purge('/?tag=near-1');
is($pr->{status}, 200, 'PURGE /?tag=near-1 in scl');
ok(defined $tr->wait_invalidation($main::EPOCH, scaled(5)), "atl's Redis has the new epoch");
my $r = main::first_not_near($tagged);
ok($r, 'atl stops serving the tagged entry from the zone');
is(cache_of($r // {}), 'MISS', '... it is a MISS, as from Redis');
isnt(($r // {})->{headers}{'x-origin-count'}, $mt->{headers}{'x-origin-count'}, '... answered by the app');
my $p = main::first_not_near($plain);
is(cache_of($p // {}) . ' ' . tier($p // {}), 'HIT redis', 'the untagged entry: a HIT from Redis at the new epoch');
my ($first, $near) = until_near($plain);
ok($near, '... then from the zone again');
$tr->close;


=== TEST 2: a soft tag purge: the tagged entry is not served from the zone (EXPIRED, as from Redis)
--- http_config eval: main::http_config('soft tag purge')
--- config eval: $main::CACHE
--- test
my $tagged = '/hdr?t=2&Cache-Control=max-age%3D300&Cache-Tag=near-2';
main::near_in_atl($tagged);
my $tr = FlyEdge::Near::Tracker->new($t, 'atl');
$tr->track($main::EPOCH);
my $j = json_decode(main::purge('/?tag=near-2&soft=1')->{content});
is($j->{mode}, 'soft', 'a soft tag purge in scl');
ok(defined $tr->wait_invalidation($main::EPOCH, scaled(5)), "atl's Redis has the new epoch");
my $r = main::first_not_near($tagged);
ok($r, 'atl stops serving it from the zone');
is(cache_of($r // {}), 'EXPIRED', '... EXPIRED, as from Redis');
$tr->close;


=== TEST 3: a hard purge of a URL (a tombstone): atl's zone stops serving it, the next answer is a MISS
--- http_config eval: main::http_config('url purge')
--- config eval: $main::CACHE
--- test
my $p = '/hdr?t=3&Cache-Control=max-age%3D300';
my $m = main::near_in_atl($p);
my $tr = FlyEdge::Near::Tracker->new($t, 'atl');
$tr->track(main::key_of($p));
is(main::purge($p)->{status}, 200, "PURGE of the URL in scl");
ok(defined $tr->wait_invalidation(main::key_of($p), scaled(5)), "atl's Redis has the tombstone");
my $r = main::first_not_near($p);
ok($r, 'atl stops serving it from the zone');
is(cache_of($r // {}), 'MISS', '... a MISS');
$tr->close;
