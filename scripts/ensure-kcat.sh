#!/usr/bin/env bash
# ensure-kcat.sh: best effort to have kcat, so the test that runs the
# documented kcat command (docs/operations.md) runs rather than skips.
# Never fails: without kcat that one test says it skipped and why.
set -uo pipefail
if command -v kcat >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-kcat: installing kcat with apt-get" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null 2>&1; } ||
		echo "ensure-kcat: could not install kcat; TestDeadLetterKcat will skip" >&2
else
	echo "ensure-kcat: kcat not found (apt-get install kcat / brew install kcat); TestDeadLetterKcat will skip" >&2
fi
exit 0
