package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/featurestream/featurestream/sinks"
	"github.com/featurestream/featurestream/state"
	"github.com/featurestream/featurestream/topology"
)

// inspectCmd shows what featurestream keeps for some entities, for
// debugging: the raw tiles and record headers, and the values they
// evaluate to. It reads Redis (what serving reads) or, with --state-dir, a
// processor's Pebble state (what the changelog restores).
type inspectCmd struct {
	specFlag
	redisFlags
	// No environment variable: inside a processor's container
	// FEATURESTREAM_STATE_DIR is set, and inspect must not pick the
	// (locked) state dir there unless asked.
	StateDir  string   `help:"Read a processor's local state (its --state-dir) instead of Redis. Pebble allows one process at a time: stop the processor first, or inspect a copy of the directory." env:"-"`
	Partition int32    `help:"With --state-dir: the input partition to look in; -1 looks in partitions 0-1023." default:"-1"`
	AsOf      string   `help:"Evaluate the features as of this RFC 3339 time instead of now."`
	Output    string   `help:"Output format: text or json." enum:"text,json" default:"text" short:"o"`
	Entities  []string `arg:"" help:"Entity ids, such as u1."`

	// out receives the report; nil means stdout. Tests set it.
	out io.Writer
}

// maxProbePartitions bounds the partitions inspect looks in without
// --partition: the state package lists no partitions, so inspect asks for
// the metadata of each id from 0 (about 50µs each); input topics rarely
// have more.
const maxProbePartitions = 1024

// errStateLocked says a state dir is in use by another process.
var errStateLocked = errors.New("state dir is in use by another process (a running featurestream process?): Pebble allows one process at a time; stop that processor (it resumes from its state when restarted), inspect a copy of the directory, or inspect Redis with --redis-addr instead")

// inspectReport is the JSON output.
type inspectReport struct {
	Source   string          `json:"source"`
	AsOf     time.Time       `json:"as_of"`
	Entities []inspectEntity `json:"entities"`
}

type inspectEntity struct {
	Entity string `json:"entity"`
	Found  bool   `json:"found"`
	// Redis only.
	Key        string     `json:"key,omitempty"`
	Version    *uint64    `json:"version,omitempty"`
	Written    *time.Time `json:"written,omitempty"`
	Restoring  *bool      `json:"partition_restoring,omitempty"`
	Partition  *int32     `json:"partition,omitempty"`
	Generation string     `json:"generation,omitempty"`
	LastEvent  *time.Time `json:"last_event,omitempty"`
	// State only.
	Meta         *inspectMeta `json:"partition_meta,omitempty"`
	EncodedBytes int          `json:"encoded_bytes,omitempty"`

	Features []inspectFeature `json:"features,omitempty"`
}

type inspectMeta struct {
	ChangelogNext int64      `json:"changelog_next"`
	InputNext     int64      `json:"input_next"`
	SinkNext      int64      `json:"sink_next"`
	MaxEvent      *time.Time `json:"max_event,omitempty"`
	Generation    string     `json:"generation"`
}

type inspectFeature struct {
	Name   string `json:"name"`
	Agg    string `json:"agg"`
	Window string `json:"window"`
	Tile   string `json:"tile,omitempty"`
	// Stored is false when the record lacks the feature (written under a
	// spec without it).
	Stored      bool          `json:"stored"`
	Present     bool          `json:"present"`
	Value       any           `json:"value"`
	WindowStart *time.Time    `json:"window_start,omitempty"`
	WindowEnd   *time.Time    `json:"window_end,omitempty"`
	Tiles       []inspectTile `json:"tiles"`
}

type inspectTile struct {
	// Start is the tile's first event time; nil for a lifetime tile.
	Start *time.Time    `json:"start,omitempty"`
	Count int64         `json:"count"`
	Num   float64       `json:"num"`
	Items []inspectItem `json:"items,omitempty"`
}

type inspectItem struct {
	Time  time.Time `json:"time"`
	Value string    `json:"value"`
}

// Run prints the report.
func (c *inspectCmd) Run(ctx context.Context, logger *slog.Logger) error {
	top, err := loadTopology(c.Spec)
	if err != nil {
		return err
	}
	asOf := time.Now()
	if c.AsOf != "" {
		if asOf, err = time.Parse(time.RFC3339Nano, c.AsOf); err != nil {
			return fmt.Errorf("--as-of %q: want an RFC 3339 time such as 2026-11-26T06:40:00Z", c.AsOf)
		}
	}
	var rep *inspectReport
	if c.StateDir != "" {
		rep, err = c.fromState(top, asOf, logger)
	} else {
		rep, err = c.fromRedis(ctx, top, asOf, logger)
	}
	if err != nil {
		return err
	}
	out := c.out
	if out == nil {
		out = os.Stdout
	}
	if c.Output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.writeText(out)
}

