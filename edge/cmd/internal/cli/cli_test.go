package cli

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"testing"
	"time"
)

func TestEnvDefaults(t *testing.T) {
	t.Setenv("SB_CLI_TEST_S", "")
	t.Setenv("SB_CLI_TEST_D", "soon")
	t.Setenv("SB_CLI_TEST_I", "x")
	t.Setenv("SB_CLI_TEST_B", "maybe")
	if got := Env("SB_CLI_TEST_S", "def"); got != "def" {
		t.Errorf("Env empty = %q, want def", got)
	}
	if got := EnvDuration("SB_CLI_TEST_D", time.Second); got != time.Second {
		t.Errorf("EnvDuration bad = %v, want 1s", got)
	}
	if got := EnvInt("SB_CLI_TEST_I", 7); got != 7 {
		t.Errorf("EnvInt bad = %d, want 7", got)
	}
	if EnvBool("SB_CLI_TEST_B") {
		t.Error("EnvBool bad = true, want false")
	}
}

func TestEnvValues(t *testing.T) {
	t.Setenv("SB_CLI_TEST_S", "v")
	t.Setenv("SB_CLI_TEST_D", "250ms")
	t.Setenv("SB_CLI_TEST_I", "-3")
	t.Setenv("SB_CLI_TEST_B", "true")
	if got := Env("SB_CLI_TEST_S", "def"); got != "v" {
		t.Errorf("Env = %q, want v", got)
	}
	if got := EnvDuration("SB_CLI_TEST_D", time.Second); got != 250*time.Millisecond {
		t.Errorf("EnvDuration = %v, want 250ms", got)
	}
	if got := EnvInt("SB_CLI_TEST_I", 7); got != -3 {
		t.Errorf("EnvInt = %d, want -3", got)
	}
	if !EnvBool("SB_CLI_TEST_B") {
		t.Error("EnvBool = false, want true")
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
