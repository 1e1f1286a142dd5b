// Package report turns wsload JSON results into the side-by-side comparison: a markdown table
// per scenario and PNG charts (per-connection memory, deliveries per CPU-second, latency
// distributions), written next to the results.
package report

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/switchboard-io/switchboard/loadtest/internal/load"
)

// Load reads every *.json result in dir, ordered by scenario then label.
func Load(dir string) ([]*load.Result, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var out []*load.Result
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		var r load.Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("report: %s: %w", p, err)
		}
		if r.Scenario == "" {
			continue
		}
		out = append(out, &r)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Scenario != out[j].Scenario {
			return scenarioOrder(out[i].Scenario) < scenarioOrder(out[j].Scenario)
		}
		return out[i].Label < out[j].Label
	})
	return out, nil
}

func scenarioOrder(s string) int {
	return strings.Index("idle fanout chat storm reconnect", s)
}

// Table renders the markdown tables, one per scenario present.
func Table(rs []*load.Result) string {
	var b strings.Builder
	by := group(rs)
	for _, sc := range []string{load.ScenarioIdle, load.ScenarioFanout, load.ScenarioChat, load.ScenarioStorm, load.ScenarioReconnect} {
		g := by[sc]
		if len(g) == 0 {
			continue
		}
		fmt.Fprintf(&b, "### %s\n\n", sc)
		switch sc {
		case load.ScenarioIdle:
			b.WriteString("| system | connected / asked | failed | dropped | RSS (MiB) | RSS per conn (B) | CPU % | CPU-s/s per 100k conns |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
			for _, r := range g {
				t := target(r)
				fmt.Fprintf(&b, "| %s | %d / %d | %d | %d | %.1f | %.0f | %.1f | %.3f |\n", r.Label, r.Connected,
					r.Requested, r.Failed, r.Dropped, mib(t.RSSBytes), t.RSSPerConnB, t.CPUPct, t.CPUPer100kConn)
			}
		case load.ScenarioFanout:
			b.WriteString("| system | members | msgs sent | deliveries / expected | loss % | p50 ms | p99 ms | p99.9 ms | target CPU-s | deliveries per CPU-s |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
			for _, r := range g {
				t := target(r)
				fmt.Fprintf(&b, "| %s | %d | %d | %d / %d | %.3f | %.2f | %.2f | %.2f | %.2f | %.0f |\n", r.Label,
					max(r.Connected-int64(max(r.Params.Publishers, 1)), 0), r.Sent, r.Received, r.Expected, r.LossPct, r.Latency.P50Ms,
					r.Latency.P99Ms, r.Latency.P999Ms, t.CPUSeconds, t.DeliveriesPerCPUSecond)
			}
		case load.ScenarioChat:
			b.WriteString("| system | pairs | sent | round trips | loss % | RTT p50 ms | p99 ms | p99.9 ms | target CPU-s | messages per CPU-s |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
			for _, r := range g {
				t := target(r)
				fmt.Fprintf(&b, "| %s | %d | %d | %d | %.3f | %.2f | %.2f | %.2f | %.2f | %.0f |\n", r.Label,
					r.Connected/2, r.Sent, r.Received, r.LossPct, r.Latency.P50Ms, r.Latency.P99Ms,
					r.Latency.P999Ms, t.CPUSeconds, 2*t.DeliveriesPerCPUSecond)
			}
		case load.ScenarioStorm:
			b.WriteString("| system | connected / asked | failed | all connected (ms) | handshake p50 ms | p99 ms | target CPU-s | handshakes per CPU-s |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
			for _, r := range g {
				t := target(r)
				fmt.Fprintf(&b, "| %s | %d / %d | %d | %.0f | %.2f | %.2f | %.2f | %.0f |\n", r.Label, r.Connected,
					r.Requested, r.Failed, r.AllConnectedMs, r.Latency.P50Ms, r.Latency.P99Ms, t.CPUSeconds,
					t.HandshakesPerCPUSecond)
			}
		case load.ScenarioReconnect:
			b.WriteString("| system | clients | dropped | reconnected | failed redials | all back (ms) | drop→welcome p50 ms | p99 ms | new process CPU-s | handshakes per CPU-s |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
			for _, r := range g {
				t := target(r)
				fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %.0f | %.2f | %.2f | %.2f | %.0f |\n", r.Label, r.Connected,
					r.Dropped, r.Reconnected, r.Failed, r.AllConnectedMs, r.Latency.P50Ms, r.Latency.P99Ms,
					t.CPUSeconds, t.HandshakesPerCPUSecond)
			}
		}
		b.WriteString("\n")
		for _, r := range g {
			if n := errorNote(r); n != "" {
				fmt.Fprintf(&b, "- %s: %s\n", r.Label, n)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// errorNote lists a result's most frequent errors, and flags a run where nothing arrived.
func errorNote(r *load.Result) string {
	type kv struct {
		k string
		v int64
	}
	var es []kv
	for k, v := range r.Errors {
		es = append(es, kv{k, v})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].v > es[j].v })
	if len(es) > 3 {
		es = es[:3]
	}
	var parts []string
	if r.LoadAvg[0] != "" {
		parts = append(parts, fmt.Sprintf("loadavg %s → %s", r.LoadAvg[0], r.LoadAvg[1]))
	}
	if r.Sent > 0 && r.Received == 0 {
		parts = append(parts, "**nothing delivered**")
	}
	for _, e := range es {
		parts = append(parts, fmt.Sprintf("`%s` × %d", e.k, e.v))
	}
	return strings.Join(parts, "; ")
}

// Charts writes the PNG charts into dir and returns their file names.
func Charts(rs []*load.Result, dir string) ([]string, error) {
	by := group(rs)
	var names []string
	add := func(name string, p *plot.Plot, err error) error {
		if err != nil {
			return err
		}
		if p == nil {
			return nil
		}
		if err := p.Save(7*vg.Inch, 4*vg.Inch, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("report: %s: %w", name, err)
		}
		names = append(names, name)
		return nil
	}
	bars := []struct {
		file, scenario, title, unit string
		v                           func(*load.Result) float64
	}{
		{"idle-rss-per-conn.png", load.ScenarioIdle, "idle: target RSS per connection", "bytes per connection",
			func(r *load.Result) float64 { return target(r).RSSPerConnB }},
		{"fanout-deliveries-per-cpu-second.png", load.ScenarioFanout, "fanout: deliveries per target CPU-second",
			"deliveries / CPU-s", func(r *load.Result) float64 { return target(r).DeliveriesPerCPUSecond }},
		{"storm-handshakes-per-cpu-second.png", load.ScenarioStorm, "storm: handshakes per target CPU-second",
			"handshakes / CPU-s", func(r *load.Result) float64 { return target(r).HandshakesPerCPUSecond }},
	}
	for _, c := range bars {
		p, err := barChart(by[c.scenario], c.title, c.unit, c.v)
		if err := add(c.file, p, err); err != nil {
			return names, err
		}
	}
	lat := []struct{ file, scenario, title string }{
		{"fanout-latency.png", load.ScenarioFanout, "fanout: delivery latency distribution"},
		{"chat-rtt.png", load.ScenarioChat, "chat: round-trip latency distribution"},
		{"storm-handshake-latency.png", load.ScenarioStorm, "storm: dial → welcome latency distribution"},
		{"reconnect-latency.png", load.ScenarioReconnect, "reconnect: drop → welcome latency after a restart"},
	}
	for _, c := range lat {
		p, err := latencyChart(by[c.scenario], c.title)
		if err := add(c.file, p, err); err != nil {
			return names, err
		}
	}
	return names, nil
}

func barChart(rs []*load.Result, title, unit string, v func(*load.Result) float64) (*plot.Plot, error) {
	var vals plotter.Values
	var labels []string
	for _, r := range rs {
		if r.Target == nil {
			continue // no target figures, nothing honest to draw
		}
		vals = append(vals, v(r))
		labels = append(labels, r.Label)
	}
	if len(vals) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = unit
	bc, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return nil, fmt.Errorf("report: %s: %w", title, err)
	}
	bc.Color = plotutil.Color(0)
	p.Add(bc)
	p.NominalX(labels...)
	// The value above each bar, so the chart reads without the table.
	xyl := plotter.XYLabels{XYs: make(plotter.XYs, len(vals)), Labels: make([]string, len(vals))}
	for i, v := range vals {
		xyl.XYs[i] = plotter.XY{X: float64(i), Y: v}
		xyl.Labels[i] = fmt.Sprintf("%.0f", v)
	}
	lb, err := plotter.NewLabels(xyl)
	if err != nil {
		return nil, fmt.Errorf("report: %s: %w", title, err)
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i].XAlign = -0.5 // centred on the bar
		lb.TextStyle[i].YAlign = 0    // above the value
	}
	p.Add(lb)
	p.Y.Max *= 1.1
	return p, nil
}

// latencyChart draws percentile curves: x is the percentile on a "nines" scale
// (-log10(1-p/100): 50 → 0.3, 99 → 2, 99.9 → 3), y the latency in ms.
func latencyChart(rs []*load.Result, title string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "ms"
	var ticks []plot.Tick
	for _, pc := range []float64{50, 90, 99, 99.9, 99.99} {
		ticks = append(ticks, plot.Tick{Value: nines(pc), Label: fmt.Sprintf("p%g", pc)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Legend.Top = true
	p.Legend.Left = true
	n := 0
	for i, r := range rs {
		var xys plotter.XYs
		for _, pt := range r.Latency.Percentiles {
			if pt.Percentile >= 100 || pt.Percentile < 50 {
				continue
			}
			xys = append(xys, plotter.XY{X: nines(pt.Percentile), Y: pt.Ms})
		}
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return nil, fmt.Errorf("report: %s: %w", title, err)
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(2)
		p.Add(l)
		p.Legend.Add(r.Label, l)
		n++
	}
	if n == 0 {
		return nil, nil
	}
	return p, nil
}

func nines(pc float64) float64 { return -math.Log10(1 - pc/100) }

func group(rs []*load.Result) map[string][]*load.Result {
	m := map[string][]*load.Result{}
	for _, r := range rs {
		m[r.Scenario] = append(m[r.Scenario], r)
	}
	return m
}

func target(r *load.Result) load.TargetStats {
	if r.Target == nil {
		return load.TargetStats{}
	}
	return *r.Target
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// PulsarBaseline renders pulsarping's result (raw JSON) and the chat goal derived from it.
func PulsarBaseline(raw []byte) string {
	var r struct {
		URL      string  `json:"url"`
		Sent     int64   `json:"sent"`
		Received int64   `json:"received"`
		Rate     float64 `json:"rate"`
		Size     int     `json:"size"`
		P50Ms    float64 `json:"p50_ms"`
		P99Ms    float64 `json:"p99_ms"`
		P999Ms   float64 `json:"p999_ms"`
		MaxMs    float64 `json:"max_ms"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Sprintf("### Pulsar baseline\n\nunreadable: %v\n\n", err)
	}
	var b strings.Builder
	b.WriteString("### Pulsar baseline (publish → consume, no batching)\n\n")
	b.WriteString("| broker | messages | rate/s | size B | p50 ms | p99 ms | p99.9 ms | max ms |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| %s | %d / %d | %.0f | %d | %.2f | %.2f | %.2f | %.2f |\n\n", r.URL, r.Received, r.Sent,
		r.Rate, r.Size, r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs)
	fmt.Fprintf(&b, "Chat goal through Pulsar (cluster): round trip p50 ≤ 2 × %.2f + 2 = %.2f ms, p99 ≤ 30 ms.\n\n",
		r.P50Ms, 2*r.P50Ms+2)
	return b.String()
}
