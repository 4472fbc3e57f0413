# fly_replica_max_lag (issue 9): while the region's replica is further
# behind what the primary has written than the bound, the location's
# requests are replayed to the primary (state=lag); once it has caught
# up, they are served in the region again.  Lag is how far replay is
# behind (CLARIFICATIONS 10): an idle primary with a caught-up replica
# has zero lag, however long ago its last transaction was.
use FlyEdge::Test;
use FlyEdge::Consistency;

our $CONF = <<"EOF";
fly_replay on;
$PG_CONF
EOF

our $LOCATIONS = <<'EOF';
location / {
    add_header X-Replica-Lag "$fly_replica_lag" always;
    proxy_pass http://app;
}
location /guarded/ {
    fly_replica_max_lag 1s;
    add_header X-Replica-Lag "$fly_replica_lag" always;
    proxy_pass http://app/;
}
location /guarded-no-replay/ {
    fly_replay off;
    fly_replica_max_lag 1s;
    proxy_pass http://app/;
}
EOF

sub slurp { my ($f) = @_; open my $fh, '<', $f or return ''; local $/; <$fh> // '' }

run_tests();

__DATA__

=== TEST 1: start (fly_postgres from the next block on, once PostgreSQL runs)
--- http_config
fly_replay on;
--- request
GET /echo
--- error_code: 200


=== TEST 2: an idle primary with a caught-up replica: zero lag, long after its last transaction
--- http_config eval: $::CONF
--- config eval: $::LOCATIONS
--- test
send_request(method => 'POST', path => '/posts', region => 'scl', direct => 1,
             headers => { 'Content-Type' => 'application/json' }, body => '{"title":"last"}');
ok($t->wait_for_pg_replication(scaled(10)), 'the replica has replayed everything');
# the last transaction the replica replayed is seconds old
my $age = sub {
    ($t->dbh('atl')->selectrow_array(
        'SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000'))[0] // 0
};
ok($t->wait_until(sub { $age->() > 3000 }, scaled(20)), 'the last transaction is over 3 s old');
my $r;
ok($t->wait_until(sub { $r = send_request(path => '/guarded/echo', region => 'atl');
                        ($r->{headers}{'x-replica-lag'} // '') eq '0' }, scaled(10)),
   '$fly_replica_lag is 0');
is($r->{headers}{'fly-emulator-region'}, 'atl', 'the guarded location is served by atl');
cmp_ok($age->(), '>', 3000, 'while the last transaction is still over 3 s old');


=== TEST 3: replay paused: once the lag passes fly_replica_max_lag, the guarded location is replayed to scl (state=lag); unguarded ones stay; after replay resumes, atl again
--- http_config eval: $::CONF
--- config eval: $::LOCATIONS
--- test
$t->pause_pg_replay;
my $off = $t->error_log_size('atl');
send_request(method => 'POST', path => '/posts', region => 'atl',
             headers => { 'Content-Type' => 'application/json' }, body => '{"title":"behind"}');
my $g;
ok($t->wait_until(sub { $g = send_request(path => '/guarded/echo', region => 'atl');
                        $g->{headers}{'fly-emulator-region'} eq 'scl' }, scaled(15)),
   'the guarded location is replayed to scl');
is($g->{status}, 200, 'and answered there');
like($t->error_log_since('atl', $off), qr/fly consistency: replaying, state=lag \(replica lagging\)/, 'atl says why');
ok($t->wait_until(sub { main::slurp($t->access_log_path('atl')) =~ /fr="region=scl;state=lag"/ }, scaled(5)),
   'with fly-replay: region=scl;state=lag');
my $free = send_request(path => '/echo', region => 'atl');
is($free->{headers}{'fly-emulator-region'}, 'atl', 'a location without the guard is served by atl');
cmp_ok($free->{headers}{'x-replica-lag'}, '>', 1000, "its \$fly_replica_lag shows the lag ($free->{headers}{'x-replica-lag'} ms)");
my $nr = send_request(path => '/guarded-no-replay/echo', region => 'atl');
is($nr->{headers}{'fly-emulator-region'}, 'scl', 'the guard works without fly_replay too');

$t->resume_pg_replay;
ok($t->wait_until(sub { $g = send_request(path => '/guarded/echo', region => 'atl');
                        $g->{headers}{'fly-emulator-region'} eq 'atl' }, scaled(15)),
   'once the replica has caught up, atl serves the guarded location again');
is($g->{headers}{'x-replica-lag'}, '0', 'with no lag');
