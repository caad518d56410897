//! The NexLink header against its spec (`docs/nexlink.md`): the golden vector byte for byte,
//! field offsets, seeded round trips, every rejection class with its exact error and reason,
//! the order of the receive checks, the in-place forwarding updates (hop limit, ECN, routing-key
//! rewrite) against a full checksum recomputation, and seeded mutations of valid frames
//! (coverage-guided fuzzing of the same decoder: `dataplane/fuzz`).

use nexus_dataplane::wire::checksum;
use nexus_dataplane::wire::nexlink::{
    DeliveryMode, Dtype, Ecn, Error, Flags, FrameType, HEADER_LEN, HopLimit, NodeTag, Packet, Repr,
    RoutingKey, SeqNumber, SessionId, StreamId, TensorMeta, TrafficClass, VERSION, field,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The golden vector of `docs/nexlink.md` §5: a BF16 data frame, 1024 payload bytes.
#[rustfmt::skip]
const GOLDEN: [u8; HEADER_LEN] = [
    // version 1 | B E I; data; reliable-ordered; class 10 | ECT(0); hop 64; reserved; checksum
    0x1d, 0x01, 0x01, 0x2a, 0x40, 0x00, 0xd7, 0x32,
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, // routing key, high half
    0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, // routing key, low half
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // source node tag
    0xf0, 0xe0, 0xd0, 0xc0, 0xb0, 0xa0, 0x90, 0x80, // destination node tag
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, // session id
    0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x01, 0x00, // stream 7; sequence 256
    // payload length 1024; bf16; rank 2 | align 2^6; inner dimension 4096
    0x04, 0x00, 0x04, 0x26, 0x00, 0x00, 0x10, 0x00,
];

const GOLDEN_PAYLOAD_LEN: usize = 1024;

fn golden_repr() -> Repr {
    Repr {
        frame_type: FrameType::Data,
        flags: Flags::BEGIN | Flags::END | Flags::ACK_REQUESTED,
        delivery_mode: DeliveryMode::ReliableOrdered,
        traffic_class: TrafficClass::new(10).expect("10 < 64"),
        ecn: Ecn::Ect0,
        hop_limit: HopLimit::new(64).expect("non-zero"),
        routing_key: RoutingKey(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
        src: NodeTag(0x0102_0304_0506_0708),
        dst: NodeTag(0xf0e0_d0c0_b0a0_9080),
        session: SessionId(0x1234_5678_9abc_def0),
        stream: StreamId(7),
        seq: SeqNumber(256),
        payload_len: 1024,
        tensor: Some(TensorMeta::new(Dtype::Bf16, 2, 6, 4096).expect("valid tensor meta")),
    }
}

/// The golden header followed by its 1024-byte payload.
fn golden_frame() -> Vec<u8> {
    let mut frame = GOLDEN.to_vec();
    frame.extend((0..GOLDEN_PAYLOAD_LEN).map(|i| (i % 251) as u8));
    frame
}

/// Recomputes the checksum after a test wrote raw bytes, so that a later check is reached.
fn refill(frame: &mut [u8]) {
    Packet::new_unchecked(frame).fill_checksum();
}

fn parse(frame: &[u8]) -> Result<Repr, Error> {
    Repr::parse(&Packet::new_unchecked(frame))
}

/// Parses a bare header, giving it the zeroed payload it declares.
fn parse_header(header: &[u8]) -> Result<Repr, Error> {
    let mut frame = header.to_vec();
    frame.resize(Packet::new_unchecked(header).frame_len(), 0);
    parse(&frame)
}

fn emit_header(repr: &Repr) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    repr.emit(&mut Packet::new_unchecked(&mut header[..]))
        .expect("a valid repr emits");
    header
}

/// A frame with this header and a zeroed payload of the length it declares.
fn frame_for(repr: &Repr) -> Vec<u8> {
    let mut frame = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut frame[..]))
        .expect("a valid repr emits");
    frame
}

fn random_repr(rng: &mut StdRng) -> Repr {
    let frame_type = FrameType::ALL[rng.random_range(0..FrameType::ALL.len())];
    let flag_bits = rng.random::<u8>() & frame_type.allowed_flags().bits();
    let tensor = if frame_type.carries_tensor() && rng.random_bool(0.6) {
        let dtype = Dtype::ALL[rng.random_range(0..Dtype::ALL.len())];
        let rank = rng.random_range(0..=TensorMeta::RANK_MAX);
        let inner_dim = if rank == 0 { 0 } else { rng.random() };
        let align = rng.random_range(0..=TensorMeta::ALIGN_LOG2_MAX);
        Some(TensorMeta::new(dtype, rank, align, inner_dim).expect("in range"))
    } else {
        None
    };
    let payload_len = match tensor {
        Some(meta) => {
            let size = meta.dtype().element_bytes();
            rng.random_range(0..=u16::MAX / size) * size
        }
        None => rng.random(),
    };
    Repr {
        frame_type,
        flags: Flags::from_bits(flag_bits).expect("masked to the allowed nibble"),
        delivery_mode: DeliveryMode::ALL[rng.random_range(0..DeliveryMode::ALL.len())],
        traffic_class: TrafficClass::new(rng.random_range(0..=63)).expect("<= 63"),
        ecn: Ecn::from_bits(rng.random()),
        hop_limit: HopLimit::new(rng.random_range(1..=255)).expect("non-zero"),
        routing_key: RoutingKey(rng.random()),
        src: NodeTag(rng.random()),
        dst: NodeTag(rng.random()),
        session: SessionId(rng.random()),
        stream: StreamId(rng.random()),
        seq: SeqNumber(rng.random()),
        payload_len,
        tensor,
    }
}

