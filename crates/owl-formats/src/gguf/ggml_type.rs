//! The ggml tensor element types a GGUF file can name, with their block geometry.
//!
//! Ids and block sizes follow `enum ggml_type` in ggml/include/ggml.h and the block structs
//! in ggml/src/ggml-common.h (ids 4, 5, 31–33 and 36–38 are retired and never valid).
//! gguf-py 0.19 lists Q8_1 as 40 bytes; ggml's `block_q8_1` is two f16 plus 32 quants, 36
//! bytes, and ggml is what computes tensor sizes in llama.cpp, so 36 it is.

use std::fmt;

/// A ggml element type. Quantized types store `block_elems()` values in `block_bytes()`
/// bytes; plain types have blocks of one element.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
}

/// (type, ggml id, name, elements per block, bytes per block).
const TABLE: [(GgmlType, u32, &str, u64, u64); 34] = {
    use GgmlType::*;
    [
        (F32, 0, "F32", 1, 4),
        (F16, 1, "F16", 1, 2),
        (Q4_0, 2, "Q4_0", 32, 18),
        (Q4_1, 3, "Q4_1", 32, 20),
        (Q5_0, 6, "Q5_0", 32, 22),
        (Q5_1, 7, "Q5_1", 32, 24),
        (Q8_0, 8, "Q8_0", 32, 34),
        (Q8_1, 9, "Q8_1", 32, 36),
        (Q2_K, 10, "Q2_K", 256, 84),
        (Q3_K, 11, "Q3_K", 256, 110),
        (Q4_K, 12, "Q4_K", 256, 144),
        (Q5_K, 13, "Q5_K", 256, 176),
        (Q6_K, 14, "Q6_K", 256, 210),
        (Q8_K, 15, "Q8_K", 256, 292),
        (IQ2_XXS, 16, "IQ2_XXS", 256, 66),
        (IQ2_XS, 17, "IQ2_XS", 256, 74),
        (IQ3_XXS, 18, "IQ3_XXS", 256, 98),
        (IQ1_S, 19, "IQ1_S", 256, 50),
        (IQ4_NL, 20, "IQ4_NL", 32, 18),
        (IQ3_S, 21, "IQ3_S", 256, 110),
        (IQ2_S, 22, "IQ2_S", 256, 82),
        (IQ4_XS, 23, "IQ4_XS", 256, 136),
        (I8, 24, "I8", 1, 1),
        (I16, 25, "I16", 1, 2),
        (I32, 26, "I32", 1, 4),
        (I64, 27, "I64", 1, 8),
        (F64, 28, "F64", 1, 8),
        (IQ1_M, 29, "IQ1_M", 256, 56),
        (BF16, 30, "BF16", 1, 2),
        (TQ1_0, 34, "TQ1_0", 256, 54),
        (TQ2_0, 35, "TQ2_0", 256, 66),
        (MXFP4, 39, "MXFP4", 32, 17),
        (NVFP4, 40, "NVFP4", 64, 36),
        (Q1_0, 41, "Q1_0", 128, 18),
    ]
};

impl GgmlType {
    /// Every type, in id order.
    pub const ALL: [GgmlType; 34] = {
        let mut all = [GgmlType::F32; 34];
        let mut i = 0;
        while i < TABLE.len() {
            all[i] = TABLE[i].0;
            i += 1;
        }
        all
    };

