# fly_status and read your writes (issue 9, issue 12): the region's replica
# as the module samples it (lag in seconds and in WAL bytes, up), its
# position polls and their failures per endpoint, and the waits on a WAL
# position by outcome with their time: reads parked until the replica
# replays their fly-lsn (caught up, or fly_consistency_wait over) and
# write answers held for the primary's position.  Counted over both
# workers (one zone); the output parses strictly.  Replay is paused with
# pg_wal_replay_pause() (the replica keeps receiving WAL), the replica
# stopped for the failures.  Timing: events only (answers, log lines,
# counts); every wait a scaled poll; the one time compared is the
# histogram's sum against the configured wait, which a timer cannot beat.
use FlyEdge::Test;
use FlyEdge::Consistency;
use FlyEdge::Prom qw(parse value sum_of series_key);
use IO::Socket::INET;
use Time::HiRes qw(time);

our $BOUND = 2;
our $LONG_MS = int(scaled($BOUND * 5) * 1000);     # a read that must not time out
our $SHORT_MS = int(scaled(0.5) * 1000);           # a read that must
our $PG_TIMEOUT_MS = int(scaled(1) * 1000);        # TEST 6: the primary paused

our $CONF = <<"EOF";
fly_replay on;
$PG_CONF
fly_consistency lsn;
fly_consistency_wait ${LONG_MS}ms;
EOF

our $CONF6 = $CONF . "fly_postgres_timeout ${PG_TIMEOUT_MS}ms;\n";

our $LOCATIONS = <<"EOF";
location / {
    add_header X-Worker \$pid always;
    proxy_pass http://app;
}
location /short/ {
    fly_consistency_wait ${SHORT_MS}ms;
    add_header X-Worker \$pid always;
    proxy_pass http://app/;
}
location = /metrics { fly_status; }
location = /who { add_header X-Worker \$pid always; return 204; }
EOF

# Keep-alive connections to atl's nginx, each on a worker it has named
# (GET /who): up to two on each worker, new ones made until both workers
# have one (or a deadline).  [socket, worker pid] each.
sub worker_conns {
    my $t = topology();
    my (@conns, %on);
    $t->wait_until(sub {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->nginx_port('atl'), Proto => 'tcp',
                                      Timeout => scaled(5)) or die "connect: $!";
        syswrite($s, "GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n");
        my ($buf, $deadline) = ('', time + scaled(5));
        while ($buf !~ /\r\n\r\n/ && time < $deadline) {
            my $rin = '';
            vec($rin, fileno($s), 1) = 1;
            next unless select(my $rout = $rin, undef, undef, 0.1);
            sysread($s, my $chunk, 4096) or last;
            $buf .= $chunk;
        }
        my ($pid) = $buf =~ /^X-Worker:\s*(\d+)/mi or die "GET /who: no X-Worker in: $buf\n";
        push @conns, [$s, $pid] if ($on{$pid}++ // 0) < 2;
        return keys(%on) >= 2 && @conns >= 4;
    }, scaled(10));
    return @conns;
}

sub scrape {
    my ($r) = @_;
    my $res = send_request(path => '/metrics', region => $r, direct => 1,
                           ua => FlyEdge::Test::UA->new(timeout => scaled(10), keep_alive => 0));
    die "GET /metrics in $r: $res->{status}\n" unless $res->{status} == 200;
    my $p = parse($res->{content});
    die "the metrics of $r do not parse:\n" . join("\n", @{$p->{errors}}) . "\n" if @{$p->{errors}};
    return $p;
}

