package main

// Tests of deploy/: the machines that run these tests have no container
// engine, so they check everything that can be checked without one: every
// file parses; the Dockerfile builds what `make build` builds, statically;
// every flag and environment variable compose and Kubernetes pass exists
// for that subcommand; ports, addresses, volumes and scrape targets agree
// with the binary's flags and defaults; every metric the dashboard and the
// alerts query is one the binary registers.

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/featurestream/featurestream/bench"
	"github.com/featurestream/featurestream/processor"
	featurestreamv1 "github.com/featurestream/featurestream/proto/featurestream/v1"
	"github.com/featurestream/featurestream/serving"
	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/sinks/redisserver"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

const (
	repoRoot  = "../.."
	deployDir = "../../deploy"
	// The image the compose file builds from deploy/Dockerfile.
	composeImage = "featurestream:local"
	// The image name the Kubernetes manifests use (kustomize rewrites it).
	k8sImage = "featurestream"
)

// The Prometheus job names compose's prometheus.yml and the Kubernetes
// PodMonitor give processors and servers; the dashboard and the alerts
// select on them.
var jobOf = map[string]string{"process": "featurestream-process", "serve": "featurestream-serve"}

// ---- the CLI model ----

// cliCommand is one (sub)command of the binary: its flags by name and by
// environment variable, global flags included.
type cliCommand struct {
	path  string
	flags map[string]*kong.Flag
	envs  map[string]*kong.Flag
}

// cliCommands introspects the kong CLI as run builds it.
func cliCommands(t *testing.T) map[string]*cliCommand {
	t.Helper()
	parser, err := kong.New(&cli{}, kong.Name("featurestream"), kong.DefaultEnvars("FEATURESTREAM"), kong.Exit(func(int) {}))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*cliCommand{}
	var walk func(n *kong.Node, prefix string)
	walk = func(n *kong.Node, prefix string) {
		for _, c := range n.Children {
			if c.Type != kong.CommandNode {
				continue
			}
			p := strings.TrimSpace(prefix + " " + c.Name)
			cmd := &cliCommand{path: p, flags: map[string]*kong.Flag{}, envs: map[string]*kong.Flag{}}
			for _, group := range c.AllFlags(false) {
				for _, f := range group {
					cmd.flags[f.Name] = f
					for _, e := range f.Envs {
						cmd.envs[e] = f
					}
				}
			}
			out[p] = cmd
			walk(c, p)
		}
	}
	walk(parser.Model.Node, "")
	for _, want := range []string{"process", "serve", "demo", "validate"} {
		if out[want] == nil || len(out[want].envs) == 0 {
			t.Fatalf("CLI model: no command %q with environment variables (got %v)", want, slices.Sorted(maps.Keys(out)))
		}
	}
	return out
}

// invocation is how a deploy file runs the binary.
type invocation struct {
	where string            // file and service, for messages
	args  []string          // subcommand, then flags
	env   map[string]string // FEATURESTREAM_* the file sets
	image map[string]string // FEATURESTREAM_* the image sets (Dockerfile ENV)
}

// resolve checks every flag and environment variable of inv exists for its
// subcommand and returns the value each flag ends up with (flag > env >
// image env > default), or reports errors on t.
func resolve(t *testing.T, cmds map[string]*cliCommand, inv invocation) (string, map[string]string) {
	t.Helper()
	if len(inv.args) == 0 {
		t.Errorf("%s: runs the image without a subcommand", inv.where)
		return "", nil
	}
	sub := inv.args[0]
	cmd := cmds[sub]
	if cmd == nil {
		t.Errorf("%s: featurestream has no subcommand %q", inv.where, sub)
		return sub, nil
	}
	vals := map[string]string{}
	for name, f := range cmd.flags {
		if f.HasDefault {
			vals[name] = f.Default
		}
	}
	for _, layer := range []struct {
		env    map[string]string
		strict bool
	}{{inv.image, false}, {inv.env, true}} {
		for _, k := range slices.Sorted(maps.Keys(layer.env)) {
			if !strings.HasPrefix(k, "FEATURESTREAM_") {
				continue
			}
			f := cmd.envs[k]
			if f == nil {
				// The image's ENV applies to every subcommand; a variable
				// one subcommand lacks is ignored by it.
				if layer.strict {
					t.Errorf("%s: environment variable %s is not one of `featurestream %s` (see featurestream %s --help)", inv.where, k, sub, sub)
				}
				continue
			}
			vals[f.Name] = layer.env[k]
		}
	}
	args := inv.args[1:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			t.Errorf("%s: argument %q: want --flag or --flag=value", inv.where, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		f := cmd.flags[name]
		if f == nil {
			t.Errorf("%s: flag --%s is not a flag of `featurestream %s`", inv.where, name, sub)
			continue
		}
		if !hasValue {
			if f.IsBool() {
				value = "true"
			} else if i+1 < len(args) {
				i++
				value = args[i]
			}
		}
		vals[name] = value
	}
	return sub, vals
}

// listenPort checks addr (a listen address of the binary) is reachable
// from outside a container and returns its port.
func listenPort(t *testing.T, where, flag, addr string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: --%s %q: %v", where, flag, addr, err)
		return ""
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		t.Errorf("%s: --%s %s listens on loopback: unreachable from outside the container; use 0.0.0.0:%s", where, flag, addr, port)
	}
	return port
}

// ---- the Dockerfile ----

type dockerInstr struct {
	cmd  string // upper case
	args string
}

// dockerStages parses a Dockerfile into its stages' instructions, with
// continuation lines joined and comments dropped.
func dockerStages(t *testing.T) [][]dockerInstr {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var stages [][]dockerInstr
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := dockerInstr{strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile: %s before FROM", in.cmd)
			}
			return
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	for _, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(raw)
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a build stage and a runtime stage", len(stages))
	}
	return stages
}

// dockerImage is what the final stage sets up.
type dockerImage struct {
	from, workdir, user string
	entrypoint          []string
	env                 map[string]string
	expose              []string
	copies              [][]string // each: flags and paths as written
}

func finalImage(t *testing.T) dockerImage {
	t.Helper()
	stages := dockerStages(t)
	img := dockerImage{env: map[string]string{}}
	for _, in := range stages[len(stages)-1] {
		switch in.cmd {
		case "FROM":
			img.from = strings.Fields(in.args)[0]
		case "WORKDIR":
			img.workdir = in.args
		case "USER":
			img.user = in.args
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &img.entrypoint); err != nil {
				t.Errorf("Dockerfile: ENTRYPOINT %s: want the exec (JSON) form: %v", in.args, err)
			}
		case "ENV":
			for _, kv := range strings.Fields(in.args) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Errorf("Dockerfile: ENV %s: want KEY=VALUE", in.args)
				}
				img.env[k] = v
			}
		case "EXPOSE":
			img.expose = append(img.expose, strings.Fields(in.args)...)
		case "COPY":
			img.copies = append(img.copies, strings.Fields(in.args))
		}
	}
	return img
}