func (c *inspectCmd) fromRedis(ctx context.Context, top *topology.Topology, asOf time.Time, logger *slog.Logger) (*inspectReport, error) {
	o, err := c.options(c.RedisAddr, c.RedisCluster)
	if err != nil {
		return nil, err
	}
	client, err := sinks.NewClient(o)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	store, err := sinks.NewStore(client, top, logger, nil)
	if err != nil {
		return nil, err
	}
	if err := store.Ping(ctx); err != nil {
		return nil, fmt.Errorf("redis %s (--redis-addr): %w", c.RedisAddr, err)
	}
	// Read what servers read: the published state generation.
	gen, err := store.ReadStateGeneration(ctx)
	if err != nil {
		return nil, err
	}
	store.SetStateGeneration(gen)
	all := make([]int, len(top.Features))
	for i := range all {
		all[i] = i
	}
	entries, err := store.Read(ctx, c.Entities, all, nil)
	if err != nil {
		return nil, err
	}
	restoring, err := store.RestoringPartitions(ctx)
	if err != nil {
		return nil, err
	}
	rep := &inspectReport{Source: "redis " + c.RedisAddr, AsOf: asOf}
	for i, e := range entries {
		ie := inspectEntity{Entity: c.Entities[i], Found: e.Found, Key: store.Key(c.Entities[i])}
		if e.Found {
			v, p, r := e.Version, e.Partition, slices.Contains(restoring, e.Partition)
			ie.Version, ie.Partition, ie.Restoring, ie.Generation = &v, &p, &r, e.Generation
			ie.LastEvent = msTime(e.LastEventMs)
			if e.WrittenMs != 0 {
				ie.Written = msTime(e.WrittenMs)
			}
			ie.Features = inspectFeatures(top, e.Tiles, asOf)
		}
		rep.Entities = append(rep.Entities, ie)
	}
	return rep, nil
}

func (c *inspectCmd) fromState(top *topology.Topology, asOf time.Time, logger *slog.Logger) (*inspectReport, error) {
	dir, err := pebbleDir(c.StateDir)
	if err != nil {
		return nil, err
	}
	// Pebble's own logs are noise here; its errors come back as errors.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := state.Open(state.Options{Dir: dir, Logger: quiet, CacheSize: 8 << 20, MemTableSize: 4 << 20}, top)
	if err != nil {
		if isLockError(err) {
			return nil, fmt.Errorf("inspect %s: %w (%v)", c.StateDir, errStateLocked, err)
		}
		return nil, err
	}
	defer func() {
		if err := store.Close(); err != nil {
			logger.Warn("close state", "dir", dir, "err", err)
		}
	}()
	parts := []int32{c.Partition}
	if c.Partition < 0 {
		parts = nil
		for p := range int32(maxProbePartitions) {
			if _, ok, err := store.Meta(p); err != nil {
				return nil, err
			} else if ok {
				parts = append(parts, p)
			}
		}
	}
	rep := &inspectReport{Source: fmt.Sprintf("state %s, partitions %v", dir, parts), AsOf: asOf}
	for _, id := range c.Entities {
		found := false
		for _, p := range parts {
			st, err := store.Get(p, id)
			if err != nil {
				return nil, err
			}
			if st == nil {
				continue
			}
			found = true
			meta, _, err := store.Meta(p)
			if err != nil {
				return nil, err
			}
			part := p
			ie := inspectEntity{
				Entity: id, Found: true, Partition: &part, LastEvent: msTime(st.LastEventMs),
				Generation:   meta.Generation,
				EncodedBytes: len(top.AppendState(nil, st)),
				Meta: &inspectMeta{ChangelogNext: meta.ChangelogNext, InputNext: meta.InputNext, SinkNext: meta.SinkNext,
					MaxEvent: msTime(meta.MaxEventMs), Generation: meta.Generation},
				Features: inspectFeatures(top, st.Features, asOf),
			}
			rep.Entities = append(rep.Entities, ie)
		}
		if !found {
			rep.Entities = append(rep.Entities, inspectEntity{Entity: id})
		}
	}
	return rep, nil
}

// pebbleDir returns the Pebble directory of a processor's --state-dir (or
// the Pebble directory itself), refusing to create one: inspecting a
// mistyped path must not leave an empty store behind.
func pebbleDir(stateDir string) (string, error) {
	for _, dir := range []string{filepath.Join(stateDir, "pebble"), stateDir} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "MANIFEST-") {
				return dir, nil
			}
		}
	}
	return "", fmt.Errorf("--state-dir %s: no state there (want the --state-dir of a featurestream process, which holds pebble/)", stateDir)
}

// isLockError reports whether err is Pebble failing to take its LOCK file:
// held by another process (fcntl: EAGAIN or EACCES) or by this one.
func isLockError(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) ||
		strings.Contains(err.Error(), "lock held by current process")
}

