// Command benchreport writes the side-by-side report of a bench-compare run: README.md with
// the methodology, one markdown table per scenario and links to PNG charts.
//
//	benchreport -raw results/2026-11-23/raw -out results/2026-11-23 -meta meta.md
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
