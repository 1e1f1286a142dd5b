// Package telemetry wires an edge to OpenTelemetry: Setup installs a TracerProvider configured
// by the standard OTEL_* environment variables (nothing, i.e. zero cost, when no exporter is
// configured), and MetricsHandler serves the edge's counters in Prometheus format.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// Shutdown flushes and stops what Setup installed. It is never nil.
type Shutdown func(context.Context) error

// Setup installs otel's global TracerProvider and W3C propagator from the environment:
//
//   - OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none: nothing is installed (no-op).
//   - OTEL_TRACES_EXPORTER=otlp, or unset with OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set: an OTLP/HTTP exporter (otlptracehttp reads the
//     other OTEL_EXPORTER_OTLP_* variables: headers, timeout, compression, insecure).
//   - otherwise nothing is installed: tracing is off and costs nothing.
//
// The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (always_on, always_off,
// traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio);
// the default is parentbased_traceidratio with the ratio from OTEL_TRACES_SAMPLER_ARG, 0.01
// when unset. The service name is OTEL_SERVICE_NAME, else service; OTEL_RESOURCE_ATTRIBUTES
// adds attributes. Call the returned Shutdown before exit to flush the last spans.
func Setup(ctx context.Context, service string) (Shutdown, error) {
	none := func(context.Context) error { return nil }
	if b, _ := strconv.ParseBool(os.Getenv("OTEL_SDK_DISABLED")); b {
		return none, nil
	}
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	exp := strings.TrimSpace(strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER")))
	switch exp {
	case "":
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return none, nil
		}
	case "none":
		return none, nil
	case "otlp":
	default:
		return none, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=%q: only otlp and none are supported", exp)
	}
	if p := os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		return none, fmt.Errorf("telemetry: OTEL_EXPORTER_OTLP_PROTOCOL=%q: only http/protobuf is supported", p)
	}
	sampler, err := SamplerFromEnv()
	if err != nil {
		return none, err
	}
	exporter, err := otlptracehttp.New(ctx)
	if err != nil {
		return none, fmt.Errorf("telemetry: otlp exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost(),
		resource.WithAttributes(semconv.ServiceName(serviceName(service))))
	if err != nil && res == nil {
		return none, fmt.Errorf("telemetry: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res), sdktrace.WithSampler(sampler))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

func serviceName(def string) string {
	if s := os.Getenv("OTEL_SERVICE_NAME"); s != "" {
		return s
	}
	return def
}

// DefaultRatio is the sampling ratio when OTEL_TRACES_SAMPLER_ARG is unset.
const DefaultRatio = 0.01

// SamplerFromEnv returns the sampler named by OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG;
// parentbased_traceidratio at DefaultRatio when unset.
func SamplerFromEnv() (sdktrace.Sampler, error) {
	name := strings.TrimSpace(strings.ToLower(os.Getenv("OTEL_TRACES_SAMPLER")))
	ratio := DefaultRatio
	if a := strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER_ARG")); a != "" {
		r, err := strconv.ParseFloat(a, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("telemetry: OTEL_TRACES_SAMPLER_ARG=%q: want a ratio in [0, 1]", a)
		}
		ratio = r
	}
	switch name {
	case "", "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	}
	return nil, errors.New("telemetry: OTEL_TRACES_SAMPLER=" + strconv.Quote(name) + ": unsupported sampler")
}
