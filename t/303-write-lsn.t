# The primary region holds a write's answer until the primary's WAL
# position after it is known (issue 9): the header waits, the body's
# buffers are kept busy and nothing is lost.  Large, slow and chunked
# bodies arrive intact (sha256), with proxy_buffering on and off, with
# small buffers (temporary files, or none: the upstream blocked), also
# when the app has finished long before the position comes; one query
# serves every write waiting at the same moment.
use FlyEdge::Test;
use FlyEdge::Consistency;
use Digest::SHA qw(sha256_hex);

our $CONF = <<"EOF";
fly_replay on;
$PG_CONF
fly_consistency lsn;
EOF

# While the primary is paused, held answers wait for it: the timeout only
# guards against a hang.
our $PAUSED_CONF = $CONF . "fly_postgres_timeout " . int(scaled(30)) . "s;\n";

our $LOCATIONS = <<'EOF';
location / {
    proxy_pass http://app;
}
location /nobuf/ {
    proxy_buffering off;
    proxy_buffer_size 4k;
    proxy_pass http://app/;
}
location /files/ {
    proxy_buffers 2 4k;
    proxy_busy_buffers_size 4k;
    proxy_pass http://app/;
}
location /blocked/ {
    proxy_buffers 2 4k;
    proxy_busy_buffers_size 4k;
    proxy_max_temp_file_size 0;
    proxy_pass http://app/;
}
location /off/ {
    fly_consistency off;
    proxy_pass http://app/;
}
EOF

our @PATHS = ('/big?size=3000000', '/chunked?size=2000000&chunk=777', '/bin?size=1', '/slow?ms=300');
our @PREFIXES = ('', '/nobuf', '/files', '/blocked');

sub intact {
    my ($res, $what) = @_;
    my $sha = $res->{headers}{'x-body-sha256'} // 'none';
    is(sha256_hex($res->{content}), $sha, "$what: the body is intact (" . length($res->{content}) . " bytes)");
    like($res->{headers}{'set-cookie'} // '', qr{^fly-lsn=[0-9A-F]+/[0-9A-F]+;}, "$what: with fly-lsn");
}

run_tests();

__DATA__

=== TEST 1: start (fly_postgres connects from the next configuration, once PostgreSQL runs)
--- http_config
fly_replay on;
--- request
GET /posts
--- error_code: 200


=== TEST 2: writes in scl: large, chunked, small and slow bodies, buffered, unbuffered, through temporary files, with the upstream blocked
--- http_config eval: $::CONF
--- config eval: $::LOCATIONS
--- timeout: 60
--- test
for my $p (@main::PREFIXES) {
    for my $q (@main::PATHS) {
        my $res = send_request(method => 'POST', path => "$p$q", region => 'scl', direct => 1, body => 'x');
        is($res->{status}, 200, "POST $p$q");
        main::intact($res, "POST $p$q");
    }
}
my $off = send_request(method => 'POST', path => '/off/big?size=100000', region => 'scl', direct => 1, body => 'x');
is(sha256_hex($off->{content}), $off->{headers}{'x-body-sha256'}, 'fly_consistency off: intact');
ok(!defined $off->{headers}{'set-cookie'}, 'fly_consistency off: no cookie');
like(block_error_log('scl'), qr/fly consistency: holding the answer of a write/, 'the answers were held');


=== TEST 3: the primary is paused: the answers wait (also one the app has finished), then go whole
--- http_config eval: $::PAUSED_CONF
--- config eval: $::LOCATIONS
--- timeout: 60
--- test
# The first fits in proxy_buffers (8 x 4k, with the header's buffer): the app's whole answer is in
# before the position comes, the upstream is done and the request waits
# for the hold alone; the others keep the app waiting (the upstream stops
# reading while its buffers are busy; with a client ready to write, nginx
# does not spill to a temporary file meanwhile).
my @paths = ('/big?size=20000', map { "$_/big?size=2000000" } @main::PREFIXES);
$t->pause_pg('primary');
my $off = $t->error_log_size('scl');
my @bg = map { [$_, bg_request(method => 'POST', path => $_, region => 'scl', direct => 1, body => 'x')] } @paths;
ok($t->wait_until(sub { my @n = $t->error_log_since('scl', $off) =~ /holding the answer of a write/g; @n == @bg }, scaled(20)),
   'every answer is held');
ok($t->wait_until(sub { $t->error_log_since('scl', $off) =~ /finalize http upstream request: 0/ }, scaled(20)),
   'the small answer\'s upstream is done');
ok(!grep({ bg_answered($_->[1]) } @bg), 'no answer has begun');
$t->resume_pg('primary');
for my $b (@bg) {
    my $res = bg_response($b->[1], 60);
    is($res->{status}, 200, "POST $b->[0] answered once the primary answers");
    main::intact($res, "POST $b->[0]");
}


=== TEST 4: one query serves every write waiting at the same moment
--- http_config eval: $::PAUSED_CONF
--- test
my $n = 8;
$t->pause_pg('primary');
my $off = $t->error_log_size('scl');
my @bg = map { bg_request(method => 'POST', path => "/echo?w=$_", region => 'scl', direct => 1, body => "w$_") } 1 .. $n;
ok($t->wait_until(sub { my @h = $t->error_log_since('scl', $off) =~ /holding the answer of a write/g; @h == $n }, scaled(20)),
   "$n answers held");
$t->resume_pg('primary');
my %lsn;
for my $b (@bg) {
    my $res = bg_response($b, 60);
    is($res->{status}, 200, 'answered');
    my ($v) = ($res->{headers}{'set-cookie'} // '') =~ m{^fly-lsn=([0-9A-F]+/[0-9A-F]+);};
    ok($v, "with fly-lsn=$v");
    $lsn{$v}++;
}
my $log = $t->error_log_since('scl', $off);
my %per_worker;
$per_worker{$1}++ while $log =~ /\d+#(\d+): fly postgres \w+: query "SELECT pg_current_wal_insert_lsn\(\), current_setting/g;
my $queries = 0;
$queries += $_ for values %per_worker;
cmp_ok($queries, '<', $n, "fewer queries ($queries) than writes ($n)");
ok(!grep({ $_ > 2 } values %per_worker), 'at most two per worker: the one stuck, one for all that waited behind it')
    or diag(join ', ', map { "$_: $per_worker{$_}" } sort keys %per_worker);
cmp_ok(scalar(keys %lsn), '<=', $queries, 'as many positions as queries at most');


=== TEST 5: a write through atl, replayed to scl, large: intact, with the cookie
--- http_config eval: $::CONF
--- config eval: $::LOCATIONS
--- request
POST /nobuf/big?size=2500000
x
--- region: atl
--- timeout: 60
--- test
is($res->{headers}{'fly-emulator-region'}, 'scl', 'answered by scl');
main::intact($res, 'POST through atl');