    /// The type with ggml id `id`, or `None` for an unknown or retired id.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|row| row.1 == id).map(|row| row.0)
    }

    /// The type with this name (as [`GgmlType::name`] spells it, case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE.iter().find(|row| row.2.eq_ignore_ascii_case(name)).map(|row| row.0)
    }

    fn row(self) -> &'static (GgmlType, u32, &'static str, u64, u64) {
        // The table lists the variants in declaration order, so the discriminant indexes it.
        &TABLE[self as usize]
    }

    /// The ggml id written in GGUF tensor infos.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// The name ggml and gguf-py use (`"Q4_K"`, `"BF16"`, …).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block (1 for plain types, 32 or 256 for most quantized ones).
    pub fn block_elems(self) -> u64 {
        self.row().3
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        self.row().4
    }

    /// Whether values are stored in blocks with shared scales (everything but plain floats
    /// and integers).
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes of `n_elements` values, or `None` when `n_elements` is not a whole number of
    /// blocks or the size overflows `u64`.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        if !n_elements.is_multiple_of(self.block_elems()) {
            return None;
        }
        (n_elements / self.block_elems()).checked_mul(self.block_bytes())
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_declaration_order_and_ids_round_trip() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.0 as usize, i, "{} out of order", row.2);
            assert_eq!(GgmlType::from_id(row.1), Some(row.0));
            assert_eq!(GgmlType::from_name(row.2), Some(row.0));
        }
        assert_eq!(GgmlType::ALL.len(), TABLE.len());
    }

    #[test]
    fn ids_match_ggml_h() {
        use GgmlType::*;
        let expected = [
            (F32, 0),
            (F16, 1),
            (Q4_0, 2),
            (Q4_1, 3),
            (Q5_0, 6),
            (Q5_1, 7),
            (Q8_0, 8),
            (Q8_1, 9),
            (Q2_K, 10),
            (Q3_K, 11),
            (Q4_K, 12),
            (Q5_K, 13),
            (Q6_K, 14),
            (Q8_K, 15),
            (IQ2_XXS, 16),
            (IQ2_XS, 17),
            (IQ3_XXS, 18),
            (IQ1_S, 19),
            (IQ4_NL, 20),
            (IQ3_S, 21),
            (IQ2_S, 22),
            (IQ4_XS, 23),
            (I8, 24),
            (I16, 25),
            (I32, 26),
            (I64, 27),
            (F64, 28),
            (IQ1_M, 29),
            (BF16, 30),
            (TQ1_0, 34),
            (TQ2_0, 35),
            (MXFP4, 39),
        ];
        for (t, id) in expected {
            assert_eq!(t.id(), id, "{t}");
        }
        for retired in [4, 5, 31, 32, 33, 36, 37, 38, 42, u32::MAX] {
            assert_eq!(GgmlType::from_id(retired), None, "id {retired}");
        }
    }

    #[test]
    fn block_sizes_match_ggml_common_h() {
        use GgmlType::*;
        // sizeof(block_*) spelled out from the struct fields.
        assert_eq!(Q4_0.block_bytes(), 2 + 16);
        assert_eq!(Q4_1.block_bytes(), 2 + 2 + 16);
        assert_eq!(Q5_0.block_bytes(), 2 + 4 + 16);
        assert_eq!(Q5_1.block_bytes(), 2 + 2 + 4 + 16);
        assert_eq!(Q8_0.block_bytes(), 2 + 32);
        assert_eq!(Q8_1.block_bytes(), 2 + 2 + 32);
        assert_eq!(Q2_K.block_bytes(), 16 + 64 + 2 + 2);
        assert_eq!(Q3_K.block_bytes(), 32 + 64 + 12 + 2);
        assert_eq!(Q4_K.block_bytes(), 2 + 2 + 12 + 128);
        assert_eq!(Q5_K.block_bytes(), 2 + 2 + 12 + 32 + 128);
        assert_eq!(Q6_K.block_bytes(), 128 + 64 + 16 + 2);
        assert_eq!(Q8_K.block_bytes(), 4 + 256 + 16 * 2);
        assert_eq!(IQ4_NL.block_bytes(), 2 + 16);
        assert_eq!(IQ4_XS.block_bytes(), 2 + 2 + 4 + 128);
        assert_eq!(MXFP4.block_bytes(), 1 + 16);
    }

    #[test]
    fn bytes_for_checks_blocks_and_overflow() {
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q4_K.bytes_for(100), None);
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
        assert_eq!(GgmlType::I8.bytes_for(u64::MAX), Some(u64::MAX));
    }
}