// ---------------------------------------------------------------------------------------------
// Golden vector and layout

#[test]
fn golden_repr_emits_the_golden_bytes() {
    assert_eq!(emit_header(&golden_repr()), GOLDEN);
}

#[test]
fn golden_bytes_parse_to_the_golden_repr() {
    let frame = golden_frame();
    assert_eq!(parse(&frame), Ok(golden_repr()));
    let packet = Packet::new_checked(&frame[..]).expect("golden frame is structurally valid");
    assert_eq!(packet.version(), VERSION);
    assert_eq!(packet.checksum(), 0xd732);
    assert_eq!(packet.payload().len(), GOLDEN_PAYLOAD_LEN);
    assert_eq!(packet.payload(), &frame[HEADER_LEN..]);
}

#[test]
fn golden_checksum_worked_example() {
    // docs/nexlink.md §5: the 32 words with the checksum field zero sum to 0x928c4, which
    // folds to 0x28cd; its complement is the checksum.
    let mut zeroed = GOLDEN;
    zeroed[field::CHECKSUM].fill(0);
    let raw: u32 = zeroed
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    assert_eq!(raw, 0x928c4);
    assert_eq!(checksum::sum(&zeroed), 0x28cd);
    assert_eq!(checksum::checksum(&zeroed), 0xd732);
    // The whole header, checksum included, sums to all ones.
    assert_eq!(checksum::sum(&GOLDEN), 0xffff);
}

#[test]
fn getters_read_the_spec_offsets() {
    let p = Packet::new_unchecked(&GOLDEN[..]);
    assert_eq!(GOLDEN[field::VER_FLAGS], 0x1d);
    assert_eq!(p.flags(), Flags::BEGIN | Flags::END | Flags::ACK_REQUESTED);
    assert_eq!(p.frame_type(), Ok(FrameType::Data));
    assert_eq!(p.delivery_mode(), Ok(DeliveryMode::ReliableOrdered));
    assert_eq!(p.traffic_class().get(), 10);
    assert_eq!(p.ecn(), Ecn::Ect0);
    assert_eq!(p.hop_limit().map(HopLimit::get), Ok(64));
    assert_eq!(GOLDEN[field::RESERVED], 0);
    assert_eq!(
        p.routing_key().to_string(),
        "00112233445566778899aabbccddeeff"
    );
    assert_eq!(p.src_tag().to_string(), "0102030405060708");
    assert_eq!(p.dst_tag(), NodeTag(0xf0e0_d0c0_b0a0_9080));
    assert_eq!(p.session_id(), SessionId(0x1234_5678_9abc_def0));
    assert_eq!(p.stream_id(), StreamId(7));
    assert_eq!(p.seq_number(), SeqNumber(256));
    assert_eq!(p.payload_len(), 1024);
    assert_eq!(p.dtype(), Ok(Some(Dtype::Bf16)));
    assert_eq!((p.rank(), p.align_log2(), p.inner_dim()), (2, 6, 4096));
    assert_eq!(p.frame_len(), HEADER_LEN + GOLDEN_PAYLOAD_LEN);
}