// dockerBuildLine returns the `go build` command line of the Dockerfile's
// build stage, without RUN and its --mount options.
func dockerBuildLine(t *testing.T) []string {
	t.Helper()
	var found [][]string
	for _, stage := range dockerStages(t) {
		for _, in := range stage {
			if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
				continue
			}
			fields := strings.Fields(in.args)
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				fields = fields[1:]
			}
			found = append(found, fields)
		}
	}
	if len(found) != 1 {
		t.Fatalf("Dockerfile: %d RUN lines with `go build`, want 1", len(found))
	}
	return found[0]
}

// TestDockerfileBuild runs the Dockerfile's go build line and checks it is
// the one `make build` runs and that it makes a working static binary (the
// distroless and scratch images have no libc).
func TestDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary: skipped with -short")
	}
	line := dockerBuildLine(t)
	out, err := exec.Command("make", "-s", "-C", repoRoot, "-n", "build", "GO=go").Output()
	if err != nil {
		t.Fatalf("make -n build: %v", err)
	}
	if want := strings.Fields(strings.TrimSpace(string(out))); !slices.Equal(line, want) {
		t.Fatalf("the Dockerfile builds with\n  %s\nbut make build runs\n  %s", strings.Join(line, " "), strings.Join(want, " "))
	}

	// Run it with the output redirected into a temporary directory.
	var env, argv []string
	for len(line) > 0 && strings.Contains(line[0], "=") && !strings.HasPrefix(line[0], "-") {
		env, line = append(env, line[0]), line[1:]
	}
	bin := filepath.Join(t.TempDir(), "featurestream")
	argv = slices.Clone(line)
	o := slices.Index(argv, "-o")
	if o < 0 || o+1 >= len(argv) {
		t.Fatalf("Dockerfile build line %v has no -o", line)
	}
	argv[o+1] = bin
	if !slices.Contains(env, "CGO_ENABLED=0") {
		t.Errorf("Dockerfile build line sets %v: want CGO_ENABLED=0 for a static binary", env)
	}
	build := exec.Command(argv[0], argv[1:]...)
	build.Dir = repoRoot
	build.Env = append(os.Environ(), env...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(append(env, argv...), " "), err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %s program header: it is dynamically linked and will not run on distroless/static", p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Errorf("binary has a .dynamic section: dynamically linked")
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("binary needs shared libraries %v", libs)
	}
	help, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("featurestream --help: %v\n%s", err, help)
	}
	for _, sub := range []string{"process", "serve", "demo", "validate"} {
		if !bytes.Contains(help, []byte(sub)) {
			t.Errorf("featurestream --help lacks the %s command:\n%s", sub, help)
		}
	}
}

// TestDockerfile checks the runtime image: no shell or libc, a non-root
// user, the binary as entrypoint, the default --spec present, listen
// addresses reachable and exposed, environment variables the binary knows.
func TestDockerfile(t *testing.T) {
	cmds := cliCommands(t)
	img := finalImage(t)
	if !strings.HasPrefix(img.from, "gcr.io/distroless/static") && img.from != "scratch" {
		t.Errorf("runtime image FROM %s: want gcr.io/distroless/static-* or scratch", img.from)
	}
	if img.user == "" || img.user == "root" || strings.HasPrefix(img.user, "0:") || img.user == "0" {
		t.Errorf("runtime USER %q: want a non-root user", img.user)
	}
	if uid, _, _ := strings.Cut(img.user, ":"); uid != "65532" {
		t.Errorf("runtime USER %q: want 65532 (distroless nonroot, numeric for runAsNonRoot; the k8s manifests use it)", img.user)
	}

	// The binary: built in the build stage, copied to the entrypoint.
	if len(img.entrypoint) != 1 || path.Base(img.entrypoint[0]) != "featurestream" {
		t.Fatalf("ENTRYPOINT %v: want the featurestream binary alone, so every subcommand is an argument", img.entrypoint)
	}
	line := dockerBuildLine(t)
	built := line[slices.Index(line, "-o")+1]
	var workdirs []string
	for _, stage := range dockerStages(t) {
		for _, in := range stage {
			if in.cmd == "WORKDIR" {
				workdirs = append(workdirs, in.args)
			}
		}
	}
	wantSrc := path.Join(workdirs[0], built)
	copied := func(src string) (dst string) {
		for _, c := range img.copies {
			paths := slices.DeleteFunc(slices.Clone(c), func(s string) bool { return strings.HasPrefix(s, "--") })
			if len(paths) == 2 && path.Clean(paths[0]) == path.Clean(src) {
				return paths[1]
			}
		}
		return ""
	}
	if dst := copied(wantSrc); dst != img.entrypoint[0] {
		t.Errorf("the build writes %s, copied to %q, but ENTRYPOINT runs %s", wantSrc, dst, img.entrypoint[0])
	}

	// The default spec resolves against WORKDIR.
	spec := cmds["process"].flags["spec"].Default
	dst := copied(path.Join(workdirs[0], "examples"))
	if dst == "" || path.Join(img.workdir, spec) != path.Join(dst, strings.TrimPrefix(spec, "examples/")) {
		t.Errorf("default --spec %s in WORKDIR %s: examples/ is copied to %q", spec, img.workdir, dst)
	}
	if _, err := os.Stat(filepath.Join(repoRoot, spec)); err != nil {
		t.Errorf("default --spec: %v", err)
	}

	// Environment and ports.
	known := map[string]bool{}
	for _, c := range cmds {
		for e := range c.envs {
			known[e] = true
		}
	}
	for k := range img.env {
		if !known[k] {
			t.Errorf("Dockerfile ENV %s: no subcommand has this environment variable", k)
		}
	}
	want := map[string]bool{}
	for _, sub := range []string{"serve", "process"} {
		_, vals := resolve(t, cmds, invocation{where: "Dockerfile ENV, " + sub, args: []string{sub}, image: img.env})
		for _, flag := range []string{"grpc-addr", "admin-addr"} {
			if addr, ok := vals[flag]; ok {
				want[listenPort(t, "Dockerfile ENV, "+sub, flag, addr)] = true
			}
		}
		if sub == "process" && vals["state-dir"] != "/var/lib/featurestream" {
			t.Errorf("image default --state-dir %q: want /var/lib/featurestream, the directory the image prepares for the runtime user", vals["state-dir"])
		}
	}
	if got := slices.Sorted(slices.Values(img.expose)); !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
		t.Errorf("EXPOSE %v, but the image listens on %v", got, slices.Sorted(maps.Keys(want)))
	}
}

// ---- YAML and JSON ----

