//! GGUF metadata in the order llama.cpp's converter writes it.

use owl_formats::gguf::MetadataValue;

/// Metadata being assembled: keys unique, insertion order kept.
#[derive(Debug, Default)]
pub struct Metadata {
    pub entries: Vec<(String, MetadataValue)>,
}

impl Metadata {
    pub fn set(&mut self, key: impl Into<String>, value: MetadataValue) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    pub fn u32(&mut self, key: impl Into<String>, v: usize) {
        self.set(key, MetadataValue::U32(v as u32));
    }

    pub fn f32(&mut self, key: impl Into<String>, v: f64) {
        self.set(key, MetadataValue::F32(v as f32));
    }

    pub fn bool(&mut self, key: impl Into<String>, v: bool) {
        self.set(key, MetadataValue::Bool(v));
    }

    pub fn string(&mut self, key: impl Into<String>, v: impl Into<String>) {
        self.set(key, MetadataValue::String(v.into()));
    }
}