#[test]
fn each_field_occupies_exactly_its_spec_bytes() {
    let base = golden_repr();
    // A control frame differs from a data frame only in its type once both have the same
    // flags and no tensor.
    let plain = Repr {
        flags: Flags::ACK_REQUESTED,
        tensor: None,
        ..base
    };
    let cases: Vec<(&str, Repr, Repr, core::ops::Range<usize>)> = vec![
        (
            "flags",
            base,
            Repr {
                flags: Flags::FIN,
                ..base
            },
            0..1,
        ),
        (
            "frame type",
            plain,
            Repr {
                frame_type: FrameType::Control,
                ..plain
            },
            field::FRAME_TYPE..field::FRAME_TYPE + 1,
        ),
        (
            "delivery mode",
            base,
            Repr {
                delivery_mode: DeliveryMode::Probabilistic,
                ..base
            },
            field::DELIVERY_MODE..field::DELIVERY_MODE + 1,
        ),
        (
            "traffic class",
            base,
            Repr {
                traffic_class: TrafficClass::MAX,
                ..base
            },
            field::TCLASS_ECN..field::TCLASS_ECN + 1,
        ),
        (
            "ecn",
            base,
            Repr {
                ecn: Ecn::Ce,
                ..base
            },
            field::TCLASS_ECN..field::TCLASS_ECN + 1,
        ),
        (
            "hop limit",
            base,
            Repr {
                hop_limit: HopLimit::MAX,
                ..base
            },
            field::HOP_LIMIT..field::HOP_LIMIT + 1,
        ),
        (
            "routing key",
            base,
            Repr {
                routing_key: RoutingKey(!base.routing_key.0),
                ..base
            },
            field::ROUTING_KEY,
        ),
        (
            "source",
            base,
            Repr {
                src: NodeTag(!base.src.0),
                ..base
            },
            field::SRC_TAG,
        ),
        (
            "destination",
            base,
            Repr {
                dst: NodeTag(!base.dst.0),
                ..base
            },
            field::DST_TAG,
        ),
        (
            "session",
            base,
            Repr {
                session: SessionId(!base.session.0),
                ..base
            },
            field::SESSION_ID,
        ),
        (
            "stream",
            base,
            Repr {
                stream: StreamId(!base.stream.0),
                ..base
            },
            field::STREAM_ID,
        ),
        (
            "sequence",
            base,
            Repr {
                seq: SeqNumber(!base.seq.0),
                ..base
            },
            field::SEQ_NUMBER,
        ),
        (
            "payload length",
            base,
            Repr {
                payload_len: !base.payload_len & 0xfffe,
                ..base
            },
            field::PAYLOAD_LEN,
        ),
        (
            "tensor",
            base,
            Repr {
                tensor: None,
                ..base
            },
            field::TENSOR,
        ),
    ];
    for (name, before, after, range) in cases {
        let (a, b) = (emit_header(&before), emit_header(&after));
        let changed: Vec<usize> = (0..HEADER_LEN)
            .filter(|i| !field::CHECKSUM.contains(i) && a[*i] != b[*i])
            .collect();
        assert!(!changed.is_empty(), "{name}: nothing changed");
        assert!(
            changed.iter().all(|i| range.contains(i)),
            "{name}: bytes {changed:?} changed, spec says {range:?}"
        );
        // Every byte of a whole-width field changed (the new value is the complement).
        if range.len() > 1 && name != "payload length" && name != "tensor" {
            assert_eq!(changed, range.clone().collect::<Vec<_>>(), "{name}");
        }
    }
}

#[test]
fn node_tag_of_a_node_id_is_its_first_eight_bytes_on_the_wire() {
    let mut node_id = [0x55u8; 32];
    node_id[..8].copy_from_slice(&GOLDEN[field::SRC_TAG]);
    let repr = Repr {
        src: NodeTag::from_node_id(&node_id),
        ..golden_repr()
    };
    assert_eq!(emit_header(&repr)[field::SRC_TAG], node_id[..8]);
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn seeded_random_reprs_round_trip() {
    let mut rng = StdRng::seed_from_u64(0x6e65_786c_696e_6b01);
    for i in 0..20_000 {
        let repr = random_repr(&mut rng);
        let frame = frame_for(&repr);
        assert_eq!(parse(&frame), Ok(repr), "case {i}: {repr:?}");
        let packet = Packet::new_checked(&frame[..]).expect("emitted frames are valid");
        assert!(packet.verify_checksum());
        assert_eq!(packet.payload().len(), usize::from(repr.payload_len));
    }
}

#[test]
fn seeded_random_headers_that_parse_re_emit_identically() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut parsed = 0;
    for _ in 0..50_000 {
        let mut header = [0u8; HEADER_LEN];
        rng.fill(&mut header[..]);
        // Steer towards the semantic checks: version 1, small codes, no payload.
        header[field::VER_FLAGS] = (VERSION << 4) | (header[0] & 0x0f);
        header[field::FRAME_TYPE] %= 7;
        header[field::DELIVERY_MODE] %= 6;
        if rng.random_bool(0.5) {
            header[field::RESERVED] = 0;
        }
        if rng.random_bool(0.5) {
            header[field::TENSOR].fill(0);
        }
        header[field::PAYLOAD_LEN].fill(0);
        refill(&mut header);
        if let Ok(repr) = parse(&header) {
            parsed += 1;
            assert_eq!(emit_header(&repr), header);
        }
    }
    assert!(parsed > 1_000, "only {parsed} random headers parsed");
}

// ---------------------------------------------------------------------------------------------
// Rejections, one class at a time