// TestDeployFilesParse parses every YAML and JSON file under deploy/.
func TestDeployFilesParse(t *testing.T) {
	seen := map[string]bool{}
	err := filepath.WalkDir(deployDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(deployDir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml":
			dec := yaml.NewDecoder(bytes.NewReader(b))
			docs := 0
			for {
				var v any
				if err := dec.Decode(&v); err == io.EOF {
					break
				} else if err != nil {
					t.Errorf("%s: %v", rel, err)
					break
				}
				if v == nil {
					t.Errorf("%s: document %d is empty", rel, docs+1)
				}
				docs++
			}
			if docs == 0 {
				t.Errorf("%s: no YAML document", rel)
			}
		case ".json":
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Errorf("%s: %v", rel, err)
			}
		default:
			return nil
		}
		seen[filepath.ToSlash(rel)] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"compose.yaml", "prometheus/prometheus.yml", "prometheus/alerts.yml", "grafana/featurestream.json",
		"grafana/provisioning/datasources/prometheus.yaml", "grafana/provisioning/dashboards/featurestream.yaml",
		"k8s/kustomization.yaml", "k8s/processor.yaml", "k8s/server.yaml", "k8s/pdb.yaml", "k8s/monitoring.yaml",
	} {
		if !seen[want] {
			t.Errorf("deploy/%s is missing", want)
		}
	}
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// ---- compose ----

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Entrypoint  []string       `yaml:"entrypoint"`
	Command     []string       `yaml:"command"`
	Environment map[string]any `yaml:"environment"`
	Ports       []string       `yaml:"ports"`
	Volumes     []string       `yaml:"volumes"`
	DependsOn   any            `yaml:"depends_on"`
	Profiles    []string       `yaml:"profiles"`
}

func (s composeService) env() map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		out[k] = fmt.Sprint(v)
	}
	return out
}

// containerPort returns the container side of a compose port mapping such
// as "127.0.0.1:9191:9091".
func containerPort(mapping string) string {
	parts := strings.Split(mapping, ":")
	p, _, _ := strings.Cut(parts[len(parts)-1], "/")
	return p
}

