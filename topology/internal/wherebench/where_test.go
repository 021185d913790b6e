package wherebench

import (
	"testing"

	"cel.dev/cel-go/cel"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// event is a decoded JSON shop event, as the processor hands it to Apply.
var event = map[string]any{
	"user_id":  "u1",
	"ts":       float64(1764133200000),
	"type":     "purchase",
	"item_id":  "i9",
	"category": "shoes",
	"price":    19.99,
}

var filters = []struct{ name, expr, cel string }{
	{"eq", `type == "view"`, `type == "view"`},
	{"3_clauses", `type == "purchase" && price > 10 && category in ["shoes", "bags"]`,
		`type == "purchase" && price > 10.0 && category in ["shoes", "bags"]`},
}

// BenchmarkExpr compiles as topology does (a map env read without
// reflection, undefined fields allowed, the builtin "type" disabled) and
// runs on one reused VM.
func BenchmarkExpr(b *testing.B) {
	for _, f := range filters {
		b.Run(f.name, func(b *testing.B) {
			prog, err := expr.Compile(f.expr, expr.Env(map[string]any{}), expr.AllowUndefinedVariables(),
				expr.AsBool(), expr.DisableBuiltin("type"))
			if err != nil {
				b.Fatal(err)
			}
			var machine vm.VM
			b.ReportAllocs()
			for b.Loop() {
				out, err := machine.Run(prog, event)
				if err != nil {
					b.Fatal(err)
				}
				_ = out.(bool)
			}
		})
	}
}

// BenchmarkCEL declares every field dynamic, as a JSON event without a
// schema requires, and evaluates on the event map.
func BenchmarkCEL(b *testing.B) {
	for _, typed := range []bool{false, true} {
		name := "dyn"
		if typed {
			name = "typed"
		}
		for _, f := range filters {
			b.Run(name+"/"+f.name, func(b *testing.B) {
				decl := func(n string, t *cel.Type) cel.EnvOption {
					if !typed {
						t = cel.DynType
					}
					return cel.Variable(n, t)
				}
				env, err := cel.NewEnv(decl("type", cel.StringType), decl("price", cel.DoubleType), decl("category", cel.StringType))
				if err != nil {
					b.Fatal(err)
				}
				ast, iss := env.Compile(f.cel)
				if iss.Err() != nil {
					b.Fatal(iss.Err())
				}
				prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
				if err != nil {
					b.Fatal(err)
				}
				act, err := cel.NewActivation(event)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					out, _, err := prg.Eval(act)
					if err != nil {
						b.Fatal(err)
					}
					_ = out.Value().(bool)
				}
			})
		}
	}
}