#[test]
fn short_buffers_are_truncated() {
    let frame = golden_frame();
    for len in 0..HEADER_LEN {
        let err = Error::Truncated { len };
        assert_eq!(Packet::new_checked(&frame[..len]).err(), Some(err));
        assert_eq!(parse(&frame[..len]), Err(err));
        assert_eq!(err.reason(), "truncated");
    }
}

#[test]
fn other_versions_are_refused_before_anything_else_is_read() {
    for version in (0..16u8).filter(|v| *v != VERSION) {
        let mut frame = golden_frame();
        frame[0] = (version << 4) | (frame[0] & 0x0f);
        // Without refilling the checksum: the version check comes first.
        assert_eq!(parse(&frame), Err(Error::BadVersion(version)));
        refill(&mut frame);
        assert_eq!(parse(&frame), Err(Error::BadVersion(version)));
    }
    assert_eq!(Error::BadVersion(2).reason(), "bad_version");
}

#[test]
fn any_single_bit_flip_outside_the_version_fails_the_checksum() {
    let frame = golden_frame();
    for byte in 0..HEADER_LEN {
        for bit in 0..8 {
            if byte == 0 && bit >= 4 {
                continue; // the version nibble: BadVersion, tested above
            }
            let mut bad = frame.clone();
            bad[byte] ^= 1 << bit;
            let err = parse(&bad).expect_err("a flipped bit is caught");
            assert!(
                matches!(err, Error::BadChecksum { stored, computed } if stored != computed),
                "byte {byte} bit {bit}: {err:?}"
            );
            assert_eq!(err.reason(), "bad_checksum");
            assert!(!Packet::new_unchecked(&bad[..]).verify_checksum());
        }
    }
}

#[test]
fn checksum_values_are_reported() {
    let mut frame = golden_frame();
    frame[field::CHECKSUM].copy_from_slice(&[0x12, 0x34]);
    assert_eq!(
        parse(&frame),
        Err(Error::BadChecksum {
            stored: 0x1234,
            computed: 0xd732
        })
    );
    // 0xffff is never a valid encoding: a full computation never yields "minus zero".
    frame[field::CHECKSUM].copy_from_slice(&[0xff, 0xff]);
    assert!(matches!(parse(&frame), Err(Error::BadChecksum { .. })));
}

#[test]
fn payload_length_beyond_the_buffer_is_refused() {
    let frame = golden_frame();
    let short = &frame[..frame.len() - 1];
    let err = Error::PayloadLength {
        declared: 1024,
        available: 1023,
    };
    assert_eq!(Packet::new_checked(short).err(), Some(err));
    assert_eq!(parse(short), Err(err));
    assert_eq!(err.reason(), "payload_length");
    // Header only: nothing of the payload present.
    assert_eq!(
        parse(&frame[..HEADER_LEN]),
        Err(Error::PayloadLength {
            declared: 1024,
            available: 0
        })
    );
}

#[test]
fn bytes_after_the_payload_are_not_part_of_the_frame() {
    let mut frame = golden_frame();
    frame.extend_from_slice(&[0xaa; 5]);
    assert_eq!(parse(&frame), Ok(golden_repr()));
    let packet = Packet::new_checked(&frame[..]).expect("trailing bytes are allowed");
    assert_eq!(packet.payload().len(), GOLDEN_PAYLOAD_LEN);
    assert_eq!(packet.frame_len(), HEADER_LEN + GOLDEN_PAYLOAD_LEN);
}

#[test]
fn unknown_frame_types_are_refused() {
    for code in (0..=u8::MAX).filter(|c| FrameType::try_from(*c).is_err()) {
        let mut frame = golden_frame();
        frame[field::FRAME_TYPE] = code;
        refill(&mut frame);
        assert_eq!(parse(&frame), Err(Error::UnknownFrameType(code)));
        // new_checked is structural only: the view is fine, the getter names the problem.
        let packet = Packet::new_checked(&frame[..]).expect("structurally valid");
        assert_eq!(packet.frame_type(), Err(Error::UnknownFrameType(code)));
    }
    assert_eq!(Error::UnknownFrameType(0).reason(), "unknown_frame_type");
}

#[test]
fn unknown_delivery_modes_are_refused() {
    for code in (0..=u8::MAX).filter(|c| DeliveryMode::try_from(*c).is_err()) {
        let mut frame = golden_frame();
        frame[field::DELIVERY_MODE] = code;
        refill(&mut frame);
        assert_eq!(parse(&frame), Err(Error::UnknownDeliveryMode(code)));
    }
    assert_eq!(
        Error::UnknownDeliveryMode(0).reason(),
        "unknown_delivery_mode"
    );
}

