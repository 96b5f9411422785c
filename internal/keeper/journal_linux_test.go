package keeper

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"
)

func openJournal(t *testing.T, path string, slots int) (*Journal, []Entry) {
	t.Helper()
	j, left, err := OpenJournal(path, slots)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j, left
}

func sortEntries(es []Entry) []Entry {
	es = slices.Clone(es)
	slices.SortFunc(es, func(a, b Entry) int {
		if a.Session != b.Session {
			return int(a.Session) - int(b.Session)
		}
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return es
}

func sameEntries(t *testing.T, got, want []Entry) {
	t.Helper()
	got, want = sortEntries(got), sortEntries(want)
	if !slices.Equal(got, want) {
		t.Fatalf("entries:\n got %+v\nwant %+v", got, want)
	}
}

func TestJournalRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, left := openJournal(t, path, 16)
	if len(left) != 0 {
		t.Fatalf("fresh journal has leftovers %+v", left)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != journalHeader+16*slotSize || fi.Mode().Perm() != 0o600 {
		t.Fatalf("journal file %v, %v", fi, err)
	}
	slots := map[uint64]int{}
	for id := uint64(1); id <= 6; id++ {
		s, ok := j.Record(testEntry(id))
		if !ok {
			t.Fatal("journal full")
		}
		slots[id] = s
	}
	if j.InUse() != 6 || j.Slots() != 16 {
		t.Errorf("InUse %d Slots %d", j.InUse(), j.Slots())
	}
	var want []Entry
	for id := uint64(1); id <= 6; id++ {
		if id%3 == 0 {
			j.Done(slots[id])
		} else {
			want = append(want, testEntry(id))
		}
	}
	j.Done(slots[3]) // twice: harmless
	j.Done(-1)
	j.Done(16)
	if j.InUse() != 4 {
		t.Errorf("InUse %d after Done, want 4", j.InUse())
	}
	// Another opener while we hold it.
	if _, _, err := OpenJournal(path, 16); !errors.Is(err, ErrJournalBusy) {
		t.Fatalf("second open: %v, want ErrJournalBusy", err)
	}
	j.Close() // as good as a crash: the entries are in the file
	if _, ok := j.Record(testEntry(99)); ok {
		t.Error("Record after Close succeeded")
	}
	j.Done(slots[1]) // after Close: nothing

	j2, left := openJournal(t, path, 16)
	sameEntries(t, left, want)
	if j2.InUse() != 4 {
		t.Errorf("InUse %d with 4 leftovers", j2.InUse())
	}
	// New entries go beside the leftovers; ClearAll frees only those.
	s, ok := j2.Record(testEntry(100))
	if !ok {
		t.Fatal("journal full")
	}
	j2.ClearAll()
	j2.ClearAll()
	if j2.InUse() != 1 {
		t.Errorf("InUse %d after ClearAll, want 1 (the new entry)", j2.InUse())
	}
	j2.Close()
	j3, left := openJournal(t, path, 16)
	sameEntries(t, left, []Entry{testEntry(100)})
	j3.ClearAll()
	_ = s
	j3.Close()
	_, left = openJournal(t, path, 16)
	if len(left) != 0 {
		t.Fatalf("leftovers after ClearAll: %+v", left)
	}
}

// TestJournalCrash: a real process records, is killed with SIGKILL, and
// the next opener gets exactly its un-Done entries.
func TestJournalCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	p := startProc(t, "journal", []string{envJournal + "=" + path})
	p.Expect("recorded")
	p.Kill()
	_, left := openJournal(t, path, 64)
	var want []Entry
	for id := uint64(1); id <= 10; id += 2 {
		want = append(want, testEntry(id))
	}
	sameEntries(t, left, want)
}

// slotAt is a slot of the file's bytes.
func slotAt(b []byte, i int) *slot {
	return (*slot)(unsafe.Pointer(&b[journalHeader+i*slotSize]))
}

// TestJournalTorn: entries whose write did not finish, or whose fields do
// not match their seal, are ignored and their slots freed.
func TestJournalTorn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, _ := openJournal(t, path, 4)
	s1, _ := j.Record(testEntry(1))
	s2, _ := j.Record(testEntry(2))
	s3, _ := j.Record(testEntry(3))
	j.Close()

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, journalHeader+4*slotSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	// Slot s2: killed after the claim, before the seal.
	slotAt(b, s2).state.Store(stateWriting)
	// Slot s3: a field changed after the seal (a write that tore the other
	// way round, or a stray one).
	slotAt(b, s3).args[2]++
	// A free slot with junk but state 0 stays free.
	free := 0
	for free == s1 || free == s2 || free == s3 {
		free++
	}
	slotAt(b, free).id = 12345
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}

	j2, left := openJournal(t, path, 4)
	sameEntries(t, left, []Entry{testEntry(1)})
	// The torn slots were freed: three more entries fit, then it is full.
	for id := uint64(10); id < 13; id++ {
		if _, ok := j2.Record(testEntry(id)); !ok {
			t.Fatalf("record %d: full, torn slots were not freed", id)
		}
	}
	if _, ok := j2.Record(testEntry(13)); ok {
		t.Fatal("record in a full journal succeeded")
	}
}

