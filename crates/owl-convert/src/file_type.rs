//! The output types `owl convert --type` and `owl quantize` take: llama.cpp's file types
//! (`enum llama_ftype`, include/llama.h), each a default element type plus, for the mixes,
//! per-tensor exceptions ([`crate::mix`]).

use std::fmt;
use std::str::FromStr;

use owl_formats::gguf::GgmlType;

#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
}

/// (type, CLI name, `llama_ftype` id, default element type).
const TABLE: [(FileType, &str, u32, GgmlType); 14] = [
    (FileType::F32, "f32", 0, GgmlType::F32),
    (FileType::F16, "f16", 1, GgmlType::F16),
    (FileType::BF16, "bf16", 32, GgmlType::BF16),
    (FileType::Q8_0, "q8_0", 7, GgmlType::Q8_0),
    (FileType::Q4_0, "q4_0", 2, GgmlType::Q4_0),
    (FileType::Q4_1, "q4_1", 3, GgmlType::Q4_1),
    (FileType::Q5_0, "q5_0", 8, GgmlType::Q5_0),
    (FileType::Q5_1, "q5_1", 9, GgmlType::Q5_1),
    (FileType::Q4_K_S, "q4_k_s", 14, GgmlType::Q4_K),
    (FileType::Q4_K_M, "q4_k_m", 15, GgmlType::Q4_K),
    (FileType::Q5_K_S, "q5_k_s", 16, GgmlType::Q5_K),
    (FileType::Q5_K_M, "q5_k_m", 17, GgmlType::Q5_K),
    (FileType::Q6_K, "q6_k", 18, GgmlType::Q6_K),
    (FileType::IQ4_NL, "iq4_nl", 25, GgmlType::IQ4_NL),
];

impl FileType {
    pub const ALL: [FileType; 14] = {
        let mut all = [FileType::F32; 14];
        let mut i = 0;
        while i < TABLE.len() {
            all[i] = TABLE[i].0;
            i += 1;
        }
        all
    };

    fn row(self) -> &'static (FileType, &'static str, u32, GgmlType) {
        TABLE.iter().find(|r| r.0 == self).unwrap_or(&TABLE[0])
    }

    /// The lower-case name `--type` takes (`q4_k_m`).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn llama_ftype(self) -> u32 {
        self.row().2
    }

    /// The element type most weight matrices get.
    pub fn default_type(self) -> GgmlType {
        self.row().3
    }

    /// The type of a `general.file_type` value, if it is one of ours.
    pub fn from_llama_ftype(id: u64) -> Option<FileType> {
        TABLE.iter().find(|r| u64::from(r.2) == id).map(|r| r.0)
    }

    /// F32, F16 and BF16: plain float files, as llama.cpp's converter writes them.
    pub fn is_float(self) -> bool {
        matches!(self, FileType::F32 | FileType::F16 | FileType::BF16)
    }

    pub fn names() -> String {
        TABLE.iter().map(|r| r.1).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FileType {
    type Err = String;

    /// Case-insensitive: `q4_k_m`, `Q4_K_M` and llama-quantize's spelling are the same.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        TABLE
            .iter()
            .find(|r| r.1 == lower)
            .map(|r| r.0)
            .ok_or_else(|| format!("unknown type {s:?}; expected one of {}", FileType::names()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ids_are_llama_cpps() {
        for t in FileType::ALL {
            assert_eq!(t.name().parse::<FileType>(), Ok(t));
            assert_eq!(t.name().to_uppercase().parse::<FileType>(), Ok(t));
            assert_eq!(FileType::from_llama_ftype(u64::from(t.llama_ftype())), Some(t));
        }
        // include/llama.h
        assert_eq!(FileType::Q4_K_M.llama_ftype(), 15);
        assert_eq!(FileType::IQ4_NL.llama_ftype(), 25);
        assert_eq!(FileType::BF16.llama_ftype(), 32);
        assert!("q4_k".parse::<FileType>().is_err());
    }
}