#[test]
fn hop_limit_zero_is_refused() {
    let mut frame = golden_frame();
    frame[field::HOP_LIMIT] = 0;
    refill(&mut frame);
    assert_eq!(parse(&frame), Err(Error::HopLimitZero));
    assert_eq!(Error::HopLimitZero.reason(), "hop_limit_zero");
    // Every frame type, not only data.
    for frame_type in FrameType::ALL {
        let repr = Repr {
            frame_type,
            flags: Flags::EMPTY,
            tensor: None,
            ..golden_repr()
        };
        let mut frame = frame_for(&repr);
        frame[field::HOP_LIMIT] = 0;
        refill(&mut frame);
        assert_eq!(parse(&frame), Err(Error::HopLimitZero), "{frame_type:?}");
    }
}

#[test]
fn reserved_byte_must_be_zero() {
    for bit in 0..8 {
        let mut frame = golden_frame();
        frame[field::RESERVED] = 1 << bit;
        refill(&mut frame);
        assert_eq!(
            parse(&frame),
            Err(Error::Reserved {
                offset: field::RESERVED
            })
        );
    }
    assert_eq!(Error::Reserved { offset: 5 }.reason(), "reserved");
}

#[test]
fn flags_a_frame_type_does_not_allow_are_reserved() {
    for frame_type in FrameType::ALL {
        for bits in 1..16u8 {
            let flags = Flags::from_bits(bits).expect("nibble");
            let repr = Repr {
                frame_type,
                flags: Flags::EMPTY,
                tensor: None,
                ..golden_repr()
            };
            let mut frame = frame_for(&repr);
            frame[field::VER_FLAGS] = (VERSION << 4) | bits;
            refill(&mut frame);
            let got = parse(&frame);
            if frame_type.allowed_flags().contains(flags) {
                assert_eq!(got.map(|r| r.flags), Ok(flags));
            } else {
                assert_eq!(
                    got,
                    Err(Error::Reserved { offset: 0 }),
                    "{frame_type:?} {bits:#x}"
                );
            }
        }
    }
}

#[test]
fn tensor_fields_are_reserved_where_no_tensor_is_carried() {
    // A non-data frame carries no tensor: any bit of bytes 58..64 is reserved.
    for frame_type in FrameType::ALL.into_iter().filter(|t| !t.carries_tensor()) {
        for offset in field::TENSOR {
            let repr = Repr {
                frame_type,
                flags: Flags::EMPTY,
                tensor: None,
                ..golden_repr()
            };
            let mut frame = frame_for(&repr);
            frame[offset] = 0x01;
            refill(&mut frame);
            assert_eq!(
                parse(&frame),
                Err(Error::Reserved { offset }),
                "{frame_type:?}"
            );
        }
    }
    // A data frame with dtype 0 carries no tensor: rank, alignment and inner dimension are
    // reserved.
    for offset in field::RANK_ALIGN..field::TENSOR.end {
        let mut frame = golden_frame();
        frame[field::TENSOR].fill(0);
        frame[offset] = 0x80;
        refill(&mut frame);
        assert_eq!(parse(&frame), Err(Error::Reserved { offset }));
    }
    // A scalar (rank 0) has no innermost dimension.
    let mut frame = golden_frame();
    frame[field::RANK_ALIGN] = 0x06;
    refill(&mut frame);
    assert_eq!(
        parse(&frame),
        Err(Error::Reserved {
            offset: field::INNER_DIM.start
        })
    );
}

#[test]
fn unknown_dtypes_are_refused() {
    for code in (1..=u8::MAX).filter(|c| Dtype::try_from(*c).is_err()) {
        let mut frame = golden_frame();
        frame[field::DTYPE] = code;
        refill(&mut frame);
        assert_eq!(parse(&frame), Err(Error::UnknownDtype(code)));
    }
    assert_eq!(Error::UnknownDtype(9).reason(), "unknown_dtype");
}

#[test]
fn tensor_frames_carry_whole_elements() {
    for dtype in Dtype::ALL {
        let size = dtype.element_bytes();
        for payload_len in [0u16, 1, 2, 3, 4, 6, 8, 12, 1000, 1001, 1024] {
            let repr = Repr {
                tensor: Some(TensorMeta::new(dtype, 2, 6, 4096).expect("valid")),
                payload_len,
                ..golden_repr()
            };
            let ok = payload_len % size == 0;
            let expected = Error::TensorPayloadLength { dtype, payload_len };
            // The sender refuses it...
            let mut header = [0u8; HEADER_LEN];
            let emitted = repr.emit(&mut Packet::new_unchecked(&mut header[..]));
            assert_eq!(emitted.is_ok(), ok, "{dtype:?} {payload_len}");
            // ...and so does the receiver.
            let mut frame = golden_frame();
            frame.resize(HEADER_LEN + usize::from(payload_len), 0);
            frame[field::DTYPE] = dtype.into();
            frame[field::PAYLOAD_LEN].copy_from_slice(&payload_len.to_be_bytes());
            refill(&mut frame);
            if ok {
                assert_eq!(parse(&frame), Ok(repr));
            } else {
                assert_eq!(emitted, Err(expected));
                assert_eq!(parse(&frame), Err(expected));
                assert_eq!(expected.reason(), "tensor_payload_length");
            }
        }
    }
}

