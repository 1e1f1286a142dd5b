package procstat

import (
	"os"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	rss, err := parseVmRSS([]byte("Name:\tx\nVmRSS:\t  1234 kB\nThreads: 3\n"))
	if err != nil || rss != 1234*1024 {
		t.Fatalf("rss = %d, %v", rss, err)
	}
	stat := "42 (we ird) name) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0"
	cpu, err := parseStatCPU([]byte(stat))
	if err != nil || cpu != 4*time.Second {
		t.Fatalf("cpu = %v, %v", cpu, err)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Fatal("want error")
	}
}

func TestReadSelf(t *testing.T) {
	s, err := ReadAll([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSBytes <= 0 {
		t.Fatalf("rss %d", s.RSSBytes)
	}
}
