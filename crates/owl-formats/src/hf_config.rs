//! hf config
