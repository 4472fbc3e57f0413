# PostgreSQL in trouble never turns into an error or a hang while the app
# can answer (issue 9): the replica stopped or paused (SIGSTOP), the
# primary stopped or paused, both.  Reads with a fly-lsn cookie are
# replayed to the primary, reads without one are served where they are,
# the lag guard replays, writes go without the cookie; all logged, at
# most once a second.  /echo answers without the database.
use FlyEdge::Test;
use FlyEdge::Consistency;

# Replays "at once" are told from waits by a wait five times the bound.
our $BOUND = 5;
our $WAIT = int(scaled($BOUND * 6)) . 's';
our $PGTIMEOUT = int(scaled(1) * 1000) . 'ms';

our $CONF = <<"EOF";
fly_replay on;
$PG_CONF
fly_consistency lsn;
fly_consistency_wait $WAIT;
fly_postgres_timeout $PGTIMEOUT;
fly_postgres_connect_timeout $PGTIMEOUT;
EOF

# Each block's configuration differs (its number), so that every block
# begins with new workers, whose clients connect at once.
sub conf {
    my ($n) = @_;
    return <<"EOF";
# block $n
location / {
    add_header X-Fly-Replay "\$fly_replay" always;
    proxy_pass http://app;
}
location /lagged/ {
    fly_replica_max_lag 30s;
    add_header X-Fly-Replay "\$fly_replay" always;
    proxy_pass http://app/;
}
EOF
}

# A read in atl, with a cookie ahead of any replica, or none.
sub read_atl {
    my ($path, $cookie) = @_;
    return send_request(path => $path, region => 'atl',
                        headers => { defined $cookie ? (Cookie => "fly-lsn=$cookie") : () });
}

sub write_scl { send_request(method => 'POST', path => '/echo', region => 'scl', direct => 1, body => 'w') }

sub no_5xx { my @r = @_; ok(!grep({ $_->{status} >= 500 } @r), 'no 5xx') or diag(join ' ', map { $_->{status} } @r) }

our $AHEAD = 'FFFFFFFF/0';

run_tests();

__DATA__

=== TEST 1: start (fly_postgres from the next block on, once PostgreSQL runs)
--- http_config
fly_replay on;
--- request
GET /echo
--- error_code: 200


=== TEST 2: the replica stopped: reads with the cookie replayed to scl at once, reads without it served in atl, the lag guard replays, writes keep their cookie
--- http_config eval: $::CONF
--- config eval: main::conf(2)
--- test
my $off = $t->error_log_size('atl');
$t->stop_pg('replica');
ok(log_since_has('atl', $off, qr/fly postgres regional 127\.0\.0\.1:\d+: /), "atl's workers see it go");
my @res;
for (1 .. 3) {
    my $c = main::read_atl('/echo', $main::AHEAD);
    push @res, $c;
    is($c->{headers}{'fly-emulator-region'}, 'scl', 'a read with the cookie is answered by scl');
    cmp_ok($c->{elapsed}, '<', scaled($main::BOUND), "without waiting for fly_consistency_wait ($main::WAIT)");
    my $n = main::read_atl('/echo');
    push @res, $n;
    is($n->{headers}{'fly-emulator-region'}, 'atl', 'a read without it is answered by atl');
    my $l = main::read_atl('/lagged/echo');
    push @res, $l;
    is($l->{headers}{'fly-emulator-region'}, 'scl', 'the lag guard replays to scl');
}
my $w = send_request(method => 'POST', path => '/posts', region => 'atl',
                     headers => { 'Content-Type' => 'application/json' }, body => '{"title":"replica down"}');