func TestJournalFull(t *testing.T) {
	j, _ := openJournal(t, filepath.Join(t.TempDir(), "journal"), 4)
	var slots []int
	for id := uint64(1); id <= 4; id++ {
		s, ok := j.Record(testEntry(id))
		if !ok {
			t.Fatalf("record %d of 4: full", id)
		}
		slots = append(slots, s)
	}
	if _, ok := j.Record(testEntry(5)); ok {
		t.Fatal("fifth record in 4 slots succeeded")
	}
	if j.InUse() != 4 {
		t.Errorf("InUse %d after a failed record", j.InUse())
	}
	j.Done(slots[2])
	s, ok := j.Record(testEntry(6))
	if !ok || s != slots[2] {
		t.Fatalf("record after Done: slot %d, %v; want the freed slot %d", s, ok, slots[2])
	}
}

// TestJournalConcurrent: many goroutines record and finish at once; no
// slot is handed out twice, and what is not Done at the "crash" is exactly
// what the next opener finds.
func TestJournalConcurrent(t *testing.T) {
	const workers, perWorker, slots = 16, 2000, 64
	path := filepath.Join(t.TempDir(), "journal")
	j, _ := openJournal(t, path, slots)
	var owner [slots]atomic.Int64 // 0 free, else worker+1
	var full atomic.Int64
	kept := make([][]Entry, workers)
	var wg sync.WaitGroup
	var bad atomic.Value
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			var mine []int // slots this worker holds
			for i := range perWorker {
				e := Entry{Session: uint64(w), ID: uint64(i), PID: uint32(w), Nr: int32(i), Args: [6]uint64{uint64(w), uint64(i)}}
				s, ok := j.Record(e)
				if !ok {
					full.Add(1)
				} else {
					if !owner[s].CompareAndSwap(0, int64(w+1)) {
						bad.Store(fmt.Sprintf("slot %d handed to worker %d while worker %d holds it", s, w, owner[s].Load()-1))
					}
					mine = append(mine, s)
				}
				// Hold up to 3 entries, finish a random one.
				for len(mine) > 3 || (len(mine) > 0 && rng.IntN(2) == 0) {
					k := rng.IntN(len(mine))
					s := mine[k]
					owner[s].Store(0)
					j.Done(s)
					mine = slices.Delete(mine, k, k+1)
				}
			}
			// Leave the last one in flight for the "crash".
			e := Entry{Session: uint64(w), ID: 1 << 32, PID: uint32(w), Nr: -1}
			if s, ok := j.Record(e); ok {
				mine = append(mine, s)
				_ = s
			}
			for _, s := range mine {
				if j.slots[s].session == uint64(w) && j.slots[s].id == 1<<32 {
					kept[w] = append(kept[w], e)
					continue
				}
				owner[s].Store(0)
				j.Done(s)
			}
		})
	}
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	t.Logf("%d records found the journal full", full.Load())
	var want []Entry
	for _, k := range kept {
		want = append(want, k...)
	}
	if j.InUse() != len(want) {
		t.Errorf("InUse %d, want %d", j.InUse(), len(want))
	}
	j.Close()
	_, left := openJournal(t, path, slots)
	sameEntries(t, left, want)
}

