# The fill fence with WAL positions (issue 9, design-cache.md
# "Tombstones"): a write in scl invalidates the cached page everywhere
# through Redis's replication with a tombstone holding the primary's
# position after the write; a replica region stores a fill only when its
# replica had replayed that position before the app was asked.  The race:
# replay paused, the tombstone reaches atl's Redis, a read in atl misses
# and is answered by atl's app from its replica, without the write; that
# answer is sent but not stored, however long replay stays paused
# (fly_cache_fence 0: the time fence alone would let it in); once replay
# resumes, atl stores and serves the new page, and no region's Redis ever
# holds the old one.
use FlyEdge::Test;
use FlyEdge::Consistency;

our $HTTP = <<"EOF";
fly_replay on;
fly_redis "%%REDIS_URL%%";
fly_redis_primary "%%REDIS_PRIMARY_URL%%";
fly_cache_fence 0;
$PG_CONF
EOF

our $CACHE = <<'EOF';
location / {
    proxy_pass http://app;
}
location /posts {
    fly_cache on;
    fly_cache_valid 200 5m;
    fly_cache_status_header X-Cache;
    proxy_pass http://app;
}
EOF

sub json_req {
    my ($method, $path, $region, $title, %o) = @_;
    return send_request(method => $method, path => $path, region => $region,
                        headers => { 'Content-Type' => 'application/json' },
                        body => qq{{"title":"$title"}}, %o);
}

