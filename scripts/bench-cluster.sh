#!/usr/bin/env bash
# Cluster fan-out benchmark (docs/benchmarks.md): 1 node vs 2 nodes over a private Redis.
# Needs `cargo build --release -p switchboard-server -p switchboard-bench` and redis-server.
set -u
B="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release"
RP=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
D=$(mktemp -d)
redis-server --port $RP --bind 127.0.0.1 --save '' --appendonly no --dir $D >/dev/null 2>&1 &
RPID=$!
sleep 0.5
start() { # name extra...
  local name=$1; local log=$D/$1.log; shift
  $B/switchboard serve --listen 127.0.0.1:0 --store memory "$@" >/dev/null 2>$log &
  echo $! > $D/$name.pid
  for i in $(seq 100); do grep -q "listening on" $log && break; sleep 0.1; done
}
addr() { grep -o "listening on http://[0-9.:]*" $D/$1.log | head -1 | sed "s|listening on http://||"; }
ARGS="--subscribers 98 --rate 1000 --duration-secs 5 --payload-bytes 100 --settle-ms 1000"
start single
echo "== 1 node"; $B/switchboard-bench fanout --url ws://$(addr single)/ws --server-pid $(cat $D/single.pid) $ARGS >$D/$RANDOM.out 2>&1; cat $D/*.out | grep -v "^opening\|connected"; rm -f $D/*.out
kill $(cat $D/single.pid)
start n1 --redis redis://127.0.0.1:$RP/ --node-id n1
start n2 --redis redis://127.0.0.1:$RP/ --node-id n2
echo "== 2 nodes"; $B/switchboard-bench fanout --url ws://$(addr n1)/ws --second-url ws://$(addr n2)/ws --redis 127.0.0.1:$RP $ARGS >$D/$RANDOM.out 2>&1; cat $D/*.out | grep -v "^opening\|connected"; rm -f $D/*.out
kill $(cat $D/n1.pid) $(cat $D/n2.pid)
kill $RPID
