// Command hub runs the naive baseline: a plain gorilla/websocket hub (see internal/naivehub).
//
//	hub -addr 127.0.0.1:8090
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchboard-io/switchboard/loadtest/internal/naivehub"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	path := flag.String("path", "/ws", "WebSocket path")
	secret := flag.String("jwt-secret", "", "require HS256 tokens (?token=) signed with this secret; serves /auth/dev-token")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	h := naivehub.New(naivehub.Config{Addr: *addr, Path: *path, Logger: log, JWTSecret: []byte(*secret)})
	if err := h.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
