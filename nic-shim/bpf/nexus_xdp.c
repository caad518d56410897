// SPDX-License-Identifier: Apache-2.0
//
// The Nexus XDP forwarder: NexLink frames in UDP over IPv4 over Ethernet, forwarded from a
// BPF-map copy of one FIB generation with the software forwarder's decision
// (dataplane/src/forward/forwarder.rs): source check, every NexLink receive check in the
// spec's order, local delivery, hop-limit decrement, exact-match lookup of the 128-bit routing
// key, the per-flow weighted next-hop choice, the routing-key rewrite, and the send.
//
// Frames that are not IPv4/UDP to the forwarder's port (and IPv4 with options or fragments)
// are passed to the kernel untouched and counted nowhere: they are not the forwarder's.
//
// Generations: `current` (an array of maps with one slot) points at a one-entry array holding
// the generation number. Every per-generation entry (routes, groups, next hops, allowed
// sources) is keyed by its generation, so a new generation is written beside the current one
// and made current by replacing that one pointer: a packet reads the pointer once and sees one
// generation only. The kernel waits for running programs after each update of an array of
// maps, so once the update returns no packet uses the old generation any more.
//
// Layouts shared with the loader (nic-shim/src/maps.rs) are the structs below; every multi-byte
// field the loader writes is in host order except where named `_be`.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define NEXLINK_HEADER_LEN 64
#define NEXT_HOPS_MAX 64

// Counter indices: received, forwarded, delivered_local, then one per drop reason in the order
// of dataplane/src/forward/counters.rs DROP_REASONS.
enum counter {
	C_RECEIVED = 0,
	C_FORWARDED = 1,
	C_DELIVERED_LOCAL = 2,
	C_DROP = 3,
};
enum drop_reason {
	D_TRUNCATED = 0,
	D_BAD_VERSION = 1,
	D_BAD_CHECKSUM = 2,
	D_PAYLOAD_LENGTH = 3,
	D_UNKNOWN_FRAME_TYPE = 4,
	D_UNKNOWN_DELIVERY_MODE = 5,
	D_HOP_LIMIT_ZERO = 6,
	D_RESERVED = 7,
	D_UNKNOWN_DTYPE = 8,
	D_TENSOR_PAYLOAD_LENGTH = 9,
	D_HOP_LIMIT_EXCEEDED = 10,
	D_NO_ROUTE = 11,
	D_SOURCE_NOT_ALLOWED = 12,
	D_COUNT = 13,
};
// After the drop reasons: frames passed to the kernel for a next hop whose MAC is unknown.
#define C_TO_KERNEL (C_DROP + D_COUNT)
#define COUNTERS (C_TO_KERNEL + 1)

struct config {
	__u16 port_be;      // the forwarder's UDP port, network order
	__u8 source_check;  // 1: drop sources outside the generation's allowed set
	__u8 pad[5];
};

struct route_key {
	__u64 generation;
	__u8 key[16]; // the routing key as on the wire (big-endian)
};

struct group_key {
	__u64 generation;
	__u32 group;
	__u32 pad;
};

struct group {
	__u32 hop_first;
	__u32 hop_count;    // 1..=NEXT_HOPS_MAX
	__u32 weight_total;
	__u32 pad;
	__u32 cumulative[NEXT_HOPS_MAX]; // running sum of weights, inclusive
};

struct hop_key {
	__u64 generation;
	__u32 index;
	__u32 pad;
};

struct hop {
	__u32 ifindex;      // egress interface
	__u8 rewrite;       // 1: write rewrite_key into the frame
	__u8 kernel;        // 1: the MAC is not resolved yet: pass the frame to the kernel unchanged
	__u8 pad[2];
	__u8 dst_mac[6];
	__u8 src_mac[6];
	__u32 saddr_be;
	__u32 daddr_be;
	__u16 sport_be;
	__u16 dport_be;
	__u8 rewrite_key[16];
};

struct source_key {
	__u64 generation;
	__u8 addr[16]; // IPv4-mapped IPv6, network order
};

struct meta_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64); // the generation number
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct meta_map);
} current SEC(".maps");

// max_entries of the four per-generation maps are set by the loader before load.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct route_key);
	__type(value, __u32);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct group_key);
	__type(value, struct group);
} groups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct hop_key);
	__type(value, struct hop);
} hops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct source_key);
	__type(value, __u8);
} sources SEC(".maps");

// Routing keys delivered on this node (not part of a generation, like the software
// forwarder's local-endpoint table): redirected to the AF_XDP socket of the receive queue.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u8[16]);
	__type(value, __u32);
} local_keys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		*value += 1;
}

static __always_inline int drop(enum drop_reason reason)
{
	count(C_DROP + reason);
	return XDP_DROP;
}

static __always_inline __u16 fold(__u64 acc)
{
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	return (__u16)acc;
}