type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// TestCompose checks deploy/compose.yaml against the binary and the other
// files it mounts.
func TestCompose(t *testing.T) {
	cmds := cliCommands(t)
	img := finalImage(t)
	var c composeFile
	readYAML(t, filepath.Join(deployDir, "compose.yaml"), &c)
	top, err := loadTopology(shopSpec)
	if err != nil {
		t.Fatal(err)
	}

	kafka, ok := c.Services["kafka"]
	if !ok || !strings.HasPrefix(kafka.Image, "apache/kafka:") {
		t.Fatalf("compose: want a kafka service on the official apache/kafka image, got %+v", kafka)
	}
	kenv := kafka.env()
	if !strings.Contains(kenv["KAFKA_PROCESS_ROLES"], "controller") {
		t.Errorf("kafka: KAFKA_PROCESS_ROLES %q: want KRaft (broker,controller)", kenv["KAFKA_PROCESS_ROLES"])
	}
	advertised := map[string]bool{}
	for _, l := range strings.Split(kenv["KAFKA_ADVERTISED_LISTENERS"], ",") {
		_, hp, _ := strings.Cut(l, "://")
		advertised[hp] = true
	}
	if !advertised["127.0.0.1:9092"] || !slices.ContainsFunc(kafka.Ports, func(p string) bool { return strings.HasSuffix(p, ":9092:9092") }) {
		t.Errorf("kafka: the README's kcat -b 127.0.0.1:9092 needs listener 127.0.0.1:9092 advertised and published (advertised %v, ports %v)", advertised, kafka.Ports)
	}
	for _, k := range []string{"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"} {
		if kenv[k] != "1" {
			t.Errorf("kafka: %s=%q: a one-broker cluster needs 1, or transactions and groups never start", k, kenv[k])
		}
	}
	initCmd := strings.Join(c.Services["kafka-init"].Command, " ")
	if !strings.Contains(initCmd, "--topic "+top.Spec.Source.Topic+" ") || !strings.Contains(initCmd, "--create") {
		t.Errorf("kafka-init: %q does not create the spec's input topic %s", initCmd, top.Spec.Source.Topic)
	}
	// The redis service's settings, on a real redis-server.
	if rc := c.Services["redis"].Command; len(rc) < 1 || rc[0] != "redis-server" || len(rc)%2 != 1 {
		t.Errorf("compose: redis command %v: want redis-server --name value ...", rc)
	} else {
		rs := redisserver.StartForTest(t, rc[1:]...)
		rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
		defer rdb.Close()
		for i := 1; i < len(rc); i += 2 {
			name := strings.TrimPrefix(rc[i], "--")
			got, err := rdb.ConfigGet(context.Background(), name).Result()
			if err != nil || got[name] != rc[i+1] {
				t.Errorf("compose redis: %s is %q (%v), want %q", name, got[name], err, rc[i+1])
			}
		}
	}

	// Every featurestream service: flags, environment, addresses, ports.
	admin := map[string]string{} // service -> admin port
	bySub := map[string][]string{}
	instanceIDs := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		s := c.Services[name]
		if s.Image != composeImage {
			continue
		}
		where := "compose service " + name
		if s.Build == nil || s.Build.Dockerfile != "deploy/Dockerfile" || filepath.Clean(filepath.Join(deployDir, s.Build.Context)) != filepath.Clean(repoRoot) {
			t.Errorf("%s: want build context .. (the repository) with dockerfile deploy/Dockerfile, got %+v", where, s.Build)
		}
		sub, vals := resolve(t, cmds, invocation{where: where, args: s.Command, env: s.env(), image: img.env})
		if vals == nil {
			continue
		}
		bySub[sub] = append(bySub[sub], name)
		listening := map[string]bool{}
		for _, flag := range []string{"admin-addr", "grpc-addr"} {
			if addr, ok := vals[flag]; ok && cmds[sub].flags[flag] != nil {
				p := listenPort(t, where, flag, addr)
				listening[p] = true
				if flag == "admin-addr" {
					admin[name] = p
				}
			}
		}
		for _, m := range s.Ports {
			if p := containerPort(m); !listening[p] {
				t.Errorf("%s: publishes container port %s, but it listens on %v", where, p, slices.Sorted(maps.Keys(listening)))
			}
		}
		for _, flag := range []string{"brokers", "redis-addr"} {
			if _, ok := cmds[sub].flags[flag]; !ok {
				continue
			}
			for _, addr := range strings.Split(vals[flag], ",") {
				host, port, err := net.SplitHostPort(addr)
				switch {
				case err != nil:
					t.Errorf("%s: --%s %q: %v", where, flag, addr, err)
				case flag == "brokers" && !advertised[addr]:
					t.Errorf("%s: --brokers %s is not a listener kafka advertises (%v)", where, addr, advertised)
				case flag == "redis-addr" && (host != "redis" || port != "6379"):
					t.Errorf("%s: --redis-addr %s: want the redis service, redis:6379", where, addr)
				}
			}
		}
		if spec := vals["spec"]; spec != "" && !path.IsAbs(spec) {
			if _, err := os.Stat(filepath.Join(repoRoot, spec)); err != nil {
				t.Errorf("%s: --spec %s (relative to the image's WORKDIR, a copy of the repository's examples/): %v", where, spec, err)
			}
		}
		if sub == "process" {
			id := vals["instance-id"]
			if id == "" {
				t.Errorf("%s: no --instance-id: a restart would rebalance", where)
			} else if other, dup := instanceIDs[id]; dup {
				t.Errorf("%s: --instance-id %s is also %s's: two members with one id fence each other", where, id, other)
			}
			instanceIDs[id] = name
			mounted := false
			for _, v := range s.Volumes {
				parts := strings.Split(v, ":")
				if len(parts) >= 2 && parts[1] == vals["state-dir"] {
					mounted = true
					if _, ok := c.Volumes[parts[0]]; !ok {
						t.Errorf("%s: volume %s is not declared under volumes:", where, parts[0])
					}
				}
			}
			if !mounted {
				t.Errorf("%s: --state-dir %s is not a volume (%v): state would be lost with the container", where, vals["state-dir"], s.Volumes)
			}
		}
	}
	if len(bySub["process"]) < 2 || len(bySub["serve"]) < 1 || len(bySub["demo"]) < 1 {
		t.Errorf("compose runs %v: want two processors, a server and a demo producer", bySub)
	}

	// Prometheus scrapes every admin port, with the job names the
	// dashboard and the alerts use.
	prom := c.Services["prometheus"]
	var cfgFile string
	for _, a := range prom.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			cfgFile = v
		}
	}
	cfgHost := hostPath(t, prom, path.Dir(cfgFile))
	var pc promConfig
	readYAML(t, filepath.Join(cfgHost, path.Base(cfgFile)), &pc)
	for _, rf := range pc.RuleFiles {
		if _, err := os.Stat(filepath.Join(cfgHost, rf)); err != nil {
			t.Errorf("prometheus rule_files %s: %v", rf, err)
		}
	}
	scraped := map[string]string{}
	for _, sc := range pc.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				host, port, _ := net.SplitHostPort(tg)
				if admin[host] != port {
					t.Errorf("prometheus job %s target %s: service %s has its admin port at %q", sc.JobName, tg, host, admin[host])
				}
				scraped[host] = sc.JobName
			}
		}
	}
	for sub, names := range bySub {
		for _, n := range names {
			want, ok := jobOf[sub]
			if !ok {
				continue
			}
			if scraped[n] != want {
				t.Errorf("service %s (%s) is scraped as job %q, want %q", n, sub, scraped[n], want)
			}
		}
	}

	// Grafana: the provisioned datasource is this Prometheus, and the
	// dashboard is where the provider reads.
	graf := c.Services["grafana"]
	prov := hostPath(t, graf, "/etc/grafana/provisioning")
	var ds struct {
		Datasources []struct {
			Type, URL, UID string
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join(prov, "datasources", "prometheus.yaml"), &ds)
	promPort := ""
	for _, m := range prom.Ports {
		promPort = containerPort(m)
	}
	if len(ds.Datasources) != 1 || ds.Datasources[0].URL != "http://prometheus:"+promPort || ds.Datasources[0].Type != "prometheus" {
		t.Errorf("grafana datasource %+v: want type prometheus at http://prometheus:%s", ds.Datasources, promPort)
	}
	var dp struct {
		Providers []struct {
			Options struct{ Path string } `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join(prov, "dashboards", "featurestream.yaml"), &dp)
	dash := hostPath(t, graf, path.Join(dp.Providers[0].Options.Path, "featurestream.json"))
	if filepath.Clean(dash) != filepath.Clean(filepath.Join(deployDir, "grafana", "featurestream.json")) {
		t.Errorf("grafana reads dashboards from %s, where compose mounts %s", dp.Providers[0].Options.Path, dash)
	}
}

// hostPath returns the file on the host that service s sees at target,
// through its bind mounts (relative to deploy/), or fails.
func hostPath(t *testing.T, s composeService, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || !strings.HasPrefix(parts[0], ".") {
			continue
		}
		if rest, ok := strings.CutPrefix(target, parts[1]); ok && (rest == "" || rest[0] == '/') {
			p := filepath.Join(deployDir, parts[0], rest)
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("mount %s: %v", v, err)
			}
			return p
		}
	}
	t.Fatalf("no bind mount gives %s (volumes %v)", target, s.Volumes)
	return ""
}

// ---- Kubernetes ----

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec yaml.Node `yaml:"spec"`
}

type k8sEnv struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
		SecretKeyRef *struct {
			Name     string `yaml:"name"`
			Optional bool   `yaml:"optional"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	GRPC *struct {
		Port int `yaml:"port"`
	} `yaml:"grpc"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Args    []string `yaml:"args"`
	Command []string `yaml:"command"`
	Env     []k8sEnv `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type k8sVolume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
}

type k8sWorkload struct {
	Replicas int `yaml:"replicas"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			SecurityContext struct {
				RunAsNonRoot bool `yaml:"runAsNonRoot"`
				RunAsUser    int  `yaml:"runAsUser"`
				FSGroup      int  `yaml:"fsGroup"`
			} `yaml:"securityContext"`
			Containers []k8sContainer `yaml:"containers"`
			Volumes    []k8sVolume    `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
	VolumeClaimTemplates []struct {
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
	} `yaml:"volumeClaimTemplates"`
}

type kustomization struct {
	Resources          []string `yaml:"resources"`
	ConfigMapGenerator []struct {
		Name     string   `yaml:"name"`
		Files    []string `yaml:"files"`
		Literals []string `yaml:"literals"`
	} `yaml:"configMapGenerator"`
	Images []struct {
		Name string `yaml:"name"`
	} `yaml:"images"`
}

func k8sObjects(t *testing.T) (kustomization, []k8sObject) {
	t.Helper()
	dir := filepath.Join(deployDir, "k8s")
	var k kustomization
	readYAML(t, filepath.Join(dir, "kustomization.yaml"), &k)
	var objs []k8sObject
	for _, r := range k.Resources {
		b, err := os.ReadFile(filepath.Join(dir, r))
		if err != nil {
			t.Fatalf("kustomization resource %s: %v", r, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o k8sObject
			if err := dec.Decode(&o); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", r, err)
			}
			objs = append(objs, o)
		}
	}
	return k, objs
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestKubernetes checks deploy/k8s against the binary, the image and each
// other.
func TestKubernetes(t *testing.T) {
	cmds := cliCommands(t)
	img := finalImage(t)
	uid, _ := strconv.Atoi(strings.Split(img.user, ":")[0])
	k, objs := k8sObjects(t)

	generated := map[string]map[string]string{} // configmap -> env literals
	var specFile string
	for _, g := range k.ConfigMapGenerator {
		generated[g.Name] = map[string]string{}
		for _, l := range g.Literals {
			key, v, _ := strings.Cut(l, "=")
			generated[g.Name][key] = v
		}
		if g.Name == "featurestream-spec" && len(g.Files) == 1 {
			specFile = g.Files[0]
		}
	}
	if specFile == "" {
		t.Fatal("kustomization: want a configMapGenerator featurestream-spec with one file, the spec")
	}
	if _, err := loadTopology(filepath.Join(deployDir, "k8s", specFile)); err != nil {
		t.Errorf("deploy/k8s/%s: %v", specFile, err)
	}
	if len(k.Images) != 1 || k.Images[0].Name != k8sImage {
		t.Errorf("kustomization images %+v: want one entry for %q", k.Images, k8sImage)
	}

	kinds := map[string]int{}
	podLabels := map[string]map[string]string{} // workload -> pod labels
	podPorts := map[string]map[string]int{}     // workload -> port name -> number
	for _, o := range objs {
		kinds[o.Kind]++
		if o.Kind != "StatefulSet" && o.Kind != "Deployment" {
			continue
		}
		var w k8sWorkload
		if err := o.Spec.Decode(&w); err != nil {
			t.Fatalf("%s %s: %v", o.Kind, o.Metadata.Name, err)
		}
		where := o.Kind + " " + o.Metadata.Name
		podLabels[o.Metadata.Name] = w.Template.Metadata.Labels
		if !subset(w.Selector.MatchLabels, w.Template.Metadata.Labels) {
			t.Errorf("%s: selector %v does not select its pods %v", where, w.Selector.MatchLabels, w.Template.Metadata.Labels)
		}
		sc := w.Template.Spec.SecurityContext
		if !sc.RunAsNonRoot || sc.RunAsUser != uid {
			t.Errorf("%s: securityContext %+v: want runAsNonRoot and runAsUser %d (the image's USER)", where, sc, uid)
		}
		if len(w.Template.Spec.Containers) != 1 {
			t.Fatalf("%s: %d containers, want 1", where, len(w.Template.Spec.Containers))
		}
		ctr := w.Template.Spec.Containers[0]
		if ctr.Image != k8sImage || len(ctr.Command) > 0 {
			t.Errorf("%s: image %q command %v: want image %q with its entrypoint", where, ctr.Image, ctr.Command, k8sImage)
		}
		env := map[string]string{}
		for _, ef := range ctr.EnvFrom {
			if ef.ConfigMapRef == nil || generated[ef.ConfigMapRef.Name] == nil {
				t.Errorf("%s: envFrom %+v: want a ConfigMap from the kustomization", where, ef)
				continue
			}
			maps.Copy(env, generated[ef.ConfigMapRef.Name])
		}
		var instanceFromPod bool
		for _, e := range ctr.Env {
			switch {
			case e.ValueFrom == nil:
				env[e.Name] = e.Value
			case e.ValueFrom.FieldRef != nil:
				env[e.Name] = "<" + e.ValueFrom.FieldRef.FieldPath + ">"
				instanceFromPod = instanceFromPod || (e.Name == "FEATURESTREAM_INSTANCE_ID" && e.ValueFrom.FieldRef.FieldPath == "metadata.name")
			case e.ValueFrom.SecretKeyRef != nil:
				env[e.Name] = "<secret>"
				if !e.ValueFrom.SecretKeyRef.Optional {
					t.Errorf("%s: %s from Secret %s: want optional, so the manifests apply without it", where, e.Name, e.ValueFrom.SecretKeyRef.Name)
				}
			}
		}
		sub, vals := resolve(t, cmds, invocation{where: "deploy/k8s " + where, args: ctr.Args, env: env, image: img.env})
		if vals == nil {
			continue
		}
		ports := map[string]int{}
		for _, p := range ctr.Ports {
			ports[p.Name] = p.ContainerPort
		}
		podPorts[o.Metadata.Name] = ports
		for flag, portName := range map[string]string{"admin-addr": "admin", "grpc-addr": "grpc"} {
			if cmds[sub].flags[flag] == nil {
				continue
			}
			p := listenPort(t, where, flag, vals[flag])
			if strconv.Itoa(ports[portName]) != p {
				t.Errorf("%s: containerPort %q is %d, but --%s is %s", where, portName, ports[portName], flag, vals[flag])
			}
		}
		mounts := map[string]string{}
		for _, m := range ctr.VolumeMounts {
			mounts[m.MountPath] = m.Name
		}
		specVol := mounts[path.Dir(vals["spec"])]
		if path.Base(vals["spec"]) != specFile || !slices.ContainsFunc(w.Template.Spec.Volumes, func(v k8sVolume) bool {
			return v.Name == specVol && v.ConfigMap != nil && v.ConfigMap.Name == "featurestream-spec"
		}) {
			t.Errorf("%s: --spec %s is not the featurestream-spec ConfigMap's %s", where, vals["spec"], specFile)
		}
		if job := w.Template.Metadata.Labels["featurestream.io/job"]; job != jobOf[sub] {
			t.Errorf("%s: pod label featurestream.io/job %q, want %q (the job the dashboard and alerts select)", where, job, jobOf[sub])
		}

		switch sub {
		case "process":
			if o.Kind != "StatefulSet" {
				t.Errorf("%s: processors want a StatefulSet (stable names and volumes)", where)
			}
			if !instanceFromPod {
				t.Errorf("%s: want FEATURESTREAM_INSTANCE_ID from metadata.name (static membership by pod name)", where)
			}
			claims := map[string]bool{}
			for _, c := range w.VolumeClaimTemplates {
				claims[c.Metadata.Name] = true
			}
			if !claims[mounts[vals["state-dir"]]] {
				t.Errorf("%s: --state-dir %s is not mounted from a volumeClaimTemplate (mounts %v)", where, vals["state-dir"], mounts)
			}
			if sc.FSGroup != uid {
				t.Errorf("%s: fsGroup %d: want %d so the volume is writable by the image's user", where, sc.FSGroup, uid)
			}
			checkHTTPProbe(t, where+" readiness", ctr.ReadinessProbe, "/readyz", "admin")
			checkHTTPProbe(t, where+" liveness", ctr.LivenessProbe, "/healthz", "admin")
		case "serve":
			if ctr.ReadinessProbe == nil || ctr.ReadinessProbe.GRPC == nil || ctr.ReadinessProbe.GRPC.Port != ports["grpc"] {
				t.Errorf("%s: want a gRPC health readiness probe on the grpc port %d, got %+v", where, ports["grpc"], ctr.ReadinessProbe)
			}
			checkHTTPProbe(t, where+" liveness", ctr.LivenessProbe, "/healthz", "admin")
		}
	}
	for kind, n := range map[string]int{"StatefulSet": 1, "Deployment": 1, "Service": 2, "PodDisruptionBudget": 2, "PodMonitor": 1, "PrometheusRule": 1} {
		if kinds[kind] != n {
			t.Errorf("deploy/k8s has %d %s, want %d", kinds[kind], kind, n)
		}
	}

	// Services, PDBs and the PodMonitor select pods that exist, by port
	// names the pods have.
	for _, o := range objs {
		var spec struct {
			Selector yaml.Node `yaml:"selector"`
			Ports    []struct {
				TargetPort string `yaml:"targetPort"`
			} `yaml:"ports"`
			PodMetricsEndpoints []struct {
				Port string `yaml:"port"`
				Path string `yaml:"path"`
			} `yaml:"podMetricsEndpoints"`
			JobLabel string `yaml:"jobLabel"`
			Groups   any    `yaml:"groups"`
		}
		if err := o.Spec.Decode(&spec); err != nil {
			t.Fatal(err)
		}
		var sel map[string]string
		if o.Kind == "Service" {
			_ = spec.Selector.Decode(&sel)
		} else {
			var ml struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			}
			_ = spec.Selector.Decode(&ml)
			sel = ml.MatchLabels
		}
		where := o.Kind + " " + o.Metadata.Name
		switch o.Kind {
		case "Service", "PodDisruptionBudget", "PodMonitor":
			var matched []string
			for w, labels := range podLabels {
				if subset(sel, labels) {
					matched = append(matched, w)
				}
			}
			if len(matched) == 0 {
				t.Errorf("%s: selector %v matches no pods", where, sel)
			}
			for _, w := range matched {
				for _, p := range spec.Ports {
					if _, ok := podPorts[w][p.TargetPort]; !ok {
						t.Errorf("%s: targetPort %q is not a port of %s", where, p.TargetPort, w)
					}
				}
				for _, e := range spec.PodMetricsEndpoints {
					if _, ok := podPorts[w][e.Port]; !ok || e.Path != "/metrics" {
						t.Errorf("%s: endpoint %+v: %s has no port %q serving /metrics", where, e, w, e.Port)
					}
				}
				if o.Kind == "PodMonitor" && podLabels[w][spec.JobLabel] == "" {
					t.Errorf("%s: jobLabel %q is not a label of %s's pods", where, spec.JobLabel, w)
				}
			}
		case "PrometheusRule":
			var alerts struct {
				Groups any `yaml:"groups"`
			}
			readYAML(t, filepath.Join(deployDir, "prometheus", "alerts.yml"), &alerts)
			if !reflect.DeepEqual(spec.Groups, alerts.Groups) {
				t.Errorf("%s: groups differ from deploy/prometheus/alerts.yml: regenerate monitoring.yaml from it", where)
			}
		}
	}

	// kubectl's kustomize, where installed, must render the whole thing.
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		out, err := exec.Command(kubectl, "kustomize", filepath.Join(deployDir, "k8s")).CombinedOutput()
		if err != nil {
			t.Errorf("kubectl kustomize deploy/k8s: %v\n%s", err, out)
		}
	} else {
		t.Log("kubectl not installed: kustomize rendering not checked")
	}
}

func checkHTTPProbe(t *testing.T, where string, p *k8sProbe, wantPath, wantPort string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != wantPath || p.HTTPGet.Port != wantPort {
		t.Errorf("%s probe: want httpGet %s on port %q, got %+v", where, wantPath, wantPort, p)
	}
}

// ---- metric names ----

// metricKind is what is known of a registered metric family.
type metricKind int

const (
	kindOther metricKind = iota
	kindHistogram
	kindSummary
)

// describeRecorder registers collectors on a registry and remembers each
// one's metric names, including vectors that have no series yet (which a
// scrape does not show).
type describeRecorder struct {
	prometheus.Registerer
	names map[string]metricKind
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *describeRecorder) record(c prometheus.Collector) {
	kind := kindOther
	switch c.(type) {
	case prometheus.Histogram, *prometheus.HistogramVec:
		kind = kindHistogram
	case prometheus.Summary, *prometheus.SummaryVec:
		kind = kindSummary
	}
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqNameRE.FindStringSubmatch(d.String()); m != nil {
			if _, seen := r.names[m[1]]; !seen || kind != kindOther {
				r.names[m[1]] = kind
			}
		}
	}
}

