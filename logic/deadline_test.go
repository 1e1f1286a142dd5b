package logic

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

// TestDeadlineCtx: the frame ctx behaves as context.WithDeadline on a never-ending parent,
// whether or not anything waits on Done, and its children and AfterFuncs end with it.
func TestDeadlineCtx(t *testing.T) {
	parent := context.WithoutCancel(context.WithValue(context.Background(), ctxKey{}, "v"))

	t.Run("ErrWithoutDone", func(t *testing.T) {
		ctx, cancel := withDeadline(parent, time.Now().Add(20*time.Millisecond))
		defer cancel()
		if ctx.Err() != nil || ctx.Value(ctxKey{}) != "v" {
			t.Fatalf("fresh: err %v, value %v", ctx.Err(), ctx.Value(ctxKey{}))
		}
		if d, ok := ctx.Deadline(); !ok || d != ctx.deadline {
			t.Fatalf("Deadline() = %v, %v", d, ok)
		}
		waitFor(t, func() bool { return ctx.Err() != nil })
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			t.Fatalf("after the deadline: err %v, cause %v", ctx.Err(), context.Cause(ctx))
		}
		select {
		case <-ctx.Done():
		default:
			t.Fatal("Err is set but Done is open")
		}
		cancel() // no effect after the deadline
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("cancel after the deadline: %v", ctx.Err())
		}
	})
	t.Run("DoneFiresAtDeadline", func(t *testing.T) {
		ctx, cancel := withDeadline(parent, time.Now().Add(20*time.Millisecond))
		defer cancel()
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Done not closed after the deadline")
		}
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("err %v", ctx.Err())
		}
	})
	t.Run("Cancel", func(t *testing.T) {
		ctx, cancel := withDeadline(parent, time.Now().Add(time.Hour))
		done := ctx.Done()
		cancel()
		<-done
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("err %v", ctx.Err())
		}
		ctx2, cancel2 := withDeadline(parent, time.Now().Add(time.Hour))
		cancel2() // before anyone asked for Done
		<-ctx2.Done()
		if !errors.Is(ctx2.Err(), context.Canceled) {
			t.Fatalf("err %v", ctx2.Err())
		}
	})
	t.Run("Children", func(t *testing.T) {
		ctx, cancel := withDeadline(parent, time.Now().Add(time.Hour))
		child, cancelChild := context.WithTimeout(ctx, time.Hour)
		defer cancelChild()
		ran := make(chan struct{})
		context.AfterFunc(ctx, func() { close(ran) })
		stopped := false
		stop := context.AfterFunc(ctx, func() { stopped = true })
		if !stop() {
			t.Fatal("stop of a pending AfterFunc reported false")
		}
		if stop() {
			t.Fatal("second stop reported true")
		}
		cancel()
		<-child.Done()
		<-ran
		if !errors.Is(child.Err(), context.Canceled) || stopped {
			t.Fatalf("child err %v, stopped func ran %v", child.Err(), stopped)
		}
		late := make(chan struct{})
		context.AfterFunc(ctx, func() { close(late) }) // after the end: runs at once
		<-late
	})
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
