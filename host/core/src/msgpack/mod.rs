//! A bounded msgpack reader and a small writer, used by every step of the data
//! path that touches bytes from the network or the journal (envelope decode,
//! status decode, journal records).
//!
//! Why our own walker instead of `rmp-serde`: untrusted input must never be
//! able to exhaust the native stack (rmp-serde recurses once per nesting
//! level, so a few KB of `0x91` bytes overflow it) nor make us allocate
//! according to a length it merely *declares*. Everything here is iterative,
//! checks every declared length against the bytes that are actually left
//! before looking further (an `array32` header claiming 4 billion elements
//! fails at once: each element needs at least one byte), and never allocates
//! more than `max_depth` counters.
//!
//! * [`skip_value`] finds the byte span of one value without decoding it and
//!   validates it (well-formed, nesting depth <= `max_depth`). The envelope
//!   uses it to hand a command's `payload` to the handler as the original
//!   bytes, untouched.
//! * [`validate`] checks that a buffer holds exactly one such value.
//! * [`Reader`] reads the typed fields of our own maps and arrays.
//! * [`Writer`] encodes with `rmp` (most compact representation for every
//!   integer and length, as the msgpack spec recommends).
//!
//! Depth counts containers: a scalar has depth 0, `[]` depth 1, `[[1]]`
//! depth 2. An envelope is a map (depth 1), so its payload may nest
//! `max_depth - 1` further levels.

use alloc::vec::Vec;

use rmp::Marker;

/// Default nesting limit for values from the network.
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// Why a byte string is not the msgpack value we expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgpackError {
    #[error("msgpack ends early: byte {at} starts or declares more than the {left} bytes left")]
    Truncated { at: usize, left: usize },
    #[error("reserved msgpack marker 0xc1 at byte {at}")]
    ReservedMarker { at: usize },
    #[error("msgpack nests deeper than {limit} levels at byte {at}")]
    TooDeep { at: usize, limit: usize },
    #[error("expected {expected} at byte {at}")]
    WrongType { at: usize, expected: &'static str },
    #[error("string at byte {at} is not valid UTF-8")]
    InvalidUtf8 { at: usize },
    #[error("integer at byte {at} does not fit {expected}")]
    OutOfRange { at: usize, expected: &'static str },
    #[error("{count} unexpected bytes after the value, from byte {at}")]
    TrailingBytes { at: usize, count: usize },
}

/// What one value header tells the walker.
enum Header {
    /// The whole value has been consumed.
    Scalar,
    /// A container whose header has been consumed; this many values follow
    /// (two per map entry).
    Container(u64),
}

/// Returns the end (exclusive) of the single msgpack value starting at
/// `pos`, after checking that it is well-formed and nests at most
/// `max_depth` containers deep. Iterative; memory is one counter per open
/// container, at most `max_depth` of them.
pub fn skip_value(bytes: &[u8], pos: usize, max_depth: usize) -> Result<usize, MsgpackError> {
    let mut r = Reader::at(bytes, pos);
    // Values still to read in each open container, innermost last.
    let mut open: Vec<u64> = Vec::new();
    // Each iteration consumes at least one byte, so this ends after at most
    // `bytes.len()` iterations.
    loop {
        let at = r.pos;
        if let Header::Container(children) = r.read_header()? {
            if open.len() >= max_depth {
                return Err(MsgpackError::TooDeep {
                    at,
                    limit: max_depth,
                });
            }
            if children > 0 {
                open.push(children);
                continue;
            }
        }
        // One value is complete: count it in its parent, closing every
        // container this completes.
        loop {
            match open.last_mut() {
                None => return Ok(r.pos),
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        break;
                    }
                    open.pop();
                }
            }
        }
    }
}

/// Like [`skip_value`] but without a depth limit and with O(1) memory: used
/// only for best-effort scans (finding the `id` of an envelope we are about
/// to reject), never to accept a value.
pub(crate) fn skip_value_unbounded(bytes: &[u8], pos: usize) -> Result<usize, MsgpackError> {
    let mut r = Reader::at(bytes, pos);
    let mut outstanding: u64 = 1;
    while outstanding > 0 {
        outstanding -= 1;
        if let Header::Container(children) = r.read_header()? {
            outstanding += children;
            // Every outstanding value needs at least one more byte.
            if outstanding > r.remaining() as u64 {
                return Err(MsgpackError::Truncated {
                    at: r.pos,
                    left: r.remaining(),
                });
            }
        }
    }
    Ok(r.pos)
}

/// Checks that `bytes` is exactly one well-formed msgpack value nesting at
/// most `max_depth` levels.
pub fn validate(bytes: &[u8], max_depth: usize) -> Result<(), MsgpackError> {
    let end = skip_value(bytes, 0, max_depth)?;
    if end != bytes.len() {
        return Err(MsgpackError::TrailingBytes {
            at: end,
            count: bytes.len() - end,
        });
    }
    Ok(())
}

