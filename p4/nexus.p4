/*
 * nexus.p4 — the Nexus data plane's per-datagram decision for a programmable switch
 * (P4_16, v1model / BMv2 simple_switch_grpc).
 *
 * Per NexLink datagram (UDP to NEXLINK_UDP_PORT over IPv4 without options), in the order of the
 * software forwarder (nexus_dataplane::forward::decide):
 *   0. nexus_source: the IPv4 source must be an allowed source, else drop source_not_allowed;
 *   1. the NexLink receive checks (docs/nexlink.md section 6), each failure dropped and counted
 *      under its reason;
 *   2. nexus_local: a local routing key is delivered unchanged (no hop-limit decrement);
 *   3. hop limit 1 is dropped as hop_limit_exceeded, otherwise decremented;
 *   4. nexus_route: exact match on the 128-bit routing key gives the next-hop group and its
 *      weight total; a miss sends a digest to the controller and drops no_route;
 *   5. the flow hash over (source node tag, session id, stream id) — splitmix64 exactly as
 *      nexus_dataplane::forward::flow_hash — is scaled into [0, weight_total) as the software
 *      FIB does; nexus_group's action selector, with the identity hash over that point, picks
 *      the member whose weight range holds it (the selector lays a group's members out in
 *      order, each over `weight` slots: SumOfWeights);
 *   6. forward: rewrite the routing key if the next hop says so, send to the next hop's UDP
 *      address out of the ingress port, header checksums recomputed.
 * Drop reasons index nexus_drops like nexus_dataplane::forward::DROP_REASONS. Other traffic is
 * dropped uncounted: this program is a NexLink forwarder only.
 *
 * The ids (@id) and names are those of nexus_p4::program, which builds the P4Info the node
 * installs; p4/tests/program.rs checks this file against it. Not compiled here (no p4c on
 * this machine): see p4/README.md.
 */
#include <core.p4>
#include <v1model.p4>

const bit<16> ETHERTYPE_IPV4 = 0x0800;
const bit<8>  IPPROTO_UDP = 17;
/* The UDP port the fabric's data plane listens on (nexus_p4::program::NEXLINK_UDP_PORT). */
const bit<16> NEXLINK_UDP_PORT = 4790;
const bit<16> NEXLINK_HEADER_BYTES = 64;

/* DROP_REASONS, in order. */
const bit<32> DROP_TRUNCATED = 0;
const bit<32> DROP_BAD_VERSION = 1;
const bit<32> DROP_BAD_CHECKSUM = 2;
const bit<32> DROP_PAYLOAD_LENGTH = 3;
const bit<32> DROP_UNKNOWN_FRAME_TYPE = 4;
const bit<32> DROP_UNKNOWN_DELIVERY_MODE = 5;
const bit<32> DROP_HOP_LIMIT_ZERO = 6;
const bit<32> DROP_RESERVED = 7;
const bit<32> DROP_UNKNOWN_DTYPE = 8;
const bit<32> DROP_TENSOR_PAYLOAD_LENGTH = 9;
const bit<32> DROP_HOP_LIMIT_EXCEEDED = 10;
const bit<32> DROP_NO_ROUTE = 11;
const bit<32> DROP_SOURCE_NOT_ALLOWED = 12;
#define DROP_REASON_COUNT 13

const bit<32> SENT_FORWARDED = 0;
const bit<32> SENT_LOCAL = 1;

/* nexus_dataplane::fib::FLOW_MIX */
const bit<64> FLOW_MIX = 0x9e3779b97f4a7c15;

header ethernet_t {
    bit<48> dst_addr;
    bit<48> src_addr;
    bit<16> ether_type;
}

header ipv4_t {
    bit<4>  version;
    bit<4>  ihl;
    bit<8>  diffserv;
    bit<16> total_len;
    bit<16> identification;
    bit<3>  flags;
    bit<13> frag_offset;
    bit<8>  ttl;
    bit<8>  protocol;
    bit<16> hdr_checksum;
    bit<32> src_addr;
    bit<32> dst_addr;
}

header udp_t {
    bit<16> src_port;
    bit<16> dst_port;
    bit<16> length;
    bit<16> checksum;
}

