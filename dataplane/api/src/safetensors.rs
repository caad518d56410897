//! Tensors to and from the safetensors format (an 8-byte little-endian header length, a JSON
//! header, raw little-endian bytes), through Hugging Face's `safetensors` crate.
//!
//! Reading slices each tensor's data out of the input without copying it; every tensor is
//! checked against NexAPI's rules ([`TensorHeader::check`]) before it is returned.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};

use crate::wire::{DType, Limits, Tensor, TensorHeader, WireError, contiguous_strides};

/// A safetensors file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// The file's structure is invalid.
    #[error("safetensors: {0}")]
    Format(String),
    /// A dtype NexAPI does not carry (e.g. the FP8 variants).
    #[error("tensor {name:?}: dtype {dtype} is not a NexAPI dtype")]
    DType {
        /// The tensor.
        name: String,
        /// The safetensors dtype.
        dtype: String,
    },
    /// A tensor breaks a NexAPI rule (size limit, strides).
    #[error("tensor {name:?}: {error}")]
    Tensor {
        /// The tensor.
        name: String,
        /// The rule.
        error: WireError,
    },
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn to_nexus(d: StDtype) -> Option<DType> {
    Some(match d {
        StDtype::BOOL => DType::Bool,
        StDtype::U8 => DType::U8,
        StDtype::U16 => DType::U16,
        StDtype::U32 => DType::U32,
        StDtype::U64 => DType::U64,
        StDtype::I8 => DType::I8,
        StDtype::I16 => DType::I16,
        StDtype::I32 => DType::I32,
        StDtype::I64 => DType::I64,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        _ => return None,
    })
}

fn to_safetensors(d: DType) -> Option<StDtype> {
    Some(match d {
        DType::Bool => StDtype::BOOL,
        DType::U8 => StDtype::U8,
        DType::U16 => StDtype::U16,
        DType::U32 => StDtype::U32,
        DType::U64 => StDtype::U64,
        DType::I8 => StDtype::I8,
        DType::I16 => StDtype::I16,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
        DType::Bytes => return None,
    })
}

/// The tensors of a safetensors buffer, in name order, numbered from `first_transfer`.
pub fn read(
    bytes: &Bytes,
    first_transfer: u64,
    limits: &Limits,
) -> Result<Vec<Tensor>, SafetensorsError> {
    let parsed =
        SafeTensors::deserialize(bytes).map_err(|e| SafetensorsError::Format(e.to_string()))?;
    let mut named = parsed.tensors();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(named.len());
    for (i, (name, view)) in named.into_iter().enumerate() {
        let dtype = to_nexus(view.dtype()).ok_or_else(|| SafetensorsError::DType {
            name: name.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
        let header = TensorHeader {
            transfer: first_transfer + i as u64,
            strides: contiguous_strides(&shape),
            name: name.clone(),
            dtype,
            shape,
            kv: None,
        };
        header
            .check(view.data().len() as u64, limits)
            .map_err(|error| SafetensorsError::Tensor {
                name: name.clone(),
                error,
            })?;
        out.push(Tensor {
            header,
            data: bytes.slice_ref(view.data()),
        });
    }
    Ok(out)
}

/// Reads a safetensors file.
pub fn read_file(
    path: &Path,
    first_transfer: u64,
    limits: &Limits,
) -> Result<Vec<Tensor>, SafetensorsError> {
    read(&Bytes::from(std::fs::read(path)?), first_transfer, limits)
}

/// A safetensors buffer of `tensors` (each C-contiguous) with `metadata`.
pub fn write(
    tensors: &[Tensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, SafetensorsError> {
    let mut views = Vec::with_capacity(tensors.len());
    for t in tensors {
        let h = &t.header;
        let name = h.name.clone();
        if h.strides != contiguous_strides(&h.shape) {
            return Err(SafetensorsError::Tensor {
                name,
                error: WireError::Shape("safetensors holds only C-contiguous tensors".into()),
            });
        }
        let dtype = to_safetensors(h.dtype).ok_or_else(|| SafetensorsError::DType {
            name: name.clone(),
            dtype: h.dtype.kserve_name().into(),
        })?;
        let shape: Vec<usize> = h.shape.iter().map(|&d| d as usize).collect();
        let view = TensorView::new(dtype, shape, &t.data)
            .map_err(|e| SafetensorsError::Format(format!("tensor {name:?}: {e}")))?;
        views.push((name, view));
    }
    safetensors::serialize(views, metadata).map_err(|e| SafetensorsError::Format(e.to_string()))
}

/// Writes a safetensors file.
pub fn write_file(
    path: &Path,
    tensors: &[Tensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<(), SafetensorsError> {
    std::fs::write(path, write(tensors, metadata)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dtype: DType, shape: &[u64]) -> Tensor {
        let header = TensorHeader::contiguous(0, name, dtype, shape);
        let len = header.elements().expect("small") as usize * dtype.size().expect("fixed");
        Tensor {
            header,
            data: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>()),
        }
    }

    #[test]
    fn round_trip_through_safetensors() {
        let tensors = vec![
            tensor("a.weight", DType::F32, &[3, 4]),
            tensor("b.bias", DType::BF16, &[5]),
            tensor("c.ids", DType::I64, &[2, 1, 2]),
        ];
        let mut meta = HashMap::new();
        meta.insert("format".to_owned(), "pt".to_owned());
        let bytes = Bytes::from(write(&tensors, Some(meta)).expect("write"));
        let back = read(&bytes, 10, &Limits::default()).expect("read");
        assert_eq!(back.len(), 3);
        for (i, (b, t)) in back.iter().zip(&tensors).enumerate() {
            assert_eq!(b.header.transfer, 10 + i as u64);
            assert_eq!(b.header.name, t.header.name);
            assert_eq!(b.header.dtype, t.header.dtype);
            assert_eq!(b.header.shape, t.header.shape);
            assert_eq!(b.data, t.data);
            // Sliced, not copied.
            let base = bytes.as_ptr() as usize;
            assert!((base..base + bytes.len()).contains(&(b.data.as_ptr() as usize)));
        }
    }

    #[test]
    fn bad_files_are_refused() {
        let limits = Limits::default();
        for bad in [
            &b""[..],
            &b"\x08\x00\x00\x00\x00\x00\x00\x00{}"[..],
            &b"\xff\xff\xff\xff\xff\xff\xff\xff"[..],
            &b"\x02\x00\x00\x00\x00\x00\x00\x00{"[..],
        ] {
            assert!(
                read(&Bytes::from_static(bad), 0, &limits).is_err(),
                "{bad:?}"
            );
        }
        let big = Bytes::from(write(&[tensor("x", DType::U8, &[64])], None).expect("write"));
        let small = Limits {
            tensor_bytes_max: 32,
            ..limits
        };
        assert!(matches!(
            read(&big, 0, &small),
            Err(SafetensorsError::Tensor { .. })
        ));
        // A truncated file.
        assert!(read(&big.slice(..big.len() - 1), 0, &limits).is_err());
        // Non-contiguous strides cannot be written.
        let mut t = tensor("t", DType::U8, &[2, 2]);
        t.header.strides = vec![1, 2];
        assert!(write(&[t], None).is_err());
    }
}
