package testenv

import "runtime"

// HeapAlloc collects garbage and returns the bytes of heap still in use, for tests that measure what a
// structure keeps: take it before and after, with the structure kept alive (runtime.KeepAlive) past the
// second.
func HeapAlloc() int {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int(m.HeapAlloc)
}