func (r *describeRecorder) Register(c prometheus.Collector) error {
	r.record(c)
	return r.Registerer.Register(c)
}

func (r *describeRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.record(c)
	}
	r.Registerer.MustRegister(cs...)
}

// registeredMetrics returns the metric families the binary registers: those
// the components register as the commands build them (vectors included,
// before they have series), and those a running `dev` exposes on /metrics.
func registeredMetrics(t *testing.T) map[string]metricKind {
	t.Helper()
	top, err := loadTopology(shopSpec)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	rec := &describeRecorder{Registerer: newRegistry(), names: map[string]metricKind{}}
	client, err := sinks.NewClient(sinks.Options{Addrs: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sink, err := sinks.NewStore(client, top, logger, rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := serving.New(serving.Config{Addr: "127.0.0.1:0"}, top, sink, logger, rec); err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(state.Options{Dir: t.TempDir(), Logger: logger}, top)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := processor.New(processor.Config{Brokers: []string{"127.0.0.1:1"}}, top, st, sink, logger, rec); err != nil {
		t.Fatal(err)
	}
	state.NewRestorer(st, nil, nil, state.ChangelogTopic(top.Spec.App), logger, rec)
	names := rec.names

	for name, mf := range scrapeDev(t) {
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			names[name] = kindHistogram
		case dto.MetricType_SUMMARY:
			names[name] = kindSummary
		default:
			if _, ok := names[name]; !ok {
				names[name] = kindOther
			}
		}
	}
	for _, want := range []string{"featurestream_events_consumed_total", "featurestream_restore_remaining_records", "grpc_server_handled_total", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := names[want]; !ok {
			t.Fatalf("registered metrics lack %s: the collection is broken (got %d names)", want, len(names))
		}
	}
	if names["featurestream_freshness_seconds"] != kindHistogram {
		t.Fatal("featurestream_freshness_seconds not known as a histogram: the collection is broken")
	}
	return names
}

// scrapeDev runs `dev` on free ports, makes one GetFeatures call, and
// returns what its /metrics shows.
func scrapeDev(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan devAddrs, 1)
	done := make(chan error, 1)
	dev := &devCmd{specFlag: specFlag{Spec: shopSpec}, KafkaAddr: "127.0.0.1:0", GrpcAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Partitions: 1}
	go func() { done <- dev.run(ctx, slog.New(slog.DiscardHandler), func(a devAddrs) { started <- a }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev: %v", err)
		}
	}()
	var addrs devAddrs
	select {
	case addrs = <-started:
	case err := <-done:
		t.Fatalf("dev exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not start within 30s")
	}
	waitReady(t, "http://"+addrs.Admin+"/readyz")
	conn, err := grpc.NewClient(addrs.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := featurestreamv1.NewFeatureServiceClient(conn).GetFeatures(ctx, &featurestreamv1.GetFeaturesRequest{EntityIds: []string{"u1"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addrs.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// generatedMetrics are series Prometheus itself adds to every target.
var generatedMetrics = map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true}

// checkMetric reports whether name is a registered metric or one of a
// registered histogram's or summary's series.
func checkMetric(names map[string]metricKind, name string) bool {
	if _, ok := names[name]; ok || generatedMetrics[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch names[base] {
		case kindHistogram:
			return true
		case kindSummary:
			return suffix != "_bucket"
		}
	}
	return false
}

// promqlFuncs are PromQL's functions, aggregations and keywords: never
// metric names.
var promqlFuncs = map[string]bool{}

func init() {
	for _, f := range strings.Fields(`abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time
		ceil changes clamp clamp_max clamp_min cos cosh count_over_time days_in_month day_of_month day_of_week
		day_of_year deg delta deriv exp floor histogram_avg histogram_count histogram_fraction histogram_quantile
		histogram_stddev histogram_stdvar histogram_sum holt_winters double_exponential_smoothing hour idelta
		increase irate label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time
		min_over_time minute month pi predict_linear present_over_time quantile_over_time rad rate resets round
		scalar sgn sin sinh sort sort_desc sort_by_label sort_by_label_desc sqrt stddev_over_time
		stdvar_over_time sum_over_time tan tanh time timestamp vector year
		sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
		and or unless atan2 bool offset by without on ignoring group_left group_right inf nan start end`) {
		promqlFuncs[f] = true
	}
}

// promqlMetricNames returns the metric names a PromQL expression (with
// Grafana's $variables) selects. It is a small lexer, not a parser: it
// skips strings, label matchers {...}, ranges [...], numbers and
// durations, label lists after by/without/on/ignoring/group_*, functions
// and keywords; every other identifier is a metric name.
func promqlMetricNames(expr string) []string {
	var out []string
	isStart := func(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
	isPart := func(c byte) bool { return isStart(c) || (c >= '0' && c <= '9') }
	skipTo := func(i int, open, close byte) int {
		depth := 0
		for ; i < len(expr); i++ {
			switch c := expr[i]; c {
			case '"', '\'', '`':
				for i++; i < len(expr) && expr[i] != c; i++ {
					if expr[i] == '\\' && c != '`' {
						i++
					}
				}
			case open:
				depth++
			case close:
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			i = j + 1
		case c == '{':
			i = skipTo(i, '{', '}')
		case c == '[':
			i = skipTo(i, '[', ']')
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '$':
			// A Grafana variable outside matchers and ranges (rare).
			for i++; i < len(expr) && (isPart(expr[i]) || expr[i] == '{' || expr[i] == '}'); i++ {
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isPart(expr[i]) || expr[i] == '.') {
				i++
			}
		case isStart(c):
			j := i
			for j < len(expr) && isPart(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && (expr[k] == ' ' || expr[k] == '\t' || expr[k] == '\n') {
				k++
			}
			switch {
			case (word == "by" || word == "without" || word == "on" || word == "ignoring" || word == "group_left" || word == "group_right") && k < len(expr) && expr[k] == '(':
				i = skipTo(k, '(', ')')
				continue
			case promqlFuncs[strings.ToLower(word)]:
			case k < len(expr) && expr[k] == '(':
				// An unknown function: not a metric either.
			default:
				out = append(out, word)
			}
			i = j
		default:
			i++
		}
	}
	return out
}

func TestPromQLMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total{job="$serve_job", grpc_code!="OK"}[$__rate_interval]))`, []string{"grpc_server_handled_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(featurestream_freshness_seconds_bucket{job=~"a|b"}[5m])))`, []string{"featurestream_freshness_seconds_bucket"}},
		{`time() - max by (partition) (featurestream_watermark_seconds)`, []string{"featurestream_watermark_seconds"}},
		{`a_total / scalar(sum(rate(b_total[5m] offset 1h)))`, []string{"a_total", "b_total"}},
		{"up{job=~\"featurestream-.*\"} == 0", []string{"up"}},
		{`x > 0 and on(instance) group_left(foo) y unless ignoring (z) w`, []string{"x", "y", "w"}},
		{`sum without (instance) (rate(c[1m])) > 1e3`, []string{"c"}},
		{`label_replace(m, "dst", "$1", "src", "(.*)")`, []string{"m"}},
		{`max by (instance, partition) (deriv(r[10m])) >= 0`, []string{"r"}},
	} {
		if got := promqlMetricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("promqlMetricNames(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

// alertRules returns the alerts of deploy/prometheus/alerts.yml.
func alertRules(t *testing.T) []struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
	For   string `yaml:"for"`
} {
	t.Helper()
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
				For   string `yaml:"for"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, filepath.Join(deployDir, "prometheus", "alerts.yml"), &f)
	var out []struct {
		Alert string `yaml:"alert"`
		Expr  string `yaml:"expr"`
		For   string `yaml:"for"`
	}
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// TestMonitoring checks the dashboard and the alerts: their structure, and
// that every metric they query is one the binary registers.
func TestMonitoring(t *testing.T) {
	var dash struct {
		UID        string         `json:"uid"`
		Panels     []grafanaPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name, Type string
			} `json:"list"`
		} `json:"templating"`
	}
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana", "featurestream.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	alerts := alertRules(t)

	t.Run("dashboard structure", func(t *testing.T) {
		vars := map[string]string{}
		for _, v := range dash.Templating.List {
			vars[v.Name] = v.Type
		}
		if vars["datasource"] != "datasource" {
			t.Errorf("dashboard: want a datasource variable, got %v", vars)
		}
		var rows []string
		ids := map[int]bool{}
		for _, p := range dash.Panels {
			if ids[p.ID] {
				t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q: gridPos %+v outside the 24 columns", p.Title, p.GridPos)
			}
			if p.Type == "row" {
				rows = append(rows, p.Title)
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource %+v, want ${datasource}", p.Title, p.Datasource)
			}
			for _, tg := range p.Targets {
				if len(promqlMetricNames(tg.Expr)) == 0 {
					t.Errorf("panel %q: query %q selects no metric", p.Title, tg.Expr)
				}
			}
		}
		if want := []string{"Ingest", "Freshness", "State / restore", "Serving", "Errors"}; !slices.Equal(rows, want) {
			t.Errorf("dashboard rows %v, want %v", rows, want)
		}
	})

	t.Run("alert structure", func(t *testing.T) {
		seen := map[string]bool{}
		for _, a := range alerts {
			if a.Alert == "" || a.Expr == "" || seen[a.Alert] {
				t.Errorf("alert %+v: want a unique name and an expression", a)
			}
			seen[a.Alert] = true
			if a.For != "" {
				if _, err := model.ParseDuration(a.For); err != nil {
					t.Errorf("alert %s: for %q: %v", a.Alert, a.For, err)
				}
			}
		}
		if len(alerts) < 5 {
			t.Errorf("%d alerts, want at least 5 (lag, dead letters, commits, Redis, restore)", len(alerts))
		}
	})

	if testing.Short() {
		t.Skip("starts dev to collect the registered metrics: skipped with -short")
	}
	names := registeredMetrics(t)
	used := map[string]bool{}
	check := func(where, expr string) {
		for _, m := range promqlMetricNames(expr) {
			used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")] = true
			if !checkMetric(names, m) {
				t.Errorf("%s queries %s, which featurestream does not register", where, m)
			}
		}
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			check(fmt.Sprintf("dashboard panel %q", p.Title), tg.Expr)
		}
	}
	for _, a := range alerts {
		check("alert "+a.Alert, a.Expr)
	}
	var unused []string
	for n := range names {
		if strings.HasPrefix(n, "featurestream_") && !used[n] {
			unused = append(unused, n)
		}
	}
	if len(unused) > 0 {
		slices.Sort(unused)
		t.Logf("registered but on no dashboard panel or alert: %v", unused)
	}
}

// ---- sizing ----

// shopEntity applies n shop events spread evenly over span, ending at end,
// to a fresh state of the shop spec as a processor does (watermark =
// newest event − grace, so tiles out of every window are pruned).
func shopEntity(t *testing.T, top *topology.Topology, user string, n int, span time.Duration, end time.Time, seed uint64) *topology.EntityState {
	t.Helper()
	gen := bench.NewShopGenerator(seed, 2, 100_000)
	st := top.NewEntityState()
	grace := time.Duration(top.Spec.Source.Grace)
	for i := range n {
		at := end.Add(-span + time.Duration(i+1)*span/time.Duration(n))
		ev := gen.Next(at)
		fields := map[string]any{"user_id": user, "ts": float64(ev.TS), "type": ev.Type, "item_id": ev.ItemID, "category": ev.Category, "price": ev.Price}
		if err := top.Apply(st, &topology.Event{Key: user, TimeMs: ev.TS, Fields: fields}, at.Add(-grace).UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// TestSizing measures what docs/operations.md (sizing) quotes, and fails
// when a figure outgrows the bound written there: the encoded state of a
// shop entity (the changelog record and the Pebble value) and what a real
// redis-server spends per entity (its value is the encoded state and a
// header: sinks/value.go).
func TestSizing(t *testing.T) {
	top, err := loadTopology(shopSpec)
	if err != nil {
		t.Fatal(err)
	}
	rs := redisserver.StartForTest(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	store, err := sinks.NewStore(rdb, top, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	end := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	// Bounds in bytes, as docs/operations.md states them.
	for _, tc := range []struct {
		name           string
		events         int
		span           time.Duration
		encoded, redis int64
	}{
		{"light: 5 events in the last hour", 5, time.Hour, 200, 450},
		{"typical: 50 events over a day", 50, 24 * time.Hour, 300, 500},
		{"busy: an event a minute for a day", 1440, 24 * time.Hour, 600, 800},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const distinct, entities = 20, 2000
			states := make([]*topology.EntityState, distinct)
			var encoded int
			for i := range states {
				states[i] = shopEntity(t, top, "u"+strconv.Itoa(1_000_000+i), tc.events, tc.span, end, uint64(i))
				encoded = max(encoded, len(top.AppendState(nil, states[i])))
			}
			if int64(encoded) > tc.encoded {
				t.Errorf("encoded state %d bytes, docs/operations.md says at most %d", encoded, tc.encoded)
			}
			if err := rdb.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			before := usedMemory(t, rdb)
			var recs []sinks.Record
			for i := range entities {
				recs = append(recs, sinks.Record{Entity: "u" + strconv.Itoa(1_000_000+i), Partition: int32(i % 12),
					Version: uint64(1_000_000 + i), Generation: "hOJOz9lwIVDZJGnLHy+YNQ==", State: states[i%distinct]})
				if len(recs) == 500 {
					if err := store.Write(ctx, recs); err != nil {
						t.Fatal(err)
					}
					recs = recs[:0]
				}
			}
			perEntity := (usedMemory(t, rdb) - before) / entities
			usage, err := rdb.MemoryUsage(ctx, store.Key("u1000000"), 0).Result()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("encoded %d B; redis: MEMORY USAGE %d B, used_memory %d B per entity", encoded, usage, perEntity)
			if perEntity > tc.redis {
				t.Errorf("redis: %d bytes per entity, docs/operations.md says at most %d", perEntity, tc.redis)
			}
		})
	}
}

func usedMemory(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("INFO memory has no used_memory")
	return 0
}

// ---- operations procedures ----

// shellWords splits a command line written for sh: words separated by
// blanks, single-quoted parts literal, backslash-newline a blank.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	in, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\'':
			quoted = false
		case quoted:
			cur.WriteByte(c)
		case c == '\'':
			quoted, in = true, true
		case c == '\\' && i+1 < len(line) && line[i+1] == '\n':
			i++
		case c == ' ' || c == '\t' || c == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// docCommand returns the command of docs/operations.md that starts with
// prefix and contains marker, continuation lines joined.
func docCommand(t *testing.T, prefix, marker string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], prefix) {
			continue
		}
		cmd := lines[i]
		for strings.HasSuffix(cmd, "\\") && i+1 < len(lines) {
			i++
			cmd += "\n" + lines[i]
		}
		if strings.Contains(cmd, marker) {
			return cmd
		}
	}
	t.Fatalf("docs/operations.md has no command starting %q containing %q", prefix, marker)
	return ""
}

// TestDeadLetterKcat runs the kcat command docs/operations.md gives for
// reading the dead-letter topic, against a processor that dead-lettered
// real poison, and checks it shows where each record came from and why.
func TestDeadLetterKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed (apt-get install kcat): the documented command is not run")
	}
	env := newE2EEnv(t, 2)
	stop := env.startProcessor(t.TempDir(), processor.ExactlyOnce)
	defer stop()
	now := time.Now().UnixMilli()
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, r := range []*kgo.Record{
		{Topic: "events", Key: []byte("u1"), Value: []byte(fmt.Sprintf(`{"user_id":"u1","ts":%d,"type":"view","item_id":"i1"}`, now))},
		{Topic: "events", Key: []byte("u1"), Value: []byte(`{not json`)},
		{Topic: "events", Key: []byte("u2"), Value: []byte(`{"user_id":"u2","type":"view"}`)},
	} {
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// The processor commits the dead letters within a commit interval.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := env.deadLetters()
		if got["decode"] == 1 && got["no_time"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters %v: want one decode and one no_time", got)
		}
	}

	words := shellWords(docCommand(t, "kcat ", processor.DLQTopic("shop")))
	if words[0] != "kcat" || !slices.Contains(words, "-b") {
		t.Fatalf("documented command %q: want kcat -b BROKER ...", words)
	}
	words[slices.Index(words, "-b")+1] = env.brokers[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, words[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(words, " "), err, out)
	}
	for _, want := range []string{"fs.topic=events", "fs.partition=", "fs.offset=", "fs.reason=decode", "fs.reason=no_time", "fs.error=", "{not json"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("the documented kcat command's output lacks %q:\n%s", want, out)
		}
	}
}
