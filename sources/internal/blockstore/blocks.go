package blockstore

// Get fills p (the block's length) with block b if the file holds it and
// it passes its check, and reports whether it did. A block that fails its
// check is dropped, counted and logged.
func (s *Store) Get(b int64, p []byte) bool {
	if b < 0 || b >= s.nblocks || int64(len(p)) != s.blockLen(b) {
		return false
	}
	s.mu.Lock()
	i, ok := s.slotOf[b]
	if !ok || s.slots[i].writing {
		s.mu.Unlock()
		return false
	}
	sl := &s.slots[i]
	sl.readers++
	sl.ref = true
	want := sl.crc
	s.mu.Unlock()
	_, err := s.f.ReadAt(p, s.dataOff+int64(i)*s.bs)
	good := err == nil && Sum(b, p) == want
	s.mu.Lock()
	sl.readers--
	if !good && s.slotOf[b] == i && !sl.writing {
		delete(s.slotOf, b)
		*sl = slot{block: -1}
		s.free = append(s.free, i)
	}
	s.mu.Unlock()
	if !good {
		s.corrupt.Add(1)
		s.logf("cache file %s: block %d (bytes %d-%d) failed its check: fetched again", s.name, b, b*s.bs, b*s.bs+int64(len(p))-1)
		return false
	}
	s.hits.Add(1)
	return true
}

// Reserve takes a slot for block b, which the caller then writes with
// Write and ends with Commit or Abort. It returns -1 when the block is
// held or being written already, when every slot is being read or
// written, or after a write failed.
func (s *Store) Reserve(b int64) int {
	if b < 0 || b >= s.nblocks || s.broken.Load() {
		return -1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.slotOf[b]; ok {
		return -1
	}
	for len(s.free) > 0 {
		i := s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		if sl := &s.slots[i]; sl.block < 0 && !sl.writing {
			*sl = slot{block: b, writing: true}
			s.slotOf[b] = i
			return int(i)
		}
	}
	for range 2 * len(s.slots) {
		i := s.hand
		s.hand = (s.hand + 1) % len(s.slots)
		sl := &s.slots[i]
		if sl.writing || sl.readers > 0 {
			continue
		}
		if sl.block >= 0 && sl.ref {
			sl.ref = false
			continue
		}
		if sl.block >= 0 {
			delete(s.slotOf, sl.block)
		}
		*sl = slot{block: b, writing: true}
		s.slotOf[b] = int32(i)
		return i
	}
	return -1
}

// Write writes p at off within the block of the reserved slot i. A
// failure stops the store's writes (the caller then Aborts).
func (s *Store) Write(i int, p []byte, off int64) bool {
	if i < 0 || i >= len(s.slots) || off < 0 || off+int64(len(p)) > s.bs {
		return false
	}
	if s.broken.Load() {
		return false
	}
	if _, err := s.f.WriteAt(p, s.dataOff+int64(i)*s.bs+off); err != nil {
		s.fail(err)
		return false
	}
	return true
}

// Commit records that the reserved slot i holds all n bytes of its
// block, whose Sum is crc.
func (s *Store) Commit(i int, n int64, crc uint32) {
	if i < 0 || i >= len(s.slots) {
		return
	}
	s.mu.Lock()
	b := s.slots[i].block
	s.mu.Unlock()
	if n != s.blockLen(b) || s.broken.Load() {
		s.Abort(i)
		return
	}
	var r [recordSize]byte
	record(&r, b, uint32(n), crc)
	if _, err := s.f.WriteAt(r[:], headerSize+int64(i)*recordSize); err != nil {
		s.fail(err)
		s.Abort(i)
		return
	}
	s.mu.Lock()
	s.slots[i] = slot{block: b, n: uint32(n), crc: crc, ref: true}
	s.mu.Unlock()
	s.stored.Add(1)
}

// Abort frees the reserved slot i: its block is not stored.
func (s *Store) Abort(i int) {
	if i < 0 || i >= len(s.slots) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := &s.slots[i]
	if !sl.writing {
		return
	}
	if j, ok := s.slotOf[sl.block]; ok && int(j) == i {
		delete(s.slotOf, sl.block)
	}
	*sl = slot{block: -1}
	s.free = append(s.free, int32(i))
}

// fail stops the store's writes, logging why once.
func (s *Store) fail(err error) {
	if s.broken.CompareAndSwap(false, true) {
		s.logf("cache file %s: writing: %v: no more blocks are stored there (reads of those it holds go on)", s.name, err)
	}
}
