package cli

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"testing"
	"time"
)

func TestEnv(t *testing.T) {
	for _, c := range []struct {
		name       string
		s, d, i, b string // the variables' values
		wantS      string
		wantD      time.Duration
		wantI      int
		wantB      bool
	}{
		{name: "unset or malformed: defaults", s: "", d: "soon", i: "x", b: "maybe", wantS: "def", wantD: time.Second, wantI: 7},
		{name: "set", s: "v", d: "250ms", i: "-3", b: "true", wantS: "v", wantD: 250 * time.Millisecond, wantI: -3, wantB: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("SB_CLI_TEST_S", c.s)
			t.Setenv("SB_CLI_TEST_D", c.d)
			t.Setenv("SB_CLI_TEST_I", c.i)
			t.Setenv("SB_CLI_TEST_B", c.b)
			if got := Env("SB_CLI_TEST_S", "def"); got != c.wantS {
				t.Errorf("Env = %q, want %q", got, c.wantS)
			}
			if got := EnvDuration("SB_CLI_TEST_D", time.Second); got != c.wantD {
				t.Errorf("EnvDuration = %v, want %v", got, c.wantD)
			}
			if got := EnvInt("SB_CLI_TEST_I", 7); got != c.wantI {
				t.Errorf("EnvInt = %d, want %d", got, c.wantI)
			}
			if got := EnvBool("SB_CLI_TEST_B"); got != c.wantB {
				t.Errorf("EnvBool = %v, want %v", got, c.wantB)
			}
		})
	}
}

func TestParse(t *testing.T) {
	newFS := func() (*flag.FlagSet, *string) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		return fs, fs.String("addr", "a", "")
	}
	fs, addr := newFS()
	if err := Parse(fs, []string{"-addr", "b"}); err != nil || *addr != "b" {
		t.Fatalf("Parse = %v, addr %q; want nil, b", err, *addr)
	}
	fs, _ = newFS()
	if err := Parse(fs, []string{"extra"}); err == nil {
		t.Fatal("Parse with a positional argument: no error")
	}
	fs, _ = newFS()
	if err := Parse(fs, []string{"-help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse -help = %v, want flag.ErrHelp", err)
	}
}

func TestLogLevel(t *testing.T) {
	if LogLevel(false) != slog.LevelInfo || LogLevel(true) != slog.LevelDebug {
		t.Fatalf("LogLevel = %v/%v, want INFO/DEBUG", LogLevel(false), LogLevel(true))
	}
}
