package sources

import (
	"errors"
	"sync"
	"testing"
)

func TestBudget(t *testing.T) {
	b := NewBudget(1000)
	if err := b.Charge(600, "a"); err != nil {
		t.Fatal(err)
	}
	var be *BudgetError
	if err := b.Charge(401, "the L1 table"); !errors.As(err, &be) || be.Need != 401 || be.Used != 600 || be.Limit != 1000 {
		t.Fatalf("Charge over the limit = %v, want a BudgetError with the figures", err)
	}
	if err := b.Charge(-1, "negative"); err == nil {
		t.Fatal("a negative charge was taken")
	}
	if err := b.Charge(400, "b"); err != nil {
		t.Fatalf("Charge up to the limit: %v", err)
	}
	b.Release(1000)
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() { defer wg.Done(); _ = b.Charge(30, "c") }()
	}
	wg.Wait()
	if got := b.Used(); got != 990 {
		t.Fatalf("concurrent charges of 30 against 1000: used %d, want 990", got)
	}
	var nilBudget *Budget
	if err := nilBudget.Charge(1<<62, "x"); err != nil {
		t.Fatalf("a nil Budget refused: %v", err)
	}
	if got := NewBudget(0).Limit(); got != DefaultMetadataLimit {
		t.Fatalf("NewBudget(0).Limit() = %d", got)
	}
}