push @res, $w;
is($w->{status}, 201, 'a write through atl');
like($w->{headers}{'set-cookie'} // '', qr/^fly-lsn=/, 'gets its cookie in scl');
main::no_5xx(@res);
my $log = $t->error_log_since('atl', $off);
like($log, qr/\[warn\].*fly_consistency: the region's PostgreSQL cannot be asked: replaying to the primary region/,
     'atl says why it replays');
my %per_second;
$per_second{"$1 $2"}++ while $log =~ /^(\S+ \S+) \[warn\] (\d+)#\d+: .*fly_consistency: the region's PostgreSQL cannot be asked/mg;
ok(!grep({ $_ > 1 } values %per_second), 'at most once a second per worker');


=== TEST 3: the replica back: its workers reconnect and serve the cookie's reads again
--- http_config eval: $::CONF
--- config eval: main::conf(3)
--- test
my $off = $t->error_log_size('atl');
$t->stop_pg('replica');
ok(log_since_has('atl', $off, qr/fly postgres regional/), 'it goes');
$t->start_pg('replica');
my $w = send_request(method => 'POST', path => '/posts', region => 'atl',
                     headers => { 'Content-Type' => 'application/json' }, body => '{"title":"after"}');
my ($lsn) = ($w->{headers}{'set-cookie'} // '') =~ /^fly-lsn=([^;]+)/;
ok($lsn, "a write gets fly-lsn=$lsn");
ok($t->wait_for_pg_replication(scaled(10)), 'the replica replays it');
# a position the replica was never seen at before it went: only a new
# connection can tell
ok($t->wait_until(sub { main::read_atl('/echo', $lsn)->{headers}{'fly-emulator-region'} eq 'atl' }, scaled(20)),
   'a read with that cookie is answered by atl again');
like($t->error_log_since('atl', $off), qr/\[notice\].*fly postgres regional 127\.0\.0\.1:\d+: connected/,
     'the reconnection is logged');


=== TEST 4: the primary stopped: writes in scl are answered at once without the cookie; atl still serves what its replica has
--- http_config eval: $::CONF
--- config eval: main::conf(4)
--- test
my $off = $t->error_log_size('scl');
$t->stop_pg('primary');
ok(log_since_has('scl', $off, qr/fly postgres regional 127\.0\.0\.1:\d+: /), "scl's workers see it go");
my @res;
for (1 .. 3) {
    my $w = main::write_scl();
    push @res, $w;
    is($w->{status}, 200, 'a write the app answers without the database');
    ok(!defined $w->{headers}{'set-cookie'}, 'goes without the cookie');
    cmp_ok($w->{elapsed}, '<', scaled($main::BOUND), 'at once');
}
my $r = main::read_atl('/echo', '0/1');
push @res, $r;
is($r->{headers}{'fly-emulator-region'}, 'atl', 'a read in atl with a cookie its replica passed: atl');
my $l = main::read_atl('/lagged/echo');
push @res, $l;
is($l->{headers}{'fly-emulator-region'}, 'atl', 'the lag guard: the replica had replayed all the primary was seen to write');
main::no_5xx(@res);
like($t->error_log_since('scl', $off), qr/\[warn\].*fly_consistency: the primary's PostgreSQL cannot be asked: the answer of a write goes without its WAL position \(no fly-lsn cookie, none in its invalidation\)/,
     'scl says why');


=== TEST 5: the replica paused (SIGSTOP): the query times out, reads with the cookie are replayed, without it served in atl
--- http_config eval: $::CONF
--- config eval: main::conf(5)
--- test
$t->pause_pg('replica');
my @res;
my $c = main::read_atl('/echo', $main::AHEAD);
push @res, $c;
is($c->{headers}{'fly-emulator-region'}, 'scl', 'a read with the cookie: scl');
cmp_ok($c->{elapsed}, '<', scaled($main::BOUND), "after fly_postgres_timeout ($main::PGTIMEOUT), not fly_consistency_wait ($main::WAIT)");
for (1 .. 3) {
    my $n = main::read_atl('/echo');
    push @res, $n;
    is($n->{headers}{'fly-emulator-region'}, 'atl', 'a read without it: atl');
    cmp_ok($n->{elapsed}, '<', scaled($main::BOUND), 'at once');
    my $again = main::read_atl('/echo', $main::AHEAD);
    push @res, $again;
    is($again->{headers}{'fly-emulator-region'}, 'scl', 'with it, again: scl');
}
my $l = main::read_atl('/lagged/echo');
push @res, $l;
is($l->{headers}{'fly-emulator-region'}, 'scl', 'the lag guard replays');
main::no_5xx(@res);
like(block_error_log('atl'), qr/fly postgres regional 127\.0\.0\.1:\d+: query timed out \(fly_postgres_timeout\)/,
     'the timeout is logged');


=== TEST 6: the primary paused: a write's answer waits fly_postgres_timeout at most, then goes without the cookie
--- http_config eval: $::CONF
--- config eval: main::conf(6)
--- test
$t->pause_pg('primary');
my @res;
for (1 .. 3) {
    my $w = main::write_scl();
    push @res, $w;
    is($w->{status}, 200, 'the write is answered');
    ok(!defined $w->{headers}{'set-cookie'}, 'without the cookie');
    cmp_ok($w->{elapsed}, '<', scaled($main::BOUND), 'within the bound');
}
my $r = main::read_atl('/lagged/echo');
push @res, $r;
is($r->{headers}{'fly-emulator-region'}, 'atl', 'atl serves: its replica is not behind what the primary was seen to write');
main::no_5xx(@res);
like(block_error_log('scl'), qr/fly_consistency: (the primary's PostgreSQL did not answer|the primary's PostgreSQL cannot be asked)/,
     'scl says why');


=== TEST 7: both stopped: the app still answers everything it can, through the module
--- http_config eval: $::CONF
--- config eval: main::conf(7)
--- test
$t->stop_pg('replica');
$t->stop_pg('primary');
my @res;
for (1 .. 2) {
    push @res, main::write_scl();
    ok(!defined $res[-1]{headers}{'set-cookie'}, 'a write: no cookie');
    push @res, main::read_atl('/echo', $main::AHEAD);
    is($res[-1]{headers}{'fly-emulator-region'}, 'scl', 'a read with the cookie: scl');
    push @res, main::read_atl('/echo');
    is($res[-1]{headers}{'fly-emulator-region'}, 'atl', 'without: atl');
    push @res, main::read_atl('/lagged/echo');
    is($res[-1]{headers}{'fly-emulator-region'}, 'scl', 'the lag guard: scl');
}
is($_->{status}, 200, "status 200") for @res;
