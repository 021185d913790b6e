#!/usr/bin/env bash
# ensure-redis.sh: make sure redis-server is on PATH, installing it if needed.
# Tests and `featurestream dev` start a real redis-server (sinks/redisserver).
#
# Order: already present -> apt-get as root -> sudo apt-get -> brew -> fail.
set -euo pipefail

hint="redis-server is required: install it with apt-get install redis-server (Debian/Ubuntu) or brew install redis (macOS)"

have() { command -v "$1" >/dev/null 2>&1; }

report() {
	echo "ensure-redis: redis-server present: $(command -v redis-server) ($(redis-server --version 2>/dev/null | head -n1))"
}

if have redis-server; then
	report
	exit 0
fi

echo "ensure-redis: redis-server not found in PATH" >&2
if [ "$(id -u)" -eq 0 ] && have apt-get; then
	echo "ensure-redis: installing with apt-get" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && apt-get install -y -qq redis-server
elif have sudo && have apt-get; then
	echo "ensure-redis: installing with sudo apt-get" >&2
	sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
elif have brew; then
	echo "ensure-redis: installing with brew" >&2
	brew install redis
else
	echo "ensure-redis: $hint" >&2
	exit 1
fi

# Package managers may install outside the current PATH.
hash -r
if ! have redis-server; then
	echo "ensure-redis: installation finished but redis-server is still not in PATH. $hint" >&2
	exit 1
fi
report