static __always_inline __u16 be16_at(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

static __always_inline __u32 be32_at(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

static __always_inline __u64 be64_at(const __u8 *p)
{
	return ((__u64)be32_at(p) << 32) | be32_at(p + 4);
}

// The Internet checksum of the 64-byte NexLink header with its checksum field (bytes 6..8)
// taken as zero.
static __always_inline __u16 nexlink_checksum(const __u8 *h)
{
	__u64 acc = 0;
#pragma unroll
	for (int i = 0; i < NEXLINK_HEADER_LEN; i += 2) {
		if (i != 6)
			acc += be16_at(h + i);
	}
	return ~fold(acc);
}

static __always_inline __u16 ipv4_checksum(const struct iphdr *ip)
{
	const __u16 *words = (const __u16 *)ip;
	__u64 acc = 0;
#pragma unroll
	for (int i = 0; i < 10; i++) {
		if (i != 5)
			acc += words[i];
	}
	// Summed in memory order: the folded sum is already in network order.
	return ~fold(acc);
}

static __always_inline __u64 mix(__u64 z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

// dataplane/src/forward/forwarder.rs flow_hash(src, session, stream).
static __always_inline __u64 flow_hash(__u64 src, __u64 session, __u32 stream)
{
	__u64 h = mix(src ^ 0x6e657875735f666cULL);
	h = mix(h ^ session);
	return mix(h ^ (__u64)stream);
}

// dataplane/src/fib/format.rs flow_point: ((flow_hash * FLOW_MIX mod 2^64) * total) >> 64,
// with the 64x32-bit product split into halves so no 128-bit arithmetic is needed.
static __always_inline __u32 flow_point(__u64 flow, __u32 total)
{
	__u64 mixed = flow * 0x9e3779b97f4a7c15ULL;
	__u64 hi = (mixed >> 32) * (__u64)total;
	__u64 lo = ((mixed & 0xffffffffULL) * (__u64)total) >> 32;
	return (__u32)((hi + lo) >> 32);
}

static __always_inline int element_bytes(__u8 dtype)
{
	switch (dtype) {
	case 0x01: case 0x10: case 0x20:
		return 8;
	case 0x02: case 0x11: case 0x21:
		return 4;
	case 0x03: case 0x04: case 0x12: case 0x22:
		return 2;
	case 0x05: case 0x06: case 0x13: case 0x23: case 0x30:
		return 1;
	default:
		return 0;
	}
}

// The NexLink receive checks after the structural ones (dataplane Repr::parse steps 5..10).
// Returns D_COUNT when the header passes.
static __always_inline enum drop_reason semantic_checks(const __u8 *h, __u16 payload_len)
{
	__u8 frame_type = h[1];
	if (frame_type < 0x01 || frame_type > 0x06)
		return D_UNKNOWN_FRAME_TYPE;
	if (h[2] < 0x01 || h[2] > 0x04)
		return D_UNKNOWN_DELIVERY_MODE;
	if (h[4] == 0)
		return D_HOP_LIMIT_ZERO;
	__u8 flags = h[0] & 0x0f;
	__u8 allowed = frame_type == 0x01 ? 0x0f : frame_type == 0x03 ? 0x01 : 0x00;
	if (flags & ~allowed)
		return D_RESERVED;
	if (h[5] != 0)
		return D_RESERVED;
	__u8 dtype = h[58];
	if (frame_type != 0x01 || dtype == 0) {
		if (dtype | h[59] | h[60] | h[61] | h[62] | h[63])
			return D_RESERVED;
		return D_COUNT;
	}
	__u8 rank = h[59] >> 4;
	if (rank == 0 && (h[60] | h[61] | h[62] | h[63]))
		return D_RESERVED;
	int bytes = element_bytes(dtype);
	if (bytes == 0)
		return D_UNKNOWN_DTYPE;
	if (payload_len % bytes)
		return D_TENSOR_PAYLOAD_LENGTH;
	return D_COUNT;
}

#define FRAME_OFFSET (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))

SEC("xdp")
int nexus_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x3fff)))
		return XDP_PASS;
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || udp->dest != cfg->port_be)
		return XDP_PASS;
	__u32 udp_len = bpf_ntohs(udp->len);
	__u8 *frame = (void *)(udp + 1);
	// A UDP length the frame does not hold is the kernel's to refuse.
	if (udp_len < sizeof(struct udphdr) || (void *)udp + udp_len > data_end)
		return XDP_PASS;
	__u32 available = udp_len - sizeof(struct udphdr);

	count(C_RECEIVED);

	__u64 generation = 0;
	void *meta_map = bpf_map_lookup_elem(&current, &zero);
	if (meta_map) {
		__u64 *meta = bpf_map_lookup_elem(meta_map, &zero);
		if (meta)
			generation = *meta;
	}

	// Step 0: the allowed-source set (before any parsing).
	if (cfg->source_check) {
		struct source_key source = {.generation = generation};
		source.addr[10] = 0xff;
		source.addr[11] = 0xff;
		__builtin_memcpy(&source.addr[12], &ip->saddr, 4);
		if (!meta_map || !bpf_map_lookup_elem(&sources, &source))
			return drop(D_SOURCE_NOT_ALLOWED);
	}

	// Steps 1-4: the structural checks.
	if (available < NEXLINK_HEADER_LEN)
		return drop(D_TRUNCATED);
	__u8 *h = frame;
	if ((void *)(h + NEXLINK_HEADER_LEN) > data_end)
		return drop(D_TRUNCATED);
	if ((h[0] >> 4) != 1)
		return drop(D_BAD_VERSION);
	if (be16_at(h + 6) != nexlink_checksum(h))
		return drop(D_BAD_CHECKSUM);
	__u16 payload_len = be16_at(h + 56);
	if (payload_len > available - NEXLINK_HEADER_LEN)
		return drop(D_PAYLOAD_LENGTH);
	// Steps 5-10.
	enum drop_reason reason = semantic_checks(h, payload_len);
	if (reason != D_COUNT)
		return drop(reason);

	__u8 key[16];
	__builtin_memcpy(key, h + 8, 16);
	if (bpf_map_lookup_elem(&local_keys, key)) {
		count(C_DELIVERED_LOCAL);
		// With no socket on this queue the kernel's stack delivers it instead.
		return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	}
	if (h[4] == 1)
		return drop(D_HOP_LIMIT_EXCEEDED);
	if (!meta_map)
		return drop(D_NO_ROUTE);
	struct route_key rkey = {.generation = generation};
	__builtin_memcpy(rkey.key, key, 16);
	__u32 *group_id = bpf_map_lookup_elem(&routes, &rkey);
	if (!group_id)
		return drop(D_NO_ROUTE);
	struct group_key gkey = {.generation = generation, .group = *group_id};
	struct group *group = bpf_map_lookup_elem(&groups, &gkey);
	if (!group)
		return drop(D_NO_ROUTE);
	__u32 index = 0;
	if (group->hop_count > 1) {
		__u64 flow = flow_hash(be64_at(h + 24), be64_at(h + 40), be32_at(h + 48));
		__u32 point = flow_point(flow, group->weight_total);
		// The first next hop whose cumulative weight is above the point (partition_point).
		index = group->hop_count - 1;
		for (__u32 i = 0; i < NEXT_HOPS_MAX; i++) {
			if (i >= group->hop_count)
				break;
			if (group->cumulative[i] > point) {
				index = i;
				break;
			}
		}
	}
	struct hop_key hkey = {.generation = generation, .index = group->hop_first + index};
	struct hop *hop = bpf_map_lookup_elem(&hops, &hkey);
	if (!hop)
		return drop(D_NO_ROUTE);
	// The kernel's stack (and the software forwarder on the same port) takes the frame as it
	// came; sending it there also makes the kernel resolve the neighbour.
	if (hop->kernel) {
		count(C_TO_KERNEL);
		return XDP_PASS;
	}

	// Only the frame (header and declared payload) goes on: cut whatever follows it.
	__u32 frame_len = NEXLINK_HEADER_LEN + payload_len;
	long extra = (long)(data_end - data) - (long)(FRAME_OFFSET + frame_len);
	if (extra > 0 && bpf_xdp_adjust_tail(ctx, (int)-extra))
		return drop(D_PAYLOAD_LENGTH);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	udp = (void *)(ip + 1);
	h = (void *)(udp + 1);
	if ((void *)(h + NEXLINK_HEADER_LEN) > data_end)
		return drop(D_TRUNCATED);

	h[4] -= 1;
	if (hop->rewrite)
		__builtin_memcpy(h + 8, hop->rewrite_key, 16);
	__u16 csum = nexlink_checksum(h);
	h[6] = csum >> 8;
	h[7] = csum & 0xff;

	__builtin_memcpy(eth->h_dest, hop->dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, hop->src_mac, ETH_ALEN);
	ip->tos = 0;
	ip->tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct udphdr) + frame_len);
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000); // don't fragment
	ip->ttl = 64;
	ip->saddr = hop->saddr_be;
	ip->daddr = hop->daddr_be;
	ip->check = ipv4_checksum(ip);
	udp->source = hop->sport_be;
	udp->dest = hop->dport_be;
	udp->len = bpf_htons(sizeof(struct udphdr) + frame_len);
	udp->check = 0; // optional over IPv4

	count(C_FORWARDED);
	if (hop->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect_map(&tx_ports, hop->ifindex, 0);
}

// For the far end of a veth pair in native mode: frames redirected into a veth are only
// received when the peer has an XDP program of its own.
SEC("xdp")
int nexus_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Apache-2.0";
