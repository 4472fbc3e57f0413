package FlyEdge::CacheTest;

# Helpers of the cache's integration tests (t/21x-*.t): requests straight
# to a region's nginx for one Host, the X-Cache they got, the app's request
# count, raw requests (absolute URIs in the request line, unix sockets).
# Load after FlyEdge::Test; set $FlyEdge::CacheTest::HOST to the file's host.

use strict;
use warnings;

use Exporter 'import';
use HTTP::Tiny;
use IO::Socket::INET;
use IO::Socket::UNIX;

our @EXPORT = qw(get xc cached_in purge app_count raw_request);
our $HOST = 'localhost';

# get($path, $region, host => H, headers => {...}, timeout => S): a GET
# straight to that region's nginx (default scl) with Host $HOST.
sub get {
    my ($path, $r, %o) = @_;
    return FlyEdge::Test::send_request(
        path => $path, region => $r // 'scl', direct => 1, timeout => $o{timeout},
        headers => { Host => $o{host} // $HOST, %{ $o{headers} // {} } });
}

# The X-Cache header of such a GET ('' when there is none).
sub xc { my $res = get(@_); return $res->{headers}{'x-cache'} // '' }

# A MISS then a HIT in that region.
sub cached_in {
    my ($path, $r, %o) = @_;
    my $m = xc($path, $r, %o);
    my $h = xc($path, $r, %o);
    return $m eq 'MISS' && $h eq 'HIT';
}

# purge($path, $region, method => M, headers => {...}): a PURGE (or M) the same way.
sub purge {
    my ($path, $r, %o) = @_;
    return FlyEdge::Test::send_request(
        method => $o{method} // 'PURGE', path => $path, region => $r // 'scl', direct => 1,
        headers => { Host => $o{host} // $HOST, %{ $o{headers} // {} } });
}

# How many requests the region's app has answered (its /__count).
sub app_count {
    my ($r) = @_;
    my $res = HTTP::Tiny->new(timeout => FlyEdge::Test::scaled(5))->get(FlyEdge::Test::topology()->app_url($r) . '/__count');
    return FlyEdge::Test::json_decode($res->{content})->{count};
}

# raw_request($to, $text): $text ("\n" line ends) sent as it is to region
# $to's nginx, or to the unix socket at path $to, on a connection of its
# own; returns { status, headers (lower-case names), content (de-chunked) }.
sub raw_request {
    my ($to, $text) = @_;
    my $s = $to =~ m{^/}
        ? IO::Socket::UNIX->new(Peer => $to, Type => SOCK_STREAM)
        : IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => FlyEdge::Test::topology()->nginx_port($to),
                                Proto => 'tcp', Timeout => 5);
    die "connect $to: $!" unless $s;
    $text =~ s/\n/\r\n/g;
    print $s $text;
    local $/;
    my $all = <$s> // '';
    close $s;
    my ($head, $body) = split /\r\n\r\n/, $all, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d{3})};
    my %h;
    for my $line (split /\r\n/, $head // '') {
        $h{lc $1} = $2 if $line =~ /^([^:]+):\s*(.*)$/;
    }
    $body //= '';
    if (($h{'transfer-encoding'} // '') =~ /chunked/) {
        my $out = '';
        while ($body =~ s/^([0-9a-f]+)\r\n//i) {
            my $n = hex $1;
            last unless $n;
            $out .= substr($body, 0, $n, '');
            $body =~ s/^\r\n//;
        }
        $body = $out;
    }
    return { status => $status // 0, headers => \%h, content => $body };
}

1;