/* The NexLink header: 64 bytes, big-endian, fixed offsets (dataplane/src/wire/nexlink). */
header nexlink_t {
    bit<4>   version;
    bit<4>   flags;          /* B E F I */
    bit<8>   frame_type;
    bit<8>   delivery_mode;
    bit<6>   traffic_class;
    bit<2>   ecn;
    bit<8>   hop_limit;
    bit<8>   reserved;
    bit<16>  checksum;
    bit<128> routing_key;
    bit<64>  src_tag;
    bit<64>  dst_tag;
    bit<64>  session_id;
    bit<32>  stream_id;
    bit<32>  seq;
    bit<16>  payload_len;
    bit<8>   dtype;
    bit<4>   rank;
    bit<4>   align_log2;
    bit<32>  inner_dim;
}

struct headers_t {
    ethernet_t ethernet;
    ipv4_t     ipv4;
    udp_t      udp;
    nexlink_t  nexlink;
}

struct metadata_t {
    bit<1>  is_nexlink;
    bit<16> datagram_len;    /* UDP payload bytes */
    bit<32> group_id;
    bit<32> weight_total;
    bit<32> flow_point;
}

/* Sent to the controller on a route miss. */
struct nexus_miss_t {
    bit<128> routing_key;
    bit<64>  src_tag;
}

parser NexusParser(packet_in packet, out headers_t hdr, inout metadata_t meta,
                   inout standard_metadata_t standard_metadata) {
    state start {
        packet.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            ETHERTYPE_IPV4: parse_ipv4;
            default: accept;
        }
    }
    state parse_ipv4 {
        packet.extract(hdr.ipv4);
        transition select(hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.protocol) {
            (4, 5, IPPROTO_UDP): parse_udp;
            default: accept;
        }
    }
    state parse_udp {
        packet.extract(hdr.udp);
        transition select(hdr.udp.dst_port) {
            NEXLINK_UDP_PORT: parse_nexlink;
            default: accept;
        }
    }
    state parse_nexlink {
        meta.is_nexlink = 1;
        meta.datagram_len = hdr.udp.length - 8;
        /* A datagram shorter than the header fails this extract (PacketTooShort): ingress
         * still runs, sees no valid nexlink header and drops it as truncated. */
        packet.extract(hdr.nexlink);
        transition accept;
    }
}

control NexusVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        /* Sets standard_metadata.checksum_error on a mismatch; only this checksum is verified. */
        verify_checksum(hdr.nexlink.isValid(),
            { hdr.nexlink.version, hdr.nexlink.flags, hdr.nexlink.frame_type,
              hdr.nexlink.delivery_mode, hdr.nexlink.traffic_class, hdr.nexlink.ecn,
              hdr.nexlink.hop_limit, hdr.nexlink.reserved, hdr.nexlink.routing_key,
              hdr.nexlink.src_tag, hdr.nexlink.dst_tag, hdr.nexlink.session_id,
              hdr.nexlink.stream_id, hdr.nexlink.seq, hdr.nexlink.payload_len,
              hdr.nexlink.dtype, hdr.nexlink.rank, hdr.nexlink.align_log2,
              hdr.nexlink.inner_dim },
            hdr.nexlink.checksum, HashAlgorithm.csum16);
    }
}

/* splitmix64's finaliser (nexus_dataplane::forward::flow_hash). BMv2 multiplies 64-bit
 * values; Tofino does not (see the README's TNA notes). */
