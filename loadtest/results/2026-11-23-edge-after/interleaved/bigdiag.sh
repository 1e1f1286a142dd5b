#!/usr/bin/env bash
# bigdiag.sh NAME [NICE]: bigroom 19k; edge fanout-time histogram between all-connected and the end
cd /tmp/sb4
name=$1; nice=${2:-0}
./switchboard-after -addr 127.0.0.1:18480 -pprof $SBX > runs/$name.sb.log 2>&1 &
P=$!
for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18480/debug/edge && break; sleep 0.1; done
nice -n $nice ./wsload -protocol switchboard -target ws://127.0.0.1:18480/ws -pid $P -scenario fanout -conns 19000 -publishers 1 -rate 1 -size 100 -duration 5s -retries 2 -connect-rate 2000 -out runs/$name.json > runs/$name.txt 2>&1 &
W=$!
for i in $(seq 900); do grep -q "open=19001" runs/$name.txt && break; sleep 0.1; done
curl -s http://127.0.0.1:18480/debug/edge > runs/$name.a.json
wait $W
curl -s http://127.0.0.1:18480/debug/edge > runs/$name.b.json
kill $P; wait $P 2>/dev/null
grep -E "latency|target:" runs/$name.txt
python3 - runs/$name.a.json runs/$name.b.json <<'PY'
import json,sys
a=json.load(open(sys.argv[1]))['FanoutLatency']; b=json.load(open(sys.argv[2]))['FanoutLatency']
c=[y-x for x,y in zip(a['Counts'],b['Counts'])]; n=sum(c); s=(b['Sum']-a['Sum'])/1e6
print("edge fanout time after all connected: n=%d mean %.0f ms; buckets(ms): %s" % (n, s/max(n,1), [(bb/1e6,cc) for bb,cc in zip(a['Bounds']+[float('inf')],c) if cc]))
PY
