package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
)

func TestSetupWithoutExporterIsNoop(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	before := otel.GetTracerProvider()
	shutdown, err := Setup(context.Background(), "edge")
	if err != nil {
		t.Fatal(err)
	}
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if otel.GetTracerProvider() != before {
		t.Fatal("a tracer provider was installed without an exporter")
	}
}

func TestSetupRejectsUnknownExporter(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	if _, err := Setup(context.Background(), "edge"); err == nil {
		t.Fatal("no error for an unsupported exporter")
	}
}

func TestSamplerFromEnv(t *testing.T) {
	for _, c := range []struct{ name, arg, want string }{
		{"", "", "ParentBased{root:TraceIDRatioBased{0.01}"},
		{"parentbased_traceidratio", "0.5", "ParentBased{root:TraceIDRatioBased{0.5}"},
		{"traceidratio", "0.25", "TraceIDRatioBased{0.25}"},
		{"always_off", "", "AlwaysOffSampler"},
	} {
		t.Setenv("OTEL_TRACES_SAMPLER", c.name)
		t.Setenv("OTEL_TRACES_SAMPLER_ARG", c.arg)
		s, err := SamplerFromEnv()
		if err != nil {
			t.Fatal(err)
		}
		if d := s.Description(); len(d) < len(c.want) || d[:len(c.want)] != c.want {
			t.Errorf("%s/%s: %s, want %s…", c.name, c.arg, d, c.want)
		}
	}
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "2")
	if _, err := SamplerFromEnv(); err == nil {
		t.Error("no error for a ratio of 2")
	}
	t.Setenv("OTEL_TRACES_SAMPLER", "bogus")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "")
	if _, err := SamplerFromEnv(); err == nil {
		t.Error("no error for an unknown sampler")
	}
}