# Polls region $r's metrics until the condition holds; the last scrape.
sub settle {
    my ($r, $cond, $secs) = @_;
    my $p;
    topology()->wait_until(sub { $p = scrape($r); $cond->($p) }, scaled($secs // 5));
    return $p;
}

sub ep { my ($r, $role) = @_; { endpoint => '127.0.0.1:' . ($role eq 'primary' ? topology()->pg_primary_port : topology()->pg_port($r)), role => $role } }
sub wait_of { { wait => $_[0], outcome => $_[1] } }

sub post {
    my ($region, $title) = @_;
    return send_request(method => 'POST', path => '/posts', region => $region,
                        headers => { 'Content-Type' => 'application/json' }, body => qq{{"title":"$title"}});
}

sub fly_lsn_of {
    my ($res) = @_;
    my $v = $res->{headers}{'set-cookie'};
    my ($c) = grep { /^fly-lsn=[^;]/ } ref $v ? @$v : defined $v ? ($v) : ();
    my ($lsn) = ($c // '') =~ /^fly-lsn=([^;]+)/;
    return $lsn;
}

run_tests();

__DATA__

=== TEST 1: start (fly_postgres from the next block on, once PostgreSQL runs)
--- http_config
fly_replay on;
--- request
GET /echo
--- error_code: 200


=== TEST 2: the families and their labels: the replica of atl (up, no lag once replayed), its polls of both endpoints; scl asks its own database only
--- http_config eval: $::CONF
--- config eval: $::LOCATIONS
--- test
my $reg = main::ep('atl', 'regional');
my $pri = main::ep('atl', 'primary');
ok($t->wait_for_pg_replication(scaled(10)), 'the replica has replayed everything');
my $p = main::settle('atl', sub {
    value($_[0], 'fly_edge_pg_replica_up', $reg) == 1
    && value($_[0], 'fly_edge_pg_position_polls_total', $pri) >= 1
    && value($_[0], 'fly_edge_pg_replica_lag_seconds', $reg) == 0 }, 15);
is($p->{families}{fly_edge_pg_replica_lag_seconds}{type}, 'gauge', 'the lag in seconds is a gauge');
is($p->{families}{fly_edge_pg_replica_lag_bytes}{type}, 'gauge', 'the lag in bytes is a gauge');
is($p->{families}{fly_edge_pg_replica_up}{type}, 'gauge', 'up is a gauge');
is($p->{families}{fly_edge_lsn_wait_seconds}{type}, 'histogram', 'the wait time is a histogram');
is($p->{families}{$_}{type}, 'counter', "$_ is a counter")
    for qw(fly_edge_pg_position_polls_total fly_edge_pg_position_poll_failures_total fly_edge_lsn_waits_total);
is(value($p, 'fly_edge_pg_replica_up', $reg), 1, "atl's replica is up ($reg->{endpoint})");
is(value($p, 'fly_edge_pg_replica_lag_seconds', $reg), 0, 'with no lag');
cmp_ok(value($p, 'fly_edge_pg_position_polls_total', $reg), '>=', 1, 'its position was polled: ' . value($p, 'fly_edge_pg_position_polls_total', $reg));
cmp_ok(value($p, 'fly_edge_pg_position_polls_total', $pri), '>=', 1, "and the primary's ($pri->{endpoint}): " . value($p, 'fly_edge_pg_position_polls_total', $pri));
for my $w ([read => 'caught_up'], [read => 'timeout'], [read => 'unreachable'], [read => 'lagging'], [read => 'sampled'],
           [read => 'abandoned'], [write => 'positioned'], [write => 'no_position'], [write => 'abandoned']) {
    ok(exists $p->{series}{series_key('fly_edge_lsn_waits_total', main::wait_of(@$w))}, "waits: wait=$w->[0] outcome=$w->[1]");
    ok(exists $p->{series}{series_key('fly_edge_lsn_wait_seconds_count', main::wait_of(@$w))}, '... and its histogram');
}
my $s = main::settle('scl', sub { value($_[0], 'fly_edge_pg_replica_up', main::ep('scl', 'regional')) == 1 }, 15);
is(value($s, 'fly_edge_pg_replica_up', main::ep('scl', 'regional')), 1, 'scl: its database is up');
ok(!grep({ /^fly_edge_pg_[a-z_]+\{[^}]*role="primary"/ } keys %{$s->{series}}), 'scl: no primary endpoint apart (it is the regional one)');


=== TEST 3: replay paused: the lag grows in seconds and bytes; a write's held answer gets its position; reads in atl (several, both workers) wait and catch up; then the lag is 0
--- http_config eval: $::CONF
--- config eval: $::LOCATIONS
--- test
my $reg = main::ep('atl', 'regional');
my $before = main::scrape('atl');
my $before_scl = main::scrape('scl');
$t->pause_pg_replay;
my $w = main::post('atl', 'metrics wait');
is($w->{status}, 201, 'a write, replayed to scl');
my $lsn = main::fly_lsn_of($w);
ok($lsn, "with fly-lsn=$lsn");
my $id = json_decode($w->{content})->{id};
my $dscl = sub { my ($p, $o) = @_; value($p, 'fly_edge_lsn_waits_total', main::wait_of('write', $o)) - value($before_scl, 'fly_edge_lsn_waits_total', main::wait_of('write', $o)) };
my $ps = main::settle('scl', sub { $dscl->($_[0], 'positioned') >= 1 });
is($dscl->($ps, 'positioned'), 1, "scl: the write's answer was held for the primary's position once");
is($dscl->($ps, 'no_position'), 0, 'scl: none without it');

my $p = main::settle('atl', sub { value($_[0], 'fly_edge_pg_replica_lag_seconds', $reg) > 1
                                  && value($_[0], 'fly_edge_pg_replica_lag_bytes', $reg) > 0 }, 15);
cmp_ok(value($p, 'fly_edge_pg_replica_lag_seconds', $reg), '>', 1, 'the lag grows past 1 s: ' . value($p, 'fly_edge_pg_replica_lag_seconds', $reg));
cmp_ok(value($p, 'fly_edge_pg_replica_lag_bytes', $reg), '>', 0, 'with WAL bytes behind: ' . value($p, 'fly_edge_pg_replica_lag_bytes', $reg));
is(value($p, 'fly_edge_pg_replica_up', $reg), 1, 'the replica is still up');

my $off = $t->error_log_size('atl');
# the reads on connections of both workers (when the kernel gave both some)
my @conns = main::worker_conns();
Test::More::note('connections on workers: ' . join(' ', map { $_->[1] } @conns));
my @g;
for my $c (@conns) {
    my $req = "GET /posts/$id HTTP/1.1\r\nHost: localhost\r\nCookie: fly-lsn=$lsn\r\nConnection: close\r\n\r\n";
    syswrite($c->[0], $req) == length $req or die "write: $!";
    $c->[0]->blocking(0);
    push @g, { sock => $c->[0], buf => '', eof => 0 };
}
my $n = scalar @g;
my $parked = sub { my @n = $t->error_log_since('atl', $off) =~ /fly consistency: waiting up to $::LONG_MS ms for the replica to replay \Q$lsn\E/g; scalar @n };
ok($t->wait_until(sub { $parked->() >= $n }, scaled(10)), "atl parks the $n reads: " . $parked->());
ok(!grep({ bg_answered($_) } @g), 'none is answered while the replica is behind');
$t->resume_pg_replay;
my %workers;
for my $g (@g) {
    my $r = bg_response($g);
    is($r->{status}, 200, 'once replayed, a read is answered');
    like($r->{headers}{'set-cookie'} // '', qr/^fly-lsn=; Max-Age=0/, '... in atl, clearing the cookie');
    $workers{$r->{headers}{'x-worker'} // '?'}++;
}
my $d = sub { my ($p, $name, $l) = @_; value($p, $name, $l) - value($before, $name, $l) };
my $cu = main::wait_of('read', 'caught_up');
$p = main::settle('atl', sub { $d->($_[0], 'fly_edge_lsn_waits_total', $cu) >= $n });
is($d->($p, 'fly_edge_lsn_waits_total', $cu), $n, "$n reads waited and caught up");
is($d->($p, 'fly_edge_lsn_wait_seconds_count', $cu), $n, "$n waits in the histogram");
cmp_ok($d->($p, 'fly_edge_lsn_wait_seconds_sum', $cu), '>', 0, 'their time: ' . $d->($p, 'fly_edge_lsn_wait_seconds_sum', $cu) . ' s');
is($d->($p, 'fly_edge_lsn_waits_total', main::wait_of('read', 'timeout')), 0, 'none timed out');
is(sum_of($p, 'fly_edge_lsn_waits_total', { wait => 'read' }) - sum_of($before, 'fly_edge_lsn_waits_total', { wait => 'read' }), $n,
   'no read wait of another outcome');
SKIP: {
    skip('every read went to one worker', 1) if keys %workers < 2;
    pass('the waits of both workers were counted in the one zone: ' . join(', ', sort keys %workers));
}
$p = main::settle('atl', sub { value($_[0], 'fly_edge_pg_replica_lag_seconds', $reg) == 0 }, 15);
is(value($p, 'fly_edge_pg_replica_lag_seconds', $reg), 0, 'the replica caught up: no lag');
$p = main::settle('atl', sub { value($_[0], 'fly_edge_pg_replica_lag_bytes', $reg) == 0 }, 15);
is(value($p, 'fly_edge_pg_replica_lag_bytes', $reg), 0, 'no WAL bytes behind');


=== TEST 4: replay paused past fly_consistency_wait: the read times out (counted with at least the wait's time) and is replayed to scl
--- http_config eval: $::CONF
--- config eval: $::LOCATIONS
--- test
my $before = main::scrape('atl');
$t->pause_pg_replay;
my $w = main::post('atl', 'metrics timeout');
is($w->{status}, 201, 'a write');
my $lsn = main::fly_lsn_of($w);
my $id = json_decode($w->{content})->{id};
my $r = send_request(path => "/short/posts/$id", region => 'atl', headers => { Cookie => "fly-lsn=$lsn" });
is($r->{status}, 200, 'the read is answered');
is($r->{headers}{'fly-emulator-region'}, 'scl', 'by scl, after the wait');
$t->resume_pg_replay;
my $to = main::wait_of('read', 'timeout');
my $d = sub { my ($p, $name, $l) = @_; value($p, $name, $l) - value($before, $name, $l) };
my $p = main::settle('atl', sub { $d->($_[0], 'fly_edge_lsn_waits_total', $to) >= 1 });
is($d->($p, 'fly_edge_lsn_waits_total', $to), 1, 'one read timed out');
is($d->($p, 'fly_edge_lsn_wait_seconds_count', $to), 1, 'one wait in its histogram');
cmp_ok($d->($p, 'fly_edge_lsn_wait_seconds_sum', $to), '>=', $::SHORT_MS / 1000 - 0.001,
       'which took at least fly_consistency_wait (' . ($::SHORT_MS / 1000) . ' s): ' . $d->($p, 'fly_edge_lsn_wait_seconds_sum', $to));
is($d->($p, 'fly_edge_lsn_wait_seconds_bucket', { %$to, le => '0.1' }), 0, 'none in a bucket under it (le=0.1)')
    if $::SHORT_MS > 100;
is($d->($p, 'fly_edge_lsn_waits_total', main::wait_of('read', 'caught_up')), 0, 'none caught up');
is($d->($p, 'fly_edge_replays_total', { state => 'lsn' }), 1, 'replayed with state=lsn');


=== TEST 5: the replica stopped: atl's polls of it fail and it is down; back: up again
--- http_config eval: $::CONF
--- config eval: $::LOCATIONS
--- test
my $reg = main::ep('atl', 'regional');
my $before = main::scrape('atl');
my $fail = sub { value($_[0], 'fly_edge_pg_position_poll_failures_total', $reg) - value($before, 'fly_edge_pg_position_poll_failures_total', $reg) };
$t->stop_pg('replica');
my $p = main::settle('atl', sub { $fail->($_[0]) >= 1 && value($_[0], 'fly_edge_pg_replica_up', $reg) == 0 }, 15);
cmp_ok($fail->($p), '>=', 1, 'failed polls: ' . $fail->($p));
is(value($p, 'fly_edge_pg_replica_up', $reg), 0, 'the replica is down');
my $pri = main::ep('atl', 'primary');
is(value($p, 'fly_edge_pg_position_poll_failures_total', $pri) - value($before, 'fly_edge_pg_position_poll_failures_total', $pri), 0,
   "the primary's polls do not fail");
$t->start_pg('replica');
$p = main::settle('atl', sub { value($_[0], 'fly_edge_pg_replica_up', $reg) == 1 }, 30);
is(value($p, 'fly_edge_pg_replica_up', $reg), 1, 'back: up');


=== TEST 6: the primary paused: a held write answer gets no position within fly_postgres_timeout (no_position), and goes
--- http_config eval: $::CONF6
--- config eval: $::LOCATIONS
--- test
my $before = main::scrape('scl');
my $d = sub { my ($p, $o) = @_; value($p, 'fly_edge_lsn_waits_total', main::wait_of('write', $o)) - value($before, 'fly_edge_lsn_waits_total', main::wait_of('write', $o)) };
$t->pause_pg('primary');
my @res = map { send_request(method => 'POST', path => '/echo', region => 'scl', direct => 1, body => 'w') } 1 .. 3;
is(scalar(grep { $_->{status} == 200 } @res), 3, 'the writes are answered');
ok(!grep({ ($_->{headers}{'set-cookie'} // '') =~ /fly-lsn=[^;]/ } @res), 'without the cookie');
my $p = main::settle('scl', sub { $d->($_[0], 'no_position') >= 1 });
$t->resume_pg('primary');
cmp_ok($d->($p, 'no_position'), '>=', 1, 'held answers that got no position: ' . $d->($p, 'no_position'));
is($d->($p, 'positioned'), 0, 'none got one');
my $nc = main::wait_of('write', 'no_position');
is(value($p, 'fly_edge_lsn_wait_seconds_count', $nc) - value($before, 'fly_edge_lsn_wait_seconds_count', $nc),
   $d->($p, 'no_position'), 'each in the histogram');
