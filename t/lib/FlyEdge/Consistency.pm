package FlyEdge::Consistency;

# What the read-your-writes tests (t/3xx) share: the fly_postgres lines of
# the test bed, a request sent now and read later (to see it wait), and a
# poll of an error log.  Used with FlyEdge::Test, after run_tests() began.

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use FlyEdge::Test ();

our @EXPORT = qw($PG_CONF bg_request bg_answered bg_response log_since_has parse_lsn);

# Every region's database (the primary in scl, the streaming replica in
# ord and atl) and the primary, as libpq conninfo.
our $PG_CONF = <<'EOF';
fly_postgres "host=127.0.0.1 port=%%PG_PORT%% dbname=fly_demo user=postgres";
fly_postgres_primary "host=127.0.0.1 port=%%PG_PRIMARY_PORT%% dbname=fly_demo user=postgres";
EOF

# bg_request(method => 'GET', path => '/x', region => 'atl', headers => {...},
#            body => '', direct => 0): sent at once (Host: localhost unless
# the headers name one) through the emulator's
# port for that region (or to the region's nginx with direct), answered
# later: bg_answered($req) says whether the answer began, bg_response($req)
# waits for it (a guard of scaled(30) s) and returns { status, headers
# (lower-case names; repeated ones joined with ", "), content }.
sub bg_request {
    my (%o) = @_;
    my $t = FlyEdge::Test::topology();
    my $region = $o{region} // 'scl';
    my $port = $o{direct} ? $t->nginx_port($region) : $t->emulator_port($region);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
                                  Timeout => FlyEdge::Test::scaled(5))
        or die "connect to port $port: $!";
    my $body = $o{body} // '';
    my %h = (%{$o{headers} || {}});
    $h{'Content-Length'} = length $body if length $body || ($o{method} // 'GET') =~ /^(POST|PUT|PATCH)$/;
    $h{Host} //= 'localhost' unless grep { lc $_ eq 'host' } keys %h;
    my $req = ($o{method} // 'GET') . " $o{path} HTTP/1.1\r\nConnection: close\r\n"
        . join('', map { "$_: $h{$_}\r\n" } sort keys %h) . "\r\n" . $body;
    syswrite($s, $req) == length $req or die "write: $!";
    $s->blocking(0);
    return { sock => $s, buf => '', eof => 0 };
}

sub _read_some {
    my ($g) = @_;
    while (!$g->{eof}) {
        my $n = sysread($g->{sock}, my $chunk, 65536);
        if (!defined $n) { last if $!{EAGAIN} || $!{EWOULDBLOCK}; $g->{eof} = 1; last }
        if ($n == 0) { $g->{eof} = 1; last }
        $g->{buf} .= $chunk;
    }
}

sub bg_answered { my ($g) = @_; _read_some($g); return length($g->{buf}) > 0 || $g->{eof} }

sub bg_response {
    my ($g, $guard) = @_;
    my $deadline = time + FlyEdge::Test::scaled($guard // 30);
    while (!$g->{eof} && time < $deadline) {
        _read_some($g);
        last if $g->{eof};
        my $rin = '';
        vec($rin, fileno($g->{sock}), 1) = 1;
        select(my $rout = $rin, undef, undef, 0.05);
    }
    close $g->{sock};
    my ($head, $body) = split /\r\n\r\n/, $g->{buf}, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d{3})};
    my %h;
    for my $line (split /\r\n/, $head // '') {
        next unless $line =~ /^([^:]+):\s*(.*)$/;
        my $k = lc $1;
        $h{$k} = defined $h{$k} ? "$h{$k}, $2" : $2;
    }
    if (($h{'transfer-encoding'} // '') =~ /chunked/i && defined $body) {
        my $out = '';
        while ($body =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $out .= substr($body, 0, $n, '');
            $body =~ s/^\r\n//;
        }
        $body = $out;
    }
    return { status => $status // 0, headers => \%h, content => $body // '' };
}

# log_since_has($region, $offset, qr/.../, $secs): polls the region's error
# log (from $offset) for up to scaled($secs) seconds; true once it matches.
sub log_since_has {
    my ($r, $offset, $re, $secs) = @_;
    my $t = FlyEdge::Test::topology();
    return $t->wait_until(sub { $t->error_log_since($r, $offset) =~ $re }, FlyEdge::Test::scaled($secs // 10));
}

# "16/B374D848" -> a number (Perl's integers are 64 bits here).
sub parse_lsn {
    my ($s) = @_;
    my ($hi, $lo) = ($s // '') =~ m{^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$} or return undef;
    return hex($hi) * 4294967296 + hex($lo);
}

1;
