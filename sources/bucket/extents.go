package bucket

import "github.com/nbdloop/nbdloop/sources"

// Extents implements sources.Extenter: a chunk that reads as zeros
// without a GET (never written, trimmed, or all zeros, as the writer's
// record of stored chunks or the cache knows) is a hole; any other chunk
// is data. A read-only Source knows only the chunks it has cached, and
// reports the rest as data.
func (s *Source) Extents(off, length int64, fn func(sources.Extent) bool) error {
	if err := sources.CheckRange(off, length, s.size); err != nil {
		return err
	}
	end := off + length
	for off < end {
		kind, next, err := s.run(off, end)
		if err != nil {
			return err
		}
		if !fn(sources.Extent{Off: off, Length: next - off, Kind: kind}) {
			return nil
		}
		off = next
	}
	return nil
}

// run returns the kind of the chunk at off and where the run of chunks
// of that kind from it ends, at end at most. fn is called without s.mu
// held, so that it may call the Source.
func (s *Source) run(off, end int64) (sources.ExtentKind, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return 0, 0, eio(s.failed)
	}
	idx := off / s.osize
	kind := s.chunkKind(idx)
	next := min((idx+1)*s.osize, end)
	for next < end && s.chunkKind(next/s.osize) == kind {
		next = min(next+s.osize, end)
	}
	return kind, next, nil
}

// chunkKind is what chunk idx reads as without a GET. Called with s.mu
// held.
func (s *Source) chunkKind(idx int64) sources.ExtentKind {
	if e := s.cache.index[idx]; e != nil && !e.loading {
		if e.zero {
			return sources.ExtentHole
		}
		return sources.ExtentData
	}
	if s.stored != nil && !s.stored.has(idx) {
		return sources.ExtentHole
	}
	return sources.ExtentData
}