bit<64> mix64(in bit<64> z0) {
    bit<64> z = (z0 ^ (z0 >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
}

control NexusIngress(inout headers_t hdr, inout metadata_t meta,
                     inout standard_metadata_t standard_metadata) {

    @id(0x12000001) counter(DROP_REASON_COUNT, CounterType.packets) nexus_drops;
    @id(0x12000002) counter(2, CounterType.packets) nexus_sent;

    action drop_with(bit<32> reason) {
        nexus_drops.count(reason);
        mark_to_drop(standard_metadata);
    }

    /* Send the NexLink frame (header + declared payload; later bytes truncated) to
     * dst_addr:dst_port from the address and port it was sent to, out of the ingress port. */
    action send_to(bit<32> dst_addr, bit<16> dst_port) {
        bit<48> mac = hdr.ethernet.dst_addr;
        hdr.ethernet.dst_addr = hdr.ethernet.src_addr;
        hdr.ethernet.src_addr = mac;
        hdr.ipv4.src_addr = hdr.ipv4.dst_addr;
        hdr.ipv4.dst_addr = dst_addr;
        hdr.udp.src_port = hdr.udp.dst_port;
        hdr.udp.dst_port = dst_port;
        hdr.udp.length = 8 + NEXLINK_HEADER_BYTES + hdr.nexlink.payload_len;
        hdr.ipv4.total_len = 20 + hdr.udp.length;
        hdr.udp.checksum = 0;
        standard_metadata.egress_spec = standard_metadata.ingress_port;
        truncate((bit<32>)(14 + 20 + 8 + 64) + (bit<32>)hdr.nexlink.payload_len);
    }

    @id(0x01000001) action allow_source() { }

    @id(0x01000005) action drop_source() {
        drop_with(DROP_SOURCE_NOT_ALLOWED);
    }

    @id(0x01000002) action deliver_local(bit<32> dst_addr, bit<16> dst_port) {
        send_to(dst_addr, dst_port);
        nexus_sent.count(SENT_LOCAL);
    }

    @id(0x01000006) action not_local() { }

    @id(0x01000003) action set_group(bit<32> group_id, bit<32> weight_total) {
        meta.group_id = group_id;
        meta.weight_total = weight_total;
    }

    @id(0x01000007) action route_miss() {
        digest<nexus_miss_t>(1, { hdr.nexlink.routing_key, hdr.nexlink.src_tag });
        drop_with(DROP_NO_ROUTE);
    }

    @id(0x01000004) action forward(bit<32> dst_addr, bit<16> dst_port, bit<1> rewrite,
                                   bit<128> new_key) {
        hdr.nexlink.routing_key = (rewrite == 1) ? new_key : hdr.nexlink.routing_key;
        send_to(dst_addr, dst_port);
        nexus_sent.count(SENT_FORWARDED);
    }

    @id(0x02000001) table nexus_source {
        key = { hdr.ipv4.src_addr: exact; }
        actions = { @tableonly allow_source; @defaultonly drop_source; }
        const default_action = drop_source();
        size = 65536;
    }

    @id(0x02000002) table nexus_local {
        key = { hdr.nexlink.routing_key: exact; }
        actions = { @tableonly deliver_local; @defaultonly not_local; }
        const default_action = not_local();
        size = 4096;
    }

    @id(0x02000003) table nexus_route {
        key = { hdr.nexlink.routing_key: exact; }
        actions = { @tableonly set_group; @defaultonly route_miss; }
        const default_action = route_miss();
        size = 1048576;
    }

    /* 65536 members, 32-bit selector input (flow_point is below weight_total <= 4096). */
    @id(0x11000001) @max_group_size(4096) @selector_size_semantics("sum_of_weights")
    action_selector(HashAlgorithm.identity, 32w65536, 32w32) nexus_selector;

    @id(0x02000004) table nexus_group {
        key = { meta.group_id: exact; meta.flow_point: selector; }
        actions = { @tableonly forward; @defaultonly route_miss; }
        const default_action = route_miss();
        implementation = nexus_selector;
        size = 65536;
    }

    apply {
        if (meta.is_nexlink == 0) {
            mark_to_drop(standard_metadata);
            return;
        }
        if (!nexus_source.apply().hit) {
            return;                                   /* drop_source ran */
        }
        /* The receive checks, in the spec's order. */
        if (!hdr.nexlink.isValid() || meta.datagram_len < NEXLINK_HEADER_BYTES) {
            drop_with(DROP_TRUNCATED); return;
        }
        if (hdr.nexlink.version != 1) { drop_with(DROP_BAD_VERSION); return; }
        if (standard_metadata.checksum_error == 1) { drop_with(DROP_BAD_CHECKSUM); return; }
        if (hdr.nexlink.payload_len > meta.datagram_len - NEXLINK_HEADER_BYTES) {
            drop_with(DROP_PAYLOAD_LENGTH); return;
        }
        bit<8> ft = hdr.nexlink.frame_type;
        if (ft == 0 || ft > 6) { drop_with(DROP_UNKNOWN_FRAME_TYPE); return; }
        if (hdr.nexlink.delivery_mode == 0 || hdr.nexlink.delivery_mode > 4) {
            drop_with(DROP_UNKNOWN_DELIVERY_MODE); return;
        }
        if (hdr.nexlink.hop_limit == 0) { drop_with(DROP_HOP_LIMIT_ZERO); return; }
        /* Flags a frame type allows: data all, control ACK_REQUESTED, the others none. */
        bit<4> allowed = (ft == 1) ? 4w0xf : ((ft == 3) ? 4w0x1 : 4w0);
        if ((hdr.nexlink.flags & ~allowed) != 0 || hdr.nexlink.reserved != 0) {
            drop_with(DROP_RESERVED); return;
        }
        if (ft != 1 || hdr.nexlink.dtype == 0) {
            if (hdr.nexlink.dtype != 0 || hdr.nexlink.rank != 0 ||
                hdr.nexlink.align_log2 != 0 || hdr.nexlink.inner_dim != 0) {
                drop_with(DROP_RESERVED); return;
            }
        } else {
            if (hdr.nexlink.rank == 0 && hdr.nexlink.inner_dim != 0) {
                drop_with(DROP_RESERVED); return;
            }
            /* Element size by dtype code (Dtype::element_bytes), as a mask of its low bits. */
            bit<8> d = hdr.nexlink.dtype;
            bit<16> mask;
            if (d == 0x01 || d == 0x10 || d == 0x20) { mask = 7; }
            else if (d == 0x02 || d == 0x11 || d == 0x21) { mask = 3; }
            else if (d == 0x03 || d == 0x04 || d == 0x12 || d == 0x22) { mask = 1; }
            else if (d == 0x05 || d == 0x06 || d == 0x13 || d == 0x23 || d == 0x30) { mask = 0; }
            else { drop_with(DROP_UNKNOWN_DTYPE); return; }
            if ((hdr.nexlink.payload_len & mask) != 0) {
                drop_with(DROP_TENSOR_PAYLOAD_LENGTH); return;
            }
        }
        if (nexus_local.apply().hit) {
            return;                                   /* deliver_local ran */
        }
        if (hdr.nexlink.hop_limit == 1) { drop_with(DROP_HOP_LIMIT_EXCEEDED); return; }
        hdr.nexlink.hop_limit = hdr.nexlink.hop_limit - 1;
        if (!nexus_route.apply().hit) {
            return;                                   /* route_miss ran */
        }
        bit<64> h = mix64(hdr.nexlink.src_tag ^ 0x6e657875735f666c);
        h = mix64(h ^ hdr.nexlink.session_id);
        h = mix64(h ^ (bit<64>)hdr.nexlink.stream_id);
        bit<128> scaled = (bit<128>)(h * FLOW_MIX) * (bit<128>)meta.weight_total;
        meta.flow_point = (bit<32>)(scaled >> 64);
        nexus_group.apply();
    }
}

control NexusEgress(inout headers_t hdr, inout metadata_t meta,
                    inout standard_metadata_t standard_metadata) {
    apply { }
}

control NexusComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        update_checksum(hdr.ipv4.isValid(),
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.total_len,
              hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.frag_offset, hdr.ipv4.ttl,
              hdr.ipv4.protocol, hdr.ipv4.src_addr, hdr.ipv4.dst_addr },
            hdr.ipv4.hdr_checksum, HashAlgorithm.csum16);
        update_checksum(hdr.nexlink.isValid(),
            { hdr.nexlink.version, hdr.nexlink.flags, hdr.nexlink.frame_type,
              hdr.nexlink.delivery_mode, hdr.nexlink.traffic_class, hdr.nexlink.ecn,
              hdr.nexlink.hop_limit, hdr.nexlink.reserved, hdr.nexlink.routing_key,
              hdr.nexlink.src_tag, hdr.nexlink.dst_tag, hdr.nexlink.session_id,
              hdr.nexlink.stream_id, hdr.nexlink.seq, hdr.nexlink.payload_len,
              hdr.nexlink.dtype, hdr.nexlink.rank, hdr.nexlink.align_log2,
              hdr.nexlink.inner_dim },
            hdr.nexlink.checksum, HashAlgorithm.csum16);
    }
}

control NexusDeparser(packet_out packet, in headers_t hdr) {
    apply {
        packet.emit(hdr.ethernet);
        packet.emit(hdr.ipv4);
        packet.emit(hdr.udp);
        packet.emit(hdr.nexlink);
    }
}

V1Switch(NexusParser(), NexusVerifyChecksum(), NexusIngress(), NexusEgress(),
         NexusComputeChecksum(), NexusDeparser()) main;
