//! safetensors header parser on arbitrary bytes: Ok or Err, never a panic; on Ok every
//! tensor's byte range lies inside the data section and matches its dtype and shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use owl_formats::safetensors::parse_header;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = parse_header(data) else {
        return;
    };
    assert!(header.data_start <= data.len());
    for t in &header.tensors {
        let [start, end] = t.data_offsets;
        assert!(start <= end && end <= header.data_len, "{}: {start}..{end} outside {}", t.name, header.data_len);
        assert_eq!(end - start, t.n_bytes(), "{}", t.name);
        let _ = &data[header.data_start + start..header.data_start + end];
    }
});
