package freelist

import (
	"sync"
	"testing"
)

func TestList(t *testing.T) {
	var l List[int]
	if l.Get() != nil {
		t.Fatal("an empty List gave a value")
	}
	a, b := new(int), new(int)
	l.Put(a)
	l.Put(nil)
	l.Put(b)
	for _, want := range []*int{b, a, nil} {
		if got := l.Get(); got != want {
			t.Fatalf("Get = %p, want %p", got, want)
		}
	}
}

// TestNoAllocationsWarm: taking and giving back allocates nothing once
// the List holds what was taken at once, also under -race, where
// sync.Pool would drop values.
func TestNoAllocationsWarm(t *testing.T) {
	var l List[[64]byte]
	l.Put(new([64]byte))
	l.Put(new([64]byte))
	if n := testing.AllocsPerRun(1000, func() {
		a, b := l.Get(), l.Get()
		if a == nil || b == nil {
			t.Fatal("a value given back was lost")
		}
		l.Put(a)
		l.Put(b)
	}); n != 0 {
		t.Errorf("Get and Put allocate %v times per run, want 0", n)
	}
}

func TestConcurrent(t *testing.T) {
	var l List[int]
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				v := l.Get()
				if v == nil {
					v = new(int)
				}
				*v = i
				l.Put(v)
			}
		}()
	}
	wg.Wait()
	n := 0
	for l.Get() != nil {
		n++
	}
	if n < 1 || n > 8 {
		t.Errorf("the List holds %d values after 8 goroutines, want 1 to 8", n)
	}
}