/// A cursor over msgpack bytes with typed, bounds-checked reads. A failed
/// read leaves the cursor at an unspecified position; callers stop there.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub fn at(bytes: &'a [u8], pos: usize) -> Self {
        Reader {
            bytes,
            pos: pos.min(bytes.len()),
        }
    }

    /// Offset of the next unread byte.
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn is_at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn truncated(&self) -> MsgpackError {
        MsgpackError::Truncated {
            at: self.pos,
            left: self.remaining(),
        }
    }

    fn byte(&mut self) -> Result<u8, MsgpackError> {
        let b = *self.bytes.get(self.pos).ok_or_else(|| self.truncated())?;
        self.pos += 1;
        Ok(b)
    }

    /// Takes `n` bytes, failing before touching anything if fewer are left.
    fn take(&mut self, n: u64) -> Result<&'a [u8], MsgpackError> {
        if n > self.remaining() as u64 {
            return Err(self.truncated());
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn be(&mut self, n: u64) -> Result<u64, MsgpackError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn peek(&self) -> Result<Marker, MsgpackError> {
        self.bytes
            .get(self.pos)
            .map(|b| Marker::from_u8(*b))
            .ok_or_else(|| self.truncated())
    }

    /// Consumes one value header (and a scalar's body).
    fn read_header(&mut self) -> Result<Header, MsgpackError> {
        let at = self.pos;
        let len = match Marker::from_u8(self.byte()?) {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                0
            }
            Marker::U8 | Marker::I8 => 1,
            Marker::U16 | Marker::I16 => 2,
            Marker::U32 | Marker::I32 | Marker::F32 => 4,
            Marker::U64 | Marker::I64 | Marker::F64 => 8,
            Marker::FixStr(n) => u64::from(n),
            Marker::Str8 | Marker::Bin8 => self.be(1)?,
            Marker::Str16 | Marker::Bin16 => self.be(2)?,
            Marker::Str32 | Marker::Bin32 => self.be(4)?,
            // Extension types: one type byte, then the data.
            Marker::FixExt1 => 2,
            Marker::FixExt2 => 3,
            Marker::FixExt4 => 5,
            Marker::FixExt8 => 9,
            Marker::FixExt16 => 17,
            Marker::Ext8 => self.be(1)? + 1,
            Marker::Ext16 => self.be(2)? + 1,
            Marker::Ext32 => self.be(4)? + 1,
            Marker::FixArray(n) => return self.container(u64::from(n)),
            Marker::Array16 => {
                let n = self.be(2)?;
                return self.container(n);
            }
            Marker::Array32 => {
                let n = self.be(4)?;
                return self.container(n);
            }
            Marker::FixMap(n) => return self.container(2 * u64::from(n)),
            Marker::Map16 => {
                let n = self.be(2)?;
                return self.container(2 * n);
            }
            Marker::Map32 => {
                let n = self.be(4)?;
                return self.container(2 * n);
            }
            Marker::Reserved => return Err(MsgpackError::ReservedMarker { at }),
        };
        self.take(len)?;
        Ok(Header::Scalar)
    }

    /// Fails fast when a container declares more values than bytes left.
    fn container(&self, children: u64) -> Result<Header, MsgpackError> {
        if children > self.remaining() as u64 {
            return Err(self.truncated());
        }
        Ok(Header::Container(children))
    }

    /// True (and consumed) if the next value is `nil`.
    pub fn read_nil(&mut self) -> Result<bool, MsgpackError> {
        if self.peek()? == Marker::Null {
            self.pos += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads a map header; the count is already checked against the bytes left.
    pub fn read_map_len(&mut self) -> Result<u32, MsgpackError> {
        let at = self.pos;
        let n = match Marker::from_u8(self.byte()?) {
            Marker::FixMap(n) => u64::from(n),
            Marker::Map16 => self.be(2)?,
            Marker::Map32 => self.be(4)?,
            _ => {
                return Err(MsgpackError::WrongType {
                    at,
                    expected: "a map",
                })
            }
        };
        self.container(2 * n)?;
        Ok(n as u32)
    }

    /// Reads an array header; the count is already checked against the bytes left.
    pub fn read_array_len(&mut self) -> Result<u32, MsgpackError> {
        let at = self.pos;
        let n = match Marker::from_u8(self.byte()?) {
            Marker::FixArray(n) => u64::from(n),
            Marker::Array16 => self.be(2)?,
            Marker::Array32 => self.be(4)?,
            _ => {
                return Err(MsgpackError::WrongType {
                    at,
                    expected: "an array",
                })
            }
        };
        self.container(n)?;
        Ok(n as u32)
    }

    /// Reads a string's raw bytes (not checked for UTF-8).
    pub fn read_str_bytes(&mut self) -> Result<&'a [u8], MsgpackError> {
        let at = self.pos;
        let n = match Marker::from_u8(self.byte()?) {
            Marker::FixStr(n) => u64::from(n),
            Marker::Str8 => self.be(1)?,
            Marker::Str16 => self.be(2)?,
            Marker::Str32 => self.be(4)?,
            _ => {
                return Err(MsgpackError::WrongType {
                    at,
                    expected: "a string",
                })
            }
        };
        self.take(n)
    }

    /// Reads a map key: `Some(bytes)` for a string key, `None` (key skipped)
    /// for any other type, which no map of ours uses.
    pub fn read_key(&mut self, max_depth: usize) -> Result<Option<&'a [u8]>, MsgpackError> {
        match self.peek()? {
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                self.read_str_bytes().map(Some)
            }
            _ => self.skip(max_depth).map(|_| None),
        }
    }

    /// Reads a UTF-8 string.
    pub fn read_str(&mut self) -> Result<&'a str, MsgpackError> {
        let at = self.pos;
        let raw = self.read_str_bytes()?;
        core::str::from_utf8(raw).map_err(|_| MsgpackError::InvalidUtf8 { at })
    }

    /// Reads a `bin` value's bytes.
    pub fn read_bin(&mut self) -> Result<&'a [u8], MsgpackError> {
        let at = self.pos;
        let n = match Marker::from_u8(self.byte()?) {
            Marker::Bin8 => self.be(1)?,
            Marker::Bin16 => self.be(2)?,
            Marker::Bin32 => self.be(4)?,
            _ => {
                return Err(MsgpackError::WrongType {
                    at,
                    expected: "binary data",
                })
            }
        };
        self.take(n)
    }

    /// Reads a non-negative integer in any encoding (positive fixint, uint
    /// 8..64, or a signed int holding a value >= 0, as some encoders emit).
    pub fn read_u64(&mut self) -> Result<u64, MsgpackError> {
        let at = self.pos;
        let negative = MsgpackError::OutOfRange {
            at,
            expected: "an unsigned integer",
        };
        let sign = |v: u64, bits: u32| -> Result<u64, MsgpackError> {
            // Sign bit of a `bits`-wide two's complement value.
            if v >> (bits - 1) & 1 == 1 {
                Err(negative.clone())
            } else {
                Ok(v)
            }
        };
        match Marker::from_u8(self.byte()?) {
            Marker::FixPos(n) => Ok(u64::from(n)),
            Marker::U8 => self.be(1),
            Marker::U16 => self.be(2),
            Marker::U32 => self.be(4),
            Marker::U64 => self.be(8),
            Marker::I8 => sign(self.be(1)?, 8),
            Marker::I16 => sign(self.be(2)?, 16),
            Marker::I32 => sign(self.be(4)?, 32),
            Marker::I64 => sign(self.be(8)?, 64),
            Marker::FixNeg(_) => Err(negative.clone()),
            _ => Err(MsgpackError::WrongType {
                at,
                expected: "an unsigned integer",
            }),
        }
    }

    /// Reads a boolean (`true` / `false`, nothing else).
    pub fn read_bool(&mut self) -> Result<bool, MsgpackError> {
        let at = self.pos;
        match Marker::from_u8(self.byte()?) {
            Marker::True => Ok(true),
            Marker::False => Ok(false),
            _ => Err(MsgpackError::WrongType {
                at,
                expected: "a boolean",
            }),
        }
    }

    /// Reads a non-negative integer that fits a `u32`.
    pub fn read_u32(&mut self) -> Result<u32, MsgpackError> {
        let at = self.pos;
        let v = self.read_u64()?;
        u32::try_from(v).map_err(|_| MsgpackError::OutOfRange {
            at,
            expected: "a 32-bit unsigned integer",
        })
    }

    /// Returns the raw bytes of the next value (validated, depth-bounded).
    pub fn read_raw(&mut self, max_depth: usize) -> Result<&'a [u8], MsgpackError> {
        let start = self.pos;
        let end = skip_value(self.bytes, start, max_depth)?;
        self.pos = end;
        Ok(&self.bytes[start..end])
    }

    /// Skips the next value (validated, depth-bounded).
    pub fn skip(&mut self, max_depth: usize) -> Result<(), MsgpackError> {
        self.read_raw(max_depth).map(|_| ())
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self) -> Result<(), MsgpackError> {
        if self.is_at_end() {
            Ok(())
        } else {
            Err(MsgpackError::TrailingBytes {
                at: self.pos,
                count: self.remaining(),
            })
        }
    }

    pub(crate) fn skip_unbounded(&mut self) -> Result<(), MsgpackError> {
        self.pos = skip_value_unbounded(self.bytes, self.pos)?;
        Ok(())
    }
}

mod writer;
pub use writer::Writer;

#[cfg(test)]
mod tests;