func msTime(ms int64) *time.Time {
	if ms <= 0 || ms == 1<<63-1 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

// inspectFeatures describes each feature's tiles and its value at asOf.
func inspectFeatures(top *topology.Topology, tiles [][]topology.Tile, asOf time.Time) []inspectFeature {
	out := make([]inspectFeature, len(top.Features))
	for i := range top.Features {
		f := &top.Features[i]
		fe := inspectFeature{Name: f.Name, Agg: f.Agg, Window: "lifetime", Tiles: []inspectTile{}}
		if !f.Lifetime() {
			fe.Window, fe.Tile = shortDuration(f.Window), shortDuration(f.Tile)
		}
		var ts []topology.Tile
		if i < len(tiles) && tiles[i] != nil {
			fe.Stored, ts = true, tiles[i]
		}
		v := top.Evaluate(i, ts, asOf.UnixMilli())
		fe.Present = v.Present
		fe.Value = valueOf(v)
		if v.WindowEndMs != 0 {
			fe.WindowStart, fe.WindowEnd = msTime(v.WindowStartMs), msTime(v.WindowEndMs)
		}
		for _, t := range ts {
			it := inspectTile{Count: t.Count, Num: t.Num}
			if !f.Lifetime() {
				start := time.UnixMilli(t.Start).UTC()
				it.Start = &start
			}
			for _, item := range t.Items {
				it.Items = append(it.Items, inspectItem{Time: time.UnixMilli(item.TimeMs).UTC(), Value: item.Value})
			}
			fe.Tiles = append(fe.Tiles, it)
		}
		out[i] = fe
	}
	return out
}

// shortDuration formats d as a spec would: 1h, 5m, 7d, 1h30m.
func shortDuration(d time.Duration) string {
	if d != 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// valueOf returns the served value of v, or nil when it has none.
func valueOf(v topology.Value) any {
	if !v.Present {
		return nil
	}
	switch v.Type {
	case topology.TypeInt64:
		return v.Int
	case topology.TypeDouble:
		return v.Float
	case topology.TypeString:
		return v.Str
	case topology.TypeStringList:
		return v.List
	}
	// A value type newer than this command: all of it.
	return v
}

func (r *inspectReport) writeText(w io.Writer) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "%s, features as of %s\n", r.Source, r.AsOf.UTC().Format(time.RFC3339Nano))
	for _, e := range r.Entities {
		fmt.Fprintf(ew, "\n%s", e.Entity)
		if !e.Found {
			fmt.Fprintln(ew, ": not found")
			continue
		}
		if e.Key != "" {
			fmt.Fprintf(ew, "  (key %s)", e.Key)
		}
		fmt.Fprintln(ew)
		var head []string
		if e.Partition != nil {
			head = append(head, fmt.Sprintf("partition %d", *e.Partition))
		}
		if e.Version != nil {
			head = append(head, fmt.Sprintf("version %d", *e.Version))
		}
		head = append(head, "generation "+e.Generation)
		if e.LastEvent != nil {
			head = append(head, "last event "+e.LastEvent.Format(time.RFC3339Nano))
		}
		if e.Written != nil {
			head = append(head, "written "+e.Written.Format(time.RFC3339Nano))
		}
		if e.Restoring != nil && *e.Restoring {
			head = append(head, "PARTITION RESTORING (served as STALE)")
		}
		if e.EncodedBytes > 0 {
			head = append(head, fmt.Sprintf("%d bytes encoded", e.EncodedBytes))
		}
		fmt.Fprintf(ew, "  %s\n", strings.Join(head, ", "))
		if m := e.Meta; m != nil {
			maxEv := "none"
			if m.MaxEvent != nil {
				maxEv = m.MaxEvent.Format(time.RFC3339Nano)
			}
			fmt.Fprintf(ew, "  partition meta: changelog next %d, input next %d, sink next %d, max event %s\n",
				m.ChangelogNext, m.InputNext, m.SinkNext, maxEv)
		}
		for _, f := range e.Features {
			window := f.Window
			if f.Tile != "" {
				window += " in " + f.Tile + " tiles"
			}
			val := "(no value)"
			switch {
			case !f.Stored:
				val = "(not stored: written under a spec without this feature)"
			case f.Present:
				b, _ := json.Marshal(f.Value)
				val = "= " + string(b)
			}
			covered := ""
			if f.WindowStart != nil && f.WindowEnd != nil {
				covered = fmt.Sprintf("  [%s, %s]", f.WindowStart.Format(time.RFC3339), f.WindowEnd.Format(time.RFC3339Nano))
			}
			fmt.Fprintf(ew, "  %-20s %-8s %-24s %s%s\n", f.Name, f.Agg, window, val, covered)
			for _, t := range f.Tiles {
				start := "lifetime"
				if t.Start != nil {
					start = t.Start.Format(time.RFC3339)
				}
				line := fmt.Sprintf("    tile %-20s count %d", start, t.Count)
				if t.Num != 0 {
					line += fmt.Sprintf("  num %g", t.Num)
				}
				for j, it := range t.Items {
					if j == 0 {
						line += "  items"
					}
					line += fmt.Sprintf(" %s@%s", it.Value, it.Time.Format(time.RFC3339Nano))
				}
				fmt.Fprintln(ew, line)
			}
		}
	}
	return ew.err
}

// errWriter keeps the first write error, so writeText checks once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
