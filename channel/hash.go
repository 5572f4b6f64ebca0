package channel

// murmur2 is the 32-bit Murmur2 hash exactly as Kafka's Java client computes
// it (seed 0x9747b28c), so postbox and Java producers agree on partitions.
func murmur2(data []byte) int32 {
	const (
		seed = uint32(0x9747b28c)
		m    = uint32(0x5bd1e995)
		r    = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	n := length / 4
	for i := 0; i < n; i++ {
		k := uint32(data[i*4]) | uint32(data[i*4+1])<<8 | uint32(data[i*4+2])<<16 | uint32(data[i*4+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[n*4:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// HomePartition is the partition every message of key belongs to among n:
// murmur2(key) made positive, modulo n, as Kafka's Java default partitioner
// computes it. Every backend partitions by it.
func HomePartition(key string, n int) int32 {
	if n <= 0 {
		return 0
	}
	return (murmur2([]byte(key)) & 0x7fffffff) % int32(n)
}
