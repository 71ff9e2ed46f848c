#!/usr/bin/env bash
# How bench/run12/timeline13/*.txt were taken (run 12; ad hoc, not part of the harness):
# one `bench run` step, and once a second the machine's /proc/stat line, Asterisk's utime+stime,
# every SIPp's and every app thread's, in clock ticks; timeline.py turns it into per-second
# figures.   Usage: timeline.sh app|twin RATE LABEL [CHECKOUT]
set -u
t=$1; r=$2; l=$3; d=${4:-$PWD}
cd "$d"
PYTHONPATH=$d .venv/bin/python -m bench run --target "$t" --rate "$r" --duration 40 --keep \
  --out "/tmp/run12-$l" > "/tmp/run12-$l.log" 2>&1 &
bp=$!
ast=""
while [ -z "$ast" ]; do ast=$(pgrep -f "asterisk.*siaga112-bench.* -f -n -g" | head -1); sleep 0.2; done
app=""
out=/tmp/run12-$l.tl
: > "$out"
while kill -0 $bp 2>/dev/null; do
  [ -z "$app" ] && app=$(pgrep -f "jepara serve$" | head -1)
  if [ "$t" = app ] && [ -z "$app" ]; then sleep 0.5; continue; fi
  m=$(head -1 /proc/stat)
  a=$(awk '{print $14+$15}' "/proc/$ast/stat" 2>/dev/null)
  th=""
  [ -n "$app" ] && th=$(for x in /proc/"$app"/task/*; do awk '{printf "%s ", $14+$15}' "$x/stat"; done 2>/dev/null)
  s=$(for p in $(pgrep -x sipp); do awk '{printf "%s+", $14+$15}' "/proc/$p/stat"; done 2>/dev/null)
  echo "$(date +%H:%M:%S) | $m | ast $a | sipp ${s}0 | app $th" >> "$out"
  sleep 1
done
