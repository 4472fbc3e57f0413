# README.md is the reference: every directive the built module registers has
# a Syntax / Default / Context entry there, every entry names a directive
# that exists, and the same for the $fly_* variables.  What the module
# registers is asked of nginx itself: each fly_* word found in the .so is
# tried as a directive and as a variable with nginx -t ("unknown directive"
# / "unknown variable" or not), so no list is kept by hand and whatever
# another branch adds is checked too.
use FlyEdge::Test;
use FlyEdge::ConfCheck;

our $ROOT = $FlyEdge::Topology::ROOT;

run_tests(start => 0);

__DATA__

=== TEST 1: the directives the module registers and those README.md documents are the same, each in nginx's style
--- test
ok($t->has_module, 'the module is built: ' . $t->module_path) or diag('run `make` first');
my @registered = registered_directives($t);
my $doc = readme_directives(slurp("$main::ROOT/README.md"));
# the probe itself must see what is certainly there
ok((grep { $_ eq 'fly_cache' } @registered) && (grep { $_ eq 'fly_status' } @registered),
   'the probe finds fly_cache and fly_status') or diag("found: @registered");
ok(!(grep { $_ eq 'fly_edge_cache_requests_total' } @registered), 'and not a metric name');
cmp_ok(scalar @registered, '>=', 25, scalar(@registered) . ' directives registered');
for my $d (@registered) {
    my $e = $doc->{$d};
    ok($e, "$d is documented in README.md") or next;
    like($e->{syntax}, qr/^\Q$d\E(?: .*)?;$/, "$d: Syntax line (README.md:$e->{line})");
    ok(defined $e->{default}, "$d: Default line");
    # contexts as nginx names them, separated by , or ; (notes in parentheses)
    (my $ctx = $e->{context} // '') =~ s/\s*\([^)]*\)//g;
    my @ctx = grep { length } map { s/^\s+|\s+$//gr } split /[,;]/, $ctx;
    ok(@ctx && !grep({ !/^(?:http|server|location|if in location|if in server|limit_except)$/ } @ctx),
       "$d: Context line ($e->{context})");
}
my %reg = map { $_ => 1 } @registered;
for my $d (sort keys %$doc) {
    ok($reg{$d}, "README.md:$doc->{$d}{line}: $d is a directive of the module");
}


=== TEST 2: the variables the module registers and those README.md lists are the same
--- test
my @registered = registered_variables($t);
ok((grep { $_ eq 'fly_cache_status' } @registered), 'the probe finds $fly_cache_status') or diag("found: @registered");
my %doc = map { $_ => 1 } @{ readme_variables(slurp("$main::ROOT/README.md")) };
my %reg = map { $_ => 1 } @registered;
ok($doc{$_}, "\$$_ is in README.md's Variables") for @registered;
ok($reg{$_}, "README.md's \$$_ is a variable of the module") for sort keys %doc;


=== TEST 3: the probe tells a directive from a word that is none
--- config
location /probe { fly_no_such_directive; }
--- must_die
--- error_log
unknown directive "fly_no_such_directive"