#[test]
fn the_first_failing_check_is_reported() {
    // Truncated beats a wrong version.
    let mut frame = golden_frame();
    frame[0] = 0x2d;
    assert_eq!(parse(&frame[..10]), Err(Error::Truncated { len: 10 }));
    // Version beats checksum (tested above); checksum beats payload length.
    let mut frame = golden_frame();
    frame[field::PAYLOAD_LEN].copy_from_slice(&u16::MAX.to_be_bytes());
    assert!(matches!(parse(&frame), Err(Error::BadChecksum { .. })));
    // Payload length beats every semantic check.
    frame[field::FRAME_TYPE] = 0xee;
    frame[field::HOP_LIMIT] = 0;
    refill(&mut frame);
    assert!(matches!(parse(&frame), Err(Error::PayloadLength { .. })));
    // Then: frame type, delivery mode, hop limit, reserved, dtype, whole elements.
    let mut frame = golden_frame();
    frame[field::FRAME_TYPE] = 0xee;
    frame[field::DELIVERY_MODE] = 0xee;
    frame[field::HOP_LIMIT] = 0;
    frame[field::RESERVED] = 1;
    frame[field::DTYPE] = 0xee;
    frame[field::PAYLOAD_LEN].copy_from_slice(&3u16.to_be_bytes());
    let mut expect = vec![
        Error::UnknownFrameType(0xee),
        Error::UnknownDeliveryMode(0xee),
        Error::HopLimitZero,
        Error::Reserved {
            offset: field::RESERVED,
        },
        Error::UnknownDtype(0xee),
        Error::TensorPayloadLength {
            dtype: Dtype::Bf16,
            payload_len: 3,
        },
    ];
    expect.reverse();
    let fixes: [fn(&mut Vec<u8>); 6] = [
        |f| f[field::FRAME_TYPE] = 0x01,
        |f| f[field::DELIVERY_MODE] = 0x01,
        |f| f[field::HOP_LIMIT] = 1,
        |f| f[field::RESERVED] = 0,
        |f| f[field::DTYPE] = Dtype::Bf16.into(),
        |f| f[field::PAYLOAD_LEN].copy_from_slice(&4u16.to_be_bytes()),
    ];
    for fix in fixes {
        refill(&mut frame);
        assert_eq!(
            parse(&frame),
            Err(expect.pop().expect("one error per fault"))
        );
        fix(&mut frame);
    }
    refill(&mut frame);
    assert!(parse(&frame).is_ok());
}

#[test]
fn emit_refuses_what_receivers_would_drop_and_writes_nothing() {
    let untouched = [0x5au8; HEADER_LEN];
    let cases = [
        (
            Repr {
                frame_type: FrameType::Ack,
                tensor: None,
                ..golden_repr()
            },
            Error::Reserved { offset: 0 },
        ),
        (
            Repr {
                frame_type: FrameType::Probe,
                flags: Flags::EMPTY,
                ..golden_repr()
            },
            Error::Reserved {
                offset: field::DTYPE,
            },
        ),
        (
            Repr {
                payload_len: 1023,
                ..golden_repr()
            },
            Error::TensorPayloadLength {
                dtype: Dtype::Bf16,
                payload_len: 1023,
            },
        ),
    ];
    for (repr, err) in cases {
        assert_eq!(repr.check(), Err(err));
        let mut buffer = untouched;
        assert_eq!(
            repr.emit(&mut Packet::new_unchecked(&mut buffer[..])),
            Err(err)
        );
        assert_eq!(buffer, untouched);
    }
    let mut short = [0u8; HEADER_LEN - 1];
    assert_eq!(
        golden_repr().emit(&mut Packet::new_unchecked(&mut short[..])),
        Err(Error::Truncated { len: 63 })
    );
    assert_eq!(short, [0u8; HEADER_LEN - 1]);
}

// ---------------------------------------------------------------------------------------------
// In-place forwarding updates

/// The header with `change` applied and the checksum recomputed from scratch.
fn recomputed(header: &[u8], change: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut copy = header.to_vec();
    change(&mut copy);
    refill(&mut copy);
    copy
}

#[test]
fn hop_limit_decrement_golden() {
    let mut frame = golden_frame();
    let mut packet = Packet::new_unchecked(&mut frame[..]);
    assert_eq!(packet.decrement_hop_limit().map(HopLimit::get), Ok(63));
    assert_eq!(packet.checksum(), 0xd832); // docs/nexlink.md §5
    assert!(packet.verify_checksum());
}

