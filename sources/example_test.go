package sources_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/nbdloop/nbdloop/sources"
)

func ExampleNewMemory() {
	// A 1 TiB RAM disk costs memory only for the pages written to.
	m, err := sources.NewMemory(1 << 40)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if _, err := m.WriteAt([]byte("hello"), 1<<39); err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Size(), m.Resident(), m.Caps())
	// Output: 1099511627776 65536 trim,zero,parallel,inmemory
}

func ExampleOpenFile() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, []byte("0123456789"), 0o644); err != nil {
		log.Fatal(err)
	}

	// Bytes 2 to 6 of the file, like losetup --offset 2 --sizelimit 5.
	f, err := sources.OpenFile(path, sources.FileOptions{ReadOnly: true, Offset: 2, SizeLimit: 5})
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, f.Size())
	if _, err := f.ReadAt(p, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %v\n", p, errors.Is(f.Zero(0, 1, false), sources.ErrReadOnly))
	// Output: 23456 true
}

func ExampleNewWindow() {
	disk, err := sources.NewMemory(4 << 20)
	if err != nil {
		log.Fatal(err)
	}
	// The partition at sector 2048, 512 sectors long.
	part, err := sources.NewWindow(disk, 2048*512, 512*512)
	if err != nil {
		log.Fatal(err)
	}
	defer part.Close() // closes disk too
	if _, err := part.WriteAt([]byte{42}, 0); err != nil {
		log.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := disk.ReadAt(b, 2048*512); err != nil {
		log.Fatal(err)
	}
	fmt.Println(part.Size(), b[0])
	// Output: 262144 42
}
