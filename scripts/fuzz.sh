#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME each (default 5s), one after another,
# with FUZZPARALLEL workers (default 1), and prints one line per target. It
# fails if any target crashes or breaks its property: go test then writes the
# input to PKG/testdata/fuzz/TARGET/, and this script prints its output and
# the command that replays the input.
#
# The targets' seeds (f.Add and testdata/fuzz/) also run under plain go test.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-5s}
parallel=${FUZZPARALLEL:-1}
# Minimizing each new input would take up to 60s, most of a short run.
minimize=${FUZZMINIMIZETIME:-1s}

targets=(
	"./internal/entry FuzzDecode"
	"./internal/entry FuzzRoundTrip"
	"./channel FuzzParseAddress"
	"./channel/kafka FuzzMessage"
	"./channel/kafka FuzzDeadLetterHeaders"
	"./channel/kafka FuzzDeadLetterRoundTrip"
	"./channel/redis FuzzDecodeEntry"
	"./channel/redis FuzzEntryRoundTrip"
	"./cmd/producer FuzzSendLines"
)

log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=0
total=$SECONDS
# fuzz runs one target; it fails on a finding, and also, with no input
# written, when -fuzztime ends during a call under load: a race in Go's
# fuzzing coordinator (golang/go#75804) that reports "context deadline
# exceeded". Such a run is tried again, twice at most.
fuzz() {
	go test -run '^$' -fuzz "^${2}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" \
		-parallel "$parallel" "$1" >"$log" 2>&1
}
coordinator_race() {
	grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"
}
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	start=$SECONDS
	status=FAIL
	for try in 1 2 3; do
		if fuzz "$pkg" "$name"; then
			status=ok
			break
		fi
		coordinator_race || break
		echo "      $name: fuzzing ended on Go's coordinator race (no input found), try $try of 3" >&2
	done
	[ "$status" = ok ] || failed=1
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
	printf '%-4s  %-16s %-24s %4ds  %s execs\n' "$status" "$pkg" "$name" $((SECONDS - start)) "${execs:-?}"
	if [ "$status" = FAIL ]; then
		sed 's/^/      /' "$log" >&2
		input=$(grep -o "testdata/fuzz/${name}/[0-9a-f]*" "$log" | tail -n 1 || true)
		if [ -n "$input" ]; then
			echo "      replay: go test -run '^${name}/${input##*/}\$' $pkg" >&2
		fi
	fi
done
echo "fuzzed ${#targets[@]} targets for $fuzztime each in $((SECONDS - total))s"
exit "$failed"
