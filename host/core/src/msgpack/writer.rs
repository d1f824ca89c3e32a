//! The msgpack writer: our own maps and arrays (envelopes, statuses,
//! journal records) encoded with `rmp`, in the most compact form for every
//! integer and length.

use alloc::vec::Vec;

/// Builds msgpack into a `Vec<u8>` with `rmp`'s encoders. Writing to memory
/// cannot fail, so the methods return `&mut Self` for chaining.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: rmp::encode::ByteBuf,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: rmp::encode::ByteBuf::with_capacity(capacity),
        }
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.buf.into_vec()
    }

    pub fn as_slice(&self) -> &[u8] {
        self.buf.as_slice()
    }

    // `ByteBuf`'s error type is `Infallible`: the discarded results below
    // can only ever be `Ok`.

    pub fn map_len(&mut self, len: u32) -> &mut Self {
        let _ = rmp::encode::write_map_len(&mut self.buf, len);
        self
    }

    pub fn array_len(&mut self, len: u32) -> &mut Self {
        let _ = rmp::encode::write_array_len(&mut self.buf, len);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        let _ = rmp::encode::write_str(&mut self.buf, s);
        self
    }

    pub fn uint(&mut self, v: u64) -> &mut Self {
        let _ = rmp::encode::write_uint(&mut self.buf, v);
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        let _ = rmp::encode::write_bool(&mut self.buf, v);
        self
    }

    pub fn nil(&mut self) -> &mut Self {
        let _ = rmp::encode::write_nil(&mut self.buf);
        self
    }

    pub fn bin(&mut self, data: &[u8]) -> &mut Self {
        let _ = rmp::encode::write_bin(&mut self.buf, data);
        self
    }

    /// Appends bytes that already are one encoded msgpack value.
    pub fn raw(&mut self, value: &[u8]) -> &mut Self {
        self.buf.as_mut_vec().extend_from_slice(value);
        self
    }

    /// A `u64` or `nil`.
    pub fn opt_uint(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.uint(v),
            None => self.nil(),
        }
    }

    /// A string or `nil`.
    pub fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.str(v),
            None => self.nil(),
        }
    }
}
