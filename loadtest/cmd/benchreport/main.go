// Command benchreport writes the side-by-side report of a bench-compare run: README.md with
// the methodology, one markdown table per scenario and links to PNG charts.
//
//	benchreport -raw results/2026-11-23/raw -out results/2026-11-23 -meta meta.md
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/switchboard-io/switchboard/loadtest/internal/report"
)

func main() {
	raw := flag.String("raw", "", "directory of wsload JSON results")
	out := flag.String("out", "", "output directory (README.md and PNGs)")
	meta := flag.String("meta", "", "markdown file included before the tables (methodology, commands)")
	title := flag.String("title", "Switchboard bench-compare", "report title")
	flag.Parse()
	if *raw == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "benchreport: -raw and -out are required")
		os.Exit(2)
	}
	if err := run(*raw, *out, *meta, *title); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(raw, out, meta, title string) error {
	rs, err := report.Load(raw)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	charts, err := report.Charts(rs, out)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", title)
	if meta != "" {
		m, err := os.ReadFile(meta)
		if err != nil {
			return err
		}
		b.Write(m)
		b.WriteString("\n")
	}
	b.WriteString("## Results\n\n")
	if len(rs) == 0 {
		b.WriteString("No results: every target was skipped (see the run log above).\n\n")
	}
	b.WriteString(report.Table(rs))
	if pb, err := os.ReadFile(filepath.Join(raw, "pulsar-baseline.json")); err == nil {
		b.WriteString(report.PulsarBaseline(pb))
	}
	if sec, err := edgeStats(raw); err != nil {
		return err
	} else {
		b.WriteString(sec)
	}
	if len(charts) > 0 {
		b.WriteString("## Charts\n\n")
		for _, c := range charts {
			fmt.Fprintf(&b, "![%s](%s)\n\n", strings.TrimSuffix(c, ".png"), c)
		}
	}
	rel, err := filepath.Rel(out, raw)
	if err != nil || strings.HasPrefix(rel, "..") {
		rel = raw
	}
	fmt.Fprintf(&b, "Raw results (wsload JSON, with HDR histograms): [`%s/`](%s/)\n", rel, rel)
	return os.WriteFile(filepath.Join(out, "README.md"), []byte(b.String()), 0o644)
}

// edgeHist is the part of an edge.Histogram the report reads (bounds in ns, counts per bucket,
// the last one above every bound).
type edgeHist struct {
	Bounds []int64
	Counts []uint64
	Sum    int64
	Count  uint64
}

// quantile is the upper bound of the bucket holding quantile q ("> last bound" above them).
func (h edgeHist) quantile(q float64) string {
	var acc uint64
	for i, c := range h.Counts {
		acc += c
		if float64(acc) >= q*float64(h.Count) {
			if i < len(h.Bounds) {
				return "≤ " + time.Duration(h.Bounds[i]).String()
			}
			return "> " + time.Duration(h.Bounds[len(h.Bounds)-1]).String()
		}
	}
	return "–"
}

// edgeStats renders the Switchboard edges' own counters saved next to the results
// (<target>-<scenario>.edgestats: the JSON of /debug/edge, fetched when the scenario ended).
func edgeStats(raw string) (string, error) {
	paths, err := filepath.Glob(filepath.Join(raw, "*.edgestats"))
	if err != nil || len(paths) == 0 {
		return "", err
	}
	sort.Strings(paths)
	var b strings.Builder
	b.WriteString("### Switchboard edge, its own view\n\n")
	b.WriteString("From the edge's counters (`/debug/edge`, read when the scenario ended). *Fanout time* is the\n")
	b.WriteString("time from the delivery reaching the edge (Dispatch) to a loop's last socket write of it, per\n")
	b.WriteString("room delivery and event loop (histogram buckets: upper bounds); *frames per write* is frames\n")
	b.WriteString("written ÷ write/writev calls on fanout (room chatter merged by -coalesce).\n\n")
	b.WriteString("| run | room deliveries × loops | fanout time mean | p50 | p99 | frames written | writes | frames per write |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		var st struct {
			FanoutLatency edgeHist
			Written       uint64
			Writes        uint64
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			return "", fmt.Errorf("%s: %w", p, err)
		}
		h := st.FanoutLatency
		mean := "–"
		if h.Count > 0 {
			mean = (time.Duration(h.Sum / int64(h.Count))).Round(100 * time.Microsecond).String()
		}
		per := "–"
		if st.Writes > 0 {
			per = fmt.Sprintf("%.2f", float64(st.Written)/float64(st.Writes))
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %d | %d | %s |\n", strings.TrimSuffix(filepath.Base(p), ".edgestats"),
			h.Count, mean, h.quantile(0.5), h.quantile(0.99), st.Written, st.Writes, per)
	}
	b.WriteString("\n")
	return b.String(), nil
}
