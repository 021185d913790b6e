package bench

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Report is one end-to-end benchmark run: what `featurestream bench`
// prints, writes as JSON and renders as HTML.
type Report struct {
	Command string
	Machine string
	Started time.Time
	Ingest  *IngestResult
	Live    *LiveResult
}

// WriteText prints the report as a table.
func (r *Report) WriteText(w io.Writer) {
	in := r.Ingest
	title := fmt.Sprintf("ingest (%d events)", in.Events)
	if in.Rounds > 1 {
		title = fmt.Sprintf("ingest (%d events, medians of %d rounds)", in.Events, in.Rounds)
	}
	fmt.Fprintf(w, "\n%-36s %12s %8s %14s\n", title, "events/s", "× raw", "CPU s/M events")
	fmt.Fprintf(w, "%-36s %12.0f %8s\n", "raw franz-go consume", in.RawConsume, "1.00")
	for _, run := range in.Runs {
		fmt.Fprintf(w, "%-36s %12.0f %8.2f %14.1f\n", "processor "+string(run.Guarantee), run.Rate, run.RawRatio, run.CPUPerMillion)
	}
	if in.EOSOverALO > 0 {
		fmt.Fprintf(w, "%-36s %12s %8.2f\n", "exactly-once / at-least-once", "", in.EOSOverALO)
	}
	if in.RestoreRate > 0 {
		fmt.Fprintf(w, "%-36s %12.0f %8.2f   (%d records)\n", "restore from the changelog", in.RestoreRate, in.RestoreRatio, in.RestoreRecords)
		fmt.Fprintf(w, "%-36s %12.0f %8s\n", "raw read_committed changelog read", in.RawChangelog, "1.00")
	}
	if len(in.RawRounds) > 1 {
		// How much the machine's speed moved says how far to trust one
		// run's ratios.
		fmt.Fprintf(w, "  (raw consume per round: %s events/s)\n", spread(in.RawRounds))
		for _, run := range in.Runs {
			fmt.Fprintf(w, "  (%s per round: %s events/s)\n", run.Guarantee, spread(run.RoundRates))
		}
	}
	if l := r.Live; l != nil {
		if l.Sustained > 0 {
			fmt.Fprintf(w, "\nlive at %d events/s, half the maximum sustained rate %d events/s\n", l.Rate, l.Sustained)
		} else {
			fmt.Fprintf(w, "\nlive at %d events/s\n", l.Rate)
		}
		fmt.Fprintf(w, "%-36s %10s %10s %10s %8s\n", "", "p50", "p99", "p999", "n")
		fmt.Fprintf(w, "%-36s %10s %10s %10s %8d\n", "freshness (produce → GetFeatures)", ms(l.Freshness.P50), ms(l.Freshness.P99), ms(l.Freshness.P999), l.Freshness.N)
		fmt.Fprintf(w, "%-36s %10s %10s %10s %8d\n", "GetFeatures while ingesting", ms(l.Serving.P50), ms(l.Serving.P99), ms(l.Serving.P999), l.Serving.N)
		if len(l.Stages) > 0 {
			fmt.Fprintf(w, "where it goes (the processor's histograms, estimated within their buckets):\n")
		}
		for _, st := range l.Stages {
			fmt.Fprintf(w, "%-36s %10s %10s %10s %8d\n", "  "+st.Name, ms(st.P50), ms(st.P99), "", st.N)
		}
		if n := l.Freshness.N; n > 0 && n <= 1000 {
			// Probes run one at a time, a few a second: a short run
			// has too few for its tail percentiles to be more than
			// its slowest probe.
			fmt.Fprintf(w, "(freshness from %d probes: %s; a longer --live-duration gives more)\n", n, tailNote(n))
		}
	}
	fmt.Fprintf(w, "\nmachine: %s\n", r.Machine)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }

// tailNote says which of p99 and p999 a sample of n is too small for: a
// quantile q of at most 1/(1-q) values is the sample's maximum (summarize).
func tailNote(n int) string {
	if n <= 100 {
		return "p99 and p999 are the slowest one"
	}
	return "p999 is the slowest one"
}

// bar is one bar of an SVG bar chart.
type bar struct {
	Label string
	Value float64
	Text  string
	Y     int
	W     float64
}

// histogram buckets a latency sample on a log scale for an SVG chart.
func histogram(sample []time.Duration) []bar {
	if len(sample) == 0 {
		return nil
	}
	edges := []time.Duration{}
	for d := 100 * time.Microsecond; d < 10*time.Second; d *= 2 {
		edges = append(edges, d)
	}
	counts := make([]int, len(edges))
	for _, d := range sample {
		i := 0
		for i < len(edges)-1 && d > edges[i] {
			i++
		}
		counts[i]++
	}
	lo, hi := len(counts), 0
	for i, c := range counts {
		if c > 0 {
			lo, hi = min(lo, i), max(hi, i)
		}
	}
	var bars []bar
	for i := lo; i <= hi; i++ {
		bars = append(bars, bar{Label: "≤ " + ms(edges[i]), Value: float64(counts[i]), Text: fmt.Sprint(counts[i])})
	}
	return scale(bars)
}

