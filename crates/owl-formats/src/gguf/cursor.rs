//! A little-endian reader over a byte slice that never reads past the end, and never lets
//! a count from the file size an allocation before checking that the file could hold it.
//!
//! Field names for error messages are passed as closures, so they cost nothing unless an
//! error is actually built.

use super::error::GgufError;

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos as u64
    }

    pub(crate) fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    pub(crate) fn file_size(&self) -> u64 {
        self.buf.len() as u64
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: u64, field: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                field: field(),
                offset: self.pos(),
                needed: n,
                file_size: self.file_size(),
            });
        }
        let start = self.pos;
        // n <= remaining <= usize::MAX, so the cast and the addition are exact.
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, field: impl FnOnce() -> String) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: impl FnOnce() -> String) -> Result<u8, GgufError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u32(&mut self, field: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// Checks that `count` entries of at least `min_each` bytes each can still be in the file
    /// (the count itself was read at `count_offset`). Call before allocating for them.
    pub(crate) fn check_count(
        &self,
        count: u64,
        min_each: u64,
        count_offset: u64,
        field: impl FnOnce() -> String,
    ) -> Result<(), GgufError> {
        match count.checked_mul(min_each) {
            Some(total) if total <= self.remaining() => Ok(()),
            _ => Err(GgufError::CountTooLarge {
                field: field(),
                offset: count_offset,
                count,
                min_each,
                remaining: self.remaining(),
            }),
        }
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes (no terminator).
    pub(crate) fn string(&mut self, field: impl Fn() -> String) -> Result<String, GgufError> {
        self.str(field).map(str::to_owned)
    }

    /// A GGUF string's bytes, borrowed from the buffer, UTF-8 or not.
    pub(crate) fn byte_string(&mut self, field: impl Fn() -> String) -> Result<&'a [u8], GgufError> {
        let len = self.u64(|| format!("{} (length)", field()))?;
        self.take(len, || format!("{} (text)", field()))
    }

    /// A GGUF string borrowed from the buffer.
    pub(crate) fn str(&mut self, field: impl Fn() -> String) -> Result<&'a str, GgufError> {
        let offset = self.pos();
        let len = self.u64(|| format!("{} (length)", field()))?;
        let bytes = self.take(len, || format!("{} (text)", field()))?;
        std::str::from_utf8(bytes).map_err(|e| GgufError::InvalidUtf8 {
            field: field(),
            offset,
            valid_up_to: e.valid_up_to() as u64,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_stops_at_the_end() {
        let bytes = [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9];
        let mut c = Cursor::new(&bytes);
        assert_eq!(c.u32(|| "a".into()).unwrap(), 1);
        assert_eq!(c.u64(|| "b".into()).unwrap(), 2);
        let err = c.u32(|| "c".into()).unwrap_err().to_string();
        assert!(err.contains("c at byte 12 needs 4 bytes"), "{err}");
        assert_eq!(c.u8(|| "d".into()).unwrap(), 9);
    }

    #[test]
    fn count_check_refuses_before_allocating() {
        let bytes = [0u8; 16];
        let c = Cursor::new(&bytes);
        assert!(c.check_count(2, 8, 0, || "n".into()).is_ok());
        assert!(c.check_count(3, 8, 0, || "n".into()).is_err());
        assert!(c.check_count(u64::MAX, 8, 0, || "n".into()).is_err());
    }

    #[test]
    fn strings_are_utf8_checked() {
        let mut bytes = 3u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"a\xffb");
        let err = Cursor::new(&bytes).string(|| "key".into()).unwrap_err().to_string();
        assert!(err.contains("key at byte 0 is not valid UTF-8"), "{err}");
        let mut ok = 2u64.to_le_bytes().to_vec();
        ok.extend_from_slice("é".as_bytes());
        assert_eq!(Cursor::new(&ok).string(|| "key".into()).unwrap(), "é");
    }
}
