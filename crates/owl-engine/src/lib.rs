//! owl-engine
