//! The `.npy` header, as numpy's format spec (`numpy/lib/format.py`) defines it: magic
//! `\x93NUMPY`, version, header length, an ASCII dict literal padded with spaces and a
//! newline so that the data starts at a multiple of 64 bytes. Version 1.0 (2-byte length)
//! unless the header outgrows 65535 bytes, then 2.0 (4-byte length).

/// The `.npy` preamble and header for a little-endian float32 C-order array of `shape`.
pub(super) fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    // Python's tuple repr: "()", "(5,)", "(2, 3)".
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // magic (6) + version (2) + header length (2 bytes in v1.0, 4 in v2.0), then the dict,
    // spaces and '\n' so that the data starts on a 64-byte boundary.
    let padded_len = |preamble: usize| {
        let unpadded = preamble + dict.len() + 1;
        dict.len() + 1 + (64 - unpadded % 64) % 64
    };
    let mut out = Vec::new();
    out.extend_from_slice(b"\x93NUMPY");
    let header_len = match u16::try_from(padded_len(10)) {
        Ok(len) => {
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&len.to_le_bytes());
            usize::from(len)
        }
        Err(_) => {
            let len = padded_len(12);
            out.extend_from_slice(&[2, 0]);
            // A shape whose text passes 4 GiB cannot exist: usize dims multiply to a size.
            out.extend_from_slice(&(len as u32).to_le_bytes());
            len
        }
    };
    let data_start = out.len() + header_len;
    out.extend_from_slice(dict.as_bytes());
    out.resize(data_start - 1, b' ');
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a header the way numpy's `read_array_header_1_0/2_0` would need it.
    fn parse(header: &[u8]) -> (u8, usize, String) {
        assert_eq!(&header[..6], b"\x93NUMPY");
        let (version, start, len) = match header[6] {
            1 => (1, 10, u16::from_le_bytes([header[8], header[9]]) as usize),
            2 => (2, 12, u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize),
            v => panic!("version {v}"),
        };
        assert_eq!(header[7], 0);
        assert_eq!(header.len(), start + len);
        assert_eq!(header.len() % 64, 0, "data must start on a 64-byte boundary");
        assert_eq!(*header.last().expect("nonempty"), b'\n');
        let text = std::str::from_utf8(&header[start..]).expect("ASCII");
        (version, start, text.trim_end().to_string())
    }

    #[test]
    fn npy_headers() {
        let (v, _, dict) = parse(&npy_header(&[896]));
        assert_eq!(v, 1);
        assert_eq!(dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (896,), }");
        let (_, _, dict) = parse(&npy_header(&[151936, 896]));
        assert_eq!(dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (151936, 896), }");
        let (_, _, dict) = parse(&npy_header(&[]));
        assert_eq!(dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
        for n in 0..200 {
            let shape = vec![7; n];
            let (v, _, _) = parse(&npy_header(&shape));
            assert_eq!(v, 1);
        }
        // A header past 65535 bytes needs version 2.0 and its 4-byte length.
        let huge = vec![1; 30_000];
        let (v, start, dict) = parse(&npy_header(&huge));
        assert_eq!((v, start), (2, 12));
        assert!(dict.ends_with("1, 1), }"), "{}", &dict[dict.len() - 20..]);
    }
}