// TestJournalResize: a journal reopened with another size keeps its
// leftovers, and never shrinks below them.
func TestJournalResize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, _ := openJournal(t, path, 8)
	// Fill every slot, then keep only the entry in the highest one.
	bySlot := map[int]Entry{}
	for id := uint64(0); id < 8; id++ {
		s, ok := j.Record(testEntry(id))
		if !ok {
			t.Fatal("journal full")
		}
		bySlot[s] = testEntry(id)
	}
	for s := range 7 {
		j.Done(s)
	}
	want := []Entry{bySlot[7]}
	j.Close()

	j2, left := openJournal(t, path, 32) // grow
	sameEntries(t, left, want)
	if j2.Slots() != 32 {
		t.Errorf("grown to %d slots", j2.Slots())
	}
	j2.Close()
	j3, left := openJournal(t, path, 2) // shrink, but not below slot 7
	sameEntries(t, left, want)
	if j3.Slots() != 8 {
		t.Errorf("shrunk to %d slots, want 8 (slot 7 holds a leftover)", j3.Slots())
	}
	j3.ClearAll()
	j3.Close()
	j4, left := openJournal(t, path, 2)
	if len(left) != 0 || j4.Slots() != 2 {
		t.Errorf("after ClearAll: %d leftovers, %d slots", len(left), j4.Slots())
	}
	if fi, _ := os.Stat(path); fi.Size() != journalHeader+2*slotSize {
		t.Errorf("file of %d bytes", fi.Size())
	}
}

func TestJournalFormat(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	junk := make([]byte, 8192)
	copy(junk, "not a journal at all")
	if err := os.WriteFile(bad, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenJournal(bad, 8); !errors.Is(err, ErrJournalFormat) {
		t.Errorf("junk file: %v, want ErrJournalFormat", err)
	}
	if b, _ := os.ReadFile(bad); string(b[:20]) != "not a journal at all" {
		t.Error("junk file was overwritten")
	}
	// Empty, or a header never written (its creator died): fresh.
	for name, content := range map[string][]byte{"empty": nil, "zeros": make([]byte, 20000)} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		j, left := openJournal(t, p, 8)
		if len(left) != 0 || j.Slots() != 8 {
			t.Errorf("%s: %d leftovers, %d slots", name, len(left), j.Slots())
		}
	}
	if _, _, err := OpenJournal(filepath.Join(dir, "x"), 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("0 slots: %v", err)
	}
	if _, _, err := OpenJournal(filepath.Join(dir, "x"), MaxJournalSlots+1); !errors.Is(err, ErrInvalid) {
		t.Errorf("too many slots: %v", err)
	}
	// A valid header claiming more slots than the file has.
	short := filepath.Join(dir, "short")
	j, _ := openJournal(t, short, 8)
	j.Close()
	if err := os.Truncate(short, journalHeader+4*slotSize); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenJournal(short, 8); !errors.Is(err, ErrJournalFormat) {
		t.Errorf("truncated journal: %v, want ErrJournalFormat", err)
	}
}

// BenchmarkJournal measures Record+Done, the journal's cost per
// notification on slimd's connection path.
func BenchmarkJournal(b *testing.B) {
	j, _, err := OpenJournal(filepath.Join(b.TempDir(), "journal"), 4096)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	b.Run("serial", func(b *testing.B) {
		e := testEntry(1)
		for i := 0; b.Loop(); i++ {
			e.ID = uint64(i)
			s, ok := j.Record(e)
			if !ok {
				b.Fatal("full")
			}
			j.Done(s)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var sess atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			e := testEntry(1)
			e.Session = sess.Add(1)
			for pb.Next() {
				e.ID++
				s, ok := j.Record(e)
				if !ok {
					b.Fatal("full")
				}
				j.Done(s)
			}
		})
	})
}
