#!/usr/bin/env bash
# Checks (read-only) the kernel and process limits a large connection count
# needs, and says what to raise and how. Exit 1 if CONNECTIONS cannot work.
#
# Usage: scripts/limits.sh [CONNECTIONS] [SOURCE_ADDRESSES]   (default 10000, 1)
connections=${1:-10000}
sources=${2:-1}
status=0
say() { printf '  %-32s %s\n' "$1" "$2"; }
echo "limits for $connections connections from $sources source address(es), server and loadgen on this machine:"

soft=$(ulimit -Sn); hard=$(ulimit -Hn)
need=$((connections + 100))
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
  say "open files (ulimit -n)" "hard limit $hard < $need: each process needs one per connection. Raise it: 'ulimit -Hn $need' as root, LimitNOFILE= in a systemd unit, or /etc/security/limits.conf. Otherwise split the load over several processes."
  status=1
else
  say "open files (ulimit -n)" "soft $soft, hard $hard: ok (wsloop and loadgen raise the soft limit to the hard one)"
fi

read -r low high </proc/sys/net/ipv4/ip_local_port_range
ports=$((high - low + 1))
if [ $((ports * sources)) -lt "$connections" ]; then
  say "ephemeral ports" "$low-$high gives $ports per source address; need $connections. Add loopback sources (loadgen --source-ip 127.0.0.2 --source-ip 127.0.0.3 ...) or widen: sysctl -w net.ipv4.ip_local_port_range='1024 65535'"
  status=1
else
  say "ephemeral ports" "$low-$high: $ports per source address x $sources: ok"
fi

somaxconn=$(cat /proc/sys/net/core/somaxconn)
if [ "$somaxconn" -lt 1024 ]; then
  say "net.core.somaxconn" "$somaxconn caps the listen backlog; a connect storm overflows it (SYN drops, 1 s retries). sysctl -w net.core.somaxconn=4096"
else
  say "net.core.somaxconn" "$somaxconn: ok"
fi
syn=$(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)
say "tcp_max_syn_backlog" "$syn$([ "$syn" -lt 1024 ] && echo ': low for connect storms; sysctl -w net.ipv4.tcp_max_syn_backlog=4096')"
filemax=$(cat /proc/sys/fs/file-max)
if [ "$filemax" -lt $((2 * connections + 1000)) ]; then
  say "fs.file-max" "$filemax < $((2 * connections + 1000)) (both ends on this machine): sysctl -w fs.file-max=$((4 * connections))"
  status=1
else
  say "fs.file-max" "$filemax: ok"
fi
if [ -r /proc/sys/net/netfilter/nf_conntrack_max ]; then
  say "nf_conntrack_max" "$(cat /proc/sys/net/netfilter/nf_conntrack_max) (connection tracking is on: raise it above the connection count)"
fi
exit $status
