// Module wherebench measures where-filter expression engines against each
// other (docs/decisions/0004-where-expressions.md). It is its own module so
// that CEL, which featurestream does not use, stays out of the main
// module's dependencies. Run: cd topology/internal/wherebench && go test -bench .
module github.com/featurestream/featurestream/topology/internal/wherebench

go 1.26.0

require (
	cel.dev/cel-go v0.33.2
	github.com/expr-lang/expr v1.17.8
)

require (
	cel.dev/expr v0.25.1 // indirect
	github.com/antlr4-go/antlr/v4 v4.13.1 // indirect
	go.yaml.in/yaml/v3 v3.0.4 // indirect
	golang.org/x/exp v0.0.0-20240823005443-9b4947da3948 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20240826202546-f6391c0de4c7 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240826202546-f6391c0de4c7 // indirect
	google.golang.org/protobuf v1.36.10 // indirect
)