sub title_of { my ($res) = @_; my $j = eval { json_decode($res->{content}) }; ref $j eq 'HASH' ? $j->{title} // '' : '' }

# Every key of region $r's Redis for /posts/$id, with its value.
sub cached {
    my ($r, $id) = @_;
    my $redis = topology()->redis($r);
    my %v;
    for my $k ($redis->keys("fly:*/posts/$id*")) {
        $v{$k} = $redis->get($k) // '';
    }
    return \%v;
}

# Whether any region's Redis holds a value with $text (an entry: a tombstone
# holds no body).
sub copy_of {
    my ($id, $text) = @_;
    return grep { my $c = cached($_, $id); grep { index($_, $text) >= 0 } values %$c } qw(scl ord atl);
}

sub tombstone_in {
    my ($r, $id) = @_;
    my $c = cached($r, $id);
    my ($t) = grep { /^FLYT1/ } values %$c;
    return $t;
}

sub lsn16 { my ($s) = @_; sprintf '%016x', parse_lsn($s) }

run_tests();

__DATA__

=== TEST 1: start (fly_postgres from the next block on, once PostgreSQL runs)
--- http_config
fly_replay on;
--- request
GET /echo
--- error_code: 200


=== TEST 2: a write's tombstone holds the primary's position after the write (its fly-lsn)
--- http_config eval: $::HTTP . "fly_consistency lsn;\n"
--- config eval: $::CACHE
--- test
my $title = 'one-' . int(rand(1e9));
my $p = main::json_req('POST', '/posts', 'scl', $title, direct => 1);
is($p->{status}, 201, 'a post');
my $id = json_decode($p->{content})->{id};
ok($t->wait_for_pg_replication(scaled(10)), 'replicated');
my $w = main::json_req('PUT', "/posts/$id", 'atl', "$title-v1");
is($w->{status}, 200, 'a write through atl');
is($w->{headers}{'fly-emulator-region'}, 'scl', 'answered by scl');
my ($lsn) = ($w->{headers}{'set-cookie'} // '') =~ /fly-lsn=([^;]+)/;
ok($lsn, "the write's position: $lsn");
my $tomb;
ok($t->wait_until(sub { $tomb = main::tombstone_in('atl', $id) }, scaled(5)), "the tombstone reaches atl's Redis");
is(substr($tomb, 5, 1), '1', 'with a position');
is(substr($tomb, 22, 16), main::lsn16($lsn), 'the one of the cookie');
is(main::tombstone_in('scl', $id), $tomb, "the same in scl's Redis");


=== TEST 3: the stale-fill race: replay paused, atl misses and its app answers the old post, which is not stored; after resume atl stores and serves the new one; no Redis holds the old one
--- http_config eval: $::HTTP
--- config eval: $::CACHE
--- test
my $old = 'old-' . int(rand(1e9));
my $new = 'new-' . int(rand(1e9));
my $p = main::json_req('POST', '/posts', 'scl', $old, direct => 1);
my $id = json_decode($p->{content})->{id};
ok($t->wait_for_pg_replication(scaled(10)), 'the post is replicated');
my $m = send_request(path => "/posts/$id", region => 'atl');
is($m->{headers}{'x-cache'}, 'MISS', 'atl: MISS');
my $h;
ok($t->wait_until(sub { $h = send_request(path => "/posts/$id", region => 'atl'); ($h->{headers}{'x-cache'} // '') eq 'HIT' }, scaled(5)),
   'then a HIT in atl');
is(main::title_of($h), $old, 'of the post');

$t->pause_pg_replay;
my $w = main::json_req('PUT', "/posts/$id", 'atl', $new);
is($w->{status}, 200, 'a write through atl, replay paused');
is($w->{headers}{'fly-emulator-region'}, 'scl', 'answered by scl');
ok(!$w->{headers}{'set-cookie'}, 'fly_consistency off: no cookie, but the write was held for its position');
ok($t->wait_until(sub { main::tombstone_in('atl', $id) }, scaled(5)), "the tombstone reaches atl's Redis");
like(main::tombstone_in('atl', $id), qr/^FLYT11/, 'with a position');

my $off = $t->error_log_size('atl');
for my $i (1 .. 3) {
    my $r = send_request(path => "/posts/$id", region => 'atl');
    is($r->{headers}{'fly-emulator-region'}, 'atl', "read $i: answered by atl");
    is($r->{headers}{'x-cache'}, 'MISS', "read $i: a MISS");
    is(main::title_of($r), $old, "read $i: its replica has not replayed the write: the old post");
}
ok(log_since_has('atl', $off, qr/fly cache: tombstone, fill fenced/), 'atl: the fence refuses the fills');
unlike($t->error_log_since('atl', $off), qr/fly cache: tombstone, the fill may pass it/, 'never passed');
is_deeply([main::copy_of($id, $old)], [], 'no Redis holds the old post');
# the time fence is 0: only the position keeps it out, whatever the wait
my ($lsn) = main::tombstone_in('atl', $id) =~ /^FLYT11[0-9a-f]{16}([0-9a-f]{16})$/;
my ($behind) = $t->dbh('atl')->selectrow_array('SELECT pg_last_wal_replay_lsn()');
ok(hex($lsn) > parse_lsn($behind), "the replica is behind the tombstone ($behind)");

$t->resume_pg_replay;
ok($t->wait_for_pg_replication(scaled(10)), 'replay resumes');
my $n;
ok($t->wait_until(sub { $n = send_request(path => "/posts/$id", region => 'atl'); ($n->{headers}{'x-cache'} // '') eq 'HIT' }, scaled(10)),
   'atl stores a fill again, and HITs');
is(main::title_of($n), $new, 'of the new post');
is_deeply([main::copy_of($id, $old)], [], 'no Redis holds the old post');
ok(scalar(main::copy_of($id, $new)), 'one holds the new one');
my $o = send_request(path => "/posts/$id", region => 'ord');
is(main::title_of($o), $new, 'ord (the same replica) serves the new post too');


=== TEST 4: in scl a fill after a write is stored once the sampled position has passed the tombstone
--- http_config eval: $::HTTP
--- config eval: $::CACHE
--- test
my $title = 'scl-' . int(rand(1e9));
my $p = main::json_req('POST', '/posts', 'scl', $title, direct => 1);
my $id = json_decode($p->{content})->{id};
ok($t->wait_until(sub { (send_request(path => "/posts/$id", region => 'scl')->{headers}{'x-cache'} // '') eq 'HIT' }, scaled(5)),
   'a HIT in scl');
my $w = main::json_req('PUT', "/posts/$id", 'scl', "$title-v1");
is($w->{status}, 200, 'a write in scl');
like(main::tombstone_in('scl', $id) // '', qr/^FLYT11/, 'a tombstone with a position');
my $h;
ok($t->wait_until(sub { $h = send_request(path => "/posts/$id", region => 'scl'); ($h->{headers}{'x-cache'} // '') eq 'HIT' }, scaled(10)),
   'then fills are stored again');
is(main::title_of($h), "$title-v1", 'of the new post');


=== TEST 5: the primary's PostgreSQL cannot be asked: the write goes at once, its tombstone has no position, and the time fence applies
--- http_config eval
"fly_replay on;\nfly_redis \"%%REDIS_URL%%\";\nfly_redis_primary \"%%REDIS_PRIMARY_URL%%\";\nfly_cache_fence 300s;\n"
  . "fly_postgres \"host=127.0.0.1 port=%%PG_PORT%% dbname=fly_demo user=postgres\";\n"
  . "fly_postgres_primary \"host=127.0.0.1 port=1 dbname=fly_demo user=postgres\";\n"
--- config eval: $::CACHE
--- test
my $title = 'nopg-' . int(rand(1e9));
# made in the database (a POST here would tombstone its Location without a
# position, inside the time fence)
my ($id) = $t->dbh('scl')->selectrow_array("INSERT INTO posts (title, body, region) VALUES (?, '', 'scl') RETURNING id",
                                           undef, $title);
ok($t->wait_until(sub { (send_request(path => "/posts/$id", region => 'scl')->{headers}{'x-cache'} // '') eq 'HIT' }, scaled(5)),
   'a HIT in scl');
my $w = main::json_req('PUT', "/posts/$id", 'scl', "$title-v1");
is($w->{status}, 200, 'a write in scl is answered');
like(main::tombstone_in('scl', $id) // '', qr/^FLYT10/, 'its tombstone has no position');
my $off = $t->error_log_size('scl');
my $r = send_request(path => "/posts/$id", region => 'scl');
is($r->{headers}{'x-cache'}, 'MISS', 'a MISS');
is(main::title_of($r), "$title-v1", 'of the new post');
ok(log_since_has('scl', $off, qr/fly cache: tombstone, fill fenced/), 'not stored: inside the time fence');
--- error_log
the answer of a write goes without its WAL position
