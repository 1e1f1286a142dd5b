#!/usr/bin/env bash
# abc2.sh NAME "SBARGS" WSLOAD-ARGS... : switchboard with SBARGS, then Centrifugo, back to back
cd /tmp/sb4
n=$1; sbargs=$2; shift 2
for v in sb cf; do
  if [ $v = cf ]; then
    ~/.cache/switchboard/bin/centrifugo -c /work/main/loadtest/tools/centrifugo/config-memory.json --port 18400 > /dev/null 2>&1 & P=$!
    url=ws://127.0.0.1:18400/connection/websocket; proto=centrifugo
  else
    ./switchboard-after -addr 127.0.0.1:18480 $sbargs > /dev/null 2>&1 & P=$!
    url=ws://127.0.0.1:18480/ws; proto=switchboard
  fi
  port=${url#ws://127.0.0.1:}; port=${port%%/*}
  for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  ./wsload -protocol $proto -target $url -pid $P "$@" -out runs/abc2-$n-$v.json > runs/abc2-$n-$v.txt 2>&1
  kill $P; wait $P 2>/dev/null
  echo "$n $v [$sbargs]: $(grep -E '^   target:' runs/abc2-$n-$v.txt | sed 's/.*cpu /cpu /') | $(grep -E '^   latency' runs/abc2-$n-$v.txt | sed 's/.*: p50/p50/')"
done
