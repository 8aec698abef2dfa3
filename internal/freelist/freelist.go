package freelist

import "sync"

// List holds values of type *T for reuse. The zero value is an empty
// List; it is safe for concurrent use and must not be copied after first
// use.
type List[T any] struct {
	mu   sync.Mutex
	free []*T
}

// Get returns a value given back by Put, or nil when none is left.
func (l *List[T]) Get() *T {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.free)
	if n == 0 {
		return nil
	}
	v := l.free[n-1]
	l.free[n-1] = nil
	l.free = l.free[:n-1]
	return v
}

// Put gives v back for a later Get. A nil v is ignored.
func (l *List[T]) Put(v *T) {
	if v == nil {
		return
	}
	l.mu.Lock()
	l.free = append(l.free, v)
	l.mu.Unlock()
}
