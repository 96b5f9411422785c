package keeper

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The journal file layout (see the package doc).
const (
	journalMagic   = "SLIMJRNL"
	journalVersion = 1
	journalHeader  = 4096 // one page, so the slots start page-aligned
	slotSize       = 128  // two cache lines
	// MaxJournalSlots bounds the slots of a journal (16 MiB of file).
	MaxJournalSlots = 1 << 17
)

// Slot states. Anything else is a seal (bit 1 set).
const (
	stateFree    = 0
	stateWriting = 1
)

// header is the first 24 bytes of the file, in native byte order.
type header struct {
	magic    [8]byte
	version  uint32
	slotSize uint32
	slots    uint64
}

// slot is one journal entry as it sits in the mapped file.
type slot struct {
	state   atomic.Uint64 // free, writing, or the seal of the fields below
	session uint64
	id      uint64
	pid     uint32
	nr      int32
	arch    uint32
	_       uint32
	args    [6]uint64
	_       [slotSize - 88]byte
}

// The layout is the file format: a change here is a new journalVersion.
var _ [slotSize - unsafe.Sizeof(slot{})]byte
var _ [unsafe.Sizeof(slot{}) - slotSize]byte

// Journal is a file-backed record of the notifications in flight. Record
// and Done are safe for concurrent use; Close must not run concurrently
// with them.
type Journal struct {
	f     *os.File // holds the flock for as long as the journal is open
	mem   []byte
	slots []slot
	n     uint64
	shut  atomic.Bool

	mu        sync.Mutex
	leftovers []int // slots holding the predecessor's entries until ClearAll
}

// OpenJournal opens (or creates) the journal at path with room for slots
// entries, and returns the entries a predecessor left: notifications it
// had recorded and not marked Done when it died. They keep their slots
// until ClearAll. If another process has the journal open it returns
// ErrJournalBusy; a file that is not a journal of this version is
// ErrJournalFormat. A journal of another size is resized in place, never
// below what its leftovers occupy.
func OpenJournal(path string, slots int) (_ *Journal, _ []Entry, err error) {
	if slots < 1 || slots > MaxJournalSlots {
		return nil, nil, fmt.Errorf("journal of %d slots (1..%d): %w", slots, MaxJournalSlots, ErrInvalid)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("journal: %w", err)
	}
	j := &Journal{f: f}
	done := false
	defer func() {
		if !done {
			j.unmap()
			f.Close()
		}
	}()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil, fmt.Errorf("journal %s: %w", path, ErrJournalBusy)
		}
		return nil, nil, fmt.Errorf("journal %s lock: %w", path, err)
	}
	h, fresh, err := readHeader(f)
	if err != nil {
		return nil, nil, fmt.Errorf("journal %s: %w", path, err)
	}
	if fresh {
		if err := j.create(uint64(slots)); err != nil {
			return nil, nil, fmt.Errorf("journal %s: %w", path, err)
		}
		done = true
		return j, nil, nil
	}
	if err := j.mapSlots(h.slots); err != nil {
		return nil, nil, fmt.Errorf("journal %s: %w", path, err)
	}
	// We hold the lock: nobody writes. Keep sealed entries, free torn ones.
	var entries []Entry
	high := uint64(0)
	for i := range j.slots {
		s := &j.slots[i]
		st := s.state.Load()
		if st == stateFree {
			continue
		}
		if st != s.seal() {
			s.state.Store(stateFree) // torn: slimd died inside Record
			continue
		}
		entries = append(entries, s.entry())
		j.leftovers = append(j.leftovers, i)
		high = uint64(i) + 1
	}
	if want := max(uint64(slots), high); want != h.slots {
		if err := j.resize(want); err != nil {
			return nil, nil, fmt.Errorf("journal %s: %w", path, err)
		}
	}
	done = true
	return j, entries, nil
}

// readHeader reads and checks the header; fresh means an empty file or one
// whose header was never written (a creator died), to be initialized.
func readHeader(f *os.File) (header, bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return header{}, false, err
	}
	if fi.Size() < journalHeader {
		return header{}, true, nil
	}
	var b [24]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		return header{}, false, err
	}
	h := header{
		version:  binary.NativeEndian.Uint32(b[8:]),
		slotSize: binary.NativeEndian.Uint32(b[12:]),
		slots:    binary.NativeEndian.Uint64(b[16:]),
	}
	copy(h.magic[:], b[:8])
	if h == (header{}) {
		return header{}, true, nil
	}
	if string(h.magic[:]) != journalMagic || h.version != journalVersion || h.slotSize != slotSize ||
		h.slots < 1 || h.slots > MaxJournalSlots {
		return header{}, false, fmt.Errorf("header %q v%d slot size %d slots %d: %w",
			h.magic[:], h.version, h.slotSize, h.slots, ErrJournalFormat)
	}
	if fi.Size() < int64(journalHeader+h.slots*slotSize) {
		return header{}, false, fmt.Errorf("%d bytes, too short for %d slots: %w", fi.Size(), h.slots, ErrJournalFormat)
	}
	return h, false, nil
}

// create lays out a new journal: allocated and zeroed slots first, the
// header last, so a creator that dies half-way leaves a file that reads as
// fresh.
func (j *Journal) create(n uint64) error {
	if err := j.f.Truncate(0); err != nil {
		return err
	}
	if err := j.allocate(n); err != nil {
		return err
	}
	if err := j.mapSlots(n); err != nil {
		return err
	}
	return j.writeHeader(n)
}