#[test]
fn incremental_hop_limit_update_equals_full_recompute() {
    let mut rng = StdRng::seed_from_u64(1624);
    let mut plus_zero_seen = false;
    for _ in 0..20_000 {
        let repr = random_repr(&mut rng);
        let mut header = emit_header(&repr);
        let before = header;
        let mut packet = Packet::new_unchecked(&mut header[..]);
        match packet.decrement_hop_limit() {
            Ok(lowered) => {
                assert_eq!(lowered.get(), repr.hop_limit.get() - 1);
                let expected = recomputed(&before, |h| h[field::HOP_LIMIT] -= 1);
                assert_eq!(header.to_vec(), expected);
                plus_zero_seen |= header[field::CHECKSUM] == [0, 0];
                let mut after = repr;
                after.hop_limit = lowered;
                assert_eq!(parse_header(&header), Ok(after));
            }
            Err(err) => {
                assert_eq!(repr.hop_limit.get(), 1);
                assert_eq!(err, Error::HopLimitExceeded);
                assert_eq!(header, before, "a refused decrement changes nothing");
            }
        }
    }
    // Also walk every hop limit down to 1 from a header whose checksum reaches 0x0000, the
    // value RFC 1141's update would have written as 0xffff.
    let mut header = emit_header(&Repr {
        hop_limit: HopLimit::MAX,
        ..golden_repr()
    });
    for b in 0u8..=255 {
        header[field::SEQ_NUMBER.start + 3] = b;
        refill(&mut header);
        let mut walk = header;
        let mut packet = Packet::new_unchecked(&mut walk[..]);
        while packet.decrement_hop_limit().is_ok() {
            let h = packet.hop_limit().expect("never 0").get();
            plus_zero_seen |= packet.checksum() == 0;
            let expected = recomputed(packet.header(), |_| {});
            assert_eq!(packet.header(), &expected[..], "hop {h}");
        }
        assert_eq!(packet.hop_limit().map(HopLimit::get), Ok(1));
    }
    assert!(plus_zero_seen, "the 0x0000 checksum case was not exercised");
}

#[test]
fn routing_key_rewrite_golden() {
    // docs/nexlink.md §5: the decremented golden vector (0xd832) with its key rewritten.
    let mut frame = golden_frame();
    let mut packet = Packet::new_unchecked(&mut frame[..]);
    packet.decrement_hop_limit().expect("hop limit 64");
    packet.rewrite_routing_key(RoutingKey(0x5e41_0000_0000_0000_0000_0000_0000_b001));
    assert_eq!(packet.checksum(), 0x8633);
    assert!(packet.verify_checksum());
    assert_eq!(packet.payload(), &golden_frame()[HEADER_LEN..]);
}

#[test]
fn incremental_routing_key_rewrite_equals_full_recompute() {
    let mut rng = StdRng::seed_from_u64(16_240);
    let mut plus_zero_seen = false;
    for round in 0..20_000 {
        let repr = random_repr(&mut rng);
        let old = repr.routing_key.0;
        // Random keys, plus the shapes an incremental update can get wrong: the same key, one
        // changed word, all zeros, all ones.
        let new = match round % 5 {
            0 => old,
            1 => old ^ (u128::from(rng.random::<u16>() | 1) << (16 * rng.random_range(0..8))),
            2 => 0,
            3 => u128::MAX,
            _ => rng.random(),
        };
        let mut header = emit_header(&repr);
        let before = header;
        let mut packet = Packet::new_unchecked(&mut header[..]);
        packet.rewrite_routing_key(RoutingKey(new));
        let expected = recomputed(&before, |h| {
            h[field::ROUTING_KEY].copy_from_slice(&new.to_be_bytes());
        });
        assert_eq!(header.to_vec(), expected, "key {old:032x} -> {new:032x}");
        plus_zero_seen |= header[field::CHECKSUM] == [0, 0];
        let mut after = repr;
        after.routing_key = RoutingKey(new);
        assert_eq!(parse_header(&header), Ok(after));

        // The forwarder's order: hop limit first, then the key; still a full recompute.
        let mut header = before;
        let mut packet = Packet::new_unchecked(&mut header[..]);
        if packet.decrement_hop_limit().is_ok() {
            packet.rewrite_routing_key(RoutingKey(new));
            let expected = recomputed(&before, |h| {
                h[field::HOP_LIMIT] -= 1;
                h[field::ROUTING_KEY].copy_from_slice(&new.to_be_bytes());
            });
            assert_eq!(header.to_vec(), expected);
        }
    }
    // Search for a rewrite whose result is the 0x0000 checksum (RFC 1141's update would write
    // 0xffff): adjust the last key word until a full recompute gives 0.
    let mut header = golden_frame()[..HEADER_LEN].to_vec();
    for low in 0..=u16::MAX {
        let key = (0x0011_2233_4455_6677_8899_aabb_ccdd_0000u128) | u128::from(low);
        let target = recomputed(&header, |h| {
            h[field::ROUTING_KEY].copy_from_slice(&key.to_be_bytes());
        });
        if target[field::CHECKSUM] == [0, 0] {
            Packet::new_unchecked(&mut header[..]).rewrite_routing_key(RoutingKey(key));
            assert_eq!(header, target);
            plus_zero_seen = true;
            break;
        }
    }
    assert!(plus_zero_seen, "the 0x0000 checksum case was not exercised");
}

