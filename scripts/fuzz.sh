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
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	start=$SECONDS
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" \
		-parallel "$parallel" "$pkg" >"$log" 2>&1; then
		status=ok
	else
		status=FAIL
		failed=1
	fi
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
