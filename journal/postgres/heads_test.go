package postgres

import (
	"fmt"
	"testing"
)

func TestHeadCache(t *testing.T) {
	c := newHeadCache()
	c.saw("a", 5)
	c.saw("a", 3) // an older sighting never moves it back
	c.saw("b", 0)
	next := make([]int64, 3)
	unknown := c.lookUp([]string{"a", "b", "c"}, next)
	if fmt.Sprint(next[:2], unknown) != "[6 1] [2]" {
		t.Fatalf("lookUp: next %v, unknown %v; want [6 1] and [2]", next[:2], unknown)
	}
	c.forget([]string{"a"})
	if unknown := c.lookUp([]string{"a"}, next); len(unknown) != 1 {
		t.Fatal("a forgotten actor is still known")
	}
	for i := range maxCachedHeads + 10 {
		c.saw(fmt.Sprint("actor/", i), int64(i))
	}
	if n := len(c.m); n > maxCachedHeads {
		t.Fatalf("cache holds %d actors, more than %d", n, maxCachedHeads)
	}
}