#[test]
fn routing_key_rewrite_keeps_a_bad_checksum_bad() {
    let mut frame = golden_frame();
    frame[field::CHECKSUM.start] ^= 0x40;
    let mut packet = Packet::new_unchecked(&mut frame[..]);
    packet.rewrite_routing_key(RoutingKey(0xfeed));
    assert!(!packet.verify_checksum());
    assert_eq!(packet.routing_key(), RoutingKey(0xfeed));
    assert_eq!(packet.payload(), &golden_frame()[HEADER_LEN..]);
}

#[test]
fn decrement_keeps_a_bad_checksum_bad_and_refuses_zero() {
    let mut frame = golden_frame();
    frame[field::CHECKSUM.start] ^= 0x40;
    let mut packet = Packet::new_unchecked(&mut frame[..]);
    assert!(packet.decrement_hop_limit().is_ok());
    assert!(!packet.verify_checksum());

    let mut frame = golden_frame();
    frame[field::HOP_LIMIT] = 0;
    let before = frame.clone();
    let mut packet = Packet::new_unchecked(&mut frame[..]);
    assert_eq!(packet.decrement_hop_limit(), Err(Error::HopLimitZero));
    assert_eq!(frame, before);
    assert_eq!(Error::HopLimitExceeded.reason(), "hop_limit_exceeded");
}

#[test]
fn congestion_marking_updates_the_checksum_incrementally() {
    let mut rng = StdRng::seed_from_u64(3168);
    for _ in 0..5_000 {
        let repr = random_repr(&mut rng);
        let mut header = emit_header(&repr);
        let before = header;
        let marked = Packet::new_unchecked(&mut header[..]).mark_congestion_experienced();
        if repr.ecn == Ecn::NotEct {
            assert!(!marked);
            assert_eq!(header, before);
        } else {
            assert!(marked);
            let expected = recomputed(&before, |h| h[field::TCLASS_ECN] |= 0b11);
            assert_eq!(header.to_vec(), expected);
            let mut after = repr;
            after.ecn = Ecn::Ce;
            assert_eq!(parse_header(&header), Ok(after));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeded mutations (what the fuzz target does, on every `cargo test`)

#[test]
fn mutated_frames_never_panic_and_what_parses_re_emits_identically() {
    let mut rng = StdRng::seed_from_u64(0xf022);
    // Small payloads, so that truncation and extension land on both sides of the frame's end.
    let corpus: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            let mut repr = random_repr(&mut rng);
            repr.payload_len = match repr.tensor {
                Some(meta) => rng.random_range(0..=16) * meta.dtype().element_bytes(),
                None => rng.random_range(0..=128),
            };
            frame_for(&repr)
        })
        .chain([golden_frame()])
        .collect();
    let mut outcomes = std::collections::BTreeMap::new();
    for _ in 0..50_000 {
        let mut frame = corpus[rng.random_range(0..corpus.len())].clone();
        for _ in 0..rng.random_range(1..=3) {
            match rng.random_range(0..4) {
                0 if !frame.is_empty() => {
                    let i = rng.random_range(0..frame.len().min(HEADER_LEN));
                    frame[i] ^= 1 << rng.random_range(0..8);
                }
                1 if !frame.is_empty() => {
                    let i = rng.random_range(0..frame.len().min(HEADER_LEN));
                    frame[i] = rng.random();
                }
                2 => frame.truncate(rng.random_range(0..=frame.len())),
                _ => frame.extend((0..rng.random_range(1..32)).map(|_| rng.random::<u8>())),
            }
        }
        if frame.len() >= HEADER_LEN && rng.random_bool(0.8) {
            refill(&mut frame);
        }
        let outcome = match parse(&frame) {
            Ok(repr) => {
                assert_eq!(emit_header(&repr)[..], frame[..HEADER_LEN]);
                let packet = Packet::new_checked(&frame[..]).expect("parsed implies checked");
                assert_eq!(packet.payload().len(), usize::from(repr.payload_len));
                "ok"
            }
            Err(err) => {
                assert!(Error::REASONS.contains(&err.reason()));
                err.reason()
            }
        };
        *outcomes.entry(outcome).or_insert(0u32) += 1;
    }
    // The mutations reach every decoding outcome.
    for reason in Error::REASONS
        .iter()
        .filter(|r| **r != "hop_limit_exceeded")
        .chain(&["ok"])
    {
        assert!(
            outcomes.contains_key(reason),
            "never saw {reason}: {outcomes:?}"
        );
    }
}
