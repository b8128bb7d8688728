package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/imgmount/imgmount/overlay/archive"
	"golang.org/x/sys/unix"
)

// byteSize is a --max-memory value: a number of bytes with an optional
// K, M, G or T suffix (powers of 1024), or "none".
type byteSize int64

func (b *byteSize) String() string {
	switch {
	case *b == 0:
		return ""
	case *b < 0:
		return "none"
	}
	return archive.HumanSize(int64(*b))
}

func (b *byteSize) Type() string { return "SIZE" }

func (b *byteSize) Set(s string) error {
	s = strings.ToUpper(strings.TrimSpace(s))
	if s == "NONE" {
		*b = -1
		return nil
	}
	s = strings.TrimSuffix(s, "B")
	mult := int64(1)
	if s != "" {
		if i := strings.IndexByte("KMGT", s[len(s)-1]); i >= 0 {
			mult, s = 1<<(10*(i+1)), s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return fmt.Errorf("want a size such as 4G, 512M or none")
	}
	*b = byteSize(n * mult)
	return nil
}

// entries is the archive.OpenOptions.MaxEntries the budget allows (0: no
// limit). The default budget is half of the machine's RAM: an image whose
// index needs more would push the machine into swapping or the OOM killer.
func (b byteSize) entries() int {
	budget := int64(b)
	switch {
	case budget < 0:
		return 0
	case budget == 0:
		var si unix.Sysinfo_t
		if unix.Sysinfo(&si) != nil {
			return 0
		}
		budget = int64(si.Totalram) * int64(si.Unit) / 2
	}
	return int(max(budget/archive.BytesPerEntry, 1))
}

// spanBudget is the archive.OpenOptions.SpanCache the flag asks for: 0
// for the default, 1 byte (nothing is kept) for "none".
func (b byteSize) spanBudget() int64 {
	if b < 0 {
		return 1
	}
	return int64(b)
}

// ratio is a --max-ratio value: a whole number of times, at least 2.
type ratio int64

func (r *ratio) String() string {
	if *r == 0 {
		return ""
	}
	return strconv.FormatInt(int64(*r), 10)
}

func (r *ratio) Type() string { return "N" }

func (r *ratio) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 2 {
		return fmt.Errorf("want a whole number of times, at least 2 (default 100)")
	}
	*r = ratio(n)
	return nil
}
