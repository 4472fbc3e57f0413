# nginx -t rejects bad replay configuration, naming the file and line.
use FlyEdge::Test;

run_tests(start => 0);

__DATA__

=== TEST 1: unknown replay mode
--- config
location / {
    fly_replay sometimes;
}
--- must_die
--- error_log
qr/\[emerg\] "fly_replay": invalid value "sometimes", expected "off", "on" or "always"/
qr{/conf/server\.conf:2$}m


=== TEST 2: a method that is not a token (RFC 9110: method = token)
--- config
fly_replay_methods POST "FE TCH";
--- must_die
--- error_log
qr/\[emerg\] "fly_replay_methods": invalid method "FE TCH"/
qr{/conf/server\.conf:1$}m


=== TEST 3: a lower-case method is a token, but nginx never receives it: a warning naming the line
--- config
location / {
    fly_replay_methods POST post;
}
--- test
my ($rc, $out) = $t->nginx_t({ config => $block->config });
is($rc, 0, 'nginx -t passes') or diag $out;
like($out, qr{\[warn\] "fly_replay_methods": method "post" never matches: nginx answers 400 to a method that is not made of upper-case letters, "_" and "-" in \S+/conf/server\.conf:2}, 'with a warning naming the file and line');


=== TEST 4: fly_replay with this region unknown
--- env
!FLY_REGION
--- config
# a comment line first
location /w { fly_replay on; }
--- must_die
--- error_log
qr/\[emerg\] fly_replay needs this region: set "fly_region" or the environment variable FLY_REGION \(fly_replay in .*\/conf\/server\.conf:2\)/


=== TEST 5: fly_replay with the primary region unknown
--- env
!PRIMARY_REGION
--- http_config
fly_replay always;
--- must_die
--- error_log
qr/\[emerg\] fly_replay needs the primary region: set "fly_primary_region" or the environment variable PRIMARY_REGION \(fly_replay in .*\/conf\/http\.conf:1\)/


=== TEST 6: the regions may come from directives, with ${VAR}
--- env
!FLY_REGION
!PRIMARY_REGION
MY_REGION=ord
--- http_config
fly_region ${MY_REGION};
fly_primary_region scl;
fly_replay on;
--- test
my ($rc, $out) = $t->nginx_t({ http_config => $block->http_config }, env => { FLY_REGION => undef, PRIMARY_REGION => undef, MY_REGION => 'ord' });
is($rc, 0, 'nginx -t passes') or diag $out;


=== TEST 7: an unset ${VAR} in fly_region fails
--- http_config
fly_region ${NO_SUCH_VARIABLE_HERE};
--- must_die
--- error_log
qr/\[emerg\] "fly_region": .*NO_SUCH_VARIABLE_HERE.* in .*\/conf\/http\.conf:1/


=== TEST 8: an invalid region name
--- http_config
fly_primary_region "Bad Region";
--- must_die
--- error_log
qr/invalid region name "Bad Region" in .*http\.conf:1/


=== TEST 9: bad time for fly_replay_sticky
--- config
fly_replay_sticky 5parsecs;
--- must_die
--- error_log
qr/\[emerg\] "fly_replay_sticky": invalid time "5parsecs" in .*server\.conf:1/


=== TEST 10: bad size for fly_replay_max_body
--- config
location / { fly_replay_max_body 1q; }
--- must_die
--- error_log
qr/\[emerg\] "fly_replay_max_body" directive invalid value in .*server\.conf:1/


=== TEST 11: bad status for fly_replay_status
--- config
fly_replay_status 99;
--- must_die
--- error_log
qr/invalid status "99", expected a code from 200 to 599 in .*server\.conf:1/


=== TEST 12: fly_replay_forward needs a named location, and only "always" after it
--- config
fly_replay_forward /primary;
--- must_die
--- error_log
qr/"\/primary" is not a named location \("\@name"\) in .*server\.conf:1/


=== TEST 13: fly_replay_forward with a bad flag
--- config
fly_replay_forward @primary sometimes;
--- must_die
--- error_log
qr/invalid parameter "sometimes", expected "always" in .*server\.conf:1/


=== TEST 14: fly_region is http-only
--- config
fly_region scl;
--- must_die
--- error_log
qr/"fly_region" directive is not allowed here in .*server\.conf:1/


=== TEST 15: a duplicate fly_replay_status
--- config
fly_replay_status 409;
fly_replay_status 307;
--- must_die
--- error_log
qr/"fly_replay_status" directive is duplicate in .*server\.conf:2/
