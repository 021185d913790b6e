#!/usr/bin/env bash
# generate.sh regenerates the Go code for the protos under this directory:
#   featurestream/v1/features.pb.go       (protoc-gen-go)
#   featurestream/v1/features_grpc.pb.go  (protoc-gen-go-grpc)
# Run from anywhere: bash proto/generate.sh
set -euo pipefail

# Pinned plugin versions. protoc-gen-go must match google.golang.org/protobuf
# in go.mod; protoc-gen-go-grpc v1.5.x emits code needing grpc >= v1.64.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1

PROTO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

can_apt() {
	[[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1
}

apt_install() {
	# Package lists may be empty on a fresh image; refresh once if needed.
	apt-get install -y "$@" || { apt-get update && apt-get install -y "$@"; }
}

# 1. protoc.
if ! command -v protoc >/dev/null 2>&1; then
	if can_apt; then
		apt_install protobuf-compiler
	else
		echo "protoc not found; install protoc: apt-get install protobuf-compiler" >&2
		exit 1
	fi
fi
PROTOC="$(command -v protoc)"

# 2. Well-known types (google/protobuf/timestamp.proto). On Debian they ship in
# libprotobuf-dev, which protobuf-compiler only recommends.
find_wkt_include() {
	local d
	for d in ${PROTOC_INCLUDE:-} "$(dirname "$PROTOC")/../include" /usr/include /usr/local/include; do
		if [[ -f "$d/google/protobuf/timestamp.proto" ]]; then
			(cd "$d" && pwd)
			return 0
		fi
	done
	return 1
}
if ! WKT_INCLUDE="$(find_wkt_include)"; then
	if can_apt; then
		apt_install libprotobuf-dev
		WKT_INCLUDE="$(find_wkt_include)"
	else
		echo "google/protobuf/timestamp.proto not found; install protoc: apt-get install protobuf-compiler libprotobuf-dev (or set PROTOC_INCLUDE)" >&2
		exit 1
	fi
fi

# 3. Plugins, pinned, in $(go env GOPATH)/bin.
GOPATH_FIRST="$(go env GOPATH | cut -d: -f1)"
BIN="$GOPATH_FIRST/bin"

# installed_version BINARY prints the main module version the binary was built
# from, or nothing.
installed_version() {
	[[ -x "$1" ]] || return 0
	go version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $3; exit }'
}

ensure_plugin() {
	local name="$1" pkg="$2" version="$3"
	if [[ "$(installed_version "$BIN/$name")" != "$version" ]]; then
		echo "installing $pkg@$version into $BIN" >&2
		# Outside the module, so go.mod/go.sum are not touched.
		(cd / && GOBIN="$BIN" GOFLAGS= go install "$pkg@$version")
	fi
}
ensure_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
ensure_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

# 4. Generate. Paths are relative to PROTO_DIR, so with paths=source_relative
# the output lands next to each .proto.
cd "$PROTO_DIR"
set -x
"$PROTOC" \
	-I . \
	-I "$WKT_INCLUDE" \
	--plugin=protoc-gen-go="$BIN/protoc-gen-go" \
	--plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" \
	--go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	featurestream/v1/features.proto