// allocate sizes the file for n slots with every block allocated, so that a
// store through the mapping never has to allocate one (on a full disk that
// would be SIGBUS). New bytes read as zero.
func (j *Journal) allocate(n uint64) error {
	size := int64(journalHeader + n*slotSize)
	err := unix.Fallocate(int(j.f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = j.f.Truncate(size) // a file system without fallocate: sparse
	}
	if err != nil {
		return fmt.Errorf("allocate %d bytes: %w", size, err)
	}
	return nil
}

func (j *Journal) writeHeader(n uint64) error {
	var b [24]byte
	copy(b[:8], journalMagic)
	binary.NativeEndian.PutUint32(b[8:], journalVersion)
	binary.NativeEndian.PutUint32(b[12:], slotSize)
	binary.NativeEndian.PutUint64(b[16:], n)
	if _, err := j.f.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	return nil
}

// mapSlots maps the header and n slots, populated so no store faults.
func (j *Journal) mapSlots(n uint64) error {
	j.unmap()
	mem, err := unix.Mmap(int(j.f.Fd()), 0, int(journalHeader+n*slotSize),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	j.mem = mem
	j.slots = unsafe.Slice((*slot)(unsafe.Pointer(&mem[journalHeader])), n)
	j.n = n
	return nil
}

func (j *Journal) unmap() {
	if j.mem != nil {
		unix.Munmap(j.mem)
		j.mem, j.slots, j.n = nil, nil, 0
	}
}

// resize changes the slot count to n, which covers every leftover. Growing
// extends the file before the header says so; shrinking says so before it
// cuts: a crash in between leaves a valid journal either way.
func (j *Journal) resize(n uint64) error {
	if n > j.n {
		if err := j.allocate(n); err != nil {
			return err
		}
		if err := j.writeHeader(n); err != nil {
			return err
		}
		return j.mapSlots(n)
	}
	if err := j.writeHeader(n); err != nil {
		return err
	}
	if err := j.mapSlots(n); err != nil {
		return err
	}
	return j.f.Truncate(int64(journalHeader + n*slotSize))
}

// Record journals e and returns its slot, for Done. It is a few stores to
// shared memory, no system call. ok is false if no slot is free (or the
// journal is closed): handle the notification unjournaled, and count it.
func (j *Journal) Record(e Entry) (slot int, ok bool) {
	if j.shut.Load() {
		return -1, false
	}
	// Start at the slot the id picks and probe on. Ids of one filter are
	// consecutive, so in-flight entries of a session sit in neighbouring
	// slots (cache friendly: scattering them by a hash cost 35% more with
	// two CPUs recording); sessions start at unrelated places. There is no
	// shared counter: one word written by every Record and Done on every
	// CPU doubled the cost with two CPUs recording. A full journal costs a
	// scan of every slot instead.
	i := (e.ID + e.Session*0x9e3779b97f4a7c15) % j.n
	for range j.n {
		s := &j.slots[i]
		if s.state.Load() == stateFree && s.state.CompareAndSwap(stateFree, stateWriting) {
			s.session, s.id, s.pid, s.nr, s.arch, s.args = e.Session, e.ID, e.PID, e.Nr, e.Arch, e.Args
			s.state.Store(sealOf(&e)) // last: publishes the entry
			return int(i), true
		}
		if i++; i == j.n {
			i = 0
		}
	}
	return -1, false
}

// Done frees the slot Record returned. Call it once per Record, after the
// notification is answered.
func (j *Journal) Done(slot int) {
	if slot < 0 || uint64(slot) >= j.n || j.shut.Load() {
		return
	}
	j.slots[slot].state.Store(stateFree)
}

// ClearAll frees the slots of the leftovers OpenJournal returned, once the
// caller has dealt with them. Entries recorded since are not touched, so it
// is safe while Record and Done run.
func (j *Journal) ClearAll() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.shut.Load() {
		return
	}
	for _, i := range j.leftovers {
		j.slots[i].state.Store(stateFree)
	}
	j.leftovers = nil
}

// InUse returns the number of slots taken (leftovers included). It scans
// every slot: for metrics, not for the notification path.
func (j *Journal) InUse() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.shut.Load() {
		return 0
	}
	n := 0
	for i := range j.slots {
		if j.slots[i].state.Load() != stateFree {
			n++
		}
	}
	return n
}

// Slots returns the journal's capacity.
func (j *Journal) Slots() int { return int(j.n) }

// Close unmaps the journal and releases its lock. Entries not Done stay in
// the file for the next OpenJournal. No Record or Done may run concurrently
// with Close; later ones do nothing (Record returns ok=false).
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.shut.CompareAndSwap(false, true) {
		return nil
	}
	j.unmap()
	return j.f.Close()
}

func (s *slot) entry() Entry {
	return Entry{Session: s.session, ID: s.id, PID: s.pid, Nr: s.nr, Arch: s.arch, Args: s.args}
}

func (s *slot) seal() uint64 {
	e := s.entry()
	return sealOf(&e)
}

// sealOf hashes an entry into a state word that is never free or writing
// (bit 1 set). A splitmix-style mix per word: ~10 ns, and any torn or
// stray change of a field shows.
func sealOf(e *Entry) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	h = mix(h, e.Session)
	h = mix(h, e.ID)
	h = mix(h, uint64(e.PID)<<32|uint64(uint32(e.Nr)))
	h = mix(h, uint64(e.Arch))
	for _, a := range e.Args {
		h = mix(h, a)
	}
	return h | 2
}

func mix(h, w uint64) uint64 {
	h ^= w
	h *= 0xbf58476d1ce4e5b9
	return h ^ h>>31
}
