package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress draws a one-line bar on stderr, at most ten times a second.
type progress struct {
	w     io.Writer
	total int
	off   bool
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer, total int, off bool) *progress {
	return &progress{w: w, total: total, off: off, start: time.Now()}
}

func (p *progress) update(n int) {
	if p.off || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.draw(n)
}

func (p *progress) draw(n int) {
	const width = 30
	filled := width * n / max(p.total, 1)
	rate := float64(n) / max(time.Since(p.start).Seconds(), 1e-9)
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d %.0f msg/s", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), n, p.total, rate)
}

func (p *progress) done(n int) {
	if p.off {
		return
	}
	p.draw(n)
	fmt.Fprintln(p.w)
}
