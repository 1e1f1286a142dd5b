// Package procstat reads a process's resident memory and CPU time from /proc, so the load
// generator measures the system under test from the outside: the generator shares the
// machine's cores, so only the target's own counters tell what the target spent.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ErrFormat is returned when a /proc file does not parse.
var ErrFormat = errors.New("procstat: unexpected /proc format")

// clockTicks is USER_HZ; 100 on every Linux architecture Go supports.
const clockTicks = 100

// Sample is one reading of a process.
type Sample struct {
	PID      int
	RSSBytes int64         // VmRSS
	CPU      time.Duration // utime + stime, all threads
	At       time.Time
}

// Read samples pid.
func Read(pid int) (Sample, error) {
	s := Sample{PID: pid, At: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("procstat: %w", err)
	}
	rss, err := parseVmRSS(status)
	if err != nil {
		return s, err
	}
	s.RSSBytes = rss
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("procstat: %w", err)
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return s, err
	}
	s.CPU = cpu
	return s, nil
}

// ReadAll samples every pid and returns the sum (RSS and CPU added up).
func ReadAll(pids []int) (Sample, error) {
	var total Sample
	total.At = time.Now()
	for _, pid := range pids {
		s, err := Read(pid)
		if err != nil {
			return total, err
		}
		total.RSSBytes += s.RSSBytes
		total.CPU += s.CPU
	}
	return total, nil
}

func parseVmRSS(status []byte) (int64, error) {
	i := bytes.Index(status, []byte("VmRSS:"))
	if i < 0 {
		return 0, fmt.Errorf("%w: no VmRSS", ErrFormat)
	}
	line := status[i+len("VmRSS:"):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := bytes.Fields(line)
	if len(f) < 1 {
		return 0, fmt.Errorf("%w: VmRSS", ErrFormat)
	}
	kb, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: VmRSS: %v", ErrFormat, err)
	}
	return kb * 1024, nil
}

// parseStatCPU reads utime (field 14) and stime (field 15). The command name (field 2) may
// hold spaces and parentheses, so fields are counted after the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: stat", ErrFormat)
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14 → f[11], stime field 15 → f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: stat has %d fields", ErrFormat, len(f))
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%w: utime/stime", ErrFormat)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}
