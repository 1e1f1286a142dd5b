package admin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic"
	"github.com/switchboard-io/switchboard/logic/admin"
	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/logictest"
	"github.com/switchboard-io/switchboard/logic/plugins/echo"
)

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := httptestClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

var httptestClient = &http.Client{Timeout: 10 * time.Second}

// value returns the sample of the series whose line starts with prefix (name and labels as
// written by the exporter; labels are sorted), or -1 when absent.
func value(body, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// transient fails its first delivery transiently, so the frame comes back once.
type flaky struct{}

func (flaky) Name() string { return "flaky" }
func (flaky) Init(h *logic.Host) error {
	h.Handle("flaky.do", func(_ context.Context, c *logic.Context) error {
		if c.Redeliveries == 0 {
			return logic.Transient(io.ErrUnexpectedEOF)
		}
		c.Reply(nil)
		return nil
	})
	return nil
}

func TestMetrics(t *testing.T) {
	m, err := admin.NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m)
	defer srv.Close()
	before := scrape(t, srv.URL)
	if !strings.Contains(before, "go_goroutines") || strings.Contains(before, "sb_logic_frames_total") {
		t.Fatalf("before SetSource: %s", before)
	}

	b, err := bus.NewMemory(bus.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() }) // after the harness's cleanup (LIFO)
	h := logictest.New(t, logic.Config{Bus: m.InstrumentBus(b), Plugins: []logic.Plugin{echo.Plugin{}, flaky{}},
		Middleware: []logic.Middleware{m.Middleware()}})
	m.SetSource(h.Runtime)
	logictest.Eventually(t, "ready", func() bool { return value(scrape(t, srv.URL), "sb_logic_ready") == 1 })

	e := h.Edge("e1")
	c := e.Connect("alice", nil)
	e.Send(c, echo.Type, "1", `"hi"`)
	e.ExpectReply(c, "1")
	e.Send(c, "no.such", "2", "")
	e.ExpectReply(c, "2")
	e.Send(c, "flaky.do", "3", "")
	e.ExpectReply(c, "3")

	want := map[string]float64{
		"sb_logic_frames_total":       5, // connect + 4 deliveries of 3 frames
		"sb_logic_error_frames_total": 1,
		"sb_logic_nacks_total":        1,
		`sb_logic_handler_duration_seconds_count{outcome="ok",type="echo"}`:            1,
		`sb_logic_handler_duration_seconds_count{outcome="error",type="unknown"}`:      1,
		`sb_logic_handler_duration_seconds_count{outcome="transient",type="flaky.do"}`: 1,
		`sb_logic_handler_duration_seconds_count{outcome="ok",type="flaky.do"}`:        1,
		`sb_logic_redeliveries_total{type="flaky.do"}`:                                 1,
	}
	// The replies may overtake the middleware's record (publishes are asynchronous): poll.
	var body string
	deadline := time.Now().Add(logictest.Timeout)
	for {
		body = scrape(t, srv.URL)
		bad := ""
		for series, w := range want {
			if got := value(body, series); got != w {
				bad += fmt.Sprintf("\n%s = %v, want %v", series, got, w)
			}
		}
		if bad == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("series:%s\n%s", bad, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := value(body, `sb_logic_bus_publish_duration_seconds_count{result="ok"}`); got < 3 {
		t.Errorf("bus publishes = %v", got)
	}
	if got := value(body, "sb_logic_published_total"); got < 3 {
		t.Errorf("published = %v", got)
	}
	if t.Failed() {
		t.Log(body)
	}
}

// TestMetricsTypeCap: clients cannot grow the type label set without bound.
func TestMetricsTypeCap(t *testing.T) {
	m, err := admin.NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	h := m.Middleware()(func(context.Context, *logic.Context) error { return nil })
	for i := range 300 {
		_ = h(context.Background(), &logic.Context{Type: fmt.Sprintf("t%d", i)})
	}
	srv := httptest.NewServer(m)
	defer srv.Close()
	body := scrape(t, srv.URL)
	if got := value(body, `sb_logic_handler_duration_seconds_count{outcome="ok",type="other"}`); got != 300-256 {
		t.Fatalf("other = %v", got)
	}
	if n := strings.Count(body, "sb_logic_handler_duration_seconds_count{"); n != 257 {
		t.Fatalf("%d type series", n)
	}
}