func scale(bars []bar) []bar {
	top := 0.0
	for _, b := range bars {
		top = math.Max(top, b.Value)
	}
	for i := range bars {
		bars[i].Y = 22 * i
		if top > 0 {
			bars[i].W = 420 * bars[i].Value / top
		}
	}
	return bars
}

// WriteHTML renders the report as a self-contained page with charts.
func (r *Report) WriteHTML(w io.Writer) error {
	in := r.Ingest
	throughput := []bar{{Label: "raw consume", Value: in.RawConsume, Text: fmt.Sprintf("%.0f/s", in.RawConsume)}}
	for _, run := range in.Runs {
		throughput = append(throughput, bar{Label: string(run.Guarantee), Value: run.Rate, Text: fmt.Sprintf("%.0f/s (%.2f×)", run.Rate, run.RawRatio)})
	}
	if in.RestoreRate > 0 {
		throughput = append(throughput,
			bar{Label: "changelog read", Value: in.RawChangelog, Text: fmt.Sprintf("%.0f/s", in.RawChangelog)},
			bar{Label: "restore", Value: in.RestoreRate, Text: fmt.Sprintf("%.0f/s (%.2f×)", in.RestoreRate, in.RestoreRatio)})
	}
	data := map[string]any{"R": r, "Throughput": scale(throughput)}
	if l := r.Live; l != nil {
		data["Fresh"] = histogram(l.Freshness.Sample)
		data["Serving"] = histogram(l.Serving.Sample)
		var over []bar
		for i, s := range l.PerSecond {
			over = append(over, bar{Label: fmt.Sprintf("second %d", i+1), Value: float64(s.Events), Text: fmt.Sprintf("%d events, freshness p50 %s, slowest %s", s.Events, ms(s.Freshness), ms(s.FreshnessMax))})
		}
		data["Over"] = scale(over)
	}
	return reportTmpl.Execute(w, data)
}

var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms": ms, "h": func(n int) int { return 22*n + 10 },
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>featurestream bench</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:60em}svg text{font:12px system-ui,sans-serif}
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}</style>
</head><body>
<h1>featurestream bench</h1>
<p><code>{{.R.Command}}</code><br>{{.R.Machine}}, started {{.R.Started.Format "2006-01-02 15:04:05 MST"}}</p>
{{define "bars"}}<svg width="820" height="{{h (len .)}}">{{range .}}<text x="0" y="{{.Y}}" dy="14">{{.Label}}</text><rect x="150" y="{{.Y}}" width="{{.W}}" height="16" fill="#4a7bd0"/><text x="{{.W}}" dx="156" y="{{.Y}}" dy="13">{{.Text}}</text>{{end}}</svg>{{end}}
<h2>Throughput ({{.R.Ingest.Events}} events{{if gt .R.Ingest.Rounds 1}}, medians of {{.R.Ingest.Rounds}} rounds{{end}})</h2>
{{if gt .R.Ingest.Rounds 1}}<p>Each ratio to the raw consume is taken within its round, then the median of the rounds is shown, so it need not equal the median rates' quotient.</p>{{end}}
{{template "bars" .Throughput}}
{{if .R.Ingest.EOSOverALO}}<p>exactly-once / at-least-once: {{printf "%.2f" .R.Ingest.EOSOverALO}}</p>{{end}}
{{with .R.Live}}
<h2>Live at {{.Rate}} events/s{{if .Sustained}}, half the maximum sustained rate {{.Sustained}} events/s{{end}}</h2>
<table><tr><th></th><th>p50</th><th>p99</th><th>p999</th><th>n</th></tr>
<tr><td>freshness: produce → visible in GetFeatures</td><td>{{ms .Freshness.P50}}</td><td>{{ms .Freshness.P99}}</td><td>{{ms .Freshness.P999}}</td><td>{{.Freshness.N}}</td></tr>
<tr><td>GetFeatures while ingesting</td><td>{{ms .Serving.P50}}</td><td>{{ms .Serving.P99}}</td><td>{{ms .Serving.P999}}</td><td>{{.Serving.N}}</td></tr></table>
{{with .Stages}}<h3>Where freshness goes</h3>
<p>From the processor's own histograms over the live phase, interpolated within buckets that double in width: estimates.</p>
<table><tr><th></th><th>p50</th><th>p99</th><th>n</th><th>metric</th></tr>
{{range .}}<tr><td>{{.Name}}</td><td>{{ms .P50}}</td><td>{{ms .P99}}</td><td>{{.N}}</td><td><code>{{.Metric}}</code></td></tr>
{{end}}</table>{{end}}
{{end}}
{{with .Fresh}}<h3>Freshness histogram</h3>{{template "bars" .}}{{end}}
{{with .Serving}}<h3>GetFeatures latency histogram</h3>{{template "bars" .}}{{end}}
{{with .Over}}<h3>Events produced per second</h3>{{template "bars" .}}{{end}}
</body></html>
`))

// MachineString describes this machine for reports.
func MachineString() string {
	return fmt.Sprintf("%d CPUs, %s, %s", runtime.NumCPU(), cpuName(), runtime.Version())
}

func cpuName() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return runtime.GOARCH
}

// spread formats the lowest and highest of rates, in millions.
func spread(rates []float64) string {
	return fmt.Sprintf("%.2f–%.2f M", slices.Min(rates)/1e6, slices.Max(rates)/1e6)
}
