package sources

import (
	"fmt"
	"sync/atomic"

	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// DefaultMetadataLimit is the memory an image's metadata may take when the
// user sets no limit (--metadata-limit): tables kept in memory across all
// extents, parents and backing files of one device, and the indexes of
// compressed images.
const DefaultMetadataLimit = 256 << 20

// Budget bounds the memory that the metadata of one device's images takes,
// whatever their headers claim: formats charge every table they keep in
// memory before allocating it, and an image that needs more than the limit
// is refused at open. A Budget is safe for concurrent use. A nil *Budget
// charges nothing and refuses nothing (for tests of other things).
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a Budget of limit bytes (DefaultMetadataLimit if limit
// is 0 or less).
func NewBudget(limit int64) *Budget {
	if limit <= 0 {
		limit = DefaultMetadataLimit
	}
	return &Budget{limit: limit}
}

// BudgetError is the error of Budget.Charge.
type BudgetError struct {
	What  string // what would have been allocated
	Need  int64  // bytes asked for
	Used  int64  // bytes charged before
	Limit int64
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("%s needs %s of memory, beyond the metadata limit of %s (%s charged already; raise it with --metadata-limit if the image is trusted)",
		e.What, bytesize.Words(e.Need), bytesize.Words(e.Limit), bytesize.Words(e.Used))
}

// Charge takes n bytes from the budget for what (e.g. "the L1 table of
// base.qcow2"), or returns a *BudgetError and takes nothing if that would
// exceed the limit. n < 0 is refused as well.
func (b *Budget) Charge(n int64, what string) error {
	if b == nil {
		return nil
	}
	if n < 0 {
		return &BudgetError{What: what, Need: n, Used: b.used.Load(), Limit: b.limit}
	}
	for {
		used := b.used.Load()
		if n > b.limit-used {
			return &BudgetError{What: what, Need: n, Used: used, Limit: b.limit}
		}
		if b.used.CompareAndSwap(used, used+n) {
			return nil
		}
	}
}

// Release gives back n bytes charged earlier.
func (b *Budget) Release(n int64) {
	if b != nil {
		b.used.Add(-n)
	}
}

// Used returns the bytes charged and not released.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Limit returns the budget's limit.
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}
