package FlyEdge::Prom;
# A strict parser of the Prometheus text exposition format 0.0.4, for the
# tests of fly_status (promtool is not packaged here).  parse($text) returns
# { families => { NAME => { type, help, samples => [...] } }, order => [names],
#   series => { 'name{a="1",b="2"}' => value }, errors => [messages] }.
# Checked: line syntax (names, label names and escapes, values), HELP/TYPE
# at most once per family and before its samples, a family's samples
# together, no duplicate series, counters >= 0, histograms: _bucket/_sum/
# _count only, `le` increasing, cumulative counts monotonic, a +Inf bucket
# equal to _count, a _sum for each series.
use strict;
use warnings;
use Exporter 'import';
our @EXPORT_OK = qw(parse series_key value sum_of family_names);

my $NAME  = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
my $LNAME = qr/[a-zA-Z_][a-zA-Z0-9_]*/;
my $FLOAT = qr/[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?Inf|NaN/;

sub series_key {
    my ($name, $labels) = @_;
    return $name . '{' . join(',', map { "$_=\"$labels->{$_}\"" } sort keys %$labels) . '}';
}

sub _num { my $v = shift; return $v =~ /^\+?Inf$/ ? 9**9**9 : $v =~ /^-Inf$/ ? -9**9**9 : $v eq 'NaN' ? 'nan' : 0 + $v }

sub _labels {
    my ($s, $err) = @_;
    my %l;
    while (length $s) {
        $s =~ s/^($LNAME)="((?:[^"\\\n]|\\[\\"n])*)"// or return $err->("bad label syntax at '$s'");
        my ($k, $v) = ($1, $2);
        $err->("reserved label name $k") if $k =~ /^__/;
        $err->("duplicate label $k") if exists $l{$k};
        $v =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
        $l{$k} = $v;
        last unless length $s;
        $s =~ s/^,// or return $err->("expected ',' at '$s'");
        $err->('trailing comma in labels') unless length $s;
    }
    return \%l;
}

sub parse {
    my ($text) = @_;
    my (%fam, @order, %series, @errors, %done);
    my $cur;
    my $ln = 0;
    my $err = sub { push @errors, "line $ln: $_[0]"; return undef };
    push @errors, 'the text does not end with a newline' if length $text && $text !~ /\n\z/;
    for my $line (split /\n/, $text) {
        $ln++;
        if ($line =~ /^#/) {
            if ($line =~ /^# (HELP|TYPE) (\S+)(?: (.*))?$/) {
                my ($kw, $name, $rest) = ($1, $2, $3 // '');
                $err->("bad metric name '$name'") unless $name =~ /^$NAME$/;
                if (!$fam{$name}) {
                    $done{$cur} = 1 if defined $cur && $cur ne $name;
                    $err->("family $name comes back after others") if $done{$name};
                    $fam{$name} = { samples => [] };
                    push @order, $name;
                }
                $cur = $name;
                my $f = $fam{$name};
                if ($kw eq 'HELP') {
                    $err->("second HELP for $name") if defined $f->{help};
                    $err->("bad escape in HELP of $name") if $rest =~ /\\(?![\\n])/;
                    $f->{help} = $rest;
                } else {
                    $err->("second TYPE for $name") if defined $f->{type};
                    $err->("TYPE after samples for $name") if @{$f->{samples}};
                    $err->("unknown type '$rest' for $name") unless $rest =~ /^(counter|gauge|histogram|summary|untyped)$/;
                    $f->{type} = $rest;
                }
            }
            next;    # other comments are allowed
        }
        if ($line =~ /^\s*$/) { $err->("empty line"); next }
        my ($name, $lab, $value, $ts) = $line =~ /^($NAME)(?:\{(.*)\})? ($FLOAT)(?: (-?[0-9]+))?$/
            or do { $err->("bad sample line '$line'"); next };
        my $labels = _labels($lab // '', $err) // next;
        # the family: a histogram's suffixed names belong to it
        my $family = $name;
        for my $suffix (qw(_bucket _sum _count)) {
            (my $base = $name) =~ s/\Q$suffix\E$// or next;
            if ($fam{$base} && ($fam{$base}{type} // '') =~ /^(histogram|summary)$/) { $family = $base; last }
        }
        if (!$fam{$family}) {
            $done{$cur} = 1 if defined $cur;
            $fam{$family} = { samples => [] };
            push @order, $family;
        } elsif (defined $cur && $cur ne $family) {
            $err->("samples of $family are not together");
        }
        $cur = $family;
        my $f = $fam{$family};
        my $type = $f->{type} // 'untyped';
        if ($type eq 'histogram') {
            $err->("$name: a histogram has only _bucket, _sum and _count") if $name eq $family;
            $err->("$name: a bucket without le") if $name =~ /_bucket$/ && !exists $labels->{le};
            $err->("$name: le outside a bucket") if $name !~ /_bucket$/ && exists $labels->{le};
            $err->("$name: le '$labels->{le}' is not a number") if exists $labels->{le} && $labels->{le} !~ /^$FLOAT$/;
        }
        $err->("$name: a counter is negative") if $type eq 'counter' && _num($value) < 0;
        my $key = series_key($name, $labels);
        $err->("duplicate series $key") if exists $series{$key};
        $series{$key} = _num($value);
        push @{$f->{samples}}, { name => $name, labels => $labels, value => _num($value) };
    }
    for my $name (@order) {
        my $f = $fam{$name};
        next unless ($f->{type} // '') eq 'histogram';
        my %by;
        for my $s (@{$f->{samples}}) {
            my %l = %{$s->{labels}};
            delete $l{le};
            my $k = series_key('', \%l);
            push @{$by{$k}{$s->{name} =~ /(_bucket|_sum|_count)$/ ? $1 : 'x'}}, $s;
        }
        for my $k (sort keys %by) {
            my $b = $by{$k}{_bucket} || [];
            push @errors, "$name$k: no buckets" unless @$b;
            my ($prev_le, $prev_v) = (-9**9**9, 0);
            for my $s (@$b) {
                my $le = _num($s->{labels}{le});
                push @errors, "$name$k: le $s->{labels}{le} not increasing" unless $le > $prev_le;
                push @errors, "$name$k: bucket $s->{labels}{le} smaller than the one before" if $s->{value} < $prev_v;
                ($prev_le, $prev_v) = ($le, $s->{value});
            }
            my $inf = @$b && $b->[-1]{labels}{le} =~ /^\+Inf$/ ? $b->[-1]{value} : undef;
            push @errors, "$name$k: no +Inf bucket (last)" unless defined $inf;
            my $count = $by{$k}{_count};
            push @errors, "$name$k: one _count expected" unless $count && @$count == 1;
            push @errors, "$name$k: one _sum expected" unless $by{$k}{_sum} && @{$by{$k}{_sum}} == 1;
            push @errors, "$name$k: +Inf bucket $inf != _count $count->[0]{value}"
                if defined $inf && $count && @$count == 1 && $inf != $count->[0]{value};
        }
    }
    for my $name (@order) {
        push @errors, "family $name has no TYPE" unless defined $fam{$name}{type};
        push @errors, "family $name has no HELP" unless defined $fam{$name}{help};
    }
    return { families => \%fam, order => \@order, series => \%series, errors => \@errors };
}

sub family_names { my $p = shift; return @{$p->{order}} }

# value($parsed, $name, {labels}): that series' value, 0 when absent
sub value {
    my ($p, $name, $labels) = @_;
    return $p->{series}{series_key($name, $labels || {})} // 0;
}

# sum_of($parsed, $name, {some labels}): the sum over every series of that
# name whose labels include these
sub sum_of {
    my ($p, $name, $want) = @_;
    my $sum = 0;
    for my $f (values %{$p->{families}}) {
        S: for my $s (@{$f->{samples}}) {
            next unless $s->{name} eq $name;
            for my $k (keys %{$want || {}}) {
                next S unless ($s->{labels}{$k} // "\0") eq $want->{$k};
            }
            $sum += $s->{value};
        }
    }
    return $sum;
}

1;
